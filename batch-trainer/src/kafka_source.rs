//! The event log from Kafka: `recsys.events` from the start (or from where an
//! archived CSV ends) up to the high watermarks taken when the read starts.
//!
//! - **Bounded.** The end of every partition is fixed before the first fetch, so
//!   events produced while the trainer reads are left for the next run, and the
//!   manifest can say exactly which offsets a model was trained on.
//! - **No consumer group.** Partitions are assigned explicitly and no offset is
//!   ever committed: the trainer must not move the updater's group, nor leave one
//!   of its own behind.
//! - **Same data as the CSV.** Each message is parsed with [`schemas::Event`]
//!   (the updater's rules: a message whose key is not its `user_id` is refused,
//!   as the updater dead-letters it). A message that fails is counted by reason
//!   and the first few are reported with their position, never silently
//!   dropped. Then the CSV loader's cleaning applies: the accepted time range
//!   (`bad_timestamp`) and exact duplicates (`duplicate`).
//! - **Order.** Partitions are merged by event time (ties: lower partition
//!   first), each partition in offset order. A user's events are in one
//!   partition (key = user id), so their order is kept; for a log in time order
//!   (what `generate` writes and `ingest replay` sends) the merge reproduces
//!   the file's order, and with it the CSV's pair and factor-row order.
//!
//! # Archive + topic
//!
//! A data directory used together with the topic must say which topic events
//! it already holds, in `kafka_offsets.json` beside `events.csv`
//! ([`ArchiveOffsets`]): `{"topic": "recsys.events", "offsets": {"0": 1200, "1": 980}}`
//! means the archive holds every event of partition 0 below offset 1200 and of
//! partition 1 below 980. The topic is then read from those offsets; a
//! partition not listed is read from its start; `{"offsets": {}}` declares an
//! archive older than the topic. Without the file the combination is refused,
//! because reading the whole topic on top of a CSV that was replayed into it
//! would count every event twice. For a CSV that was replayed into the topic
//! (`ingest replay`), the offsets are the topic's end offsets right after the
//! replay; for history that never went through the topic, `{}`.

use std::collections::{BTreeMap, BinaryHeap};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use model::artifact::TopicOffset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::{Event, EventLimits, ItemUpdate};
use serde::{Deserialize, Serialize};

use crate::data::{EventLog, IdNames, ItemProperty, ItemPropertyLog, LoadReport, PropertyValue, RawEvent};
use crate::load::LoadOptions;

/// The sidecar of an archived `events.csv`.
pub const ARCHIVE_OFFSETS_FILE: &str = "kafka_offsets.json";

/// How many rejected messages are reported with their position.
const SAMPLES: usize = 10;

/// How to reach the topic.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Full topic name (prefix included).
    pub topic: String,
    /// Metadata and watermark requests.
    pub request_timeout: Duration,
    /// Longest wait for the next message before the read is declared stalled.
    pub idle_timeout: Duration,
}

/// `kafka_offsets.json`: what part of the topic an archived `events.csv` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveOffsets {
    /// Topic name without the environment prefix (`recsys.events`).
    pub topic: String,
    /// Partition → first offset *not* in the archive.
    pub offsets: BTreeMap<i32, i64>,
}

impl ArchiveOffsets {
    /// Reads `dir/kafka_offsets.json`; `Ok(None)` when it does not exist.
    pub fn read(dir: &Path) -> Result<Option<ArchiveOffsets>, KafkaReadError> {
        let path = dir.join(ARCHIVE_OFFSETS_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(KafkaReadError::Archive(format!("{}: {e}", path.display()))),
        };
        let a: ArchiveOffsets =
            serde_json::from_slice(&bytes).map_err(|e| KafkaReadError::Archive(format!("{}: {e}", path.display())))?;
        if let Some((p, o)) = a.offsets.iter().find(|(p, o)| **p < 0 || **o < 0) {
            return Err(KafkaReadError::Archive(format!("{}: negative partition or offset {p}: {o}", path.display())));
        }
        Ok(Some(a))
    }

