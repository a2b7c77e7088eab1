//! Versioned model artifacts on disk.
//!
//! ```text
//! {root}/CURRENT                     name of the served version (atomic rename)
//! {root}/{version}/manifest.json     what, from which data, how good, and a sha256 per file
//! {root}/{version}/factors.safetensors   `user_factors` [users × f], `item_factors` [items × f], f32
//! {root}/{version}/users.txt         user id of each factor row, one per line
//! {root}/{version}/items.csv         item_id,category,available,popularity per factor row
//! {root}/{version}/categories.csv    category,parent,depth,events,users,items
//! {root}/{version}/popular.json      the popular fallback, best first
//! ```
//!
//! A version directory is written under a temporary name and renamed into place,
//! so a reader never sees half a model. Reading verifies every checksum and every
//! shape before anything is returned; a damaged model is refused with an error
//! that names the file.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::als::AlsParams;
use crate::dense::Factors;
use crate::popularity::Popularity;
use crate::topn::Scored;
use crate::weights::{EventWeights, Recency};

/// Version of the on-disk layout; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const FACTORS_FILE: &str = "factors.safetensors";
pub const USERS_FILE: &str = "users.txt";
pub const ITEMS_FILE: &str = "items.csv";
pub const CATEGORIES_FILE: &str = "categories.csv";
pub const POPULAR_FILE: &str = "popular.json";
pub const CURRENT_FILE: &str = "CURRENT";
/// Every file of a version directory.
pub const VERSION_FILES: [&str; 6] =
    [MANIFEST_FILE, FACTORS_FILE, USERS_FILE, ITEMS_FILE, CATEGORIES_FILE, POPULAR_FILE];

/// Why an artifact could not be written or read.
#[derive(Debug, Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid manifest: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("{path}: checksum mismatch (manifest says {expected}, file has {actual}); the model is damaged")]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("model version {0:?} already exists")]
    Exists(String),
    #[error("invalid version name {0:?}: use 1-100 characters [A-Za-z0-9._-], not starting with '.'")]
    BadVersion(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io { path: path.to_path_buf(), source }
}

fn invalid(path: &Path, message: impl Into<String>) -> ArtifactError {
    ArtifactError::Invalid { path: path.to_path_buf(), message: message.into() }
}

/// Range of the event log a model was trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataRange {
    /// Where the events came from (a directory, `kafka:recsys.events`, …).
    pub source: String,
    /// First and last event timestamp (epoch ms) used.
    pub first_ts: i64,
    pub last_ts: i64,
    /// Events read after cleaning.
    pub events: u64,
    /// Where the item categories and availability came from
    /// (`DIR/item_properties*.csv`, `kafka:recsys.items`, both joined by ` + `);
    /// absent when the model was trained without a catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
}

/// Sizes of the fitted model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub users: usize,
    pub items: usize,
    pub train_nnz: usize,
    pub factors: usize,
}

/// A Kafka position the training data ended at (for rebuilding state after it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicOffset {
    pub topic: String,
    pub partition: i32,
    /// Next offset not included in training.
    pub offset: i64,
    /// First offset read from the topic (earlier ones came from an archive or
    /// were not read). Absent in older manifests: 0.
    #[serde(default)]
    pub start_offset: i64,
}

/// Offline evaluation recorded with the model, used by the promotion gate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// `seed` or `time` (docs/design.md §6).
    pub protocol: String,
    /// Metrics of the served variant, e.g. `recall@20` → 0.25.
    pub metrics: BTreeMap<String, f64>,
    /// Users with at least one relevant test item.
    pub target_users: u64,
    /// The full evaluation report (all variants, timings).
    #[serde(default)]
    pub report: serde_json::Value,
}

/// What the promotion gate decided when a version was trained (or what
/// `models compare` finds): written into the candidate's manifest, so the
/// decision and its numbers stay with the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    pub decision: GateDecision,
    /// The decision in words: which metric fell how far, or why nothing was compared.
    pub reason: String,
    /// The version served when the gate ran (`None`: nothing was served).
    pub served_version: Option<String>,
    /// Protocol of the candidate's evaluation.
    pub protocol: String,
    /// Protocol of the served version's evaluation (`None`: none recorded).
    pub served_protocol: Option<String>,
    /// Largest relative drop of a key metric allowed (0.10 = 10 %).
    pub max_relative_drop: f64,
    /// One row per key metric, in the gate's order.
    pub metrics: Vec<GateMetric>,
}

