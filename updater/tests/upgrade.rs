//! `recsys-updater upgrade-keys` on keys written in the layout before the
//! Redis Cluster hash tags, on the local Redis node (`RECSYS_TEST_REDIS`) under
//! a random prefix: every key moves, the counters are indexed, a second run
//! finds nothing, a key present under both names is left and reported, and a
//! cluster is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use schemas::{ModelVersion, RedisKeys, Variant, Window};
use testkit::services::{redis_cluster_nodes, redis_url, tag, KeysCleanup};

async fn node(prefix: &str) -> common::redis_conn::RedisConn {
    common::redis_conn::connect(&common::RedisConfig {
        url: redis_url(),
        prefix: prefix.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_old_layout_moves_to_the_current_names_once() {
    let p = format!("up-{}:", tag());
    let _cleanup = KeysCleanup::new(redis_url(), &p);
    let mut c = node(&p).await;
    let keys = RedisKeys::new(&p);
    // What the previous version wrote, and a key that is not ours.
    let k = |rest: &str| format!("{p}{rest}");
    let writes: Vec<Vec<String>> = vec![
        vec!["ZADD".into(), k("trending:1h"), "2.5".into(), "i1".into()],
        vec!["ZADD".into(), k("trending:24h"), "7".into(), "i2".into()],
        vec!["HSET".into(), k("trending_landmarks"), "1h".into(), "1700000000000".into()],
        vec!["HSET".into(), k("stats:als:v1"), "impressions".into(), "10".into()],
        vec!["HSET".into(), k("stats:popular:v1"), "impressions".into(), "4".into()],
        vec!["HSET".into(), k("stats_hourly:als:v1:494000"), "impressions".into(), "3".into()],
        vec!["SADD".into(), k("stats_index"), k("stats:als:v1"), k("stats:popular:v1")],
        vec!["SET".into(), k("stats:notes"), "x".into()],
    ];
    for w in writes {
        let mut cmd = redis::cmd(&w[0]);
        cmd.arg(&w[1..]);
        let _: () = cmd.query_async(&mut c).await.unwrap();
    }

    let dry = updater::upgrade::upgrade_keys(&mut c, &keys, true).await.unwrap();
    assert_eq!(dry.moved.len(), 6, "{dry:?}");
    let exists: i64 = redis::cmd("EXISTS").arg(format!("{p}trending:1h")).query_async(&mut c).await.unwrap();
    assert_eq!(exists, 1, "a dry run changes nothing");

    let done = updater::upgrade::upgrade_keys(&mut c, &keys, false).await.unwrap();
    assert_eq!(done.moved.len(), 6, "{done:?}");
    assert!(done.kept.is_empty() && done.old_index_deleted, "{done:?}");
    let v1 = ModelVersion::parse("v1").unwrap();
    let score: f64 = redis::cmd("ZSCORE")
        .arg(keys.trending(&Window::parse("1h").unwrap()))
        .arg("i1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(score, 2.5);
    let landmark: String =
        redis::cmd("HGET").arg(keys.trending_landmarks()).arg("1h").query_async(&mut c).await.unwrap();
    assert_eq!(landmark, "1700000000000");
    let n: String =
        redis::cmd("HGET").arg(keys.stats(Variant::Als, &v1)).arg("impressions").query_async(&mut c).await.unwrap();
    assert_eq!(n, "10");
    let n: String = redis::cmd("HGET")
        .arg(keys.stats_hourly(Variant::Als, &v1, 494_000))
        .arg("impressions")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, "3");
    let index: BTreeSet<String> = redis::cmd("SMEMBERS").arg(keys.stats_index()).query_async(&mut c).await.unwrap();
    assert_eq!(index, BTreeSet::from([keys.stats(Variant::Als, &v1), keys.stats(Variant::Popular, &v1)]));
    let left: Vec<String> = c.scan_all(&keys.pattern("*")).await.unwrap();
    assert!(left.contains(&format!("{p}stats:notes")), "{left:?}");
    assert!(!left.iter().any(|k| k == &format!("{p}stats_index") || k == &format!("{p}trending:1h")), "{left:?}");

    let again = updater::upgrade::upgrade_keys(&mut c, &keys, false).await.unwrap();
    assert!(again.nothing(), "{again:?}");

    // A key under both names: both stay, reported.
    let _: () = redis::cmd("ZADD").arg(format!("{p}trending:1h")).arg(1).arg("i9").query_async(&mut c).await.unwrap();
    let clash = updater::upgrade::upgrade_keys(&mut c, &keys, false).await.unwrap();
    assert_eq!(clash.kept, vec![(format!("{p}trending:1h"), keys.trending(&Window::parse("1h").unwrap()))]);
    let score: f64 = redis::cmd("ZSCORE")
        .arg(keys.trending(&Window::parse("1h").unwrap()))
        .arg("i1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(score, 2.5, "the current key is not overwritten");
}

#[tokio::test]
async fn a_cluster_is_refused() {
    let Some(nodes) = redis_cluster_nodes() else { return };
    let cfg = common::RedisConfig { url: String::new(), cluster_nodes: nodes, ..Default::default() };
    let mut c = common::redis_conn::connect(&cfg).await.unwrap();
    let e = updater::upgrade::upgrade_keys(&mut c, &cfg.keys(), true).await.unwrap_err();
    assert!(e.to_string().contains("one Redis node"), "{e}");
}
