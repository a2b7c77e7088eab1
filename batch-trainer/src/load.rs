//! Loading of CSV event logs into the in-memory [`Dataset`], on the shared
//! reader [`schemas::csv`] (the one `recsys-ingest replay` uses, so both
//! accept and reject the same rows for the same reasons).
//!
//! Files of a data directory (see [`load_dir`]):
//! - `events.csv` (required): columns found by name — `timestamp`/`ts`,
//!   `visitorid`/`user_id`, `event`, `itemid`/`item_id`, optional
//!   `transactionid`/`transaction_id` — in any order, extra columns ignored,
//!   other names through [`LoadOptions::columns`] (`--columns`);
//! - `item_properties_part*.csv` (optional): `timestamp,itemid,property,value`
//!   by name; only `categoryid` and `available` rows are kept;
//! - `category_tree.csv` (optional): `categoryid,parentid` (empty parent = root).
//!
//! How a file is read: whole into memory, BOM skipped, header mapped, the clock
//! detected from the first timestamps ([`schemas::csv::TimeUnit`]: epoch s, ms,
//! µs, ns or ISO-8601; everything becomes epoch ms). A body without quotes is
//! cut into chunks at line boundaries and parsed in parallel (rayon) straight
//! from the bytes; a body with quotes is read by the `csv` crate in one pass.
//! Results are concatenated in file order (the order breaks timestamp ties).
//!
//! Ids: a canonical decimal id is its own number (fast, no allocation); any
//! other valid id (SKU, UUID) is interned into [`IdNames`] once and named
//! again in the model artifact, as ids read from Kafka are.
//!
//! Bad rows are **counted rejections** with examples ([`LoadReport::rejected`]),
//! never silently dropped: [`load_dir`] fails with [`LoadError::BadData`] when
//! no event is kept or more than [`LoadOptions::max_bad_rows`] of a file's rows
//! are rejected, naming the main reason, example lines and the fix. Exact
//! duplicates of an earlier kept row are removed and counted (not rejections).
//! A file that is not CSV of the expected kind (no header, a required column
//! missing, broken quoting) is [`LoadError::Format`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memchr::memchr;
use rayon::prelude::*;
use schemas::csv::{
    self as shared, ClockOption, ColumnMap, CsvError, EventLayout, PropertyLayout, Reason, Rejections, Window,
};

use crate::data::{
    plain_number, CategoryTree, Dataset, EventLog, IdNames, ItemProperty, ItemPropertyLog, LoadReport, PropertyValue,
    RawEvent, NAMED_ID_BASE,
};
use rustc_hash::FxHashMap;

/// The header the trainer writes (archives): RetailRocket's.
pub const EVENTS_HEADER: &str = shared::RETAILROCKET_EVENTS_HEADER;

/// Default share of rejected rows above which a load fails.
pub const DEFAULT_MAX_BAD_ROWS: f64 = 0.05;

/// Smallest chunk worth handing to another thread.
const MIN_CHUNK_BYTES: usize = 256 * 1024;

/// What the loader accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Earliest accepted timestamp (epoch ms, inclusive); `i64::MIN` = no bound.
    pub min_ts: i64,
    /// End of the accepted time range (epoch ms, exclusive); `i64::MAX` = no bound.
    pub max_ts: i64,
    /// The files' clock: detected per file, or fixed.
    pub clock: ClockOption,
    /// Header names for fields whose column has another name.
    pub columns: ColumnMap,
    /// Largest share of rejected rows (0..=1) a file may have and still load.
    pub max_bad_rows: f64,
}

impl Default for LoadOptions {
    /// All of time, clocks detected, RetailRocket or API column names, at most
    /// 5 % rejected rows.
    fn default() -> Self {
        Self {
            min_ts: i64::MIN,
            max_ts: i64::MAX,
            clock: ClockOption::Auto,
            columns: ColumnMap::default(),
            max_bad_rows: DEFAULT_MAX_BAD_ROWS,
        }
    }
}

impl LoadOptions {
    /// The time window as the shared reader takes it.
    pub fn window(&self) -> Window {
        Window {
            min: (self.min_ts != i64::MIN).then_some(self.min_ts),
            max: (self.max_ts != i64::MAX).then_some(self.max_ts),
        }
    }
}

/// Why a file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A required file does not exist.
    #[error("{}: file not found", path.display())]
    Missing { path: PathBuf },
    /// The file is not CSV of the expected kind (header, quoting).
    #[error("{}: {source}", path.display())]
    Format {
        path: PathBuf,
        #[source]
        source: CsvError,
    },
    /// A strictly numeric file (the category tree) holds a bad value.
    #[error("{}: line {line}: field `{field}`: {message}", path.display())]
    Malformed {
        path: PathBuf,
        /// 1-based line number in the file (the header is line 1).
        line: u64,
        field: &'static str,
        message: String,
    },
    /// The rows were read but too few are usable: nothing kept, or more than
    /// the allowed share rejected. The message names the main reason, example
    /// lines and the fix.
    #[error("{}: {message}", path.display())]
    BadData { path: PathBuf, message: String },
}

fn format_err(path: &Path) -> impl Fn(CsvError) -> LoadError + '_ {
    move |source| LoadError::Format { path: path.to_path_buf(), source }
}

/// Loads and cleans one events file, interning non-numeric ids into `names`,
/// and applies [`check_report`].
pub fn load_events(path: &Path, opts: &LoadOptions, names: &mut IdNames) -> Result<EventLog, LoadError> {
    let log = read_events(path, opts, names)?;
    check_report(&log.report, opts, true)?;
    Ok(log)
}

/// [`load_events`] without the quality check (for `inspect`).
pub fn read_events(path: &Path, opts: &LoadOptions, names: &mut IdNames) -> Result<EventLog, LoadError> {
    let bytes = read_file(path)?;
    let log = parse_events(path, &bytes, opts, default_chunks(bytes.len()), names)?;
    let r = &log.report;
    tracing::info!(
        file = %path.display(),
        rows = r.rows,
        kept = r.kept,
        rejected = r.rejected_rows(),
        duplicate = r.duplicate,
        clock = ?r.clock,
        "loaded events"
    );
    Ok(log)
}

