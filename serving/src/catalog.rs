//! What serving keeps in memory of the served model version: item ids,
//! categories and availability, the category tree (`categories.csv`, for the
//! `category=` filter of a category page), and the global, per-category and
//! per-subtree popular lists (the fallbacks that work with Redis down). The item factors are not kept:
//! serving computes nothing from them (item neighbours are the trainer's
//! `similar:{item}` lists). Swapped atomically when a new version is
//! announced ([`CatalogHandle`]).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use model::artifact::{self, Artifact, CategoryRecord};
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
    /// Every category the model knows (its tree and its items' categories)
    /// with its ancestors, itself first, root last: the subtree test of the
    /// `category=` filter is one look-up and a scan of a few ids.
    pub ancestors: FxHashMap<u64, Box<[u64]>>,
    /// Popular list of each category that has subcategories, over its whole
    /// subtree (available items only); a leaf's is in `popular_by_category`.
    pub popular_by_subtree: FxHashMap<u64, Arc<IdList>>,
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
        let ancestors = ancestors(&art.categories, &category);
        // A category with subcategories: the best items of its own list and of
        // every descendant's (each already holds its best POPULAR_KEEP).
        let mut by_subtree: FxHashMap<u64, Ranked> = FxHashMap::default();
        for (c, l) in &by_cat {
            for a in ancestors.get(c).map(|a| &a[1..]).unwrap_or_default() {
                by_subtree.entry(*a).or_default().extend(l.iter().copied());
            }
        }
        let popular_by_subtree = by_subtree
            .into_iter()
            .map(|(c, mut l)| {
                l.extend(by_cat.get(&c).into_iter().flatten().copied());
                l.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
                l.truncate(POPULAR_KEEP);
                (c, to_ids(&l))
            })
            .collect();
        Ok(Catalog {
            version,
            manifest_sha256,
            items,
            index,
            category,
            available,
            popular,
            popular_by_category,
            ancestors,
            popular_by_subtree,
            weights: art.manifest.weights,
        })
    }

    /// Row of an item.
    pub fn row(&self, item: &str) -> Option<u32> {
        self.index.get(item).copied()
    }

    /// True for a category of the model's tree or of one of its items.
    pub fn knows_category(&self, category: u64) -> bool {
        self.ancestors.contains_key(&category)
    }

    /// True when `category` is `root` or below it.
    pub fn in_subtree(&self, category: u64, root: u64) -> bool {
        self.ancestors.get(&category).is_some_and(|a| a.contains(&root))
    }

    /// True for an item whose category is `root` or below it; an item the
    /// model does not know, or knows without a category, is in no subtree.
    pub fn item_in_subtree(&self, item: &str, root: u64) -> bool {
        self.row(item).and_then(|r| self.category[r as usize]).is_some_and(|c| self.in_subtree(c, root))
    }
}

/// Each category's ancestor chain, itself first. Categories named only by
/// items are roots. A cycle in the tree (nothing the trainer writes, but the
/// file is data) is cut where the chain would repeat itself.
fn ancestors(tree: &[CategoryRecord], item_categories: &[Option<u64>]) -> FxHashMap<u64, Box<[u64]>> {
    let parent: FxHashMap<u64, Option<u64>> = tree.iter().map(|c| (c.id, c.parent)).collect();
    let all = parent
        .keys()
        .copied()
        .chain(tree.iter().filter_map(|c| c.parent))
        .chain(item_categories.iter().flatten().copied());
    let mut out: FxHashMap<u64, Box<[u64]>> = FxHashMap::default();
    for c in all {
        if out.contains_key(&c) {
            continue;
        }
        let mut chain = vec![c];
        let mut cur = c;
        while let Some(&Some(p)) = parent.get(&cur) {
            if chain.contains(&p) {
                break;
            }
            chain.push(p);
            cur = p;
        }
        out.insert(c, chain.into_boxed_slice());
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, parent: Option<u64>) -> CategoryRecord {
        CategoryRecord { id, parent, depth: 1, events: 0, users: 0, items: 0 }
    }

    #[test]
    fn ancestor_chains_follow_the_tree_and_cut_cycles() {
        // 1 ← 2 ← 3, 9 only on an item, 5 ↔ 6 a cycle.
        let tree = [rec(1, None), rec(2, Some(1)), rec(3, Some(2)), rec(5, Some(6)), rec(6, Some(5))];
        let a = ancestors(&tree, &[Some(3), Some(9), None]);
        assert_eq!(&*a[&3], &[3, 2, 1]);
        assert_eq!(&*a[&1], &[1]);
        assert_eq!(&*a[&9], &[9]);
        assert_eq!(&*a[&5], &[5, 6]);
        assert_eq!(&*a[&6], &[6, 5]);
        assert_eq!(a.len(), 6);
    }

    #[test]
    fn subtree_lists_rank_the_items_of_a_category_and_its_descendants() {
        let mut art = model::synthetic::synthetic_artifact(&model::synthetic::SyntheticSpec::default());
        art.items[1].available = Some(false);
        let c = Catalog::from_artifact(art.clone(), String::new()).unwrap();
        // Synthetic tree: categories 1..=8, the even ones children of 1; item i in 1 + i % 8.
        let sub = &c.popular_by_subtree[&1];
        assert!(!c.popular_by_subtree.contains_key(&2), "a leaf has its own list only");
        let mut want: Vec<(f32, usize)> = (0..art.items.len())
            .filter(|&i| [0, 1, 3, 5, 7].contains(&(i % 8)) && i != 1 && art.items[i].popularity > 0.0)
            .map(|i| (art.items[i].popularity as f32, i))
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        want.truncate(POPULAR_KEEP);
        let got: Vec<&str> = sub.iter().map(|r| r.item_id.as_str()).collect();
        let want: Vec<&str> = want.iter().map(|(_, i)| art.items[*i].id.as_str()).collect();
        assert_eq!(got, want);
        assert!(c.item_in_subtree(&art.items[3].id, 1), "category 4 is below 1");
        assert!(!c.item_in_subtree(&art.items[2].id, 1), "category 3 is a root");
        assert!(!c.item_in_subtree("not-in-the-model", 1));
        assert!(c.knows_category(8) && !c.knows_category(9));
    }
}
