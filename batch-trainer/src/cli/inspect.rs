//! `recsys-trainer inspect`: the profile of a data directory, as text or
//! JSON; exits 1 when `train` would refuse the data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use super::args::LoadArgs;
use crate::{config, inspect, load};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Directory with events.csv (and optionally item_properties_part*.csv, category_tree.csv).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Print the profile as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

pub(super) fn run(a: &InspectArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let mut s = config::load_settings(config).context("reading configuration")?;
    a.load.apply(&mut s.training);
    s.validate().map_err(anyhow::Error::msg).context("invalid configuration")?;
    let opts = s.training.load_options();
    let ds = load::read_dir(&a.data_dir, &opts).with_context(|| format!("reading {}", a.data_dir.display()))?;
    let p = inspect::profile(&ds, &s.training, &opts);
    if a.json {
        sayln!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        say!("{}", inspect::render(&p));
    }
    if let Some(first) = p.problems.first() {
        bail!("the data would not train: {first}");
    }
    Ok(0)
}
