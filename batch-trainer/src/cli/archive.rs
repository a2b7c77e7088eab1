//! `recsys-trainer archive`: the event log (an archive's events, then the
//! topic's newer ones) written as a new archive directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::args::{load_data, settings};
use crate::archive;
use crate::nightly::Source;

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The new archive directory (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The previous archive (with kafka_offsets.json); its item properties and
    /// category tree are copied.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub(super) fn run(a: &ArchiveArgs, config: Option<&Path>, show: bool) -> anyhow::Result<i32> {
    let s = settings(config, None)?;
    let src = Source { data_dir: a.data_dir.clone(), from_kafka: true };
    let loaded = load_data(&src, &s, show)?;
    let r = archive::write_archive(&loaded, a.data_dir.as_deref(), &a.out)
        .with_context(|| format!("writing the archive {}", a.out.display()))?;
    sayln!(
        "archived {} events to {} (topic offsets {:?}; copied {:?})",
        r.events,
        r.dir.display(),
        r.offsets.offsets,
        r.copied
    );
    Ok(0)
}
