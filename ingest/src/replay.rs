//! `recsys-ingest replay FILE.csv`: a CSV event log into `recsys.events`.
//!
//! The file is read by the trainer's reader, [`schemas::csv::EventReader`]:
//! columns by name (RetailRocket's `timestamp,visitorid,event,itemid,
//! transactionid`, the API's names, or `ingest.replay_columns`), quoting, the
//! clock detected from the values (`ingest.replay_time_unit`), and the same row
//! rules and rejection reasons as `recsys-trainer`, so both count the same
//! rejections for the same file. On top, the API's time window
//! (`ingest.min_ts`, `max_future_ms`) applies, counted as `outside_window`.
//!
//! Lines are produced strictly in file order, keyed by visitor id, through the
//! idempotent producer, so every user's events land in one partition in file
//! order. A rejected line goes to the DLQ with its line number, the reason and
//! the record. At most `ingest.replay_max_in_flight` deliveries await their
//! acknowledgement at once.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use schemas::csv::{ClockOption, ColumnMap, EventReader, Field, Reason, Record, Reject, Rejections, TimeUnit, Window};
use schemas::{DeadLetter, DeadLetterSource, Event, EventLimits, ItemId, TransactionId, UserId};

use crate::config::Settings;
use crate::kafka::{self, OutRecord};

/// How fast to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the broker acknowledges.
    Max,
    /// At most this many lines per second.
    Rate(f64),
    /// In event time, `X` times faster than it happened (by the running
    /// maximum of `timestamp`, so an unsorted file never waits backwards).
    Speedup(f64),
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub file: PathBuf,
    pub pace: Pace,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// The final count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplaySummary {
    /// Data records read (the header excluded).
    pub lines: u64,
    /// Events acknowledged on the events topic.
    pub sent: u64,
    /// Lines rejected and acknowledged on the DLQ.
    pub rejected: u64,
    /// Messages (events or dead letters) Kafka did not acknowledge.
    pub failed: u64,
    pub elapsed: Duration,
    /// The first delivery failure, if any.
    pub first_error: Option<String>,
    /// Every rejection by reason, with example lines (as the trainer reports them).
    pub rejections: Rejections,
    /// The same by file, when a replay reads several (`replay-items`): the
    /// example lines are each file's.
    pub by_file: Vec<(String, Rejections)>,
    /// How the file's timestamps were read.
    pub clock: Option<TimeUnit>,
}

