//! RFC 9807, Appendix C.1.1: OPAQUE-3DH Real Test Vector 1 (ristretto255-SHA512, 3DH,
//! HKDF-SHA512, HMAC-SHA512, no identities, context "OPAQUE-POC"). The vector's KSF is the
//! identity function, so it runs through the keepers' own wrappers
//! ([`obscura_keeper::session`]) instantiated with `Identity` in place of Argon2id; nothing
//! else differs from the suite the keepers use.
//!
//! The vector fixes every random input. They reach the wrappers through a scripted generator
//! that hands out exactly the draws opaque-ke makes, in its order and at its sizes, and fails
//! on any other draw: a library change in what it draws breaks this test loudly.

mod common;

use std::collections::VecDeque;

use common::unhex;
use obscura_keeper::session::{ClientLoginWith, ClientRegistrationWith, ServerKeysWith};
use opaque_ke::ksf::Identity;
use rand_core::{CryptoRng, RngCore};

type Server = ServerKeysWith<Identity>;

// Input values.
const CONTEXT: &str = "4f50415155452d504f43";
const OPRF_SEED: &str = "f433d0227b0b9dd54f7c4422b600e764e47fb503f1f9a0f0a47c6606b054a7fd
                         c65347f1a08f277e22358bbabe26f823fca82c7848e9a75661f4ec5d5c1989ef";
const CREDENTIAL_IDENTIFIER: &str = "31323334";
const PASSWORD: &str = "436f7272656374486f72736542617474657279537461706c65";
const ENVELOPE_NONCE: &str = "ac13171b2f17bc2c74997f0fce1e1f35bec6b91fe2e12dbd323d23ba7a38dfec";
const MASKING_NONCE: &str = "38fe59af0df2c79f57b8780278f5ae47355fe1f817119041951c80f612fdfc6d";
const SERVER_PRIVATE_KEY: &str = "47451a85372f8b3537e249d7b54188091fb18edde78094b43e2ba42b5eb89f0d";
const SERVER_PUBLIC_KEY: &str = "b2fe7af9f48cc502d016729d2fe25cdd433f2c4bc904660b2a382c9b79df1a78";
const SERVER_NONCE: &str = "71cd9960ecef2fe0d0f7494986fa3d8b2bb01963537e60efb13981e138e3d4a1";
const CLIENT_NONCE: &str = "da7e07376d6d6f034cfa9bb537d11b8c6b4238c334333d1f0aebb380cae6a6cc";
const CLIENT_KEYSHARE_SEED: &str =
    "82850a697b42a505f5b68fcdafce8c31f0af2b581f063cf1091933541936304b";
const SERVER_KEYSHARE_SEED: &str =
    "05a4f54206eef1ba2f615bc0aa285cb22f26d1153b5b40a1e85ff80da12f982f";
const BLIND_REGISTRATION: &str = "76cfbfe758db884bebb33582331ba9f159720ca8784a2a070a265d9c2d6abe01";
const BLIND_LOGIN: &str = "6ecc102d2e7a7cf49617aad7bbe188556792d4acd60a1a8a8d2b65d4b0790308";

// Output values.
const REGISTRATION_REQUEST: &str =
    "5059ff249eb1551b7ce4991f3336205bde44a105a032e747d21bf382e75f7a71";
const REGISTRATION_RESPONSE: &str =
    "7408a268083e03abc7097fc05b587834539065e86fb0c7b6342fcf5e01e5b019
     b2fe7af9f48cc502d016729d2fe25cdd433f2c4bc904660b2a382c9b79df1a78";
const REGISTRATION_UPLOAD: &str = "76a845464c68a5d2f7e442436bb1424953b17d3e2e289ccbaccafb57ac5c3675
     1ac5844383c7708077dea41cbefe2fa15724f449e535dd7dd562e66f5ecfb958
     64eadddec9db5874959905117dad40a4524111849799281fefe3c51fa82785c5
     ac13171b2f17bc2c74997f0fce1e1f35bec6b91fe2e12dbd323d23ba7a38dfec
     634b0f5b96109c198a8027da51854c35bee90d1e1c781806d07d49b76de6a28b
     8d9e9b6c93b9f8b64d16dddd9c5bfb5fea48ee8fd2f75012a8b308605cdd8ba5";
