//! The Python package (`crates/obscura-py`, built by maturin) against a real cluster: its
//! pytest suite, run in the virtual environment `.ci/python` makes (`OBSCURA_TEST_PYTHON`).

mod common;

use std::process::Command;

#[test]
fn the_python_package_logs_in_indexes_searches_and_rebuilds() {
    let Some(python) = std::env::var_os("OBSCURA_TEST_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "OBSCURA_TEST_PYTHON is not set: .ci/run sets it from .ci/python"
        );
        eprintln!(
            "SKIPPED: the Python package's tests need OBSCURA_TEST_PYTHON=$(.ci/python) \
             (a virtual environment with the package built by maturin, pytest and Pillow)"
        );
        return;
    };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "crates/obscura-py/tests",
        ])
        .current_dir(root)
        .env("OBSCURA_BIN", common::BIN)
        .env("OBSCURA_TESTDATA", format!("{root}/testdata"))
        .output()
        .unwrap();
    let text = common::text(&out);
    println!("{text}");
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(text.contains(" passed"), "{text}");
    assert!(!text.contains("skipped"), "{text}");
}
