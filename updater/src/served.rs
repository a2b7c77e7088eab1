//! The model the updater folds users into, loaded and verified as a whole and
//! swapped atomically ([`ModelHandle`]): a batch holds one `Arc` for its whole
//! duration, so it never sees half of one model and half of another.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use model::artifact::{self, Artifact};
use model::{CategoryIndex, EventWeights, Factors, Recency};
use rustc_hash::FxHashMap;
use schemas::{ItemId, ModelVersion};

/// Why a model version was refused (the served one stays).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    #[error("manifest of {dir} has sha256 {actual}, the announcement says {expected}")]
    AnnouncedDigest { dir: PathBuf, expected: String, actual: String },
    #[error("version directory {dir} holds version {found}, expected {expected}")]
    VersionMismatch { dir: PathBuf, expected: String, found: String },
    #[error("model {version} is unusable: {reason}")]
    Unusable { version: String, reason: String },
}

/// One loaded model version with everything a fold-in needs precomputed.
#[derive(Debug)]
pub struct ServedModel {
    pub version: ModelVersion,
    /// sha256 of its manifest.json (what an announcement names).
    pub manifest_sha256: String,
    /// Item ids by factor row.
    pub item_ids: Vec<ItemId>,
    /// Factor row of each item id.
    pub item_index: FxHashMap<ItemId, u32>,
    /// Item factors `Y` (items × f).
    pub y: Factors,
    /// `YᵀY + λI`, row-major f × f: the fixed part of every user's system.
    pub yty: Vec<f32>,
    /// Trained user factors `X`, for the symmetric solve of a new item.
    pub x: Factors,
    /// `XᵀX + λI`.
    pub xtx: Vec<f32>,
    pub alpha: f32,
    pub weights: EventWeights,
    /// The model's recency decay (off for manifests without one).
    pub recency: Recency,
    /// The model's training solver (used when `updater.solver = "cg"`).
    pub solver: model::Solver,
    /// Item categories for the re-rank.
    pub categories: CategoryIndex,
    /// Rows of items known to be unavailable (sorted): never recommended.
    pub unavailable: Vec<u32>,
}

impl ServedModel {
    /// Reads and verifies `dir` (every file's checksum and the factor shapes,
    /// by `model::artifact`), then precomputes the Gram matrices.
    pub fn load(dir: &Path) -> Result<ServedModel, LoadError> {
        let art = Artifact::read(dir)?;
        let manifest_sha256 = artifact::manifest_sha256(dir)?;
        ServedModel::from_artifact(art, manifest_sha256)
    }

    /// [`ServedModel::load`], also requiring the announced version and manifest digest.
    pub fn load_announced(dir: &Path, version: &str, sha256: &str) -> Result<ServedModel, LoadError> {
        // The digest is checked before anything else is read: a partly
        // copied or replaced version directory is refused early.
        let actual = artifact::manifest_sha256(dir)?;
        if actual != sha256 {
            return Err(LoadError::AnnouncedDigest { dir: dir.to_owned(), expected: sha256.to_owned(), actual });
        }
        let m = ServedModel::load(dir)?;
        if m.version.as_str() != version {
            return Err(LoadError::VersionMismatch {
                dir: dir.to_owned(),
                expected: version.to_owned(),
                found: m.version.to_string(),
            });
        }
        if m.manifest_sha256 != sha256 {
            return Err(LoadError::AnnouncedDigest {
                dir: dir.to_owned(),
                expected: sha256.to_owned(),
                actual: m.manifest_sha256,
            });
        }
        Ok(m)
    }

    /// Builds the served form of an artifact already read and verified.
    pub fn from_artifact(art: Artifact, manifest_sha256: String) -> Result<ServedModel, LoadError> {
        let m = &art.manifest;
        let unusable = |reason: String| LoadError::Unusable { version: m.version.clone(), reason };
        let version = ModelVersion::parse(&m.version).map_err(|e| unusable(e.to_string()))?;
        if art.items.is_empty() || art.item_factors.rows() == 0 {
            return Err(unusable("no items".into()));
        }
        let reg = m.params.regularization;
        if !(reg.is_finite() && reg >= 0.0 && m.params.alpha.is_finite() && m.params.alpha > 0.0) {
            return Err(unusable(format!("bad parameters: regularization {reg}, alpha {}", m.params.alpha)));
        }
        let mut item_ids = Vec::with_capacity(art.items.len());
        let mut item_index = FxHashMap::default();
        item_index.reserve(art.items.len());
        for (i, rec) in art.items.iter().enumerate() {
            let id = ItemId::parse(&rec.id).map_err(|e| unusable(format!("item row {i}: {e}")))?;
            if item_index.insert(id.clone(), i as u32).is_some() {
                return Err(unusable(format!("item {id} appears twice")));
            }
            item_ids.push(id);
        }
        let neighbours = neighbours(&art.categories);
        let max_events = art.categories.iter().map(|c| c.events).max().unwrap_or(0).max(1) as f32;
        let categories = CategoryIndex {
            item_category: art.items.iter().map(|r| r.category).collect(),
            neighbours,
            popularity: art.categories.iter().map(|c| (c.id, c.events as f32 / max_events)).collect(),
        };
        let yty = art.item_factors.gram(reg);
        let xtx = art.user_factors.gram(reg);
        Ok(ServedModel {
            version,
            manifest_sha256,
            unavailable: art
                .items
                .iter()
                .enumerate()
                .filter(|(_, r)| r.available == Some(false))
                .map(|(i, _)| i as u32)
                .collect(),
            item_ids,
            item_index,
            y: art.item_factors,
            yty,
            x: art.user_factors,
            xtx,
            alpha: m.params.alpha,
            weights: m.weights,
            recency: m.recency,
            solver: m.params.solver,
            categories,
        })
    }

    /// The confidence value `r` of one history entry, as the trainer builds it
    /// ([`EventWeights::decayed`]). The history keeps counts and the latest
    /// time per item, not each event's time, so every event of the entry is
    /// aged as its latest one (docs/design.md, "Recency"); with decay off this
    /// is exactly the undecayed sum.
    pub fn entry_weight(&self, e: &schemas::HistEntry) -> f32 {
        e.weighted(|k| self.weights.decayed(k, e.last_ts, &self.recency))
    }

    /// Factor count.
    pub fn factors(&self) -> usize {
        self.y.dim()
    }
}

/// Parent and children of every category (the re-rank's "tree neighbours").
fn neighbours(cats: &[artifact::CategoryRecord]) -> std::collections::HashMap<u64, Vec<u64>> {
    let mut n: std::collections::HashMap<u64, Vec<u64>> = std::collections::HashMap::new();
    for c in cats {
        if let Some(p) = c.parent {
            n.entry(c.id).or_default().push(p);
            n.entry(p).or_default().push(c.id);
        }
    }
    n
}

/// The currently served model, replaced atomically.
#[derive(Debug, Default, Clone)]
pub struct ModelHandle(Arc<ArcSwapOption<ServedModel>>);

impl ModelHandle {
    /// The served model, if any (held by the caller for a whole batch).
    pub fn current(&self) -> Option<Arc<ServedModel>> {
        self.0.load_full()
    }

    /// Serves `m` from the next batch on.
    pub fn swap(&self, m: Arc<ServedModel>) {
        self.0.store(Some(m));
    }
}
