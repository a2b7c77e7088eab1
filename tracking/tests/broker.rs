//! The tracking task against the real broker (`RECSYS_TEST_KAFKA`, default
//! 127.0.0.1:9092; `scripts/dev-up.sh` starts tansu there) and Redis
//! (`RECSYS_TEST_REDIS`, or the Redis Cluster of `RECSYS_TEST_REDIS_CLUSTER`).
//! Each test has its own topic prefix, consumer group and Redis key prefix. A
//! missing broker fails these tests unless `RECSYS_SKIP_BROKER_TESTS=1`.
//!
//! Here: Redis loses the tracking state and the task rebuilds it from the
//! logs. The scripted scenario across a kill, a replay, the updater's
//! `/metrics` and serving's `/v1/stats` is `e2e/tests/tracking.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;

/// Redis restarted empty (every key of the prefix deleted) after the task had
/// applied the whole scenario: the next record shows the partition has no
/// stored offset although its log goes back further, and the task re-reads
/// every partition of both topics from the start of its log. The counters
/// come back exactly, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_rebuilt_from_the_logs_when_redis_loses_its_state() {
    let Some(brokers) = broker() else { return };
    let t = tag();
    let s = settings(&brokers, &t).await;
    let mut conn = common::redis_conn::connect(&s.redis).await.unwrap();
    let p = producer(&brokers);
    produce(&p, &s, &interleaved(&t)).await;
    let a = start(&s).await;
    wait_all_applied(&mut conn, &s, Duration::from_secs(60)).await;
    let keys = s.redis.keys();
    assert_counters(&mut conn, &keys).await;

    cleanup(&mut conn, &s.redis.prefix).await;
    let left = conn.scan_all(&format!("{}*", s.redis.prefix)).await.unwrap();
    assert!(left.is_empty(), "Redis lost everything: {left:?}");
    // Any new record on a partition that had records: a view by someone never
    // shown anything (no counter moves). The loss is noticed by a batch that
    // starts past its partition's log start without a stored offset; a record
    // on a partition empty until then is that partition's first and tells
    // nothing (the next record on any other partition does).
    let trigger = Rec::Ev(schemas::Event::new(
        T0 + 3 * H,
        user(&t, "after-the-loss"),
        schemas::ItemId::parse("i9").unwrap(),
        schemas::EventKind::View,
    ));
    let [_, events] = tracking::topic_names(&s);
    let (busiest, _) = high_watermarks(&brokers, &events, s.kafka.partitions)
        .into_iter()
        .max_by_key(|&(_, end)| end)
        .expect("partitions");
    produce_to(&p, &s, &trigger, busiest).await;
    wait_all_applied(&mut conn, &s, Duration::from_secs(60)).await;
    assert_counters(&mut conn, &keys).await;
    let text = a.metrics.render();
    let rebuilds: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("recsys_tracking_state_rebuilds_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(rebuilds >= 1.0, "the loss was noticed: {rebuilds}");
    eprintln!("tracking state lost and rebuilt ({rebuilds} rebuild(s)); counters exact");

    let _ = a.stop.unwrap().send(());
    tokio::time::timeout(Duration::from_secs(30), a.task).await.unwrap().unwrap().unwrap();
    cleanup(&mut conn, &s.redis.prefix).await;
}