/// Loads the `categoryid` and `available` rows of the item-properties files,
/// in the order of `paths` and, within a file, in row order; item ids are
/// interned into `names` (the events' namespace).
///
/// One [`LoadReport`] per file. There, `rows` counts every data row read, and
/// `kept` only the `categoryid` / `available` rows kept; rows of the other
/// (free-text) properties are skipped without parsing (`skipped`).
/// Duplicates are detected within one file.
pub fn read_item_properties(
    paths: &[PathBuf],
    opts: &LoadOptions,
    names: &mut IdNames,
) -> Result<ItemPropertyLog, LoadError> {
    let mut log = ItemPropertyLog::default();
    for path in paths {
        let bytes = read_file(path)?;
        let (rows, report) = parse_properties(path, &bytes, opts, default_chunks(bytes.len()), names)?;
        tracing::info!(
            file = %path.display(),
            rows = report.rows,
            kept = report.kept,
            skipped = report.skipped,
            rejected = report.rejected_rows(),
            duplicate = report.duplicate,
            "loaded item properties"
        );
        log.rows.extend_from_slice(&rows);
        log.reports.push(report);
    }
    Ok(log)
}

/// Loads `category_tree.csv` (`categoryid,parentid`, empty parent for roots).
pub fn load_category_tree(path: &Path) -> Result<CategoryTree, LoadError> {
    let bytes = read_file(path)?;
    let edges = parse_tree(path, &bytes)?;
    let rows = edges.len();
    let tree = CategoryTree::from_edges(edges);
    let roots = tree.parent.values().filter(|p| p.is_none()).count();
    tracing::info!(file = %path.display(), rows, categories = tree.parent.len(), roots, "loaded category tree");
    Ok(tree)
}

/// Loads a data directory ([`read_dir`]) and checks every file's report
/// ([`check_report`]): no events kept, or too many rows rejected, is an error.
pub fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<Dataset, LoadError> {
    let ds = read_dir(dir, opts)?;
    check_report(&ds.events.report, opts, true)?;
    if let Some(p) = &ds.properties {
        for r in &p.reports {
            check_report(r, opts, false)?;
        }
    }
    Ok(ds)
}

/// Reads a data directory: `events.csv` (required, [`LoadError::Missing`]
/// otherwise), every `item_properties_part*.csv` in part-number order
/// (`properties` is `None` when there is none) and `category_tree.csv`
/// (`tree` is `None` when missing). No quality check (see [`load_dir`]).
pub fn read_dir(dir: &Path, opts: &LoadOptions) -> Result<Dataset, LoadError> {
    let events_path = dir.join("events.csv");
    if !events_path.is_file() {
        return Err(LoadError::Missing { path: events_path });
    }
    let mut names = IdNames::default();
    let events = read_events(&events_path, opts, &mut names)?;

    let prop_paths = item_property_files(dir)?;
    let properties = if prop_paths.is_empty() {
        tracing::info!(dir = %dir.display(), "no item_properties_part*.csv: no item metadata");
        None
    } else {
        Some(read_item_properties(&prop_paths, opts, &mut names)?)
    };

    let tree_path = dir.join("category_tree.csv");
    let tree = if tree_path.is_file() {
        Some(load_category_tree(&tree_path)?)
    } else {
        tracing::info!(dir = %dir.display(), "no category_tree.csv");
        None
    };
    Ok(Dataset { events, properties, tree, names })
}

/// Fails a file whose rows are mostly unusable: with `require_rows`, one that
/// kept nothing; any file that rejected more than `opts.max_bad_rows` of the
/// rows it considered. The message names the main reason with example lines
/// and the fix.
pub fn check_report(r: &LoadReport, opts: &LoadOptions, require_rows: bool) -> Result<(), LoadError> {
    let rejected = r.rejected_rows();
    let considered = r.rows - r.skipped;
    let share = if considered == 0 { 0.0 } else { rejected as f64 / considered as f64 };
    let fail = |message: String| Err(LoadError::BadData { path: r.file.clone(), message });
    if require_rows && r.kept == 0 {
        if r.rows == 0 {
            return fail("no data rows after the header: nothing to train on".into());
        }
        if rejected == 0 {
            return fail(format!("no event kept of {} rows (all were duplicates)", r.rows));
        }
        return fail(format!("no event kept of {} rows: {}", r.rows, explain(r, opts)));
    }
    if share > opts.max_bad_rows {
        return fail(format!(
            "{rejected} of {considered} rows rejected ({:.1} %), more than the {:.1} % allowed \
             (--max-bad-rows, training.max_bad_rows): {}",
            100.0 * share,
            100.0 * opts.max_bad_rows,
            explain(r, opts)
        ));
    }
    Ok(())
}

/// The main reason of a report's rejections, its examples, the fix and the
/// other reasons.
fn explain(r: &LoadReport, opts: &LoadOptions) -> String {
    let reasons = r.rejected.by_count();
    let mut s = String::new();
    let Some(&(main, n)) = reasons.first() else {
        return "nothing rejected".into();
    };
    let _ = write!(s, "main reason {main} ({n} rows)");
    if let Some(c) = r.clock {
        let _ = write!(s, " with the clock read as {c}");
    }
    s.push_str("; e.g.");
    for e in r.rejected.examples(main) {
        let _ = write!(s, " line {} `{}` {:?} ({});", e.line, e.field, e.value, e.message);
    }
    let _ = write!(s, " fix: {}", main.fix());
    if main == Reason::OutsideWindow {
        let _ = write!(s, " (window [{}, {}))", opts.min_ts, opts.max_ts);
    }
    s.push_str(", or raise --max-bad-rows to load the rest");
    if reasons.len() > 1 {
        let others: Vec<String> = reasons[1..].iter().map(|(r, n)| format!("{n} {r}")).collect();
        let _ = write!(s, "; also {}", others.join(", "));
    }
    s
}

/// The `item_properties_part*.csv` files of `dir`, sorted by part number
/// (`part2` before `part10`), then by name.
fn item_property_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io_err = |source| LoadError::Io { path: dir.to_path_buf(), source };
    let mut found: Vec<(Option<u64>, String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(part) = name.strip_prefix("item_properties_part").and_then(|rest| rest.strip_suffix(".csv")) else {
            continue;
        };
        let path = entry.path();
        if path.is_file() {
            found.push((part.parse().ok(), name.to_owned(), path));
        }
    }
    // Numbered parts first in numeric order, then any odd names alphabetically.
    found.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
    Ok(found.into_iter().map(|(_, _, p)| p).collect())
}

fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            LoadError::Missing { path: path.to_path_buf() }
        } else {
            LoadError::Io { path: path.to_path_buf(), source }
        }
    })
}

/// Number of chunks for a body of `len` bytes: a few per thread, none tiny.
fn default_chunks(len: usize) -> usize {
    let by_size = (len / MIN_CHUNK_BYTES).max(1);
    by_size.min(rayon::current_num_threads() * 4)
}

/// Cuts `body` into at most `n` non-empty chunks, each ending right after a
/// `\n` (or at the end of the body), together covering the whole body.
fn chunk_bounds(body: &[u8], n: usize) -> Vec<(usize, usize)> {
    let n = n.max(1);
    let step = body.len() / n;
    let mut bounds = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..=n {
        if start >= body.len() {
            break;
        }
        let target = if k == n { body.len() } else { (step * k).max(start) };
        let end = if target >= body.len() {
            body.len()
        } else {
            memchr(b'\n', &body[target..]).map_or(body.len(), |p| target + p + 1)
        };
        bounds.push((start, end));
        start = end;
    }
    bounds
}

