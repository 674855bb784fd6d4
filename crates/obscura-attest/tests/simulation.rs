//! The simulation backend goes through the same appraisal path as hardware evidence, and is
//! refused unless the policy allows it; sealing works only to an appraised key.

use obscura_attest::seal::{self, PartyKey, SealError};
use obscura_attest::{binding, sim, Evidence, Policy, Refusal, Role, Verifier};

const NOW: u64 = 1_800_000_000;
const MEASUREMENT: [u8; 48] = [0x5a; 48];

struct Setup {
    root: sim::SimulationRoot,
    platform: sim::SimulatedPlatform,
    key: PartyKey,
    nonce: [u8; 32],
    context: [u8; 32],
}

fn setup() -> Setup {
    let mut rng = rand_core::OsRng;
    let root = sim::SimulationRoot::generate(&mut rng);
    let platform = root.issue("keeper 2", &mut rng);
    Setup {
        root,
        platform,
        key: PartyKey::generate(&mut rng),
        nonce: [3; 32],
        context: [4; 32],
    }
}

fn policy(root: &sim::SimulationRoot, extra: &str) -> Policy {
    Policy::from_json(&format!(
        r#"{{"version": 2, "name": "sim", "allow_simulation": true, {extra}
            "simulation_roots": ["{}"],
            "measurements": [{{"role": "keeper", "platform": "simulation", "measurement": "{}"}}]}}"#,
        hex::encode(root.public()),
        hex::encode(MEASUREMENT)
    ))
    .unwrap()
}

fn evidence(s: &Setup, debug: bool, at: u64) -> Evidence {
    let data = binding::report_data(&Role::Keeper, &s.key.public(), &s.context, &s.nonce);
    s.platform.evidence(&MEASUREMENT, &data, debug, at)
}

fn appraise(
    s: &Setup,
    evidence: &Evidence,
    policy: &Policy,
) -> Result<obscura_attest::Appraisal, Refusal> {
    Verifier::new().appraise_party(
        evidence,
        policy,
        &Role::Keeper,
        &s.key.public(),
        &s.context,
        &s.nonce,
        NOW,
    )
}

#[test]
fn simulated_evidence_is_accepted_only_where_the_policy_allows_simulation() {
    let s = setup();
    let ev = evidence(&s, false, NOW);
    let appraisal = appraise(&s, &ev, &policy(&s.root, "")).unwrap();
    assert_eq!(appraisal.tcb().status, "Simulated");
    assert_eq!(appraisal.signer(), Some(&s.root.public()[..]));
    let mut production = policy(&s.root, "");
    production.allow_simulation = false;
    assert_eq!(
        appraise(&s, &ev, &production).unwrap_err(),
        Refusal::Simulation
    );
}

#[test]
fn simulated_evidence_from_another_clusters_root_is_refused() {
    let s = setup();
    let other = sim::SimulationRoot::generate(&mut rand_core::OsRng);
    let refusal = appraise(&s, &evidence(&s, false, NOW), &policy(&other, "")).unwrap_err();
    assert!(matches!(refusal, Refusal::UntrustedRoot(_)), "{refusal:?}");
}

#[test]
fn a_platform_key_the_root_did_not_endorse_is_refused() {
    let s = setup();
    let Evidence::Simulation(mut ev) = evidence(&s, false, NOW) else {
        unreachable!()
    };
    ev.party = "node 1".into(); // the endorsement names keeper 2
    let refusal = appraise(&s, &Evidence::Simulation(ev), &policy(&s.root, "")).unwrap_err();
    assert!(matches!(refusal, Refusal::Certificate(_)), "{refusal:?}");
}

#[test]
fn an_altered_simulated_report_is_refused() {
    let s = setup();
    let Evidence::Simulation(mut ev) = evidence(&s, false, NOW) else {
        unreachable!()
    };
    ev.report[20] ^= 1; // the measurement
    let refusal = appraise(&s, &Evidence::Simulation(ev), &policy(&s.root, "")).unwrap_err();
    assert!(matches!(refusal, Refusal::Signature(_)), "{refusal:?}");
}

