//! Against the real broker at `RECSYS_TEST_KAFKA` (default 127.0.0.1:9092;
//! `scripts/dev-up.sh` starts tansu there). Each test uses its own random topic
//! prefix. A missing broker fails these tests, unless `RECSYS_SKIP_BROKER_TESTS=1`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use ingest::config::Settings;
use ingest::kafka::TopicOutcome;
use ingest::replay::{Pace, ReplayOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::Value;

use common::broker;

/// Settings on a fresh random topic prefix, with the topics created.
async fn fresh(brokers: &str, partitions: i32) -> Settings {
    let mut s = Settings::default();
    s.kafka.brokers = brokers.to_owned();
    s.kafka.partitions = partitions;
    s.kafka.topic_prefix = format!("it-{:016x}.", rand::random::<u64>());
    let created = ingest::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
    assert_eq!(created.len(), schemas::topics::ALL.len());
    assert!(created.iter().all(|(_, o)| *o == TopicOutcome::Created), "{created:?}");
    s
}

fn partitions_of(brokers: &str, topic: &str) -> usize {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    md.topics()[0].partitions().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_once_with_the_configured_partitions() {
    let Some(b) = broker() else { return };
    let s = fresh(&b, 4).await;
    for t in schemas::topics::ALL {
        assert_eq!(partitions_of(&b, &s.kafka.topic(t)), 4, "{t}");
    }
    let again = ingest::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
    assert!(again.iter().all(|(_, o)| *o == TopicOutcome::AlreadyExists), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_arrive_exactly_once_keyed_by_user() {
    let Some(b) = broker() else { return };
    let s = fresh(&b, 3).await;
    let producer = ingest::kafka::producer(&s).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ingest::run(s.clone(), listener, producer, async move {
        let _ = stop_rx.await;
    }));

    // 3 requests, 10 users, 2 bad items.
    let client = reqwest::Client::new();
    let mut sent: Vec<Value> = Vec::new();
    let mut accepted = 0;
    for r in 0..3 {
        let mut batch: Vec<Value> = (0..40)
            .map(|i| {
                serde_json::json!({"ts": 1_433_221_332_000i64 + r * 100 + i, "user_id": format!("user{}", i % 10),
                    "item_id": (r * 100 + i).to_string(), "event": "view"})
            })
            .collect();
        if r == 1 {
            batch.insert(5, serde_json::json!({"user_id": "x", "item_id": "1", "event": "view", "ts": "soon"}));
            batch.insert(9, serde_json::json!(17));
        }
        let resp = client.post(format!("http://{addr}/v1/events")).json(&batch).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        accepted += v["accepted"].as_u64().unwrap();
        let rejected: Vec<u64> =
            v["rejected"].as_array().unwrap().iter().map(|x| x["index"].as_u64().unwrap()).collect();
        assert_eq!(rejected, if r == 1 { vec![5, 9] } else { vec![] });
        sent.extend(batch.into_iter().filter(|e| e.get("ts").is_some_and(Value::is_i64)));
    }
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(accepted, 120);

    let got = common::read_topic(&b, &s.kafka.topic(schemas::topics::EVENTS), Duration::from_secs(30));
    assert_eq!(got.len(), 120, "every accepted event exactly once");
    let mut partition_of: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut per_user: HashMap<String, Vec<String>> = HashMap::new();
    for g in &got {
        let v: Value = serde_json::from_slice(&g.payload).unwrap();
        let user = v["user_id"].as_str().unwrap().to_owned();
        assert_eq!(g.key.as_deref(), Some(user.as_bytes()), "keyed by user id");
        assert_eq!(*partition_of.entry(g.key.clone().unwrap()).or_insert(g.partition), g.partition);
        per_user.entry(user).or_default().push(v["item_id"].as_str().unwrap().to_owned());
    }
    for (user, items) in &per_user {
        let want: Vec<String> = sent
            .iter()
            .filter(|e| e["user_id"] == user.as_str())
            .map(|e| e["item_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(items, &want, "{user}: the order sent");
    }
    let dead = common::read_topic(&b, &s.kafka.topic(schemas::topics::EVENTS_DLQ), Duration::from_secs(30));
    assert_eq!(dead.len(), 2);
    let reasons: Vec<String> =
        dead.iter().map(|g| schemas::DeadLetter::parse_json(&g.payload).unwrap().reason).collect();
    assert!(reasons.iter().any(|r| r.contains("ts")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("object")), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_sample_keeps_every_users_order() {
    let Some(b) = broker() else { return };
    let s = fresh(&b, 3).await;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/retailrocket-sample/events.csv");
    let file = if file.exists() { file } else { Path::new("/work/shared/data/retailrocket-sample/events.csv").into() };
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 9_385);

    let producer = ingest::kafka::producer(&s).unwrap();
    let opts = ReplayOptions { file: file.clone(), pace: Pace::Max, progress: false };
    let summary = ingest::replay::replay(&s, &producer, &opts).await.unwrap();
    assert_eq!(summary.lines, 9_385);
    assert_eq!(summary.failed, 0, "{:?}", summary.first_error);
    assert_eq!(summary.sent + summary.rejected, 9_385);

    let got = common::read_topic(&b, &s.kafka.topic(schemas::topics::EVENTS), Duration::from_secs(60));
    assert_eq!(got.len() as u64, summary.sent, "every line sent exactly once");
    let dead = common::count(&b, &s.kafka.topic(schemas::topics::EVENTS_DLQ));
    assert_eq!(dead as u64, summary.rejected);

    // Per user: the (ts, item) sequence in the topic equals the file's.
    let mut want: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
    for l in &lines {
        let f: Vec<&str> = l.split(',').collect();
        want.entry(f[1]).or_default().push((f[0].parse().unwrap(), f[3]));
    }
    let mut have: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for g in &got {
        let v: Value = serde_json::from_slice(&g.payload).unwrap();
        let user = v["user_id"].as_str().unwrap().to_owned();
        assert_eq!(g.key.as_deref(), Some(user.as_bytes()));
        assert_eq!(*partition_of.entry(user.clone()).or_insert(g.partition), g.partition, "{user}: one partition");
        have.entry(user).or_default().push((v["ts"].as_i64().unwrap(), v["item_id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(summary.rejected, 0, "every sample line is a valid event");
    assert_eq!(have.len(), want.len());
    for (user, seq) in &want {
        let h: Vec<(i64, &str)> = have[*user].iter().map(|(t, i)| (*t, i.as_str())).collect();
        assert_eq!(&h, seq, "user {user}");
    }
    assert!(partition_of.values().collect::<std::collections::HashSet<_>>().len() > 1, "users spread over partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_dead_letters_bad_lines_with_their_line_number() {
    let Some(b) = broker() else { return };
    let s = fresh(&b, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.csv");
    std::fs::write(
        &file,
        "timestamp,visitorid,event,itemid,transactionid\n\
         1433221332117,1,view,10,\n\
         1433221332118,1,click,11,\n\
         1433221332119,2,transaction,12,77\r\n\
         1433221332120,,view,13,\n\
         1433221332121,3,view\n",
    )
    .unwrap();
    let producer = ingest::kafka::producer(&s).unwrap();
    let opts = ReplayOptions { file, pace: Pace::Rate(1000.0), progress: false };
    let summary = ingest::replay::replay(&s, &producer, &opts).await.unwrap();
    assert_eq!((summary.lines, summary.sent, summary.rejected, summary.failed), (5, 2, 3, 0));
    let dead = common::read_topic(&b, &s.kafka.topic(schemas::topics::EVENTS_DLQ), Duration::from_secs(30));
    let mut letters: Vec<schemas::DeadLetter> =
        dead.iter().map(|g| schemas::DeadLetter::parse_json(&g.payload).unwrap()).collect();
    letters.sort_by(|a, b| a.reason.cmp(&b.reason));
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert!(reasons[0].starts_with("line 3: ") && reasons[0].contains("click"), "{reasons:?}");
    assert!(reasons[1].starts_with("line 5: empty_field in visitorid"), "{reasons:?}");
    assert!(reasons[2].starts_with("line 6: wrong_columns"), "{reasons:?}");
    // The trainer's reasons, counted the same way.
    assert_eq!(summary.rejections.total(), 3);
    assert_eq!(summary.rejections.count(schemas::csv::Reason::UnknownEvent), 1);
    assert_eq!(letters[0].original_text(), Some("1433221332118,1,click,11,"));
    assert!(letters.iter().all(|l| l.source == schemas::DeadLetterSource::Replay));

    let bad_header = dir.path().join("bad.csv");
    std::fs::write(&bad_header, "ts,user\n1,2\n").unwrap();
    let opts = ReplayOptions { file: bad_header, pace: Pace::Max, progress: false };
    let err = ingest::replay::replay(&s, &producer, &opts).await.unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("no column for `event`"), "{err}");
}

/// A browser's posts: a beacon (`text/plain`, JSON inside) reaches the log;
/// a request whose every item is rejected is 422 with each item's code, a
/// mixed one 200; every rejected item is dead-lettered either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_are_accepted_and_all_rejected_is_422_with_codes() {
    let Some(b) = broker() else { return };
    let mut s = fresh(&b, 1).await;
    let shop = "https://shop.example";
    s.ingest.cors_origins = vec![shop.to_owned()];
    let producer = ingest::kafka::producer(&s).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/events", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ingest::run(s.clone(), listener, producer, async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();

    // What `navigator.sendBeacon(url, JSON.stringify(event))` sends.
    let beacon = r#"{"user_id":"shopper1","item_id":"42","event":"view","rec_id":"r-1"}"#;
    let resp = client
        .post(&url)
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", shop)
        .body(beacon)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], shop);
    assert_eq!(resp.json::<Value>().await.unwrap(), serde_json::json!({"accepted": 1, "rejected": []}));

    let all_bad = serde_json::json!([
        {"user_id": "u", "item_id": "1", "event": "click"},
        {"user_id": "u", "item_id": "1", "event": "view", "price": 3},
    ]);
    let resp = client.post(&url).json(&all_bad).send().await.unwrap();
    assert_eq!(resp.status(), 422, "nothing accepted");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["accepted"], 0, "{v}");
    let codes: Vec<&str> = v["rejected"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["invalid_event_kind", "unknown_field"], "{v}");

    let mixed =
        serde_json::json!([{"user_id": "u", "item_id": "2", "event": "view"}, {"user_id": "u", "event": "view"}]);
    let resp = client.post(&url).json(&mixed).send().await.unwrap();
    assert_eq!(resp.status(), 200, "something accepted");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["accepted"], 1, "{v}");
    assert_eq!(
        v["rejected"],
        serde_json::json!([{"index": 1, "code": "missing_field", "reason": v["rejected"][0]["reason"]}])
    );

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    let got = common::read_topic(&b, &s.kafka.topic(schemas::topics::EVENTS), Duration::from_secs(30));
    let items: Vec<(String, Value)> = got
        .iter()
        .map(|g| serde_json::from_slice::<Value>(&g.payload).unwrap())
        .map(|v| (v["item_id"].as_str().unwrap().to_owned(), v["rec_id"].clone()))
        .collect();
    assert_eq!(
        items,
        [("42".to_owned(), Value::from("r-1")), ("2".to_owned(), Value::Null)],
        "the beacon's event, rec_id kept"
    );
    let dead = common::read_topic(&b, &s.kafka.topic(schemas::topics::EVENTS_DLQ), Duration::from_secs(30));
    assert_eq!(dead.len(), 3, "every rejected item is dead-lettered, a 422's too");
}

/// `PUT /v1/items/{id}` and `POST /v1/items` through a running server: the
/// accepted updates reach `recsys.items` one message per field, keyed
/// `{item}/{field}`;
/// a body naming another item or a URL that is no id is 400 (nothing
/// processed), a rejected update 422 or listed with its code, and every
/// rejected update is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_updates_reach_the_item_stream_one_message_per_field() {
    let Some(b) = broker() else { return };
    let s = fresh(&b, 2).await;
    let producer = ingest::kafka::producer(&s).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ingest::run(s.clone(), listener, producer, async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    let put = |id: &str, body: Value| client.put(format!("{base}/v1/items/{id}")).json(&body).send();

    let resp =
        put("42", serde_json::json!({"ts": 1_433_221_332_000i64, "available": false, "price": 9.5})).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), serde_json::json!({"accepted": 1, "rejected": []}));
    let resp = put("42", serde_json::json!({"item_id": "43", "available": true})).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "item_id_mismatch");
    let resp = put("a%20b", serde_json::json!({"available": true})).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_id");
    let resp = put("42", serde_json::json!({"ts": "soon", "available": true})).await.unwrap();
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.unwrap();
    assert_eq!((v["accepted"].clone(), v["rejected"][0]["code"].clone()), (Value::from(0), Value::from("invalid_ts")));

    let batch = r#"[{"item_id":7,"category":3},{"item_id":8},{"item_id":"9","properties":{"888":"n552.000 639502"}}]"#;
    let resp = client.post(format!("{base}/v1/items")).header("content-type", "text/plain").body(batch).send();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(
        (v["rejected"][0]["index"].clone(), v["rejected"][0]["code"].clone()),
        (1.into(), "nothing_to_update".into())
    );
    let resp = client.post(format!("{base}/v1/items")).json(&serde_json::json!([{"item_id": 1, "price": -1}])).send();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.json::<Value>().await.unwrap()["rejected"][0]["code"], "invalid_price");

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    let got = common::read_topic(&b, &s.kafka.topic(schemas::topics::ITEMS), Duration::from_secs(30));
    let mut keyed: Vec<(String, schemas::ItemUpdate)> = got
        .iter()
        .map(|g| {
            let u = schemas::ItemUpdate::parse_json(&g.payload, schemas::now_ms(), &Default::default()).unwrap();
            (String::from_utf8(g.key.clone().unwrap()).unwrap(), u)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(keyed.iter().all(|(k, u)| u.fits_key(k.as_bytes()) && k.contains('/')), "one field per message");
    let ids: Vec<&str> = keyed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(ids, ["42/available", "42/price", "7/category", "9/properties/888"]);
    assert_eq!(keyed[0].1.available(), Some(false));
    assert_eq!(keyed[1].1.price().map(schemas::Price::get), Some(9.5));
    assert!(keyed.iter().filter(|(k, _)| k.starts_with("42/")).all(|(_, u)| u.ts() == 1_433_221_332_000));
    assert_eq!(keyed[2].1.category(), Some(3));
    assert_eq!(keyed[3].1.properties().get("888"), Some("n552.000 639502"));
    let dead = common::read_topic(&b, &s.kafka.topic(schemas::topics::EVENTS_DLQ), Duration::from_secs(30));
    assert_eq!(dead.len(), 3, "the 422 PUT, the empty update and the negative price; not the 400s");
}

/// A generated data set's item-property files replayed to a fresh topic:
/// what compaction keeps (the last message per key) folds to the files' last
/// value of every field of every item; and, read back before the broker
/// compacted anything, every field folded in topic order ends there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_item_properties_end_at_the_files_last_values() {
    let Some(b) = broker() else { return };
    let s = fresh(&b, 3).await;
    let dir = tempfile::tempdir().unwrap();
    datagen::generate(&datagen::GenerateConfig::new(4_000, 7), dir.path(), None).unwrap();
    let files: Vec<std::path::PathBuf> =
        ["item_properties_part2.csv", "item_properties_part1.csv", datagen::CATALOG_STREAM_FILE]
            .iter()
            .map(|f| dir.path().join(f))
            .collect();

    // What the files say, read directly: the last value of each (item,
    // property) by (timestamp, file, line), and each item's last timestamp.
    type Key = (i64, usize, usize);
    let mut last: HashMap<(String, String), (Key, String)> = HashMap::new();
    let mut rows = 0u64;
    for (f, path) in files.iter().enumerate() {
        let text = std::fs::read_to_string(path).unwrap();
        for (line, l) in text.lines().enumerate().skip(1) {
            let v: Vec<&str> = l.splitn(4, ',').collect();
            let key = (v[0].parse::<i64>().unwrap(), f, line);
            rows += 1;
            let e = last.entry((v[1].to_owned(), v[2].to_owned())).or_insert((key, v[3].to_owned()));
            if key >= e.0 {
                *e = (key, v[3].to_owned());
            }
        }
    }

    let producer = ingest::kafka::producer(&s).unwrap();
    let opts = ingest::replay_items::ItemsOptions { files, pace: Pace::Max, progress: false };
    let summary = ingest::replay_items::replay_items(&s, &producer, &opts).await.unwrap();
    assert_eq!((summary.lines, summary.rejected, summary.failed), (rows, 0, 0), "{summary:?}");
    assert!(summary.sent > 0 && summary.sent <= rows, "one message per field a row set");

    let got = common::read_topic(&b, &s.kafka.topic(schemas::topics::ITEMS), Duration::from_secs(60));
    // The (item, property) a message sets, and the value, as the files name them.
    let field = |u: &schemas::ItemUpdate| -> ((String, String), String) {
        let (p, v) = if let Some(a) = u.available() {
            ("available".to_owned(), u8::from(a).to_string())
        } else if let Some(c) = u.category() {
            ("categoryid".to_owned(), c.to_string())
        } else {
            let (p, v) = u.properties().iter().next().expect("one field per message");
            (p.to_owned(), v.to_owned())
        };
        ((u.item_id().to_string(), p), v)
    };
    let mut per_key: HashMap<Vec<u8>, schemas::ItemUpdate> = HashMap::new();
    let mut folded: HashMap<(String, String), String> = HashMap::new();
    for g in &got {
        let u = schemas::ItemUpdate::parse_json(&g.payload, schemas::now_ms(), &Default::default()).unwrap();
        let key = g.key.clone().expect("every catalog message has a key");
        assert!(u.fits_key(&key) && key.contains(&b'/'), "one field per message: {:?}", String::from_utf8_lossy(&key));
        if let Some(prev) = per_key.get(&key) {
            assert!(prev.ts() <= u.ts(), "a key's messages are in time order in its partition");
        }
        let (k, v) = field(&u);
        folded.insert(k, v);
        per_key.insert(key, u);
    }
    // What compaction keeps, the last message per key, is the whole catalog.
    let compacted: HashMap<(String, String), String> = per_key.values().map(field).collect();
    let want: HashMap<(String, String), String> = last.into_iter().map(|(k, (_, v))| (k, v)).collect();
    assert_eq!(compacted, want, "compaction keeps every field's last value");
    if got.len() as u64 == summary.sent {
        assert_eq!(folded, want, "every field ends at the files' last value");
    } else {
        eprintln!("the broker compacted the topic while the test ran: the per-field check is skipped");
    }
}
