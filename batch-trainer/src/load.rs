//! Fast loading of the RetailRocket CSV files into the in-memory [`Dataset`].
//!
//! Files of a data directory (see [`load_dir`]):
//! - `events.csv` — `timestamp,visitorid,event,itemid,transactionid` (required);
//! - `item_properties_part*.csv` — `timestamp,itemid,property,value` (optional);
//!   only the `categoryid` and `available` properties are kept;
//! - `category_tree.csv` — `categoryid,parentid` (optional; empty parent = root).
//!
//! How a file is read: the whole file is read into memory, a UTF-8 BOM is
//! skipped, the header is checked, and the body is cut into chunks at line
//! boundaries that are parsed in parallel (rayon) straight from the bytes — no
//! allocation per row. Chunk results are concatenated in chunk order, so the
//! file's row order is kept (it breaks timestamp ties later). `\r\n` line
//! endings and a missing final newline are accepted; blank lines are skipped
//! (they count for line numbers but not as rows).
//!
//! Bad data is handled in two ways:
//! - **counted rejections** (recorded in [`LoadReport`], not errors): an empty
//!   required field (`null_field`), an unknown event type (`unknown_event`), a
//!   timestamp outside `[min_ts, max_ts)` (`bad_timestamp`), an exact duplicate
//!   of an earlier kept row (`duplicate`). A row is counted under the first
//!   reason that applies, in that order.
//! - **errors** ([`LoadError::Malformed`]): a wrong header, a wrong number of
//!   columns, or a field that should be a non-negative integer and is not. The
//!   error names the file, the 1-based line (header = line 1) and the field, and
//!   is always the first such line in file order, whatever the chunking.

use std::path::{Path, PathBuf};

use memchr::memchr;
use rayon::prelude::*;
use schemas::EventKind;

use crate::data::{
    CategoryTree, Dataset, EventLog, ItemProperty, ItemPropertyLog, LoadReport, PropertyValue, RawEvent,
};

/// 2010-01-01T00:00:00Z in epoch milliseconds.
pub const DEFAULT_MIN_TS: i64 = 1_262_304_000_000;
/// 2030-01-01T00:00:00Z in epoch milliseconds.
pub const DEFAULT_MAX_TS: i64 = 1_893_456_000_000;

/// Expected header of `events.csv`.
pub const EVENTS_HEADER: &str = "timestamp,visitorid,event,itemid,transactionid";
/// Expected header of `item_properties_part*.csv`.
pub const PROPERTIES_HEADER: &str = "timestamp,itemid,property,value";
/// Expected header of `category_tree.csv`.
pub const TREE_HEADER: &str = "categoryid,parentid";

const EVENT_FIELDS: [&str; 5] = ["timestamp", "visitorid", "event", "itemid", "transactionid"];
const PROPERTY_FIELDS: [&str; 4] = ["timestamp", "itemid", "property", "value"];
const TREE_FIELDS: [&str; 2] = ["categoryid", "parentid"];

/// Smallest chunk worth handing to another thread.
const MIN_CHUNK_BYTES: usize = 256 * 1024;

/// What the loader accepts.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Earliest accepted timestamp (epoch ms, inclusive).
    pub min_ts: i64,
    /// End of the accepted time range (epoch ms, exclusive).
    pub max_ts: i64,
}