impl ReplaySummary {
    pub fn events_per_second(&self) -> f64 {
        (self.sent + self.rejected) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The rejections by reason with example lines and fixes (empty when none).
    pub fn render_rejections(&self) -> String {
        if self.by_file.len() < 2 {
            return self.rejections.render("  ");
        }
        let files = self.by_file.iter().filter(|(_, r)| r.total() > 0);
        files.map(|(name, r)| format!("  {name}:\n{}", r.render("    "))).collect()
    }
}

/// How a replayed file is read: `ingest.replay_time_unit`, `ingest.replay_columns`
/// and the API's time window.
#[derive(Debug, Clone, Default)]
pub struct ReplayFormat {
    pub clock: ClockOption,
    pub columns: ColumnMap,
    pub limits: EventLimits,
}

impl ReplayFormat {
    /// From the validated settings.
    pub fn from_settings(s: &Settings) -> anyhow::Result<ReplayFormat> {
        Ok(ReplayFormat {
            clock: s.ingest.replay_time_unit.parse().map_err(anyhow::Error::msg).context("ingest.replay_time_unit")?,
            columns: ColumnMap::parse(&s.ingest.replay_columns).context("ingest.replay_columns")?,
            limits: s.ingest.limits(),
        })
    }
}

/// One record of the file, ready to send.
#[derive(Debug)]
pub enum Outcome {
    Event {
        line: u64,
        event: Event,
    },
    /// The dead letter's reason text and the record as read.
    Rejected {
        line: u64,
        reason: String,
        raw: Vec<u8>,
    },
}

/// Records per chunk handed from the reader thread to the producer loop.
pub(crate) const CHUNK: usize = 4096;

/// One message for [`send_all`], made ready (serialised) by a reader thread.
#[derive(Debug)]
pub(crate) struct Out {
    pub kind: Kind,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Event time, for [`Pace::Speedup`] (dead letters have none).
    pub ts: Option<i64>,
    /// Where it comes from: the file's index in the list, and the line.
    pub file: usize,
    pub line: u64,
    /// The progress bar's position once it is sent.
    pub position: u64,
}

impl Out {
    /// A dead letter of a rejected record, received now.
    pub fn dead(reason: String, raw: &[u8], file: usize, line: u64, position: u64) -> Out {
        let payload = DeadLetter::new(reason, DeadLetterSource::Replay, crate::kafka::now_ms(), raw).to_json();
        Out { kind: Kind::Dead, key: None, payload, ts: None, file, line, position }
    }
}

/// What a reader thread sends.
pub(crate) enum Msg {
    Chunk(Vec<Out>),
    /// The end: the records read, the rejections of each file and the clock.
    Done {
        lines: u64,
        rejections: Vec<(String, Rejections)>,
        clock: TimeUnit,
    },
}

/// Reads `path` record by record and calls `sink(outcome, byte_offset)` for
/// each in file order (stopping early when it returns false). Returns the
/// rejections and the clock. `now_ms` is the receiver's clock (for the
/// window's future bound).
pub fn read_file(
    path: &Path,
    format: &ReplayFormat,
    now_ms: impl Fn() -> i64,
    mut sink: impl FnMut(Outcome, u64) -> bool,
) -> anyhow::Result<(Rejections, TimeUnit)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let display = path.display().to_string();
    // The file's name and the reader's message in one line (`{e}` of a context would hide the latter).
    let mut r = EventReader::new(file, &format.columns, format.clock, Window::default())
        .map_err(|e| anyhow::anyhow!("{display}: {e}"))?;
    loop {
        let outcome = match r.next_record() {
            None => break,
            Some(Err(e)) => anyhow::bail!("{display}: {e}"),
            Some(Ok(Record::Rejected { line, reject, example, raw })) => Outcome::Rejected {
                line,
                reason: format!(
                    "line {line}: {} in {} {:?}: {}",
                    reject.reason, example.field, example.value, example.message
                ),
                raw,
            },
            Some(Ok(Record::Event { line, row })) => {
                let built = (|| -> Result<Event, String> {
                    let user = UserId::parse(row.user).map_err(|e| e.to_string())?;
                    let item = ItemId::parse(row.item).map_err(|e| e.to_string())?;
                    let txn = row.txn.map(TransactionId::parse).transpose().map_err(|e| e.to_string())?;
                    Event::new(row.ts, user, item, row.kind).with_purchase(txn, None).map_err(|e| e.to_string())
                })();
                let ts = row.ts;
                let now = now_ms();
                match built {
                    Ok(event)
                        if ts >= format.limits.min_ts && ts <= now.saturating_add(format.limits.max_future_ms) =>
                    {
                        Outcome::Event { line, event }
                    }
                    Ok(_) => {
                        let ex =
                            r.reject_current(line, Reject { reason: Reason::OutsideWindow, field: Some(Field::Ts) });
                        let why = if ts < format.limits.min_ts {
                            format!("before ingest.min_ts {} (lower it to replay older logs)", format.limits.min_ts)
                        } else {
                            format!("more than {} ms ahead of the receiver's clock", format.limits.max_future_ms)
                        };
                        Outcome::Rejected {
                            line,
                            reason: format!("line {line}: outside_window in {} {:?}: {why}", ex.field, ex.value),
                            raw: r.raw_current(),
                        }
                    }
                    // Not reached: the row rules check ids with the same function as
                    // the id types, and a transaction id only on transactions.
                    Err(e) => Outcome::Rejected { line, reason: format!("line {line}: {e}"), raw: r.raw_current() },
                }
            }
        };
        if !sink(outcome, r.byte_offset()) {
            break;
        }
    }
    Ok((r.rejections().clone(), r.clock()))
}