/// The gate's outcome for one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateDecision {
    /// Nothing was served: promoted without a comparison.
    FirstModel,
    /// Every key metric within the allowed drop: promoted.
    Promoted,
    /// A key metric fell too far: not promoted.
    Rejected,
    /// The two evaluations cannot be compared (protocol, missing metric or
    /// evaluation): not promoted automatically.
    Incomparable,
    /// Rejected or incomparable, promoted anyway (`--force`).
    Forced,
}

impl GateDecision {
    /// The word the report and `models compare` print.
    pub fn as_str(self) -> &'static str {
        match self {
            GateDecision::FirstModel => "first model",
            GateDecision::Promoted => "promoted",
            GateDecision::Rejected => "rejected",
            GateDecision::Incomparable => "incomparable",
            GateDecision::Forced => "forced",
        }
    }
}

/// One key metric as the gate saw it. Values are absent where that side has
/// no such metric; `relative_change` and `ok` only when the two were compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateMetric {
    pub metric: String,
    pub candidate: Option<f64>,
    pub served: Option<f64>,
    /// `(candidate − served) / served`; 0 when the served value is 0.
    pub relative_change: Option<f64>,
    pub ok: Option<bool>,
}

/// One point of the model search's space: the ALS hyper-parameters and the
/// event weighting a candidate was fitted with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchPoint {
    pub factors: usize,
    pub iterations: usize,
    pub alpha: f32,
    pub regularization: f32,
    pub weights: EventWeights,
    /// 0 = no recency decay.
    pub recency_half_life_days: f64,
}

/// The validation split the search scored candidates on (carved from the
/// evaluation's training side, never its test side).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchValidation {
    pub protocol: String,
    pub users: usize,
    pub items: usize,
    pub train_pairs: usize,
    /// Validation users with at least one held-out target.
    pub target_users: usize,
}

/// One round of successive halving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRound {
    /// 0-based.
    pub round: usize,
    /// Total iterations each candidate of the round has after it.
    pub iterations: usize,
    /// Candidates scored in this round.
    pub candidates: Vec<usize>,
    /// Candidates kept for the next round (best first).
    pub kept: Vec<usize>,
}

/// One candidate scored in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchTrial {
    pub candidate: usize,
    pub round: usize,
    /// The configuration, with `iterations` = the total after this round.
    pub point: SearchPoint,
    /// Iterations run in this round (the rest were run in earlier rounds).
    pub new_iterations: usize,
    /// Where the factors started: `"random"`, `"own"` (continued from its
    /// previous round) or `"candidate N"` (another candidate's factors).
    pub start: String,
    /// Sweeps the factors have had after this round, counting those of the
    /// candidate they started from (absent in older records: 0).
    #[serde(default)]
    pub sweeps: usize,
    /// The validation metric.
    pub score: f64,
    /// Estimated cost of the round's fit and scoring, in default fits.
    pub cost_fits: f64,
    pub seconds: f64,
}

/// The model search behind a version: every configuration tried, the rounds,
/// validation scores, cost and the chosen configuration. Absent when the
/// search was off (and in older manifests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRecord {
    /// The validation metric (`recall@20`, …).
    pub metric: String,
    pub seed: u64,
    /// Budget in default fits (one fit of the configured parameters on the
    /// validation training side).
    pub budget_fits: f64,
    /// Estimated cost spent, in the same unit.
    pub spent_fits: f64,
    /// Wall-clock seconds of the search (split, fits, scoring).
    pub seconds: f64,
    pub validation: SearchValidation,
    pub candidates: Vec<SearchPoint>,
    pub rounds: Vec<SearchRound>,
    pub trials: Vec<SearchTrial>,
    /// Index of the default configuration among `candidates`.
    pub default_candidate: usize,
    pub chosen_candidate: usize,
    pub chosen: SearchPoint,
    pub chosen_score: f64,
}

