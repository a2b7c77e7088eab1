//! The README's quick start asks serving for a user: that user must exist in
//! the data its own `generate` command writes (an id that does not exist gets
//! the popular fallback and shows nothing of the model).

use std::path::Path;

use datagen::{generate, GenerateConfig};

/// The value after `flag ` in `line` (`--events 500000` → `500000`).
fn flag_value<'a>(line: &'a str, flag: &str) -> Option<&'a str> {
    let rest = &line[line.find(flag)? + flag.len()..];
    rest.split_whitespace().next()
}

#[test]
fn the_quick_start_user_exists_in_the_quick_start_data() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme.find("## Quick start").expect("a Quick start section");
    let section = &readme[start..readme[start + 1..].find("\n## ").map_or(readme.len(), |e| start + 1 + e)];
    let gen = section.lines().find(|l| l.contains(" generate --out ")).expect("a generate command");
    let events: u64 = flag_value(gen, "--events").unwrap().parse().unwrap();
    let seed: u64 = flag_value(gen, "--seed").map_or(42, |s| s.parse().unwrap());
    let users: Vec<&str> = section
        .split("/v1/recommendations/")
        .skip(1)
        .map(|rest| rest.split(['?', '\'', ' ', '"']).next().unwrap())
        .collect();
    assert!(!users.is_empty(), "no /v1/recommendations/ request in the Quick start");

    let dir = tempfile::tempdir().unwrap();
    generate(&GenerateConfig::new(events, seed), dir.path(), None).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("events.csv")).unwrap();
    for user in users {
        let n = csv.lines().skip(1).filter(|l| l.split(',').nth(1) == Some(user)).count();
        assert!(
            n > 0,
            "user {user} of the Quick start is not in `generate --events {events} --seed {seed}`'s events.csv"
        );
    }
}
