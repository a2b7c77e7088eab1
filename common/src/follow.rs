//! The model follower of the updater and serving: the served version at
//! start comes from `CURRENT`; later ones from announcements on
//! `recsys.models` and, as a safety net for a missed announcement, a periodic
//! look at `CURRENT`. A version is loaded and verified on a blocking thread,
//! then handed to the process's [`Follower::install`]; a version that fails
//! verification is refused (counted, logged) and the served one stays.
//!
//! The artifact format is `model`'s, which `common` does not depend on: each
//! process's [`Follower`] reads `CURRENT` and loads a version its own way
//! (serving the metadata, the updater the factors).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use schemas::ModelAnnouncement;

/// What a process follows the served model with: how it loads a version and
/// what it does with it.
pub trait Follower: Send + Sync + 'static {
    /// A loaded, verified version.
    type Model: Send + 'static;

    /// The version `{root}/CURRENT` names, if any.
    fn current_version(root: &Path) -> Result<Option<String>, String>;

    /// Loads and verifies the version in `dir` (blocking).
    fn load(dir: &Path) -> Result<Self::Model, String>;

    /// Loads the version in `dir`, which must be `version` with a manifest
    /// hashing to `manifest_sha256` (blocking).
    fn load_announced(dir: &Path, version: &str, manifest_sha256: &str) -> Result<Self::Model, String>;

    /// The version of a loaded model.
    fn version(m: &Self::Model) -> String;

    /// The served model's version and manifest hash, if one is served.
    fn served(&self) -> Option<(String, String)>;

    /// Serves `m` (the swap).
    fn install(&self, m: Self::Model) -> impl Future<Output = ()> + Send;

    /// Counts a version refused.
    fn refused(&self);
}

/// Loads the version `CURRENT` names, if any.
pub async fn load_current<F: Follower>(root: &Path) -> Result<Option<F::Model>, String> {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || {
        let Some(v) = F::current_version(&root)? else { return Ok(None) };
        F::load(&root.join(v)).map(Some)
    })
    .await
    .unwrap_or_else(|e| Err(format!("loading the CURRENT model: {e}")))
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

/// Handles one `recsys.models` message: `Ok(true)` when a new version is served.
pub async fn on_announcement<F: Follower>(f: &F, payload: &[u8], root: &Path) -> Result<bool, String> {
    let a = ModelAnnouncement::parse_json(payload).map_err(|e| e.to_string())?;
    if f.served().is_some_and(|(v, sha)| v == a.version.as_str() && sha == a.manifest_sha256.as_str()) {
        return Ok(false);
    }
    let dir = resolve(&a, root);
    let (version, sha) = (a.version.to_string(), a.manifest_sha256.to_string());
    let loaded = tokio::task::spawn_blocking(move || F::load_announced(&dir, &version, &sha))
        .await
        .map_err(|e| e.to_string())?;
    match loaded {
        Ok(m) => {
            f.install(m).await;
            Ok(true)
        }
        Err(e) => Err(format!("model {} refused: {e}", a.version)),
    }
}

/// What a reload found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// `CURRENT` names the served version already.
    Unchanged(String),
    /// This version is served now.
    Swapped(String),
    /// No `CURRENT` yet.
    NoModel,
}

/// Serves `CURRENT`'s version unless it is served already; an unusable
/// version is refused (counted) and the served one stays.
pub async fn reload_current<F: Follower>(f: &F, root: &Path) -> Result<Reloaded, String> {
    let v = match F::current_version(root) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(Reloaded::NoModel),
        Err(e) => return Err(format!("reading {}: {e}", root.display())),
    };
    if f.served().is_some_and(|(served, _)| served == v) {
        return Ok(Reloaded::Unchanged(v));
    }
    match load_current::<F>(root).await {
        Ok(Some(m)) => {
            let version = F::version(&m);
            f.install(m).await;
            Ok(Reloaded::Swapped(version))
        }
        Ok(None) => Ok(Reloaded::NoModel),
        Err(e) => {
            f.refused();
            Err(format!("model {v} refused: {e}"))
        }
    }
}

/// Follows announcements (when a consumer is given) and `CURRENT` every
/// `poll_every` until `stop` resolves.
pub async fn follow<F: Follower>(
    f: F,
    root: PathBuf,
    poll_every: Duration,
    consumer: Option<StreamConsumer>,
    stop: impl Future<Output = ()>,
) {
    let mut poll = tokio::time::interval(poll_every);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            m = recv(&consumer) => match m {
                Ok(payload) => {
                    if let Err(reason) = on_announcement(&f, &payload, &root).await {
                        f.refused();
                        tracing::error!(%reason, "model announcement refused; the served model stays");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "model announcement consumer error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = poll.tick() => {
                if let Err(e) = reload_current(&f, &root).await {
                    tracing::error!(error = %e, "CURRENT names a model that cannot be served");
                }
            }
        }
    }
    if let Some(c) = consumer {
        c.unsubscribe();
    }
}

async fn recv(c: &Option<StreamConsumer>) -> rdkafka::error::KafkaResult<Vec<u8>> {
    match c {
        Some(c) => c.recv().await.map(|m| m.payload().unwrap_or_default().to_vec()),
        None => std::future::pending().await,
    }
}

/// A consumer made from `config`, subscribed to the announcements `topic`.
pub fn announcement_consumer(
    config: &rdkafka::ClientConfig,
    topic: &str,
) -> rdkafka::error::KafkaResult<StreamConsumer> {
    let c: StreamConsumer = config.create()?;
    c.subscribe(&[topic])?;
    Ok(c)
}
