//! Model hot swap: the served version at start comes from `CURRENT`; later
//! ones from announcements on `recsys.models` (and, as a safety net for a
//! missed announcement, a periodic look at `CURRENT`). A version is loaded and
//! verified in the background, then swapped in atomically; a version that
//! fails verification is refused and logged, and the old one keeps serving.
//! Users are re-folded on their next event, and all of them in the background
//! by [`crate::refold`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use schemas::ModelAnnouncement;
use tokio::sync::watch;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::served::{LoadError, ModelHandle, ServedModel};
use crate::store::Store;

/// Loads the version `CURRENT` names, if any.
pub async fn load_current(root: &Path) -> Result<Option<ServedModel>, LoadError> {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || {
        let Some(v) = model::artifact::current_version(&root)? else { return Ok(None) };
        ServedModel::load(&root.join(v)).map(Some)
    })
    .await
    .unwrap_or_else(|e| Err(LoadError::Unusable { version: "?".into(), reason: e.to_string() }))
}

/// Swaps `m` in and records it.
pub async fn serve(handle: &ModelHandle, store: &Store, metrics: &Metrics, m: ServedModel) {
    let version = m.version.clone();
    tracing::info!(version = %version, items = m.item_ids.len(), factors = m.factors(), "serving model");
    handle.swap(Arc::new(m));
    metrics.model_served(version.as_str());
    if let Err(e) = crate::store::set_model_current(&mut store.conn.clone(), &store.keys, &version).await {
        tracing::warn!(error = %e, "cannot record model:current in Redis");
    }
}

/// Where an announced version lives: its announced path when that holds a
/// manifest on this machine, else the version under our own artifacts root.
pub fn resolve(a: &ModelAnnouncement, root: &Path) -> PathBuf {
    let announced = PathBuf::from(&a.path);
    if announced.join("manifest.json").is_file() {
        announced
    } else {
        root.join(a.version.as_str())
    }
}

/// Handles one `recsys.models` message.
pub async fn on_announcement(
    payload: &[u8],
    settings: &Settings,
    handle: &ModelHandle,
    store: &Store,
    metrics: &Metrics,
) -> Result<bool, String> {
    let a = ModelAnnouncement::parse_json(payload).map_err(|e| e.to_string())?;
    if let Some(cur) = handle.current() {
        if cur.version == a.version && cur.manifest_sha256 == a.manifest_sha256.as_str() {
            return Ok(false);
        }
    }
    let dir = resolve(&a, &settings.model.artifacts_dir);
    let (version, sha) = (a.version.to_string(), a.manifest_sha256.to_string());
    let loaded = tokio::task::spawn_blocking(move || ServedModel::load_announced(&dir, &version, &sha))
        .await
        .map_err(|e| e.to_string())?;
    match loaded {
        Ok(m) => {
            serve(handle, store, metrics, m).await;
            Ok(true)
        }
        Err(e) => Err(format!("model {} refused: {e}", a.version)),
    }
}

/// Follows announcements and `CURRENT` until `stop` turns true.
pub async fn watch_models(
    settings: Arc<Settings>,
    consumer: StreamConsumer,
    handle: ModelHandle,
    store: Store,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut poll = tokio::time::interval(Duration::from_secs(settings.updater.model_poll_interval_s));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = consumer.recv() => match m {
                Ok(msg) => {
                    let payload = msg.payload().unwrap_or_default().to_vec();
                    drop(msg);
                    if let Err(reason) = on_announcement(&payload, &settings, &handle, &store, &metrics).await {
                        metrics.model_loads.with_label_values(&["refused"]).inc();
                        tracing::error!(%reason, "model announcement refused; the served model stays");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "model announcement consumer error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = poll.tick() => poll_current(&settings, &handle, &store, &metrics).await,
        }
    }
    consumer.unsubscribe();
}

async fn poll_current(settings: &Settings, handle: &ModelHandle, store: &Store, metrics: &Metrics) {
    let root = &settings.model.artifacts_dir;
    let Ok(Some(v)) = model::artifact::current_version(root) else { return };
    if handle.current().is_some_and(|m| m.version.as_str() == v) {
        return;
    }
    match load_current(root).await {
        Ok(Some(m)) => serve(handle, store, metrics, m).await,
        Ok(None) => {}
        Err(e) => {
            metrics.model_loads.with_label_values(&["refused"]).inc();
            tracing::error!(version = %v, error = %e, "CURRENT names a model that cannot be served");
        }
    }
}

/// The announcement consumer (see [`Settings::announcement_consumer_config`]).
pub fn announcement_consumer(settings: &Settings, instance: &str) -> rdkafka::error::KafkaResult<StreamConsumer> {
    let c: StreamConsumer = settings.announcement_consumer_config(instance).create()?;
    c.subscribe(&[&settings.kafka.topic(schemas::topics::MODELS)])?;
    Ok(c)
}
