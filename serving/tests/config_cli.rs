//! `recsys-serving config check` / `config print` through the binary, with the
//! checks every recsys binary shares (`testkit::config_cli`).

use testkit::config_cli::Binary;

const BIN: Binary = Binary {
    path: env!("CARGO_BIN_EXE_recsys-serving"),
    section: "serving",
    typo: "listen_typo",
    env: &[("RECSYS__ADMIN__TOKEN", "s3cret-admin-token-0123", "s3cret-admin-token-0123")],
};

#[test]
fn the_shipped_file_checks_ok_and_names_the_file() {
    BIN.shipped_file_checks_ok();
}

#[test]
fn an_unknown_key_in_the_file_fails_with_its_name_and_the_file() {
    BIN.unknown_key_in_the_file_fails();
}

#[test]
fn an_unknown_variable_fails_with_its_name() {
    BIN.unknown_variable_fails();
}

#[test]
fn print_shows_the_effective_configuration_with_secrets_masked() {
    BIN.print_masks_secrets();
}