/// Checksum and size of one file of the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub sha256: String,
    pub bytes: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub parent_version: Option<String>,
    pub params: AlsParams,
    /// Event weights summed into `r` (absent in older manifests: the defaults).
    #[serde(default)]
    pub weights: EventWeights,
    /// Recency decay of the event weights (half-life and reference time), so
    /// the updater folds users in with the confidences the model was trained
    /// on; absent in older manifests: off.
    #[serde(default, skip_serializing_if = "Recency::is_off")]
    pub recency: Recency,
    pub data: DataRange,
    pub counts: Counts,
    #[serde(default)]
    pub kafka_offsets: Vec<TopicOffset>,
    pub evaluation: Option<Evaluation>,
    /// The promotion gate's decision for this version; absent in older
    /// manifests and in versions not written by `train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateRecord>,
    /// The model search that chose the parameters; absent when it was off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchRecord>,
    /// Filled in when the version is written.
    #[serde(default)]
    pub files: BTreeMap<String, FileDigest>,
}

/// What the serving side knows about one item (one factor row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub id: String,
    /// Latest category as of the training cutoff.
    pub category: Option<u64>,
    /// Latest availability as of the training cutoff.
    pub available: Option<bool>,
    /// Summed event weight in the training data.
    pub popularity: f64,
}

/// One category of the tree with its statistics over the training events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryRecord {
    pub id: u64,
    pub parent: Option<u64>,
    /// Roots are level 1.
    pub depth: u32,
    pub events: u64,
    pub users: u64,
    pub items: u64,
}

/// A complete model version in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub manifest: Manifest,
    pub user_ids: Vec<String>,
    pub items: Vec<ItemRecord>,
    pub user_factors: Factors,
    pub item_factors: Factors,
    pub categories: Vec<CategoryRecord>,
    pub popular: Popularity,
}

/// Checks a version name: it becomes a directory name and a Kafka payload.
pub fn validate_version(v: &str) -> Result<(), ArtifactError> {
    let ok = !v.is_empty()
        && v.len() <= 100
        && !v.starts_with('.')
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok && v != CURRENT_FILE {
        Ok(())
    } else {
        Err(ArtifactError::BadVersion(v.to_owned()))
    }
}

