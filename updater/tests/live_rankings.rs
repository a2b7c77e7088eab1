//! The live popularity rankings of the apply script against real Redis
//! (`RECSYS_TEST_REDIS`, default redis://127.0.0.1:6379), on a random key
//! prefix (deleted at the end): counted exactly once with the histories,
//! weighted by kind, forward decayed as `schemas::popularity` computes it,
//! rescaled without changing a count, clamped to the present, bounded.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use schemas::popularity::{decayed_count, forward_weight};
use schemas::{now_ms, EventKind, ItemId, UserId, Window};
use testkit::services::{redis_config, tag};
use updater::store::{ApplyEvent, LiveRankings, Store};

const MIN: i64 = 60_000;

async fn store(windows: &[&str], size: usize) -> (Store, String) {
    let cfg = redis_config(&format!("live-{}:", tag()));
    let conn = common::redis_conn::connect(&cfg).await.unwrap();
    let live = LiveRankings {
        windows: windows.iter().map(|w| Window::parse(w).unwrap()).collect(),
        size,
        weights: model::EventWeights::default(),
    };
    (Store::new(conn, cfg.keys(), 100, 60).with_live_rankings(live), cfg.prefix)
}

fn ev(offset: i64, user: &str, item: &str, kind: EventKind, ts: i64) -> ApplyEvent {
    ApplyEvent {
        offset,
        user: UserId::parse(user).unwrap(),
        item: ItemId::parse(item).unwrap(),
        kind,
        ts,
        unknown_item: false,
    }
}

/// The ranking of `window` as decayed counts at `at`, and its landmark.
async fn ranking(s: &Store, window: &str, at: i64) -> (BTreeMap<String, f64>, i64) {
    let mut c = s.conn.clone();
    let w = Window::parse(window).unwrap();
    let landmark: i64 =
        redis::cmd("HGET").arg(s.keys.trending_landmarks()).arg(window).query_async(&mut c).await.unwrap();
    let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(s.keys.trending(&w))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut c)
        .await
        .unwrap();
    (raw.into_iter().map(|(i, sc)| (i, decayed_count(sc, landmark, w.ms(), at))).collect(), landmark)
}

/// Σ weight · exp(−(at − ts) / W) per item, computed directly.
fn expected(events: &[(&str, f64, i64)], window_ms: i64, at: i64) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for &(item, w, ts) in events {
        *out.entry(item.to_owned()).or_insert(0.0) += w * (-((at - ts) as f64) / window_ms as f64).exp();
    }
    out
}

fn assert_close(got: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{got:?} vs {want:?}");
    for (k, w) in want {
        let g = got[k];
        assert!((g - w).abs() <= 1e-9 * w.abs().max(1e-12), "{k}: {g} vs {w}");
    }
}

async fn cleanup(s: &Store, prefix: &str) {
    let mut c = s.conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut c).await.unwrap();
    }
}

#[tokio::test]
async fn a_replayed_batch_counts_once_and_kinds_weigh_as_the_model() {
    let (s, prefix) = store(&["1h", "24h"], 100).await;
    let t = now_ms() - 30 * MIN;
    let batch = vec![
        ev(0, "u1", "a", EventKind::View, t),
        ev(1, "u1", "a", EventKind::AddToCart, t + MIN),
        ev(2, "u2", "b", EventKind::Transaction, t + 2 * MIN),
        ev(3, "u2", "a", EventKind::View, t + 3 * MIN),
    ];
    let first = s.apply("t", 0, &batch).await.unwrap();
    assert_eq!(first.applied, 4);
    let at = t + 10 * MIN;
    let want_events = [("a", 1.0, t), ("a", 4.0, t + MIN), ("b", 8.0, t + 2 * MIN), ("a", 1.0, t + 3 * MIN)];
    for (w, ms) in [("1h", 60 * MIN), ("24h", 24 * 60 * MIN)] {
        let (got, landmark) = ranking(&s, w, at).await;
        assert_eq!(landmark, t + 3 * MIN, "the first batch's newest event is the landmark");
        assert_close(&got, &expected(&want_events, ms, at));
    }
    let before = ranking(&s, "1h", at).await;

    // The same batch again (a crash before the Kafka commit): the rankings do not move.
    let again = s.apply("t", 0, &batch).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 4));
    assert_eq!(ranking(&s, "1h", at).await, before, "a replayed batch counts once");

    // An overlapping batch: only its new event counts; another partition adds to the same ranking.
    let more = vec![ev(3, "u2", "a", EventKind::View, t + 3 * MIN), ev(4, "u3", "c", EventKind::View, t + 4 * MIN)];
    assert_eq!(s.apply("t", 0, &more).await.unwrap().applied, 1);
    assert_eq!(s.apply("t", 1, &[ev(0, "u4", "b", EventKind::View, t + 5 * MIN)]).await.unwrap().applied, 1);
    let mut all = want_events.to_vec();
    all.extend([("c", 1.0, t + 4 * MIN), ("b", 1.0, t + 5 * MIN)]);
    assert_close(&ranking(&s, "1h", at).await.0, &expected(&all, 60 * MIN, at));
    cleanup(&s, &prefix).await;
}

