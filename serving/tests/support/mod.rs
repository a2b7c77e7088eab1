//! Shared by the integration tests: a synthetic model on disk, an app wired to
//! a Redis of the test's choosing under a random key prefix, request helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use model::synthetic::{synthetic_artifact, SyntheticSpec};
use serde_json::Value;
use serving::config::Settings;
use serving::http::AppState;
use serving::{Catalog, CatalogHandle, Metrics};
use tower::ServiceExt;

/// The Redis the tests use (`RECSYS_TEST_REDIS`, default the local one).
#[allow(unused_imports)] // not every test binary needs it
pub use testkit::services::redis_url;

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Writes the synthetic model `version` under `root` (item row 5 unavailable)
/// and points CURRENT at it.
pub fn write_model(root: &Path, version: &str) {
    let spec = SyntheticSpec { version: version.into(), ..SyntheticSpec::default() };
    let mut art = synthetic_artifact(&spec);
    art.items[5].available = Some(false);
    art.write(root).unwrap();
    model::artifact::set_current(root, version).unwrap();
}

/// The catalog of `root`'s CURRENT.
pub fn catalog(root: &Path) -> Catalog {
    let v = model::artifact::current_version(root).unwrap().unwrap();
    Catalog::load(&root.join(v)).unwrap()
}

/// Publishes the `similar:{item}` lists of `root`'s CURRENT as the trainer
/// does (`batch-trainer/src/publish.rs`: `k` nearest items by cosine of the
/// item factors, unavailable ones left out, `schemas::RecsList`); returns the
/// keys written.
pub async fn publish_similar(settings: &Settings, root: &Path, k: usize) -> Vec<String> {
    let v = model::artifact::current_version(root).unwrap().unwrap();
    let art = model::artifact::Artifact::read(&root.join(&v)).unwrap();
    let ids: Vec<schemas::ItemId> = art.items.iter().map(|r| schemas::ItemId::parse(&r.id).unwrap()).collect();
    let available: Vec<bool> = art.items.iter().map(|r| r.available != Some(false)).collect();
    let keys = settings.redis.keys();
    let mut pipe = redis::pipe();
    let mut written = Vec::new();
    for (row, l) in model::similar::similar_items(&art.item_factors, k).into_iter().enumerate() {
        let list = schemas::RecsList {
            model: schemas::ModelVersion::parse(&v).unwrap(),
            updated_ms: schemas::now_ms(),
            items: l
                .iter()
                .filter(|s| available[s.item as usize])
                .map(|s| schemas::RecItem { item_id: ids[s.item as usize].clone(), score: s.score })
                .collect(),
        };
        let key = keys.similar(&ids[row]);
        pipe.cmd("SET").arg(&key).arg(list.to_json()).ignore();
        written.push(key);
    }
    let mut c =
        redis::Client::open(settings.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    pipe.query_async::<()>(&mut c).await.unwrap();
    written
}

/// Settings on a fresh random Redis prefix, Kafka at a closed port.
pub fn settings(redis_url: &str) -> Settings {
    let mut s = Settings::default();
    s.redis.url = redis_url.to_owned();
    s.redis.prefix = format!("t{:016x}:", rand::random::<u64>());
    s.kafka.brokers = format!("127.0.0.1:{}", closed_port());
    s.serving.impression_timeout_ms = 1_000;
    // No broker here: the live catalog would keep /ready at 503 (tests of it turn it on).
    s.serving.live_catalog = false;
    s
}

/// A running app state (the impression task runs on the current runtime).
pub fn state(settings: &Settings, catalog: Option<Catalog>) -> (AppState, Metrics) {
    let metrics = Metrics::new().unwrap();
    let producer = serving::impressions::producer(settings, &metrics).unwrap();
    let (publisher, _task) = serving::impressions::start(
        producer,
        settings.kafka.topic(schemas::topics::IMPRESSIONS),
        settings.serving.impression_queue,
        metrics.clone(),
        Duration::from_millis(100),
    );
    let redis = common::redis_conn::connect_lazy(&settings.redis).unwrap();
    let handle = CatalogHandle::default();
    if let Some(c) = catalog {
        handle.swap(Arc::new(c));
    }
    let state =
        AppState::new(settings.serving.clone(), settings.redis.keys(), redis, handle, publisher, metrics.clone());
    (state, metrics)
}

pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

pub async fn get(app: &Router, uri: &str) -> Got {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub async fn send(app: &Router, req: Request<Body>) -> Got {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Got { status, headers, body }
}

pub fn assert_error(g: &Got, status: StatusCode, code: &str, mentions: &str) {
    assert_eq!(g.status, status, "{:?}", g.body);
    assert_eq!(g.body["error"], code, "{:?}", g.body);
    let detail = g.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(mentions), "{detail:?} lacks {mentions:?}");
}

/// A user id in the wanted arm under the default salt and split.
pub fn user_in(arm: schemas::Variant, tag: &str) -> String {
    let d = serving::config::ServingConfig::default();
    (0..)
        .map(|n| format!("{tag}-{n}"))
        .find(|u| serving::http::variant_of(&d.ab_salt, u, d.treatment_percent) == arm)
        .unwrap()
}

/// A RecsList JSON of `items` (ids) under model `v`.
pub fn recs_json(v: &str, items: &[String]) -> Vec<u8> {
    schemas::RecsList {
        model: schemas::ModelVersion::parse(v).unwrap(),
        updated_ms: 1,
        items: items
            .iter()
            .enumerate()
            .map(|(i, id)| schemas::RecItem {
                item_id: schemas::ItemId::parse(id).unwrap(),
                score: 1.0 - i as f32 * 0.01,
            })
            .collect(),
    }
    .to_json()
}

pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

pub fn item_ids(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|i| i["item_id"].as_str().unwrap().to_owned()).collect()
}

/// A lazy reconnecting Redis connection for `settings`.
pub fn redis_conn_lazy(settings: &Settings) -> common::redis_conn::RedisConn {
    common::redis_conn::connect_lazy(&settings.redis).unwrap()
}
