//! The nightly rebuild against the real broker (`RECSYS_TEST_KAFKA`, default
//! 127.0.0.1:9092; `scripts/dev-up.sh` starts tansu there) and Redis
//! (`RECSYS_TEST_REDIS`, default redis://127.0.0.1:6379). Every test has its
//! own topic prefix, Redis key prefix and artifacts directory. A missing broker
//! fails these tests unless `RECSYS_SKIP_BROKER_TESTS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batch_trainer::config::Settings;
use batch_trainer::kafka_source::{ArchiveOffsets, ARCHIVE_OFFSETS_FILE};
use batch_trainer::nightly::{self, RunError, Source};
use datagen::{generate, GenerateConfig};
use model::artifact::{self, Artifact};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::{ModelAnnouncement, RecsList};
use testkit::services::{broker, redis_url, tag, KeysCleanup};

/// One isolated environment: topics, Redis keys, artifacts, small fast models.
struct Env {
    s: Settings,
    dir: tempfile::TempDir,
    _cleanup: KeysCleanup,
}

impl Env {
    async fn new(brokers: &str, partitions: i32) -> Env {
        let tag = tag();
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings::default();
        s.kafka.brokers = brokers.to_owned();
        s.kafka.partitions = partitions;
        s.kafka.topic_prefix = format!("tt-{tag}.");
        s.redis.url = redis_url();
        s.redis.prefix = format!("tt-{tag}:");
        s.model.artifacts_dir = dir.path().join("models");
        s.training.factors = 16;
        s.training.iterations = 6;
        s.trainer.kafka_idle_timeout_ms = 15_000;
        s.trainer.publish.similar_size = 10;
        common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
        let _cleanup = KeysCleanup::new(&s.redis.url, &s.redis.prefix);
        Env { s, dir, _cleanup }
    }

    fn root(&self) -> PathBuf {
        self.s.model.artifacts_dir.clone()
    }

    fn topic(&self, t: &str) -> String {
        self.s.kafka.topic(t)
    }

    fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.s.kafka.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }

    async fn redis(&self) -> common::redis_conn::RedisConn {
        common::redis_conn::connect(&self.s.redis).await.unwrap()
    }

    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut c = self.redis().await;
        redis::cmd("GET").arg(key).query_async(&mut c).await.unwrap()
    }

    /// The environment variables that point the binary at this environment.
    fn env_vars(&self) -> Vec<(String, String)> {
        let s = &self.s;
        vec![
            ("RECSYS__KAFKA__BROKERS".into(), s.kafka.brokers.clone()),
            ("RECSYS__KAFKA__TOPIC_PREFIX".into(), s.kafka.topic_prefix.clone()),
            ("RECSYS__KAFKA__PARTITIONS".into(), s.kafka.partitions.to_string()),
            ("RECSYS__REDIS__URL".into(), s.redis.url.clone()),
            ("RECSYS__REDIS__PREFIX".into(), s.redis.prefix.clone()),
            ("RECSYS__MODEL__ARTIFACTS_DIR".into(), s.model.artifacts_dir.display().to_string()),
            ("RECSYS__TRAINER__PUBLISH__SIMILAR_SIZE".into(), "10".into()),
            ("RECSYS__TRAINING__THREADS".into(), "2".into()),
        ]
    }

    /// Runs the binary (blocking: call from spawn_blocking).
    fn trainer(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_recsys-trainer"));
        c.args(args).arg("--quiet").env_remove("RECSYS_CONFIG").current_dir(self.dir.path());
        for (k, v) in self.env_vars() {
            c.env(k, v);
        }
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// One row of events.csv.
#[derive(Debug, Clone)]
struct Row {
    ts: i64,
    user: String,
    event: String,
    item: String,
    txn: String,
}

/// Generated data whose times are strictly increasing, so that the event
/// order is unambiguous across partitions (the merge by time then reproduces
/// the file's order exactly). Only events.csv: the topic carries no item
/// properties.
fn data(dir: &Path, events: u64) -> (PathBuf, Vec<Row>) {
    let gen = dir.join("gen");
    generate(&GenerateConfig::new(events, 11), &gen, None).unwrap();
    let body = std::fs::read_to_string(gen.join("events.csv")).unwrap();
    let mut rows = Vec::new();
    let mut last = i64::MIN;
    for line in body.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let ts = f[0].parse::<i64>().unwrap().max(last + 1);
        last = ts;
        rows.push(Row { ts, user: f[1].into(), event: f[2].into(), item: f[3].into(), txn: f[4].into() });
    }
    let csv = dir.join("csv");
    write_csv(&csv, &rows);
    (csv, rows)
}

