//! Token keys at rest: a wrong wrapping key, a tampered file, or a file relabelled to another
//! purpose or version is a clear error and never yields key material.

use obscura_tokens::keyfile::{open, seal, WrappingKey};
use obscura_tokens::Error;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn setup() -> (WrappingKey, Vec<u8>, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let wk = WrappingKey::random(&mut rng);
    let file = seal(&[0xab; 32], "token-root", 3, &wk, &mut rng).unwrap();
    (wk, file, rng)
}

#[test]
fn round_trip() {
    let (wk, file, _) = setup();
    let k = open(&file, "token-root", &wk).unwrap();
    assert_eq!(&k.secret[..], &[0xab; 32]);
    assert_eq!(k.version, 3);
    assert!(!format!("{k:?}").contains("ab, ab"));
    // The secret does not appear in the file.
    assert!(!file.windows(8).any(|w| w == [0xab; 8]));
}

#[test]
fn wrong_wrapping_key() {
    let (_, file, mut rng) = setup();
    let other = WrappingKey::random(&mut rng);
    assert!(matches!(
        open(&file, "token-root", &other),
        Err(Error::KeyFileAuthentication)
    ));
}

#[test]
fn every_tampered_byte_is_caught() {
    let (wk, file, _) = setup();
    for i in 0..file.len() {
        let mut t = file.clone();
        t[i] ^= 0x04;
        let r = open(&t, "token-root", &wk);
        assert!(
            matches!(
                r,
                Err(Error::KeyFileAuthentication
                    | Error::MalformedKeyFile(_)
                    | Error::WrongPurpose { .. })
            ),
            "byte {i}: {r:?}"
        );
    }
    for cut in [0, 5, 20, file.len() - 1] {
        assert!(open(&file[..cut], "token-root", &wk).is_err());
    }
}

#[test]
fn purpose_and_version_are_bound() {
    let (wk, file, _) = setup();
    assert!(matches!(
        open(&file, "zero-sharing", &wk),
        Err(Error::WrongPurpose { .. })
    ));
    // Rewrite the version in the header: the AAD no longer matches.
    let at = 8 + 1 + "token-root".len() + 3;
    let mut t = file.clone();
    t[at] = 4;
    assert!(matches!(
        open(&t, "token-root", &wk),
        Err(Error::KeyFileAuthentication)
    ));
}

#[test]
fn wrapping_key_parsing() {
    let (wk, _, _) = setup();
    let hex = wk.to_hex();
    assert!(WrappingKey::from_hex(&format!("  {}\n", &*hex)).is_ok());
    assert!(matches!(
        WrappingKey::from_hex("abc"),
        Err(Error::BadWrappingKey(_))
    ));
    assert!(matches!(
        WrappingKey::from_hex(&"g".repeat(64)),
        Err(Error::BadWrappingKey(_))
    ));
    assert!(matches!(
        WrappingKey::from_env("OBSCURA_TEST_SURELY_UNSET_VARIABLE"),
        Err(Error::BadWrappingKey(_))
    ));
    let dir = std::env::temp_dir().join(format!("obscura-wk-{}", std::process::id()));
    std::fs::write(&dir, &*hex).unwrap();
    let from_file = WrappingKey::from_file(&dir).unwrap();
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(*from_file.to_hex(), *hex);
    assert!(format!("{wk:?}").contains("redacted"));
}
