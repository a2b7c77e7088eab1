//! `recsys-ingest replay FILE.csv`: a RetailRocket `events.csv`
//! (`timestamp,visitorid,event,itemid,transactionid`) into `recsys.events`.
//!
//! Lines are produced strictly in file order, keyed by visitor id, through the
//! idempotent producer, so every user's events land in one partition in file
//! order. Each line becomes an event through `schemas::Event` (the same rules as
//! the HTTP API); a line that fails goes to the DLQ with its line number, the
//! reason and its original bytes. At most `ingest.replay_max_in_flight`
//! deliveries await their acknowledgement at once.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use schemas::{DeadLetter, DeadLetterSource, Event};
use serde_json::{json, Value};

use crate::config::Settings;
use crate::kafka::{self, OutRecord};

/// The header a RetailRocket events file starts with.
pub const HEADER: &str = "timestamp,visitorid,event,itemid,transactionid";

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
    /// Data lines read (the header excluded).
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
}

impl ReplaySummary {
    pub fn events_per_second(&self) -> f64 {
        (self.sent + self.rejected) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Lines per chunk handed from the reader thread to the producer loop.
const CHUNK: usize = 4096;

type Chunk = Vec<(u64, Vec<u8>)>;

/// Reads `path` on a blocking thread: checks the header, then sends numbered
/// lines (without the line ending) in chunks. Line numbers count from 1 = the header.
fn spawn_reader(path: &Path, tx: tokio::sync::mpsc::Sender<anyhow::Result<Chunk>>) -> anyhow::Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let display = path.display().to_string();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        let mut no = 0u64;
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(anyhow::anyhow!("{display}: line {}: {e}", no + 1)));
                    return;
                }
            }
            no += 1;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if no == 1 {
                if line != HEADER.as_bytes() {
                    let got = String::from_utf8_lossy(&line).chars().take(200).collect::<String>();
                    let _ = tx.blocking_send(Err(anyhow::anyhow!(
                        "{display}: line 1: expected the header {HEADER:?}, found {got:?}"
                    )));
                    return;
                }
                continue;
            }
            if line.is_empty() {
                continue; // a trailing blank line is not an event
            }
            chunk.push((no, std::mem::take(&mut line)));
            if chunk.len() == CHUNK
                && tx.blocking_send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))).is_err()
            {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(Ok(chunk));
        }
    });
    Ok(size)
}

/// A CSV line as the JSON object `schemas::Event` parses. Fields are passed
/// through as strings (`ts` as a number when it is an integer) so every check,
/// and its reason, is the schema's (`schemas::Event::from_value_with`).
pub fn line_to_value(line: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let fields: Vec<&str> = text.split(',').collect();
    let [ts, user, kind, item, txn] = fields[..] else {
        return Err(format!("expected 5 comma-separated fields ({HEADER}), found {}", fields.len()));
    };
    let ts = ts.parse::<i64>().map_or_else(|_| Value::String(ts.to_owned()), Value::from);
    let mut v = json!({"ts": ts, "user_id": user, "event": kind, "item_id": item});
    if !txn.is_empty() {
        v["transaction_id"] = Value::String(txn.to_owned());
    }
    Ok(v)
}

/// Whether the acknowledgement was for an event or a dead letter.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Event,
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
                    Kind::Event => s.sent += 1,
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
    let limits = settings.ingest.limits();
    let enqueue_timeout = Duration::from_millis(settings.ingest.message_timeout_ms);

    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let size = spawn_reader(&opts.file, tx)?;
    let bar = if opts.progress { ProgressBar::new(size) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let start = Instant::now();
    let t0 = tokio::time::Instant::now();
    let mut summary = ReplaySummary::default();
    let mut inflight = InFlight { queue: VecDeque::new(), max: settings.ingest.replay_max_in_flight };
    let mut first_ts: Option<i64> = None;
    let mut max_ts = i64::MIN;
    let mut bytes_read = 0u64;

    while let Some(chunk) = rx.recv().await {
        for (no, line) in chunk? {
            summary.lines += 1;
            bytes_read += line.len() as u64 + 1;
            let now = crate::kafka::now_ms();
            let parsed =
                line_to_value(&line).and_then(|v| Event::from_value_with(&v, now, &limits).map_err(|e| e.to_string()));
            let (kind, topic, key, payload) = match &parsed {
                Ok(e) => (Kind::Event, events_topic.as_str(), Some(e.key()), e.to_json()),
                Err(reason) => {
                    let letter =
                        DeadLetter::new(format!("line {no}: {reason}"), DeadLetterSource::Replay, now, line.as_slice());
                    (Kind::Dead, dlq_topic.as_str(), None, letter.to_json())
                }
            };

            // Pacing.
            let target = match opts.pace {
                Pace::Max => None,
                Pace::Rate(r) => Some(Duration::from_secs_f64(summary.lines.saturating_sub(1) as f64 / r)),
                Pace::Speedup(x) => match &parsed {
                    Ok(e) => {
                        let base = *first_ts.get_or_insert(e.ts());
                        max_ts = max_ts.max(e.ts());
                        Some(Duration::from_secs_f64((max_ts - base).max(0) as f64 / 1000.0 / x))
                    }
                    Err(_) => None,
                },
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
            let rec = OutRecord { topic, key, payload };
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
                Ok(f) => inflight.queue.push_back((kind, f)),
                Err(e) => {
                    // Nothing after this line may overtake it: stop the replay.
                    while !inflight.queue.is_empty() {
                        inflight.settle_one(&mut summary).await;
                    }
                    bar.finish_and_clear();
                    anyhow::bail!("line {no}: could not enqueue: {e} (sent {} before it)", summary.sent);
                }
            }
            if summary.lines % 1024 == 0 {
                bar.set_position(bytes_read);
                bar.set_message(format!("{} lines, {} in flight", summary.lines, inflight.queue.len()));
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

    #[test]
    fn lines_become_schema_events_or_reasons() {
        let limits = schemas::EventLimits::default();
        let now = 1_700_000_000_000;
        let parse = |l: &str| {
            line_to_value(l.as_bytes())
                .and_then(|v| Event::from_value_with(&v, now, &limits).map_err(|e| e.to_string()))
        };
        let e = parse("1433221332117,257597,view,355908,").unwrap();
        assert_eq!((e.ts(), e.user_id().as_str(), e.item_id().as_str()), (1433221332117, "257597", "355908"));
        assert!(e.transaction_id().is_none());
        let t = parse("1433221332117,1,transaction,2,4000").unwrap();
        assert_eq!(t.transaction_id().map(|x| x.as_str()), Some("4000"));
        assert!(parse("1433221332117,1,view,2").unwrap_err().contains("5 comma-separated"));
        assert!(parse("yesterday,1,view,2,").unwrap_err().contains("ts"));
        assert!(parse("1433221332117,1,click,2,").unwrap_err().contains("click"));
        assert!(parse("1433221332117,,view,2,").unwrap_err().contains("user_id"));
        assert!(parse("1433221332117,1,view,2,99").unwrap_err().contains("transaction"));
    }
}
