//! `recsys-ingest replay-items FILE…`: RetailRocket item-property files
//! (`item_properties_part*.csv`: `timestamp,itemid,property,value`) into
//! `recsys.items`, one message per field keyed `{item}/{field}`
//! ([`schemas::ItemUpdate::records`]).
//!
//! - **Rows.** `available` (`0`/`1`) and `categoryid` (a non-negative
//!   integer) become an update's `available` and `category`; every other
//!   property (RetailRocket's hashed values such as `n552.000 639502`) goes
//!   into `properties` under its name, within [`schemas::ItemUpdate`]'s
//!   bounds. Columns, the clock and the time window are those of `replay`
//!   (`ingest.replay_columns`, `replay_time_unit`, `min_ts`/`max_future_ms`).
//!   A row that breaks a rule is dead-lettered with a reason naming the
//!   file, the line and the field, and counted as the trainer counts
//!   rejected rows ([`schemas::csv::Rejections`]).
//! - **Order.** The real files are not sorted by time (and one item's rows
//!   are spread over both), so every file is read whole and the rows of all
//!   files are sorted by `(timestamp, item)`, stable: ties keep file and line
//!   order, so a later row wins. The rows of one item at one time become one
//!   update (split in several of the same `ts` when they hold more than
//!   [`schemas::MAX_PROPERTIES`] properties). The files and the rows stay in
//!   memory: about the files' size plus ~100 bytes a row (~150 while the
//!   stable sort holds its buffer).
//! - **Sending** is `replay`'s loop ([`crate::replay`]): idempotent producer,
//!   updates in time order (so each item's in its partition in order), a
//!   bounded number in flight, the same pacing and progress bar. Dead
//!   letters go first, then the updates.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::ProgressBar;
use rdkafka::producer::FutureProducer;
use schemas::csv::{
    body_clock, for_each_plain_record, for_each_quoted_record, is_plain, parse_u64, split_header, Field,
    PropertyLayout, Reason, Reject, Rejections, TimeUnit,
};
use schemas::item_update::{check_name, check_value};
use schemas::{EventLimits, ItemId, ItemUpdate, Properties, MAX_PROPERTIES};

use crate::config::Settings;
use crate::replay::{progress_bar, send_all, Kind, Msg, Out, Pace, ReplayFormat, ReplaySummary, BYTES_TEMPLATE, CHUNK};

/// What to replay.
#[derive(Debug, Clone)]
pub struct ItemsOptions {
    /// The property files, in any order (their rows are merged by time).
    pub files: Vec<PathBuf>,
    pub pace: Pace,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// What one row sets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change<'a> {
    Available(bool),
    Category(u64),
    Property(Cow<'a, str>, Cow<'a, str>),
}

/// One accepted row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row<'a> {
    ts: i64,
    item: Cow<'a, str>,
    change: Change<'a>,
    /// Index of the file, and the line (for messages).
    file: usize,
    line: u64,
}

/// Why a row was rejected: the counted reason and what to tell the producer.
#[derive(Debug)]
struct Rejected {
    reject: Reject,
    message: Option<String>,
}

fn reject(reason: Reason, field: Option<Field>) -> Rejected {
    Rejected { reject: Reject { reason, field }, message: None }
}

fn utf8(b: &[u8], field: Field) -> Result<&str, Rejected> {
    std::str::from_utf8(b).map_err(|_| Rejected {
        reject: Reject { reason: Reason::BadValue, field: Some(field) },
        message: Some("not UTF-8".into()),
    })
}

