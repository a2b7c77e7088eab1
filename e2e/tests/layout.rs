//! The workspace's shape, checked from its sources: no import circle between
//! the top-level modules of any crate, and every crate root's `//!` doc names
//! each of its modules (the doc is the map a newcomer reads first, so it must
//! list the rooms as they are).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e sits in the workspace").to_path_buf()
}

/// The workspace members, from the root manifest.
fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).expect("the root manifest");
    let line = manifest.lines().find(|l| l.trim_start().starts_with("members")).expect("a members line");
    line.split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments (doc links are not imports).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string (a URL) is rare in `use` lines; cutting
            // there only loses text after it, never invents an import.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names through `crate::`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `$crate::` in macros and `some_crate::` are other paths.
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the names at depth 1.
            let mut depth = 1;
            let mut at_start = true;
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => at_start = true,
                    c if c.is_whitespace() => {}
                    _ if at_start && depth == 1 => {
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            out.insert(name);
                        }
                        at_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The top-level module a source file belongs to (`None` for the crate root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_owned())
}

/// Every cycle's members, as strongly connected components of more than one module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(n) = stack.pop() {
            for m in graph.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|k| (k, reach(k))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for a in graph.keys() {
        let comp: Vec<String> =
            graph.keys().filter(|b| *b == a || (reach[a].contains(*b) && reach[*b].contains(a))).cloned().collect();
        if comp.len() > 1 && !out.contains(&comp) {
            out.push(comp);
        }
    }
    out
}

fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(m) = top_module(src, &f) else { continue };
        let text = std::fs::read_to_string(&f).expect("a source file");
        let refs = crate_refs(&code(&text));
        graph.entry(m.clone()).or_default().extend(refs.into_iter().filter(|r| *r != m));
    }
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| known.contains(d));
    }
    graph
}

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let mut found = Vec::new();
    for m in members() {
        let src = workspace().join(&m).join("src");
        for c in cycles(&module_graph(&src)) {
            found.push(format!("{m}: {}", c.join(" ⇄ ")));
        }
    }
    assert!(found.is_empty(), "modules that import each other (directly or around a circle):\n{}", found.join("\n"));
}

#[test]
fn every_crate_root_doc_names_its_modules() {
    let mut missing = Vec::new();
    for m in members() {
        for root in ["src/lib.rs", "src/main.rs"] {
            let Ok(text) = std::fs::read_to_string(workspace().join(&m).join(root)) else { continue };
            let doc: String = text.lines().filter(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
            assert!(!doc.trim().is_empty(), "{m}/{root} has no `//!` doc");
            for line in text.lines() {
                let l = line.trim_start();
                let decl = l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("mod "));
                let Some(name) = decl.and_then(|d| d.strip_suffix(';')) else { continue };
                if !doc.contains(&format!("`{name}`")) && !doc.contains(&format!("[`{name}`]")) {
                    missing.push(format!("{m}/{root}: module `{name}`"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "crate-root docs that do not name a module:\n{}", missing.join("\n"));
}

#[test]
fn the_checks_see_what_they_claim_to() {
    let refs =
        crate_refs("use crate::{a, b::c, d::{e, f}};\nlet x = crate::g::h();\nlet y = $crate::z; other_crate::q;");
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["a", "b", "d", "g"]);
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
            .collect();
    assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]);
    assert!(code("use crate::x; // crate::y").contains("crate::x"));
    assert!(!code("/// [`crate::y`]").contains("crate::y"));
}
