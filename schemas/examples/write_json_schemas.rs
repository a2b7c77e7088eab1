//! Regenerates `schemas/json/*.schema.json` from the Rust types.
//!
//! ```sh
//! cargo run -p schemas --example write_json_schemas [DIR]
//! ```
//!
//! The committed documents are checked against the code by a test, so run this
//! after changing a wire type and commit the result.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(schemas::JSON_SCHEMA_DIR));
    schemas::write_json_schemas(&dir)?;
    for (name, _) in schemas::json_schemas() {
        println!("{}", dir.join(name).display());
    }
    Ok(())
}
