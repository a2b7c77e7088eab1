//! The updater against the real broker (`RECSYS_TEST_KAFKA`, default
//! 127.0.0.1:9092; `scripts/dev-up.sh` starts tansu there) and Redis
//! (`RECSYS_TEST_REDIS`, default redis://127.0.0.1:6379). Every test has its
//! own topic prefix, consumer group, Redis key prefix and artifacts directory.
//! A missing broker fails these tests unless `RECSYS_SKIP_BROKER_TESTS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_conn::RedisConn;
use model::synthetic::{synthetic_artifact, SyntheticSpec};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};
use schemas::{DeadLetter, Event, EventKind, HistEntry, ItemId, RecsList, UserId};
use testkit::services::{broker, free_port, redis_config, redis_env, tag};
use updater::Settings;

/// One isolated test environment.
struct Env {
    settings: Settings,
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    async fn new(brokers: &str, partitions: i32) -> Env {
        let tag = tag();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("models");
        let mut s = Settings::default();
        s.kafka.brokers = brokers.to_owned();
        s.kafka.partitions = partitions;
        s.kafka.topic_prefix = format!("ut-{tag}.");
        s.redis = redis_config(&format!("ut-{tag}:"));
        s.model.artifacts_dir = root.clone();
        s.updater.group_id = format!("ut-{tag}");
        s.updater.metrics_listen = "127.0.0.1:0".parse().unwrap();
        s.updater.session_timeout_ms = 6_000;
        s.updater.new_item_refresh_ms = 100;
        common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
        Env { settings: s, _dir: dir, root }
    }

    /// Trains and writes a version; `current` also makes it the served one.
    fn write_model(&self, version: &str, seed: u64, current: bool) -> PathBuf {
        let spec = SyntheticSpec { version: version.into(), seed, ..SyntheticSpec::default() };
        let path = synthetic_artifact(&spec).write(&self.root).unwrap();
        if current {
            model::artifact::set_current(&self.root, version).unwrap();
        }
        path
    }

    fn topic(&self, t: &str) -> String {
        self.settings.kafka.topic(t)
    }

    fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.settings.kafka.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .create()
            .unwrap()
    }

    async fn redis(&self) -> RedisConn {
        common::redis_conn::connect(&self.settings.redis).await.unwrap()
    }

    /// Starts the updater in this process; returns its metrics address,
    /// a stop switch and the task.
    async fn start(&self, settings: Settings) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let deps = updater::Deps::connect(&settings, listener).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(updater::run(settings, deps, async move {
            let _ = rx.await;
        }));
        Running { addr, stop: Some(tx), task }
    }

    /// Starts the `recsys-updater` binary (for SIGKILL tests).
    fn spawn_process(&self, metrics_port: u16) -> Proc {
        let s = &self.settings;
        Command::new(env!("CARGO_BIN_EXE_recsys-updater"))
            .arg("--config")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml"))
            .env("RECSYS__KAFKA__BROKERS", &s.kafka.brokers)
            .env("RECSYS__KAFKA__TOPIC_PREFIX", &s.kafka.topic_prefix)
            .env("RECSYS__KAFKA__PARTITIONS", s.kafka.partitions.to_string())
            .envs(redis_env(&s.redis))
            .env("RECSYS__MODEL__ARTIFACTS_DIR", &s.model.artifacts_dir)
            .env("RECSYS__UPDATER__GROUP_ID", &s.updater.group_id)
            .env("RECSYS__UPDATER__SESSION_TIMEOUT_MS", "6000")
            .env("RECSYS__UPDATER__BATCH_MAX_EVENTS", "64")
            .env("RECSYS__UPDATER__METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            // Tracking's consumer group is shared across tests; it has tests of its own.
            .env("RECSYS__TRACKING__ENABLED", "false")
            .env("RUST_LOG", std::env::var("RECSYS_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map(Proc)
            .unwrap()
    }

    /// `recsys-updater verify` as an operator runs it, on this test's topic
    /// and Redis: whether it passed, and what it printed.
    fn verify_process(&self) -> (bool, String) {
        let s = &self.settings;
        let out = Command::new(env!("CARGO_BIN_EXE_recsys-updater"))
            .arg("--config")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml"))
            .arg("verify")
            .env("RECSYS__KAFKA__BROKERS", &s.kafka.brokers)
            .env("RECSYS__KAFKA__TOPIC_PREFIX", &s.kafka.topic_prefix)
            .envs(redis_env(&s.redis))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprint!("{text}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Waits until the Redis offset of every partition reached the topic's end.
    async fn wait_applied(&self, timeout: Duration) {
        assert!(self.try_wait_applied(timeout).await, "events not all applied within {timeout:?}");
    }

    /// [`Env::wait_applied`], answering false on timeout.
    async fn try_wait_applied(&self, timeout: Duration) -> bool {
        let ends = high_watermarks(&self.settings.kafka.brokers, &self.topic(schemas::topics::EVENTS));
        let mut r = self.redis().await;
        let keys = self.settings.redis.keys();
        let topic = self.topic(schemas::topics::EVENTS);
        let start = Instant::now();
        loop {
            let mut done = true;
            for (p, end) in &ends {
                if *end == 0 {
                    continue;
                }
                let v: Option<i64> = redis::cmd("GET").arg(keys.offsets(&topic, *p)).query_async(&mut r).await.unwrap();
                done &= v == Some(end - 1);
            }
            if done {
                return true;
            }
            if start.elapsed() > timeout {
                eprintln!("not all applied within {timeout:?} (ends {ends:?})");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn history(&self, r: &mut RedisConn, user: &str) -> BTreeMap<String, [u32; 3]> {
        let raw: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.settings.redis.keys().hist(&UserId::parse(user).unwrap()))
            .query_async(r)
            .await
            .unwrap();
        // `@p{partition}`: the history's exactly-once guard, not an item.
        raw.into_iter()
            .filter(|(k, _)| !k.starts_with('@'))
            .map(|(k, v)| (k, HistEntry::parse(&v).unwrap().counts))
            .collect()
    }

    async fn recs(&self, r: &mut RedisConn, user: &str) -> Option<RecsList> {
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.settings.redis.keys().recs(&UserId::parse(user).unwrap()))
            .query_async(r)
            .await
            .unwrap();
        raw.map(|b| RecsList::parse_json(&b).unwrap())
    }

    async fn cleanup(&self) {
        testkit::services::delete_keys(&mut self.redis().await, &self.settings.redis.prefix).await;
    }
}

/// A `recsys-updater` child process, SIGKILLed when dropped (also when a
/// test panics, so no process outlives its test).
struct Proc(Child);

impl Proc {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("graceful stop").unwrap().unwrap();
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr)).await.unwrap().text().await.unwrap()
    }

    async fn health(&self) -> serde_json::Value {
        reqwest::get(format!("http://{}/health", self.addr)).await.unwrap().json().await.unwrap()
    }
}

fn high_watermarks(brokers: &str, topic: &str) -> Vec<(i32, i64)> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    parts.into_iter().map(|p| (p, c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1)).collect()
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn event_json(ts: i64, user: &str, item: &str, kind: EventKind) -> Vec<u8> {
    Event::new(ts, UserId::parse(user).unwrap(), ItemId::parse(item).unwrap(), kind).to_json()
}

async fn send(p: &FutureProducer, topic: &str, key: &[u8], payload: &[u8]) {
    p.send(FutureRecord::<[u8], [u8]>::to(topic).key(key).payload(payload), Timeout::After(Duration::from_secs(10)))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// user → item → counts per kind, aggregated from scratch.
fn aggregate(events: &[(String, String, EventKind)]) -> BTreeMap<String, BTreeMap<String, [u32; 3]>> {
    let mut m: BTreeMap<String, BTreeMap<String, [u32; 3]>> = BTreeMap::new();
    for (u, i, k) in events {
        m.entry(u.clone()).or_default().entry(i.clone()).or_default()[k.index()] += 1;
    }
    m
}

async fn assert_histories(env: &Env, events: &[(String, String, EventKind)]) {
    let want = aggregate(events);
    let mut r = env.redis().await;
    for (u, items) in &want {
        assert_eq!(&env.history(&mut r, u).await, items, "history of {u}");
    }
}

/// Event time of the n-th event of a produced stream.
const STREAM_T0: i64 = 1_700_000_000_000;

/// Every configured live ranking holds each item's weighted events exactly
/// once: its decayed counts equal the direct sum over the streams produced
/// (each timed from [`STREAM_T0`] by [`produce_stream`]), so no crash, retry
/// or rebuild counted an event twice or lost one.
async fn assert_rankings(env: &Env, produced: &[&[(String, String, EventKind)]]) {
    let at = STREAM_T0 + produced.iter().map(|p| p.len()).max().unwrap_or(0) as i64;
    let weights = env.settings.training.weights;
    let mut r = env.redis().await;
    let keys = env.settings.redis.keys();
    assert!(!env.settings.popularity.windows.is_empty(), "the shipped windows are on");
    for w in &env.settings.popularity.windows {
        let mut want: BTreeMap<String, f64> = BTreeMap::new();
        for events in produced {
            for (n, (_, item, kind)) in events.iter().enumerate() {
                let age = (at - (STREAM_T0 + n as i64)) as f64;
                *want.entry(item.clone()).or_default() += f64::from(weights.of(*kind)) * (-age / w.ms() as f64).exp();
            }
        }
        let landmark: i64 =
            redis::cmd("HGET").arg(keys.trending_landmarks()).arg(w.as_str()).query_async(&mut r).await.unwrap();
        let got: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys.trending(w))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut r)
            .await
            .unwrap();
        let got: BTreeMap<String, f64> =
            got.into_iter().map(|(i, sc)| (i, schemas::popularity::decayed_count(sc, landmark, w.ms(), at))).collect();
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "items of ranking {w}");
        for (item, x) in &want {
            assert!((got[item] - x).abs() <= 1e-9 * x, "ranking {w}, item {item}: {} vs {x}", got[item]);
        }
    }
}

