//! `recsys-trainer generate`: synthetic RetailRocket-format data of any size
//! (the `datagen` crate), its report printed as JSON. Besides the files the
//! trainer reads it writes `item_properties.csv`, the catalog stream (each
//! item's category and availability at the start, then availability flips)
//! for `recsys-ingest replay-items`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::pipeline;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of events.
    #[arg(long)]
    pub events: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub(super) fn run(a: &GenerateArgs, show: bool) -> anyhow::Result<i32> {
    let cfg = datagen::GenerateConfig::new(a.events, a.seed);
    let pb = pipeline::progress_bar(a.events, "generate", show);
    let report = datagen::generate(&cfg, &a.out, Some(&pb)).with_context(|| format!("writing {}", a.out.display()))?;
    pb.finish_and_clear();
    sayln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(0)
}