/// Hex sha256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl Artifact {
    /// Writes the version to `{root}/{version}` atomically and returns that path.
    /// The manifest's `files` are filled in with the written files' digests.
    pub fn write(&mut self, root: &Path) -> Result<PathBuf, ArtifactError> {
        let version = self.manifest.version.clone();
        validate_version(&version)?;
        self.check_shapes(root)?;
        fs::create_dir_all(root).map_err(io(root))?;
        let final_dir = root.join(&version);
        if final_dir.exists() {
            return Err(ArtifactError::Exists(version));
        }
        let tmp = root.join(format!(".{version}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;

        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let uf = f32_bytes(self.user_factors.as_slice());
        let itf = f32_bytes(self.item_factors.as_slice());
        let f = self.item_factors.dim();
        let tensors = [
            ("item_factors", safetensors::tensor::TensorView::new(Dtype::F32, vec![self.items.len(), f], &itf)),
            ("user_factors", safetensors::tensor::TensorView::new(Dtype::F32, vec![self.user_ids.len(), f], &uf)),
        ];
        let mut views = Vec::new();
        for (name, t) in tensors {
            views.push((name, t.map_err(|e| invalid(&tmp, format!("tensor {name}: {e}")))?));
        }
        let meta =
            HashMap::from([("format".to_owned(), "recsys-als".to_owned()), ("version".to_owned(), version.clone())]);
        let st = safetensors::serialize(views, Some(meta)).map_err(|e| invalid(&tmp, format!("safetensors: {e}")))?;
        files.insert(FACTORS_FILE.into(), st);

        let mut users = String::with_capacity(self.user_ids.len() * 8);
        for u in &self.user_ids {
            users.push_str(u);
            users.push('\n');
        }
        files.insert(USERS_FILE.into(), users.into_bytes());

        let mut items = String::from("item_id,category,available,popularity\n");
        for it in &self.items {
            items.push_str(&format!(
                "{},{},{},{}\n",
                it.id,
                opt(it.category),
                opt(it.available.map(u8::from)),
                it.popularity
            ));
        }
        files.insert(ITEMS_FILE.into(), items.into_bytes());

        let mut cats = String::from("category,parent,depth,events,users,items\n");
        for c in &self.categories {
            cats.push_str(&format!("{},{},{},{},{},{}\n", c.id, opt(c.parent), c.depth, c.events, c.users, c.items));
        }
        files.insert(CATEGORIES_FILE.into(), cats.into_bytes());
        let popular = serde_json::to_vec(&self.popular).map_err(|e| invalid(&tmp, e.to_string()))?;
        files.insert(POPULAR_FILE.into(), popular);

        self.manifest.format = FORMAT_VERSION;
        self.manifest.files.clear();
        for (name, bytes) in &files {
            let path = tmp.join(name);
            write_synced(&path, bytes)?;
            self.manifest
                .files
                .insert(name.clone(), FileDigest { sha256: sha256_hex(bytes), bytes: bytes.len() as u64 });
        }
        let manifest = serde_json::to_vec_pretty(&self.manifest).map_err(|e| invalid(&tmp, e.to_string()))?;
        write_synced(&tmp.join(MANIFEST_FILE), &manifest)?;
        fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        sync_dir(root);
        Ok(final_dir)
    }

    fn check_shapes(&self, path: &Path) -> Result<(), ArtifactError> {
        let f = self.manifest.params.factors;
        let ok = self.user_factors.rows() == self.user_ids.len()
            && self.item_factors.rows() == self.items.len()
            && self.user_factors.dim() == f
            && self.item_factors.dim() == f
            && self.manifest.counts.users == self.user_ids.len()
            && self.manifest.counts.items == self.items.len()
            && self.manifest.counts.factors == f;
        if ok {
            Ok(())
        } else {
            Err(invalid(
                path,
                format!(
                    "shapes disagree: {} user ids / {}x{} user factors, {} items / {}x{} item factors, manifest counts {:?}, factors {f}",
                    self.user_ids.len(),
                    self.user_factors.rows(),
                    self.user_factors.dim(),
                    self.items.len(),
                    self.item_factors.rows(),
                    self.item_factors.dim(),
                    self.manifest.counts
                ),
            ))
        }
    }

    /// Reads and verifies the version in `dir`.
    pub fn read(dir: &Path) -> Result<Artifact, ArtifactError> {
        let manifest = read_manifest(dir)?;
        let mut blobs: HashMap<&str, Vec<u8>> = HashMap::new();
        for name in [FACTORS_FILE, USERS_FILE, ITEMS_FILE, CATEGORIES_FILE, POPULAR_FILE] {
            let path = dir.join(name);
            let digest = manifest.files.get(name).ok_or_else(|| ArtifactError::Manifest {
                path: dir.join(MANIFEST_FILE),
                message: format!("no checksum for {name}"),
            })?;
            let bytes = fs::read(&path).map_err(io(&path))?;
            let actual = sha256_hex(&bytes);
            if actual != digest.sha256 || bytes.len() as u64 != digest.bytes {
                return Err(ArtifactError::Checksum { path, expected: digest.sha256.clone(), actual });
            }
            blobs.insert(name, bytes);
        }
        let f = manifest.params.factors;
        let fpath = dir.join(FACTORS_FILE);
        let st =
            SafeTensors::deserialize(&blobs[FACTORS_FILE]).map_err(|e| invalid(&fpath, format!("safetensors: {e}")))?;
        let tensor = |name: &str, rows: usize| -> Result<Factors, ArtifactError> {
            let t = st.tensor(name).map_err(|e| invalid(&fpath, format!("{name}: {e}")))?;
            if t.dtype() != Dtype::F32 || t.shape() != [rows, f] {
                return Err(invalid(
                    &fpath,
                    format!("{name}: expected F32 [{rows}, {f}], found {:?} {:?}", t.dtype(), t.shape()),
                ));
            }
            let data: Vec<f32> =
                t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if data.iter().any(|v| !v.is_finite()) {
                return Err(invalid(&fpath, format!("{name}: contains NaN or infinite values")));
            }
            Factors::from_vec(rows, f, data).ok_or_else(|| invalid(&fpath, format!("{name}: wrong length")))
        };
        let user_factors = tensor("user_factors", manifest.counts.users)?;
        let item_factors = tensor("item_factors", manifest.counts.items)?;

        let upath = dir.join(USERS_FILE);
        let users_txt = std::str::from_utf8(&blobs[USERS_FILE]).map_err(|e| invalid(&upath, e.to_string()))?;
        let user_ids: Vec<String> = users_txt.lines().map(str::to_owned).collect();
        if user_ids.len() != manifest.counts.users {
            return Err(invalid(&upath, format!("{} ids for {} user rows", user_ids.len(), manifest.counts.users)));
        }
        let items = parse_items(&dir.join(ITEMS_FILE), &blobs[ITEMS_FILE])?;
        if items.len() != manifest.counts.items {
            return Err(invalid(
                &dir.join(ITEMS_FILE),
                format!("{} items for {} item rows", items.len(), manifest.counts.items),
            ));
        }
        let categories = parse_categories(&dir.join(CATEGORIES_FILE), &blobs[CATEGORIES_FILE])?;
        let ppath = dir.join(POPULAR_FILE);
        let popular: Popularity =
            serde_json::from_slice(&blobs[POPULAR_FILE]).map_err(|e| invalid(&ppath, e.to_string()))?;
        if popular.ranked().iter().any(|s: &Scored| s.item as usize >= items.len()) {
            return Err(invalid(&ppath, "refers to an item index outside the model"));
        }
        Ok(Artifact { manifest, user_ids, items, user_factors, item_factors, categories, popular })
    }
}

/// Reads `manifest.json` of a version directory (checks its format only).
pub fn read_manifest(dir: &Path) -> Result<Manifest, ArtifactError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = fs::read(&path).map_err(io(&path))?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| ArtifactError::Manifest { path: path.clone(), message: e.to_string() })?;
    if m.format != FORMAT_VERSION {
        return Err(ArtifactError::Manifest {
            path,
            message: format!("format {} is not supported (expected {FORMAT_VERSION})", m.format),
        });
    }
    validate_version(&m.version)?;
    Ok(m)
}

