//! The whole process (`serving::run` on a real listener) against a private
//! redis-server that is stopped and restarted while requests flow: answers
//! stay 200 (degraded while Redis is away), `/ready` follows Redis, and the
//! personal lists come back without restarting serving.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::synthetic::item_id;
use schemas::Variant;
use support::*;

fn start_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        // DEBUG SLEEP (the slow-Redis test), from this machine only.
        .args(["--enable-debug-command", "local"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `serving::run` on a port-0 listener, following `CURRENT` only (no broker).
async fn start_serving(
    s: &serving::Settings,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = serving::Metrics::new().unwrap();
    let deps = serving::Deps {
        listener,
        redis: support::redis_conn_lazy(s),
        producer: serving::impressions::producer(s, &metrics).unwrap(),
        announcements: None,
        metrics,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serving::run(s.clone(), deps, async move {
        let _ = stop_rx.await;
    }));
    (addr, stop_tx, server)
}

async fn seed(url: &str, keys: &schemas::RedisKeys, user: &str) {
    let mut c = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let list: Vec<String> = (10..20).map(item_id).collect();
    let uid = schemas::UserId::parse(user).unwrap();
    redis::cmd("SET").arg(keys.recs(&uid)).arg(recs_json("v1", &list)).query_async::<()>(&mut c).await.unwrap();
}

#[derive(Debug, Default)]
struct Seen {
    statuses: Vec<u16>,
    personal: usize,
    degraded: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_while_requests_flow() {
    let port = closed_port();
    let mut redis = start_redis(port);
    let url = format!("redis://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let mut s = settings(&url);
    s.model.artifacts_dir = dir.path().to_owned();
    let keys = s.redis.keys();
    let user = user_in(Variant::Als, "restart");
    seed(&url, &keys, &user).await;

    let (addr, stop_tx, server) = start_serving(&s).await;

    let client = reqwest::Client::new();
    let rec_url = format!("http://{addr}/v1/recommendations/{user}?k=5");
    let ready_url = format!("http://{addr}/ready");
    // Wait for the listener.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(&ready_url).send().await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let running = Arc::new(AtomicBool::new(true));
    let flow = {
        let (seen, running, client, rec_url) = (seen.clone(), running.clone(), client.clone(), rec_url.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let resp = client.get(&rec_url).send().await.unwrap();
                let status = resp.status().as_u16();
                let v: serde_json::Value = resp.json().await.unwrap();
                {
                    let mut s = seen.lock().unwrap();
                    s.statuses.push(status);
                    s.personal += usize::from(v["source"] == "personal");
                    s.degraded += usize::from(v["degraded"] == true);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let snapshot = |seen: &Arc<Mutex<Seen>>| {
        let s = seen.lock().unwrap();
        (s.statuses.len(), s.personal, s.degraded)
    };

    // Phase 1: Redis up → personal lists, ready.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (n1, p1, d1) = snapshot(&seen);
    assert!(n1 > 5 && p1 == n1 && d1 == 0, "phase 1: {n1} requests, {p1} personal, {d1} degraded");
    assert_eq!(client.get(&ready_url).send().await.unwrap().status(), 200);

    // Phase 2: Redis stopped → 200 degraded, not ready.
    redis.kill().unwrap();
    redis.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (n2, p2, d2) = snapshot(&seen);
    assert!(n2 - n1 > 5, "requests kept flowing while Redis was down: {}", n2 - n1);
    assert!(d2 - d1 >= 3, "degraded answers while Redis was down: {}", d2 - d1);
    let r = client.get(&ready_url).send().await.unwrap();
    assert_eq!(r.status(), 503);

    // Phase 3: Redis back (empty: no persistence) and re-seeded → personal again, no restart.
    let mut redis = start_redis(port);
    seed(&url, &keys, &user).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, p, _) = snapshot(&seen);
        if p > p2 + 5 {
            break;
        }
        assert!(Instant::now() < deadline, "personal answers did not come back after Redis restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.get(&ready_url).send().await.unwrap().status(), 200);
    running.store(false, Ordering::Relaxed);
    flow.await.unwrap();

    let bad = seen.lock().unwrap().statuses.iter().filter(|&&c| c != 200).count();
    assert_eq!(bad, 0, "every answer was 200");
    let metrics = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&metrics, "recsys_serving_degraded_responses_total") >= 3.0);
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    redis.kill().unwrap();
    redis.wait().unwrap();
}

/// Slow Redis (`DEBUG SLEEP` stalls the whole server): every answer still
/// comes back 200 within the Redis budget plus a margin (degraded while the
/// stall lasts), and personal answers resume by themselves afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_bounds_latency_by_the_redis_budget() {
    let port = closed_port();
    let mut redis = start_redis(port);
    let url = format!("redis://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let mut s = settings(&url);
    s.model.artifacts_dir = dir.path().to_owned();
    let budget = Duration::from_millis(s.serving.redis_timeout_ms);
    let keys = s.redis.keys();
    let user = user_in(Variant::Als, "slow");
    seed(&url, &keys, &user).await;
    let (addr, stop_tx, server) = start_serving(&s).await;
    let client = reqwest::Client::new();
    let rec_url = format!("http://{addr}/v1/recommendations/{user}?k=5");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(&rec_url).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Four clients for 3 s; Redis stalls for 1.5 s of it.
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), rec_url.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while started.elapsed() < Duration::from_secs(3) {
                    let t = Instant::now();
                    let r = client.get(&url).send().await.unwrap();
                    let status = r.status().as_u16();
                    let v: serde_json::Value = r.json().await.unwrap();
                    seen.push((
                        started.elapsed(),
                        t.elapsed(),
                        status,
                        v["degraded"] == true,
                        v["source"] == "personal",
                    ));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let stall = tokio::spawn(async move {
        // The client gives up waiting (its own response timeout); Redis sleeps on.
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg("1.5").query_async(&mut c).await;
    });
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    stall.await.unwrap();
    let worst = all.iter().map(|s| s.1).max().unwrap();
    let degraded = all.iter().filter(|s| s.3).count();
    let bad = all.iter().filter(|s| s.2 != 200).count();
    let personal_after = all.iter().filter(|s| s.0 > Duration::from_millis(2_300) && s.4).count();
    eprintln!(
        "slow redis: {} requests, worst {worst:?} (budget {budget:?}), {degraded} degraded, {personal_after} personal after the stall",
        all.len()
    );
    assert_eq!(bad, 0, "every answer was 200");
    assert!(degraded > 10, "answers during the stall were degraded: {degraded}");
    // The budget, plus scheduling on a loaded 2-core CI machine.
    assert!(worst < budget + Duration::from_millis(450), "worst latency {worst:?} with a {budget:?} budget");
    assert!(personal_after > 0, "personal answers resumed after the stall");
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    redis.kill().unwrap();
    redis.wait().unwrap();
}