/// Non-numeric ids met in one chunk, numbered `NAMED_ID_BASE + n` locally
/// until the chunks are merged in file order.
#[derive(Debug, Default)]
struct LocalNames {
    // One allocation per name, shared by the list and the index.
    names: Vec<Arc<str>>,
    index: FxHashMap<Arc<str>, u64>,
}

impl LocalNames {
    fn id(&mut self, s: &str) -> u64 {
        if let Some(n) = plain_number(s) {
            return n;
        }
        if let Some(&n) = self.index.get(s) {
            return n;
        }
        let n = NAMED_ID_BASE + self.names.len() as u64;
        let name: Arc<str> = Arc::from(s);
        self.names.push(Arc::clone(&name));
        self.index.insert(name, n);
        n
    }

    /// Local number → global number, interning with `intern` in first-seen order.
    fn remap(&self, mut intern: impl FnMut(&str) -> u64) -> Vec<u64> {
        self.names.iter().map(|n| intern(n)).collect()
    }
}

fn global(map: &[u64], id: u64) -> u64 {
    match id.checked_sub(NAMED_ID_BASE) {
        Some(i) => map[i as usize],
        None => id,
    }
}

/// A transaction id as a number: its own when it is one, else a stable hash
/// of the text (it only tells exact duplicates apart, as for Kafka events).
fn txn_number(t: &str) -> u64 {
    t.parse::<u64>().unwrap_or_else(|_| {
        t.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    })
}

/// Per-chunk accumulator of rows, rejections and local names.
#[derive(Debug)]
struct Chunk<T> {
    kept: Vec<T>,
    rows: u64,
    skipped: u64,
    rejected: Rejections,
    users: LocalNames,
    items: LocalNames,
}

impl<T> Default for Chunk<T> {
    fn default() -> Self {
        Chunk {
            kept: Vec::new(),
            rows: 0,
            skipped: 0,
            rejected: Rejections::default(),
            users: LocalNames::default(),
            items: LocalNames::default(),
        }
    }
}

/// Runs `row(acc, line, fields)` over every record of `body` — in parallel
/// chunks when it has no quotes, else in one pass of the `csv` crate — and
/// returns the accumulators in file order with example lines set to file lines.
fn parse_body<T, F>(path: &Path, body: &[u8], chunks: usize, row: F) -> Result<Vec<Chunk<T>>, LoadError>
where
    T: Send,
    F: Fn(&mut Chunk<T>, u64, &[&[u8]]) + Sync,
{
    if !shared::is_plain(body) {
        let mut acc = Chunk::default();
        shared::for_each_quoted_record(body, 2, |line, fields| row(&mut acc, line, fields))
            .map_err(format_err(path))?;
        return Ok(vec![acc]);
    }
    let parts: Vec<(Chunk<T>, u64)> = chunk_bounds(body, chunks)
        .into_par_iter()
        .map(|(start, end)| {
            let mut acc = Chunk::default();
            // Lines relative to the chunk; shifted below once the chunks before are counted.
            let lines = shared::for_each_plain_record(&body[start..end], 0, |line, fields| row(&mut acc, line, fields));
            (acc, lines)
        })
        .collect();
    let mut out = Vec::with_capacity(parts.len());
    // The body starts at file line 2.
    let mut first_line = 2u64;
    for (mut acc, lines) in parts {
        acc.rejected.shift_lines(first_line);
        first_line += lines;
        out.push(acc);
    }
    Ok(out)
}

/// Header and clock of a file in memory.
fn open<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Vec<Vec<u8>>, &'a [u8]), LoadError> {
    let (header, body) = shared::split_header(bytes).map_err(format_err(path))?;
    Ok((header, body))
}

/// Parses and cleans the bytes of an `events.csv` (as [`load_events`] does
/// with the file's content, without its quality check); errors name the file
/// as `events.csv`. For callers that hold the bytes already, and for the
/// fuzzer. `chunks` = how many parallel pieces the body is cut into (0 = by
/// size, as the loader does); the result does not depend on it.
pub fn parse_events_bytes(bytes: &[u8], opts: &LoadOptions, chunks: usize) -> Result<EventLog, LoadError> {
    let chunks = if chunks == 0 { default_chunks(bytes.len()) } else { chunks };
    parse_events(Path::new("events.csv"), bytes, opts, chunks, &mut IdNames::default())
}

fn parse_events(
    path: &Path,
    bytes: &[u8],
    opts: &LoadOptions,
    chunks: usize,
    names: &mut IdNames,
) -> Result<EventLog, LoadError> {
    let (header, body) = open(path, bytes)?;
    let refs: Vec<&[u8]> = header.iter().map(Vec::as_slice).collect();
    let layout = EventLayout::resolve(&refs, &opts.columns).map_err(format_err(path))?;
    let ts_col = layout.0.column(shared::Field::Ts).unwrap_or(0);
    let clock = shared::body_clock(body, ts_col, opts.clock).map_err(format_err(path))?;
    let window = opts.window();
    let parsed = parse_body(path, body, chunks, |acc: &mut Chunk<RawEvent>, line, fields| {
        acc.rows += 1;
        match shared::event_row(fields, &layout, clock, &window) {
            Ok(r) => {
                let user = acc.users.id(r.user);
                let item = acc.items.id(r.item);
                acc.kept.push(RawEvent { ts: r.ts, user, item, kind: r.kind, txn: r.txn.map(txn_number) });
            }
            Err(reject) => acc.rejected.add(line, reject, fields, &layout.0, Some(clock)),
        }
    })?;
    let total: usize = parsed.iter().map(|c| c.kept.len()).sum();
    let mut events = Vec::with_capacity(total);
    let mut report = LoadReport { file: path.to_path_buf(), clock: Some(clock), ..LoadReport::default() };
    for c in parsed {
        let users = c.users.remap(|n| names.user(n));
        let items = c.items.remap(|n| names.item(n));
        if users.is_empty() && items.is_empty() {
            events.extend_from_slice(&c.kept);
        } else {
            events.extend(c.kept.iter().map(|e| RawEvent {
                user: global(&users, e.user),
                item: global(&items, e.item),
                ..*e
            }));
        }
        report.rows += c.rows;
        report.rejected.merge(&c.rejected);
    }
    report.sync_counters();
    report.duplicate = remove_duplicates(&mut events, hash_event) as u64;
    report.kept = events.len() as u64;
    Ok(EventLog { events, report })
}

