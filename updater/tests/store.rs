//! The apply steps against real Redis (`RECSYS_TEST_REDIS`, default
//! redis://127.0.0.1:6379, or the Redis Cluster of
//! `RECSYS_TEST_REDIS_CLUSTER`), on a random key prefix: no broker needed.

#![allow(clippy::unwrap_used)]

use schemas::{EventKind, ItemId, UserId};
use testkit::services::{redis_config, tag, KeysCleanup};
use updater::store::{ApplyEvent, Slice, Store};

async fn store(cap: usize) -> (Store, KeysCleanup) {
    let cfg = redis_config(&format!("st-{}:", tag()));
    let conn = common::redis_conn::connect(&cfg).await.unwrap();
    (Store::new(conn, cfg.keys(), cap, 60), KeysCleanup::for_config(&cfg))
}

fn ev(offset: i64, user: &str, item: &str, kind: EventKind, ts: i64) -> ApplyEvent {
    ApplyEvent {
        offset,
        user: UserId::parse(user).unwrap(),
        item: ItemId::parse(item).unwrap(),
        kind,
        ts,
        unknown_item: item.starts_with("new"),
    }
}

fn counts(h: &updater::store::UserHistory) -> Vec<(String, [u32; 3])> {
    h.items.iter().map(|(i, e)| (i.to_string(), e.counts)).collect()
}

#[tokio::test]
async fn a_replayed_slice_is_skipped_and_histories_are_returned() {
    let (s, _cleanup) = store(100).await;
    let batch = vec![
        ev(0, "a", "1", EventKind::View, 10),
        ev(1, "a", "1", EventKind::AddToCart, 12),
        ev(2, "b", "new1", EventKind::View, 11),
        ev(3, "a", "2", EventKind::Transaction, 13),
    ];
    let first = s.apply("t", 0, &batch).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (4, 0));
    assert_eq!(counts(&first.histories[0]), vec![("1".into(), [1, 1, 0]), ("2".into(), [0, 0, 1])]);
    assert_eq!(first.histories[0].items[0].1.last_ts, 12);
    assert_eq!(first.unknown_items, vec![(ItemId::parse("new1").unwrap(), 1)]);

    // The same slice again (a crash before the Kafka commit): nothing changes,
    // but the histories still come back so the lists can be rewritten.
    let again = s.apply("t", 0, &batch).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 4));
    assert_eq!(counts(&again.histories[0]), counts(&first.histories[0]));

    // Overlapping slice: only the new offset applies. Other partitions are separate.
    let more = vec![ev(3, "a", "2", EventKind::Transaction, 13), ev(4, "a", "2", EventKind::View, 14)];
    let r = s.apply("t", 0, &more).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (1, 1));
    assert_eq!(counts(&r.histories[0]), vec![("1".into(), [1, 1, 0]), ("2".into(), [1, 0, 1])]);
    let other = s.apply("t", 1, &[ev(0, "c", "1", EventKind::View, 1)]).await.unwrap();
    assert_eq!(other.applied, 1);
}

#[tokio::test]
async fn histories_are_capped_least_recently_touched_first() {
    let (s, _cleanup) = store(3).await;
    let batch: Vec<ApplyEvent> = (0..5).map(|i| ev(i, "a", &format!("{}", 10 + i), EventKind::View, 100 + i)).collect();
    let r = s.apply("t", 0, &batch).await.unwrap();
    let items: Vec<String> = r.histories[0].items.iter().map(|(i, _)| i.to_string()).collect();
    assert_eq!(items, vec!["12", "13", "14"]);
    // Touching an old item again makes it recent.
    let r = s
        .apply("t", 0, &[ev(5, "a", "12", EventKind::View, 200), ev(6, "a", "99", EventKind::View, 201)])
        .await
        .unwrap();
    let items: Vec<String> = r.histories[0].items.iter().map(|(i, _)| i.to_string()).collect();
    assert_eq!(items, vec!["12", "14", "99"]);
}

