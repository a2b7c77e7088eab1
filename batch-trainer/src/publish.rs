//! Publication of a served model version, after `CURRENT` has moved.
//!
//! Order, and why:
//! 1. `CURRENT` (done by the caller, atomic rename): the source of truth. The
//!    updater and serving poll it, so even if everything below fails they pick
//!    the model up within their poll interval.
//! 2. Redis lists, pipelined in bounded batches: `popular`,
//!    `popular:cat:{c}`, `similar:{item}`, each in the `recs:{user}` shape
//!    (`{"model","updated_ms","items":[{"item_id","score"}]}`) so a reader can
//!    tell which model a list came from. Lists of categories and items the new
//!    model no longer has are deleted afterwards.
//! 3. `model:current` = the version. The trainer is its one writer
//!    (docs/design.md §5): serving's readiness reads it before a model is loaded.
//! 4. The announcement on `recsys.models` (key `model`, acks=all): consumers
//!    react to it, so it goes out only once the lists above are in place.
//! 5. `model:published` = `{"version","manifest_sha256","published_ms"}`:
//!    written last, it marks a complete publication. A crash anywhere after
//!    step 1 leaves `model:published` naming an older version than `CURRENT`;
//!    `schedule` notices that at start and re-publishes, and `models promote
//!    VERSION` re-publishes on demand. Every step is idempotent.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::redis_conn::RedisConn;
use model::artifact::{self, Artifact, ArtifactError};
use model::Scored;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use schemas::{ItemId, ModelAnnouncement, ModelVersion, RecItem, RecsList, RedisKeys, Sha256Hex};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::{PublishConfig, Settings};

/// Why a publication failed. `CURRENT` has moved by then: the message says so.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("reading the model: {0}")]
    Artifact(#[from] ArtifactError),
    #[error("the model cannot be published: {0}")]
    Unpublishable(String),
    #[error("redis ({stage}): {source}")]
    Redis {
        stage: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("redis ({stage}): no answer within {timeout:?}")]
    RedisTimeout { stage: &'static str, timeout: Duration },
    #[error("kafka: announcing on {topic}: {message}")]
    Kafka { topic: String, message: String },
}

/// The value of `model:published`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub version: String,
    pub manifest_sha256: String,
    pub published_ms: i64,
}

/// What a publication wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublishReport {
    pub version: String,
    pub manifest_sha256: String,
    pub popular_items: usize,
    pub category_lists: usize,
    pub similar_lists: usize,
    /// Lists of categories / items the model no longer has, deleted.
    pub stale_deleted: usize,
    /// Items whose id is not a valid wire id (left out of the lists).
    pub skipped_items: usize,
    /// Where the announcement landed.
    pub announcement_partition: i32,
    pub announcement_offset: i64,
    pub seconds: f64,
}

/// Everything to write, computed from a verified artifact (CPU only).
#[derive(Debug, Clone)]
pub struct Plan {
    pub version: ModelVersion,
    pub manifest_sha256: Sha256Hex,
    pub created_at: OffsetDateTime,
    pub path: PathBuf,
    pub popular: RecsList,
    pub by_category: BTreeMap<u64, RecsList>,
    pub similar: Vec<(ItemId, RecsList)>,
    pub skipped_items: usize,
}