/// sha256 of a version's `manifest.json` (announced with the model, so a reader
/// can tell it loaded exactly the announced version).
pub fn manifest_sha256(dir: &Path) -> Result<String, ArtifactError> {
    let path = dir.join(MANIFEST_FILE);
    Ok(sha256_hex(&fs::read(&path).map_err(io(&path))?))
}

fn fields<'a>(path: &Path, line_no: usize, line: &'a str, n: usize) -> Result<Vec<&'a str>, ArtifactError> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() != n {
        return Err(invalid(path, format!("line {line_no}: expected {n} fields, found {}", f.len())));
    }
    Ok(f)
}

fn parse_opt<T: std::str::FromStr>(
    path: &Path,
    line_no: usize,
    field: &str,
    s: &str,
) -> Result<Option<T>, ArtifactError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| invalid(path, format!("line {line_no}: field {field}: cannot parse {s:?}")))
}

fn parse_items(path: &Path, bytes: &[u8]) -> Result<Vec<ItemRecord>, ArtifactError> {
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(path, e.to_string()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f = fields(path, n + 1, line, 4)?;
        let available: Option<u8> = parse_opt(path, n + 1, "available", f[2])?;
        out.push(ItemRecord {
            id: f[0].to_owned(),
            category: parse_opt(path, n + 1, "category", f[1])?,
            available: available.map(|a| a != 0),
            popularity: parse_opt(path, n + 1, "popularity", f[3])?.unwrap_or(0.0),
        });
    }
    Ok(out)
}

