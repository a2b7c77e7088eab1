//! `recsys-updater verify`: the user histories in Redis checked against the
//! events topic, the log they were built from.
//!
//! Every partition of the events topic is read from its first offset to the
//! end it had when the check started; each message is decoded exactly as the
//! apply step decodes it (what the updater dead-letters is not expected in a
//! history), and counted per user, item and event kind. Then each of those
//! users' `hist:{user}` is read and compared count by count: a count below the
//! log's is events **lost**, above it events **applied twice**.
//!
//! The answer is exact when the topic still holds every event the histories
//! were built from (retention longer than the histories' life) and no history
//! was trimmed or expired: a user with more distinct items in the log than
//! `history_max_items` has had items evicted on purpose and is reported as
//! not comparable instead of compared. Users with a history but no event in
//! the topic are not looked for. Each partition's resume point is printed
//! beside its end, so a lagging updater (its not-yet-applied events would
//! count as lost) is told from a lossy one. Memory: one map entry per (user,
//! item) pair of the topic.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::{now_ms, ItemId, UserId};

use crate::config::Settings;
use crate::store::read_histories;

/// Users read from Redis per pipelined round trip, and round trips in flight.
const USERS_PER_READ: usize = 500;
const READS_IN_FLIGHT: usize = 8;
/// Mismatches quoted in the report.
const EXAMPLES: usize = 10;

/// One partition of the events topic as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRead {
    pub partition: i32,
    /// First offset read (the log start).
    pub from: i64,
    /// The end when the check started: offsets `from..end` were read.
    pub end: i64,
    /// The updater's resume point in Redis: the last offset applied, if any.
    pub applied_up_to: Option<i64>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub topic: String,
    pub partitions: Vec<PartitionRead>,
    /// Messages read from the topic.
    pub messages: u64,
    /// Of them, events the updater applies (the rest it dead-letters).
    pub events: u64,
    /// Users compared, and users not comparable (their history is trimmed by
    /// `history_max_items`).
    pub users: u64,
    pub users_trimmed: u64,
    /// Events of compared users missing from their histories, and counted
    /// more often than the log holds them.
    pub lost: u64,
    pub doubled: u64,
    /// Users with at least one lost / doubled event.
    pub users_lost: u64,
    pub users_doubled: u64,
    /// The first mismatches, for a human.
    pub examples: Vec<String>,
}

impl Report {
    /// Nothing lost, nothing applied twice.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.doubled == 0
    }

    /// Every partition's resume point is at its end.
    pub fn caught_up(&self) -> bool {
        self.partitions.iter().all(|p| p.end == p.from || p.applied_up_to == Some(p.end - 1))
    }

    /// The report for a terminal; the last line is `lost N, applied twice M`.
    pub fn render(&self) -> String {
        let mut out = format!("topic {}\n", self.topic);
        for p in &self.partitions {
            let applied = p.applied_up_to.map_or_else(|| "nothing".to_owned(), |o| format!("offset {o}"));
            out += &format!(
                "  partition {:>3}: offsets {}..{} read, applied up to {applied}{}\n",
                p.partition,
                p.from,
                p.end,
                if p.end > p.from && p.applied_up_to != Some(p.end - 1) { " (behind its end)" } else { "" }
            );
        }
        out += &format!(
            "{} messages, {} events the updater applies ({} it dead-letters)\n",
            self.messages,
            self.events,
            self.messages - self.events
        );
        out += &format!(
            "{} users compared, {} not comparable (more distinct items than history_max_items)\n",
            self.users, self.users_trimmed
        );
        for e in &self.examples {
            out += &format!("  {e}\n");
        }
        if !self.caught_up() {
            out += "the updater is behind the topic's end: its unapplied events count as lost\n";
        }
        out += &format!(
            "lost {} ({} users), applied twice {} ({} users)\n",
            self.lost, self.users_lost, self.doubled, self.users_doubled
        );
        out
    }
}

/// user → item → events per kind, from the log.
type LogCounts = HashMap<UserId, HashMap<ItemId, [u32; 3]>>;

