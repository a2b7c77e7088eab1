//! Model hot swap, the updater's side of the model follower
//! ([`common::follow`]): the served version at start comes from `CURRENT`;
//! later ones from announcements on `recsys.models` (and, as a safety net for
//! a missed announcement, a periodic look at `CURRENT`). A version is loaded
//! and verified in the background, then swapped in atomically; a version that
//! fails verification is refused and logged, and the old one keeps serving.
//! Users are re-folded on their next event, and all of them in the background
//! by [`crate::refold`].

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::follow::{self, Follower};
use rdkafka::consumer::StreamConsumer;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::served::{ModelHandle, ServedModel};

/// The updater's swap: the model handle the pipeline reads, and the metrics.
#[derive(Debug, Clone)]
pub struct Models {
    pub handle: ModelHandle,
    pub metrics: Metrics,
}

impl Follower for Models {
    type Model = ServedModel;

    fn current_version(root: &Path) -> Result<Option<String>, String> {
        model::artifact::current_version(root).map_err(|e| e.to_string())
    }

    fn load(dir: &Path) -> Result<ServedModel, String> {
        ServedModel::load(dir).map_err(|e| e.to_string())
    }

    fn load_announced(dir: &Path, version: &str, manifest_sha256: &str) -> Result<ServedModel, String> {
        ServedModel::load_announced(dir, version, manifest_sha256).map_err(|e| e.to_string())
    }

    fn version(m: &ServedModel) -> String {
        m.version.to_string()
    }

    fn served(&self) -> Option<(String, String)> {
        self.handle.current().map(|m| (m.version.to_string(), m.manifest_sha256.clone()))
    }

    fn install(&self, m: ServedModel) -> impl Future<Output = ()> + Send {
        serve(&self.handle, &self.metrics, m);
        std::future::ready(())
    }

    fn refused(&self) {
        self.metrics.model_loads.with_label_values(&["refused"]).inc();
    }
}

/// Loads the version `CURRENT` names, if any.
pub async fn load_current(root: &Path) -> Result<Option<ServedModel>, String> {
    follow::load_current::<Models>(root).await
}

/// Swaps `m` in and records it in the metrics. `model:current` in Redis is
/// the trainer's to write (docs/design.md §5): it names the published
/// version, whichever process has swapped it in yet.
pub fn serve(handle: &ModelHandle, metrics: &Metrics, m: ServedModel) {
    tracing::info!(version = %m.version, items = m.item_ids.len(), factors = m.factors(), "serving model");
    metrics.model_served(m.version.as_str());
    handle.swap(Arc::new(m));
}

/// Follows announcements and `CURRENT` until `stop` resolves.
pub async fn watch_models(
    settings: Arc<Settings>,
    consumer: StreamConsumer,
    models: Models,
    stop: impl Future<Output = ()>,
) {
    let poll_every = Duration::from_secs(settings.updater.model_poll_interval_s);
    follow::follow(models, settings.model.artifacts_dir.clone(), poll_every, Some(consumer), stop).await;
}

/// The announcement consumer (see [`Settings::announcement_consumer_config`]).
pub fn announcement_consumer(settings: &Settings, instance: &str) -> rdkafka::error::KafkaResult<StreamConsumer> {
    follow::announcement_consumer(
        &settings.announcement_consumer_config(instance),
        &settings.kafka.topic(schemas::topics::MODELS),
    )
}