fn parse_categories(path: &Path, bytes: &[u8]) -> Result<Vec<CategoryRecord>, ArtifactError> {
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(path, e.to_string()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f = fields(path, n + 1, line, 6)?;
        let num = |i: usize, name: &str| -> Result<u64, ArtifactError> {
            parse_opt(path, n + 1, name, f[i])?
                .ok_or_else(|| invalid(path, format!("line {}: field {name} is empty", n + 1)))
        };
        out.push(CategoryRecord {
            id: num(0, "category")?,
            parent: parse_opt(path, n + 1, "parent", f[1])?,
            depth: num(2, "depth")? as u32,
            events: num(3, "events")?,
            users: num(4, "users")?,
            items: num(5, "items")?,
        });
    }
    Ok(out)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; not all platforms allow opening a directory.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The version named by `{root}/CURRENT`, if any.
pub fn current_version(root: &Path) -> Result<Option<String>, ArtifactError> {
    let path = root.join(CURRENT_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => {
            let v = s.trim().to_owned();
            validate_version(&v)?;
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ArtifactError::Io { path, source: e }),
    }
}

/// Points `{root}/CURRENT` at `version` by writing a temporary file and renaming
/// it over the old one: readers see the old or the new name, never a torn one.
/// The version must exist and pass [`Artifact::read`]'s checks.
pub fn set_current(root: &Path, version: &str) -> Result<(), ArtifactError> {
    validate_version(version)?;
    Artifact::read(&root.join(version))?;
    let tmp = root.join(format!(".{CURRENT_FILE}.tmp-{}", std::process::id()));
    write_synced(&tmp, format!("{version}\n").as_bytes())?;
    let path = root.join(CURRENT_FILE);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(root);
    Ok(())
}

/// Version directories under `root` (complete ones only), oldest name first.
pub fn list_versions(root: &Path) -> Result<Vec<String>, ArtifactError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ArtifactError::Io { path: root.to_path_buf(), source: e }),
    };
    for entry in rd {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if validate_version(&name).is_ok() && entry.path().join(MANIFEST_FILE).is_file() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_search() -> SearchRecord {
        let point = |factors, iterations| SearchPoint {
            factors,
            iterations,
            alpha: 4.0,
            regularization: 0.1,
            weights: EventWeights::default(),
            recency_half_life_days: 7.0,
        };
        SearchRecord {
            metric: "recall@20".into(),
            seed: 7,
            budget_fits: 10.0,
            spent_fits: 3.5,
            seconds: 12.0,
            validation: SearchValidation {
                protocol: "seed".into(),
                users: 10,
                items: 20,
                train_pairs: 90,
                target_users: 4,
            },
            candidates: vec![point(3, 25), point(8, 25)],
            rounds: vec![SearchRound { round: 0, iterations: 3, candidates: vec![0, 1], kept: vec![1] }],
            trials: vec![SearchTrial {
                candidate: 1,
                round: 0,
                point: point(8, 3),
                new_iterations: 3,
                start: "random".into(),
                sweeps: 3,
                score: 0.125,
                cost_fits: 0.5,
                seconds: 0.25,
            }],
            default_candidate: 0,
            chosen_candidate: 1,
            chosen: point(8, 3),
            chosen_score: 0.125,
        }
    }

    fn sample(version: &str) -> Artifact {
        let params = AlsParams { factors: 3, ..AlsParams::default() };
        Artifact {
            manifest: Manifest {
                format: FORMAT_VERSION,
                version: version.into(),
                created_at: "2026-11-28T00:00:00Z".into(),
                parent_version: None,
                params,
                weights: EventWeights::default(),
                recency: Recency::default(),
                data: DataRange { source: "test".into(), first_ts: 1, last_ts: 2, events: 10, catalog: None },
                counts: Counts { users: 2, items: 3, train_nnz: 4, factors: 3 },
                kafka_offsets: vec![TopicOffset {
                    topic: "recsys.events".into(),
                    partition: 0,
                    offset: 7,
                    start_offset: 2,
                }],
                evaluation: Some(Evaluation {
                    protocol: "seed".into(),
                    metrics: BTreeMap::from([("recall@20".into(), 0.25)]),
                    target_users: 5,
                    report: serde_json::json!({"als": {"recall@20": 0.25}}),
                }),
                gate: Some(GateRecord {
                    decision: GateDecision::Rejected,
                    reason: "recall@20 fell 16.7 %".into(),
                    served_version: Some("v0".into()),
                    protocol: "seed".into(),
                    served_protocol: Some("seed".into()),
                    max_relative_drop: 0.1,
                    metrics: vec![GateMetric {
                        metric: "recall@20".into(),
                        candidate: Some(0.25),
                        served: Some(0.3),
                        relative_change: Some(-0.05 / 0.3),
                        ok: Some(false),
                    }],
                }),
                search: Some(sample_search()),
                files: BTreeMap::new(),
            },
            user_ids: vec!["0".into(), "u-1".into()],
            items: vec![
                ItemRecord { id: "10".into(), category: Some(5), available: Some(true), popularity: 3.0 },
                ItemRecord { id: "11".into(), category: None, available: Some(false), popularity: 0.5 },
                ItemRecord { id: "12".into(), category: Some(6), available: None, popularity: 1.0 },
            ],
            user_factors: Factors::seeded(2, 3, 1.0, 1),
            item_factors: Factors::seeded(3, 3, 1.0, 2),
            categories: vec![
                CategoryRecord { id: 5, parent: None, depth: 1, events: 3, users: 2, items: 1 },
                CategoryRecord { id: 6, parent: Some(5), depth: 2, events: 1, users: 1, items: 1 },
            ],
            popular: Popularity::from_scores(&[3.0, 0.5, 1.0], 100),
        }
    }

    #[test]
    fn round_trips_and_moves_current() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = sample("v1");
        let path = a.write(dir.path()).unwrap();
        let b = Artifact::read(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(current_version(dir.path()).unwrap(), None);
        set_current(dir.path(), "v1").unwrap();
        assert_eq!(current_version(dir.path()).unwrap().as_deref(), Some("v1"));
        assert_eq!(list_versions(dir.path()).unwrap(), vec!["v1".to_string()]);
        assert!(matches!(a.write(dir.path()), Err(ArtifactError::Exists(_))));
        assert_eq!(manifest_sha256(&path).unwrap().len(), 64);
    }

    #[test]
    fn refuses_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample("v1").write(dir.path()).unwrap();
        // Flip one byte of the factors.
        let f = path.join(FACTORS_FILE);
        let mut bytes = fs::read(&f).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&f, &bytes).unwrap();
        let err = Artifact::read(&path).unwrap_err();
        assert!(matches!(err, ArtifactError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains(FACTORS_FILE));
        // A damaged model cannot become CURRENT.
        assert!(set_current(dir.path(), "v1").is_err());
        assert_eq!(current_version(dir.path()).unwrap(), None);
        // Truncated file.
        fs::write(&f, &bytes[..10]).unwrap();
        assert!(Artifact::read(&path).is_err());
        // Missing file.
        fs::remove_file(&f).unwrap();
        assert!(matches!(Artifact::read(&path), Err(ArtifactError::Io { .. })));
    }

    #[test]
    fn refuses_shape_mismatch_even_with_matching_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample("v1").write(dir.path()).unwrap();
        let mpath = path.join(MANIFEST_FILE);
        let mut m: Manifest = serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
        m.counts.items = 4;
        fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
        let err = Artifact::read(&path).unwrap_err();
        assert!(err.to_string().contains("item_factors"), "{err}");
        // Garbage manifest.
        fs::write(&mpath, b"{not json").unwrap();
        assert!(matches!(Artifact::read(&path), Err(ArtifactError::Manifest { .. })));
    }

    #[test]
    fn rejects_bad_versions_and_inconsistent_writes() {
        for v in ["", ".hidden", "a/b", "CURRENT", "x y"] {
            assert!(validate_version(v).is_err(), "{v}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut a = sample("v2");
        a.user_ids.pop();
        assert!(matches!(a.write(dir.path()), Err(ArtifactError::Invalid { .. })));
        assert!(list_versions(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn manifests_written_before_start_offsets_still_load() {
        // A manifest as older trainers wrote it: offsets without `start_offset`.
        let dir = tempfile::tempdir().unwrap();
        let path = sample("v3").write(dir.path()).unwrap();
        let mpath = path.join(MANIFEST_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
        v["kafka_offsets"][0].as_object_mut().unwrap().remove("start_offset");
        assert!(!v.to_string().contains("start_offset"));
        fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
        let m = read_manifest(&path).unwrap();
        assert_eq!(m.kafka_offsets[0].offset, 7);
        assert_eq!(m.kafka_offsets[0].start_offset, 0);
        // And one with no Kafka offsets at all.
        v.as_object_mut().unwrap().remove("kafka_offsets");
        fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(read_manifest(&path).unwrap().kafka_offsets.is_empty());
    }

    #[test]
    fn manifests_without_a_gate_record_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample("v4").write(dir.path()).unwrap();
        let mpath = path.join(MANIFEST_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
        assert_eq!(v["gate"]["decision"], "rejected");
        v.as_object_mut().unwrap().remove("gate");
        fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(read_manifest(&path).unwrap().gate, None);
        assert!(Artifact::read(&path).is_ok(), "the whole version still reads");
    }

    #[test]
    fn the_search_record_round_trips_and_manifests_without_it_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample("v5").write(dir.path()).unwrap();
        assert_eq!(read_manifest(&path).unwrap().search, Some(sample_search()));
        let mpath = path.join(MANIFEST_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
        assert_eq!(v["search"]["trials"][0]["start"], "random");
        v.as_object_mut().unwrap().remove("search");
        fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(read_manifest(&path).unwrap().search, None);
        // Written without a search, the key is absent, not null.
        let mut a = sample("v6");
        a.manifest.search = None;
        let p6 = a.write(dir.path()).unwrap();
        let text = fs::read_to_string(p6.join(MANIFEST_FILE)).unwrap();
        assert!(!text.contains("\"search\""), "{text}");
        assert_eq!(Artifact::read(&p6).unwrap(), a);
    }
}