/// The rules of one row (`now` anchors the window's future bound).
fn parse_row<'f>(
    fields: &[&'f [u8]],
    layout: &PropertyLayout,
    clock: TimeUnit,
    limits: &EventLimits,
    now: i64,
) -> Result<(i64, &'f str, Change<'f>), Rejected> {
    let l = &layout.0;
    if fields.len() != l.width {
        return Err(reject(Reason::WrongColumns, None));
    }
    let get = |f: Field| l.column(f).and_then(|i| fields.get(i).copied()).unwrap_or(b"");
    let (ts, item, property, value) = (get(Field::Ts), get(Field::ItemId), get(Field::Property), get(Field::Value));
    for (v, f) in [(ts, Field::Ts), (item, Field::ItemId), (property, Field::Property)] {
        if v.is_empty() {
            return Err(reject(Reason::EmptyField, Some(f)));
        }
    }
    let ts = clock.to_ms(ts).ok_or(reject(Reason::BadTimestamp, Some(Field::Ts)))?;
    let item = schemas::id::check_bytes(item).map_err(|_| reject(Reason::BadItemId, Some(Field::ItemId)))?;
    let bad_value = |message: String| Rejected {
        reject: Reject { reason: Reason::BadValue, field: Some(Field::Value) },
        message: Some(message),
    };
    let change = match property {
        b"available" => Change::Available(match value {
            b"1" => true,
            b"0" => false,
            _ => return Err(bad_value("`available` is 0 or 1".into())),
        }),
        b"categoryid" => Change::Category(
            parse_u64(value).ok_or_else(|| bad_value("`categoryid` is a non-negative integer".into()))?,
        ),
        _ => {
            let name = utf8(property, Field::Property)?;
            check_name(name).map_err(|e| Rejected {
                reject: Reject { reason: Reason::BadValue, field: Some(Field::Property) },
                message: Some(e.to_string()),
            })?;
            let value = utf8(value, Field::Value)?;
            check_value(name, value).map_err(|e| bad_value(e.to_string()))?;
            Change::Property(Cow::Borrowed(name), Cow::Borrowed(value))
        }
    };
    if ts < limits.min_ts || ts > now.saturating_add(limits.max_future_ms) {
        let why = if ts < limits.min_ts {
            format!("before ingest.min_ts {} (lower it to replay older files)", limits.min_ts)
        } else {
            format!("more than {} ms ahead of the receiver's clock", limits.max_future_ms)
        };
        return Err(Rejected {
            reject: Reject { reason: Reason::OutsideWindow, field: Some(Field::Ts) },
            message: Some(why),
        });
    }
    Ok((ts, item, change))
}

/// Everything read from the files: the accepted rows, the dead letters (in
/// file order), each file's rejections, the number of rows and the last clock.
#[derive(Debug, Default)]
struct Read<'a> {
    rows: Vec<Row<'a>>,
    dead: Vec<Out>,
    rejections: Vec<(String, Rejections)>,
    lines: u64,
    clock: Option<TimeUnit>,
}

impl Read<'_> {
    /// Counts a rejected row and makes its dead letter.
    fn reject(
        &mut self,
        at: (&str, usize, u64),
        r: Rejected,
        fields: &[&[u8]],
        layout: &PropertyLayout,
        clock: TimeUnit,
    ) {
        let (name, file, line) = at;
        if let Some((_, rejections)) = self.rejections.get_mut(file) {
            rejections.add(line, r.reject, fields, &layout.0, Some(clock));
        }
        let ex = schemas::csv::example(line, r.reject, fields, &layout.0, Some(clock));
        let message = r.message.unwrap_or(ex.message);
        let reason = format!("{name} line {line}: {} in {} {:?}: {message}", r.reject.reason, ex.field, ex.value);
        self.dead.push(Out::dead(reason, &fields.join(&b","[..]), file, line, 0));
    }
}

impl Change<'_> {
    fn into_owned(self) -> Change<'static> {
        match self {
            Change::Available(a) => Change::Available(a),
            Change::Category(c) => Change::Category(c),
            Change::Property(n, v) => Change::Property(Cow::Owned(n.into_owned()), Cow::Owned(v.into_owned())),
        }
    }
}

