//! CSV event logs and item-property files: the one reader shared by the
//! trainer (`recsys-trainer`, bulk and parallel) and `recsys-ingest replay`
//! (streaming), so both accept, reject and explain the same rows.
//!
//! - **Format**: RFC 4180 via the `csv` crate (quoted fields, `""` escapes,
//!   `\r\n`), a UTF-8 BOM is skipped, blank lines are not rows. A body without
//!   a single `"` is split on `,` and `\n` directly ([`for_each_plain_record`]),
//!   which gives the same fields and lets the trainer cut it into parallel
//!   chunks; any other body goes through the `csv` crate ([`for_each_quoted_record`]).
//! - **Header by name** ([`EventLayout`], [`PropertyLayout`]): columns are
//!   found by name, so their order and extra columns do not matter. Each
//!   field has aliases (`timestamp`/`ts`, `visitorid`/`user_id`, …) and a
//!   [`ColumnMap`] (`user_id=customer,item_id=sku`) names any other header.
//! - **Clocks** ([`TimeUnit`]): epoch seconds, milliseconds, microseconds,
//!   nanoseconds or ISO-8601, detected per file from the first
//!   [`DETECT_SAMPLE`] values ([`TimeUnit::detect`]) unless fixed by
//!   [`ClockOption`]; everything becomes epoch milliseconds.
//! - **Row rules** ([`event_row`], [`property_row`]): ids follow
//!   [`crate::id::check_bytes`] (the API's rules), event kinds
//!   [`EventKind::from_bytes`], a transaction id only on transactions (as the
//!   API). A row that breaks one is rejected with a [`Reason`]; [`Rejections`]
//!   counts every reason and keeps a few example lines of each.

use std::fmt;
use std::io::{BufRead, Read};

use memchr::memchr;
use serde::Serialize;

use crate::event::EventKind;
use crate::id::check_bytes;

/// Rows whose timestamps decide the clock of a file.
pub const DETECT_SAMPLE: usize = 1000;
/// Example lines kept per rejection reason.
pub const EXAMPLES_PER_REASON: usize = 3;
/// The RetailRocket header of an events file.
pub const RETAILROCKET_EVENTS_HEADER: &str = "timestamp,visitorid,event,itemid,transactionid";
/// The RetailRocket header of an item-properties file.
pub const RETAILROCKET_PROPERTIES_HEADER: &str = "timestamp,itemid,property,value";

/// A file-level problem: the file cannot be read as the expected kind of CSV
/// at all (as opposed to single rows, which are [`Rejections`]).
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("empty file: expected a header line such as {expected:?}")]
    Empty { expected: &'static str },
    #[error(
        "line 1: no column for `{field}` (accepted names: {accepted}; header found: {found:?}); \
         name it with --columns {field}=<your column>"
    )]
    MissingColumn { field: &'static str, accepted: String, found: String },
    #[error("line 1: column {name:?} is used for both `{a}` and `{b}`")]
    DuplicateColumn { name: String, a: &'static str, b: &'static str },
    #[error("--columns: {0}")]
    BadColumnMap(String),
    #[error("line {line}: {message}")]
    Syntax { line: u64, message: String },
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

/// A column the readers know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Ts,
    UserId,
    Event,
    ItemId,
    TransactionId,
    Property,
    Value,
}

impl Field {
    /// Every field, in index order (the position of each field in this array).
    pub const ALL: [Field; 7] =
        [Field::Ts, Field::UserId, Field::Event, Field::ItemId, Field::TransactionId, Field::Property, Field::Value];

    /// The canonical name (the HTTP API's field name).
    pub fn name(self) -> &'static str {
        match self {
            Field::Ts => "ts",
            Field::UserId => "user_id",
            Field::Event => "event",
            Field::ItemId => "item_id",
            Field::TransactionId => "transaction_id",
            Field::Property => "property",
            Field::Value => "value",
        }
    }

    /// Header names recognised without a [`ColumnMap`] (compared ignoring
    /// ASCII case and surrounding spaces).
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Field::Ts => &["ts", "timestamp", "time", "event_time"],
            Field::UserId => &["user_id", "visitorid", "visitor_id", "userid", "user"],
            Field::Event => &["event", "event_type", "eventtype"],
            Field::ItemId => &["item_id", "itemid", "item", "sku", "product_id"],
            Field::TransactionId => &["transaction_id", "transactionid", "order_id"],
            Field::Property => &["property"],
            Field::Value => &["value"],
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn parse(s: &str) -> Option<Field> {
        let s = s.trim();
        Field::ALL.into_iter().find(|f| f.aliases().iter().any(|a| a.eq_ignore_ascii_case(s)))
    }
}

/// Header names given by the user for fields (`--columns user_id=customer,item_id=sku`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnMap {
    names: Vec<(Field, String)>,
}

impl ColumnMap {
    /// Parses `field=column,…`; `field` is a canonical name or an alias.
    pub fn parse(spec: &str) -> Result<ColumnMap, CsvError> {
        let mut names: Vec<(Field, String)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((f, col)) = part.split_once('=') else {
                return Err(CsvError::BadColumnMap(format!("{part:?} is not field=column")));
            };
            let field = Field::parse(f).ok_or_else(|| {
                let known: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                CsvError::BadColumnMap(format!("unknown field {:?}; fields are {}", f.trim(), known.join(", ")))
            })?;
            let col = col.trim();
            if col.is_empty() {
                return Err(CsvError::BadColumnMap(format!("empty column name for {}", field.name())));
            }
            if names.iter().any(|(g, _)| *g == field) {
                return Err(CsvError::BadColumnMap(format!("{} is mapped twice", field.name())));
            }
            names.push((field, col.to_owned()));
        }
        Ok(ColumnMap { names })
    }

    /// True when no column is renamed.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn get(&self, f: Field) -> Option<&str> {
        self.names.iter().find(|(g, _)| *g == f).map(|(_, c)| c.as_str())
    }
}

impl fmt::Display for ColumnMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.names.iter().map(|(g, c)| format!("{}={c}", g.name())).collect();
        f.write_str(&parts.join(","))
    }
}

/// Column positions of the wanted fields in one file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    index: [Option<usize>; 7],
    /// Number of header columns: a row must have as many.
    pub width: usize,
    /// The header as read (for messages).
    pub header: Vec<String>,
}

