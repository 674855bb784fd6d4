//! Every fuzz target on every file of its corpus and of its regressions, on stable: a crash the
//! fuzzer found once stays fixed, and a target whose corpus is missing fails here rather than
//! fuzzing from nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_input_passes_its_target() {
    let fuzz = fuzz_dir();
    let mut missing = Vec::new();
    let mut failed = Vec::new();
    for &(name, target) in obscura_fuzz::TARGETS {
        let corpus = files(&fuzz.join("corpus").join(name));
        let regressions = files(&fuzz.join("regressions").join(name));
        if corpus.is_empty() {
            missing.push(name);
        }
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("a readable input");
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failed.push(path.display().to_string());
            }
        }
        println!(
            "{name}: replayed {} corpus and {} regression inputs",
            corpus.len(),
            regressions.len()
        );
    }
    obscura_fuzz::remove_scratch();
    assert!(
        missing.is_empty(),
        "no corpus for {missing:?}: run fuzz/seed.sh"
    );
    assert!(
        failed.is_empty(),
        "inputs that fail their target: {failed:#?}"
    );
}

#[test]
fn every_target_has_seeds_and_every_seed_a_target() {
    let targets: Vec<&str> = obscura_fuzz::TARGETS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    let seeds = obscura_fuzz::seeds();
    let seeded: Vec<&str> = seeds.iter().map(|(name, _)| *name).collect();
    assert_eq!(seeded, targets);
    for (name, inputs) in &seeds {
        assert!(!inputs.is_empty(), "{name} has no seeds");
        assert!(inputs.len() <= 48, "{name} has {} seeds", inputs.len());
    }
}

#[test]
fn the_seeds_pass_their_targets() {
    for (name, inputs) in obscura_fuzz::seeds() {
        let target = obscura_fuzz::TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, target)| target)
            .expect("a target of that name");
        for (i, input) in inputs.iter().enumerate() {
            let ok = catch_unwind(AssertUnwindSafe(|| target(input))).is_ok();
            assert!(ok, "{name} seed-{i} fails its target");
        }
    }
    obscura_fuzz::remove_scratch();
}

/// The wire seeds on disk are requests of today's protocol, to nodes and to keepers alike, as
/// `fuzz/seed.sh` writes them: a seed of an older version is refused at its first bytes, and so
/// is every mutation of it, so a stale corpus would fuzz nothing past the version check.
#[test]
fn the_wire_seeds_on_disk_are_of_todays_protocol() {
    use obscura_proto::{KeeperBody, NodeBody, Request};
    let dir = fuzz_dir().join("corpus/wire_request");
    let seeds: Vec<Vec<u8>> = files(&dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .map(|p| std::fs::read(p).expect("a readable seed"))
        .collect();
    let node = seeds
        .iter()
        .filter(|s| Request::<NodeBody>::decode(s).is_ok())
        .count();
    let keeper = seeds
        .iter()
        .filter(|s| Request::<KeeperBody>::decode(s).is_ok())
        .count();
    assert!(
        node >= 14 && keeper >= 20,
        "{node} node and {keeper} keeper requests among {} seeds: run fuzz/seed.sh",
        seeds.len()
    );
}

/// Inputs mutated from each target's corpus per run of this test: the short form of the fuzz
/// campaign that runs on stable with every test. It is not coverage-guided (that is
/// `fuzz/run-all.sh`), but it walks the same parsers off their valid inputs.
const MUTATIONS_PER_TARGET: usize = 2000;

/// FNV-1a, to name an input by its content.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One of libFuzzer's simpler mutations of `input`, chosen by `rng`: flip a bit, set a byte to
/// an edge value, insert or remove a run of bytes, truncate, or splice in part of `other`.
fn mutate(input: &[u8], other: &[u8], rng: &mut u64) -> Vec<u8> {
    let mut next = |bound: usize| {
        // xorshift64*: deterministic, so a failure names the input that caused it.
        *rng ^= *rng >> 12;
        *rng ^= *rng << 25;
        *rng ^= *rng >> 27;
        (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % bound.max(1)
    };
    let mut out = input.to_vec();
    for _ in 0..1 + next(4) {
        let at = next(out.len() + 1);
        match next(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << next(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][next(5)];
            }
            2 => {
                let run = next(16) + 1;
                let byte = next(256) as u8;
                out.splice(at..at, std::iter::repeat_n(byte, run));
            }
            3 if !out.is_empty() => {
                let end = (at + next(16) + 1).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 => out.truncate(at),
            _ if !other.is_empty() => {
                let from = next(other.len());
                let end = (from + next(64) + 1).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            _ => {}
        }
    }
    out
}

#[test]
fn mutations_of_every_corpus_pass_their_targets() {
    let fuzz = fuzz_dir();
    let mut failed = Vec::new();
    for (t, &(name, target)) in obscura_fuzz::TARGETS.iter().enumerate() {
        let corpus: Vec<Vec<u8>> = files(&fuzz.join("corpus").join(name))
            .iter()
            .map(|p| std::fs::read(p).expect("a readable input"))
            .collect();
        if corpus.is_empty() {
            continue; // reported by the replay test
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1);
        for i in 0..MUTATIONS_PER_TARGET {
            let input = &corpus[i % corpus.len()];
            let other = &corpus[(i * 7 + 3) % corpus.len()];
            let data = mutate(input, other, &mut rng);
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                // Kept out of the source tree, named by content: copy it into
                // fuzz/regressions/<target>/ once the bug is fixed.
                let keep = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join("fuzz-mutations")
                    .join(name);
                let path = keep.join(format!("mutation-{:016x}", fnv1a(&data)));
                let written =
                    std::fs::create_dir_all(&keep).and_then(|()| std::fs::write(&path, &data));
                failed.push(format!("{} ({written:?})", path.display()));
            }
        }
    }
    obscura_fuzz::remove_scratch();
    assert!(
        failed.is_empty(),
        "mutated inputs that fail their target: {failed:#?}"
    );
}