/// Reads the file `name` (index `file`, whole in `bytes`) into `out`.
fn read_body<'a>(
    name: &str,
    file: usize,
    bytes: &'a [u8],
    format: &ReplayFormat,
    now: i64,
    out: &mut Read<'a>,
) -> anyhow::Result<()> {
    let fail = |e: schemas::csv::CsvError| anyhow::anyhow!("{name}: {e}");
    let (header, body) = split_header(bytes).map_err(fail)?;
    let header: Vec<&[u8]> = header.iter().map(Vec::as_slice).collect();
    let layout = PropertyLayout::resolve(&header, &format.columns).map_err(fail)?;
    let clock = body_clock(body, layout.0.column(Field::Ts).unwrap_or(0), format.clock).map_err(fail)?;
    tracing::info!(file = name, %clock, "replay-items: timestamps read as {clock}");
    out.clock = Some(clock);
    out.rejections.push((name.to_owned(), Rejections::default()));
    let limits = &format.limits;
    // A plain body lends its fields for the whole run; a quoted record's
    // fields live only as long as the callback, so those rows are copied.
    if is_plain(body) {
        for_each_plain_record(body, 2, |line, fields| {
            out.lines += 1;
            match parse_row(fields, &layout, clock, limits, now) {
                Ok((ts, item, change)) => out.rows.push(Row { ts, item: Cow::Borrowed(item), change, file, line }),
                Err(r) => out.reject((name, file, line), r, fields, &layout, clock),
            }
        });
    } else {
        for_each_quoted_record(body, 2, |line, fields| {
            out.lines += 1;
            match parse_row(fields, &layout, clock, limits, now) {
                Ok((ts, item, change)) => {
                    let (item, change) = (Cow::Owned(item.to_owned()), change.into_owned());
                    out.rows.push(Row { ts, item, change, file, line });
                }
                Err(r) => out.reject((name, file, line), r, fields, &layout, clock),
            }
        })
        .map_err(fail)?;
    }
    Ok(())
}

/// Sorts the rows by `(ts, item)` (stable: file and line order within) and
/// calls `emit` with the updates of each `(ts, item)` group, in order.
fn updates(rows: &mut [Row<'_>], mut emit: impl FnMut(&Row<'_>, ItemUpdate) -> bool) -> anyhow::Result<()> {
    rows.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.item.cmp(&b.item)));
    for group in rows.chunk_by(|a, b| a.ts == b.ts && a.item == b.item) {
        let first = &group[0];
        let (mut available, mut category) = (None, None);
        let mut properties: BTreeMap<&str, &str> = BTreeMap::new();
        for row in group {
            match &row.change {
                Change::Available(a) => available = Some(*a),
                Change::Category(c) => category = Some(*c),
                Change::Property(n, v) => {
                    properties.insert(n, v);
                }
            }
        }
        let item = ItemId::parse(&first.item).context("an item id checked by the row rules")?;
        let mut props: Vec<(&str, &str)> = properties.into_iter().collect();
        let mut part = 0;
        // Availability and category ride with the first part.
        while part == 0 || !props.is_empty() {
            let rest = props.split_off(props.len().min(MAX_PROPERTIES));
            let chunk: BTreeMap<String, String> =
                std::mem::replace(&mut props, rest).into_iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
            let chunk = Properties::new(chunk).context("properties checked by the row rules")?;
            let (a, c) = if part == 0 { (available, category) } else { (None, None) };
            let update = ItemUpdate::new(first.ts, item.clone(), a, c, None, chunk)
                .context("a group of rows always changes something")?;
            if !emit(first, update) {
                return Ok(());
            }
            part += 1;
        }
    }
    Ok(())
}

/// The bar's look while updates are sent, by messages.
const MESSAGES_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} messages ({eta}) {msg}";

