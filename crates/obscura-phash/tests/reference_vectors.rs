//! The hashes must agree with the Python reference, or users of the reference get different
//! answers. `testdata/phash-vectors.json` holds 60 vectors computed by the reference.

use std::path::PathBuf;

use obscura_phash::{phash64, PHash64};

#[derive(serde::Deserialize)]
struct Vector {
    file: String,
    phash64: String,
}

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

#[test]
fn reference_vectors_agree() {
    let dir = testdata();
    let vectors: Vec<Vector> =
        serde_json::from_slice(&std::fs::read(dir.join("phash-vectors.json")).unwrap()).unwrap();
    assert_eq!(vectors.len(), 60);
    let mut identical = 0;
    let mut worst = 0;
    for v in &vectors {
        let want: PHash64 = v.phash64.parse().unwrap();
        let bytes = std::fs::read(dir.join(&v.file)).unwrap();
        let got = phash64(&bytes).unwrap_or_else(|e| panic!("{}: {e}", v.file));
        let d = got.distance(want);
        if d == 0 {
            identical += 1;
        } else {
            println!("{}: got {got}, reference {want}, {d} bits apart", v.file);
        }
        worst = worst.max(d);
    }
    println!(
        "pHash-64 reference vectors: {identical}/{} identical, worst {worst} bits",
        vectors.len()
    );
    assert!(identical >= 57, "only {identical}/60 identical");
    assert!(worst <= 2, "a vector is {worst} bits off");
}
