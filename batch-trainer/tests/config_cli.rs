//! `recsys-trainer config check` / `config print` through the binary, with the
//! checks every recsys binary shares (`testkit::config_cli`).

use testkit::config_cli::Binary;

const BIN: Binary = Binary {
    path: env!("CARGO_BIN_EXE_recsys-trainer"),
    section: "trainer",
    typo: "keep_versions_typo",
    env: &[
        ("RECSYS__TRAINER__WEBHOOK__URL", "https://api.telegram.org/botSECRET123/sendMessage", "SECRET123"),
        ("RECSYS__TRAINER__WEBHOOK__FORMAT", "telegram", ""),
        ("RECSYS__TRAINER__WEBHOOK__CHAT_ID", "0042", ""),
    ],
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
    let t = BIN.print_masks_secrets();
    assert_eq!(t["trainer"]["webhook"]["chat_id"].as_str(), Some("0042"), "the chat id keeps its zeros");
}
