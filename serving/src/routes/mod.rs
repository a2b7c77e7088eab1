//! The handlers, by family: [`recs`] (a user's recommendations and their
//! fallbacks), [`similar`], [`popular`], [`stats`] and [`ops`] (health,
//! readiness, metrics, admin). Here: what their answers share — the item
//! shape, the A/B arm, the impression an answer publishes, and the filling of
//! an answer from candidate lists (unavailable items and what the page's
//! filters refuse left out, topped up from the next list).

pub mod ops;
pub mod popular;
pub mod recs;
pub mod similar;
pub mod stats;

use schemas::{Impression, ItemId, ModelVersion, RecId, RecItem, Source, UserId, Variant};
use serde::Serialize;
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::live_catalog::{live_available, LiveMap};
use crate::state::{Inner, PopList};

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct ScoredItem {
    #[schema(value_type = String)]
    pub item_id: ItemId,
    pub score: f32,
}

impl From<RecItem> for ScoredItem {
    fn from(r: RecItem) -> Self {
        ScoredItem { item_id: r.item_id, score: r.score }
    }
}

/// The route-level `source` label of a response (for the request counter).
#[derive(Debug, Clone, Copy)]
pub struct SourceLabel(pub &'static str);

/// A/B arm: `fnv1a64(salt ‖ 0xff ‖ user_id) % 100 < treatment_percent` → `als`.
/// Sticky per user and the same in every instance (no process-random seed).
pub fn variant_of(salt: &str, user: &str, treatment_percent: u8) -> Variant {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain(std::iter::once(0xff)).chain(user.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if h % 100 < u64::from(treatment_percent) {
        Variant::Als
    } else {
        Variant::Popular
    }
}

/// Publishes what `/similar` or `/popular` showed to `user` (in the user's
/// sticky arm, so `/v1/stats` counts it there); without a user there is
/// nobody to attribute later events to, which is counted.
pub fn impression(
    s: &Inner,
    user: Option<UserId>,
    route: &'static str,
    rec_id: &RecId,
    items: &[ScoredItem],
    model: &ModelVersion,
    source: Source,
) {
    let Some(user) = user else {
        s.metrics.impressions_anonymous.with_label_values(&[route]).inc();
        return;
    };
    let variant = variant_of(&s.cfg.ab_salt, user.as_str(), s.cfg.treatment_percent);
    publish_impression(s, user, variant, rec_id, items, model, source);
}

/// Queues the impression of one answer (never waits on Kafka).
pub fn publish_impression(
    s: &Inner,
    user: UserId,
    variant: Variant,
    rec_id: &RecId,
    items: &[ScoredItem],
    model: &ModelVersion,
    source: Source,
) {
    s.publisher.publish(Impression {
        rec_id: rec_id.clone(),
        ts: schemas::now_ms(),
        user_id: user,
        items: items.iter().map(|i| i.item_id.clone()).collect(),
        variant,
        model_version: model.clone(),
        source,
    });
}

/// True for an item the live catalog marks unavailable or, when it says
/// nothing of the item, the served model does (an item neither knows may be
/// newer than the model: kept). The live state wins both ways: an item it
/// marks available is served though the model says sold out.
pub fn unavailable(cat: Option<&Catalog>, live: Option<&LiveMap>, id: &str) -> bool {
    match live_available(live, id) {
        Some(a) => !a,
        None => cat.and_then(|c| c.row(id).map(|r| !c.available[r as usize])).unwrap_or(false),
    }
}

/// An answer filled from candidate lists in order, up to `k` items: an item is
/// taken once, when it is not [`unavailable`] (live catalog, then model) and `keep`
/// (the page's filters, the user's purchases) accepts it. The first list that
/// gives an item names the answer's source and model.
pub struct Fill<'a> {
    k: usize,
    cat: Option<&'a Catalog>,
    live: Option<&'a LiveMap>,
    keep: &'a dyn Fn(&str) -> bool,
    pub items: Vec<ScoredItem>,
    /// Source and model of the first item taken.
    pub first: Option<(Source, ModelVersion)>,
}

impl std::fmt::Debug for Fill<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fill")
            .field("k", &self.k)
            .field("items", &self.items)
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

impl<'a> Fill<'a> {
    pub fn new(
        k: usize,
        cat: Option<&'a Catalog>,
        live: Option<&'a LiveMap>,
        keep: &'a dyn Fn(&str) -> bool,
    ) -> Fill<'a> {
        Fill { k, cat, live, keep, items: Vec::with_capacity(k), first: None }
    }

    /// True once `k` items are taken.
    pub fn full(&self) -> bool {
        self.items.len() >= self.k
    }

    /// Whether `id` would be taken now (the cached-list reader asks before it
    /// makes an id of it).
    pub fn accepts(&self, id: &str) -> bool {
        // k is at most 100: a scan is cheaper than hashing every candidate.
        !unavailable(self.cat, self.live, id) && (self.keep)(id) && !self.items.iter().any(|i| i.item_id.as_str() == id)
    }

    /// Takes `item` if it is accepted and there is room.
    pub fn offer(&mut self, source: Source, model: &ModelVersion, item: ScoredItem) {
        if !self.full() && self.accepts(item.item_id.as_str()) {
            self.take(source, model, item);
        }
    }

    fn take(&mut self, source: Source, model: &ModelVersion, item: ScoredItem) {
        self.first.get_or_insert_with(|| (source, model.clone()));
        self.items.push(item);
    }

    /// Takes from `list`, best first, until full.
    pub fn extend(&mut self, source: Source, model: &ModelVersion, list: &[RecItem]) {
        for r in list {
            if self.full() {
                break;
            }
            if self.accepts(r.item_id.as_str()) {
                self.take(source, model, ScoredItem::from(r.clone()));
            }
        }
    }
}

/// The candidates of a category page: for a category with subcategories the
/// served model's popularity over the whole subtree, else the category's own
/// popular list (Redis's `popular:cat:{c}` when present, else the model's).
pub fn category_list(s: &Inner, cat: &Catalog, category: u64) -> Option<PopList> {
    match cat.popular_by_subtree.get(&category) {
        Some(l) => Some(PopList { model: cat.version.clone(), items: l.clone() }),
        None => s.popular_of(Some(cat), category),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_are_sticky_and_split_by_the_percentage() {
        let als = (0..10_000).filter(|n| variant_of("s", &format!("u{n}"), 30) == Variant::Als).count();
        assert!((2_700..3_300).contains(&als), "{als}");
        assert_eq!(variant_of("s", "u1", 30), variant_of("s", "u1", 30));
        assert!((0..100).all(|n| variant_of("s", &format!("u{n}"), 0) == Variant::Popular));
        assert!((0..100).all(|n| variant_of("s", &format!("u{n}"), 100) == Variant::Als));
    }
}
