//! The trainer's catalog from the catalog stream, against the real broker
//! (`RECSYS_TEST_KAFKA`) — what makes the category re-rank and the
//! unavailable-item rule work in `--from-kafka` mode without item-properties
//! files: a generated log's events are replayed into `recsys.events` and its
//! item-properties files into `recsys.items` (`recsys-ingest replay` and
//! `replay-items`); the model trained from the topics alone knows the same
//! category and availability of every item as the model trained from the
//! files, and its manifest says where the catalog came from.
//!
//! A missing broker fails the test unless `RECSYS_SKIP_BROKER_TESTS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use e2e::*;
use ingest::replay::Pace;
use model::artifact::Artifact;

fn items(a: &Artifact) -> BTreeMap<String, (Option<u64>, Option<bool>)> {
    a.items.iter().map(|i| (i.id.clone(), (i.category, i.available))).collect()
}

fn train(cfg: &Path, data_dir: Option<&Path>, from_kafka: bool, version: &str) -> Artifact {
    let s = common::load_layered::<batch_trainer::config::Settings>(Some(cfg), no_env()).unwrap();
    let root = s.model.artifacts_dir.join(version);
    let src = batch_trainer::nightly::Source { data_dir: data_dir.map(Path::to_path_buf), from_kafka };
    let r = batch_trainer::nightly::train_run(&s, &src, &root, Some(version.into()), false, false).unwrap();
    assert!(r.train.promoted, "{:?}", r.train.verdict);
    Artifact::read(&root.join(version)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_kafka_the_trainer_reads_categories_and_availability_from_the_catalog_topic() {
    let Some(brokers) = broker() else { return };
    let tag = tag();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &brokers, &tag, &[]);
    let s = common::config::load_settings::<ingest::config::Settings>(Some(&cfg), no_env()).unwrap();
    common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();

    let data = dir.path().join("data");
    datagen::generate(&datagen::GenerateConfig::new(20_000, 5), &data, None).unwrap();
    let producer = ingest::kafka::producer(&s).unwrap();
    let events = ingest::replay::ReplayOptions { file: data.join("events.csv"), pace: Pace::Max, progress: false };
    let sent = ingest::replay::replay(&s, &producer, &events).await.unwrap();
    assert_eq!((sent.sent, sent.failed), (20_000, 0), "{sent:?}");
    let parts: Vec<_> = ["item_properties_part1.csv", "item_properties_part2.csv"].map(|f| data.join(f)).into();
    let opts = ingest::replay_items::ItemsOptions { files: parts, pace: Pace::Max, progress: false };
    let replayed = ingest::replay_items::replay_items(&s, &producer, &opts).await.unwrap();
    assert!(replayed.sent > 0 && replayed.failed == 0 && replayed.rejected == 0, "{replayed:?}");

    let (cfg2, data2) = (cfg.clone(), data.clone());
    let (from_files, from_topics) = tokio::task::spawn_blocking(move || {
        (train(&cfg2, Some(&data2), false, "files"), train(&cfg2, None, true, "topics"))
    })
    .await
    .unwrap();

    let topic = s.kafka.topic(schemas::topics::ITEMS);
    assert_eq!(from_topics.manifest.data.catalog, Some(format!("kafka:{topic}")));
    assert_eq!(from_files.manifest.data.catalog, Some(format!("{}/item_properties*.csv", data.display())));
    let (a, b) = (items(&from_files), items(&from_topics));
    assert_eq!(a.len(), b.len(), "the same items have events");
    let with_category = a.values().filter(|m| m.0.is_some()).count();
    let unavailable = a.values().filter(|m| m.1 == Some(false)).count();
    assert!(with_category > a.len() / 2 && unavailable > 0, "{with_category} categorised, {unavailable} unavailable");
    let differ: Vec<_> = a.iter().filter(|(id, m)| b.get(*id) != Some(m)).take(5).collect();
    assert!(differ.is_empty(), "items whose catalog differs between files and topic: {differ:?}");

    let keys = common::config::load_settings::<updater::config::Settings>(Some(&cfg), no_env()).unwrap();
    cleanup_redis(&keys.redis.prefix).await;
}