    /// Writes `dir/kafka_offsets.json` (temporary file + rename).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(ARCHIVE_OFFSETS_FILE);
        let tmp = dir.join(format!(".{ARCHIVE_OFFSETS_FILE}.tmp"));
        fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        fs::rename(&tmp, &path)
    }
}

/// Why the topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KafkaReadError {
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
    #[error("topic {0} does not exist (or has no partitions)")]
    NoTopic(String),
    #[error("archive offsets: {0}")]
    Archive(String),
    #[error(
        "partition {partition}: the archive ends at offset {archive_end} but the topic starts at {low}: \
         the events in between were deleted by retention and are in neither"
    )]
    Gap { partition: i32, archive_end: i64, low: i64 },
    #[error(
        "partition {partition}: the archive claims offsets up to {archive_end} but the topic ends at {high}: \
         the archive is not from this topic"
    )]
    AheadOfTopic { partition: i32, archive_end: i64, high: i64 },
    #[error("no message for {idle:?} while partitions {pending:?} had not reached their end offsets")]
    Stalled { idle: Duration, pending: Vec<i32> },
}

/// One partition's range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionRange {
    pub partition: i32,
    /// First offset read.
    pub start: i64,
    /// High watermark at the start of the read: first offset not read.
    pub end: i64,
    /// Messages read.
    pub messages: u64,
}

/// A message that is not a valid event, with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

/// What was read and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KafkaReport {
    pub topic: String,
    pub partitions: Vec<PartitionRange>,
    /// Messages read in all.
    pub messages: u64,
    /// Messages that are not valid events (by reason code).
    pub invalid: BTreeMap<String, u64>,
    /// The first few invalid messages.
    pub samples: Vec<Rejected>,
    /// Events whose transaction id is not a number (kept; they cannot be archived as CSV).
    pub named_transactions: u64,
}

impl KafkaReport {
    /// Invalid messages in all.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.values().sum()
    }

    /// Where the model's data ends, for the manifest.
    pub fn offsets(&self) -> Vec<TopicOffset> {
        self.partitions
            .iter()
            .map(|p| TopicOffset {
                topic: self.topic.clone(),
                partition: p.partition,
                offset: p.end,
                start_offset: p.start,
            })
            .collect()
    }
}

/// Events read from the topic.
#[derive(Debug, Clone, Default)]
pub struct KafkaEvents {
    pub log: EventLog,
    pub report: KafkaReport,
}

/// One message in the merge: ordered by (ts, partition) with the smallest first.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    ts: i64,
    partition_slot: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse for the smallest (ts, partition).
        (other.ts, other.partition_slot).cmp(&(self.ts, self.partition_slot))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Merges per-partition event lists (each in offset order) by event time,
/// ties to the lower partition; within a partition the order never changes,
/// even where its times go backwards.
pub fn merge_by_time(per_partition: Vec<Vec<RawEvent>>) -> Vec<RawEvent> {
    let total = per_partition.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut pos = vec![0usize; per_partition.len()];
    let mut heap = BinaryHeap::new();
    for (slot, evs) in per_partition.iter().enumerate() {
        if let Some(e) = evs.first() {
            heap.push(Head { ts: e.ts, partition_slot: slot });
        }
    }
    while let Some(Head { partition_slot: slot, .. }) = heap.pop() {
        let evs = &per_partition[slot];
        out.push(evs[pos[slot]]);
        pos[slot] += 1;
        if let Some(e) = evs.get(pos[slot]) {
            heap.push(Head { ts: e.ts, partition_slot: slot });
        }
    }
    out
}

fn consumer(src: &KafkaSource) -> Result<BaseConsumer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &src.brokers)
        // Required by librdkafka for a consumer, but never joined (assign, not
        // subscribe) and never committed to.
        .set("group.id", "recsys-trainer-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("client.id", "recsys-trainer")
        .create()
}