const KE1: &str = "c4dedb0ba6ed5d965d6f250fbe554cd45cba5dfcce3ce836e4aee778aa3cd44d
                   da7e07376d6d6f034cfa9bb537d11b8c6b4238c334333d1f0aebb380cae6a6cc
                   6e29bee50701498605b2c085d7b241ca15ba5c32027dd21ba420b94ce60da326";
const KE2: &str = "7e308140890bcde30cbcea28b01ea1ecfbd077cff62c4def8efa075aabcbb471
                   38fe59af0df2c79f57b8780278f5ae47355fe1f817119041951c80f612fdfc6d
                   d6ec60bcdb26dc455ddf3e718f1020490c192d70dfc7e403981179d8073d1146
                   a4f9aa1ced4e4cd984c657eb3b54ced3848326f70331953d91b02535af44d9fe
                   dc80188ca46743c52786e0382f95ad85c08f6afcd1ccfbff95e2bdeb015b166c
                   6b20b92f832cc6df01e0b86a7efd92c1c804ff865781fa93f2f20b446c8371b6
                   71cd9960ecef2fe0d0f7494986fa3d8b2bb01963537e60efb13981e138e3d4a1
                   c4f62198a9d6fa9170c42c3c71f1971b29eb1d5d0bd733e40816c91f7912cc4a
                   660c48dae03e57aaa38f3d0cffcfc21852ebc8b405d15bd6744945ba1a93438a
                   162b6111699d98a16bb55b7bdddfe0fc5608b23da246e7bd73b47369169c5c90";
const KE3: &str = "4455df4f810ac31a6748835888564b536e6da5d9944dfea9e34defb9575fe5e2
                   661ef61d2ae3929bcf57e53d464113d364365eb7d1a57b629707ca48da18e442";
const SESSION_KEY: &str = "42afde6f5aca0cfa5c163763fbad55e73a41db6b41bc87b8e7b62214a8eedc67
                           31fa3cb857d657ab9b3764b89a84e91ebcb4785166fbb02cedfcbdfda215b96f";

/// Hands out a fixed list of draws, one per `fill_bytes`, each of exactly the size asked for;
/// anything else (a draw too many, a different size) panics.
struct Scripted(VecDeque<Vec<u8>>);

impl Scripted {
    fn new(draws: &[Vec<u8>]) -> Scripted {
        Scripted(draws.iter().cloned().collect())
    }

    fn assert_spent(&self) {
        assert!(
            self.0.is_empty(),
            "{} scripted draws left over",
            self.0.len()
        );
    }
}

impl RngCore for Scripted {
    fn next_u32(&mut self) -> u32 {
        unreachable!("opaque-ke draws bytes only")
    }