impl Layout {
    fn resolve(
        header: &[&[u8]],
        required: &[Field],
        optional: &[Field],
        map: &ColumnMap,
        expected: &'static str,
    ) -> Result<Layout, CsvError> {
        let names: Vec<String> = header.iter().map(|h| String::from_utf8_lossy(h).trim().to_owned()).collect();
        if names.len() == 1 && names[0].is_empty() {
            return Err(CsvError::Empty { expected });
        }
        let mut index = [None; 7];
        for &field in required.iter().chain(optional) {
            let pos = match map.get(field) {
                Some(col) => names.iter().position(|n| n == col || n.eq_ignore_ascii_case(col)),
                None => names.iter().position(|n| field.aliases().iter().any(|a| a.eq_ignore_ascii_case(n))),
            };
            if let Some(p) = pos {
                if let Some(other) = Field::ALL.iter().find(|g| index[g.index()] == Some(p)) {
                    return Err(CsvError::DuplicateColumn { name: names[p].clone(), a: other.name(), b: field.name() });
                }
                index[field.index()] = Some(p);
            } else if required.contains(&field) || map.get(field).is_some() {
                let accepted = match map.get(field) {
                    Some(col) => format!("{col:?} (from --columns)"),
                    None => field.aliases().join(", "),
                };
                return Err(CsvError::MissingColumn { field: field.name(), accepted, found: names.join(",") });
            }
        }
        Ok(Layout { index, width: names.len(), header: names })
    }

    /// The column of `f`, if the file has it.
    pub fn column(&self, f: Field) -> Option<usize> {
        self.index[f.index()]
    }

    /// The header name of `f`'s column (for messages), or its canonical name.
    pub fn column_name(&self, f: Field) -> &str {
        self.column(f).and_then(|i| self.header.get(i)).map_or(f.name(), |s| s.as_str())
    }
}

/// An events file's layout: `ts`, `user_id`, `event`, `item_id` required,
/// `transaction_id` optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLayout(pub Layout);

impl EventLayout {
    /// Finds the columns in `header`.
    pub fn resolve(header: &[&[u8]], map: &ColumnMap) -> Result<EventLayout, CsvError> {
        Layout::resolve(
            header,
            &[Field::Ts, Field::UserId, Field::Event, Field::ItemId],
            &[Field::TransactionId],
            map,
            RETAILROCKET_EVENTS_HEADER,
        )
        .map(EventLayout)
    }
}

/// An item-properties file's layout: `ts`, `item_id`, `property`, `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyLayout(pub Layout);

impl PropertyLayout {
    /// Finds the columns in `header`.
    pub fn resolve(header: &[&[u8]], map: &ColumnMap) -> Result<PropertyLayout, CsvError> {
        Layout::resolve(
            header,
            &[Field::Ts, Field::ItemId, Field::Property, Field::Value],
            &[],
            map,
            RETAILROCKET_PROPERTIES_HEADER,
        )
        .map(PropertyLayout)
    }
}

/// How a file writes time. Every unit is converted to epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
    Microseconds,
    Nanoseconds,
    /// `2015-06-02T05:02:12.117Z`, `2015-06-02 05:02:12+02:00`, `2015-06-02`
    /// (no offset = UTC).
    Iso8601,
}

/// The clock of a file: detected from its values, or fixed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClockOption {
    #[default]
    Auto,
    Fixed(TimeUnit),
}

impl std::str::FromStr for ClockOption {
    type Err = String;
    fn from_str(s: &str) -> Result<ClockOption, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => ClockOption::Auto,
            "s" | "seconds" => ClockOption::Fixed(TimeUnit::Seconds),
            "ms" | "milliseconds" => ClockOption::Fixed(TimeUnit::Milliseconds),
            "us" | "µs" | "microseconds" => ClockOption::Fixed(TimeUnit::Microseconds),
            "ns" | "nanoseconds" => ClockOption::Fixed(TimeUnit::Nanoseconds),
            "iso" | "iso8601" | "iso-8601" => ClockOption::Fixed(TimeUnit::Iso8601),
            other => return Err(format!("unknown time unit {other:?}; expected auto, s, ms, us, ns or iso")),
        })
    }
}

impl TimeUnit {
    /// Short name (`s`, `ms`, `us`, `ns`, `iso8601`).
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Seconds => "s",
            TimeUnit::Milliseconds => "ms",
            TimeUnit::Microseconds => "us",
            TimeUnit::Nanoseconds => "ns",
            TimeUnit::Iso8601 => "iso8601",
        }
    }

    /// The unit of an epoch number by its size: below 10^11 it is seconds (up
    /// to the year 5138; as milliseconds it would be before March 1973), then
    /// milliseconds, microseconds and nanoseconds by factors of 1000.
    fn of_magnitude(v: u64) -> TimeUnit {
        match v {
            0..100_000_000_000 => TimeUnit::Seconds,
            100_000_000_000..100_000_000_000_000 => TimeUnit::Milliseconds,
            100_000_000_000_000..100_000_000_000_000_000 => TimeUnit::Microseconds,
            _ => TimeUnit::Nanoseconds,
        }
    }

    /// The unit of a file from some of its timestamp fields: ISO-8601 when
    /// most of them are, else the unit of the median epoch number. `None`
    /// when no value is a timestamp at all.
    pub fn detect<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<TimeUnit> {
        let mut numbers = Vec::new();
        let mut iso = 0usize;
        for v in values {
            if let Some((int, _)) = split_number(v) {
                numbers.push(int);
            } else if parse_iso8601(v).is_some() {
                iso += 1;
            }
        }
        if iso > numbers.len() {
            return Some(TimeUnit::Iso8601);
        }
        if numbers.is_empty() {
            return None;
        }
        let mid = numbers.len() / 2;
        let (_, median, _) = numbers.select_nth_unstable(mid);
        Some(TimeUnit::of_magnitude(*median))
    }

    /// A field in this unit as epoch milliseconds (fractions truncated).
    pub fn to_ms(self, b: &[u8]) -> Option<i64> {
        if self == TimeUnit::Iso8601 {
            return parse_iso8601(b);
        }
        let (int, frac) = split_number(b)?;
        let int = i64::try_from(int).ok()?;
        // Digits of the fraction that still matter in milliseconds.
        let frac_ms = |scale: i64, digits: usize| -> i64 {
            let mut v = 0i64;
            for k in 0..digits {
                v = v * 10 + frac.get(k).map_or(0, |d| i64::from(d - b'0'));
            }
            v / scale
        };
        match self {
            TimeUnit::Seconds => int.checked_mul(1000)?.checked_add(frac_ms(1, 3)),
            TimeUnit::Milliseconds => Some(int),
            TimeUnit::Microseconds => Some(int / 1000),
            TimeUnit::Nanoseconds => Some(int / 1_000_000),
            TimeUnit::Iso8601 => None,
        }
    }
}

impl fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeUnit::Seconds => "epoch seconds",
            TimeUnit::Milliseconds => "epoch milliseconds",
            TimeUnit::Microseconds => "epoch microseconds",
            TimeUnit::Nanoseconds => "epoch nanoseconds",
            TimeUnit::Iso8601 => "ISO-8601",
        })
    }
}