/// Finishes an event log read from elsewhere (the Kafka topic) with the CSV
/// loader's last step: exact duplicates of an earlier event are removed
/// (counted in `report.duplicate`) and `report.kept` is set, so both sources
/// clean the same way.
pub fn finish_events(mut events: Vec<RawEvent>, mut report: LoadReport) -> EventLog {
    report.duplicate += remove_duplicates(&mut events, hash_event) as u64;
    report.kept = events.len() as u64;
    EventLog { events, report }
}

fn parse_properties(
    path: &Path,
    bytes: &[u8],
    opts: &LoadOptions,
    chunks: usize,
    names: &mut IdNames,
) -> Result<(Vec<ItemProperty>, LoadReport), LoadError> {
    let (header, body) = open(path, bytes)?;
    let refs: Vec<&[u8]> = header.iter().map(Vec::as_slice).collect();
    let layout = PropertyLayout::resolve(&refs, &opts.columns).map_err(format_err(path))?;
    let ts_col = layout.0.column(shared::Field::Ts).unwrap_or(0);
    let clock = shared::body_clock(body, ts_col, opts.clock).map_err(format_err(path))?;
    let window = opts.window();
    let parsed = parse_body(path, body, chunks, |acc: &mut Chunk<ItemProperty>, line, fields| {
        acc.rows += 1;
        match shared::property_row(fields, &layout, clock, &window) {
            Ok(Some(r)) => {
                let item = acc.items.id(r.item);
                let value = match r.value {
                    shared::PropertyValue::Category(c) => PropertyValue::Category(c),
                    shared::PropertyValue::Available(a) => PropertyValue::Available(a),
                };
                acc.kept.push(ItemProperty { ts: r.ts, item, value });
            }
            Ok(None) => acc.skipped += 1,
            Err(reject) => acc.rejected.add(line, reject, fields, &layout.0, Some(clock)),
        }
    })?;
    let mut rows = Vec::new();
    let mut report = LoadReport { file: path.to_path_buf(), clock: Some(clock), ..LoadReport::default() };
    for c in parsed {
        let items = c.items.remap(|n| names.item(n));
        rows.extend(c.kept.iter().map(|p| ItemProperty { item: global(&items, p.item), ..*p }));
        report.rows += c.rows;
        report.skipped += c.skipped;
        report.rejected.merge(&c.rejected);
    }
    report.sync_counters();
    report.duplicate = remove_duplicates(&mut rows, hash_property) as u64;
    report.kept = rows.len() as u64;
    Ok((rows, report))
}

/// The category tree: small and strictly numeric, so a bad value is an error
/// naming its line rather than a counted rejection.
fn parse_tree(path: &Path, bytes: &[u8]) -> Result<Vec<(u64, Option<u64>)>, LoadError> {
    let (header, body) = open(path, bytes)?;
    let col = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name.as_bytes()));
    let (Some(cat_col), Some(parent_col)) = (col("categoryid"), col("parentid")) else {
        return Err(LoadError::Malformed {
            path: path.to_path_buf(),
            line: 1,
            field: "header",
            message: format!(
                "expected columns categoryid and parentid, found {:?}",
                header.iter().map(|h| shared::show(h)).collect::<Vec<_>>().join(",")
            ),
        });
    };
    let mut edges = Vec::new();
    let mut first_err: Option<LoadError> = None;
    let mut row = |line: u64, fields: &[&[u8]]| {
        if first_err.is_some() {
            return;
        }
        let bad = |field: &'static str, v: &[u8]| LoadError::Malformed {
            path: path.to_path_buf(),
            line,
            field,
            message: format!("expected a non-negative integer, found {:?}", shared::show(v)),
        };
        let cat = fields.get(cat_col).copied().unwrap_or(b"");
        let parent = fields.get(parent_col).copied().unwrap_or(b"");
        let Some(c) = shared::parse_u64(cat) else {
            first_err = Some(bad("categoryid", cat));
            return;
        };
        let p = if parent.is_empty() {
            None
        } else {
            match shared::parse_u64(parent) {
                Some(p) => Some(p),
                None => {
                    first_err = Some(bad("parentid", parent));
                    return;
                }
            }
        };
        edges.push((c, p));
    };
    if shared::is_plain(body) {
        shared::for_each_plain_record(body, 2, &mut row);
    } else {
        shared::for_each_quoted_record(body, 2, &mut row).map_err(format_err(path))?;
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(edges),
    }
}

/// Folded 64×64→128 multiply: a fast, well-mixing combine step.
#[inline]
fn mix(h: u64, x: u64) -> u64 {
    let m = u128::from(h ^ x) * 0x9E37_79B9_7F4A_7C15_u128;
    (m as u64) ^ ((m >> 64) as u64)
}

fn hash_event(e: &RawEvent) -> u64 {
    let h = mix(0x243F_6A88_85A3_08D3, e.ts as u64);
    let h = mix(h, e.user);
    let h = mix(h, e.item);
    let h = mix(h, e.kind.index() as u64);
    match e.txn {
        Some(t) => mix(h ^ 1, t),
        None => mix(h, u64::MAX),
    }
}

fn hash_property(p: &ItemProperty) -> u64 {
    let h = mix(0x1319_8A2E_0370_7344, p.ts as u64);
    let h = mix(h, p.item);
    match p.value {
        PropertyValue::Category(c) => mix(h, c),
        PropertyValue::Available(a) => mix(h ^ 2, u64::from(a)),
    }
}

