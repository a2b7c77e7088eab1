//! What serving keeps in memory of the served model version: item ids,
//! categories and availability, and the global and per-category popular lists
//! (the fallbacks that work with Redis down). The item factors are not kept:
//! serving computes nothing from them (item neighbours are the trainer's
//! `similar:{item}` lists). Swapped atomically when a new version is
//! announced ([`CatalogHandle`]).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use model::artifact::{self, Artifact};
use model::Scored;
use rustc_hash::FxHashMap;
use schemas::{ItemId, ModelVersion, RecItem};

/// A ranked list of item rows with their scores, best first.
pub type Ranked = Vec<Scored>;

/// A ranked list of item ids with their scores, best first.
pub type IdList = Vec<RecItem>;

/// One model version's metadata, ready for the request path.
#[derive(Debug)]
pub struct Catalog {
    pub version: ModelVersion,
    /// sha256 of the version's manifest.json (what an announcement names).
    pub manifest_sha256: String,
    /// Item ids by row.
    pub items: Vec<ItemId>,
    /// Row of each item id.
    pub index: FxHashMap<String, u32>,
    /// Category of each row.
    pub category: Vec<Option<u64>>,
    /// `false` for rows known to be unavailable.
    pub available: Vec<bool>,
    /// Global popular list (available items only).
    pub popular: Arc<IdList>,
    /// Popular list of each category (available items only).
    pub popular_by_category: FxHashMap<u64, Arc<IdList>>,
    /// Event weights of the model (to rank a history's categories).
    pub weights: model::EventWeights,
}

/// Why a version could not be loaded (the served one stays).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    #[error("manifest of {dir} has sha256 {actual}, the announcement says {expected}")]
    AnnouncedDigest { dir: String, expected: String, actual: String },
    #[error("model {version} is unusable: {reason}")]
    Unusable { version: String, reason: String },
}

/// Most items kept in each in-memory popular list (`k` is at most 100; the
/// margin survives filtering out a user's purchases).
const POPULAR_KEEP: usize = 200;

impl Catalog {
    /// Reads and verifies a version directory.
    pub fn load(dir: &Path) -> Result<Catalog, LoadError> {
        let art = Artifact::read(dir)?;
        let sha = artifact::manifest_sha256(dir)?;
        Catalog::from_artifact(art, sha)
    }

    /// [`Catalog::load`], also requiring the announced manifest digest.
    pub fn load_announced(dir: &Path, sha256: &str) -> Result<Catalog, LoadError> {
        let actual = artifact::manifest_sha256(dir)?;
        if actual != sha256 {
            return Err(LoadError::AnnouncedDigest {
                dir: dir.display().to_string(),
                expected: sha256.to_owned(),
                actual,
            });
        }
        let art = Artifact::read(dir)?;
        Catalog::from_artifact(art, actual)
    }

    /// Builds the catalog of an artifact already read.
    pub fn from_artifact(art: Artifact, manifest_sha256: String) -> Result<Catalog, LoadError> {
        let version_text = art.manifest.version.clone();
        let unusable = |reason: String| LoadError::Unusable { version: version_text.clone(), reason };
        let version = ModelVersion::parse(&art.manifest.version).map_err(|e| unusable(e.to_string()))?;
        let items: Vec<ItemId> = art
            .items
            .iter()
            .map(|r| ItemId::parse(&r.id).map_err(|e| unusable(format!("item id {:?}: {e}", r.id))))
            .collect::<Result<_, _>>()?;
        let index: FxHashMap<String, u32> =
            items.iter().enumerate().map(|(i, id)| (id.as_str().to_owned(), i as u32)).collect();
        let category: Vec<Option<u64>> = art.items.iter().map(|r| r.category).collect();
        let available: Vec<bool> = art.items.iter().map(|r| r.available != Some(false)).collect();

        let to_ids = |l: &[Scored]| -> Arc<IdList> {
            Arc::new(l.iter().map(|s| RecItem { item_id: items[s.item as usize].clone(), score: s.score }).collect())
        };
        let popular: Ranked =
            art.popular.ranked().iter().filter(|s| available[s.item as usize]).take(POPULAR_KEEP).copied().collect();
        let popular = to_ids(&popular);
        // Per category: the items' training popularity, best first.
        let mut by_cat: FxHashMap<u64, Ranked> = FxHashMap::default();
        for (i, r) in art.items.iter().enumerate() {
            if let (Some(c), true) = (r.category, available[i]) {
                if r.popularity > 0.0 && r.popularity.is_finite() {
                    by_cat.entry(c).or_default().push(Scored { item: i as u32, score: r.popularity as f32 });
                }
            }
        }
        for l in by_cat.values_mut() {
            l.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
            l.truncate(POPULAR_KEEP);
        }
        let popular_by_category = by_cat.iter().map(|(c, l)| (*c, to_ids(l))).collect();
        Ok(Catalog {
            version,
            manifest_sha256,
            items,
            index,
            category,
            available,
            popular,
            popular_by_category,
            weights: art.manifest.weights,
        })
    }

    /// Row of an item.
    pub fn row(&self, item: &str) -> Option<u32> {
        self.index.get(item).copied()
    }
}

/// The served catalog, replaced atomically.
#[derive(Debug, Default, Clone)]
pub struct CatalogHandle(Arc<ArcSwapOption<Catalog>>);

impl CatalogHandle {
    /// The served catalog, if any.
    pub fn current(&self) -> Option<Arc<Catalog>> {
        self.0.load_full()
    }

    /// Serves `c` from the next request on.
    pub fn swap(&self, c: Arc<Catalog>) {
        self.0.store(Some(c));
    }
}