#[tokio::test]
async fn a_full_history_is_cut_in_batches_below_the_cap() {
    // Cap 32: past it, the history drops to 32 - 32/16 = 30 items, then fills
    // up to the cap again before the next cut.
    let (s, _cleanup) = store(32).await;
    let items = |r: &updater::store::Applied| {
        let mut v: Vec<u32> = r.histories[0].items.iter().map(|(i, _)| i.to_string().parse().unwrap()).collect();
        v.sort_unstable();
        v
    };
    let batch: Vec<ApplyEvent> =
        (0..32).map(|i| ev(i, "a", &format!("{}", 100 + i), EventKind::View, 1000 + i)).collect();
    let r = s.apply("t", 0, &batch).await.unwrap();
    assert_eq!(items(&r), (100..132).collect::<Vec<_>>(), "at the cap nothing is evicted");
    let r = s.apply("t", 0, &[ev(32, "a", "132", EventKind::View, 1032)]).await.unwrap();
    assert_eq!(items(&r), (103..133).collect::<Vec<_>>(), "one past the cap: the 3 least recent go");
    let batch: Vec<ApplyEvent> =
        (33..35).map(|i| ev(i, "a", &format!("{}", 100 + i), EventKind::View, 1000 + i)).collect();
    let r = s.apply("t", 0, &batch).await.unwrap();
    assert_eq!(items(&r), (103..135).collect::<Vec<_>>(), "refilled to the cap without a cut");
    let r = s.apply("t", 0, &[ev(35, "a", "135", EventKind::View, 1035)]).await.unwrap();
    assert_eq!(items(&r), (106..136).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_missing_offset_past_the_log_start_is_reported_as_lost_state() {
    let (s, _cleanup) = store(100).await;
    let slice = |floor, first, last| Slice { floor, first, last };
    let batch: Vec<ApplyEvent> = (0..4).map(|i| ev(i, "a", "1", EventKind::View, 10 + i)).collect();
    // A partition's first batch starts at the log start: applied.
    assert_eq!(s.apply_guarded("t", 0, &batch[..2], slice(0, 0, 1)).await.unwrap().applied, 2);
    // Later batches find the stored offset: applied.
    let r = s.apply_guarded("t", 0, &batch[2..], slice(0, 2, 3)).await.unwrap();
    assert_eq!((r.applied, r.lost), (2, false));
    // Redis loses the state: a batch from the middle of the log is refused.
    let mut c = s.conn.clone();
    let user = UserId::parse("a").unwrap();
    for k in [s.keys.offsets("t", 0), s.keys.hist(&user)] {
        let _: () = redis::cmd("DEL").arg(k).query_async(&mut c).await.unwrap();
    }
    let more = [ev(4, "a", "1", EventKind::View, 20)];
    let r = s.apply_guarded("t", 0, &more, slice(0, 4, 4)).await.unwrap();
    assert!(r.lost && r.applied == 0 && r.histories.is_empty());
    let h: Option<String> = redis::cmd("HGET").arg(s.keys.hist(&user)).arg("1").query_async(&mut c).await.unwrap();
    assert_eq!(h, None, "nothing applied");
    // Re-reading from the log start rebuilds it whole.
    let all: Vec<ApplyEvent> = batch.iter().cloned().chain(more.iter().cloned()).collect();
    let r = s.apply_guarded("t", 0, &all, slice(0, 0, 4)).await.unwrap();
    assert_eq!((r.applied, r.lost), (5, false));
    assert_eq!(counts(&r.histories[0]), vec![("1".into(), [5, 0, 0])]);
    // Retention moved the log start: a batch starting there is not a loss; -1 turns the check off.
    assert!(!s.apply_guarded("t", 1, &[ev(7, "b", "1", EventKind::View, 1)], slice(7, 7, 7)).await.unwrap().lost);
    assert!(!s.apply_guarded("t", 2, &[ev(9, "b", "1", EventKind::View, 1)], slice(-1, 9, 9)).await.unwrap().lost);
}

#[tokio::test]
async fn dead_lettered_messages_advance_the_stored_offset_too() {
    let (s, _cleanup) = store(100).await;
    // Offsets 0..=2 were invalid (dead-lettered): nothing to apply, but handled.
    let r = s.apply_guarded("t", 0, &[], Slice { floor: 0, first: 0, last: 2 }).await.unwrap();
    assert_eq!((r.applied, r.lost), (0, false));
    let mut c = s.conn.clone();
    let stored: Option<i64> = redis::cmd("GET").arg(s.keys.offsets("t", 0)).query_async(&mut c).await.unwrap();
    assert_eq!(stored, Some(2));
    // So the next valid event (offset 3) is not mistaken for lost state.
    let next = [ev(3, "a", "1", EventKind::View, 1)];
    let r = s.apply_guarded("t", 0, &next, Slice { floor: 0, first: 3, last: 3 }).await.unwrap();
    assert_eq!((r.applied, r.lost), (1, false));
}

#[tokio::test]
async fn two_owners_of_a_partition_apply_each_event_once() {
    let (s, _cleanup) = store(1000).await;
    let s2 = s.clone();
    // Many users. Offsets 0..100 applied and committed; then the old owner
    // finishes its batch 100..300 while the new owner, starting at the
    // committed offset, applies 100..400 — at once, interleaved per user.
    let all: Vec<ApplyEvent> =
        (0..400).map(|i| ev(i, &format!("u{}", i % 37), &format!("{}", i % 11), EventKind::View, 1000 + i)).collect();
    assert_eq!(s.apply("t", 0, &all[..100]).await.unwrap().applied, 100);
    let (a, b) = (&all[100..300], &all[100..]);
    let (ra, rb) = tokio::join!(s.apply("t", 0, a), s2.apply("t", 0, b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(100 + ra.applied + rb.applied, all.len(), "each event applied exactly once");
    let again = s.apply("t", 0, &all).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, all.len()));
    let views: u32 = again.histories.iter().flat_map(|h| h.items.iter().map(|(_, e)| e.counts[0])).sum();
    assert_eq!(views as usize, all.len());
    let mut c = s.conn.clone();
    let stored: Option<i64> = redis::cmd("GET").arg(s.keys.offsets("t", 0)).query_async(&mut c).await.unwrap();
    assert_eq!(stored, Some(399));
}