impl Default for LoadOptions {
    /// 2010-01-01 (inclusive) to 2030-01-01 (exclusive), as the original system.
    fn default() -> Self {
        Self { min_ts: DEFAULT_MIN_TS, max_ts: DEFAULT_MAX_TS }
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
    /// The file's content does not have the expected format.
    #[error("{}: line {line}: field `{field}`: {message}", path.display())]
    Malformed {
        path: PathBuf,
        /// 1-based line number in the file (the header is line 1).
        line: u64,
        /// Column name, or `header` for a bad or missing header.
        field: &'static str,
        message: String,
    },
}

/// A field-level problem found while parsing one line (no position yet).
#[derive(Debug)]
struct FieldError {
    field: &'static str,
    message: String,
}

/// Loads and cleans `events.csv`. See the module docs for what is rejected.
///
/// `report.rows` = data rows read, `report.kept` = events returned, and
/// `rows = null_field + unknown_event + bad_timestamp + duplicate + kept`.
pub fn load_events(path: &Path, opts: &LoadOptions) -> Result<EventLog, LoadError> {
    let bytes = read_file(path)?;
    let log = parse_events(path, &bytes, opts, default_chunks(bytes.len()))?;
    let r = &log.report;
    tracing::info!(
        file = %path.display(),
        rows = r.rows,
        kept = r.kept,
        null_field = r.null_field,
        unknown_event = r.unknown_event,
        bad_timestamp = r.bad_timestamp,
        duplicate = r.duplicate,
        "loaded events"
    );
    Ok(log)
}

/// Loads the `categoryid` and `available` rows of the item-properties files,
/// in the order of `paths` and, within a file, in row order.
///
/// One [`LoadReport`] per file. There, `rows` counts every data row read, and
/// `kept` only the `categoryid` / `available` rows kept; rows of the other
/// (free-text) properties are skipped without parsing, and their number is
/// `rows - null_field - bad_timestamp - duplicate - kept`. The rejection
/// counters apply to `categoryid` / `available` rows only (plus `null_field`
/// for an empty property name); `unknown_event` is always 0. Duplicates are
/// detected within one file.
pub fn load_item_properties(paths: &[PathBuf], opts: &LoadOptions) -> Result<ItemPropertyLog, LoadError> {
    let mut log = ItemPropertyLog::default();
    for path in paths {
        let bytes = read_file(path)?;
        let (rows, report) = parse_properties(path, &bytes, opts, default_chunks(bytes.len()))?;
        tracing::info!(
            file = %path.display(),
            rows = report.rows,
            kept = report.kept,
            null_field = report.null_field,
            bad_timestamp = report.bad_timestamp,
            duplicate = report.duplicate,
            "loaded item properties"
        );
        if log.rows.is_empty() {
            log.rows = rows;
        } else {
            log.rows.extend_from_slice(&rows);
        }
        log.reports.push(report);
    }
    Ok(log)
}

/// Loads `category_tree.csv` (`categoryid,parentid`, empty parent for roots).
pub fn load_category_tree(path: &Path) -> Result<CategoryTree, LoadError> {
    let bytes = read_file(path)?;
    let edges = parse_tree(path, &bytes, default_chunks(bytes.len()))?;
    let rows = edges.len();
    let tree = CategoryTree::from_edges(edges);
    let roots = tree.parent.values().filter(|p| p.is_none()).count();
    tracing::info!(
        file = %path.display(),
        rows,
        categories = tree.parent.len(),
        roots,
        "loaded category tree"
    );
    Ok(tree)
}

/// Loads a data directory: `events.csv` (required, [`LoadError::Missing`]
/// otherwise), every `item_properties_part*.csv` in part-number order
/// (`properties` is `None` when there is none) and `category_tree.csv`
/// (`tree` is `None` when missing).
pub fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<Dataset, LoadError> {
    let events_path = dir.join("events.csv");
    if !events_path.is_file() {
        return Err(LoadError::Missing { path: events_path });
    }
    let events = load_events(&events_path, opts)?;

    let prop_paths = item_property_files(dir)?;
    let properties = if prop_paths.is_empty() {
        tracing::info!(dir = %dir.display(), "no item_properties_part*.csv: no item metadata");
        None
    } else {
        Some(load_item_properties(&prop_paths, opts)?)
    };

    let tree_path = dir.join("category_tree.csv");
    let tree = if tree_path.is_file() {
        Some(load_category_tree(&tree_path)?)
    } else {
        tracing::info!(dir = %dir.display(), "no category_tree.csv");
        None
    };
    Ok(Dataset { events, properties, tree, names: crate::data::IdNames::default() })
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

/// Skips a UTF-8 BOM, checks the header line and returns the body after it.
fn split_header<'a>(path: &Path, bytes: &'a [u8], expected: &str) -> Result<&'a [u8], LoadError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let (header, body) = match memchr(b'\n', bytes) {
        Some(p) => (&bytes[..p], &bytes[p + 1..]),
        None => (bytes, &bytes[bytes.len()..]),
    };
    let header = header.strip_suffix(b"\r").unwrap_or(header);
    if header != expected.as_bytes() {
        let message = if bytes.is_empty() {
            format!("empty file; expected header {expected:?}")
        } else {
            format!("expected header {expected:?}, found {:?}", show(header))
        };
        return Err(LoadError::Malformed { path: path.to_path_buf(), line: 1, field: "header", message });
    }
    Ok(body)
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

