//! Committed documents that must equal what the code produces (the OpenAPI
//! documents under `docs/openapi/`): compared byte for byte, and rewritten
//! instead when `RECSYS_BLESS` is set, so a deliberate change is one command.

use std::path::Path;

/// Asserts that `file` holds `produced` followed by a newline; with
/// `RECSYS_BLESS` set, writes it first. On a mismatch the message names the
/// file and `regenerate`, the command that rewrites it.
pub fn assert_file_matches(file: &Path, produced: &str, regenerate: &str) {
    let produced = format!("{produced}\n");
    if std::env::var_os("RECSYS_BLESS").is_some() {
        if let Err(e) = std::fs::write(file, &produced) {
            panic!("cannot write {}: {e}", file.display());
        }
    }
    let committed = std::fs::read_to_string(file).unwrap_or_default();
    assert!(
        committed == produced,
        "{} differs from what the code produces; regenerate it with `{regenerate}`",
        file.display()
    );
}
