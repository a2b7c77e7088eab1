//! `recsys-serving config check` / `config print` through the binary, with the
//! checks every recsys binary shares (`testkit::config_cli`).

use testkit::config_cli::Binary;

const BIN: Binary = Binary {
    path: env!("CARGO_BIN_EXE_recsys-serving"),
    section: "serving",
    typo: "listen_typo",
    env: &[("RECSYS__ADMIN__TOKEN", "s3cret-admin-token-0123", "s3cret-admin-token-0123")],
};

testkit::config_cli_tests!(BIN);