/// Reads `src.topic` from `start` (partition → first offset; absent = the
/// partition's start) up to the high watermarks taken now, handing every
/// message in range to `on` with its partition's slot in the returned
/// ranges (sorted by partition). The one read loop of both topics.
fn read_bounded(
    src: &KafkaSource,
    start: &BTreeMap<i32, i64>,
    progress: &ProgressBar,
    report: &mut KafkaReport,
    mut on: impl FnMut(usize, &BorrowedMessage<'_>, &mut KafkaReport),
) -> Result<Vec<PartitionRange>, KafkaReadError> {
    let c = consumer(src)?;
    let md = c.fetch_metadata(Some(&src.topic), src.request_timeout)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == src.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaReadError::NoTopic(src.topic.clone()));
    }
    let mut ranges = Vec::new();
    for &p in &partitions {
        let (low, high) = c.fetch_watermarks(&src.topic, p, src.request_timeout)?;
        let begin = match start.get(&p) {
            Some(&archive_end) if archive_end > high => {
                return Err(KafkaReadError::AheadOfTopic { partition: p, archive_end, high })
            }
            Some(&archive_end) if archive_end < low => {
                return Err(KafkaReadError::Gap { partition: p, archive_end, low })
            }
            Some(&archive_end) => archive_end,
            None => low,
        };
        ranges.push(PartitionRange { partition: p, start: begin, end: high, messages: 0 });
    }
    if let Some(p) = start.keys().find(|p| !partitions.contains(p)) {
        return Err(KafkaReadError::Archive(format!(
            "the archive lists partition {p}, which topic {} does not have",
            src.topic
        )));
    }
    ranges.sort_by_key(|r| r.partition);
    let total: u64 = ranges.iter().map(|r| (r.end - r.start) as u64).sum();
    progress.set_length(total);
    tracing::info!(topic = %src.topic, ?ranges, total, "reading the topic");

    let mut tpl = TopicPartitionList::new();
    for r in ranges.iter().filter(|r| r.start < r.end) {
        tpl.add_partition_offset(&src.topic, r.partition, Offset::Offset(r.start))?;
    }
    let slot_of: BTreeMap<i32, usize> = ranges.iter().enumerate().map(|(i, r)| (r.partition, i)).collect();
    let mut pending: Vec<bool> = ranges.iter().map(|r| r.start < r.end).collect();
    if pending.iter().any(|p| *p) {
        c.assign(&tpl)?;
    }
    let mut last_progress = Instant::now();
    while pending.iter().any(|p| *p) {
        let Some(msg) = c.poll(Duration::from_millis(200)) else {
            if last_progress.elapsed() > src.idle_timeout {
                let pending = ranges.iter().zip(&pending).filter(|(_, p)| **p).map(|(r, _)| r.partition).collect();
                return Err(KafkaReadError::Stalled { idle: src.idle_timeout, pending });
            }
            continue;
        };
        let msg = msg?;
        last_progress = Instant::now();
        let Some(&slot) = slot_of.get(&msg.partition()) else { continue };
        let r = &mut ranges[slot];
        // Messages past the end taken at the start belong to the next run.
        if msg.offset() >= r.end || msg.offset() < r.start {
            continue;
        }
        r.messages += 1;
        report.messages += 1;
        progress.inc(1);
        if msg.offset() + 1 >= r.end {
            pending[slot] = false;
        }
        on(slot, &msg, report);
    }
    drop(c);
    progress.finish_and_clear();
    Ok(ranges)
}

/// Counts a message that could not be used, keeping the first few with their position.
fn reject(report: &mut KafkaReport, msg: &BorrowedMessage<'_>, code: &str, reason: String) {
    *report.invalid.entry(code.to_owned()).or_default() += 1;
    if report.samples.len() < SAMPLES {
        report.samples.push(Rejected { partition: msg.partition(), offset: msg.offset(), reason });
    }
}