#[tokio::test]
async fn decay_follows_event_time_in_any_order_and_the_future_is_capped_at_now() {
    let (s, prefix) = store(&["1h"], 100).await;
    let now = now_ms();
    let (t0, t1) = (now - 5 * 60 * MIN, now - 20 * MIN);
    // Newest first, then an old one: order of arrival does not matter.
    s.apply("t", 0, &[ev(0, "u1", "new", EventKind::View, t1), ev(1, "u1", "old", EventKind::View, t0)]).await.unwrap();
    s.apply("t", 0, &[ev(2, "u2", "old", EventKind::View, t0 + MIN)]).await.unwrap();
    let at = now;
    let want = expected(&[("new", 1.0, t1), ("old", 1.0, t0), ("old", 1.0, t0 + MIN)], 60 * MIN, at);
    let (got, _) = ranking(&s, "1h", at).await;
    assert_close(&got, &want);
    // A recent view outranks two five-hour-old ones in a 1 h window.
    assert!(got["new"] > got["old"], "{got:?}");

    // A clock a day ahead counts as "now", not as tomorrow.
    let before = now_ms();
    s.apply("t", 0, &[ev(3, "u3", "future", EventKind::View, now + 24 * 60 * MIN)]).await.unwrap();
    let after = now_ms();
    let (got, _) = ranking(&s, "1h", after).await;
    let future = got["future"];
    let lo = (-((after - before) as f64) / (60 * MIN) as f64).exp();
    assert!((lo - 1e-9..=1.0 + 1e-9).contains(&future), "counted at most 1 at its capped time: {future}");
    cleanup(&s, &prefix).await;
}

#[tokio::test]
async fn a_rescale_moves_the_landmark_and_keeps_every_count() {
    let (s, prefix) = store(&["1m"], 100).await;
    let now = now_ms();
    // 40 one-minute windows apart: past the 32-window bound.
    let t0 = now - 45 * MIN;
    let t1 = now - 5 * MIN;
    s.apply("t", 0, &[ev(0, "u1", "a", EventKind::Transaction, t0), ev(1, "u1", "b", EventKind::View, t0)])
        .await
        .unwrap();
    let (_, l0) = ranking(&s, "1m", now).await;
    assert_eq!(l0, t0);
    s.apply("t", 0, &[ev(2, "u2", "b", EventKind::View, t1), ev(3, "u2", "c", EventKind::View, t1 - 30_000)])
        .await
        .unwrap();
    let (got, l1) = ranking(&s, "1m", t1).await;
    assert_eq!(l1, t1, "the landmark moved to the newest event");
    let want = expected(&[("a", 8.0, t0), ("b", 1.0, t0), ("b", 1.0, t1), ("c", 1.0, t1 - 30_000)], MIN, t1);
    assert_close(&got, &want);
    // The raw scores are relative to the new landmark: b's fresh view is about 1.
    let mut c = s.conn.clone();
    let b: f64 = redis::cmd("ZSCORE")
        .arg(s.keys.trending(&Window::parse("1m").unwrap()))
        .arg("b")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((b - (1.0 + forward_weight(t0, t1, MIN))).abs() < 1e-12, "{b}");
    cleanup(&s, &prefix).await;
}

#[tokio::test]
async fn rankings_are_trimmed_to_their_size_keeping_the_top() {
    let (s, prefix) = store(&["24h"], 3).await;
    let t = now_ms() - 10 * MIN;
    // Item i gets i views: 5 items, the 3 most viewed stay.
    let mut batch = Vec::new();
    for i in 1..=5i64 {
        for _ in 0..i {
            batch.push(ev(batch.len() as i64, &format!("u{i}"), &format!("item{i}"), EventKind::View, t));
        }
    }
    s.apply("t", 0, &batch).await.unwrap();
    let (got, _) = ranking(&s, "24h", t).await;
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ["item3", "item4", "item5"]);
    assert!((got["item5"] - 5.0).abs() < 1e-9, "{got:?}");
    cleanup(&s, &prefix).await;
}

#[tokio::test]
async fn without_rankings_the_script_writes_none() {
    let (s, prefix) = store(&[], 10).await;
    assert_eq!(s.live, LiveRankings { size: 10, ..LiveRankings::default() });
    s.apply("t", 0, &[ev(0, "u1", "a", EventKind::View, now_ms())]).await.unwrap();
    let mut c = s.conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await.unwrap();
    assert!(keys.iter().all(|k| !k.contains("trending")), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("hist:u1")), "{keys:?}");
    cleanup(&s, &prefix).await;
}
