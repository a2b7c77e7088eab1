//! The tracking task hosted by the `recsys-updater` binary, against the real
//! broker and Redis (see `tracking/tests/broker.rs` for the environment
//! variables): the scripted scenario of `tracking/tests/support` is produced,
//! the process is SIGKILLed after it applied part of it, a new process
//! finishes; the counts in Redis are exactly the scenario's, the new
//! process's `/metrics` carries `recsys_tracking_*` and it applied exactly the
//! records the killed one had not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tracking/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use testkit::services::free_port;

/// A `recsys-updater` child process, SIGKILLed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(s: &tracking::Settings, models: &Path, port: u16) -> Proc {
    Command::new(env!("CARGO_BIN_EXE_recsys-updater"))
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml"))
        .env("RECSYS__KAFKA__BROKERS", &s.kafka.brokers)
        .env("RECSYS__KAFKA__TOPIC_PREFIX", &s.kafka.topic_prefix)
        .env("RECSYS__KAFKA__PARTITIONS", s.kafka.partitions.to_string())
        // The single node or the cluster the test's Redis config names.
        .envs(testkit::services::redis_env(&s.redis))
        .env("RECSYS__MODEL__ARTIFACTS_DIR", models)
        .env("RECSYS__UPDATER__GROUP_ID", format!("{}-updater", s.tracking.group_id))
        .env("RECSYS__UPDATER__SESSION_TIMEOUT_MS", "6000")
        .env("RECSYS__UPDATER__METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .env("RECSYS__TRACKING__GROUP_ID", &s.tracking.group_id)
        .env("RECSYS__TRACKING__SESSION_TIMEOUT_MS", "6000")
        .env("RECSYS__TRACKING__BATCH_MAX_RECORDS", "3")
        .env("RUST_LOG", std::env::var("RECSYS_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Proc)
        .unwrap()
}

async fn metrics_text(port: u16, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            return r.text().await.unwrap();
        }
        assert!(start.elapsed() < timeout, "no /metrics on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_updater_process_counts_nothing_twice() {
    let Some(brokers) = broker() else { return };
    let t = tag();
    let s = settings(&brokers, &t).await;
    let models = tempfile::tempdir().unwrap();
    let mut conn = common::redis_conn::connect(&s.redis).await.unwrap();
    let p = producer(&brokers);
    let recs = interleaved(&t);
    let total = recs.len() as i64;
    let (first, second) = recs.split_at(recs.len() * 2 / 3);

    produce(&p, &s, first).await;
    let mut a = spawn(&s, models.path(), free_port());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n: i64 = applied(&mut conn, &s).await.values().sum();
        if n >= 6 {
            break;
        }
        assert!(Instant::now() < deadline, "the first process applied nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = a.0.kill();
    let _ = a.0.wait();
    let partly: i64 = applied(&mut conn, &s).await.values().sum();

    produce(&p, &s, second).await;
    let port = free_port();
    let _b = spawn(&s, models.path(), port);
    wait_all_applied(&mut conn, &s, Duration::from_secs(90)).await;
    assert_counters(&mut conn, &s.redis.keys()).await;

    let text = metrics_text(port, Duration::from_secs(10)).await;
    for name in [
        "recsys_tracking_impressions_total",
        "recsys_tracking_clicks_total",
        "recsys_tracking_carts_total",
        "recsys_tracking_purchases_total",
        "recsys_tracking_revenue_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} counter")), "{name} missing from the updater's /metrics");
    }
    assert!(text.contains("recsys_updater_events_total"), "the updater's own metrics are there too");
    let applied_by_b = metric(&text, "recsys_tracking_records_total", "outcome=\"applied\",topic=\"impressions\"")
        + metric(&text, "recsys_tracking_records_total", "outcome=\"applied\",topic=\"events\"");
    eprintln!("killed after {partly} records; the new process applied {applied_by_b}");
    assert_eq!(applied_by_b as i64, total - partly, "each record applied by exactly one process");
    cleanup(&mut conn, &s.redis.prefix).await;
}