/// Reads the event topic from `start` (partition → first offset; absent = the
/// partition's start) up to the high watermarks taken now.
///
/// `names` interns ids that are not plain numbers (shared with the rest of the
/// data set); `progress` counts messages.
pub fn read_events(
    src: &KafkaSource,
    start: &BTreeMap<i32, i64>,
    opts: &LoadOptions,
    names: &mut IdNames,
    progress: &ProgressBar,
) -> Result<KafkaEvents, KafkaReadError> {
    let mut per_partition: Vec<Vec<RawEvent>> = Vec::new();
    let mut report = KafkaReport { topic: src.topic.clone(), ..KafkaReport::default() };
    let mut load = LoadReport { file: format!("kafka:{}", src.topic).into(), ..LoadReport::default() };
    let limits = EventLimits { min_ts: 0, ..EventLimits::default() };
    let now = schemas::now_ms();
    let ranges = read_bounded(src, start, progress, &mut report, |slot, msg, report| {
        if per_partition.len() <= slot {
            per_partition.resize_with(slot + 1, Vec::new);
        }
        let payload = msg.payload().unwrap_or_default();
        // An absent `ts` means the time of ingest: the record's own timestamp.
        let received = msg.timestamp().to_millis().unwrap_or(now);
        let ev = match Event::parse_json_with(payload, received, &limits) {
            Ok(ev) => ev,
            Err(e) => return reject(report, msg, e.code(), e.to_string()),
        };
        if msg.key().is_some_and(|k| k != ev.user_id().as_str().as_bytes()) {
            let reason = format!(
                "message key {:?} is not the event's user_id {:?}",
                String::from_utf8_lossy(msg.key().unwrap_or_default()),
                ev.user_id().as_str()
            );
            return reject(report, msg, "key_mismatch", reason);
        }
        load.rows += 1;
        if ev.ts() < opts.min_ts || ev.ts() >= opts.max_ts {
            load.bad_timestamp += 1;
            return;
        }
        let txn = ev.transaction_id().map(|t| {
            // Only used to tell exact duplicates apart: a number when it is one,
            // else a stable hash of the text.
            t.as_str().parse::<u64>().unwrap_or_else(|_| {
                report.named_transactions += 1;
                fnv1a(t.as_str().as_bytes())
            })
        });
        per_partition[slot].push(RawEvent {
            ts: ev.ts(),
            user: names.user(ev.user_id().as_str()),
            item: names.item(ev.item_id().as_str()),
            kind: ev.kind(),
            txn,
        });
    })?;
    per_partition.resize_with(ranges.len(), Vec::new);
    let log = crate::load::finish_events(merge_by_time(per_partition), load);
    report.partitions = ranges;
    if report.invalid_total() > 0 {
        tracing::warn!(invalid = report.invalid_total(), reasons = ?report.invalid, "invalid messages in the event topic");
    }
    Ok(KafkaEvents { log, report })
}

/// The catalog read from `recsys.items`.
#[derive(Debug, Clone, Default)]
pub struct KafkaCatalog {
    /// The `categoryid` / `available` values of every update, as the
    /// item-properties files give them (the latest per item at the split's
    /// cutoff is then taken by `preprocess::item_metadata`, as for the files).
    pub log: ItemPropertyLog,
    pub report: KafkaReport,
}