/// A non-negative decimal number (`123`, `123.45`): integer part and the
/// fraction's digits.
fn split_number(b: &[u8]) -> Option<(u64, &[u8])> {
    // One pass, no search: this runs for every row of every file.
    if b.is_empty() || b.len() > 31 {
        return None;
    }
    let mut v: u64 = 0;
    for (i, &c) in b.iter().enumerate() {
        let d = c.wrapping_sub(b'0');
        if d <= 9 {
            v = v.checked_mul(10)?.checked_add(u64::from(d))?;
            continue;
        }
        if c != b'.' || i == 0 {
            return None;
        }
        let frac = &b[i + 1..];
        if frac.is_empty() || frac.len() > 9 || !frac.iter().all(u8::is_ascii_digit) || i > 20 {
            return None;
        }
        return Some((v, frac));
    }
    (b.len() <= 20).then_some((v, &b[b.len()..]))
}

/// A non-negative decimal integer without sign or spaces.
pub fn parse_u64(b: &[u8]) -> Option<u64> {
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

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fraction]]][Z|±HH[:]MM|±HH]` as epoch ms.
fn parse_iso8601(b: &[u8]) -> Option<i64> {
    let num = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        parse_u64(s).and_then(|v| i64::try_from(v).ok())
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let mut rest = &b[10..];
    let (mut h, mut m, mut s, mut nanos) = (0u8, 0u8, 0u8, 0u32);
    if let Some((&sep, tail)) = rest.split_first() {
        if sep != b'T' && sep != b't' && sep != b' ' {
            return None;
        }
        if tail.len() < 5 || tail[2] != b':' {
            return None;
        }
        h = u8::try_from(num(&tail[0..2])?).ok()?;
        m = u8::try_from(num(&tail[3..5])?).ok()?;
        rest = &tail[5..];
        if rest.first() == Some(&b':') {
            if rest.len() < 3 {
                return None;
            }
            s = u8::try_from(num(&rest[1..3])?).ok()?;
            rest = &rest[3..];
            if rest.first() == Some(&b'.') || rest.first() == Some(&b',') {
                let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                let mut v = 0u32;
                for k in 0..9 {
                    v = v * 10 + rest.get(1 + k).filter(|_| k < digits).map_or(0, |d| u32::from(d - b'0'));
                }
                nanos = v;
                rest = &rest[1 + digits..];
            }
        }
    }
    let offset_s: i32 = match rest {
        b"" | b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (oh, om) = match tail {
                [a, b] => (num(&[*a, *b])?, 0),
                [a, b, b':', c, d] | [a, b, c, d] => (num(&[*a, *b])?, num(&[*c, *d])?),
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = i32::try_from(oh * 3600 + om * 60).ok()?;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let t = time::Time::from_hms_nano(h, m, s, nanos).ok()?;
    let offset = time::UtcOffset::from_whole_seconds(offset_s).ok()?;
    let at = time::PrimitiveDateTime::new(date, t).assume_offset(offset);
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// Why a row was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// More or fewer fields than the header has columns.
    WrongColumns,
    /// A required field is empty.
    EmptyField,
    /// The timestamp is not one in the file's clock.
    BadTimestamp,
    /// The event type is not view, addtocart or transaction.
    UnknownEvent,
    /// The user id breaks the id rules.
    BadUserId,
    /// The item id breaks the id rules.
    BadItemId,
    /// The transaction id breaks the id rules.
    BadTransactionId,
    /// A transaction id on a view or add-to-cart (the API refuses it too).
    TransactionIdNotOnTransaction,
    /// An item property value that is not what the property holds.
    BadValue,
    /// Outside the time window that was asked for.
    OutsideWindow,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 10] = [
        Reason::WrongColumns,
        Reason::EmptyField,
        Reason::BadTimestamp,
        Reason::UnknownEvent,
        Reason::BadUserId,
        Reason::BadItemId,
        Reason::BadTransactionId,
        Reason::TransactionIdNotOnTransaction,
        Reason::BadValue,
        Reason::OutsideWindow,
    ];

    /// The counter name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::WrongColumns => "wrong_columns",
            Reason::EmptyField => "empty_field",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::UnknownEvent => "unknown_event",
            Reason::BadUserId => "bad_user_id",
            Reason::BadItemId => "bad_item_id",
            Reason::BadTransactionId => "bad_transaction_id",
            Reason::TransactionIdNotOnTransaction => "transaction_id_not_on_transaction",
            Reason::BadValue => "bad_value",
            Reason::OutsideWindow => "outside_window",
        }
    }

    /// What to do about rows rejected for this reason.
    pub fn fix(self) -> &'static str {
        match self {
            Reason::WrongColumns => "quote fields that contain commas (\"a,b\"), or check the delimiter is a comma",
            Reason::EmptyField => "fill in or drop rows without a timestamp, user, event or item",
            Reason::BadTimestamp => {
                "timestamps must be epoch s/ms/us/ns or ISO-8601; if the detected clock is wrong, \
                 set it with --time-unit"
            }
            Reason::UnknownEvent => "map event types to view, addtocart or transaction before loading",
            Reason::BadUserId | Reason::BadItemId | Reason::BadTransactionId => {
                "ids are 1-64 characters of A-Z a-z 0-9 . _ : - (as in the HTTP API)"
            }
            Reason::TransactionIdNotOnTransaction => "leave transaction ids empty on views and add-to-carts",
            Reason::BadValue => "categoryid must be a non-negative integer, available 0 or 1",
            Reason::OutsideWindow => "widen or drop the time window (--min-ts/--max-ts, training.min_ts/max_ts)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rejected row, before it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub reason: Reason,
    /// The field at fault (`None`: the row as a whole).
    pub field: Option<Field>,
}

impl Reject {
    fn new(reason: Reason, field: Field) -> Reject {
        Reject { reason, field: Some(field) }
    }
}

/// One example line of a rejection reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Example {
    /// 1-based line of the file (the header is line 1).
    pub line: u64,
    /// The column at fault, as named in the header.
    pub field: String,
    /// The field's value (cut to 64 characters).
    pub value: String,
    /// What is wrong with it.
    pub message: String,
}

/// Counts of rejected rows by reason, with the first few example lines of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    counts: [u64; Reason::ALL.len()],
    examples: Vec<(Reason, Example)>,
}

impl Rejections {
    /// Counts `reject` of the row at `line` with `fields` (for the example).
    pub fn add(&mut self, line: u64, reject: Reject, fields: &[&[u8]], layout: &Layout, clock: Option<TimeUnit>) {
        let r = reject.reason;
        self.counts[r.index()] += 1;
        if self.counts[r.index()] as usize <= EXAMPLES_PER_REASON {
            self.examples.push((r, example(line, reject, fields, layout, clock)));
        }
    }

    /// Adds `by` to the example lines (a chunk's lines made file lines).
    pub fn shift_lines(&mut self, by: u64) {
        for (_, e) in &mut self.examples {
            e.line += by;
        }
    }

    /// Counts `n` rows rejected for `reason` without examples.
    pub fn add_count(&mut self, reason: Reason, n: u64) {
        self.counts[reason.index()] += n;
    }

    /// Adds a later part of the same file (chunks merged in file order keep
    /// the first examples).
    pub fn merge(&mut self, other: &Rejections) {
        for r in Reason::ALL {
            self.counts[r.index()] += other.counts[r.index()];
        }
        for (r, e) in &other.examples {
            let have = self.examples.iter().filter(|(q, _)| q == r).count();
            if have < EXAMPLES_PER_REASON {
                self.examples.push((*r, e.clone()));
            }
        }
    }

    /// Rows rejected for `reason`.
    pub fn count(&self, reason: Reason) -> u64 {
        self.counts[reason.index()]
    }

    /// Rows rejected in all.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Reasons with a non-zero count, most frequent first.
    pub fn by_count(&self) -> Vec<(Reason, u64)> {
        let mut v: Vec<(Reason, u64)> =
            Reason::ALL.iter().map(|&r| (r, self.count(r))).filter(|&(_, n)| n > 0).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// The example lines of `reason`, in file order.
    pub fn examples(&self, reason: Reason) -> impl Iterator<Item = &Example> {
        self.examples.iter().filter(move |(r, _)| *r == reason).map(|(_, e)| e)
    }

    /// One line per reason with its examples, most frequent first (empty
    /// when nothing was rejected); each line is indented by `indent`.
    pub fn render(&self, indent: &str) -> String {
        let mut s = String::new();
        for (r, n) in self.by_count() {
            s.push_str(&format!("{indent}{n} {r}: {}\n", r.fix()));
            for e in self.examples(r) {
                s.push_str(&format!("{indent}  line {}: {} {:?}: {}\n", e.line, e.field, e.value, e.message));
            }
        }
        s
    }
}

impl Serialize for Rejections {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            reason: Reason,
            count: u64,
            fix: &'static str,
            examples: Vec<&'a Example>,
        }
        let entries: Vec<Entry<'_>> = self
            .by_count()
            .into_iter()
            .map(|(reason, count)| Entry {
                reason,
                count,
                fix: reason.fix(),
                examples: self.examples(reason).collect(),
            })
            .collect();
        entries.serialize(s)
    }
}

/// Bytes for a message: lossy UTF-8, cut at 64 characters.
pub fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 64 {
        let cut: String = s.chars().take(64).collect();
        format!("{cut}…")
    } else {
        s.into_owned()
    }
}

/// The example of one rejected row: the field at fault, its value and what is wrong.
pub fn example(line: u64, reject: Reject, fields: &[&[u8]], layout: &Layout, clock: Option<TimeUnit>) -> Example {
    let value = reject.field.and_then(|f| layout.column(f)).and_then(|i| fields.get(i)).map_or(&b""[..], |v| v);
    let field = match reject.field {
        Some(f) => layout.column_name(f).to_owned(),
        None => "row".to_owned(),
    };
    let message = match reject.reason {
        Reason::WrongColumns => format!("{} fields, the header has {}", fields.len(), layout.width),
        Reason::EmptyField => "empty".to_owned(),
        Reason::BadTimestamp => match clock {
            Some(c) => format!("not a timestamp in {c} (the file's clock)"),
            None => "not a timestamp".to_owned(),
        },
        Reason::UnknownEvent => "expected view, addtocart or transaction".to_owned(),
        Reason::BadUserId | Reason::BadItemId | Reason::BadTransactionId => match check_bytes(value) {
            Err(e) => e.to_string(),
            Ok(_) => "invalid id".to_owned(),
        },
        Reason::TransactionIdNotOnTransaction => "a transaction id is only allowed on transactions".to_owned(),
        Reason::BadValue => "not a value this property holds".to_owned(),
        Reason::OutsideWindow => "outside the time window".to_owned(),
    };
    Example { line, field, value: show(value), message }
}

/// The accepted event-time window in epoch ms, `[min, max)`; `None` = all time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

impl Window {
    /// True when `ts` lies inside.
    pub fn contains(&self, ts: i64) -> bool {
        self.min.is_none_or(|m| ts >= m) && self.max.is_none_or(|m| ts < m)
    }
}

/// One accepted event row; ids are validated text borrowed from the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRow<'a> {
    /// Epoch milliseconds.
    pub ts: i64,
    pub user: &'a str,
    pub item: &'a str,
    pub kind: EventKind,
    pub txn: Option<&'a str>,
}

/// The rules of one events row (the first that fails is the reason).
pub fn event_row<'a>(
    fields: &[&'a [u8]],
    layout: &EventLayout,
    clock: TimeUnit,
    window: &Window,
) -> Result<EventRow<'a>, Reject> {
    let l = &layout.0;
    if fields.len() != l.width {
        return Err(Reject { reason: Reason::WrongColumns, field: None });
    }
    let get = |f: Field| l.column(f).map_or(&b""[..], |i| fields[i]);
    let (ts, user, event, item) = (get(Field::Ts), get(Field::UserId), get(Field::Event), get(Field::ItemId));
    for (v, f) in [(ts, Field::Ts), (user, Field::UserId), (event, Field::Event), (item, Field::ItemId)] {
        if v.is_empty() {
            return Err(Reject::new(Reason::EmptyField, f));
        }
    }
    let ts = clock.to_ms(ts).ok_or(Reject::new(Reason::BadTimestamp, Field::Ts))?;
    let kind = EventKind::from_bytes(event).ok_or(Reject::new(Reason::UnknownEvent, Field::Event))?;
    let user = check_bytes(user).map_err(|_| Reject::new(Reason::BadUserId, Field::UserId))?;
    let item = check_bytes(item).map_err(|_| Reject::new(Reason::BadItemId, Field::ItemId))?;
    let txn = get(Field::TransactionId);
    let txn = if txn.is_empty() {
        None
    } else {
        let t = check_bytes(txn).map_err(|_| Reject::new(Reason::BadTransactionId, Field::TransactionId))?;
        if kind != EventKind::Transaction {
            return Err(Reject::new(Reason::TransactionIdNotOnTransaction, Field::TransactionId));
        }
        Some(t)
    };
    if !window.contains(ts) {
        return Err(Reject::new(Reason::OutsideWindow, Field::Ts));
    }
    Ok(EventRow { ts, user, item, kind, txn })
}

/// The value of a kept item property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyValue {
    Category(u64),
    Available(bool),
}

/// One kept item-property row (`categoryid` or `available`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyRow<'a> {
    pub ts: i64,
    pub item: &'a str,
    pub value: PropertyValue,
}

/// The rules of one item-properties row: `Ok(None)` for the free-text
/// properties the recommender does not use (skipped, not rejected, whatever
/// their value holds).
pub fn property_row<'a>(
    fields: &[&'a [u8]],
    layout: &PropertyLayout,
    clock: TimeUnit,
    window: &Window,
) -> Result<Option<PropertyRow<'a>>, Reject> {
    let l = &layout.0;
    let get = |f: Field| l.column(f).and_then(|i| fields.get(i).copied()).unwrap_or(b"");
    let property = get(Field::Property);
    let is_category = match property {
        b"categoryid" => true,
        b"available" => false,
        b"" if fields.len() == l.width => return Err(Reject::new(Reason::EmptyField, Field::Property)),
        // An unquoted free-text value may hold commas: such rows are skipped
        // whatever their field count.
        _ if fields.len() >= l.width || l.column(Field::Property).is_some_and(|i| i < fields.len()) => {
            if property.is_empty() {
                return Err(Reject { reason: Reason::WrongColumns, field: None });
            }
            return Ok(None);
        }
        _ => return Err(Reject { reason: Reason::WrongColumns, field: None }),
    };
    if fields.len() != l.width {
        return Err(Reject { reason: Reason::WrongColumns, field: None });
    }
    let (ts, item, value) = (get(Field::Ts), get(Field::ItemId), get(Field::Value));
    for (v, f) in [(ts, Field::Ts), (item, Field::ItemId), (value, Field::Value)] {
        if v.is_empty() {
            return Err(Reject::new(Reason::EmptyField, f));
        }
    }
    let ts = clock.to_ms(ts).ok_or(Reject::new(Reason::BadTimestamp, Field::Ts))?;
    let item = check_bytes(item).map_err(|_| Reject::new(Reason::BadItemId, Field::ItemId))?;
    let value = if is_category {
        PropertyValue::Category(parse_u64(value).ok_or(Reject::new(Reason::BadValue, Field::Value))?)
    } else {
        PropertyValue::Available(match value {
            b"1" => true,
            b"0" => false,
            _ => return Err(Reject::new(Reason::BadValue, Field::Value)),
        })
    };
    if !window.contains(ts) {
        return Err(Reject::new(Reason::OutsideWindow, Field::Ts));
    }
    Ok(Some(PropertyRow { ts, item, value }))
}

/// Skips a UTF-8 BOM.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// The header fields and the body (what follows the header line) of a whole
/// file in memory; the BOM is skipped. A header with quotes is read by the
/// `csv` crate.
pub fn split_header(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, &[u8]), CsvError> {
    let bytes = strip_bom(bytes);
    let end = memchr(b'\n', bytes).map_or(bytes.len(), |p| p + 1);
    let line = &bytes[..end];
    let body = &bytes[end..];
    let mut fields = Vec::new();
    if memchr(b'"', line).is_some() {
        let mut rdr = builder().from_reader(Terminated::new(line));
        let mut rec = ::csv::ByteRecord::new();
        if next_record(&mut rdr, &mut rec, 1)?.is_some() {
            fields = rec.iter().map(<[u8]>::to_vec).collect();
        }
    } else {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        fields = line.split(|&c| c == b',').map(<[u8]>::to_vec).collect();
    }
    if fields.is_empty() {
        fields.push(Vec::new());
    }
    Ok((fields, body))
}

/// True when `body` holds no quote character: then splitting on `,` and `\n`
/// reads it exactly as the `csv` crate would, and it may be cut anywhere
/// after a `\n`.
pub fn is_plain(body: &[u8]) -> bool {
    memchr(b'"', body).is_none()
}

/// Calls `f(line, fields)` for every non-blank line of a quote-free `body`
/// (see [`is_plain`]); `first_line` is the file line of its first byte.
/// Returns the number of lines seen (blank ones included).
pub fn for_each_plain_record<'a>(body: &'a [u8], first_line: u64, mut f: impl FnMut(u64, &[&'a [u8]])) -> u64 {
    let mut fields: Vec<&'a [u8]> = Vec::with_capacity(8);
    let mut pos = 0;
    let mut line_no = 0u64;
    while pos < body.len() {
        let end = memchr(b'\n', &body[pos..]).map_or(body.len(), |p| pos + p);
        let line = &body[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            fields.clear();
            // Lines are short: a plain loop beats setting up a vector search per line.
            let mut start = 0;
            for (i, &c) in line.iter().enumerate() {
                if c == b',' {
                    fields.push(&line[start..i]);
                    start = i + 1;
                }
            }
            fields.push(&line[start..]);
            f(first_line + line_no, &fields);
        }
        line_no += 1;
        pos = end + 1;
    }
    line_no
}

/// Calls `f(line, fields)` for every record of `body` read by the `csv`
/// crate (quotes, escaped quotes, newlines inside quotes); `first_line` is
/// the file line of its first byte.
pub fn for_each_quoted_record(body: &[u8], first_line: u64, mut f: impl FnMut(u64, &[&[u8]])) -> Result<(), CsvError> {
    let mut rdr = builder().from_reader(Terminated::new(body));
    let mut rec = ::csv::ByteRecord::new();
    while let Some(line) = next_record(&mut rdr, &mut rec, first_line)? {
        with_fields(&rec, |fields| f(line, fields));
    }
    Ok(())
}

/// The fields of a record as slices, on the stack when there are few.
fn with_fields<T>(rec: &::csv::ByteRecord, f: impl FnOnce(&[&[u8]]) -> T) -> T {
    const N: usize = 16;
    if rec.len() <= N {
        let mut arr: [&[u8]; N] = [&[]; N];
        for (slot, v) in arr.iter_mut().zip(rec.iter()) {
            *slot = v;
        }
        f(&arr[..rec.len()])
    } else {
        f(&rec.iter().collect::<Vec<_>>())
    }
}

/// A reader whose last byte is a `\n`: one is added at the end when the
/// source's last line has none, so that every record is read with its
/// terminator and its line can be counted back (see [`next_record`]).
#[derive(Debug)]
struct Terminated<R> {
    inner: R,
    last: Option<u8>,
    done: bool,
}

impl<R: Read> Terminated<R> {
    fn new(inner: R) -> Terminated<R> {
        Terminated { inner, last: None, done: false }
    }
}

impl<R: Read> Read for Terminated<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.last = Some(buf[n - 1]);
            return Ok(n);
        }
        self.done = true;
        if self.last.is_some_and(|b| b != b'\n') {
            buf[0] = b'\n';
            return Ok(1);
        }
        Ok(0)
    }
}

/// The `csv` crate set up as the readers use it: no header handling, any
/// field count, `\n` as the terminator (a `\r` before it is stripped in
/// [`next_record`]) so that line numbers can be told exactly.
fn builder() -> ::csv::ReaderBuilder {
    let mut b = ::csv::ReaderBuilder::new();
    b.has_headers(false).flexible(true).terminator(::csv::Terminator::Any(b'\n'));
    b
}

/// Reads the next non-blank record; returns the file line it starts on
/// (`first_line` = the line of the reader's first byte). The `csv` crate
/// dates a record from before the blank lines it skipped, so the line is
/// counted back from where the record ended instead.
fn next_record<R: Read>(
    rdr: &mut ::csv::Reader<R>,
    rec: &mut ::csv::ByteRecord,
    first_line: u64,
) -> Result<Option<u64>, CsvError> {
    loop {
        match rdr.read_byte_record(rec) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(e) => return Err(syntax(first_line, &e)),
        }
        let n = rec.len();
        if let Some(last) = rec.get(n - 1).filter(|l| l.ends_with(b"\r")) {
            let last = last[..last.len() - 1].to_vec();
            rec.truncate(n - 1);
            rec.push_field(&last);
        }
        if n == 1 && rec.get(0).is_some_and(<[u8]>::is_empty) {
            continue; // a blank `\r\n` line
        }
        let inside: usize = rec.iter().map(|f| memchr::memchr_iter(b'\n', f).count()).sum();
        // Every record ends with a `\n` (see [`Terminated`]), read with it:
        // the reader is on the line after the record.
        let end_line = rdr.position().line();
        return Ok(Some((first_line + end_line).saturating_sub(2 + inside as u64)));
    }
}

fn syntax(first_line: u64, e: &::csv::Error) -> CsvError {
    let line = e.position().map_or(first_line, |p| first_line + p.line().saturating_sub(1));
    CsvError::Syntax { line, message: e.to_string() }
}

/// The clock of a body: `clock` when fixed, else detected from the `ts`
/// column of its first [`DETECT_SAMPLE`] rows (milliseconds when nothing
/// there is a timestamp: every row is then a `bad_timestamp`).
pub fn body_clock(body: &[u8], ts_column: usize, clock: ClockOption) -> Result<TimeUnit, CsvError> {
    if let ClockOption::Fixed(u) = clock {
        return Ok(u);
    }
    let mut sample: Vec<Vec<u8>> = Vec::with_capacity(DETECT_SAMPLE);
    let mut take = |_: u64, fields: &[&[u8]]| {
        if sample.len() < DETECT_SAMPLE {
            if let Some(v) = fields.get(ts_column).filter(|v| !v.is_empty()) {
                sample.push(v.to_vec());
            }
        }
    };
    // A prefix is enough; cut it after a newline.
    let mut cut = body.len().min(1 << 20);
    if cut < body.len() {
        cut = memchr::memrchr(b'\n', &body[..cut]).map_or(body.len(), |p| p + 1);
    }
    let head = &body[..cut];
    if is_plain(head) {
        for_each_plain_record(head, 2, &mut take);
    } else {
        // A quoted field may straddle the cut: an error there is not the file's.
        let _ = for_each_quoted_record(head, 2, &mut take);
    }
    Ok(TimeUnit::detect(sample.iter().map(Vec::as_slice)).unwrap_or(TimeUnit::Milliseconds))
}

/// A streaming reader of an events file (for `replay`): every record in
/// file order with its line and its row rules applied, after the header and
/// the clock (detected from the first [`DETECT_SAMPLE`] rows, read ahead).
pub struct EventReader<R: Read> {
    rdr: ::csv::Reader<Terminated<std::io::BufReader<R>>>,
    layout: EventLayout,
    clock: TimeUnit,
    window: Window,
    ahead: std::collections::VecDeque<(::csv::ByteRecord, u64)>,
    rec: ::csv::ByteRecord,
    /// Bytes read up to the end of `rec`.
    byte: u64,
    rejections: Rejections,
}

impl<R: Read> fmt::Debug for EventReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReader").field("layout", &self.layout).field("clock", &self.clock).finish()
    }
}

/// One record of an [`EventReader`].
#[derive(Debug)]
pub enum Record<'a> {
    Event { line: u64, row: EventRow<'a> },
    Rejected { line: u64, reject: Reject, example: Example, raw: Vec<u8> },
}

impl<R: Read> EventReader<R> {
    /// Reads the header and the look-ahead sample.
    pub fn new(r: R, map: &ColumnMap, clock: ClockOption, window: Window) -> Result<EventReader<R>, CsvError> {
        let mut buf = std::io::BufReader::with_capacity(1 << 20, r);
        if buf.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
            buf.consume(3);
        }
        let mut rdr = builder().from_reader(Terminated::new(buf));
        let mut header = ::csv::ByteRecord::new();
        if next_record(&mut rdr, &mut header, 1)?.is_none() {
            return Err(CsvError::Empty { expected: RETAILROCKET_EVENTS_HEADER });
        }
        let fields: Vec<&[u8]> = header.iter().collect();
        let layout = EventLayout::resolve(&fields, map)?;
        let mut ahead = std::collections::VecDeque::new();
        let detected = match clock {
            ClockOption::Fixed(u) => u,
            ClockOption::Auto => {
                let ts = layout.0.column(Field::Ts).unwrap_or(0);
                let mut rec = ::csv::ByteRecord::new();
                let mut sample = Vec::new();
                while sample.len() < DETECT_SAMPLE {
                    let Some(line) = next_record(&mut rdr, &mut rec, 1)? else { break };
                    if let Some(v) = rec.get(ts).filter(|v| !v.is_empty()) {
                        sample.push(v.to_vec());
                    }
                    ahead.push_back((rec.clone(), line));
                }
                TimeUnit::detect(sample.iter().map(Vec::as_slice)).unwrap_or(TimeUnit::Milliseconds)
            }
        };
        Ok(EventReader {
            rdr,
            layout,
            clock: detected,
            window,
            ahead,
            rec: ::csv::ByteRecord::new(),
            byte: 0,
            rejections: Rejections::default(),
        })
    }

    /// The clock in use.
    pub fn clock(&self) -> TimeUnit {
        self.clock
    }

    /// The header's layout.
    pub fn layout(&self) -> &EventLayout {
        &self.layout
    }

    /// The rejections so far.
    pub fn rejections(&self) -> &Rejections {
        &self.rejections
    }

    /// Counts the last record, which the caller rejects after the row rules
    /// (e.g. a window of its own), as the others are counted; returns its example.
    pub fn reject_current(&mut self, line: u64, reject: Reject) -> Example {
        let fields: Vec<&[u8]> = self.rec.iter().collect();
        self.rejections.add(line, reject, &fields, &self.layout.0, Some(self.clock));
        example(line, reject, &fields, &self.layout.0, Some(self.clock))
    }

    /// Byte offset of the last record in the file (after the BOM).
    pub fn byte_offset(&self) -> u64 {
        self.byte
    }

    /// The last record as one CSV line (quoted where needed), for a dead letter.
    pub fn raw_current(&self) -> Vec<u8> {
        let mut w = ::csv::WriterBuilder::new().terminator(::csv::Terminator::Any(b'\n')).from_writer(Vec::new());
        let written = w.write_byte_record(&self.rec).and_then(|_| w.flush().map_err(Into::into));
        match (written, w.into_inner()) {
            (Ok(()), Ok(mut v)) => {
                v.pop();
                v
            }
            _ => self.rec.iter().collect::<Vec<_>>().join(&b","[..]),
        }
    }

    /// The next record, `None` at the end of the file.
    pub fn next_record(&mut self) -> Option<Result<Record<'_>, CsvError>> {
        let line = match self.ahead.pop_front() {
            Some((r, line)) => {
                self.rec = r;
                line
            }
            None => match next_record(&mut self.rdr, &mut self.rec, 1) {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            },
        };
        self.byte = self.rdr.position().byte();
        let fields: Vec<&[u8]> = self.rec.iter().collect();
        Some(Ok(match event_row(&fields, &self.layout, self.clock, &self.window) {
            Ok(row) => Record::Event { line, row },
            Err(reject) => {
                self.rejections.add(line, reject, &fields, &self.layout.0, Some(self.clock));
                let example = example(line, reject, &fields, &self.layout.0, Some(self.clock));
                Record::Rejected { line, reject, example, raw: self.raw_current() }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_433_221_332_117;

    #[test]
    fn clocks_are_detected_by_size_and_iso() {
        let d = |v: &[&str]| TimeUnit::detect(v.iter().map(|s| s.as_bytes()));
        assert_eq!(d(&["1433221332"]), Some(TimeUnit::Seconds));
        assert_eq!(d(&["852076800"]), Some(TimeUnit::Seconds), "1997 in seconds");
        assert_eq!(d(&["852076800000", "x"]), Some(TimeUnit::Milliseconds), "1997 in ms");
        assert_eq!(d(&["1433221332117000"]), Some(TimeUnit::Microseconds));
        assert_eq!(d(&["1433221332117000000"]), Some(TimeUnit::Nanoseconds));
        assert_eq!(d(&["2015-06-02T05:02:12Z", "2015-06-02 05:02:12"]), Some(TimeUnit::Iso8601));
        assert_eq!(d(&["1433221332.117"]), Some(TimeUnit::Seconds));
        // The median decides: a few odd values do not change the clock.
        assert_eq!(d(&["5", "1433221332117", "1433221332118", "1433221332119"]), Some(TimeUnit::Milliseconds));
        assert_eq!(d(&["yesterday", ""]), None);
    }

    #[test]
    fn every_clock_gives_the_same_milliseconds() {
        assert_eq!(TimeUnit::Seconds.to_ms(b"1433221332"), Some(1_433_221_332_000));
        assert_eq!(TimeUnit::Seconds.to_ms(b"1433221332.117"), Some(T));
        assert_eq!(TimeUnit::Seconds.to_ms(b"1433221332.1179"), Some(T));
        assert_eq!(TimeUnit::Milliseconds.to_ms(b"1433221332117"), Some(T));
        assert_eq!(TimeUnit::Microseconds.to_ms(b"1433221332117999"), Some(T));
        assert_eq!(TimeUnit::Nanoseconds.to_ms(b"1433221332117999999"), Some(T));
        for iso in [
            "2015-06-02T05:02:12.117Z",
            "2015-06-02 05:02:12.117",
            "2015-06-02T07:02:12.117+02:00",
            "2015-06-02T07:02:12.117+0200",
            "2015-06-02T00:02:12.117-05",
            "2015-06-02t05:02:12.117999z",
        ] {
            assert_eq!(TimeUnit::Iso8601.to_ms(iso.as_bytes()), Some(T), "{iso}");
        }
        assert_eq!(TimeUnit::Iso8601.to_ms(b"1997-01-01"), Some(852_076_800_000));
        assert_eq!(TimeUnit::Iso8601.to_ms(b"1969-12-31T23:59:59Z"), Some(-1000));
        for bad in ["", "-5", "1e3", "12a", "1.", ".5", "1.1234567890", "99999999999999999999999"] {
            assert_eq!(TimeUnit::Seconds.to_ms(bad.as_bytes()), None, "{bad}");
        }
        for bad in ["2015-13-02", "2015-02-30", "2015-06-02T25:00", "2015-06-02X05:02", "2015-06-02T05:02+1", "2015"] {
            assert_eq!(TimeUnit::Iso8601.to_ms(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!("ms".parse::<ClockOption>(), Ok(ClockOption::Fixed(TimeUnit::Milliseconds)));
        assert!("days".parse::<ClockOption>().is_err());
    }

    #[test]
    fn header_by_name_aliases_and_mapping() {
        let h = |s: &str| s.split(',').map(|f| f.as_bytes().to_vec()).collect::<Vec<_>>();
        fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
            v.iter().map(Vec::as_slice).collect()
        }
        let rr = h(RETAILROCKET_EVENTS_HEADER);
        let l = EventLayout::resolve(&refs(&rr), &ColumnMap::default()).unwrap();
        assert_eq!((l.0.column(Field::Ts), l.0.column(Field::TransactionId), l.0.width), (Some(0), Some(4), 5));
        let other = h("extra,event,Item_ID,user_id,ts");
        let l = EventLayout::resolve(&refs(&other), &ColumnMap::default()).unwrap();
        assert_eq!(
            (l.0.column(Field::UserId), l.0.column(Field::ItemId), l.0.column(Field::TransactionId)),
            (Some(3), Some(2), None)
        );
        let shop = h("when,customer,action,sku");
        let err = EventLayout::resolve(&refs(&shop), &ColumnMap::default()).unwrap_err().to_string();
        assert!(err.contains("`ts`") && err.contains("--columns"), "{err}");
        let map = ColumnMap::parse("ts=when, user_id=customer,event=action,item_id=sku").unwrap();
        let l = EventLayout::resolve(&refs(&shop), &map).unwrap();
        assert_eq!(l.0.column_name(Field::UserId), "customer");
        assert!(ColumnMap::parse("user=a,visitorid=b").unwrap_err().to_string().contains("twice"));
        assert!(ColumnMap::parse("colour=a").unwrap_err().to_string().contains("unknown field"));
        assert!(ColumnMap::parse("user_id").is_err());
        let dup = h("ts,user,event,item,user_id");
        assert!(EventLayout::resolve(&refs(&dup), &ColumnMap::parse("item_id=user").unwrap()).is_err());
    }

    fn rows(body: &str) -> Vec<(u64, Vec<String>)> {
        let mut out = Vec::new();
        let mut push = |line, f: &[&[u8]]| out.push((line, f.iter().map(|b| show(b)).collect()));
        if is_plain(body.as_bytes()) {
            for_each_plain_record(body.as_bytes(), 2, &mut push);
        } else {
            for_each_quoted_record(body.as_bytes(), 2, &mut push).unwrap();
        }
        out
    }

    #[test]
    fn plain_and_quoted_bodies_read_alike() {
        let plain = "1,a,view,x,\r\n\n2,b,view,y,\n";
        let quoted = "\"1\",\"a\",view,x,\r\n\n2,\"b\",\"view\",y,\"\"\n";
        assert_eq!(rows(plain), rows(quoted));
        assert_eq!(rows(plain)[1].0, 4, "blank lines count as lines");
        let q = rows("1,\"a,b\",view,\"x\"\"y\",\n2,\"multi\nline\",view,z,\n3,c,view,z,");
        assert_eq!(q[0].1[1], "a,b");
        assert_eq!(q[0].1[3], "x\"y");
        assert_eq!((q[1].0, q[1].1[1].as_str()), (3, "multi\nline"));
        assert_eq!(q[2].0, 5);
    }

    #[test]
    fn row_rules_name_reason_and_field() {
        let hdr: Vec<&[u8]> = RETAILROCKET_EVENTS_HEADER.split(',').map(str::as_bytes).collect();
        let l = EventLayout::resolve(&hdr, &ColumnMap::default()).unwrap();
        let w = Window::default();
        let row = |s: &str| {
            let f: Vec<&[u8]> = s.split(',').map(str::as_bytes).collect();
            event_row(&f, &l, TimeUnit::Milliseconds, &w).map(|r| (r.ts, r.user.to_owned(), r.txn.map(str::to_owned)))
        };
        assert_eq!(row(&format!("{T},SKU-1,view,2,")), Ok((T, "SKU-1".into(), None)));
        assert_eq!(row(&format!("{T},1,transaction,2,o:9")).unwrap().2.as_deref(), Some("o:9"));
        let reason = |s: String| row(&s).unwrap_err().reason;
        assert_eq!(reason(format!("{T},1,view,2")), Reason::WrongColumns);
        assert_eq!(reason(format!("{T},,view,2,")), Reason::EmptyField);
        assert_eq!(reason("x,1,view,2,".into()), Reason::BadTimestamp);
        assert_eq!(reason(format!("{T},1,click,2,")), Reason::UnknownEvent);
        assert_eq!(reason(format!("{T},a b,view,2,")), Reason::BadUserId);
        assert_eq!(reason(format!("{T},1,view,{},", "x".repeat(65))), Reason::BadItemId);
        assert_eq!(reason(format!("{T},1,transaction,2,a/b")), Reason::BadTransactionId);
        assert_eq!(reason(format!("{T},1,view,2,7")), Reason::TransactionIdNotOnTransaction);
        let narrow = Window { min: Some(T + 1), max: None };
        let f: Vec<&[u8]> = vec![b"1433221332117", b"1", b"view", b"2", b""];
        assert_eq!(event_row(&f, &l, TimeUnit::Milliseconds, &narrow).unwrap_err().reason, Reason::OutsideWindow);
    }

    #[test]
    fn rejections_count_every_reason_and_keep_examples() {
        let hdr: Vec<&[u8]> = RETAILROCKET_EVENTS_HEADER.split(',').map(str::as_bytes).collect();
        let l = EventLayout::resolve(&hdr, &ColumnMap::default()).unwrap();
        let mut a = Rejections::default();
        let mut b = Rejections::default();
        let f: Vec<&[u8]> = vec![b"x", b"1", b"view", b"2", b""];
        for line in 2..6 {
            a.add(line, Reject::new(Reason::BadTimestamp, Field::Ts), &f, &l.0, Some(TimeUnit::Seconds));
        }
        b.add(9, Reject::new(Reason::BadUserId, Field::UserId), &[b"1", b"a b", b"view", b"2", b""], &l.0, None);
        a.merge(&b);
        assert_eq!((a.total(), a.count(Reason::BadTimestamp), a.count(Reason::BadUserId)), (5, 4, 1));
        assert_eq!(a.by_count()[0], (Reason::BadTimestamp, 4));
        let ex: Vec<&Example> = a.examples(Reason::BadTimestamp).collect();
        assert_eq!(ex.len(), EXAMPLES_PER_REASON);
        assert_eq!((ex[0].line, ex[0].field.as_str(), ex[0].value.as_str()), (2, "timestamp", "x"));
        assert!(ex[0].message.contains("epoch seconds"), "{}", ex[0].message);
        let text = a.render("  ");
        assert!(text.contains("4 bad_timestamp") && text.contains("line 9: visitorid \"a b\""), "{text}");
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json[0]["reason"], "bad_timestamp");
        assert_eq!(json[1]["examples"][0]["line"], 9);
    }

    #[test]
    fn streaming_reader_detects_clock_and_reads_every_record() {
        let csv = "\u{FEFF}user,ts,event,sku,note\r\n\
                   a,1433221332,view,\"S-1\",x\r\n\
                   b,1433221333,addtocart,S2,\"y\"\r\n\
                   c,oops,view,S3,z\r\n";
        let mut r =
            EventReader::new(csv.as_bytes(), &ColumnMap::default(), ClockOption::Auto, Window::default()).unwrap();
        assert_eq!(r.clock(), TimeUnit::Seconds);
        let mut got = Vec::new();
        while let Some(rec) = r.next_record() {
            match rec.unwrap() {
                Record::Event { line, row } => got.push(format!("{line}:{}:{}:{}", row.ts, row.user, row.item)),
                Record::Rejected { line, reject, raw, .. } => {
                    got.push(format!("{line}:{}:{}", reject.reason, String::from_utf8_lossy(&raw)))
                }
            }
        }
        assert_eq!(got, ["2:1433221332000:a:S-1", "3:1433221333000:b:S2", "4:bad_timestamp:c,oops,view,S3,z"]);
        assert_eq!(r.rejections().count(Reason::BadTimestamp), 1);
    }
}