/// Parses `body` (the file after its header line) in `n` parallel chunks.
///
/// `row` is called for every non-blank line (without its `\r\n`) on the chunk's
/// accumulator; accumulators are returned in file order. On error, returns the
/// 1-based file line of the first bad line in file order and its error.
fn parse_chunks<S, I, F>(path: &Path, body: &[u8], n: usize, init: I, row: F) -> Result<Vec<S>, LoadError>
where
    S: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, &[u8]) -> Result<(), FieldError> + Sync,
{
    let results: Vec<Result<(S, u64), (u64, FieldError)>> =
        chunk_bounds(body, n).into_par_iter().map(|(start, end)| parse_chunk(&body[start..end], &init, &row)).collect();
    let mut out = Vec::with_capacity(results.len());
    // Lines before the current chunk; the body starts at file line 2.
    let mut lines_before = 0u64;
    for result in results {
        match result {
            Ok((acc, lines)) => {
                lines_before += lines;
                out.push(acc);
            }
            Err((rel, e)) => {
                return Err(LoadError::Malformed {
                    path: path.to_path_buf(),
                    line: 2 + lines_before + rel,
                    field: e.field,
                    message: e.message,
                });
            }
        }
    }
    Ok(out)
}

/// Parses one chunk; returns its accumulator and line count, or the 0-based
/// line index within the chunk of the first bad line.
fn parse_chunk<S, I, F>(chunk: &[u8], init: &I, row: &F) -> Result<(S, u64), (u64, FieldError)>
where
    I: Fn() -> S,
    F: Fn(&mut S, &[u8]) -> Result<(), FieldError>,
{
    let mut acc = init();
    let mut pos = 0;
    let mut line_no = 0u64;
    while pos < chunk.len() {
        let end = memchr(b'\n', &chunk[pos..]).map_or(chunk.len(), |p| pos + p);
        let line = &chunk[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            row(&mut acc, line).map_err(|e| (line_no, e))?;
        }
        line_no += 1;
        pos = end + 1;
    }
    Ok((acc, line_no))
}

/// Splits a line into exactly `N` comma-separated fields. With `rest_in_last`,
/// the last field takes the rest of the line, commas included.
fn split_fields<'a, const N: usize>(
    line: &'a [u8],
    names: &[&'static str; N],
    rest_in_last: bool,
) -> Result<[&'a [u8]; N], FieldError> {
    let mut out: [&[u8]; N] = [&line[..0]; N];
    let mut k = 0;
    let mut start = 0;
    for (i, &b) in line.iter().enumerate() {
        if b == b',' {
            if k + 1 == N {
                if rest_in_last {
                    break;
                }
                let found = N + 1 + line[i + 1..].iter().filter(|&&c| c == b',').count();
                return Err(FieldError {
                    field: names[N - 1],
                    message: format!("expected {N} columns, found {found}"),
                });
            }
            out[k] = &line[start..i];
            k += 1;
            start = i + 1;
        }
    }
    out[k] = &line[start..];
    k += 1;
    if k < N {
        return Err(FieldError {
            field: names[k],
            message: format!("missing column: expected {N} columns, found {k}"),
        });
    }
    Ok(out)
}

/// A non-negative decimal integer without sign or spaces.
fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

fn parse_id(b: &[u8], field: &'static str) -> Result<u64, FieldError> {
    parse_u64(b)
        .ok_or_else(|| FieldError { field, message: format!("expected a non-negative integer, found {:?}", show(b)) })
}

fn parse_ts(b: &[u8], field: &'static str) -> Result<i64, FieldError> {
    parse_u64(b).and_then(|v| i64::try_from(v).ok()).ok_or_else(|| FieldError {
        field,
        message: format!("expected a non-negative integer (epoch ms), found {:?}", show(b)),
    })
}

/// Bytes for an error message: lossy UTF-8, cut at 64 characters.
fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 64 {
        let cut: String = s.chars().take(64).collect();
        format!("{cut}…")
    } else {
        s.into_owned()
    }
}

/// Per-chunk accumulator of rows and rejection counters.
#[derive(Debug)]
struct Chunk<T> {
    kept: Vec<T>,
    rows: u64,
    null_field: u64,
    unknown_event: u64,
    bad_timestamp: u64,
}

impl<T> Default for Chunk<T> {
    fn default() -> Self {
        Self { kept: Vec::new(), rows: 0, null_field: 0, unknown_event: 0, bad_timestamp: 0 }
    }
}