/// Reads the whole catalog topic (compacted: the latest patches of every
/// item, and whatever older ones compaction has not removed yet) up to the
/// high watermarks taken now. `Ok(None)` when the topic does not exist (a
/// deployment that never had one trains without a catalog, as from a
/// directory without item-properties files).
///
/// Each message is parsed with [`schemas::ItemUpdate`] (ingest's rules; a key
/// that does not fit it, [`schemas::ItemUpdate::fits_key`], is refused); a bad one is counted by code with
/// its position, never silently dropped. An update without `available` or
/// `category` (price or properties only) adds nothing the trainer uses.
pub fn read_catalog(
    src: &KafkaSource,
    names: &mut IdNames,
    progress: &ProgressBar,
) -> Result<Option<KafkaCatalog>, KafkaReadError> {
    let mut report = KafkaReport { topic: src.topic.clone(), ..KafkaReport::default() };
    let mut rows = Vec::new();
    let (mut valid, mut used) = (0u64, 0u64);
    let limits = EventLimits { min_ts: 0, ..EventLimits::default() };
    let now = schemas::now_ms();
    let read = read_bounded(src, &BTreeMap::new(), progress, &mut report, |_, msg, report| {
        let received = msg.timestamp().to_millis().unwrap_or(now);
        let u = match ItemUpdate::parse_json(msg.payload().unwrap_or_default(), received, &limits) {
            Ok(u) => u,
            Err(e) => return reject(report, msg, e.code(), e.to_string()),
        };
        if msg.key().is_some_and(|k| !u.fits_key(k)) {
            let reason = format!(
                "message key {:?} is neither the update's item_id {:?} nor `{{item_id}}/{{field}}` of its one field",
                String::from_utf8_lossy(msg.key().unwrap_or_default()),
                u.item_id().as_str()
            );
            return reject(report, msg, "key_mismatch", reason);
        }
        valid += 1;
        if u.category().is_none() && u.available().is_none() {
            return;
        }
        used += 1;
        let item = names.item(u.item_id().as_str());
        if let Some(c) = u.category() {
            rows.push(ItemProperty { ts: u.ts(), item, value: PropertyValue::Category(c) });
        }
        if let Some(a) = u.available() {
            rows.push(ItemProperty { ts: u.ts(), item, value: PropertyValue::Available(a) });
        }
    });
    let ranges = match read {
        Err(KafkaReadError::NoTopic(topic)) => {
            tracing::info!(%topic, "no catalog topic: training without live catalog data");
            return Ok(None);
        }
        r => r?,
    };
    report.partitions = ranges;
    if report.invalid_total() > 0 {
        tracing::warn!(invalid = report.invalid_total(), reasons = ?report.invalid, "invalid messages in the catalog topic");
    }
    // As for a properties file: updates read, those that set nothing the
    // trainer uses (price, free properties) skipped, the others kept.
    let file = format!("kafka:{}", src.topic);
    let load =
        LoadReport { file: file.into(), rows: valid, skipped: valid - used, kept: used, ..LoadReport::default() };
    Ok(Some(KafkaCatalog { log: ItemPropertyLog { rows, reports: vec![load] }, report }))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::EventKind;

    fn ev(ts: i64, user: u64) -> RawEvent {
        RawEvent { ts, user, item: 1, kind: EventKind::View, txn: None }
    }

    #[test]
    fn merge_orders_by_time_ties_to_lower_partition_and_keeps_partition_order() {
        let p0 = vec![ev(1, 10), ev(5, 11), ev(3, 12)];
        let p1 = vec![ev(1, 20), ev(2, 21), ev(9, 22)];
        let users: Vec<u64> = merge_by_time(vec![p0, p1]).iter().map(|e| e.user).collect();
        // p0's 3 stays after its 5 (one partition's order is never changed).
        assert_eq!(users, vec![10, 20, 21, 11, 12, 22]);
        assert!(merge_by_time(vec![vec![], vec![]]).is_empty());
    }

    #[test]
    fn archive_offsets_round_trip_and_refuse_nonsense() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ArchiveOffsets::read(dir.path()).unwrap(), None);
        let a = ArchiveOffsets { topic: "recsys.events".into(), offsets: BTreeMap::from([(0, 12), (2, 0)]) };
        a.write(dir.path()).unwrap();
        assert_eq!(ArchiveOffsets::read(dir.path()).unwrap(), Some(a));
        let text = std::fs::read_to_string(dir.path().join(ARCHIVE_OFFSETS_FILE)).unwrap();
        assert!(text.contains("\"0\": 12"), "{text}");
        std::fs::write(dir.path().join(ARCHIVE_OFFSETS_FILE), r#"{"topic":"t","offsets":{"0":-1}}"#).unwrap();
        assert!(ArchiveOffsets::read(dir.path()).is_err());
        std::fs::write(dir.path().join(ARCHIVE_OFFSETS_FILE), r#"{"topic":"t","offsets":{},"x":1}"#).unwrap();
        assert!(ArchiveOffsets::read(dir.path()).is_err());
    }
}
