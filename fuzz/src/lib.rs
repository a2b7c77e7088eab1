//! Mutation fuzzing of every parser that reads untrusted input. None of them
//! may panic, whatever the bytes: a panic in ingest is a dropped request, in
//! the updater a crash loop, in the trainer a failed night.
//!
//! Targets ([`Target`]):
//! - `events-json`: a `POST /v1/events` body (`schemas::Event::parse_json_batch`),
//!   and the other wire records (`Impression`, `ModelAnnouncement`, `DeadLetter`);
//! - `csv`: an `events.csv` as the trainer loads it
//!   (`batch_trainer::load::parse_events_bytes`, several chunkings) and as
//!   `recsys-ingest replay` streams it (`schemas::csv::EventReader`);
//! - `manifest`: a model version directory with one file damaged (checksums
//!   fixed up half of the time, so the content parsers are reached too), read
//!   by `model::artifact::Artifact::read`, serving's `Catalog::load` and the
//!   updater's `ServedModel::load`.
//!
//! How: no coverage guidance (stable Rust has none); each run starts from a
//! seed of the corpus (`fuzz/corpus/{target}/`), applies 1–8 random byte-level
//! and token-level mutations, and calls the target under `catch_unwind`. An
//! input that panics is written to `fuzz/crashes/` and the run fails; fixed
//! crashes go into the corpus so they are replayed by `tests/corpus.rs` forever.
//! `recsys-fuzz` (src/main.rs) runs targets for a bounded time;
//! `scripts/fuzz.sh` runs all of them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// A parser under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    EventsJson,
    Csv,
    Manifest,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::EventsJson, Target::Csv, Target::Manifest];

    pub fn name(self) -> &'static str {
        match self {
            Target::EventsJson => "events-json",
            Target::Csv => "csv",
            Target::Manifest => "manifest",
        }
    }

    pub fn from_name(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// The repository's corpus directory of `target`.
pub fn corpus_dir(target: Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target.name())
}

/// The seeds of `target`: every file of its corpus directory (sorted), plus
/// built-in ones so an empty corpus still works. For `manifest` a seed is the
/// name of the file to damage followed by a newline and the bytes to put there.
pub fn seeds(target: Target) -> std::io::Result<Vec<Vec<u8>>> {
    let mut out = builtin_seeds(target);
    let dir = corpus_dir(target);
    if dir.is_dir() {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        files.sort();
        for f in files.into_iter().filter(|f| f.is_file()) {
            out.push(std::fs::read(f)?);
        }
    }
    Ok(out)
}

fn builtin_seeds(target: Target) -> Vec<Vec<u8>> {
    match target {
        Target::EventsJson => vec![
            br#"{"ts":1700000000000,"user_id":"u1","item_id":"i1","event":"view"}"#.to_vec(),
            br#"[{"ts":1700000000000,"user_id":"257597","item_id":355908,"event":"addtocart","rec_id":"r-1"},
                {"ts":1700000000000,"user_id":"0","item_id":"1","event":"transaction","transaction_id":"4000","revenue":12.5}]"#
                .to_vec(),
        ],
        Target::Csv => vec![
            b"timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n1433224214164,992329,view,248676,\n1433221999827,111016,transaction,46156,4000\n".to_vec(),
        ],
        Target::Manifest => model::artifact::VERSION_FILES.iter().map(|f| format!("{f}\n").into_bytes()).collect(),
    }
}

/// Runs `target` on `input`: `Err` with the panic message when it panicked.
pub fn run_one(target: Target, input: &[u8], scratch: &Path) -> Result<(), String> {
    guarded(|| match target {
        Target::EventsJson => events_json(input),
        Target::Csv => csv(input),
        Target::Manifest => manifest(input, scratch),
    })
}

/// Runs `f`, turning a panic into `Err` with its message.
pub fn guarded(f: impl FnOnce()) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

const NOW_MS: i64 = 1_750_000_000_000;

fn events_json(input: &[u8]) {
    let limits = schemas::EventLimits::default();
    if let Ok(items) = schemas::Event::parse_json_batch(input, NOW_MS, &limits) {
        for item in items {
            // What ingest does with an accepted event: serialise it for Kafka,
            // and the updater parses that again; both must agree.
            if let Ok(e) = item.result {
                let wire = e.to_json();
                let back = schemas::Event::parse_json(&wire, NOW_MS).expect("an accepted event re-parses");
                assert_eq!(back, e, "wire round trip");
            }
        }
    }
    let _ = schemas::Impression::parse_json(input);
    let _ = schemas::ModelAnnouncement::parse_json(input);
    let _ = schemas::DeadLetter::parse_json(input);
    let _ = schemas::RecsList::parse_json(input);
}

fn csv(input: &[u8]) {
    let opts = batch_trainer::load::LoadOptions::default();
    let whole = batch_trainer::load::parse_events_bytes(input, &opts, 1);
    for chunks in [2, 7] {
        let other = batch_trainer::load::parse_events_bytes(input, &opts, chunks);
        match (&whole, &other) {
            (Ok(a), Ok(b)) => assert_eq!(a.events, b.events, "chunking changed the events"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "chunking changed the error"),
            _ => panic!("chunking changed the outcome: {whole:?} vs {other:?}"),
        }
    }
    let map = schemas::csv::ColumnMap::default();
    let window = schemas::csv::Window::default();
    if let Ok(mut r) = schemas::csv::EventReader::new(input, &map, schemas::csv::ClockOption::Auto, window) {
        while let Some(Ok(_)) = r.next_record() {}
    }
}

