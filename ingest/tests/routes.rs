//! Every route and status code, through the real producer against librdkafka's
//! in-process mock cluster (or a closed port for the broker-down cases).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use ingest::config::Settings;
use ingest::http::IngestResponse;
use ingest::Metrics;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Mock {
    // Field order = drop order: the app (and its producer) before the cluster.
    app: Router,
    metrics: Metrics,
    settings: Settings,
    cluster: MockCluster<'static, DefaultProducerContext>,
}

fn mock_with(f: impl FnOnce(&mut Settings)) -> Mock {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let mut settings = Settings::default();
    settings.kafka.brokers = cluster.bootstrap_servers();
    settings.ingest.message_timeout_ms = 3_000;
    f(&mut settings);
    for t in schemas::topics::ALL {
        cluster.create_topic(&settings.kafka.topic(t), 3, 1).expect("create topic");
    }
    let producer = ingest::kafka::producer(&settings).expect("producer");
    let metrics = Metrics::new().expect("metrics");
    let app = ingest::http::router(&settings, producer, metrics.clone());
    Mock { app, metrics, settings, cluster }
}

fn mock() -> Mock {
    mock_with(|_| {})
}

/// An app whose producer points at a closed port.
fn broker_down(f: impl FnOnce(&mut Settings)) -> (Router, Metrics) {
    let mut settings = Settings::default();
    settings.kafka.brokers = format!("127.0.0.1:{}", common::closed_port());
    settings.ingest.message_timeout_ms = 1_000;
    settings.ingest.request_timeout_ms = 5_000;
    f(&mut settings);
    let producer = ingest::kafka::producer(&settings).expect("producer");
    let metrics = Metrics::new().expect("metrics");
    (ingest::http::router(&settings, producer, metrics.clone()), metrics)
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/events").header(header::CONTENT_TYPE, "application/json").body(body.into()).unwrap()
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{:?}", got.1);
    assert_eq!(got.1["error"], code, "{:?}", got.1);
    assert!(got.1["detail"].as_str().is_some_and(|d| !d.is_empty()), "{:?}", got.1);
}

