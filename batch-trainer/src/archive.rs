//! `recsys-trainer archive`: the event log as a new archive directory — the
//! previous archive's events, then the topic's newer ones, in `events.csv`,
//! with `kafka_offsets.json` naming the topic offsets it now covers — so the
//! topic's retention can be shortened and the next `--data-dir NEW
//! --from-kafka` reads only what came after.
//!
//! The archive is written under a temporary name and renamed into place, so
//! `events.csv` and its offsets always appear together (a crash between two
//! files could otherwise make the next run read some events twice). The
//! events are the cleaned ones the trainer would use (invalid messages,
//! times outside the accepted range and exact duplicates are not archived).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::kafka_source::{ArchiveOffsets, KafkaReport};
use crate::load::EVENTS_HEADER;
use crate::nightly::Loaded;

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0} already exists: an archive is written into a new directory")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{users} user ids, {items} item ids and {txns} transaction ids are not plain numbers: \
         events.csv (RetailRocket's format) holds numeric ids only"
    )]
    NotNumeric { users: usize, items: usize, txns: u64 },
    #[error("the archive needs the topic's offsets: read with --from-kafka")]
    NoKafka,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_path_buf(), source }
}

/// What was archived.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    pub dir: PathBuf,
    pub events: usize,
    pub offsets: ArchiveOffsets,
    /// Item property and category tree files copied from the previous archive.
    pub copied: Vec<String>,
}

/// Writes `loaded` (read with `--from-kafka`, after `previous` if given) to `out`.
pub fn write_archive(loaded: &Loaded, previous: Option<&Path>, out: &Path) -> Result<ArchiveReport, ArchiveError> {
    let kafka: &KafkaReport = loaded.kafka.as_ref().ok_or(ArchiveError::NoKafka)?;
    let (users, items) = loaded.ds.names.interned();
    if users > 0 || items > 0 || kafka.named_transactions > 0 {
        return Err(ArchiveError::NotNumeric { users, items, txns: kafka.named_transactions });
    }
    if out.exists() {
        return Err(ArchiveError::Exists(out.to_path_buf()));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "archive".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;

    let events = &loaded.ds.events.events;
    let mut csv = String::with_capacity(events.len() * 48 + 64);
    csv.push_str(EVENTS_HEADER);
    csv.push('\n');
    for e in events {
        let _ = write!(csv, "{},{},{},{},", e.ts, e.user, e.kind.as_str(), e.item);
        if let Some(t) = e.txn {
            let _ = write!(csv, "{t}");
        }
        csv.push('\n');
    }
    let path = tmp.join("events.csv");
    fs::write(&path, csv).map_err(io(&path))?;

    let mut copied = Vec::new();
    if let Some(prev) = previous {
        for entry in fs::read_dir(prev).map_err(io(prev))? {
            let entry = entry.map_err(io(prev))?;
            let n = entry.file_name().to_string_lossy().into_owned();
            if n == "category_tree.csv" || (n.starts_with("item_properties_part") && n.ends_with(".csv")) {
                let to = tmp.join(&n);
                fs::copy(entry.path(), &to).map_err(io(&to))?;
                copied.push(n);
            }
        }
    }
    copied.sort();
    let offsets = ArchiveOffsets {
        topic: schemas::topics::EVENTS.into(),
        offsets: kafka.partitions.iter().map(|p| (p.partition, p.end)).collect(),
    };
    offsets.write(&tmp).map_err(io(&tmp))?;
    fs::rename(&tmp, out).map_err(io(out))?;
    Ok(ArchiveReport { dir: out.to_path_buf(), events: events.len(), offsets, copied })
}