/// A valid version directory, written once per scratch directory.
fn pristine(scratch: &Path) -> PathBuf {
    let root = scratch.join("pristine");
    if !root.join("fz").is_dir() {
        let spec = model::synthetic::SyntheticSpec {
            version: "fz".into(),
            users: 40,
            items: 30,
            factors: 4,
            categories: 3,
            ..model::synthetic::SyntheticSpec::default()
        };
        model::synthetic::synthetic_artifact(&spec).write(&root).expect("writing the pristine artifact");
    }
    root.join("fz")
}

fn manifest(input: &[u8], scratch: &Path) {
    let src = pristine(scratch);
    let (name, bytes) = match input.iter().position(|b| *b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&input[..i]).into_owned(), &input[i + 1..]),
        None => return,
    };
    if !model::artifact::VERSION_FILES.contains(&name.as_str()) {
        return;
    }
    let dir = scratch.join("case").join("fz");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for f in model::artifact::VERSION_FILES {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    // An empty replacement means "the pristine file": the seeds start there.
    if !bytes.is_empty() {
        std::fs::write(dir.join(&name), bytes).expect("write");
        // Fix the checksum up (when the manifest still parses) so the file's
        // own parser is reached, not only the checksum test.
        if name != model::artifact::MANIFEST_FILE && bytes.len() % 2 == 0 {
            fix_digest(&dir, &name, bytes);
        }
    }
    let _ = model::artifact::read_manifest(&dir);
    let _ = model::artifact::Artifact::read(&dir);
    let _ = serving::Catalog::load(&dir);
    let _ = updater::ServedModel::load(&dir);
}

fn fix_digest(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(model::artifact::MANIFEST_FILE);
    let Ok(text) = std::fs::read(&path) else { return };
    let Ok(mut m) = serde_json::from_slice::<serde_json::Value>(&text) else { return };
    if let Some(d) = m.get_mut("files").and_then(|f| f.get_mut(name)) {
        d["sha256"] = serde_json::Value::String(hex::encode(Sha256::digest(bytes)));
        d["bytes"] = serde_json::Value::from(bytes.len() as u64);
        if let Ok(out) = serde_json::to_vec_pretty(&m) {
            let _ = std::fs::write(&path, out);
        }
    }
}

/// Tokens that parsers treat specially, spliced in by [`mutate`].
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"null",
    b"true",
    b"-",
    b"-0",
    b"0",
    b"1e309",
    b"-1e309",
    b"NaN",
    b"Infinity",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"1.5",
    b"0x10",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"view",
    b"addtocart",
    b"transaction",
    b"\"ts\"",
    b"\"user_id\"",
    b"\"item_id\"",
    b"\"event\"",
    b"\"revenue\"",
    b"\"transaction_id\"",
    b"\"rec_id\"",
    b"\xef\xbb\xbf",
    b"timestamp,visitorid",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"{\"a\":{\"a\":{\"a\":{\"a\":",
];

/// 1–8 random mutations of `seed` (another seed may be spliced in).
pub fn mutate(rng: &mut ChaCha8Rng, seed: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let len = v.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                v.splice(i..i, t.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=16)).min(len);
                v.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=64)).min(len);
                let piece = v[a..b].to_vec();
                let at = rng.random_range(0..=v.len());
                v.splice(at..at, piece);
            }
            5 if !other.is_empty() => {
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => v.truncate(rng.random_range(0..len)),
            7 => {
                // Replace a run of digits by an extreme number.
                if let Some(start) = v.iter().position(|b| b.is_ascii_digit()) {
                    let end = v[start..].iter().position(|b| !b.is_ascii_digit()).map_or(v.len(), |e| start + e);
                    let t = TOKENS[rng.random_range(15..29)];
                    v.splice(start..end, t.iter().copied());
                }
            }
            _ => {
                let mut junk = vec![0u8; rng.random_range(1..=8)];
                rng.fill_bytes(&mut junk);
                let at = rng.random_range(0..=len);
                v.splice(at..at, junk);
            }
        }
    }
    v.truncate(max_len);
    v
}

/// What one bounded run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub runs: u64,
    pub seconds: f64,
    /// Inputs that panicked, and their messages.
    pub crashes: Vec<(Vec<u8>, String)>,
}

/// Fuzzes `target` for `budget` (at most `max_runs` inputs) from `seed`.
pub fn fuzz(target: Target, budget: Duration, max_runs: u64, seed: u64) -> std::io::Result<Report> {
    let seeds = seeds(target)?;
    let scratch = tempfile::tempdir()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = Instant::now();
    let mut report = Report::default();
    // The manifest target's seeds are "file\n"; the damage comes from mutating
    // the pristine file's bytes, so fetch them once.
    let pristine_files: Vec<(String, Vec<u8>)> = if target == Target::Manifest {
        let dir = pristine(scratch.path());
        model::artifact::VERSION_FILES
            .iter()
            .map(|f| Ok(((*f).to_owned(), std::fs::read(dir.join(f))?)))
            .collect::<std::io::Result<_>>()?
    } else {
        Vec::new()
    };
    while start.elapsed() < budget && report.runs < max_runs {
        let s = &seeds[rng.random_range(0..seeds.len())];
        let o = &seeds[rng.random_range(0..seeds.len())];
        let input = if target == Target::Manifest {
            let (name, body) = &pristine_files[rng.random_range(0..pristine_files.len())];
            let from_seed = s.iter().position(|b| *b == b'\n').map(|i| &s[i + 1..]).filter(|b| !b.is_empty());
            let mut v = format!("{name}\n").into_bytes();
            v.extend(mutate(&mut rng, from_seed.unwrap_or(body), body, 1 << 20));
            v
        } else {
            mutate(&mut rng, s, o, 1 << 16)
        };
        if let Err(msg) = run_one(target, &input, scratch.path()) {
            report.crashes.push((input, msg));
        }
        report.runs += 1;
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