#[test]
fn a_debug_environment_is_refused_unless_the_policy_allows_debug() {
    let s = setup();
    let ev = evidence(&s, true, NOW);
    assert_eq!(
        appraise(&s, &ev, &policy(&s.root, "")).unwrap_err(),
        Refusal::Debug
    );
    assert!(
        appraise(&s, &ev, &policy(&s.root, r#""allow_debug": true,"#))
            .unwrap()
            .debug()
    );
}

#[test]
fn evidence_older_than_the_policy_allows_is_refused() {
    let s = setup();
    let ev = evidence(&s, false, NOW - 7200);
    let refusal = appraise(
        &s,
        &ev,
        &policy(&s.root, r#""max_evidence_age_secs": 3600,"#),
    )
    .unwrap_err();
    assert_eq!(
        refusal,
        Refusal::TooOld {
            age: 7200,
            max: 3600
        }
    );
}

#[test]
fn evidence_replayed_with_another_key_nonce_role_or_context_is_refused() {
    let s = setup();
    let ev = evidence(&s, false, NOW);
    let p = policy(&s.root, "");
    let v = Verifier::new();
    let other_key = PartyKey::generate(&mut rand_core::OsRng).public();
    for refusal in [
        v.appraise_party(
            &ev,
            &p,
            &Role::Keeper,
            &other_key,
            &s.context,
            &s.nonce,
            NOW,
        ),
        v.appraise_party(
            &ev,
            &p,
            &Role::Keeper,
            &s.key.public(),
            &s.context,
            &[0; 32],
            NOW,
        ),
        v.appraise_party(
            &ev,
            &p,
            &Role::Keeper,
            &s.key.public(),
            &[0; 32],
            &s.nonce,
            NOW,
        ),
    ] {
        assert_eq!(refusal.unwrap_err(), Refusal::ReportData);
    }
    // As a node, the binding differs too (and the measurement is the keeper's).
    let refusal = v.appraise_party(
        &ev,
        &p,
        &Role::Node,
        &s.key.public(),
        &s.context,
        &s.nonce,
        NOW,
    );
    assert_eq!(refusal.unwrap_err(), Refusal::ReportData);
}

#[test]
fn a_secret_opens_only_for_the_appraised_key_and_purpose() {
    let s = setup();
    let appraisal = appraise(&s, &evidence(&s, false, NOW), &policy(&s.root, "")).unwrap();
    let sealed = seal::seal(&appraisal, b"token share", b"secret", &mut rand_core::OsRng).unwrap();
    assert_eq!(s.key.open(b"token share", &sealed).unwrap(), b"secret");
    assert_eq!(
        s.key.open(b"another purpose", &sealed).unwrap_err(),
        SealError::Open
    );
    let stranger = PartyKey::generate(&mut rand_core::OsRng);
    assert_eq!(
        stranger.open(b"token share", &sealed).unwrap_err(),
        SealError::Open
    );
}

#[test]
fn an_appraisal_without_a_bound_key_seals_nothing() {
    let s = setup();
    let ev = evidence(&s, false, NOW);
    let data = binding::report_data(&Role::Keeper, &s.key.public(), &s.context, &s.nonce);
    let bare = Verifier::new()
        .appraise(&ev, &policy(&s.root, ""), &Role::Keeper, &data, NOW)
        .unwrap();
    assert_eq!(
        seal::seal(&bare, b"x", b"y", &mut rand_core::OsRng).unwrap_err(),
        SealError::NotBound
    );
}

#[test]
fn a_simulated_platform_survives_its_file() {
    let s = setup();
    let again = sim::SimulatedPlatform::from_file(&s.platform.to_file()).unwrap();
    let data = binding::report_data(&Role::Keeper, &s.key.public(), &s.context, &s.nonce);
    let ev = again.evidence(&MEASUREMENT, &data, false, NOW);
    appraise(&s, &ev, &policy(&s.root, "")).unwrap();
    let root = sim::SimulationRoot::from_secret_bytes(&s.root.to_secret_bytes());
    assert_eq!(root.public(), s.root.public());
}

#[test]
fn policies_with_unknown_fields_or_bad_values_are_refused() {
    for bad in [
        r#"{"version": 1, "name": "x", "allow_simulaton": true}"#,
        r#"{"version": 1, "name": "x", "measurements": [{"role": "admin", "platform": "tdx", "measurement": "00"}]}"#,
        r#"{"version": 1, "name": "x", "measurements": [{"role": "node", "platform": "tdx", "measurement": "zz"}]}"#,
        r#"{"version": 1, "name": "x", "simulation_roots": ["0011"]}"#,
    ] {
        assert!(Policy::from_json(bad).is_err(), "{bad}");
    }
}

#[test]
fn simulated_evidence_survives_its_json_form() {
    let s = setup();
    let again = Evidence::from_json(&evidence(&s, false, NOW).to_json()).unwrap();
    appraise(&s, &again, &policy(&s.root, "")).unwrap();
}

#[test]
fn two_party_keys_agree_on_a_secret_no_third_key_has() {
    use obscura_attest::seal::PartyKey;
    let mut rng = rand_core::OsRng;
    let (a, b, c) = (
        PartyKey::generate(&mut rng),
        PartyKey::generate(&mut rng),
        PartyKey::generate(&mut rng),
    );
    let ab = a.agree(&b.public()).unwrap();
    assert_eq!(*ab, *b.agree(&a.public()).unwrap());
    assert_ne!(*ab, *c.agree(&a.public()).unwrap());
    assert_ne!(*ab, *c.agree(&b.public()).unwrap());
    // A small-order "key" would give a result anyone knows: refused.
    assert!(a.agree(&[0; 32]).is_none());
    let mut one = [0u8; 32];
    one[0] = 1;
    assert!(a.agree(&one).is_none());
}