/// Concatenates chunk results in order and sums their counters.
fn merge_chunks<T: Copy>(path: &Path, chunks: Vec<Chunk<T>>) -> (Vec<T>, LoadReport) {
    let total: usize = chunks.iter().map(|c| c.kept.len()).sum();
    let mut kept = Vec::with_capacity(total);
    let mut report = LoadReport { file: path.to_path_buf(), ..LoadReport::default() };
    for c in chunks {
        kept.extend_from_slice(&c.kept);
        report.rows += c.rows;
        report.null_field += c.null_field;
        report.unknown_event += c.unknown_event;
        report.bad_timestamp += c.bad_timestamp;
    }
    (kept, report)
}

/// Parses and cleans the bytes of an `events.csv` (as [`load_events`] does
/// with the file's content); errors name the file as `events.csv`. For
/// callers that hold the bytes already, and for the fuzzer. `chunks` = how
/// many parallel pieces the body is cut into (0 = by size, as the loader does);
/// the result does not depend on it.
pub fn parse_events_bytes(bytes: &[u8], opts: &LoadOptions, chunks: usize) -> Result<EventLog, LoadError> {
    let chunks = if chunks == 0 { default_chunks(bytes.len()) } else { chunks };
    parse_events(Path::new("events.csv"), bytes, opts, chunks)
}

