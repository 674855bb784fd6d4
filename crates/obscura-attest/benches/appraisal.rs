//! Time of one appraisal per platform, on the real evidence in `../shared/testdata/evidence`
//! (skipped, with a line saying so, where it is absent) and on simulated evidence.

use criterion::{criterion_group, criterion_main, Criterion};
use obscura_attest::{sim, Evidence, Policy, Verifier};

fn evidence_dir() -> Option<std::path::PathBuf> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/evidence");
    dir.is_dir().then_some(dir)
}

/// Accepts every TCB status the samples have; lists no measurement, so `inspect` without a role
/// runs every check but the measurement's.
fn open_policy() -> Policy {
    Policy::from_json(
        r#"{"version": 1, "name": "bench", "allow_simulation": true,
            "tcb": {"accept": ["UpToDate", "ConfigurationAndSWHardeningNeeded"],
                    "accept_advisories": ["INTEL-SA-00289", "INTEL-SA-00615"]}}"#,
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let verifier = Verifier::new();
    let policy = open_policy();
    let mut group = c.benchmark_group("appraise");
    match evidence_dir() {
        Some(dir) => {
            let dcap = |quote: &str, collateral: &str, tdx: bool| {
                let quote = std::fs::read(dir.join(quote)).unwrap();
                let collateral =
                    serde_json::from_slice(&std::fs::read(dir.join(collateral)).unwrap()).unwrap();
                if tdx {
                    Evidence::Tdx {
                        quote,
                        collateral: Some(Box::new(collateral)),
                    }
                } else {
                    Evidence::Sgx {
                        quote,
                        collateral: Some(Box::new(collateral)),
                    }
                }
            };
            let cases = [
                (
                    "sgx",
                    dcap(
                        "sgx-dcap/sgx_quote",
                        "sgx-dcap/sgx_quote_collateral.json",
                        false,
                    ),
                    1_750_400_000,
                ),
                (
                    "tdx",
                    dcap(
                        "tdx-dcap/tdx_quote",
                        "tdx-dcap/tdx_quote_collateral.json",
                        true,
                    ),
                    1_750_400_000,
                ),
                (
                    "snp",
                    Evidence::Snp {
                        report: hex::decode(
                            std::fs::read_to_string(dir.join("sev-snp/report_milan.hex"))
                                .unwrap()
                                .trim(),
                        )
                        .unwrap(),
                        vek: Some(std::fs::read(dir.join("sev-snp/vcek_milan.der")).unwrap()),
                        chain: None,
                    },
                    1_750_400_000,
                ),
            ];
            for (name, evidence, now) in cases {
                group.bench_function(name, |b| {
                    b.iter(|| verifier.inspect(&evidence, &policy, None, now).unwrap())
                });
            }
        }
        None => eprintln!(
            "appraisal bench: ../shared/testdata/evidence is absent; real-evidence cases skipped"
        ),
    }
    let mut rng = rand_core::OsRng;
    let root = sim::SimulationRoot::generate(&mut rng);
    let platform = root.issue("node 1", &mut rng);
    let evidence = platform.evidence(&[1; 48], &[2; 64], false, 1_800_000_000);
    let mut policy = open_policy();
    policy.simulation_roots.push(hex::encode(root.public()));
    group.bench_function("simulation", |b| {
        b.iter(|| {
            verifier
                .inspect(&evidence, &policy, None, 1_800_000_000)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
