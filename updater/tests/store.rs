//! The apply script against real Redis (`RECSYS_TEST_REDIS`, default
//! redis://127.0.0.1:6379), on a random key prefix: no broker needed.

#![allow(clippy::unwrap_used)]

use schemas::{EventKind, ItemId, UserId};
use updater::store::{ApplyEvent, Store};

async fn store(cap: usize) -> Store {
    let mut cfg = common::RedisConfig::default();
    if let Ok(url) = std::env::var("RECSYS_TEST_REDIS") {
        cfg.url = url;
    }
    cfg.prefix = format!("st-{:x}:", rand::random::<u64>());
    let conn = common::redis_conn::connect(&cfg).await.unwrap();
    Store::new(conn, cfg.keys(), cap, 60)
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
    let s = store(100).await;
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
    let s = store(3).await;
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