/// Removes every row equal to an earlier row, keeping the first occurrence and
/// the order of the rest; returns how many were removed.
///
/// Sorts (hash, index) pairs in parallel and compares rows only within runs of
/// equal hashes, so the cost is one parallel sort of 16-byte keys.
fn remove_duplicates<T, H>(rows: &mut Vec<T>, hash: H) -> usize
where
    T: PartialEq + Sync,
    H: Fn(&T) -> u64 + Sync,
{
    let mut keys: Vec<(u64, usize)> = rows.par_iter().enumerate().map(|(i, r)| (hash(r), i)).collect();
    keys.par_sort_unstable();
    let mut dup = vec![false; rows.len()];
    let mut removed = 0;
    let mut distinct: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < keys.len() {
        let mut j = i + 1;
        while j < keys.len() && keys[j].0 == keys[i].0 {
            j += 1;
        }
        if j - i > 1 {
            // Indices ascend within a run: the first of equal rows is kept.
            distinct.clear();
            distinct.push(keys[i].1);
            for &(_, idx) in &keys[i + 1..j] {
                if distinct.iter().any(|&d| rows[d] == rows[idx]) {
                    dup[idx] = true;
                    removed += 1;
                } else {
                    distinct.push(idx);
                }
            }
        }
        i = j;
    }
    if removed > 0 {
        let mut k = 0;
        rows.retain(|_| {
            let keep = !dup[k];
            k += 1;
            keep
        });
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::csv::TimeUnit;
    use schemas::EventKind;

    const H: &str = "timestamp,visitorid,event,itemid,transactionid\n";
    const PH: &str = "timestamp,itemid,property,value\n";
    /// A timestamp of 2015-06-02 in epoch ms.
    const T: i64 = 1_433_221_332_117;

    fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn ev(ts: i64, user: u64, kind: EventKind, item: u64, txn: Option<u64>) -> RawEvent {
        RawEvent { ts, user, item, kind, txn }
    }

    fn check_invariant(r: &LoadReport) {
        assert_eq!(r.rows, r.rejected_rows() + r.skipped + r.duplicate + r.kept, "{r:?}");
        assert_eq!(r.rejected.total(), r.rejected_rows(), "{r:?}");
    }

    fn events_with(content: &str, opts: &LoadOptions, chunks: usize) -> Result<EventLog, LoadError> {
        parse_events(Path::new("events.csv"), content.as_bytes(), opts, chunks, &mut IdNames::default())
    }

    fn events_from(content: &str, chunks: usize) -> Result<EventLog, LoadError> {
        events_with(content, &LoadOptions::default(), chunks)
    }

    #[test]
    fn every_rejection_reason_is_counted_with_examples() {
        let csv = format!(
            "{H}\
             {T},0,view,0,\n\
             ,1,view,2,\n\
             {T},,view,2,\n\
             {T},1,,2,\n\
             {T},1,view,,\n\
             {T},1,click,2,\n\
             {T},1,View,2,\n\
             x{T},1,view,2,\n\
             {T},a b,view,2,\n\
             {T},1,view,2/3,\n\
             {T},1,view,2,9\n\
             {T},1,transaction,2,#9\n\
             {T},1,view\n\
             {T},0,view,0,\n\
             {T},7,transaction,3,42\n\
             {T},7,transaction,3,43\n\
             {T},7,transaction,3,42\n\
             {T},7,addtocart,3,\n"
        );
        let log = events_from(&csv, 1).unwrap();
        let r = &log.report;
        assert_eq!(r.rows, 18);
        assert_eq!((r.null_field, r.unknown_event, r.bad_timestamp, r.bad_id, r.wrong_columns), (4, 2, 1, 4, 1));
        assert_eq!((r.duplicate, r.kept), (2, 4));
        assert_eq!(r.clock, Some(TimeUnit::Milliseconds));
        check_invariant(r);
        let c = |reason| r.rejected.count(reason);
        assert_eq!((c(Reason::BadUserId), c(Reason::BadItemId)), (1, 1));
        assert_eq!((c(Reason::BadTransactionId), c(Reason::TransactionIdNotOnTransaction)), (1, 1));
        let ex: Vec<_> = r.rejected.examples(Reason::EmptyField).collect();
        assert_eq!((ex[0].line, ex[0].field.as_str()), (3, "timestamp"));
        assert_eq!((ex[1].line, ex[1].field.as_str()), (4, "visitorid"));
        let bad_user = r.rejected.examples(Reason::BadUserId).next().unwrap();
        assert_eq!((bad_user.line, bad_user.value.as_str()), (10, "a b"));
        assert!(bad_user.message.contains("' '"), "{}", bad_user.message);
        assert_eq!(
            log.events,
            vec![
                ev(T, 0, EventKind::View, 0, None),
                ev(T, 7, EventKind::Transaction, 3, Some(42)),
                ev(T, 7, EventKind::Transaction, 3, Some(43)),
                ev(T, 7, EventKind::AddToCart, 3, None),
            ]
        );
    }

    #[test]
    fn a_time_window_is_explicit_and_counted() {
        let csv = format!("{H}{},1,view,1,\n{T},1,view,2,\n{},1,view,3,\n{},1,view,4,\n", T - 1, T + 9, T + 10);
        let opts = LoadOptions { min_ts: T, max_ts: T + 10, ..LoadOptions::default() };
        let log = events_with(&csv, &opts, 2).unwrap();
        assert_eq!((log.report.bad_timestamp, log.report.rejected.count(Reason::OutsideWindow)), (2, 2));
        let items: Vec<u64> = log.events.iter().map(|e| e.item).collect();
        assert_eq!(items, vec![2, 3]);
        // No window by default: the same file loads whole.
        assert_eq!(events_from(&csv, 2).unwrap().report.kept, 4);
    }

    #[test]
    fn a_log_of_the_1990s_loads_whole_in_any_clock() {
        // 1997-01-01 and a year later, in ms (as MovieLens converted) and s.
        let (a, b) = (852_076_800_000_i64, 883_612_800_000_i64);
        for (ta, tb, unit) in [
            (a.to_string(), b.to_string(), TimeUnit::Milliseconds),
            ((a / 1000).to_string(), (b / 1000).to_string(), TimeUnit::Seconds),
            ("1997-01-01T00:00:00Z".to_owned(), "1998-01-01 00:00:00".to_owned(), TimeUnit::Iso8601),
        ] {
            let csv = format!("{H}{ta},1,view,1,\n{tb},2,transaction,1,5\n");
            let log = events_from(&csv, 1).unwrap();
            assert_eq!((log.report.kept, log.report.clock), (2, Some(unit)));
            assert_eq!((log.events[0].ts, log.events[1].ts), (a, b));
        }
    }

    #[test]
    fn duplicates_keep_first_occurrence_and_order() {
        // Duplicates spread over chunks; the first copy stays in place.
        let csv = format!(
            "{H}{T},1,view,10,\n{T},2,view,20,\n{T},1,view,10,\n{},1,view,10,\n\
             {T},2,view,20,\n{T},3,view,30,\n{T},1,view,10,\n{T},1,addtocart,10,\n",
            T + 1
        );
        for chunks in [1, 2, 3, 8] {
            let log = events_from(&csv, chunks).unwrap();
            assert_eq!(log.report.duplicate, 3, "chunks {chunks}");
            assert_eq!(log.report.kept, 5);
            check_invariant(&log.report);
            let got: Vec<(i64, u64, u64)> = log.events.iter().map(|e| (e.ts, e.user, e.item)).collect();
            assert_eq!(got, vec![(T, 1, 10), (T, 2, 20), (T + 1, 1, 10), (T, 3, 30), (T, 1, 10)]);
            assert_eq!(log.events[4].kind, EventKind::AddToCart);
        }
    }

    #[test]
    fn crlf_bom_quotes_and_missing_final_newline() {
        let content =
            format!("\u{FEFF}{}\r\n{T},1,view,2,\r\n{T},3,transaction,4,99\r\n{T},5,addtocart,6,", H.trim_end());
        let log = events_from(&content, 1).unwrap();
        let want = vec![
            ev(T, 1, EventKind::View, 2, None),
            ev(T, 3, EventKind::Transaction, 4, Some(99)),
            ev(T, 5, EventKind::AddToCart, 6, None),
        ];
        assert_eq!(log.events, want);
        let lf = format!("{H}{T},1,view,2,\n{T},3,transaction,4,99\n{T},5,addtocart,6,\n");
        assert_eq!(events_from(&lf, 3).unwrap().events, want);
        let quoted = format!(
            "\"timestamp\",\"visitorid\",\"event\",\"itemid\",\"transactionid\"\r\n\
             \"{T}\",\"1\",\"view\",\"2\",\"\"\r\n{T},3,\"transaction\",4,\"99\"\n\"{T}\",5,addtocart,6,"
        );
        let q = events_from(&quoted, 1).unwrap();
        assert_eq!(q.events, want);
        // Blank lines are not rows but count as lines.
        let blank = format!("{H}\n{T},1,view,2,\r\n\r\n{T},3,transaction,4,99\r\nx,1,view,1,\n");
        let log = events_from(&blank, 1).unwrap();
        assert_eq!((log.report.rows, log.events.len()), (3, 2));
        assert_eq!(log.report.rejected.examples(Reason::BadTimestamp).next().unwrap().line, 6);
    }

    #[test]
    fn header_only_empty_and_unmapped_files() {
        for content in [H, H.trim_end(), "timestamp,visitorid,event,itemid,transactionid\r\n"] {
            let log = events_from(content, 4).unwrap();
            assert_eq!((log.report.rows, log.report.kept), (0, 0));
            let err = check_report(&log.report, &LoadOptions::default(), true).unwrap_err().to_string();
            assert!(err.contains("no data rows"), "{err}");
        }
        let err = events_from("", 1).unwrap_err().to_string();
        assert!(err.contains("empty file"), "{err}");
        let err = events_from("when,customer,event,sku\n1,2,view,3\n", 1).unwrap_err().to_string();
        assert!(err.contains("events.csv: line 1: no column for `ts`") && err.contains("--columns"), "{err}");
    }

    #[test]
    fn an_all_rejected_load_fails_naming_the_cause_lines_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from(H);
        for i in 0..50 {
            writeln!(csv, "{},{i},click,{i},", T + i).unwrap();
        }
        write(dir.path(), "events.csv", csv.as_bytes());
        let err = load_dir(dir.path(), &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, LoadError::BadData { .. }), "{err:?}");
        let text = err.to_string();
        for want in
            ["no event kept of 50 rows", "unknown_event (50 rows)", "line 2 `event` \"click\"", "line 3", "fix:"]
        {
            assert!(text.contains(want), "{want:?} missing from: {text}");
        }
        // A window that excludes everything says so and names the options.
        let mut csv = String::from(H);
        for i in 0..10 {
            writeln!(csv, "{},{i},view,{i},", 852_076_800_000_i64 + i).unwrap();
        }
        write(dir.path(), "events.csv", csv.as_bytes());
        let opts = LoadOptions { min_ts: schemas::DEFAULT_MIN_TS, ..LoadOptions::default() };
        let text = load_dir(dir.path(), &opts).unwrap_err().to_string();
        assert!(text.contains("outside_window") && text.contains("--min-ts"), "{text}");
    }

    #[test]
    fn more_rejected_than_allowed_fails_and_the_threshold_is_an_option() {
        let mut csv = String::from(H);
        for i in 0..100 {
            if i % 10 == 3 {
                writeln!(csv, "{T},{i},view,,").unwrap();
            } else {
                writeln!(csv, "{},{i},view,{i},", T + i).unwrap();
            }
        }
        let log = events_from(&csv, 3).unwrap();
        assert_eq!((log.report.null_field, log.report.kept), (10, 90));
        let err = check_report(&log.report, &LoadOptions::default(), true).unwrap_err().to_string();
        assert!(err.contains("10 of 100 rows rejected (10.0 %), more than the 5.0 %"), "{err}");
        assert!(err.contains("empty_field") && err.contains("line 5 `itemid`"), "{err}");
        let lenient = LoadOptions { max_bad_rows: 0.10, ..LoadOptions::default() };
        check_report(&log.report, &lenient, true).unwrap();
    }

    #[test]
    fn example_lines_are_file_lines_whatever_the_chunking() {
        let mut csv = String::from(H);
        for i in 0..2000 {
            match i {
                // Blank lines shift the numbering: they count as lines.
                100 | 101 => csv.push('\n'),
                1234 => csv.push_str("x,1,view,1,\n"),
                1700 => csv.push_str("1433221332117,y z,view,1,\n"),
                _ => writeln!(csv, "{},{},view,{},", T + i, i, i % 7).unwrap(),
            }
        }
        let single = events_from(&csv, 1).unwrap();
        for chunks in [1, 2, 3, 16, 200, 5000] {
            let log = events_from(&csv, chunks).unwrap();
            let r = &log.report;
            assert_eq!(r.rejected.examples(Reason::BadTimestamp).next().unwrap().line, 1236, "chunks {chunks}");
            assert_eq!(r.rejected.examples(Reason::BadUserId).next().unwrap().line, 1702, "chunks {chunks}");
            assert_eq!(r, &single.report, "chunks {chunks}");
        }
    }

    #[test]
    fn row_order_is_preserved_across_chunks() {
        let mut csv = String::from(H);
        let mut expected = Vec::new();
        let mut x: u64 = 12345;
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // Unique rows (item = i): no duplicate is removed.
            let ts = T + (x >> 40) as i64 % 1000;
            let (user, item) = (x % 97, i);
            let kind = EventKind::ALL[(i % 3) as usize];
            let txn = (kind == EventKind::Transaction).then_some(i);
            let txn_s = txn.map_or(String::new(), |t| t.to_string());
            let line_end = if i % 5 == 0 { "\r\n" } else { "\n" };
            write!(csv, "{ts},{user},{},{item},{txn_s}{line_end}", kind.as_str()).unwrap();
            expected.push(ev(ts, user, kind, item, txn));
        }
        let single = events_from(&csv, 1).unwrap();
        assert_same(&single.events, &expected);
        assert_eq!(single.report.kept, 10_000);
        for chunks in [2, 3, 7, 64, 999] {
            let log = events_from(&csv, chunks).unwrap();
            assert_same(&log.events, &expected);
            assert_eq!(log.report, single.report, "chunks {chunks}");
        }
    }

    /// Equality of long event lists, reporting the first difference only.
    fn assert_same(got: &[RawEvent], want: &[RawEvent]) {
        if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
            panic!("row {i}: got {:?}, want {:?}", got[i], want[i]);
        }
        assert_eq!(got.len(), want.len());
    }

    #[test]
    fn string_ids_are_interned_once_across_chunks_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from(H);
        for i in 0..3000 {
            writeln!(csv, "{},cust-{},view,SKU-{},", T + i, i % 13, i % 29).unwrap();
        }
        writeln!(csv, "{T},42,view,042,").unwrap();
        write(dir.path(), "events.csv", csv.as_bytes());
        write(
            dir.path(),
            "item_properties_part1.csv",
            format!("{PH}{T},SKU-3,categoryid,7\n{T},SKU-99,available,1\n").as_bytes(),
        );
        let ds = load_dir(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(ds.names.interned(), (13, 31), "13 customers; 29 SKUs, 042 and SKU-99");
        let last = ds.events.events.last().unwrap();
        assert_eq!((last.user, ds.names.item_name(last.item).as_str()), (42, "042"), "042 is not the number 42");
        let first = ds.events.events[0];
        assert_eq!((ds.names.user_name(first.user), ds.names.item_name(first.item)), ("cust-0".into(), "SKU-0".into()));
        let props = ds.properties.unwrap();
        assert_eq!(ds.names.item_name(props.rows[0].item), "SKU-3");
        assert!(ds.events.events.iter().any(|e| e.item == props.rows[0].item), "one namespace for both files");
        // Chunked and single-pass parses intern alike.
        let mut a = IdNames::default();
        let mut b = IdNames::default();
        let one = parse_events(Path::new("e"), csv.as_bytes(), &LoadOptions::default(), 1, &mut a).unwrap();
        let many = parse_events(Path::new("e"), csv.as_bytes(), &LoadOptions::default(), 9, &mut b).unwrap();
        assert_eq!(one.events, many.events);
        assert_eq!(a, b);
    }

    #[test]
    fn chunk_bounds_cover_the_body_at_line_starts() {
        let body = b"a,1\nbb,22\n\nccc,333\nd";
        for n in 1..=30 {
            let bounds = chunk_bounds(body, n);
            assert!(bounds.len() <= n);
            assert_eq!(bounds.first().unwrap().0, 0);
            assert_eq!(bounds.last().unwrap().1, body.len());
            for w in bounds.windows(2) {
                assert_eq!(w[0].1, w[1].0);
                assert_eq!(body[w[0].1 - 1], b'\n');
            }
            assert!(bounds.iter().all(|(s, e)| s < e));
        }
        assert!(chunk_bounds(b"", 4).is_empty());
    }

    #[test]
    fn load_events_from_file_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "events.csv", format!("{H}{T},0,view,0,\n").as_bytes());
        let log = load_events(&path, &LoadOptions::default(), &mut IdNames::default()).unwrap();
        assert_eq!(log.events, vec![ev(T, 0, EventKind::View, 0, None)]);
        assert_eq!(log.report.file, path);

        let missing = dir.path().join("nope.csv");
        match load_events(&missing, &LoadOptions::default(), &mut IdNames::default()) {
            Err(LoadError::Missing { path }) => assert_eq!(path, missing),
            other => panic!("expected Missing, got {other:?}"),
        }
    }

    #[test]
    fn item_properties_keep_category_and_available_only() {
        let dir = tempfile::tempdir().unwrap();
        let p1 = write(
            dir.path(),
            "item_properties_part1.csv",
            format!(
                "{PH}{T},0,categoryid,1016\n\
                 {T},5,888,1116713 960601 n277.200\n\
                 {T},5,790,n552.000 639502 n720.000 424566\n\
                 {T},5,weird,has,commas,in,it\n\
                 {},5,available,1\n\
                 {T},5,available,0\n\
                 {T},5,available,0\n\
                 {T},,categoryid,3\n\
                 {T},6,categoryid,\n\
                 {T},6,,3\n\
                 {T},6,categoryid,abc\n\
                 {T},6,available,true\n",
                T + 1
            )
            .as_bytes(),
        );
        let p2 = write(dir.path(), "item_properties_part2.csv", format!("{PH}{T},9,categoryid,7").as_bytes());
        let log =
            read_item_properties(&[p1.clone(), p2.clone()], &LoadOptions::default(), &mut IdNames::default()).unwrap();
        assert_eq!(
            log.rows,
            vec![
                ItemProperty { ts: T, item: 0, value: PropertyValue::Category(1016) },
                ItemProperty { ts: T + 1, item: 5, value: PropertyValue::Available(true) },
                ItemProperty { ts: T, item: 5, value: PropertyValue::Available(false) },
                ItemProperty { ts: T, item: 9, value: PropertyValue::Category(7) },
            ]
        );
        assert_eq!(log.reports.len(), 2);
        let r = &log.reports[0];
        assert_eq!(r.file, p1);
        assert_eq!((r.rows, r.null_field, r.bad_value, r.skipped, r.duplicate, r.kept), (12, 3, 2, 3, 1, 3));
        check_invariant(r);
        let bad = r.rejected.examples(Reason::BadValue).next().unwrap();
        assert_eq!((bad.line, bad.field.as_str(), bad.value.as_str()), (12, "value", "abc"));
        assert_eq!((log.reports[1].rows, log.reports[1].kept), (1, 1));
        // 5 of 9 considered rows rejected: over the threshold.
        let err = check_report(r, &LoadOptions::default(), false).unwrap_err().to_string();
        assert!(err.contains("5 of 9 rows rejected"), "{err}");
    }

    #[test]
    fn category_tree_loads_roots_and_rejects_bad_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "category_tree.csv", b"categoryid,parentid\r\n1,\r\n2,1\r\n3,2\r\n0,\r\n");
        let tree = load_category_tree(&path).unwrap();
        assert_eq!(tree.parent.len(), 4);
        assert_eq!(tree.parent[&0], None);
        assert_eq!(tree.parent[&3], Some(2));
        assert_eq!(tree.depth(3), 3);
        assert_eq!(tree.children[&1], vec![2]);

        let malformed = |p: &Path| match load_category_tree(p).unwrap_err() {
            LoadError::Malformed { line, field, .. } => (line, field),
            other => panic!("expected Malformed, got {other:?}"),
        };
        let bad = write(dir.path(), "bad.csv", b"categoryid,parentid\n1,\n2,x\n");
        assert_eq!(malformed(&bad), (3, "parentid"));
        let bad = write(dir.path(), "bad2.csv", b"categoryid,parentid\n,1\n");
        assert_eq!(malformed(&bad), (2, "categoryid"));
        let bad = write(dir.path(), "bad3.csv", b"category,parent\n1,\n");
        assert_eq!(malformed(&bad), (1, "header"));
    }

    #[test]
    fn load_dir_required_and_optional_files() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LoadOptions::default();
        match load_dir(dir.path(), &opts) {
            Err(LoadError::Missing { path }) => assert_eq!(path, dir.path().join("events.csv")),
            other => panic!("expected Missing, got {other:?}"),
        }
        let err = load_dir(dir.path(), &opts).unwrap_err().to_string();
        assert!(err.contains("events.csv") && err.contains("not found"), "{err}");

        write(dir.path(), "events.csv", format!("{H}{T},1,view,2,\n").as_bytes());
        let ds = load_dir(dir.path(), &opts).unwrap();
        assert_eq!(ds.events.events.len(), 1);
        assert!(ds.properties.is_none());
        assert!(ds.tree.is_none());

        // Parts are read in numeric order (2 before 10), unrelated files ignored.
        write(dir.path(), "item_properties_part10.csv", format!("{PH}{T},10,categoryid,10\n").as_bytes());
        write(dir.path(), "item_properties_part2.csv", format!("{PH}{T},2,categoryid,2\n").as_bytes());
        write(dir.path(), "item_properties_part1.csv", format!("{PH}{T},1,categoryid,1\n").as_bytes());
        write(dir.path(), "item_properties_notes.txt", b"ignored");
        write(dir.path(), "category_tree.csv", b"categoryid,parentid\n1,\n2,1\n");
        let ds = load_dir(dir.path(), &opts).unwrap();
        let props = ds.properties.unwrap();
        let items: Vec<u64> = props.rows.iter().map(|p| p.item).collect();
        assert_eq!(items, vec![1, 2, 10]);
        assert_eq!(props.reports.len(), 3);
        assert_eq!(ds.tree.unwrap().parent.len(), 2);
    }

    #[test]
    fn real_sample() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/retailrocket-sample");
        if !dir.join("events.csv").is_file() {
            println!("skipping: {} not found", dir.display());
            return;
        }
        let ds = load_dir(&dir, &LoadOptions::default()).unwrap();
        let r = &ds.events.report;
        check_invariant(r);
        assert_eq!(r.rows, 9_385);
        assert_eq!(r.rejected_rows(), 0);
        assert_eq!(r.clock, Some(TimeUnit::Milliseconds));
        // The sample holds three exact duplicate rows (2 addtocart, 1 view).
        assert_eq!(r.duplicate, 3);
        assert_eq!(r.kept, 9_382);
        let count = |k| ds.events.events.iter().filter(|e| e.kind == k).count();
        assert_eq!(
            (count(EventKind::View), count(EventKind::AddToCart), count(EventKind::Transaction)),
            (9_076 - 1, 263 - 2, 46)
        );
        assert!(ds.events.events.iter().filter(|e| e.kind == EventKind::Transaction).all(|e| e.txn.is_some()));
        assert!(ds.properties.is_none());
        let tree = ds.tree.unwrap();
        assert_eq!(tree.parent.len(), 1_669);
        assert_eq!(tree.parent.values().filter(|p| p.is_none()).count(), 25);
        // Same events with every chunking.
        let bytes = std::fs::read(dir.join("events.csv")).unwrap();
        for chunks in [1, 3, 50] {
            let log = parse_events_bytes(&bytes, &LoadOptions::default(), chunks).unwrap();
            assert_same(&log.events, &ds.events.events);
        }
    }

    /// What `datagen` writes, the loader reads whole: every row kept, both
    /// property files, the whole category tree.
    #[test]
    fn the_loader_reads_the_generated_data() {
        let dir = tempfile::tempdir().unwrap();
        let report = datagen::generate(&datagen::GenerateConfig::new(20_000, 2), dir.path(), None).unwrap();
        let ds = load_dir(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(ds.events.report.rows, 20_000);
        assert_eq!(ds.events.report.kept, 20_000, "{:?}", ds.events.report);
        let props = ds.properties.expect("properties");
        assert_eq!(props.reports.len(), 2);
        assert_eq!(props.reports.iter().map(|r| r.rows).sum::<u64>(), report.property_rows);
        assert_eq!(ds.tree.expect("tree").parent.len(), 1669);
    }

    /// A synthetic 2.75 M-row events file (RetailRocket shape).
    fn bench_file(dir: &Path) -> PathBuf {
        let mut s = String::with_capacity(120 << 20);
        s.push_str(H);
        let mut x: u64 = 7;
        for i in 0..2_750_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let ts = 1_430_622_000_000 + (x >> 30) % 11_836_800_000;
            let (user, item) = ((x >> 7) % 1_407_580, (x >> 3) % 235_061);
            let (kind, txn) = match i % 100 {
                0 => ("transaction", (i / 100).to_string()),
                1..=2 => ("addtocart", String::new()),
                _ => ("view", String::new()),
            };
            writeln!(s, "{ts},{user},{kind},{item},{txn}").unwrap();
        }
        write(dir, "events.csv", s.as_bytes())
    }

    /// Load time of a 2.75 M-row events file: the synthetic one, or the file
    /// `RECSYS_BENCH_EVENTS` names (e.g. `generate --events 2750000`'s).
    /// Run with `cargo test --release -p batch-trainer --lib -- --ignored --nocapture load_speed`.
    #[test]
    #[ignore = "timing, release only"]
    fn load_speed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, generated) = match std::env::var_os("RECSYS_BENCH_EVENTS") {
            Some(p) => (PathBuf::from(p), false),
            None => (bench_file(dir.path()), true),
        };
        let opts = LoadOptions::default();
        let _warm = load_events(&path, &opts, &mut IdNames::default()).unwrap();
        let mut times = Vec::new();
        let mut log = EventLog::default();
        for _ in 0..5 {
            let start = std::time::Instant::now();
            log = load_events(&path, &opts, &mut IdNames::default()).unwrap();
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        println!(
            "load_events: {} rows, {} kept, clock {} in {:.3} s (median of 5; min {:.3} s) on {} threads",
            log.report.rows,
            log.report.kept,
            log.report.clock.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            times[2],
            times[0],
            rayon::current_num_threads()
        );
        check_invariant(&log.report);
        if generated {
            assert_eq!(log.report.rows, 2_750_000);
        }
        let w = crate::preprocess::Weights::default();
        let start = std::time::Instant::now();
        let pairs = crate::preprocess::build_pairs(&log.events, &w);
        let t_pairs = start.elapsed();
        let start = std::time::Instant::now();
        let cfg = crate::preprocess::FilterConfig::default();
        let (kept, report) = crate::preprocess::filter_pairs(pairs.clone(), &cfg);
        println!(
            "build_pairs: {} pairs in {:.3} s; filter_pairs: {} kept in {:.3} s",
            pairs.len(),
            t_pairs.as_secs_f64(),
            kept.len(),
            start.elapsed().as_secs_f64()
        );
        assert_eq!(report.pairs_in, pairs.len());
    }
}