/// Reads, sorts and serialises on a blocking thread; sends the dead letters,
/// then the updates in time order, in chunks, then the end; a file that
/// cannot be read sends the error.
fn spawn_reader(
    files: Vec<PathBuf>,
    format: ReplayFormat,
    bar: ProgressBar,
    tx: tokio::sync::mpsc::Sender<anyhow::Result<Msg>>,
) {
    std::thread::spawn(move || {
        let send = |m: anyhow::Result<Msg>| tx.blocking_send(m).is_ok();
        let run = || -> anyhow::Result<Msg> {
            let mut bodies = Vec::with_capacity(files.len());
            for f in &files {
                bodies.push(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
            }
            bar.set_length(bodies.iter().map(|b| b.len() as u64).sum());
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            let now = crate::kafka::now_ms();
            let mut read = Read::default();
            for (i, body) in bodies.iter().enumerate() {
                bar.set_message(format!("reading {}", names[i]));
                read_body(&names[i], i, body, &format, now, &mut read)?;
                bar.inc(body.len() as u64);
            }
            bar.set_message("sorting");
            let Read { mut rows, dead, rejections, lines, clock } = read;
            bar.set_style(
                indicatif::ProgressStyle::with_template(MESSAGES_TEMPLATE)
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            // An estimate: groups make fewer messages than rows.
            bar.set_length(dead.len() as u64 + rows.len() as u64);
            bar.set_position(0);
            let mut position = 0u64;
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut open = true;
            let mut push = |out: Out, chunk: &mut Vec<Out>| {
                chunk.push(out);
                if chunk.len() == CHUNK {
                    open = send(Ok(Msg::Chunk(std::mem::replace(chunk, Vec::with_capacity(CHUNK)))));
                }
                open
            };
            for mut d in dead {
                position += 1;
                d.position = position;
                if !push(d, &mut chunk) {
                    return Ok(Msg::Done { lines, rejections, clock: clock.unwrap_or(TimeUnit::Milliseconds) });
                }
            }
            updates(&mut rows, |first, u| {
                // One message per field (ItemUpdate::records): what the
                // compacted topic keeps is then every field's newest value.
                for (key, r) in u.records() {
                    position += 1;
                    let out = Out {
                        kind: Kind::Record,
                        key: Some(key.into_bytes()),
                        payload: r.to_json(),
                        ts: Some(r.ts()),
                        file: first.file,
                        line: first.line,
                        position,
                    };
                    if !push(out, &mut chunk) {
                        return false;
                    }
                }
                true
            })?;
            if !chunk.is_empty() {
                send(Ok(Msg::Chunk(chunk)));
            }
            Ok(Msg::Done { lines, rejections, clock: clock.unwrap_or(TimeUnit::Milliseconds) })
        };
        let done = run();
        send(done);
    });
}

/// Replays `opts.files` into `settings.kafka`'s items topic (and the DLQ).
/// A file that cannot be read (or has no usable header) is an error, sent
/// before anything is produced; failed deliveries are counted in
/// [`ReplaySummary::failed`]. `lines` counts rows, `sent` updates.
pub async fn replay_items(
    settings: &Settings,
    producer: &FutureProducer,
    opts: &ItemsOptions,
) -> anyhow::Result<ReplaySummary> {
    anyhow::ensure!(!opts.files.is_empty(), "no item-property files given");
    let items_topic = settings.kafka.topic(schemas::topics::ITEMS);
    let dlq_topic = settings.kafka.topic(schemas::topics::EVENTS_DLQ);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let bar = progress_bar(opts.progress, 0, BYTES_TEMPLATE);
    spawn_reader(opts.files.clone(), ReplayFormat::from_settings(settings)?, bar.clone(), tx);
    let names: Vec<String> = opts.files.iter().map(|f| f.display().to_string()).collect();
    let summary = send_all(settings, producer, (&items_topic, &dlq_topic), &mut rx, opts.pace, &bar, &names).await?;
    for (reason, rows) in summary.rejections.by_count() {
        tracing::warn!(%reason, rows, fix = reason.fix(), "replay-items: rows rejected to the DLQ");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const H: &str = "timestamp,itemid,property,value\n";

    fn read(files: &[&str]) -> (Vec<String>, Vec<String>, Rejections, u64) {
        let format = ReplayFormat::default();
        let mut r = Read::default();
        for (i, f) in files.iter().enumerate() {
            read_body(&format!("f{i}"), i, f.as_bytes(), &format, NOW, &mut r).unwrap();
        }
        let dead: Vec<String> = r
            .dead
            .iter()
            .map(|d| {
                let l = schemas::DeadLetter::parse_json(&d.payload).unwrap();
                format!("{} | {}", l.reason, l.original_text().unwrap())
            })
            .collect();
        let mut got = Vec::new();
        updates(&mut r.rows, |_, u| {
            got.push(String::from_utf8(u.to_json()).unwrap());
            true
        })
        .unwrap();
        let mut all = Rejections::default();
        for (_, f) in &r.rejections {
            all.merge(f);
        }
        (got, dead, all, r.lines)
    }

    #[test]
    fn rows_merge_by_time_across_files_and_group_by_item() {
        let a = format!(
            "{H}1435460400000,460429,categoryid,1338\n\
             1441508400000,206783,888,1116713 960601 n277.200\n\
             1435460400000,460429,available,1\n\
             1431226800000,59481,790,n15360.000\n"
        );
        let b = format!(
            "{H}1431226800000,59481,available,0\n\
             1435460400000,460429,available,0\n\
             1441508400000,206783,categoryid,7\n"
        );
        let (got, dead, rej, lines) = read(&[&a, &b]);
        assert!(dead.is_empty() && rej.total() == 0, "{dead:?}");
        assert_eq!(lines, 7);
        assert_eq!(
            got,
            [
                r#"{"item_id":"59481","ts":1431226800000,"available":false,"properties":{"790":"n15360.000"}}"#,
                // The later file's row wins a tie.
                r#"{"item_id":"460429","ts":1435460400000,"available":false,"category":1338}"#,
                r#"{"item_id":"206783","ts":1441508400000,"category":7,"properties":{"888":"1116713 960601 n277.200"}}"#,
            ]
        );
    }

    #[test]
    fn bad_rows_are_dead_lettered_naming_file_line_and_field() {
        let f = format!(
            "{H}1435460400000,1,available,yes\n\
             1435460400000,1,categoryid,-3\n\
             soon,1,available,1\n\
             1435460400000,a b,available,1\n\
             1435460400000,1,available\n\
             1435460400000,1,,1\n\
             1435460400000,1,price,3\n\
             1000000000000,1,available,1\n\
             \"1435460400000\",\"2\",\"6\",\"x, y\"\n"
        );
        let (got, dead, rej, lines) = read(&[&f]);
        assert_eq!(lines, 9);
        assert_eq!(got, [r#"{"item_id":"2","ts":1435460400000,"properties":{"6":"x, y"}}"#]);
        let want = [
            "f0 line 2: bad_value in value \"yes\": `available` is 0 or 1 | 1435460400000,1,available,yes",
            "f0 line 3: bad_value in value \"-3\": `categoryid` is a non-negative integer",
            "f0 line 4: bad_timestamp in timestamp \"soon\"",
            "f0 line 5: bad_item_id in itemid \"a b\"",
            "f0 line 6: wrong_columns in row",
            "f0 line 7: empty_field in property",
            "f0 line 8: bad_value in property \"price\": `price` has a field of its own",
            "f0 line 9: outside_window in timestamp \"1000000000000\": before ingest.min_ts",
        ];
        assert_eq!(dead.len(), want.len(), "{dead:#?}");
        for (d, w) in dead.iter().zip(want) {
            assert!(d.starts_with(w), "{d:?} does not start with {w:?}");
        }
        assert_eq!(rej.total(), 8);
        assert_eq!(rej.count(Reason::BadValue), 3);
    }

    #[test]
    fn many_properties_of_one_item_at_one_time_split_into_updates() {
        let mut f = H.to_owned();
        for p in 0..MAX_PROPERTIES + 3 {
            f.push_str(&format!("1435460400000,9,p{p},v{p}\n"));
        }
        f.push_str("1435460400000,9,available,1\n");
        let (got, _, _, _) = read(&[&f]);
        let parsed: Vec<ItemUpdate> =
            got.iter().map(|g| ItemUpdate::parse_json(g.as_bytes(), NOW, &EventLimits::default()).unwrap()).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!((parsed[0].available(), parsed[0].properties().len()), (Some(true), MAX_PROPERTIES));
        assert_eq!((parsed[1].available(), parsed[1].properties().len()), (None, 3));
    }

    /// What the module documentation says a row costs.
    #[test]
    fn a_row_is_about_a_hundred_bytes() {
        assert!(std::mem::size_of::<Row<'_>>() <= 104, "{}", std::mem::size_of::<Row<'_>>());
    }

    #[test]
    fn a_file_without_the_columns_names_itself() {
        let mut r = Read::default();
        let err = read_body("props.csv", 0, b"ts,user\n1,2\n", &ReplayFormat::default(), NOW, &mut r).unwrap_err();
        assert!(err.to_string().starts_with("props.csv: "), "{err}");
    }
}