/// Reads `path` on a blocking thread and sends its outcomes in chunks, then
/// the rejections; a file that cannot be read sends the error.
fn spawn_reader(
    path: &Path,
    format: ReplayFormat,
    tx: tokio::sync::mpsc::Sender<anyhow::Result<Msg>>,
) -> anyhow::Result<u64> {
    let size = std::fs::metadata(path).with_context(|| format!("opening {}", path.display()))?.len();
    let path = path.to_path_buf();
    let name = path.display().to_string();
    std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut lines = 0;
        let done = read_file(&path, &format, crate::kafka::now_ms, |o, position| {
            lines += 1;
            chunk.push(match o {
                Outcome::Event { line, event } => {
                    let (key, payload) = (Some(event.key().to_vec()), event.to_json());
                    Out { kind: Kind::Record, key, payload, ts: Some(event.ts()), file: 0, line, position }
                }
                Outcome::Rejected { line, reason, raw } => Out::dead(reason, &raw, 0, line, position),
            });
            if chunk.len() == CHUNK {
                return tx
                    .blocking_send(Ok(Msg::Chunk(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))))
                    .is_ok();
            }
            true
        });
        let msg = done.map(|(rejections, clock)| {
            if !chunk.is_empty() {
                let _ = tx.blocking_send(Ok(Msg::Chunk(std::mem::take(&mut chunk))));
            }
            Msg::Done { lines, rejections: vec![(name, rejections)], clock }
        });
        let _ = tx.blocking_send(msg);
    });
    Ok(size)
}

/// Whether a message is a record of the replayed topic or a dead letter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Record,
    Dead,
}

struct InFlight {
    queue: VecDeque<(Kind, DeliveryFuture)>,
    max: usize,
}

impl InFlight {
    /// Waits for the oldest delivery and counts it.
    async fn settle_one(&mut self, s: &mut ReplaySummary) {
        let Some((kind, fut)) = self.queue.pop_front() else { return };
        let err = match fut.await {
            Ok(Ok(_)) => {
                match kind {
                    Kind::Record => s.sent += 1,
                    Kind::Dead => s.rejected += 1,
                }
                return;
            }
            Ok(Err((e, _))) => e,
            Err(_) => KafkaError::Canceled,
        };
        s.failed += 1;
        if s.first_error.is_none() {
            s.first_error = Some(err.to_string());
        }
    }
}

/// Replays `opts.file` into `settings.kafka`'s events topic (and its DLQ).
/// Returns the counts; a file that cannot be read is an error, while failed
/// deliveries are counted in [`ReplaySummary::failed`].
pub async fn replay(
    settings: &Settings,
    producer: &FutureProducer,
    opts: &ReplayOptions,
) -> anyhow::Result<ReplaySummary> {
    let events_topic = settings.kafka.topic(schemas::topics::EVENTS);
    let dlq_topic = settings.kafka.topic(schemas::topics::EVENTS_DLQ);

    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let size = spawn_reader(&opts.file, ReplayFormat::from_settings(settings)?, tx)?;
    let bar = progress_bar(opts.progress, size, BYTES_TEMPLATE);

    let files = [opts.file.display().to_string()];
    let summary = send_all(settings, producer, (&events_topic, &dlq_topic), &mut rx, opts.pace, &bar, &files).await?;
    // The same report as the trainer's: every reason, its fix, example lines.
    if let Some(clock) = summary.clock {
        tracing::info!(file = %opts.file.display(), %clock, lines = summary.lines, "replay: timestamps read as {clock}");
    }
    for (reason, rows) in summary.rejections.by_count() {
        let examples: Vec<String> = summary
            .rejections
            .examples(reason)
            .map(|e| format!("line {} {} {:?}: {}", e.line, e.field, e.value, e.message))
            .collect();
        tracing::warn!(%reason, rows, fix = reason.fix(), ?examples, "replay: rows rejected to the DLQ");
    }
    Ok(summary)
}

