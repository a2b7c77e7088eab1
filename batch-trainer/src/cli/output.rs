//! What the commands print and exit with: stdout that survives a closed pipe,
//! the exit codes beyond 0 and 1, the load summary, JSON files.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Context;

use crate::data::Dataset;
use crate::kafka_source::KafkaReport;
use crate::publish::PublishReport;

/// Exit code of a run whose model the gate rejected (it is kept, not served).
pub const EXIT_REJECTED: i32 = 3;
/// Exit code of a run whose model was promoted (`CURRENT` names it) but whose
/// publication (Redis lists, announcement) failed: re-publish with `models promote`.
pub const EXIT_PUBLISH_FAILED: i32 = 4;

/// Writes to stdout; a closed pipe (`recsys-trainer … | head`) ends the process
/// quietly instead of panicking, as command-line tools do.
pub(super) fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

macro_rules! say {
    ($($t:tt)*) => { $crate::cli::output::emit(&format!($($t)*)) };
}

macro_rules! sayln {
    ($($t:tt)*) => { $crate::cli::output::emit(&format!("{}\n", format!($($t)*))) };
}

/// What each file contributed and what was rejected, one line per file
/// ([`crate::data::LoadReport::render`]), then the category tree and properties.
pub fn render_load(ds: &Dataset) -> String {
    let mut reports = vec![&ds.events.report];
    if let Some(p) = &ds.properties {
        reports.extend(p.reports.iter());
    }
    let mut s = String::new();
    for r in reports {
        s.push_str("loaded ");
        s.push_str(&r.render());
    }
    match &ds.tree {
        Some(t) => {
            let _ = writeln!(s, "category tree: {} categories", t.parent.len());
        }
        None => s.push_str("category tree: none\n"),
    }
    if ds.properties.is_none() {
        s.push_str("item properties: none (no categories: the re-rank is a no-op)\n");
    }
    s
}

/// What the topic contributed and what was refused.
pub fn render_kafka(k: &KafkaReport) -> String {
    let mut s = String::new();
    for p in &k.partitions {
        let _ = writeln!(
            s,
            "kafka {} partition {}: offsets [{}, {}), {} messages",
            k.topic, p.partition, p.start, p.end, p.messages
        );
    }
    let reasons: Vec<String> = k.invalid.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let _ = writeln!(
        s,
        "kafka {}: {} messages, {} invalid{}",
        k.topic,
        k.messages,
        k.invalid_total(),
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) }
    );
    for r in &k.samples {
        let _ = writeln!(s, "  invalid at partition {} offset {}: {}", r.partition, r.offset, r.reason);
    }
    s
}

pub(super) fn print_publication(r: &PublishReport) {
    emit(&format!(
        "published {}: popular ({} items), {} category lists, {} similar lists, {} stale lists deleted, \
         announced at partition {} offset {}\n",
        r.version,
        r.popular_items,
        r.category_lists,
        r.similar_lists,
        r.stale_deleted,
        r.announcement_partition,
        r.announcement_offset
    ));
}

pub(super) fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, serde_json::to_vec_pretty(value)?).with_context(|| format!("writing {}", path.display()))
}