async fn produce_stream(env: &Env, events: &[(String, String, EventKind)], per_second: f64) {
    let p = env.producer();
    let topic = env.topic(schemas::topics::EVENTS);
    let start = Instant::now();
    let now = STREAM_T0;
    for (n, (u, i, k)) in events.iter().enumerate() {
        let payload = event_json(now + n as i64, u, i, *k);
        let fut = p.send_result(FutureRecord::<[u8], [u8]>::to(&topic).key(u.as_bytes()).payload(&payload)).unwrap();
        drop(fut);
        if per_second.is_finite() {
            let due = Duration::from_secs_f64(n as f64 / per_second);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
}

async fn scrape(port: u16) -> Option<String> {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_posted_to_ingest_gives_a_new_user_the_direct_fold_in() {
    let Some(b) = broker() else { return };
    let env = Env::new(&b, 3).await;
    let dir = env.write_model("v1", 7, true);
    let mut s = env.settings.clone();
    s.training.rerank.enabled = false; // the list is then exactly the top scores
    let up = env.start(s).await;

    // ingest, in-process, on the same topics.
    let is = ingest::Settings { kafka: env.settings.kafka.clone(), ..Default::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingest_addr = listener.local_addr().unwrap();
    let (itx, irx) = tokio::sync::oneshot::channel::<()>();
    let ingest_task =
        tokio::spawn(ingest::run(is.clone(), listener, ingest::kafka::producer(&is).unwrap(), async move {
            let _ = irx.await;
        }));

    let user = format!("brand-new-{}", rand::random::<u32>());
    let items = [("1003", "view"), ("1010", "addtocart"), ("1003", "view"), ("1042", "transaction")];
    let body: Vec<serde_json::Value> =
        items.iter().map(|(i, k)| serde_json::json!({"user_id": user, "item_id": i, "event": k})).collect();
    let resp = reqwest::Client::new().post(format!("http://{ingest_addr}/v1/events")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);

    // The fold-in computed directly from the same history.
    let m = updater::ServedModel::load(&dir).unwrap();
    let row = |id: &str| m.item_index[&ItemId::parse(id).unwrap()];
    let w = model::EventWeights::default();
    let known = vec![(row("1003"), 2.0 * w.view), (row("1010"), w.addtocart), (row("1042"), w.transaction)];
    let x = updater::compute::fold_user(&m, &known, model::Solver::Cholesky).unwrap();
    let mut scores: Vec<(f32, &ItemId)> = m
        .item_ids
        .iter()
        .enumerate()
        .filter(|(r, _)| !known.iter().any(|(k, _)| *k as usize == *r))
        .map(|(r, id)| (model::dense::dot(&x, m.y.row(r)), id))
        .collect();
    scores.sort_by(|a, b| b.0.total_cmp(&a.0));

    let mut r = env.redis().await;
    let start = Instant::now();
    let list = loop {
        if env.history(&mut r, &user).await.values().map(|c| c.iter().sum::<u32>()).sum::<u32>() == 4 {
            if let Some(l) = env.recs(&mut r, &user).await {
                let top = &l.items[0];
                if (top.score - scores[0].0).abs() < 1e-4 {
                    break l;
                }
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no list for {user} matching the fold-in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(list.model.as_str(), "v1");
    // The list carries list_margin items past recs_size, for serving to drop
    // the ones that sell out before the user's next event.
    assert_eq!(list.items.len(), env.settings.updater.recs_size + env.settings.updater.list_margin);
    for (got, (want_score, want_id)) in list.items.iter().zip(&scores) {
        assert!((got.score - want_score).abs() < 1e-4, "{got:?} vs {want_id} {want_score}");
        let direct = model::dense::dot(&x, m.y.row(row(got.item_id.as_str()) as usize));
        assert!((got.score - direct).abs() < 1e-4, "{got:?} vs direct {direct}");
    }
    let metrics = up.metrics().await;
    assert!(metric(&metrics, "recsys_updater_events_total{outcome=\"applied\"}") >= 4.0, "{metrics}");
    assert!(metric(&metrics, "recsys_updater_freshness_seconds_count") >= 4.0);

    let _ = itx.send(());
    ingest_task.await.unwrap().unwrap();
    up.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_and_restarted_every_event_is_applied_once() {
    let Some(b) = broker() else { return };
    let env = Env::new(&b, 3).await;
    env.write_model("v1", 7, true);
    let events = support::stream("s", 3_000, 150, 11);
    let producing = {
        let events = events.clone();
        let env_settings = env.settings.clone();
        tokio::spawn(async move {
            let e = Env { settings: env_settings, _dir: tempfile::tempdir().unwrap(), root: PathBuf::new() };
            produce_stream(&e, &events, 1_500.0).await;
        })
    };
    // Kill the process (SIGKILL: no commit, no goodbye) at different points
    // (twice in the suite; scripts/chaos.sh sets RECSYS_CHAOS_KILLS=10), then
    // let a last one finish.
    let kills: usize = std::env::var("RECSYS_CHAOS_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let keys = env.settings.redis.keys();
    let topic = env.topic(schemas::topics::EVENTS);
    let mut r = env.redis().await;
    let step = 2_400 / (kills as i64 + 1);
    for round in 0..kills {
        let mut child = env.spawn_process(free_port());
        let start = Instant::now();
        // A random point within this round's stretch of the stream.
        let target = step * round as i64 + 1 + rand::random::<u64>() as i64 % step;
        loop {
            let mut applied = 0i64;
            for p in 0..3 {
                let v: Option<i64> = redis::cmd("GET").arg(keys.offsets(&topic, p)).query_async(&mut r).await.unwrap();
                applied += v.map_or(0, |v| v + 1);
            }
            if applied >= target {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "round {round}: only {applied} applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill();
        eprintln!(
            "kill {}/{kills}: SIGKILL after {applied_at_kill} events applied",
            round + 1,
            applied_at_kill = target
        );
    }
    let mut child = env.spawn_process(free_port());
    producing.await.unwrap();
    env.wait_applied(Duration::from_secs(90)).await;
    child.kill();
    assert_histories(&env, &events).await;
    assert_rankings(&env, &[&events]).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_state_rebuilds_every_history_from_the_log() {
    let Some(b) = broker() else { return };
    let env = Env::new(&b, 3).await;
    env.write_model("v1", 7, true);
    let events = support::stream("s", 1_500, 120, 17);
    let running = env.start(env.settings.clone()).await;
    produce_stream(&env, &events[..1_000], f64::INFINITY).await;
    env.wait_applied(Duration::from_secs(60)).await;
    assert_histories(&env, &events[..1_000]).await;

    // Redis comes back empty (it keeps nothing on disk here): every key gone.
    env.cleanup().await;
    produce_stream(&env, &events[1_000..], f64::INFINITY).await;
    env.wait_applied(Duration::from_secs(90)).await;
    // Not only the new events: the histories and the rankings hold everything, exactly once.
    assert_histories(&env, &events).await;
    assert_rankings(&env, &[&events[..1_000], &events[1_000..]]).await;
    let text = running.metrics().await;
    assert!(metric(&text, "recsys_updater_state_rebuilds_total") >= 1.0, "{text}");
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_partitions_and_survive_one_being_killed() {
    let Some(b) = broker() else { return };
    let env = Env::new(&b, 4).await;
    env.write_model("v1", 7, true);
    let events = support::stream("s", 4_000, 200, 23);
    let (pa, pb) = (free_port(), free_port());
    let mut a = env.spawn_process(pa);
    let mut b_ = env.spawn_process(pb);
    let producing = {
        let events = events.clone();
        let s = env.settings.clone();
        tokio::spawn(async move {
            let e = Env { settings: s, _dir: tempfile::tempdir().unwrap(), root: PathBuf::new() };
            produce_stream(&e, &events, 800.0).await;
        })
    };
    // Both get partitions and apply events.
    let start = Instant::now();
    loop {
        let (ta, tb) = (scrape(pa).await.unwrap_or_default(), scrape(pb).await.unwrap_or_default());
        let applied = |t: &str| metric(t, "recsys_updater_events_total{outcome=\"applied\"}");
        if applied(&ta) > 0.0 && applied(&tb) > 0.0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "both instances never applied events");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.kill();
    producing.await.unwrap();
    // Apache Kafka moves the dead member's partitions to the survivor after
    // session.timeout.ms. tansu 0.6.0 was seen to re-form the group with the
    // survivor but hand it only its old partitions; there the killed
    // instance's replacement (what an orchestrator starts) picks them up.
    let mut replacement = None;
    if !env.try_wait_applied(Duration::from_secs(30)).await {
        eprintln!("the survivor did not take every partition: starting a replacement instance");
        replacement = Some(env.spawn_process(free_port()));
    }
    env.wait_applied(Duration::from_secs(90)).await;
    b_.kill();
    drop(replacement);
    assert_histories(&env, &events).await;
    // The operator's check agrees with the from-scratch aggregation.
    let (exact, out) = env.verify_process();
    assert!(exact && out.ends_with("lost 0 (0 users), applied twice 0 (0 users)\n"), "{out}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_tells_exact_histories_from_a_lost_or_a_doubled_event() {
    let Some(b) = broker() else { return };
    let env = Env::new(&b, 2).await;
    env.write_model("v1", 7, true);
    let events = support::stream("s", 1_000, 50, 29);
    let up = env.start(env.settings.clone()).await;
    produce_stream(&env, &events, f64::INFINITY).await;
    env.wait_applied(Duration::from_secs(60)).await;
    up.stop().await;
    let (exact, out) = env.verify_process();
    assert!(exact, "{out}");
    assert!(out.contains("1000 messages, 1000 events the updater applies"), "{out}");
    assert!(out.contains("50 users compared"), "{out}");
    assert!(out.ends_with("lost 0 (0 users), applied twice 0 (0 users)\n"), "{out}");

    // One user's view counted once more than the log holds it; another
    // user's item gone with all its events.
    let want = aggregate(&events);
    let mut users = want.iter();
    let (u1, items1) = users.next().unwrap();
    let (i1, c1) = items1.iter().next().unwrap();
    let (u2, items2) = users.next().unwrap();
    let (i2, c2) = items2.iter().next().unwrap();
    let keys = env.settings.redis.keys();
    let mut r = env.redis().await;
    let twice = HistEntry { counts: [c1[0] + 1, c1[1], c1[2]], last_ts: STREAM_T0 }.encode();
    let _: () = redis::cmd("HSET")
        .arg(keys.hist(&UserId::parse(u1).unwrap()))
        .arg(i1)
        .arg(twice)
        .query_async(&mut r)
        .await
        .unwrap();
    let _: () =
        redis::cmd("HDEL").arg(keys.hist(&UserId::parse(u2).unwrap())).arg(i2).query_async(&mut r).await.unwrap();
    let lost: u32 = c2.iter().sum();
    let (exact, out) = env.verify_process();
    assert!(!exact, "{out}");
    assert!(out.contains(&format!("user {u1} item {i1}:")), "{out}");
    assert!(out.contains(&format!("user {u2} item {i2}:")), "{out}");
    assert!(out.ends_with(&format!("lost {lost} (1 users), applied twice 1 (1 users)\n")), "{out}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_go_to_the_dead_letter_topic_with_their_reason() {
    let Some(b) = broker() else { return };
    let env = Env::new(&b, 2).await;
    env.write_model("v1", 7, true);
    let up = env.start(env.settings.clone()).await;
    let p = env.producer();
    let topic = env.topic(schemas::topics::EVENTS);
    let ok = r#"{"ts":1700000000000,"user_id":"u1","item_id":"1001","event":"view"}"#;
    let bad: Vec<(&[u8], Vec<u8>, &str)> = vec![
        (b"u1", b"{not json".to_vec(), "not valid JSON"),
        (b"u1", b"[1,2]".to_vec(), "must be a JSON object"),
        (b"u1", br#"{"user_id":"u1","item_id":"1","event":"view","user_id":"u2"}"#.to_vec(), "duplicate field"),
        (b"u1", br#"{"user_id":"u1","item_id":"1","event":"view","color":"red"}"#.to_vec(), "unknown field"),
        (b"u1", br#"{"user_id":"u1","event":"view"}"#.to_vec(), "missing field `item_id`"),
        (b"u1", br#"{"user_id":"u1","item_id":null,"event":"view"}"#.to_vec(), "must not be null"),
        (b"u 1", br#"{"user_id":"u 1","item_id":"1","event":"view"}"#.to_vec(), "field `user_id`"),
        (b"u1", br#"{"user_id":"u1","item_id":[1],"event":"view"}"#.to_vec(), "field `item_id`"),
        (b"u1", br#"{"user_id":"u1","item_id":"1","event":"click"}"#.to_vec(), "field `event`"),
        (b"u1", br#"{"ts":9000000000000000,"user_id":"u1","item_id":"1","event":"view"}"#.to_vec(), "field `ts`"),
        (b"u1", br#"{"user_id":"u1","item_id":"1","event":"transaction","revenue":-5}"#.to_vec(), "field `revenue`"),
        (
            b"u1",
            br#"{"user_id":"u1","item_id":"1","event":"view","revenue":5}"#.to_vec(),
            "only allowed on transactions",
        ),
        (b"u1", vec![0xff, 0xfe, b'{'], "not valid JSON"),
        (b"someone-else", ok.as_bytes().to_vec(), "is not the event's user_id"),
    ];
    for (k, payload, _) in &bad {
        send(&p, &topic, k, payload).await;
    }
    send(&p, &topic, b"u1", ok.as_bytes()).await;

    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", format!("{}-dlq", env.settings.updater.group_id))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&env.topic(schemas::topics::EVENTS_DLQ)]).unwrap();
    let mut got: Vec<DeadLetter> = Vec::new();
    while got.len() < bad.len() {
        let m = tokio::time::timeout(Duration::from_secs(30), dlq.recv()).await.expect("dead letters").unwrap();
        got.push(DeadLetter::parse_json(m.payload().unwrap()).unwrap());
    }
    for (_, payload, reason) in &bad {
        let d = got.iter().find(|d| &d.original == payload).unwrap_or_else(|| panic!("{payload:?} not dead-lettered"));
        assert!(
            d.reason.contains(reason),
            "{:?}: reason {:?} lacks {reason:?}",
            String::from_utf8_lossy(payload),
            d.reason
        );
        assert_eq!(d.source, schemas::DeadLetterSource::Updater);
    }
    env.wait_applied(Duration::from_secs(30)).await;
    let mut r = env.redis().await;
    assert_eq!(env.history(&mut r, "u1").await, BTreeMap::from([("1001".to_owned(), [1, 0, 0])]));
    let m = up.metrics().await;
    assert_eq!(metric(&m, "recsys_updater_events_total{outcome=\"rejected\"}"), bad.len() as f64, "{m}");
    up.stop().await;
    drop(dlq);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_model_is_swapped_in_and_a_corrupted_one_refused() {
    let Some(b) = broker() else { return };
    let env = Env::new(&b, 2).await;
    env.write_model("v1", 7, true);
    let up = env.start(env.settings.clone()).await;
    assert_eq!(up.health().await["model"], "v1");
    let p = env.producer();
    let events = env.topic(schemas::topics::EVENTS);
    let models = env.topic(schemas::topics::MODELS);
    let announce = |dir: &Path, version: &str| {
        schemas::ModelAnnouncement {
            version: schemas::ModelVersion::parse(version).unwrap(),
            path: dir.display().to_string(),
            manifest_sha256: schemas::Sha256Hex::parse(&model::artifact::manifest_sha256(dir).unwrap()).unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
        }
        .to_json()
    };
    // The announcement consumer starts at the end of the topic: give its
    // group a moment to be assigned before announcing.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Events keep flowing while v2 arrives.
    let mut r = env.redis().await;
    let current_key = env.settings.redis.keys().model_current();
    let current: Option<String> = redis::cmd("GET").arg(&current_key).query_async(&mut r).await.unwrap();
    assert_eq!(current, None, "model:current is the trainer's to write, not the updater's");
    let v2 = env.write_model("v2", 99, false);
    send(&p, &events, b"w1", &event_json(1_700_000_000_000, "w1", "1001", EventKind::View)).await;
    // As the trainer publishes: `model:current`, then the announcement.
    let () = redis::cmd("SET").arg(&current_key).arg("v2").query_async(&mut r).await.unwrap();
    send(&p, &models, schemas::ModelAnnouncement::KEY, &announce(&v2, "v2")).await;
    let start = Instant::now();
    while up.health().await["model"] != "v2" {
        assert!(start.elapsed() < Duration::from_secs(30), "v2 never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&p, &events, b"w1", &event_json(1_700_000_000_001, "w1", "1002", EventKind::View)).await;
    let start = Instant::now();
    loop {
        if let Some(l) = env.recs(&mut r, "w1").await {
            if l.model.as_str() == "v2" && env.history(&mut r, "w1").await.len() == 2 {
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "w1 never re-folded with v2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // v3: the factors file truncated after the manifest was written.
    let v3 = env.write_model("v3", 5, false);
    let f = v3.join("factors.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len / 2).unwrap();
    send(&p, &models, schemas::ModelAnnouncement::KEY, &announce(&v3, "v3")).await;
    // And an announcement that is not one.
    send(&p, &models, schemas::ModelAnnouncement::KEY, br#"{"version":"v4"}"#).await;
    let start = Instant::now();
    while metric(&up.metrics().await, "recsys_updater_model_loads_total{outcome=\"refused\"}") < 2.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "the bad announcements were not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.health().await["model"], "v2");
    send(&p, &events, b"w1", &event_json(1_700_000_000_002, "w1", "1003", EventKind::View)).await;
    env.wait_applied(Duration::from_secs(30)).await;
    let m = up.metrics().await;
    assert_eq!(metric(&m, "recsys_updater_batch_retries_total{stage=\"write\"}"), 0.0, "{m}");
    assert_eq!(metric(&m, "recsys_updater_batch_retries_total{stage=\"apply\"}"), 0.0, "{m}");
    let current: String =
        redis::cmd("GET").arg(env.settings.redis.keys().model_current()).query_async(&mut r).await.unwrap();
    assert_eq!(current, "v2");
    up.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_the_model_does_not_know_is_folded_in_once_enough_users_have_it() {
    let Some(b) = broker() else { return };
    let env = Env::new(&b, 2).await;
    let dir = env.write_model("v1", 7, true);
    let up = env.start(env.settings.clone()).await;
    let p = env.producer();
    let topic = env.topic(schemas::topics::EVENTS);
    // 6 users, each with two known items and the new product "launch-1".
    for u in 0..6 {
        let user = format!("early{u}");
        for (n, item) in
            [model::synthetic::item_id(u), model::synthetic::item_id(u + 10), "launch-1".into()].iter().enumerate()
        {
            send(&p, &topic, user.as_bytes(), &event_json(1_700_000_000_000 + n as i64, &user, item, EventKind::View))
                .await;
        }
    }
    env.wait_applied(Duration::from_secs(30)).await;
    let mut r = env.redis().await;
    let keys = env.settings.redis.keys();
    let v1 = schemas::ModelVersion::parse("v1").unwrap();
    let start = Instant::now();
    let stored = loop {
        let got = updater::store::new_items(&mut r, &keys, &v1, 16).await.unwrap();
        if let Some(x) = got.into_iter().find(|(i, _, _)| i.as_str() == "launch-1") {
            break x;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "launch-1 never folded in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(stored.1 >= 5, "folded from {} users", stored.1);
    // The stored factors are the symmetric solve from those users' histories.
    let m = updater::ServedModel::load(&dir).unwrap();
    let users: Vec<UserId> = (0..6).map(|u| UserId::parse(&format!("early{u}")).unwrap()).collect();
    let hists = updater::store::read_histories(&mut r, &keys, &users).await.unwrap();
    let params = updater::compute::ComputeParams {
        solver: updater::config::FoldInSolver::Cholesky,
        k: 10,
        rerank: model::rerank::RerankConfig::default(),
        score_block: 32,
        live: Default::default(),
    };
    let item = ItemId::parse("launch-1").unwrap();
    // The updater folded it from the users it had seen then (5 or 6 of them,
    // depending on how the events fell into batches): one subset must match.
    let matches = |sub: &[updater::store::UserHistory]| {
        updater::compute::fold_item(&m, &params, &item, sub, 5)
            .is_some_and(|(n, y)| n == stored.1 && y.iter().zip(&stored.2).all(|(a, b)| (a - b).abs() < 1e-4))
    };
    let found = if stored.1 == hists.len() {
        matches(&hists)
    } else {
        (0..hists.len()).any(|skip| {
            let sub: Vec<_> = hists.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, h)| h.clone()).collect();
            matches(&sub)
        })
    };
    assert!(found, "the stored factors are not the symmetric solve of any {} of the users", stored.1);
    // A later user's list is scored against it too: its score, when listed,
    // is that user's fold-in times the new item's factors.
    send(&p, &topic, b"late", &event_json(1_700_000_000_100, "late", &model::synthetic::item_id(0), EventKind::View))
        .await;
    env.wait_applied(Duration::from_secs(30)).await;
    let start = Instant::now();
    while env.recs(&mut r, "late").await.is_none() {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m2 = updater::ServedModel::load(&dir).unwrap();
    let x = updater::compute::fold_user(&m2, &[(0, 1.0)], model::Solver::Cholesky).unwrap();
    let new_score = model::dense::dot(&x, &stored.2);
    let list = env.recs(&mut r, "late").await.unwrap();
    if let Some(e) = list.items.iter().find(|e| e.item_id.as_str() == "launch-1") {
        assert!((e.score - new_score).abs() < 1e-4);
    } else {
        // Not listed: then it must score below the list's lowest ALS score.
        let min = list.items.iter().map(|e| e.score).fold(f32::INFINITY, f32::min);
        assert!(new_score <= min + 1e-4, "launch-1 scores {new_score} but is missing (min {min})");
    }
    up.stop().await;
    env.cleanup().await;
}
