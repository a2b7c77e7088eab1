//! `recsys-ingest config check` / `config print` through the binary, with the
//! checks every recsys binary shares (`testkit::config_cli`).

use testkit::config_cli::Binary;

const BIN: Binary =
    Binary { path: env!("CARGO_BIN_EXE_recsys-ingest"), section: "ingest", typo: "listen_typo", env: &[] };

testkit::config_cli_tests!(BIN);
