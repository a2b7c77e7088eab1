//! Logging set up identically in every binary: `RUST_LOG` filter (default
//! `info`, the trainer's `warn`), to stderr so stdout stays for command
//! output, as text for people or one JSON object per line for a log pipeline
//! (`--log-format json`, or `RECSYS_LOG_FORMAT=json` in a container).

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans).
    Json,
}

/// Names the log format when no `--log-format` is given.
pub const LOG_FORMAT_ENV: &str = "RECSYS_LOG_FORMAT";

/// Installs the global `tracing` subscriber with the `info` default filter.
/// Call once, first thing in `main` after parsing the command line.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// [`init`] with another default filter (when `RUST_LOG` is unset or invalid).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // The span list carries the request id of the span a line was logged in.
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}