/// Reads and verifies `dir` and computes its lists: the same popular lists
/// serving derives from the artifact (available items; per category by
/// training popularity) and every item's `similar_size` nearest items by
/// cosine of the item factors, unavailable neighbours left out.
pub fn plan(dir: &Path, cfg: &PublishConfig) -> Result<Plan, PublishError> {
    let art = Artifact::read(dir)?;
    let sha = artifact::manifest_sha256(dir)?;
    let bad = |m: String| PublishError::Unpublishable(m);
    let version = ModelVersion::parse(&art.manifest.version).map_err(|e| bad(e.to_string()))?;
    let manifest_sha256 = Sha256Hex::parse(&sha).map_err(|e| bad(e.to_string()))?;
    let created_at = OffsetDateTime::parse(&art.manifest.created_at, &Rfc3339)
        .map_err(|e| bad(format!("created_at {:?}: {e}", art.manifest.created_at)))?;
    let ids: Vec<Option<ItemId>> = art.items.iter().map(|r| ItemId::parse(&r.id).ok()).collect();
    let skipped_items = ids.iter().filter(|i| i.is_none()).count();
    let available: Vec<bool> = art.items.iter().map(|r| r.available != Some(false)).collect();
    let updated_ms = schemas::now_ms();
    let list = |scored: &mut dyn Iterator<Item = (u32, f32)>| RecsList {
        model: version.clone(),
        updated_ms,
        items: scored
            .filter_map(|(i, score)| ids[i as usize].clone().map(|item_id| RecItem { item_id, score }))
            .collect(),
    };
    let popular = list(
        &mut art
            .popular
            .ranked()
            .iter()
            .filter(|s| available[s.item as usize])
            .take(cfg.popular_size)
            .map(|s| (s.item, s.score)),
    );
    let mut by_cat: BTreeMap<u64, Vec<Scored>> = BTreeMap::new();
    for (i, r) in art.items.iter().enumerate() {
        if let (Some(c), true) = (r.category, available[i]) {
            if r.popularity > 0.0 && r.popularity.is_finite() {
                by_cat.entry(c).or_default().push(Scored { item: i as u32, score: r.popularity as f32 });
            }
        }
    }
    let by_category = by_cat
        .into_iter()
        .map(|(c, mut l)| {
            l.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
            l.truncate(cfg.popular_size);
            (c, list(&mut l.iter().map(|s| (s.item, s.score))))
        })
        .collect();
    let similar = if cfg.similar_size == 0 || art.items.len() < 2 {
        Vec::new()
    } else {
        model::similar::similar_items(&art.item_factors, cfg.similar_size)
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let id = ids[i].clone()?;
                Some((id, list(&mut l.iter().filter(|s| available[s.item as usize]).map(|s| (s.item, s.score)))))
            })
            .collect()
    };
    let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(Plan { version, manifest_sha256, created_at, path, popular, by_category, similar, skipped_items })
}