impl Mock {
    fn topic(&self, t: &str) -> String {
        self.settings.kafka.topic(t)
    }
    fn read(&self, t: &str) -> Vec<common::Got> {
        common::read_topic(&self.cluster.bootstrap_servers(), &self.topic(t), Duration::from_secs(20))
    }
    fn count(&self, t: &str) -> i64 {
        common::count(&self.cluster.bootstrap_servers(), &self.topic(t))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_acknowledged_and_keyed_by_user() {
    let m = mock();
    let got = send(&m.app, post(r#"{"user_id": 257597, "item_id": "355908", "event": "view"}"#)).await;
    assert_eq!(got.0, StatusCode::OK, "{:?}", got.1);
    assert_eq!(got.1, json!({"accepted": 1, "rejected": []}));
    let msgs = m.read(schemas::topics::EVENTS);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].key.as_deref(), Some(&b"257597"[..]));
    let v: Value = serde_json::from_slice(&msgs[0].payload).unwrap();
    assert_eq!(v["user_id"], "257597", "ids are normalised to strings");
    assert!(v["ts"].as_i64().is_some(), "an absent ts is filled with the ingest time: {v}");
    assert_eq!(m.count(schemas::topics::EVENTS_DLQ), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_accepts_the_good_and_dead_letters_the_bad() {
    let m = mock();
    let bad_1 = r#"{"user_id": "a", "item_id": "1", "event": "click"}"#;
    let bad_3 = r#"{"user_id": "b", "item_id": "2", "event": "view",  "price": 3}"#;
    let body = format!(
        r#"[{{"ts": 1433221332117, "user_id": "a", "item_id": "10", "event": "view"}}, {bad_1},
            {{"ts": 1433221332118, "user_id": "b", "item_id": "20", "event": "addtocart"}}, {bad_3},
            {{"ts": 1433221332119, "user_id": "a", "item_id": "11", "event": "transaction", "transaction_id": "t1", "revenue": 12.5}}]"#
    );
    let (status, v) = send(&m.app, post(body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let r: IngestResponse = serde_json::from_value(v).unwrap();
    assert_eq!(r.accepted, 3);
    assert_eq!(r.rejected.iter().map(|x| x.index).collect::<Vec<_>>(), vec![1, 3]);
    assert!(r.rejected[0].reason.contains("click"), "{:?}", r.rejected);
    assert!(r.rejected[1].reason.contains("price"), "{:?}", r.rejected);
    let codes: Vec<&str> = r.rejected.iter().map(|x| x.code.as_str()).collect();
    assert_eq!(codes, ["invalid_event_kind", "unknown_field"], "the metrics' reason classes");

    let events = m.read(schemas::topics::EVENTS);
    assert_eq!(events.len(), 3, "exactly the accepted events, once");
    let of_a: Vec<&common::Got> = events.iter().filter(|g| g.key.as_deref() == Some(b"a")).collect();
    assert_eq!(of_a.len(), 2);
    assert_eq!(of_a[0].partition, of_a[1].partition, "one user, one partition");
    let items: Vec<String> = of_a
        .iter()
        .map(|g| serde_json::from_slice::<Value>(&g.payload).unwrap()["item_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(items, ["10", "11"], "a user's events keep the request order");

    let dead = m.read(schemas::topics::EVENTS_DLQ);
    assert_eq!(dead.len(), 2);
    let letters: Vec<schemas::DeadLetter> =
        dead.iter().map(|g| schemas::DeadLetter::parse_json(&g.payload).unwrap()).collect();
    for (want_raw, want_reason) in [(bad_1, &r.rejected[0].reason), (bad_3, &r.rejected[1].reason)] {
        let l = letters.iter().find(|l| l.original_text() == Some(want_raw)).expect("original bytes kept");
        assert_eq!(&l.reason, want_reason);
        assert_eq!(l.source, schemas::DeadLetterSource::Http);
    }

    let text = m.metrics.render();
    assert!(text.contains(r#"recsys_ingest_events_accepted_total{source="http"} 3"#), "{text}");
    assert!(text.contains(r#"reason="invalid_event_kind",source="http"} 1"#), "{text}");
    assert!(text.contains(r#"reason="unknown_field",source="http"} 1"#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_is_accepted_and_one_more_is_413() {
    let m = mock();
    let max = m.settings.ingest.max_batch;
    let ev = |i: usize| format!(r#"{{"ts":1433221332117,"user_id":"u{}","item_id":"{i}","event":"view"}}"#, i % 97);
    let body = format!("[{}]", (0..max).map(ev).collect::<Vec<_>>().join(","));
    assert!(body.len() < m.settings.ingest.max_body_bytes);
    let (status, v) = send(&m.app, post(body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], max);
    assert_eq!(m.count(schemas::topics::EVENTS), max as i64);

    let body = format!("[{}]", vec!["{}"; max + 1].join(","));
    assert_error(&send(&m.app, post(body)).await, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");
    assert_eq!(m.count(schemas::topics::EVENTS_DLQ), 0, "a refused request dead-letters nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_faults_are_4xx_json_and_produce_nothing() {
    let m = mock();
    assert_error(&send(&m.app, post("{not json")).await, StatusCode::BAD_REQUEST, "invalid_json");
    assert_error(&send(&m.app, post("")).await, StatusCode::BAD_REQUEST, "invalid_json");
    assert_error(&send(&m.app, post(vec![0xffu8, 0xfe])).await, StatusCode::BAD_REQUEST, "invalid_json");

    let too_big = format!(r#"{{"user_id":"a","item_id":"1","event":"view","x":"{}"}}"#, "x".repeat(1 << 20));
    assert_error(&send(&m.app, post(too_big)).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let form = Request::post("/v1/events")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("{}"))
        .unwrap();
    assert_error(&send(&m.app, form).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let none = Request::post("/v1/events").body(Body::from("{}")).unwrap();
    assert_error(&send(&m.app, none).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let charset = Request::post("/v1/events")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(r#"{"user_id":"a","item_id":"1","event":"view"}"#))
        .unwrap();
    assert_eq!(send(&m.app, charset).await.0, StatusCode::OK);

    let unknown = Request::get("/v1/nope/123").body(Body::empty()).unwrap();
    assert_error(&send(&m.app, unknown).await, StatusCode::NOT_FOUND, "not_found");
    let wrong_method = Request::get("/v1/events").body(Body::empty()).unwrap();
    assert_error(&send(&m.app, wrong_method).await, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    assert_eq!(m.count(schemas::topics::EVENTS), 1, "only the one valid request produced");
    assert_eq!(m.count(schemas::topics::EVENTS_DLQ), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let m = mock();
    let (status, v) = send(&m.app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"status": "ok"})));
    send(&m.app, post(r#"{"user_id":"a","item_id":"1","event":"view"}"#)).await;
    send(&m.app, Request::get("/v1/users/12345").body(Body::empty()).unwrap()).await;
    let resp = m.app.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    for want in [
        r#"recsys_ingest_http_request_duration_seconds_count{method="POST",route="/v1/events",status="200"} 1"#,
        r#"recsys_ingest_http_request_duration_seconds_count{method="GET",route="/health",status="200"} 1"#,
        r#"recsys_ingest_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"} 1"#,
        r#"recsys_ingest_events_accepted_total{source="http"} 1"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    assert!(!text.contains("12345"), "raw paths never become labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_is_503_with_nothing_accepted() {
    let (app, metrics) = broker_down(|_| {});
    let start = Instant::now();
    let got = send(&app, post(r#"[{"user_id":"a","item_id":"1","event":"view"}, {"user_id":"a"}]"#)).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable");
    assert!(got.1.get("accepted").is_none());
    assert!(got.1.get("persisted").is_none());
    assert!(start.elapsed() < Duration::from_secs(4), "bounded by message_timeout_ms: {:?}", start.elapsed());
    let text = metrics.render();
    assert!(text.contains("recsys_ingest_produce_errors_total"), "{text}");
    assert!(!text.contains("recsys_ingest_events_accepted_total{source=\"http\"} 1"), "{text}");
}

/// One of three brokers down: the events whose partition it leads are not
/// written, the others are. The 503 names exactly the written ones, so a
/// client resending the rest creates no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_written_request_is_503_naming_what_was_persisted() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    let mut settings = Settings::default();
    settings.kafka.brokers = cluster.bootstrap_servers();
    settings.ingest.message_timeout_ms = 1_500;
    for t in schemas::topics::ALL {
        let topic = settings.kafka.topic(t);
        cluster.create_topic(&topic, 3, 1).expect("create topic");
        for p in 0..3 {
            cluster.partition_leader(&topic, p, Some(p + 1)).expect("leader");
        }
    }
    let producer = ingest::kafka::producer(&settings).expect("producer");
    let app = ingest::http::router(&settings, producer, Metrics::new().expect("metrics"));
    // Learn the leaders first, then lose the broker of partition 2.
    let warm = send(&app, post(r#"{"user_id":"warm","item_id":"1","event":"view"}"#)).await;
    assert_eq!(warm.0, StatusCode::OK, "{:?}", warm.1);
    cluster.broker_down(3).expect("broker down");

    let batch: Vec<Value> =
        (0..40).map(|u| json!({"user_id": format!("u{u}"), "item_id": "7", "event": "view"})).collect();
    let resp = app.clone().oneshot(post(serde_json::to_vec(&batch).unwrap())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()), Some("1"));
    let body: Value =
        serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
    assert_eq!(body["error"], "kafka_partial", "{body}");
    let persisted: Vec<usize> =
        body["persisted"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert!(!persisted.is_empty() && persisted.len() < 40, "40 users over 3 partitions, one down: {persisted:?}");

    cluster.broker_up(3).expect("broker up");
    let topic = settings.kafka.topic(schemas::topics::EVENTS);
    let got = common::read_topic(&cluster.bootstrap_servers(), &topic, Duration::from_secs(20));
    let mut written: Vec<String> =
        got.iter().map(|m| String::from_utf8(m.key.clone().unwrap()).unwrap()).filter(|k| k != "warm").collect();
    written.sort();
    let mut named: Vec<String> = persisted.iter().map(|i| format!("u{i}")).collect();
    named.sort();
    assert_eq!(written, named, "the answer names exactly what the log holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_is_503() {
    let (app, _) = broker_down(|s| {
        s.ingest.message_timeout_ms = 10_000;
        s.ingest.request_timeout_ms = 300;
    });
    let start = Instant::now();
    let got = send(&app, post(r#"{"user_id":"a","item_id":"1","event":"view"}"#)).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "request_timeout");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_are_shed() {
    let (app, _) = broker_down(|s| {
        s.ingest.concurrency_limit = 1;
        s.ingest.message_timeout_ms = 1_500;
    });
    let slow = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post(r#"{"user_id":"a","item_id":"1","event":"view"}"#)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = send(&app, post(r#"{"user_id":"b","item_id":"1","event":"view"}"#)).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    // /health is outside the limit.
    assert_eq!(send(&app, Request::get("/health").body(Body::empty()).unwrap()).await.0, StatusCode::OK);
    assert_error(&slow.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_flushes() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let mut settings = Settings::default();
    settings.kafka.brokers = cluster.bootstrap_servers();
    for t in schemas::topics::ALL {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let producer = ingest::kafka::producer(&settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ingest::run(settings, listener, producer, async move {
        let _ = stop_rx.await;
    }));

    let client = reqwest::Client::new();
    let ok = client.get(format!("http://{addr}/health")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    // Slow the broker down so the next request is still in flight at shutdown.
    cluster.broker_round_trip_time(1, Duration::from_millis(800)).unwrap();
    let inflight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .post(format!("http://{addr}/v1/events"))
                .header("content-type", "application/json")
                .body(r#"{"user_id":"a","item_id":"1","event":"view"}"#)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_tx.send(()).unwrap();
    let resp = inflight.await.unwrap().expect("the request in flight is answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["accepted"], 1);
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("run returns").unwrap().unwrap();
    assert!(reqwest::get(format!("http://{addr}/health")).await.is_err(), "no longer accepting");
    assert_eq!(common::count(&cluster.bootstrap_servers(), schemas::topics::EVENTS), 1);
}

/// Makes librdkafka treat `producer` as having hit a fatal idempotence error,
/// as after an out-of-order sequence from the broker (its own test hook).
#[allow(unsafe_code)]
fn inject_fatal_error(producer: &rdkafka::producer::FutureProducer) {
    use rdkafka::producer::Producer;
    let reason = std::ffi::CString::new("injected by the test").unwrap();
    // SAFETY: the client pointer is live for the producer's lifetime and the
    // reason is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            producer.client().native_ptr(),
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    assert_eq!(rc, rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
}

/// A fatal producer error can never heal: /health turns 503 and the server
/// stops by itself (exit non-zero in main) so that it gets replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_fails_health_and_stops_the_server() {
    let m = mock();
    let producer = ingest::kafka::producer(&m.settings).expect("producer");
    let app = ingest::http::router(&m.settings, producer.clone(), Metrics::new().unwrap());
    assert_eq!(send(&app, Request::get("/health").body(Body::empty()).unwrap()).await.0, StatusCode::OK);
    inject_fatal_error(&producer);
    let (status, v) = send(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "failed", "{v}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let producer = ingest::kafka::producer(&m.settings).expect("producer");
    let server = tokio::spawn(ingest::run(m.settings.clone(), listener, producer.clone(), std::future::pending()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.is_finished(), "serves while healthy");
    inject_fatal_error(&producer);
    let res = tokio::time::timeout(Duration::from_secs(10), server).await.expect("stops by itself").unwrap();
    let err = res.expect_err("a fatal error ends run() with an error");
    assert!(err.to_string().contains("can no longer produce"), "{err:#}");
}

/// What a hostile request got: `"{status} {error}"`, or `"rejected: {reason}"`
/// for a 422 that refused its one event (which then went to the DLQ).
async fn outcome(app: &Router, req: Request<Body>) -> String {
    let (status, v) = send(app, req).await;
    assert_ne!(status, StatusCode::OK, "a hostile event was accepted: {v}");
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        assert_eq!(v["accepted"], 0, "a hostile event was accepted: {v}");
        let r = v["rejected"].as_array().unwrap();
        assert_eq!(r.len(), 1, "{v}");
        assert!(r[0]["code"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
        return format!("rejected: {}", r[0]["reason"].as_str().unwrap());
    }
    assert!(status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE, "{status}: {v}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    format!("{} {}", status.as_u16(), v["error"].as_str().unwrap())
}

/// docs/reliability.md's table of hostile inputs (run with `--nocapture` to print it):
/// each gets a clear 4xx (or its event is refused with the reason and
/// dead-lettered), none crashes the process, none reaches the events topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_get_clear_answers_and_never_reach_the_topic() {
    let m = mock_with(|s| s.ingest.request_timeout_ms = 1_000);
    let ev = |field: &str, value: &str| {
        let mut v = json!({"ts": 1433221332117i64, "user_id": "u1", "item_id": "i1", "event": "view"});
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    };
    let far_future = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        + 3 * 86_400_000)
        .to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("body over 1 MiB", format!("[\"{}\"]", "x".repeat(1 << 20)).into_bytes(), "413 payload_too_large"),
        (
            "10⁵ events in one request",
            format!("[{}]", vec!["{}"; 100_000].join(",")).into_bytes(),
            "413 batch_too_large",
        ),
        ("nesting 100,000 deep", "[".repeat(100_000).into_bytes(), "400 invalid_json"),
        (
            "an event field nested 10,000 deep",
            format!("{{\"user_id\":{}}}", "[".repeat(10_000)).into_bytes(),
            "400 invalid_json",
        ),
        (
            "invalid UTF-8 in a string",
            b"{\"user_id\":\"u\xff\",\"item_id\":\"1\",\"event\":\"view\"}".to_vec(),
            "400 invalid_json",
        ),
        ("not JSON", b"{user_id: 1}".to_vec(), "400 invalid_json"),
        (
            "NaN revenue (literal)",
            br#"{"user_id":"u","item_id":"1","event":"transaction","transaction_id":"t","revenue":NaN}"#.to_vec(),
            "400 invalid_json",
        ),
        ("NaN revenue (string)", ev("revenue", r#""NaN""#).into_bytes(), "rejected: revenue"),
        ("negative revenue", ev("revenue", "-5").into_bytes(), "rejected: revenue"),
        ("huge revenue (1e308)", ev("revenue", "1e308").into_bytes(), "rejected: revenue"),
        (
            "revenue out of f64 range (1e309)",
            br#"{"user_id":"u","item_id":"1","event":"view","revenue":1e309}"#.to_vec(),
            "rejected: number out of range",
        ),
        (
            "user id of 65 characters",
            ev("user_id", &format!("\"{}\"", "u".repeat(65))).into_bytes(),
            "rejected: user_id",
        ),
        ("item id with a control character", ev("item_id", r#""a\u0007b""#).into_bytes(), "rejected: item_id"),
        ("user id with a newline", ev("user_id", r#""a\nb""#).into_bytes(), "rejected: user_id"),
        ("user id with a slash", ev("user_id", r#""a/b""#).into_bytes(), "rejected: user_id"),
        ("negative timestamp", ev("ts", "-1").into_bytes(), "rejected: ts"),
        ("timestamp before 2010", ev("ts", "1000").into_bytes(), "rejected: ts"),
        ("timestamp 3 days ahead", ev("ts", &far_future).into_bytes(), "rejected: ts"),
        ("timestamp beyond i64", ev("ts", "99999999999999999999").into_bytes(), "rejected: ts"),
        ("unknown event kind", ev("event", r#""click""#).into_bytes(), "rejected: event"),
        ("unknown field", ev("price", "3").into_bytes(), "rejected: price"),
        ("empty body", Vec::new(), "400 invalid_json"),
        ("JSON null", b"null".to_vec(), "rejected: object"),
    ];
    println!("| input | answer |\n| --- | --- |");
    let mut wrong = Vec::new();
    for (name, body, want) in &cases {
        let got = outcome(&m.app, post(body.clone())).await;
        println!("| {name} | {got} |");
        let ok = match want.strip_prefix("rejected: ") {
            // Refused and dead-lettered, with a reason that names the field.
            Some(field) => got.starts_with("rejected: ") && got.contains(field),
            None => got == *want,
        };
        if !ok {
            wrong.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Other request-level faults.
    let form = Request::post("/v1/events")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("{}"))
        .unwrap();
    let got = outcome(&m.app, form).await;
    println!("| Content-Type application/x-www-form-urlencoded | {got} |");
    assert_eq!(got, "415 unsupported_media_type");
    // A client that sends part of its body and stalls: cut off at the request deadline.
    use futures::StreamExt;
    let stalled = futures::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"[{\"user_id\":"))])
        .chain(futures::stream::pending());
    let got = outcome(&m.app, post(Body::from_stream(stalled))).await;
    println!("| slow client (body stalls) | {got} |");
    assert_eq!(got, "503 request_timeout");
    assert_eq!(m.count(schemas::topics::EVENTS), 0, "nothing hostile reached the events topic");
    let dead = m.read(schemas::topics::EVENTS_DLQ);
    assert_eq!(
        dead.len(),
        cases.iter().filter(|c| c.2.starts_with("rejected")).count(),
        "every refused event is dead-lettered"
    );
}

fn preflight(origin: &str) -> Request<Body> {
    Request::options("/v1/events")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .unwrap()
}

/// The `access-control-*` headers of `req`'s answer, and its status.
async fn cors_headers(app: &Router, req: Request<Body>) -> (StatusCode, Vec<(String, String)>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let h = resp
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("access-control-"))
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    (resp.status(), h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_the_configured_origins() {
    let shop = "https://shop.example";
    let m = mock_with(|s| s.ingest.cors_origins = vec![shop.into(), "http://127.0.0.1:8080".into()]);
    let (status, h) = cors_headers(&m.app, preflight(shop)).await;
    assert_eq!(status, StatusCode::OK, "{h:?}");
    let get = |name: &str| h.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_ascii_lowercase());
    assert_eq!(get("access-control-allow-origin").as_deref(), Some(shop), "{h:?}");
    assert!(get("access-control-allow-methods").is_some_and(|v| v.contains("post")), "{h:?}");
    assert!(get("access-control-allow-headers").is_some_and(|v| v.contains("content-type")), "{h:?}");

    let (_, h) = cors_headers(&m.app, preflight("https://evil.example")).await;
    assert_eq!(h, [], "another origin gets no CORS header");
    let (_, h) = cors_headers(&m.app, preflight("https://shop.example:8443")).await;
    assert_eq!(h, [], "origins match exactly, port included");

    // The request itself: the allowed origin may read the answer.
    let ev = r#"{"user_id":"a","item_id":"1","event":"view"}"#;
    let mut req = post(ev);
    req.headers_mut().insert(header::ORIGIN, shop.parse().unwrap());
    let (status, h) = cors_headers(&m.app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h, [("access-control-allow-origin".to_owned(), shop.to_owned())]);
    let mut req = post(ev);
    req.headers_mut().insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_eq!(cors_headers(&m.app, req).await.1, []);

    // Not configured (the default): no CORS header for anyone.
    let plain = mock();
    assert_eq!(cors_headers(&plain.app, preflight(shop)).await.1, []);
    let mut req = post(ev);
    req.headers_mut().insert(header::ORIGIN, shop.parse().unwrap());
    assert_eq!(cors_headers(&plain.app, req).await.1, []);
}

/// The item routes share the events' batch path: a broker that does not
/// acknowledge is 503 with nothing accepted, for `PUT` and `POST` alike; and
/// a browser may `PUT` from an allowed origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_updates_with_the_broker_down_are_503_and_put_is_allowed_cross_origin() {
    let (app, metrics) = broker_down(|_| {});
    let put = Request::put("/v1/items/42")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"available":false}"#))
        .unwrap();
    assert_error(&send(&app, put).await, StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable");
    let batch = Request::post("/v1/items")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"[{"item_id":1,"price":3}, {"item_id":2}]"#))
        .unwrap();
    assert_error(&send(&app, batch).await, StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable");
    assert!(!metrics.render().contains("recsys_ingest_items_accepted_total{source=\"http\"} 1"));

    let shop = "https://shop.example";
    let m = mock_with(|s| s.ingest.cors_origins = vec![shop.into()]);
    let req = Request::options("/v1/items/42")
        .header(header::ORIGIN, shop)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .unwrap();
    let (status, h) = cors_headers(&m.app, req).await;
    assert_eq!(status, StatusCode::OK, "{h:?}");
    let methods = h.iter().find(|(k, _)| k == "access-control-allow-methods").map(|(_, v)| v.to_ascii_lowercase());
    assert!(methods.is_some_and(|v| v.contains("put")), "{h:?}");
}
