//! The live popularity rankings (`trending:{window}`, kept by the updater in
//! its exactly-once apply step; `schemas::popularity`) in memory: re-read with
//! the Redis popular lists every `serving.popular_refresh_ms`, never on the
//! request path. Each ranking becomes a list of decayed counts as of its
//! reading, under the model version `live-popular`. They answer
//! `GET /v1/popular?window=NAME`, and every popular answer while no model list
//! exists (`[popularity] fallback_window`).

use std::sync::Arc;

use redis::Value;
use rustc_hash::FxHashMap;
use schemas::popularity::decayed_count;
use schemas::{live_popular_version, ItemId, RecItem};

use crate::state::{AppState, LiveRankings, PopList};

/// Most items of a ranking held in memory (`k` is at most 100; the margin
/// survives filtering out unavailable and purchased items).
pub const KEEP: usize = 200;

/// Reads every configured ranking and its landmark in one transaction (a
/// rescale between two reads would scale the counts wrongly) and installs
/// them; on a Redis failure the previous ones stay.
pub async fn refresh(state: &AppState) -> redis::RedisResult<()> {
    let s = &state.inner;
    let windows = &s.popularity.windows;
    if windows.is_empty() {
        return Ok(());
    }
    let mut conn = s.redis.clone();
    let mut p = redis::pipe();
    p.atomic().cmd("HGETALL").arg(s.keys.trending_landmarks());
    for w in windows {
        p.cmd("ZREVRANGE").arg(s.keys.trending(w)).arg(0).arg(KEEP - 1).arg("WITHSCORES");
    }
    let replies: Vec<Value> = p.query_async(&mut conn).await?;
    let mut replies = replies.into_iter();
    let landmarks: FxHashMap<String, String> = redis::from_redis_value(replies.next().unwrap_or(Value::Nil))?;
    let now = schemas::now_ms();
    let version = live_popular_version();
    let mut lists = FxHashMap::default();
    for (w, reply) in windows.iter().zip(replies) {
        let entries: Vec<(String, f64)> = redis::from_redis_value(reply)?;
        let Some(landmark) = landmarks.get(w.as_str()).and_then(|l| l.parse::<i64>().ok()) else { continue };
        let items = to_counts(&entries, landmark, w.ms(), now);
        if !items.is_empty() {
            lists.insert(w.as_str().to_owned(), PopList { model: version.clone(), items: Arc::new(items) });
        }
    }
    s.live.store(Arc::new(LiveRankings { lists }));
    Ok(())
}

/// A ranking's entries (best first) as decayed counts at `now`. Members that
/// are not item ids (nothing this code writes) and counts that underflow a
/// `f32` are left out.
pub fn to_counts(entries: &[(String, f64)], landmark_ms: i64, window_ms: i64, now_ms: i64) -> Vec<RecItem> {
    entries
        .iter()
        .filter_map(|(member, score)| {
            let count = decayed_count(*score, landmark_ms, window_ms, now_ms) as f32;
            let item_id = ItemId::parse(member).ok()?;
            (count.is_finite() && count > 0.0).then_some(RecItem { item_id, score: count })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_become_decayed_counts_in_the_ranking_order() {
        let h = 3_600_000;
        let l = 1_764_000_000_000;
        // Two events of a at the landmark; one of b an hour later; junk and an underflow.
        let entries = vec![
            ("b".to_owned(), 1f64.exp()),
            ("a".to_owned(), 2.0),
            ("not an id".to_owned(), 1.5),
            ("c".to_owned(), 1e-320),
        ];
        let items = to_counts(&entries, l, h, l + h);
        let got: Vec<(&str, f32)> = items.iter().map(|i| (i.item_id.as_str(), i.score)).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].0, got[1].0), ("b", "a"));
        assert!((got[0].1 - 1.0).abs() < 1e-6, "b's event is fresh: {got:?}");
        assert!((got[1].1 - 2.0 * (-1f32).exp()).abs() < 1e-6, "a's two events are one window old: {got:?}");
    }
}
