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

testkit::config_cli_tests!(BIN, |printed| {
    assert_eq!(printed["trainer"]["webhook"]["chat_id"].as_str(), Some("0042"), "the chat id keeps its zeros");
});
