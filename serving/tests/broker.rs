//! Against the real broker at `RECSYS_TEST_KAFKA` (default 127.0.0.1:9092;
//! `scripts/dev-up.sh` starts tansu there) and the local Redis: impressions
//! reach `recsys.impressions` with the response's rec_id, and an announcement
//! on `recsys.models` swaps the served model. Each test uses its own random
//! topic prefix. A missing broker fails these tests, unless
//! `RECSYS_SKIP_BROKER_TESTS=1`.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::Variant;
use support::*;

fn broker() -> Option<String> {
    if std::env::var("RECSYS_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
        eprintln!("RECSYS_SKIP_BROKER_TESTS=1: skipping a real-broker test");
        return None;
    }
    let addr = std::env::var("RECSYS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if let Err(e) = std::net::TcpStream::connect_timeout(
        &addr.parse().unwrap_or_else(|e| panic!("RECSYS_TEST_KAFKA={addr:?}: {e}")),
        Duration::from_secs(2),
    ) {
        panic!(
            "no Kafka broker at {addr} ({e}). Start one with scripts/dev-up.sh, point RECSYS_TEST_KAFKA at one, \
             or set RECSYS_SKIP_BROKER_TESTS=1"
        );
    }
    Some(addr)
}

/// Reads `want` messages of `topic` from the beginning (all partitions).
fn read_n(brokers: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("serving-test-{}", rand::random::<u64>()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), timeout).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want {
        assert!(Instant::now() < deadline, "timed out reading {topic}: {} of {want}", out.len());
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(m.unwrap().payload().unwrap_or_default().to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impressions_carry_the_rec_id_and_announcements_swap_the_model() {
    let Some(b) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let mut s = settings(&redis_url());
    s.kafka.brokers = b.clone();
    s.kafka.partitions = 2;
    s.kafka.topic_prefix = format!("st-{:016x}.", rand::random::<u64>());
    s.model.artifacts_dir = dir.path().to_owned();
    s.serving.model_poll_interval_s = 3_600; // only the announcement may swap
    s.serving.impression_timeout_ms = 10_000;
    common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let deps = serving::Deps::connect(&s, listener).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serving::run(s.clone(), deps, async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // (response, user, arm, source) of every answer that must publish an impression.
    let mut sent = Vec::new();
    for (arm, tag) in [(Variant::Als, "imp-a"), (Variant::Popular, "imp-b"), (Variant::Als, "imp-c")] {
        let user = user_in(arm, tag);
        let v: serde_json::Value =
            client.get(format!("{base}/v1/recommendations/{user}?k=4")).send().await.unwrap().json().await.unwrap();
        let source = v["source"].as_str().unwrap().to_owned();
        sent.push((v, user, arm, source));
    }
    // /similar and /popular publish one when told who sees the list; the
    // similar lists are the trainer's (published here as it does).
    publish_similar(&s, dir.path(), 20).await;
    let user = user_in(Variant::Popular, "imp-d");
    let item = model::synthetic::item_id(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let similar = loop {
        let r = client.get(format!("{base}/v1/items/{item}/similar?k=3&user_id={user}")).send().await.unwrap();
        if r.status() == 200 {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "similar lists never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    sent.push((similar, user, Variant::Popular, "similar".to_owned()));
    let user = user_in(Variant::Als, "imp-e");
    let popular: serde_json::Value =
        client.get(format!("{base}/v1/popular?k=5&user_id={user}")).send().await.unwrap().json().await.unwrap();
    sent.push((popular, user, Variant::Als, "popular".to_owned()));
    // Without a user there is nothing to attribute to: no impression, counted.
    let anonymous = client.get(format!("{base}/v1/popular?k=5")).send().await.unwrap();
    assert_eq!(anonymous.status(), 200);
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, "recsys_serving_impressions_anonymous_total{route=\"popular\"}"), 1.0);
    assert_eq!(metric(&text, "recsys_serving_impressions_anonymous_total{route=\"similar\"}"), 0.0);

    let got = read_n(&b, &s.kafka.topic(schemas::topics::IMPRESSIONS), sent.len(), Duration::from_secs(30));
    let mut imps: Vec<schemas::Impression> = got.iter().map(|p| schemas::Impression::parse_json(p).unwrap()).collect();
    imps.sort_by_key(|i| sent.iter().position(|(v, ..)| v["rec_id"] == i.rec_id.as_str()).unwrap());
    for (imp, (v, user, arm, source)) in imps.iter().zip(&sent) {
        assert_eq!(imp.rec_id.as_str(), v["rec_id"]);
        assert_eq!(imp.user_id.as_str(), user);
        assert_eq!(imp.variant, *arm);
        assert_eq!(imp.source.as_str(), source);
        assert_eq!(imp.model_version.as_str(), v["model_version"]);
        assert_eq!(imp.items.iter().map(|i| i.as_str().to_owned()).collect::<Vec<_>>(), item_ids(v));
    }

    // A new version announced on recsys.models is served without a restart.
    write_model(dir.path(), "v2");
    let sha = model::artifact::manifest_sha256(&dir.path().join("v2")).unwrap();
    let announcement = serde_json::json!({"version": "v2", "path": dir.path().join("v2"),
        "manifest_sha256": sha, "created_at": "2026-11-29T00:00:00Z"});
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &b).create().unwrap();
    let topic = s.kafka.topic(schemas::topics::MODELS);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        // The consumer starts at the end of the topic: repeat until it has joined.
        let payload = serde_json::to_vec(&announcement).unwrap();
        producer.send(FutureRecord::to(&topic).key("model").payload(&payload), Duration::from_secs(5)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let v: serde_json::Value = client.get(format!("{base}/v1/popular")).send().await.unwrap().json().await.unwrap();
        if v["model_version"] == "v2" {
            break;
        }
        assert!(Instant::now() < deadline, "the announced model was not served");
    }
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("recsys_serving_model_info{version=\"v2\"} 1"), "{text}");
    assert!(metric(&text, "recsys_serving_impressions_delivered_total") >= 5.0);
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