/// The bar's look while a file is read, by bytes.
pub(crate) const BYTES_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}";

/// A progress bar on stderr of `len` steps, hidden unless `show`.
pub(crate) fn progress_bar(show: bool, len: u64, template: &str) -> ProgressBar {
    let bar = if show { ProgressBar::new(len) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// The send loop of every replay: takes the reader thread's messages in
/// order and produces each (records to `topics.0` under their key, dead
/// letters to `topics.1`), paced, with at most `ingest.replay_max_in_flight`
/// awaiting their acknowledgement; then waits for the rest. `files` names
/// the files of [`Out::file`] in an error. A record that cannot even be
/// enqueued stops the replay (nothing after it may overtake it).
pub(crate) async fn send_all(
    settings: &Settings,
    producer: &FutureProducer,
    topics: (&str, &str),
    rx: &mut tokio::sync::mpsc::Receiver<anyhow::Result<Msg>>,
    pace: Pace,
    bar: &ProgressBar,
    files: &[String],
) -> anyhow::Result<ReplaySummary> {
    let enqueue_timeout = Duration::from_millis(settings.ingest.message_timeout_ms);
    let start = Instant::now();
    let t0 = tokio::time::Instant::now();
    let mut summary = ReplaySummary::default();
    let mut inflight = InFlight { queue: VecDeque::new(), max: settings.ingest.replay_max_in_flight };
    let mut first_ts: Option<i64> = None;
    let mut max_ts = i64::MIN;
    let mut messages = 0u64;

    while let Some(msg) = rx.recv().await {
        let chunk = match msg? {
            Msg::Chunk(c) => c,
            Msg::Done { lines, rejections, clock } => {
                summary.lines = lines;
                for (_, r) in &rejections {
                    summary.rejections.merge(r);
                }
                summary.by_file = rejections;
                summary.clock = Some(clock);
                break;
            }
        };
        for out in chunk {
            messages += 1;
            // Pacing.
            let target = match pace {
                Pace::Max => None,
                Pace::Rate(r) => Some(Duration::from_secs_f64(messages.saturating_sub(1) as f64 / r)),
                Pace::Speedup(x) => out.ts.map(|ts| {
                    let base = *first_ts.get_or_insert(ts);
                    max_ts = max_ts.max(ts);
                    Duration::from_secs_f64((max_ts - base).max(0) as f64 / 1000.0 / x)
                }),
            };
            if let Some(t) = target {
                let at = t0 + t;
                if at > tokio::time::Instant::now() {
                    tokio::time::sleep_until(at).await;
                }
            }

            if inflight.queue.len() >= inflight.max {
                inflight.settle_one(&mut summary).await;
            }
            let topic = match out.kind {
                Kind::Record => topics.0,
                Kind::Dead => topics.1,
            };
            let rec = OutRecord { topic, key: out.key.as_deref(), payload: out.payload };
            let fut = loop {
                // A full local queue means the oldest deliveries are pending:
                // settle one, then try again (order is kept: this record waits).
                match kafka::enqueue(producer, &rec, tokio::time::Instant::now()).await {
                    Ok(f) => break Ok(f),
                    Err(KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull))
                        if !inflight.queue.is_empty() =>
                    {
                        inflight.settle_one(&mut summary).await;
                    }
                    Err(KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)) => {
                        break kafka::enqueue(producer, &rec, tokio::time::Instant::now() + enqueue_timeout).await;
                    }
                    Err(e) => break Err(e),
                }
            };
            match fut {
                Ok(f) => inflight.queue.push_back((out.kind, f)),
                Err(e) => {
                    // Nothing after this line may overtake it: stop the replay.
                    while !inflight.queue.is_empty() {
                        inflight.settle_one(&mut summary).await;
                    }
                    bar.finish_and_clear();
                    let file = files.get(out.file).map_or("", String::as_str);
                    anyhow::bail!("{file} line {}: could not enqueue: {e} (sent {} before it)", out.line, summary.sent);
                }
            }
            if messages.is_multiple_of(1024) {
                bar.set_position(out.position);
                bar.set_message(format!("{messages} messages, {} in flight", inflight.queue.len()));
            }
        }
    }
    while !inflight.queue.is_empty() {
        inflight.settle_one(&mut summary).await;
    }
    bar.finish_and_clear();
    summary.elapsed = start.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn read(content: &str, format: &ReplayFormat) -> (Vec<String>, Rejections, TimeUnit) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.csv");
        std::fs::write(&path, content).unwrap();
        let mut got = Vec::new();
        let (rej, clock) = read_file(
            &path,
            format,
            || NOW,
            |o, _| {
                got.push(match o {
                    Outcome::Event { line, event } => format!(
                        "{line} {} {} {} {}",
                        event.ts(),
                        event.user_id(),
                        event.item_id(),
                        event.transaction_id().map_or("-", |t| t.as_str())
                    ),
                    Outcome::Rejected { line, reason, raw } => {
                        format!("{line} DLQ {reason} | {}", String::from_utf8_lossy(&raw))
                    }
                });
                true
            },
        )
        .unwrap();
        (got, rej, clock)
    }

    #[test]
    fn records_become_events_or_dead_letters_with_reasons() {
        let format = ReplayFormat::default();
        let csv = "timestamp,visitorid,event,itemid,transactionid\n\
                   1433221332117,257597,view,355908,\n\
                   1433221332117,1,transaction,SKU-2,4000\n\
                   yesterday,1,view,2,\n\
                   1433221332117,1,click,2,\n\
                   1433221332117,,view,2,\n\
                   1433221332117,1,view,2,99\n\
                   1433221332117,\"a b\",view,2,\n\
                   1000000000000,1,view,2,\n";
        let (got, rej, clock) = read(csv, &format);
        assert_eq!(clock, TimeUnit::Milliseconds);
        assert_eq!(got[0], "2 1433221332117 257597 355908 -");
        assert_eq!(got[1], "3 1433221332117 1 SKU-2 4000");
        assert!(got[2].starts_with("4 DLQ line 4: bad_timestamp in timestamp \"yesterday\""), "{}", got[2]);
        assert!(got[3].contains("unknown_event in event \"click\""), "{}", got[3]);
        assert!(got[4].contains("empty_field in visitorid"), "{}", got[4]);
        assert!(got[5].contains("transaction_id_not_on_transaction"), "{}", got[5]);
        assert!(got[6].contains("bad_user_id") && got[6].ends_with("| 1433221332117,a b,view,2,"), "{}", got[6]);
        // 2001 is before the API's default min_ts (2010).
        assert!(got[7].contains("outside_window") && got[7].contains("ingest.min_ts"), "{}", got[7]);
        assert_eq!(rej.total(), 6);
        assert_eq!(rej.count(Reason::OutsideWindow), 1);
        let open =
            ReplayFormat { limits: EventLimits { min_ts: 0, ..EventLimits::default() }, ..ReplayFormat::default() };
        assert_eq!(read(csv, &open).1.count(Reason::OutsideWindow), 0);
    }

    #[test]
    fn a_shop_export_in_seconds_with_other_names_is_read() {
        let format = ReplayFormat {
            columns: ColumnMap::parse("user_id=customer,event=action").unwrap(),
            ..ReplayFormat::default()
        };
        let csv = "\u{FEFF}sku,customer,action,ts,price\r\n\"SKU-1\",c-9,view,1433221332,\"1,99\"\r\n";
        let (got, rej, clock) = read(csv, &format);
        assert_eq!((clock, rej.total()), (TimeUnit::Seconds, 0));
        assert_eq!(got, ["2 1433221332000 c-9 SKU-1 -"]);
    }
}
