//! Every corpus input (hostile inputs written by hand, and crashes found and
//! fixed) runs through its target without a panic; then a short fuzzing run of
//! each target (a fixed number of inputs, so the suite's time is bounded).
//! Longer runs: `scripts/fuzz.sh`.

use fuzz::Target;

#[test]
fn every_corpus_input_is_handled_without_a_panic() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for t in Target::ALL {
        let seeds = fuzz::seeds(t).unwrap_or_else(|e| panic!("{}: {e}", t.name()));
        assert!(seeds.len() >= 3, "{}: the corpus is missing", t.name());
        for (i, s) in seeds.iter().enumerate() {
            if let Err(msg) = fuzz::run_one(t, s, scratch.path()) {
                panic!("{} seed {i} ({:?}…) panicked: {msg}", t.name(), String::from_utf8_lossy(&s[..s.len().min(80)]));
            }
        }
    }
}

#[test]
fn a_short_fuzzing_run_of_every_target_finds_no_panic() {
    for (t, runs) in [(Target::EventsJson, 20_000), (Target::Csv, 5_000), (Target::Manifest, 300)] {
        let r = fuzz::fuzz(t, std::time::Duration::from_secs(120), runs, 42).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.runs, runs, "{}: the budget ran out first", t.name());
        if let Some((input, msg)) = r.crashes.first() {
            panic!("{}: {} panic(s); first: {msg} on {:?}", t.name(), r.crashes.len(), String::from_utf8_lossy(input));
        }
    }
}

#[test]
fn mutations_are_reproducible_and_bounded() {
    use rand::SeedableRng;
    let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for _ in 0..200 {
        let x = fuzz::mutate(&mut a, b"{\"ts\":1}", b"[1,2]", 64);
        assert_eq!(x, fuzz::mutate(&mut b, b"{\"ts\":1}", b"[1,2]", 64));
        assert!(x.len() <= 64);
    }
}

#[test]
fn a_panic_is_caught_and_reported_with_its_message() {
    assert_eq!(fuzz::guarded(|| {}), Ok(()));
    let msg = fuzz::guarded(|| panic!("boom {}", 7)).unwrap_err();
    assert_eq!(msg, "boom 7");
    // Also from a rayon worker, as the CSV loader's parsing runs there.
    let msg = fuzz::guarded(|| rayon::scope(|s| s.spawn(|_| panic!("in a worker")))).unwrap_err();
    assert_eq!(msg, "in a worker");
}
