//! Report-data binding: what a party's evidence must carry so that it cannot be replayed with
//! another key, for another role, configuration or verifier.

use sha2::{Digest, Sha256, Sha512};

use crate::Role;

/// Domain separation for [`report_data`]; a new layout gets a new string.
pub const DOMAIN: &[u8] = b"obscura attestation report data v1";

/// `SHA-512(domain ‖ role ‖ party key ‖ context ‖ nonce)`, each variable-length field preceded by
/// its length, so that no two inputs share an encoding.
///
/// - `party_key`: the party's HPKE public key (X25519), to which secrets are sealed;
/// - `context`: the configuration digest the party serves, or the Work-ID it runs;
/// - `nonce`: the verifier's fresh challenge, so old evidence is not accepted again.
pub fn report_data(
    role: &Role,
    party_key: &[u8; 32],
    context: &[u8; 32],
    nonce: &[u8; 32],
) -> [u8; 64] {
    let role = role.name();
    let mut h = Sha512::new();
    h.update(DOMAIN);
    h.update((role.len() as u16).to_be_bytes());
    h.update(role.as_bytes());
    h.update(party_key);
    h.update(context);
    h.update(nonce);
    h.finalize().into()
}

/// The context a cluster's server binds: which cluster (`cluster`, its CA certificate as the
/// client and the server both hold it), which role and which seat (`node 3`, `keeper 1`). A
/// server's evidence then names the seat it answers for, and evidence from another cluster's
/// server, or from another seat, does not pass for it.
pub fn context(cluster: &[u8], role: &Role, seat: u8) -> [u8; 32] {
    let role = role.name();
    let mut h = Sha256::new();
    h.update(b"obscura attestation context v1");
    h.update(Sha256::digest(cluster));
    h.update((role.len() as u16).to_be_bytes());
    h.update(role.as_bytes());
    h.update([seat]);
    h.finalize().into()
}

/// The context a worker's evidence binds when keeper `keeper` releases secret `secret` to it:
/// evidence made for one keeper's release, or one secret's, does not pass for another's.
pub fn release_context(keeper: u8, secret: &[u8; 16]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"obscura secret release v1");
    h.update([keeper]);
    h.update(secret);
    h.finalize().into()
}

/// The HPKE purpose of keeper `keeper`'s share of `secret`, sealed to a worker.
pub fn release_purpose(keeper: u8, secret: &[u8; 16]) -> Vec<u8> {
    let mut p = b"obscura secret share ".to_vec();
    p.push(keeper);
    p.extend_from_slice(secret);
    p
}

/// What keeper `keeper` signs (with its audit key) over a share of `secret` it released to the
/// worker key `worker` against challenge `nonce`: the worker takes only shares that keepers
/// signed, for challenges it answered, so nobody else can deliver it a secret of their making.
pub fn release_statement(
    keeper: u8,
    secret: &[u8; 16],
    nonce: &[u8; 32],
    worker: &[u8; 32],
    enc: &[u8],
    ciphertext: &[u8],
) -> Vec<u8> {
    let mut m = b"obscura secret release statement v1".to_vec();
    m.push(keeper);
    m.extend_from_slice(secret);
    m.extend_from_slice(nonce);
    m.extend_from_slice(worker);
    m.extend_from_slice(&(enc.len() as u32).to_be_bytes());
    m.extend_from_slice(enc);
    m.extend_from_slice(ciphertext);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_binding() {
        let base = report_data(&Role::Node, &[1; 32], &[2; 32], &[3; 32]);
        assert_ne!(
            base,
            report_data(&Role::Keeper, &[1; 32], &[2; 32], &[3; 32])
        );
        assert_ne!(base, report_data(&Role::Node, &[9; 32], &[2; 32], &[3; 32]));
        assert_ne!(base, report_data(&Role::Node, &[1; 32], &[9; 32], &[3; 32]));
        assert_ne!(base, report_data(&Role::Node, &[1; 32], &[2; 32], &[9; 32]));
        assert_eq!(base, report_data(&Role::Node, &[1; 32], &[2; 32], &[3; 32]));
    }
}