    fn next_u64(&mut self) -> u64 {
        unreachable!("opaque-ke draws bytes only")
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let draw = self.0.pop_front().expect("a draw beyond the script");
        assert_eq!(
            draw.len(),
            dest.len(),
            "a draw of another size than scripted"
        );
        dest.copy_from_slice(&draw);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Scripted {}

/// A ristretto255 blind as the OPRF draws it: 64 bytes reduced modulo the group order, so the
/// RFC's canonical 32-byte scalar followed by 32 zero bytes reduces to itself.
fn blind(scalar: &str) -> Vec<u8> {
    let mut wide = unhex(scalar);
    wide.resize(64, 0);
    wide
}

/// The client's draws for a login: the blind, then the keyshare seed, then the nonce.
fn login_draws() -> Scripted {
    Scripted::new(&[
        blind(BLIND_LOGIN),
        unhex(CLIENT_KEYSHARE_SEED),
        unhex(CLIENT_NONCE),
    ])
}

/// The keeper's draws for KE2: a masking key for the record it would fake for an unknown user
/// (drawn for known users too, so that both take the same path; the vector does not use it),
/// the masking nonce, the keyshare seed, the nonce.
fn keeper_draws() -> Scripted {
    Scripted::new(&[
        vec![0x5a; 64],
        unhex(MASKING_NONCE),
        unhex(SERVER_KEYSHARE_SEED),
        unhex(SERVER_NONCE),
    ])
}

/// The keeper's stored keys from the vector: OPRF seed, 3DH private key, and the public key
/// it answers unknown users with (any valid point; the vector does not use it).
fn server() -> Server {
    let mut stored = unhex(OPRF_SEED);
    stored.extend(unhex(SERVER_PRIVATE_KEY));
    stored.extend(unhex(SERVER_PUBLIC_KEY));
    Server::from_bytes(&stored).unwrap()
}

#[test]
fn registration_and_login_give_the_rfc_messages_and_session_key() {
    let keeper = server();
    let password = unhex(PASSWORD);
    let user = unhex(CREDENTIAL_IDENTIFIER);
    let context = unhex(CONTEXT);

    // Registration.
    let mut rng = Scripted::new(&[blind(BLIND_REGISTRATION), unhex(ENVELOPE_NONCE)]);
    let (reg, request) = ClientRegistrationWith::<Identity>::start(&password, &mut rng).unwrap();
    assert_eq!(request, unhex(REGISTRATION_REQUEST), "registration request");
    let response = keeper.registration_response(&request, &user).unwrap();
    assert_eq!(
        response,
        unhex(REGISTRATION_RESPONSE),
        "registration response"
    );
    let upload = reg.finish(&password, &response, &mut rng).unwrap();
    assert_eq!(upload, unhex(REGISTRATION_UPLOAD), "registration upload");
    rng.assert_spent();
    let file = Server::password_file(&upload).unwrap();
    assert_eq!(
        file,
        unhex(REGISTRATION_UPLOAD),
        "the stored record is the upload"
    );

    // Login.
    let mut client_rng = login_draws();
    let (login, ke1) = ClientLoginWith::<Identity>::start(&password, &mut client_rng).unwrap();
    assert_eq!(ke1, unhex(KE1), "KE1");
    client_rng.assert_spent();

    let mut keeper_rng = keeper_draws();
    let (pending, ke2) = keeper
        .login_response(Some(&file), &ke1, &user, &context, &mut keeper_rng)
        .unwrap();
    assert_eq!(ke2, unhex(KE2), "KE2");
    keeper_rng.assert_spent();

    let (ke3, client_key) = login
        .finish(&password, &ke2, &context, &mut Scripted::new(&[]))
        .unwrap();
    assert_eq!(ke3, unhex(KE3), "KE3");
    assert_eq!(
        client_key.to_vec(),
        unhex(SESSION_KEY),
        "client session key"
    );
    let keeper_key = pending.finish(&ke3, &context).unwrap();
    assert_eq!(
        keeper_key.to_vec(),
        unhex(SESSION_KEY),
        "keeper session key"
    );
}

/// The vector's KE2 must not let a wrong password through, nor log in under another context:
/// the same fixed inputs with one thing changed fail at the client.
#[test]
fn the_vector_fails_for_a_wrong_password_or_another_context() {
    let keeper = server();
    let user = unhex(CREDENTIAL_IDENTIFIER);
    let context = unhex(CONTEXT);
    let file = unhex(REGISTRATION_UPLOAD);

    let wrong = b"CorrectHorseBatteryStaplf";
    let (login, ke1) = ClientLoginWith::<Identity>::start(wrong, &mut login_draws()).unwrap();
    let (_, ke2) = keeper
        .login_response(Some(&file), &ke1, &user, &context, &mut keeper_draws())
        .unwrap();
    assert!(login
        .finish(wrong, &ke2, &context, &mut Scripted::new(&[]))
        .is_err());

    let password = unhex(PASSWORD);
    let (login, ke1) = ClientLoginWith::<Identity>::start(&password, &mut login_draws()).unwrap();
    assert_eq!(ke1, unhex(KE1));
    let (_, ke2) = keeper
        .login_response(Some(&file), &ke1, &user, b"OPAQUE-POD", &mut keeper_draws())
        .unwrap();
    assert!(login
        .finish(&password, &ke2, &context, &mut Scripted::new(&[]))
        .is_err());
}