/// Reads the events topic and compares the histories in Redis with it.
pub async fn verify(settings: &Settings) -> anyhow::Result<Report> {
    let topic = settings.kafka.topic(schemas::topics::EVENTS);
    let (brokers, t) = (settings.kafka.brokers.clone(), topic.clone());
    let (mut partitions, counts, messages) =
        tokio::task::spawn_blocking(move || read_log(&brokers, &t)).await.context("the topic reader panicked")??;
    let events: u64 =
        counts.values().flat_map(|items| items.values()).map(|c| c.iter().map(|&n| n as u64).sum::<u64>()).sum();
    if events == 0 {
        anyhow::bail!("topic {topic} holds no event the updater applies ({messages} messages): nothing to verify");
    }

    let mut conn = common::redis_conn::connect(&settings.redis).await.context("connecting to Redis")?;
    let keys = settings.redis.keys();
    for p in &mut partitions {
        p.applied_up_to = redis::cmd("GET")
            .arg(keys.offsets(&topic, p.partition))
            .query_async(&mut conn)
            .await
            .with_context(|| format!("reading the resume point of partition {}", p.partition))?;
    }

    let mut report = Report { topic, partitions, messages, events, ..Report::default() };
    let cap = settings.updater.history_max_items;
    let mut users: Vec<&UserId> = Vec::with_capacity(counts.len());
    for (u, items) in &counts {
        if items.len() > cap {
            report.users_trimmed += 1;
        } else {
            users.push(u);
        }
    }
    users.sort();
    let histories: Vec<_> = stream::iter(users.chunks(USERS_PER_READ).map(|chunk| {
        let (mut conn, keys) = (conn.clone(), keys.clone());
        let chunk: Vec<UserId> = chunk.iter().map(|u| (*u).clone()).collect();
        async move { read_histories(&mut conn, &keys, &chunk).await }
    }))
    .buffered(READS_IN_FLIGHT)
    .try_collect()
    .await
    .context("reading the histories")?;

    for h in histories.into_iter().flatten() {
        report.users += 1;
        let log = &counts[&h.user];
        let stored: HashMap<&ItemId, [u32; 3]> = h.items.iter().map(|(i, e)| (i, e.counts)).collect();
        let (mut lost, mut doubled) = (0u64, 0u64);
        let mut compare = |item: &ItemId, want: [u32; 3], got: [u32; 3]| {
            if want == got {
                return;
            }
            for k in 0..3 {
                lost += want[k].saturating_sub(got[k]) as u64;
                doubled += got[k].saturating_sub(want[k]) as u64;
            }
            if report.examples.len() < EXAMPLES {
                report.examples.push(format!(
                    "user {} item {}: the log holds {} (views, carts, purchases), the history {}",
                    h.user,
                    item,
                    triple(want),
                    triple(got)
                ));
            }
        };
        for (item, want) in log {
            compare(item, *want, stored.get(item).copied().unwrap_or_default());
        }
        for (item, got) in &stored {
            if !log.contains_key(*item) {
                compare(item, [0; 3], *got);
            }
        }
        report.lost += lost;
        report.doubled += doubled;
        report.users_lost += u64::from(lost > 0);
        report.users_doubled += u64::from(doubled > 0);
    }
    Ok(report)
}

fn triple(c: [u32; 3]) -> String {
    format!("{}/{}/{}", c[0], c[1], c[2])
}

/// Every partition of `topic` from its start to its current end, counted.
fn read_log(brokers: &str, topic: &str) -> anyhow::Result<(Vec<PartitionRead>, LogCounts, u64)> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    // Assigned, not subscribed: nothing is committed, no group is joined.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("recsys-verify-{}", std::process::id()))
        .set("client.id", "recsys-updater-verify")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .context("creating the Kafka consumer")?;
    let md =
        consumer.fetch_metadata(Some(topic), TIMEOUT).with_context(|| format!("reading the metadata of {topic}"))?;
    let mut ids: Vec<i32> = md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    ids.sort_unstable();
    if ids.is_empty() {
        anyhow::bail!("topic {topic} does not exist on {brokers}");
    }
    let mut parts = Vec::with_capacity(ids.len());
    let mut assignment = TopicPartitionList::new();
    let mut pending: HashMap<i32, i64> = HashMap::new();
    for p in ids {
        let (from, end) = consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .with_context(|| format!("reading the offsets of {topic} partition {p}"))?;
        parts.push(PartitionRead { partition: p, from, end, applied_up_to: None });
        if end > from {
            assignment.add_partition_offset(topic, p, Offset::Offset(from))?;
            pending.insert(p, end);
        }
    }
    consumer.assign(&assignment).context("assigning the partitions")?;

    let mut counts = LogCounts::new();
    let mut messages = 0u64;
    let mut last_progress = Instant::now();
    while !pending.is_empty() {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            if last_progress.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("no message from {topic} for 30 s with partitions {:?} unfinished", pending.keys());
            }
            continue;
        };
        let m = m.with_context(|| format!("reading {topic}"))?;
        last_progress = Instant::now();
        let Some(&end) = pending.get(&m.partition()) else { continue };
        if m.offset() >= end {
            pending.remove(&m.partition());
            continue;
        }
        messages += 1;
        let received = m.timestamp().to_millis().unwrap_or_else(now_ms);
        if let Ok(ev) = crate::pipeline::decode_one(m.payload().unwrap_or_default(), m.key(), received) {
            let c = counts.entry(ev.user_id().clone()).or_default().entry(ev.item_id().clone()).or_default();
            c[ev.kind().index()] += 1;
        }
        if m.offset() + 1 >= end {
            pending.remove(&m.partition());
        }
    }
    Ok((parts, counts, messages))
}
