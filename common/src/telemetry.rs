//! Logging set up identically in every binary: `RUST_LOG` filter (default
//! `info`), to stderr so stdout stays for command output.

/// Installs the global `tracing` subscriber. Call once, first thing in `main`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