fn write_csv(dir: &Path, rows: &[Row]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut out = String::from("timestamp,visitorid,event,itemid,transactionid\n");
    for r in rows {
        out.push_str(&format!("{},{},{},{},{}\n", r.ts, r.user, r.event, r.item, r.txn));
    }
    std::fs::write(dir.join("events.csv"), out).unwrap();
}

fn json(r: &Row) -> Vec<u8> {
    let mut v = serde_json::json!({"ts": r.ts, "user_id": r.user, "item_id": r.item, "event": r.event});
    if !r.txn.is_empty() {
        v["transaction_id"] = serde_json::Value::String(r.txn.clone());
    }
    serde_json::to_vec(&v).unwrap()
}

/// Produces rows in order, key = user id (as ingest does).
async fn produce(env: &Env, rows: &[Row]) {
    let p = env.producer();
    let topic = env.topic(schemas::topics::EVENTS);
    let mut pending = Vec::new();
    for r in rows {
        let payload = json(r);
        let f = p
            .send_result(FutureRecord::to(&topic).key(r.user.as_bytes()).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
        pending.push(f);
    }
    for f in pending {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

async fn produce_raw(env: &Env, key: &[u8], payload: &[u8]) {
    let p = env.producer();
    let topic = env.topic(schemas::topics::EVENTS);
    p.send(FutureRecord::to(&topic).key(key).payload(payload), Timeout::After(Duration::from_secs(10)))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

fn watermarks(env: &Env, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &env.s.kafka.brokers).create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    parts.into_iter().map(|p| (p, c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1)).collect()
}

/// Every announcement on the models topic, in order.
fn announcements(env: &Env) -> Vec<ModelAnnouncement> {
    let topic = env.topic(schemas::topics::MODELS);
    let ends = watermarks(env, &topic);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.s.kafka.brokers)
        .set("group.id", "tt-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(&topic, *p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let total: i64 = ends.values().sum();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (out.len() as i64) < total && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            assert_eq!(m.key(), Some(ModelAnnouncement::KEY));
            out.push(ModelAnnouncement::parse_json(m.payload().unwrap()).unwrap());
        }
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn assert_same_model(a: &Artifact, b: &Artifact) {
    assert_eq!(a.manifest.counts, b.manifest.counts);
    assert_eq!(a.manifest.data.events, b.manifest.data.events);
    assert_eq!(a.manifest.data.first_ts, b.manifest.data.first_ts);
    assert_eq!(a.manifest.data.last_ts, b.manifest.data.last_ts);
    assert_eq!(a.user_ids, b.user_ids);
    assert_eq!(a.items.iter().map(|i| &i.id).collect::<Vec<_>>(), b.items.iter().map(|i| &i.id).collect::<Vec<_>>());
    let du = max_abs_diff(a.user_factors.as_slice(), b.user_factors.as_slice());
    let di = max_abs_diff(a.item_factors.as_slice(), b.item_factors.as_slice());
    assert!(du < 1e-5 && di < 1e-5, "factors differ: users {du}, items {di}");
    assert_eq!(
        a.manifest.evaluation.as_ref().unwrap().metrics,
        b.manifest.evaluation.as_ref().unwrap().metrics,
        "same data, same offline metrics"
    );
}

fn train(env: &Env, src: Source, root: &Path, version: &str) -> Result<nightly::RunResult, RunError> {
    nightly::train_run(&env.s, &src, root, Some(version.into()), false, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_kafka_trains_the_csv_model_and_an_archive_plus_the_topic_does_too() {
    let Some(brokers) = broker() else { return };
    let env = Env::new(&brokers, 3).await;
    let (csv, rows) = data(env.dir.path(), 12_000);
    let half = rows.len() / 2;

    // The first half, then the archive's offsets, then two invalid messages and the rest.
    produce(&env, &rows[..half]).await;
    let topic = env.topic(schemas::topics::EVENTS);
    let mid = watermarks(&env, &topic);
    produce_raw(&env, b"1", b"{not json").await;
    let r = &rows[half];
    produce_raw(&env, b"someone-else", &json(r)).await; // key is not the user: refused, as the updater does
    produce(&env, &rows[half..]).await;

    let root_csv = env.dir.path().join("m-csv");
    let from_csv = train(&env, Source { data_dir: Some(csv.clone()), from_kafka: false }, &root_csv, "csv").unwrap();
    assert!(from_csv.train.promoted);

    let root_kafka = env.dir.path().join("m-kafka");
    let s = env.s.clone();
    let rk = root_kafka.clone();
    let from_kafka = tokio::task::spawn_blocking(move || {
        nightly::train_run(&s, &Source { data_dir: None, from_kafka: true }, &rk, Some("kafka".into()), false, false)
    })
    .await
    .unwrap()
    .unwrap();
    let k = from_kafka.loaded.kafka.as_ref().unwrap();
    assert_eq!(k.messages as usize, rows.len() + 2);
    assert_eq!(k.invalid.get("invalid_json"), Some(&1));
    assert_eq!(k.invalid.get("key_mismatch"), Some(&1));
    assert_eq!(k.samples.len(), 2);
    let a = Artifact::read(&root_csv.join("csv")).unwrap();
    let b = Artifact::read(&root_kafka.join("kafka")).unwrap();
    assert_same_model(&a, &b);
    // The manifest records the topic, every partition and the end offsets.
    let ends = watermarks(&env, &topic);
    assert_eq!(b.manifest.data.source, format!("kafka:{topic}"));
    let offs: BTreeMap<i32, (i64, i64)> =
        b.manifest.kafka_offsets.iter().map(|o| (o.partition, (o.start_offset, o.offset))).collect();
    assert_eq!(offs.len(), 3);
    for (p, end) in &ends {
        assert_eq!(offs[p], (0, *end));
    }
    assert!(b.manifest.kafka_offsets.iter().all(|o| o.topic == topic));

    // Archive (first half + its offsets) + the topic's newer part = the same model.
    let archive = env.dir.path().join("archive");
    write_csv(&archive, &rows[..half]);
    let s = env.s.clone();
    let (arch, rk) = (archive.clone(), env.dir.path().join("m-arch"));
    let refused = tokio::task::spawn_blocking(move || {
        nightly::train_run(&s, &Source { data_dir: Some(arch), from_kafka: true }, &rk, Some("x".into()), false, false)
    })
    .await
    .unwrap();
    assert!(matches!(refused, Err(RunError::ArchiveWithoutOffsets { .. })), "{refused:?}");
    ArchiveOffsets { topic: schemas::topics::EVENTS.into(), offsets: mid.clone() }.write(&archive).unwrap();
    assert!(archive.join(ARCHIVE_OFFSETS_FILE).is_file());
    let s = env.s.clone();
    let (arch, rk) = (archive.clone(), env.dir.path().join("m-arch"));
    let combined = tokio::task::spawn_blocking(move || {
        nightly::train_run(
            &s,
            &Source { data_dir: Some(arch), from_kafka: true },
            &rk,
            Some("arch".into()),
            false,
            false,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let k = combined.loaded.kafka.as_ref().unwrap();
    assert_eq!(k.messages as usize, rows.len() - half + 2, "only the part after the archive is read");
    let c = Artifact::read(&env.dir.path().join("m-arch/arch")).unwrap();
    assert_same_model(&a, &c);
    for o in &c.manifest.kafka_offsets {
        assert_eq!(o.start_offset, mid[&o.partition]);
    }
    assert!(c.manifest.data.source.ends_with(&format!(" + kafka:{topic}")), "{}", c.manifest.data.source);

    // `archive`: archive + topic as a new archive; with it, the topic adds nothing (yet).
    let next = env.dir.path().join("archive-2");
    let r = batch_trainer::archive::write_archive(&combined.loaded, Some(&archive), &next).unwrap();
    assert_eq!(r.events, rows.len());
    assert_eq!(r.offsets.offsets, ends);
    assert!(
        batch_trainer::archive::write_archive(&combined.loaded, Some(&archive), &next).is_err(),
        "never overwrites"
    );
    let s = env.s.clone();
    let (arch, rk) = (next.clone(), env.dir.path().join("m-arch2"));
    let again = tokio::task::spawn_blocking(move || {
        nightly::train_run(&s, &Source { data_dir: Some(arch), from_kafka: true }, &rk, Some("a2".into()), false, false)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(again.loaded.kafka.as_ref().unwrap().messages, 0);
    assert_same_model(&a, &Artifact::read(&env.dir.path().join("m-arch2/a2")).unwrap());
}

/// A local webhook receiver: every JSON body POSTed to `/hook`.
async fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_publishes_rejects_quietly_rolls_back_prunes_and_notifies() {
    let Some(brokers) = broker() else { return };
    let env = Env::new(&brokers, 1).await;
    let data_dir = env.dir.path().join("gen");
    // Large enough for non-zero metrics, so a worse model is visibly worse.
    generate(&GenerateConfig::new(120_000, 7), &data_dir, None).unwrap();
    let (hook, got) = webhook().await;
    let keys = env.s.redis.keys();
    let root = env.root();
    let run = |args: Vec<String>, extra: Vec<(String, String)>| {
        let env_ref: &Env = &env;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let extra: Vec<(&str, &str)> = extra.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        tokio::task::block_in_place(|| env_ref.trainer(&args, &extra))
    };
    let d = data_dir.display().to_string();
    let common_env = vec![
        ("RECSYS__TRAINER__WEBHOOK__URL".to_owned(), hook.clone()),
        ("RECSYS__TRAINER__KEEP_VERSIONS".into(), "1".into()),
    ];
    let train_args = |v: &str, iterations: &str| -> Vec<String> {
        ["train", "--data-dir", &d, "--factors", "32", "--iterations", iterations, "--version", v]
            .map(String::from)
            .to_vec()
    };

    // 1. Promoted and published.
    let o = run(train_args("good", "8"), common_env.clone());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("published good"), "{}", text(&o));
    assert_eq!(env.get(&keys.model_current()).await.as_deref(), Some(&b"good"[..]));
    let popular = RecsList::parse_json(&env.get(&keys.popular()).await.unwrap()).unwrap();
    assert_eq!(popular.model.as_str(), "good");
    assert!(!popular.items.is_empty());
    let art = Artifact::read(&root.join("good")).unwrap();
    let cat = art
        .items
        .iter()
        .find(|i| i.available != Some(false) && i.popularity > 0.0 && i.category.is_some())
        .and_then(|i| i.category)
        .expect("generated items have categories");
    let by_cat = RecsList::parse_json(&env.get(&keys.popular_category(cat)).await.unwrap()).unwrap();
    assert!(!by_cat.items.is_empty());
    let item = schemas::ItemId::parse(&art.items[0].id).unwrap();
    let similar = RecsList::parse_json(&env.get(&keys.similar(&item)).await.unwrap()).unwrap();
    // 10 neighbours, minus unavailable ones.
    assert!(!similar.items.is_empty() && similar.items.len() <= 10, "{similar:?}");
    assert!(similar.items.iter().all(|i| i.item_id != item));
    let published: serde_json::Value =
        serde_json::from_slice(&env.get(&keys.model_published()).await.unwrap()).unwrap();
    assert_eq!(published["version"], "good");
    let ann = announcements(&env);
    assert_eq!(ann.len(), 1);
    assert_eq!(ann[0].version.as_str(), "good");
    assert_eq!(ann[0].manifest_sha256.as_str(), artifact::manifest_sha256(&root.join("good")).unwrap());
    // What the updater and serving do with it: the announced path holds the manifest.
    assert!(Path::new(&ann[0].path).join("manifest.json").is_file());

    // 2. A worse model is rejected: exit 3, nothing published.
    let o = run(train_args("bad", "0"), common_env.clone());
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(env.get(&keys.model_current()).await.as_deref(), Some(&b"good"[..]));
    assert_eq!(announcements(&env).len(), 1, "a rejected model is not announced");
    let popular = RecsList::parse_json(&env.get(&keys.popular()).await.unwrap()).unwrap();
    assert_eq!(popular.model.as_str(), "good");

    // 3. A run that fails: no such data directory.
    let missing = env.dir.path().join("nowhere").display().to_string();
    let o = run(["train", "--data-dir", &missing, "--version", "never"].map(String::from).to_vec(), common_env.clone());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // 4. Rollback to the rejected version re-publishes it.
    let o = run(["models", "promote", "bad"].map(String::from).to_vec(), common_env.clone());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(env.get(&keys.model_current()).await.as_deref(), Some(&b"bad"[..]));
    let ann = announcements(&env);
    assert_eq!(ann.iter().map(|a| a.version.as_str()).collect::<Vec<_>>(), vec!["good", "bad"]);
    assert_eq!(RecsList::parse_json(&env.get(&keys.popular()).await.unwrap()).unwrap().model.as_str(), "bad");

    // 5. Pruning keeps 1 version besides CURRENT ("bad") and PREVIOUS ("good").
    let o = run(train_args("third", "0"), common_env.clone());
    assert_eq!(o.status.code(), Some(0), "same as the served one: not worse\n{}", text(&o));
    let o = run(train_args("fourth", "8"), common_env.clone());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // CURRENT = fourth, PREVIOUS = third; good and bad are beyond keep_versions = 1.
    let versions = artifact::list_versions(&root).unwrap();
    assert_eq!(versions, vec!["fourth", "third"], "{}", text(&o));

    // 6. A publication that fails after CURRENT moved: exit 4, and it says how to repair.
    let mut broken = common_env.clone();
    broken.push(("RECSYS__REDIS__URL".into(), "redis://127.0.0.1:1".into()));
    let o = run(train_args("fifth", "8"), broken);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("models promote fifth"), "{}", text(&o));
    assert_eq!(artifact::current_version(&root).unwrap().as_deref(), Some("fifth"));

    // The webhook heard every outcome, in order.
    let bodies = got.lock().unwrap().clone();
    let outcomes: Vec<&str> = bodies.iter().map(|b| b["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["promoted", "rejected", "failed", "promoted", "promoted", "failed"], "{bodies:#?}");
    assert_eq!(bodies[0]["version"], "good");
    assert_eq!(bodies[0]["published"], true);
    assert!(bodies[1]["metrics"].as_array().unwrap().iter().any(|m| m["ok"] == false), "{:#}", bodies[1]);
    assert!(bodies[2]["error"].as_str().unwrap().contains("events.csv"), "{:#}", bodies[2]);
    assert!(bodies[5]["error"].as_str().unwrap().contains("publication failed"), "{:#}", bodies[5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_runs_on_trigger_exposes_metrics_and_stops_on_signal() {
    let Some(brokers) = broker() else { return };
    let env = Env::new(&brokers, 1).await;
    let data_dir = env.dir.path().join("gen");
    generate(&GenerateConfig::new(10_000, 3), &data_dir, None).unwrap();
    let (hook, got) = webhook().await;
    let mut s = env.s.clone();
    s.trainer.webhook.url = hook;
    // Never fires during the test: only --run-now and the trigger run.
    s.trainer.schedule.cron = "0 3 1 1 *".into();
    let opts = batch_trainer::schedule::ScheduleOptions {
        source: Source { data_dir: Some(data_dir), from_kafka: false },
        artifacts_dir: env.root(),
        run_now: true,
        show_progress: false,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(batch_trainer::schedule::run(s, opts, listener, rx, async move {
        let _ = stop_rx.await;
    }));
    let metrics = || async move { reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap() };
    let wait_for = |needle: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let m = metrics().await;
            if m.contains(needle) {
                return m;
            }
            assert!(Instant::now() < deadline, "{needle} never appeared:\n{m}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let m = wait_for("recsys_trainer_runs_total{outcome=\"promoted\"} 1").await;
    let first = artifact::current_version(&env.root()).unwrap().unwrap();
    assert!(m.contains("recsys_trainer_runs_total{outcome=\"failed\"} 0"), "{m}");
    assert!(m.contains("recsys_trainer_last_metric{metric=\"recall_at_20\"}"), "{m}");
    assert!(m.contains("recsys_trainer_last_metric{metric=\"hit_rate_at_5\"}"), "{m}");
    assert!(m.contains("recsys_trainer_last_success_timestamp_seconds 1"), "{m}");
    assert!(!m.contains("recsys_trainer_last_rows 0\n"), "{m}");
    // The trigger path: a second run (same data: not worse, promoted).
    trigger.send(()).await.unwrap();
    let m = wait_for("recsys_trainer_runs_total{outcome=\"promoted\"} 2").await;
    assert!(m.contains("recsys_trainer_running 0"), "{m}");
    let second = artifact::current_version(&env.root()).unwrap().unwrap();
    assert_ne!(first, second);
    let keys = env.s.redis.keys();
    assert_eq!(env.get(&keys.model_current()).await, Some(second.clone().into_bytes()));
    assert_eq!(
        announcements(&env).iter().map(|a| a.version.to_string()).collect::<Vec<_>>(),
        vec![first, second.clone()]
    );
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    assert!(bodies.iter().all(|b| b["outcome"] == "promoted"));
    // SIGTERM's path: the shutdown future resolves, the loop and the server stop.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
    assert!(reqwest::get(format!("http://{addr}/metrics")).await.is_err(), "the metrics server stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_republishes_a_current_whose_publication_was_cut_short() {
    let Some(brokers) = broker() else { return };
    let env = Env::new(&brokers, 1).await;
    let root = env.root();
    let spec = model::synthetic::SyntheticSpec { version: "v1".into(), ..Default::default() };
    model::synthetic::synthetic_artifact(&spec).write(&root).unwrap();
    // CURRENT moved, then "a crash": nothing published.
    batch_trainer::lifecycle::set_current(&root, "v1").unwrap();
    let keys = env.s.redis.keys();
    assert_eq!(env.get(&keys.model_published()).await, None);
    let r = batch_trainer::publish::reconcile(&env.s, &root).await.unwrap();
    assert_eq!(r.unwrap().version, "v1");
    assert_eq!(env.get(&keys.model_current()).await.as_deref(), Some(&b"v1"[..]));
    // Complete now: nothing to do.
    assert!(batch_trainer::publish::reconcile(&env.s, &root).await.unwrap().is_none());
    assert_eq!(announcements(&env).len(), 1);
}

/// Polls the schedule's `/metrics` until `needle` appears (120 s at most).
async fn wait_for_metric(addr: std::net::SocketAddr, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        if m.contains(needle) {
            return m;
        }
        assert!(Instant::now() < deadline, "{needle} never appeared:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_waits_for_data_trains_the_first_model_as_soon_as_there_is_enough_then_follows_the_cron() {
    let Some(brokers) = broker() else { return };
    let env = Env::new(&brokers, 2).await;
    let (_, rows) = data(env.dir.path(), 10_000);
    let (hook, got) = webhook().await;
    let mut s = env.s.clone();
    s.trainer.webhook.url = hook;
    s.trainer.schedule.cron = "0 3 1 1 *".into(); // never during the test
    s.trainer.schedule.min_events = 2_000;
    s.trainer.schedule.min_users = 50;
    s.trainer.schedule.bootstrap_interval_s = 1;
    // No --run-now: with no model, the schedule checks at start by itself.
    let opts = batch_trainer::schedule::ScheduleOptions {
        source: Source { data_dir: None, from_kafka: true },
        artifacts_dir: env.root(),
        run_now: false,
        show_progress: false,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_trigger, rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(batch_trainer::schedule::run(s, opts, listener, rx, async move {
        let _ = stop_rx.await;
    }));

    // The empty topic: skipped with the counts seen, again each second, no model.
    let m = wait_for_metric(addr, "recsys_trainer_runs_total{outcome=\"skipped\"} 2").await;
    for needle in [
        "recsys_trainer_data_events 0",
        "recsys_trainer_data_users 0",
        "recsys_trainer_waiting_for_data 1",
        "recsys_trainer_runs_total{outcome=\"failed\"} 0",
        "recsys_trainer_runs_total{outcome=\"promoted\"} 0",
        "recsys_trainer_last_success_timestamp_seconds 0",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
    assert_eq!(artifact::current_version(&env.root()).unwrap(), None);
    let topic = env.topic(schemas::topics::EVENTS);
    {
        // The streak's first skip is notified, its repeats are not.
        let bodies = got.lock().unwrap().clone();
        assert_eq!(bodies.len(), 1, "{bodies:#?}");
        assert_eq!(bodies[0]["outcome"], "skipped");
        assert_eq!(
            bodies[0]["reason"],
            format!("waiting for data: 0 events, 0 users in kafka:{topic}, need 2000 events and 50 users").as_str()
        );
    }

    // Too few events: still waiting, with the new counts.
    produce(&env, &rows[..500]).await;
    let m = wait_for_metric(addr, "recsys_trainer_data_events 500").await;
    assert!(m.contains("recsys_trainer_waiting_for_data 1"), "{m}");
    assert_eq!(artifact::current_version(&env.root()).unwrap(), None);

    // Enough: the next check trains, promotes and publishes by itself.
    produce(&env, &rows[500..]).await;
    let m = wait_for_metric(addr, "recsys_trainer_runs_total{outcome=\"promoted\"} 1").await;
    assert!(m.contains("recsys_trainer_waiting_for_data 0"), "{m}");
    assert!(m.contains("recsys_trainer_runs_total{outcome=\"failed\"} 0"), "{m}");
    let version = artifact::current_version(&env.root()).unwrap().expect("the first model is served");
    let keys = env.s.redis.keys();
    assert_eq!(env.get(&keys.model_current()).await, Some(version.clone().into_bytes()));
    assert_eq!(announcements(&env).iter().map(|a| a.version.to_string()).collect::<Vec<_>>(), vec![version.clone()]);
    let skipped_then =
        m.lines().find(|l| l.starts_with("recsys_trainer_runs_total{outcome=\"skipped\"}")).unwrap().to_owned();

    // A model exists: back to the cron, no more checks every second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = wait_for_metric(addr, "recsys_trainer_running 0").await;
    assert!(m.contains("recsys_trainer_runs_total{outcome=\"promoted\"} 1\n"), "{m}");
    assert!(m.contains(&skipped_then), "{skipped_then} changed:\n{m}");
    assert_eq!(artifact::current_version(&env.root()).unwrap(), Some(version));
    let outcomes: Vec<String> = got.lock().unwrap().iter().map(|b| b["outcome"].as_str().unwrap().to_owned()).collect();
    assert_eq!(outcomes, ["skipped", "promoted"]);

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reports_waiting_for_data_and_exits_0_then_trains_once_there_is_enough() {
    let Some(brokers) = broker() else { return };
    let env = Env::new(&brokers, 1).await;
    let topic = env.topic(schemas::topics::EVENTS);
    let small = [("RECSYS__TRAINING__FACTORS", "16"), ("RECSYS__TRAINING__ITERATIONS", "4")];
    let run = |args: &[&str]| tokio::task::block_in_place(|| env.trainer(args, &small));
    let waiting = format!("waiting for data: 0 events, 0 users in kafka:{topic}, need 1000 events and 50 users");

    // --once on the empty topic: the message, exit 0, no model.
    let o = run(&["schedule", "--from-kafka", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&waiting), "{}", text(&o));
    assert_eq!(artifact::current_version(&env.root()).unwrap(), None);

    // --run-now, the long-running form: logs the message, keeps waiting, and
    // exits 0 on SIGTERM.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_recsys-trainer"))
        .args(["schedule", "--from-kafka", "--run-now", "--quiet", "--metrics-listen", "127.0.0.1:0"])
        .env_remove("RECSYS_CONFIG")
        .env_remove("RUST_LOG")
        .envs(env.env_vars())
        .current_dir(env.dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = line_tx.send(l);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.iter().any(|l: &String| l.contains(&waiting)) {
        assert!(Instant::now() < deadline, "no waiting line in\n{}", log.join("\n"));
        if let Ok(l) = line_rx.recv_timeout(Duration::from_millis(200)) {
            log.push(l);
        }
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    assert_eq!(artifact::current_version(&env.root()).unwrap(), None);

    // Enough events: --once trains, promotes and publishes.
    let (_, rows) = data(env.dir.path(), 10_000);
    produce(&env, &rows).await;
    let o = run(&["schedule", "--from-kafka", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("PROMOTED model"), "{}", text(&o));
    let version = artifact::current_version(&env.root()).unwrap().expect("a model is served");
    assert_eq!(env.get(&env.s.redis.keys().model_current()).await, Some(version.into_bytes()));
}
