//! Fault: the broker is stopped (SIGTERM) and restarted while clients post
//! events to ingest and the updater consumes. Checked: ingest answers 503
//! while the broker is down and 200 again after; every event that got a 200
//! is in the topic exactly once; the updater resumes without a restart and
//! its histories equal the topic's contents.
//!
//! tansu 0.6.0 answers every message of an idempotent producer that lived
//! across its restart with "unknown broker error" (a fresh producer works).
//! Ingest notices (`[ingest] stuck_after_ms`), turns `/health` 503 and exits;
//! the test then does what an orchestrator does: starts a replacement on the
//! same port. With Apache Kafka the producer carries on by itself.
//!
//! Runs a private tansu (sqlite engine, its own port and database file), so
//! it can be killed without disturbing the other tests: `TANSU` or
//! `~/.cargo/bin/tansu` (`scripts/dev-up.sh` installs it).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::*;

fn tansu() -> Option<PathBuf> {
    if std::env::var("RECSYS_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
        return None;
    }
    let path = std::env::var_os("TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo/bin/tansu"));
    assert!(path.is_file(), "no tansu at {} (scripts/dev-up.sh installs it; or set TANSU)", path.display());
    Some(path)
}

/// A private broker; SIGKILLed when dropped.
struct Broker {
    child: Child,
}

impl Broker {
    fn start(bin: &Path, dir: &Path, port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .current_dir(dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("tansu.log")).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an operator or orchestrator stops it; SIGKILL after 10 s.
    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Default)]
struct Log {
    /// (request number, status, when)
    posts: Vec<(usize, u16, Instant)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_stopped_and_restarted_under_ingest_load() {
    let Some(bin) = tansu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let brokers = format!("127.0.0.1:{port}");
    let mut broker = Broker::start(&bin, dir.path(), port);
    let tag = tag();
    let cfg = write_config(
        dir.path(),
        &brokers,
        &tag,
        &[
            ("ingest.message_timeout_ms", 2_000.into()),
            ("ingest.request_timeout_ms", 4_000.into()),
            ("ingest.stuck_after_ms", 3_000.into()),
        ],
    );
    let s = common::config::load_settings::<updater::config::Settings>(Some(&cfg), no_env()).unwrap();
    common_topics(&s.kafka).await;
    let topic = s.kafka.topic(schemas::topics::EVENTS);
    let mut ingest = start_ingest(&cfg).await;
    let ingest_addr = ingest.addr;
    let updater = start_updater(&cfg).await;

    // One client posting one event every 10 ms, each with its own item id.
    let log = Arc::new(Mutex::new(Log::default()));
    let running = Arc::new(AtomicBool::new(true));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let poster = {
        let (log, running, client, url) =
            (log.clone(), running.clone(), client.clone(), format!("http://{ingest_addr}/v1/events"));
        tokio::spawn(async move {
            let mut n = 0usize;
            while running.load(Ordering::Relaxed) {
                let ev = view(&format!("u{}", n % 20), &format!("c{n}"));
                let status = match client.post(&url).json(&ev).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                log.lock().unwrap().posts.push((n, status, Instant::now()));
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let count = |log: &Arc<Mutex<Log>>, status: u16| log.lock().unwrap().posts.iter().filter(|p| p.1 == status).count();

    wait_for("events accepted before the fault", Duration::from_secs(30), || async { count(&log, 200) >= 50 }).await;
    broker.stop();
    let killed = Instant::now();
    eprintln!("broker stopped (SIGTERM) after {} accepted events", count(&log, 200));
    wait_for("503 while the broker is down", Duration::from_secs(30), || async { count(&log, 503) >= 3 }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _broker = Broker::start(&bin, dir.path(), port);
    eprintln!("broker restarted {:?} after the stop ({} answers 503 so far)", killed.elapsed(), count(&log, 503));
    let restarted = Instant::now();
    let ok_before = log.lock().unwrap().posts.iter().filter(|p| p.1 == 200 && p.2 < restarted).count();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut replaced = false;
    while log.lock().unwrap().posts.iter().filter(|p| p.1 == 200 && p.2 > restarted).count() < 50 {
        if ingest.exited() && !replaced {
            // The orchestrator's part: the process exited non-zero; start another.
            let why = ingest.exit_result().await.expect_err("ingest exits only with an error here");
            eprintln!("broker restart: ingest exited ({why:#}) and was replaced");
            ingest = start_ingest_at(&cfg, ingest_addr).await;
            replaced = true;
        }
        if Instant::now() > deadline {
            let probe = client.post(format!("http://{ingest_addr}/v1/events")).json(&view("probe", "p")).send().await;
            let probe = match probe {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            let log = std::fs::read_to_string(dir.path().join("tansu.log")).unwrap_or_default();
            let tail: Vec<&str> =
                log.lines().filter(|l| l.contains("panicked") || l.contains("ERROR")).take(10).collect();
            panic!(
                "no 200 again within 90 s of the restart (replaced: {replaced}); a post now: {probe}; tansu: {tail:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.store(false, Ordering::Relaxed);
    poster.await.unwrap();

    let posts = std::mem::take(&mut log.lock().unwrap().posts);
    // 0 = connection refused while ingest was being replaced.
    let other: Vec<_> = posts.iter().filter(|p| ![200, 503, 0].contains(&p.1)).collect();
    assert!(other.is_empty(), "only 200 and 503 answers: {other:?}");
    let acked: Vec<usize> = posts.iter().filter(|p| p.1 == 200).map(|p| p.0).collect();
    eprintln!(
        "{} posts: {} accepted ({ok_before} before the restart), {} refused with 503",
        posts.len(),
        acked.len(),
        posts.len() - acked.len()
    );

    // Every acknowledged event is in the topic exactly once; nothing is duplicated.
    let mut in_topic: BTreeMap<String, usize> = BTreeMap::new();
    for payload in read_topic(&brokers, &topic) {
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        *in_topic.entry(v["item_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    for n in &acked {
        assert_eq!(in_topic.get(&format!("c{n}")), Some(&1), "acknowledged event c{n}");
    }
    let dup: Vec<_> = in_topic.iter().filter(|(_, &c)| c > 1).collect();
    assert!(dup.is_empty(), "duplicated in the topic: {dup:?}");

    // The updater resumed by itself: the histories hold exactly the topic's events.
    let mut redis = common::redis_conn::connect(&s.redis).await.unwrap();
    let keys = s.redis.keys();
    let mut want: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for item in in_topic.keys() {
        let n: usize = item[1..].parse().unwrap();
        want.entry(format!("u{}", n % 20)).or_default().insert(item.clone(), 1);
    }
    let keys2 = keys.clone();
    wait_for("the updater to apply every event", Duration::from_secs(90), || {
        let (mut redis, keys, want) = (redis.clone(), keys2.clone(), want.clone());
        async move {
            for (u, items) in &want {
                if history(&mut redis, &keys, u).await.len() < items.len() {
                    return false;
                }
            }
            true
        }
    })
    .await;
    for (u, items) in &want {
        assert_eq!(&history(&mut redis, &keys, u).await, items, "history of {u}");
    }
    updater.stop().await;
    ingest.stop().await;
    cleanup_redis(&s.redis.prefix).await;
}

async fn common_topics(k: &common::KafkaConfig) {
    common::kafka::ensure_topics(k, Duration::from_secs(20)).await.unwrap();
}
