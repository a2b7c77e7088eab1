//! The background re-fold after a model swap, against real Redis
//! (`RECSYS_TEST_REDIS`, default redis://127.0.0.1:6379) on a random prefix.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use model::synthetic::{item_id, synthetic_artifact, SyntheticSpec};
use schemas::{EventKind, ItemId, ModelVersion, RecsList, UserId};
use testkit::services::{redis_config, tag, KeysCleanup};
use updater::compute::{self, ComputeParams, NewItems};
use updater::refold::Pass;
use updater::store::{read_histories, write_recs, ApplyEvent, Store};
use updater::{Metrics, ServedModel, Settings};

async fn store() -> (Store, KeysCleanup) {
    // The re-fold pass SCANs the whole keyspace: keys left behind slow every later run.
    let cfg = redis_config(&format!("rf-{}:", tag()));
    let conn = common::redis_conn::connect(&cfg).await.unwrap();
    let cleanup = KeysCleanup::for_config(&cfg);
    (Store::new(conn, cfg.keys(), 100, 600), cleanup)
}

fn model(version: &str, seed: u64) -> Arc<ServedModel> {
    let spec = SyntheticSpec { version: version.into(), seed, ..SyntheticSpec::default() };
    Arc::new(ServedModel::from_artifact(synthetic_artifact(&spec), "0".repeat(64)).unwrap())
}

fn pass(s: &Store, metrics: &Metrics, instance: &str) -> Pass {
    Pass {
        store: s.clone(),
        metrics: metrics.clone(),
        params: ComputeParams::from_settings(&Settings::default()),
        rate: 100_000,
        batch: 16,
        ttl_s: 600,
        instance: instance.into(),
    }
}

async fn list(s: &Store, u: &UserId) -> Option<RecsList> {
    let raw: Option<Vec<u8>> = redis::cmd("GET").arg(s.keys.recs(u)).query_async(&mut s.conn.clone()).await.unwrap();
    raw.map(|b| RecsList::parse_json(&b).unwrap())
}

/// 100 users with histories and old lists; one already refreshed by the live
/// pipeline with the new model. The pass gives every other user exactly the
/// list a direct refresh computes, leaves the pipeline's list alone, and is
/// not repeated once done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_with_a_history_gets_the_new_models_list() {
    let (s, _cleanup) = store().await;
    let (old, new) = (model("v1", 1), model("v2", 2));
    let users: Vec<UserId> = (0..100).map(|u| UserId::parse(&format!("user{u}")).unwrap()).collect();
    let events: Vec<ApplyEvent> = users
        .iter()
        .enumerate()
        .flat_map(|(u, user)| {
            (0..3).map(move |j| ApplyEvent {
                offset: (u * 3 + j) as i64,
                user: user.clone(),
                item: ItemId::parse(&item_id((u * 7 + j * 13) % 200)).unwrap(),
                kind: EventKind::View,
                ts: 1_000 + j as i64,
                unknown_item: false,
            })
        })
        .collect();
    let applied = s.apply("t", 0, &events).await.unwrap();
    assert_eq!(applied.applied, 300);
    let params = ComputeParams::from_settings(&Settings::default());
    let hists = read_histories(&mut s.conn.clone(), &s.keys, &users).await.unwrap();
    let old_lists = compute::refresh(&old, &NewItems::default(), &params, &hists, 1);
    write_recs(&mut s.conn.clone(), &s.keys, &old_lists, 600).await.unwrap();
    // The live pipeline already refreshed user0 with v2 (a marker score shows
    // whether the pass overwrote it).
    let mut live = compute::refresh(&new, &NewItems::default(), &params, &hists[..1], 2);
    live[0].1.items[0].score = 1234.5;
    write_recs(&mut s.conn.clone(), &s.keys, &live, 600).await.unwrap();

    let metrics = Metrics::new().unwrap();
    let written = pass(&s, &metrics, "a").run(new.clone()).await.unwrap();
    assert_eq!(written, Some(99), "every user but the one the pipeline refreshed");
    let want = compute::refresh(&new, &NewItems::default(), &params, &hists, 3);
    for (u, w) in &want {
        let got = list(&s, u).await.unwrap();
        assert_eq!(got.model, ModelVersion::parse("v2").unwrap(), "{u}");
        if u.as_str() == "user0" {
            assert_eq!(got.items[0].score, 1234.5, "the pipeline's list is left alone");
            continue;
        }
        let ids: Vec<_> = got.items.iter().map(|i| i.item_id.clone()).collect();
        let want_ids: Vec<_> = w.items.iter().map(|i| i.item_id.clone()).collect();
        assert_eq!(ids, want_ids, "{u}");
        for (g, w) in got.items.iter().zip(&w.items) {
            assert!((g.score - w.score).abs() < 1e-4, "{u}: {} vs {}", g.score, w.score);
        }
    }
    assert!(metrics.render().contains("recsys_updater_refold_users_total 100"), "{}", metrics.render());
    // Done is done: a restarted instance does not fold everyone again.
    assert_eq!(pass(&s, &metrics, "b").run(new.clone()).await.unwrap(), None);
}

/// While another instance holds a version's lock, this one waits and writes
/// nothing; the lock expiring (its holder died) lets it take over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_runs_a_pass_at_a_time() {
    let (s, _cleanup) = store().await;
    let new = model("v2", 2);
    let u = UserId::parse("solo").unwrap();
    let ev = ApplyEvent {
        offset: 0,
        user: u.clone(),
        item: ItemId::parse(&item_id(3)).unwrap(),
        kind: EventKind::AddToCart,
        ts: 5,
        unknown_item: false,
    };
    s.apply("t", 0, &[ev]).await.unwrap();
    let lock = format!("{}:lock", s.keys.refold(&new.version));
    let _: () =
        redis::cmd("SET").arg(&lock).arg("other").arg("PX").arg(1_500).query_async(&mut s.conn.clone()).await.unwrap();
    let metrics = Metrics::new().unwrap();
    let p = pass(&s, &metrics, "me");
    let waiting = tokio::time::timeout(Duration::from_millis(800), p.run(new.clone())).await;
    assert!(waiting.is_err(), "waits while another instance holds the lock");
    assert!(list(&s, &u).await.is_none());
    let done = tokio::time::timeout(Duration::from_secs(30), p.run(new.clone())).await.unwrap().unwrap();
    assert_eq!(done, Some(1), "takes over once the lock expired");
    assert_eq!(list(&s, &u).await.unwrap().model.as_str(), "v2");
}