/// Redis and Kafka clients of a publication.
pub struct Publisher {
    conn: RedisConn,
    keys: RedisKeys,
    producer: FutureProducer,
    topic: String,
    cfg: PublishConfig,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("keys", &self.keys).field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects to Redis, creates the topics when missing (the local broker
    /// does not auto-create) and builds the announcement producer.
    pub async fn connect(s: &Settings) -> Result<Publisher, PublishError> {
        let redis_err = |source| PublishError::Redis { stage: "connect", source };
        let conn = common::redis_conn::connect(&s.redis).await.map_err(redis_err)?;
        let topic = s.kafka.topic(schemas::topics::MODELS);
        let kafka_err = |message: String| PublishError::Kafka { topic: topic.clone(), message };
        common::kafka::ensure_topics(&s.kafka, Duration::from_millis(s.trainer.publish.timeout_ms))
            .await
            .map_err(|e| kafka_err(format!("creating topics: {e:#}")))?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &s.kafka.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("client.id", "recsys-trainer")
            .set("message.timeout.ms", s.trainer.publish.timeout_ms.to_string())
            .create()
            .map_err(|e| kafka_err(e.to_string()))?;
        Ok(Publisher { conn, keys: s.redis.keys(), producer, topic, cfg: s.trainer.publish.clone() })
    }

    async fn run<T: redis::FromRedisValue>(
        &mut self,
        stage: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, PublishError> {
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        match tokio::time::timeout(timeout, pipe.query_async::<T>(&mut self.conn)).await {
            Ok(r) => r.map_err(|source| PublishError::Redis { stage, source }),
            Err(_) => Err(PublishError::RedisTimeout { stage, timeout }),
        }
    }

    /// SETs `(key, value)` pairs in pipelines of `batch`.
    async fn set_all(&mut self, stage: &'static str, kv: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        for chunk in kv.chunks(self.cfg.batch) {
            let mut p = redis::pipe();
            for (k, v) in chunk {
                p.cmd("SET").arg(k).arg(v.as_slice()).ignore();
            }
            self.run::<()>(stage, &p).await?;
        }
        Ok(())
    }

    /// Deletes keys matching `pattern` that are not in `keep` (walking every
    /// master of a Redis Cluster).
    async fn delete_stale(&mut self, pattern: &str, keep: &HashSet<String>) -> Result<usize, PublishError> {
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let stage = "scan";
        fn bounded<T>(
            r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
            stage: &'static str,
            timeout: Duration,
        ) -> Result<T, PublishError> {
            match r {
                Ok(r) => r.map_err(|source| PublishError::Redis { stage, source }),
                Err(_) => Err(PublishError::RedisTimeout { stage, timeout }),
            }
        }
        let targets = bounded(tokio::time::timeout(timeout, self.conn.scan_targets()).await, stage, timeout)?;
        let mut stale = Vec::new();
        for t in &targets {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys) = bounded(
                    tokio::time::timeout(timeout, self.conn.scan_step(t, cursor, pattern, 1000)).await,
                    stage,
                    timeout,
                )?;
                stale.extend(keys.into_iter().filter(|k| !keep.contains(k)));
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        stale.sort();
        stale.dedup();
        for chunk in stale.chunks(self.cfg.batch) {
            let mut p = redis::pipe();
            // One DEL per key: keys of several cluster slots.
            for k in chunk {
                p.cmd("DEL").arg(k).ignore();
            }
            self.run::<()>("delete stale lists", &p).await?;
        }
        Ok(stale.len())
    }

    /// Writes a plan (steps 2–5 of the module docs).
    pub async fn publish(&mut self, plan: &Plan) -> Result<PublishReport, PublishError> {
        let t = Instant::now();
        let keys = self.keys.clone();
        let mut kv: Vec<(String, Vec<u8>)> = vec![(keys.popular(), plan.popular.to_json())];
        kv.extend(plan.by_category.iter().map(|(c, l)| (keys.popular_category(*c), l.to_json())));
        let category_keys: HashSet<String> = kv.iter().skip(1).map(|(k, _)| k.clone()).collect();
        self.set_all("popular lists", &kv).await?;
        let sim: Vec<(String, Vec<u8>)> = plan.similar.iter().map(|(i, l)| (keys.similar(i), l.to_json())).collect();
        self.set_all("similar lists", &sim).await?;
        let similar_keys: HashSet<String> = sim.into_iter().map(|(k, _)| k).collect();
        let mut stale = self.delete_stale(&keys.popular_category_pattern(), &category_keys).await?;
        stale += self.delete_stale(&keys.similar_pattern(), &similar_keys).await?;

        let mut p = redis::pipe();
        p.cmd("SET").arg(keys.model_current()).arg(plan.version.as_str()).ignore();
        self.run::<()>("model:current", &p).await?;

        let a = ModelAnnouncement {
            version: plan.version.clone(),
            path: plan.path.display().to_string(),
            manifest_sha256: plan.manifest_sha256.clone(),
            created_at: plan.created_at,
        };
        let payload = a.to_json();
        let delivery = self
            .producer
            .send(
                FutureRecord::<[u8], [u8]>::to(&self.topic).key(ModelAnnouncement::KEY).payload(&payload),
                Timeout::After(Duration::from_millis(self.cfg.timeout_ms)),
            )
            .await
            .map_err(|(e, _)| PublishError::Kafka { topic: self.topic.clone(), message: e.to_string() })?;

        let published = Published {
            version: plan.version.to_string(),
            manifest_sha256: plan.manifest_sha256.to_string(),
            published_ms: schemas::now_ms(),
        };
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(keys.model_published())
            .arg(serde_json::to_vec(&published).map_err(|e| PublishError::Unpublishable(e.to_string()))?)
            .ignore();
        self.run::<()>("model:published", &p).await?;
        let report = PublishReport {
            version: plan.version.to_string(),
            manifest_sha256: plan.manifest_sha256.to_string(),
            popular_items: plan.popular.items.len(),
            category_lists: plan.by_category.len(),
            similar_lists: plan.similar.len(),
            stale_deleted: stale,
            skipped_items: plan.skipped_items,
            announcement_partition: delivery.partition,
            announcement_offset: delivery.offset,
            seconds: t.elapsed().as_secs_f64(),
        };
        tracing::info!(?report, "model published");
        Ok(report)
    }

    /// What `model:published` says (`None` when absent or unreadable).
    pub async fn published(&mut self) -> Result<Option<Published>, PublishError> {
        let mut p = redis::pipe();
        p.cmd("GET").arg(self.keys.model_published());
        let (v,): (Option<Vec<u8>>,) = self.run("model:published", &p).await?;
        Ok(v.and_then(|b| serde_json::from_slice(&b).ok()))
    }
}

/// Plans (on a blocking thread: reading, verifying and the similar lists are
/// CPU work) and publishes `{root}/{version}`.
pub async fn publish_version(s: &Settings, root: &Path, version: &str) -> Result<PublishReport, PublishError> {
    let dir = root.join(version);
    let cfg = s.trainer.publish.clone();
    let plan = tokio::task::spawn_blocking(move || plan(&dir, &cfg))
        .await
        .map_err(|e| PublishError::Unpublishable(format!("planning task: {e}")))??;
    let mut p = Publisher::connect(s).await?;
    p.publish(&plan).await
}

/// Re-publishes `CURRENT` when `model:published` does not name it with the
/// same manifest (a publication cut short by a crash or an outage). Returns
/// the report when it published.
pub async fn reconcile(s: &Settings, root: &Path) -> Result<Option<PublishReport>, PublishError> {
    let Some(current) = artifact::current_version(root)? else { return Ok(None) };
    let sha = artifact::manifest_sha256(&root.join(&current))?;
    let mut p = Publisher::connect(s).await?;
    if p.published().await?.is_some_and(|pb| pb.version == current && pb.manifest_sha256 == sha) {
        return Ok(None);
    }
    tracing::warn!(version = %current, "CURRENT was not completely published: publishing it again");
    let dir = root.join(&current);
    let cfg = s.trainer.publish.clone();
    let plan = tokio::task::spawn_blocking(move || plan(&dir, &cfg))
        .await
        .map_err(|e| PublishError::Unpublishable(format!("planning task: {e}")))??;
    p.publish(&plan).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synthetic::{synthetic_artifact, SyntheticSpec};

    #[test]
    fn plan_matches_the_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = synthetic_artifact(&SyntheticSpec { items: 60, ..SyntheticSpec::default() });
        // One unavailable item: in no list.
        a.items[0].available = Some(false);
        let path = a.write(dir.path()).unwrap();
        let cfg = PublishConfig { popular_size: 10, similar_size: 5, ..PublishConfig::default() };
        let p = plan(&path, &cfg).unwrap();
        assert_eq!(p.version.as_str(), "v1");
        assert_eq!(p.manifest_sha256.as_str(), artifact::manifest_sha256(&path).unwrap());
        assert_eq!(p.popular.items.len(), 10);
        let unavailable = &a.items[0].id;
        assert!(p.popular.items.iter().all(|i| i.item_id.as_str() != unavailable));
        assert!(!p.by_category.is_empty());
        for l in p.by_category.values() {
            assert!(l.items.windows(2).all(|w| w[0].score >= w[1].score));
        }
        assert_eq!(p.similar.len(), 60);
        for (item, l) in &p.similar {
            assert!(l.items.len() <= 5);
            assert!(l.items.iter().all(|i| &i.item_id != item && i.item_id.as_str() != unavailable));
        }
        let none = plan(&path, &PublishConfig { similar_size: 0, ..cfg }).unwrap();
        assert!(none.similar.is_empty());
    }
}