fn parse_events(path: &Path, bytes: &[u8], opts: &LoadOptions, chunks: usize) -> Result<EventLog, LoadError> {
    let body = split_header(path, bytes, EVENTS_HEADER)?;
    let parsed = parse_chunks(path, body, chunks, Chunk::<RawEvent>::default, |acc, line| event_row(acc, line, opts))?;
    let (mut events, mut report) = merge_chunks(path, parsed);
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

fn event_row(acc: &mut Chunk<RawEvent>, line: &[u8], opts: &LoadOptions) -> Result<(), FieldError> {
    acc.rows += 1;
    let [ts, user, event, item, txn] = split_fields(line, &EVENT_FIELDS, false)?;
    if ts.is_empty() || user.is_empty() || event.is_empty() || item.is_empty() {
        acc.null_field += 1;
        return Ok(());
    }
    let ts = parse_ts(ts, "timestamp")?;
    let user = parse_id(user, "visitorid")?;
    let item = parse_id(item, "itemid")?;
    let txn = if txn.is_empty() { None } else { Some(parse_id(txn, "transactionid")?) };
    let Some(kind) = EventKind::from_bytes(event) else {
        acc.unknown_event += 1;
        return Ok(());
    };
    if ts < opts.min_ts || ts >= opts.max_ts {
        acc.bad_timestamp += 1;
        return Ok(());
    }
    acc.kept.push(RawEvent { ts, user, item, kind, txn });
    Ok(())
}

fn parse_properties(
    path: &Path,
    bytes: &[u8],
    opts: &LoadOptions,
    chunks: usize,
) -> Result<(Vec<ItemProperty>, LoadReport), LoadError> {
    let body = split_header(path, bytes, PROPERTIES_HEADER)?;
    let parsed =
        parse_chunks(path, body, chunks, Chunk::<ItemProperty>::default, |acc, line| property_row(acc, line, opts))?;
    let (mut rows, mut report) = merge_chunks(path, parsed);
    report.duplicate = remove_duplicates(&mut rows, hash_property) as u64;
    report.kept = rows.len() as u64;
    Ok((rows, report))
}

fn property_row(acc: &mut Chunk<ItemProperty>, line: &[u8], opts: &LoadOptions) -> Result<(), FieldError> {
    acc.rows += 1;
    // Free-text values of other properties may hold anything: take the rest
    // of the line as the value and never look at it unless it is kept.
    let [ts, item, property, value] = split_fields(line, &PROPERTY_FIELDS, true)?;
    let is_category = match property {
        b"categoryid" => true,
        b"available" => false,
        b"" => {
            acc.null_field += 1;
            return Ok(());
        }
        _ => return Ok(()),
    };
    if ts.is_empty() || item.is_empty() || value.is_empty() {
        acc.null_field += 1;
        return Ok(());
    }
    let ts = parse_ts(ts, "timestamp")?;
    let item = parse_id(item, "itemid")?;
    let value = if is_category {
        PropertyValue::Category(parse_u64(value).ok_or_else(|| FieldError {
            field: "value",
            message: format!("categoryid must be a non-negative integer, found {:?}", show(value)),
        })?)
    } else {
        PropertyValue::Available(match value {
            b"1" => true,
            b"0" => false,
            _ => {
                return Err(FieldError {
                    field: "value",
                    message: format!("available must be 0 or 1, found {:?}", show(value)),
                })
            }
        })
    };
    if ts < opts.min_ts || ts >= opts.max_ts {
        acc.bad_timestamp += 1;
        return Ok(());
    }
    acc.kept.push(ItemProperty { ts, item, value });
    Ok(())
}

fn parse_tree(path: &Path, bytes: &[u8], chunks: usize) -> Result<Vec<(u64, Option<u64>)>, LoadError> {
    let body = split_header(path, bytes, TREE_HEADER)?;
    let parsed = parse_chunks(path, body, chunks, Vec::new, |acc, line| {
        let [cat, parent] = split_fields(line, &TREE_FIELDS, false)?;
        let cat = parse_id(cat, "categoryid")?;
        let parent = if parent.is_empty() { None } else { Some(parse_id(parent, "parentid")?) };
        acc.push((cat, parent));
        Ok(())
    })?;
    Ok(parsed.concat())
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
    use std::fmt::Write as _;

    const H: &str = "timestamp,visitorid,event,itemid,transactionid\n";
    const PH: &str = "timestamp,itemid,property,value\n";
    /// A timestamp inside the default range (2015-06-02).
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
        assert_eq!(r.rows, r.null_field + r.unknown_event + r.bad_timestamp + r.duplicate + r.kept, "{r:?}");
    }

    fn events_from(content: &str, chunks: usize) -> Result<EventLog, LoadError> {
        parse_events(Path::new("events.csv"), content.as_bytes(), &LoadOptions::default(), chunks)
    }

    fn malformed(err: LoadError) -> (u64, &'static str, String) {
        let text = err.to_string();
        match err {
            LoadError::Malformed { line, field, .. } => (line, field, text),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn every_rejection_reason_is_counted() {
        let min = DEFAULT_MIN_TS;
        let max = DEFAULT_MAX_TS;
        let csv = format!(
            "{H}\
             {T},0,view,0,\n\
             ,1,view,2,\n\
             {T},,view,2,\n\
             {T},1,,2,\n\
             {T},1,view,,\n\
             {T},1,click,2,\n\
             {T},1,View,2,\n\
             {},1,view,2,\n\
             {min},1,view,2,\n\
             {},1,view,2,\n\
             {max},1,view,2,\n\
             {T},0,view,0,\n\
             {T},7,transaction,3,42\n\
             {T},7,transaction,3,43\n\
             {T},7,transaction,3,42\n\
             {T},7,addtocart,3,\n",
            min - 1,
            max - 1,
        );
        let log = events_from(&csv, 1).unwrap();
        let r = &log.report;
        assert_eq!(r.rows, 16);
        assert_eq!(r.null_field, 4);
        assert_eq!(r.unknown_event, 2);
        assert_eq!(r.bad_timestamp, 2);
        assert_eq!(r.duplicate, 2);
        assert_eq!(r.kept, 6);
        check_invariant(r);
        assert_eq!(
            log.events,
            vec![
                ev(T, 0, EventKind::View, 0, None),
                ev(min, 1, EventKind::View, 2, None),
                ev(max - 1, 1, EventKind::View, 2, None),
                ev(T, 7, EventKind::Transaction, 3, Some(42)),
                ev(T, 7, EventKind::Transaction, 3, Some(43)),
                ev(T, 7, EventKind::AddToCart, 3, None),
            ]
        );
    }

    #[test]
    fn custom_time_range() {
        let csv = format!("{H}5,1,view,1,\n10,1,view,2,\n19,1,view,3,\n20,1,view,4,\n");
        let opts = LoadOptions { min_ts: 10, max_ts: 20 };
        let log = parse_events(Path::new("e.csv"), csv.as_bytes(), &opts, 2).unwrap();
        assert_eq!(log.report.bad_timestamp, 2);
        let items: Vec<u64> = log.events.iter().map(|e| e.item).collect();
        assert_eq!(items, vec![2, 3]);
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
    fn crlf_bom_and_missing_final_newline() {
        let content =
            format!("\u{FEFF}{}\r\n{T},1,view,2,\r\n{T},3,transaction,4,99\r\n{T},5,addtocart,6,", H.trim_end());
        let log = events_from(&content, 1).unwrap();
        assert_eq!(
            log.events,
            vec![
                ev(T, 1, EventKind::View, 2, None),
                ev(T, 3, EventKind::Transaction, 4, Some(99)),
                ev(T, 5, EventKind::AddToCart, 6, None),
            ]
        );
        // Same content with LF endings and a final newline gives the same log.
        let lf = format!("{H}{T},1,view,2,\n{T},3,transaction,4,99\n{T},5,addtocart,6,\n");
        assert_eq!(events_from(&lf, 3).unwrap().events, log.events);
        // CRLF on the last line too, and blank lines are not rows.
        let blank = format!("{H}\n{T},1,view,2,\r\n\r\n{T},3,transaction,4,99\r\n");
        let log = events_from(&blank, 1).unwrap();
        assert_eq!(log.report.rows, 2);
        assert_eq!(log.events.len(), 2);
    }

    #[test]
    fn header_only_and_empty_files() {
        for content in [H, H.trim_end(), "timestamp,visitorid,event,itemid,transactionid\r\n"] {
            let log = events_from(content, 4).unwrap();
            assert!(log.events.is_empty());
            assert_eq!(log.report.rows, 0);
            assert_eq!(log.report.kept, 0);
        }
        let (line, field, text) = malformed(events_from("", 1).unwrap_err());
        assert_eq!((line, field), (1, "header"));
        assert!(text.contains("empty file"), "{text}");
    }

    #[test]
    fn wrong_header_is_an_error_naming_the_expected_one() {
        let err = events_from("timestamp,visitorid,event,itemid\n1,2,view,3\n", 1).unwrap_err();
        let (line, field, text) = malformed(err);
        assert_eq!((line, field), (1, "header"));
        assert!(text.contains("events.csv: line 1"), "{text}");
        assert!(text.contains(EVENTS_HEADER), "{text}");
    }

    #[test]
    fn malformed_fields_name_line_and_field() {
        let ok = format!("{T},1,view,2,\n");
        let cases: [(&str, &str); 9] = [
            ("abc,1,view,2,", "timestamp"),
            ("-5,1,view,2,", "timestamp"),
            ("99999999999999999999,1,view,2,", "timestamp"),
            ("1433221332117,-1,view,2,", "visitorid"),
            ("1433221332117,1,view,2.5,", "itemid"),
            ("1433221332117,1,transaction,2,x1", "transactionid"),
            ("1433221332117,1,view", "itemid"),
            ("1433221332117,1,view,2,,", "transactionid"),
            ("1433221332117", "visitorid"),
        ];
        for (bad, want_field) in cases {
            // The bad row is file line 4: header, two good rows, then it.
            let csv = format!("{H}{ok}{ok}{bad}\n{ok}");
            let (line, field, text) = malformed(events_from(&csv, 2).unwrap_err());
            assert_eq!((line, field), (4, want_field), "{bad}: {text}");
            assert!(text.contains("line 4"), "{text}");
            assert!(text.contains(want_field), "{text}");
        }
        let (_, _, text) = malformed(events_from(&format!("{H}{T},1,view,2,,\n"), 1).unwrap_err());
        assert!(text.contains("expected 5 columns, found 6"), "{text}");
    }

    #[test]
    fn first_malformed_line_in_file_order_across_chunks() {
        let mut csv = String::from(H);
        for i in 0..2000 {
            match i {
                // Blank lines shift the numbering: they count as lines.
                100 | 101 => csv.push('\n'),
                1234 => csv.push_str("x,1,view,1,\n"),
                1700 => csv.push_str("1433221332117,y,view,1,\n"),
                _ => writeln!(csv, "{},{},view,{},", T + i, i, i % 7).unwrap(),
            }
        }
        for chunks in [1, 2, 3, 16, 200, 5000] {
            let (line, field, _) = malformed(events_from(&csv, chunks).unwrap_err());
            assert_eq!((line, field), (1236, "timestamp"), "chunks {chunks}");
        }
        // Only the later one left: it is found with its exact line.
        let csv = csv.replace("x,1,view,1,\n", &format!("{T},1,view,1,\n"));
        for chunks in [1, 7, 5000] {
            let (line, field, _) = malformed(events_from(&csv, chunks).unwrap_err());
            assert_eq!((line, field), (1702, "visitorid"), "chunks {chunks}");
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
    fn parse_u64_is_strict() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"007"), Some(7));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b""[..], b"18446744073709551616", b"-1", b"+1", b" 1", b"1 ", b"1e3", b"0x1"] {
            assert_eq!(parse_u64(bad), None, "{:?}", show(bad));
        }
    }

    #[test]
    fn load_events_from_file_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "events.csv", format!("{H}{T},0,view,0,\n").as_bytes());
        let log = load_events(&path, &LoadOptions::default()).unwrap();
        assert_eq!(log.events, vec![ev(T, 0, EventKind::View, 0, None)]);
        assert_eq!(log.report.file, path);

        let missing = dir.path().join("nope.csv");
        match load_events(&missing, &LoadOptions::default()) {
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
                 5,6,categoryid,3\n",
                T + 1
            )
            .as_bytes(),
        );
        let p2 = write(dir.path(), "item_properties_part2.csv", format!("{PH}{T},9,categoryid,7").as_bytes());
        let log = load_item_properties(&[p1.clone(), p2.clone()], &LoadOptions::default()).unwrap();
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
        assert_eq!((r.rows, r.null_field, r.unknown_event, r.bad_timestamp, r.duplicate, r.kept), (11, 3, 0, 1, 1, 3));
        // The three free-text rows are the rest.
        assert_eq!(r.rows - r.null_field - r.bad_timestamp - r.duplicate - r.kept, 3);
        assert_eq!((log.reports[1].rows, log.reports[1].kept), (1, 1));
    }

    #[test]
    fn item_property_bad_values_are_malformed() {
        let parse =
            |s: String, chunks| parse_properties(Path::new("props.csv"), s.as_bytes(), &LoadOptions::default(), chunks);
        for (bad, field) in [
            ("categoryid,abc", "value"),
            ("categoryid,12 13", "value"),
            ("categoryid,-3", "value"),
            ("available,2", "value"),
            ("available,true", "value"),
        ] {
            let csv = format!("{PH}{T},1,790,n1.0\n{T},1,{bad}\n");
            let (line, f, text) = malformed(parse(csv, 2).unwrap_err());
            assert_eq!((line, f), (3, field), "{bad}: {text}");
            assert!(text.contains("props.csv: line 3"), "{text}");
        }
        let (line, f, _) = malformed(parse(format!("{PH}{T},1,790,n1\nz,1,categoryid,3\n"), 1).unwrap_err());
        assert_eq!((line, f), (3, "timestamp"));
        let (line, f, _) = malformed(parse(format!("{PH}{T},1,790\n"), 1).unwrap_err());
        assert_eq!((line, f), (2, "value"));
        let (line, f, _) = malformed(parse("timestamp,itemid,property\n".into(), 1).unwrap_err());
        assert_eq!((line, f), (1, "header"));
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

        let bad = write(dir.path(), "bad.csv", b"categoryid,parentid\n1,\n2,x\n");
        let (line, field, _) = malformed(load_category_tree(&bad).unwrap_err());
        assert_eq!((line, field), (3, "parentid"));
        let bad = write(dir.path(), "bad2.csv", b"categoryid,parentid\n,1\n");
        let (line, field, _) = malformed(load_category_tree(&bad).unwrap_err());
        assert_eq!((line, field), (2, "categoryid"));
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
        assert_eq!((r.null_field, r.unknown_event, r.bad_timestamp), (0, 0, 0));
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
            let log = parse_events(&dir, &bytes, &LoadOptions::default(), chunks).unwrap();
            assert_same(&log.events, &ds.events.events);
        }
    }

    /// Load time of a synthetic 2.75 M-row events file (RetailRocket shape).
    /// Run with `cargo test --release -p batch-trainer --lib -- --ignored --nocapture load_speed`.
    /// Set `RECSYS_BENCH_EVENTS` to time an existing file instead.
    #[test]
    #[ignore = "timing, release only"]
    fn load_speed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, generated) = match std::env::var_os("RECSYS_BENCH_EVENTS") {
            Some(p) => (PathBuf::from(p), false),
            None => {
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
                (write(dir.path(), "events.csv", s.as_bytes()), true)
            }
        };
        let opts = LoadOptions::default();
        let _warm = load_events(&path, &opts).unwrap();
        let start = std::time::Instant::now();
        let log = load_events(&path, &opts).unwrap();
        let elapsed = start.elapsed();
        println!(
            "load_events: {} rows, {} kept in {:.3} s on {} threads",
            log.report.rows,
            log.report.kept,
            elapsed.as_secs_f64(),
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
