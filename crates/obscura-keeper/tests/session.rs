//! OPAQUE logins and the session channel: the right password opens a session and a wrong one
//! does not, an unknown user looks like a wrong password, and a session message that is
//! replayed, reordered, dropped, reflected, altered, moved to another session or sent after
//! expiry is refused.

use obscura_keeper::session::{
    self, Channel, ClientLogin, ClientRegistration, Role, ServerKeys, SessionError,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const CONTEXT: &[u8] = b"obscura keeper 1";

fn register(keeper: &ServerKeys, user: &[u8], password: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
    let (reg, request) = ClientRegistration::start(password, rng).unwrap();
    let response = keeper.registration_response(&request, user).unwrap();
    let upload = reg.finish(password, &response, rng).unwrap();
    session::ServerKeys::password_file(&upload).unwrap()
}

/// A whole login; the client's and the keeper's session keys, or the first error.
fn login(
    keeper: &ServerKeys,
    file: Option<&[u8]>,
    user: &[u8],
    password: &[u8],
    rng: &mut ChaCha20Rng,
) -> Result<([u8; 64], [u8; 64]), SessionError> {
    let (client, ke1) = ClientLogin::start(password, rng)?;
    let (pending, ke2) = keeper.login_response(file, &ke1, user, CONTEXT, rng)?;
    let (ke3, client_key) = client.finish(password, &ke2, CONTEXT, rng)?;
    let server_key = pending.finish(&ke3, CONTEXT)?;
    Ok((*client_key, *server_key))
}

#[test]
fn the_right_password_opens_a_session_and_nothing_else_does() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let keeper = ServerKeys::random(&mut rng);
    let file = register(&keeper, b"alice", b"correct horse", &mut rng);
    let (c, s) = login(&keeper, Some(&file), b"alice", b"correct horse", &mut rng).unwrap();
    assert_eq!(c, s);
    // Each login gives a new key.
    let (c2, _) = login(&keeper, Some(&file), b"alice", b"correct horse", &mut rng).unwrap();
    assert_ne!(c, c2);
    assert_eq!(
        login(&keeper, Some(&file), b"alice", b"wrong horse", &mut rng),
        Err(SessionError::LoginFailed)
    );
    // The password file is bound to the user id it was registered under.
    assert_eq!(
        login(&keeper, Some(&file), b"mallory", b"correct horse", &mut rng),
        Err(SessionError::LoginFailed)
    );
    // Another keeper (other keys), or the same keeper claiming another identity, fails.
    let other = ServerKeys::random(&mut rng);
    assert_eq!(
        login(&other, Some(&file), b"alice", b"correct horse", &mut rng),
        Err(SessionError::LoginFailed)
    );
    let (client, ke1) = ClientLogin::start(b"correct horse", &mut rng).unwrap();
    let (_, ke2) = keeper
        .login_response(Some(&file), &ke1, b"alice", b"obscura keeper 2", &mut rng)
        .unwrap();
    assert!(client
        .finish(b"correct horse", &ke2, CONTEXT, &mut rng)
        .is_err());
    // The keys survive being stored.
    let restored = ServerKeys::from_bytes(&keeper.to_bytes()).unwrap();
    assert!(login(&restored, Some(&file), b"alice", b"correct horse", &mut rng).is_ok());
    assert!(ServerKeys::from_bytes(&[0; 10]).is_err());
}

/// A keeper answers an unknown user with a KE2 of the same size and form, and the client fails
/// exactly as with a wrong password: the answer is no account oracle.
#[test]
fn an_unknown_user_looks_like_a_wrong_password() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let keeper = ServerKeys::random(&mut rng);
    let file = register(&keeper, b"alice", b"correct horse", &mut rng);
    let (_, ke1) = ClientLogin::start(b"guess", &mut rng).unwrap();
    let (_, known) = keeper
        .login_response(Some(&file), &ke1, b"alice", CONTEXT, &mut rng)
        .unwrap();
    let (_, unknown) = keeper
        .login_response(None, &ke1, b"bob", CONTEXT, &mut rng)
        .unwrap();
    assert_eq!(known.len(), unknown.len());
    let wrong = login(&keeper, Some(&file), b"alice", b"guess", &mut rng);
    let absent = login(&keeper, None, b"bob", b"guess", &mut rng);
    assert_eq!(wrong, Err(SessionError::LoginFailed));
    assert_eq!(absent, wrong);
}

#[test]
fn a_tampered_or_foreign_last_message_does_not_finish() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let keeper = ServerKeys::random(&mut rng);
    let file = register(&keeper, b"alice", b"pw", &mut rng);
    let (c1, ke1a) = ClientLogin::start(b"pw", &mut rng).unwrap();
    let (p1, ke2a) = keeper
        .login_response(Some(&file), &ke1a, b"alice", CONTEXT, &mut rng)
        .unwrap();
    let (c2, ke1b) = ClientLogin::start(b"pw", &mut rng).unwrap();
    let (p2, ke2b) = keeper
        .login_response(Some(&file), &ke1b, b"alice", CONTEXT, &mut rng)
        .unwrap();
    let (ke3a, _) = c1.finish(b"pw", &ke2a, CONTEXT, &mut rng).unwrap();
    let (mut ke3b, _) = c2.finish(b"pw", &ke2b, CONTEXT, &mut rng).unwrap();
    // KE3 of one login does not finish the other.
    assert_eq!(p2.finish(&ke3a, CONTEXT), Err(SessionError::LoginFailed));
    ke3b[0] ^= 1;
    assert_eq!(p1.finish(&ke3b, CONTEXT), Err(SessionError::LoginFailed));
}

fn pair(expires_at: u64) -> (Channel, Channel) {
    let key = [9u8; 64];
    (
        Channel::new(&key, [1; 16], Role::Client, expires_at),
        Channel::new(&key, [1; 16], Role::Server, expires_at),
    )
}

/// A keeper answers `request` as the keeper server does: open, then seal the answer.
fn answer(server: &mut Channel, request: &[u8], reply: &[u8]) -> Result<Vec<u8>, SessionError> {
    server.open(request, 10)?;
    server.seal(reply, 10)
}

#[test]
fn session_messages_open_once_above_their_lanes_last_and_in_their_direction() {
    let (mut client, mut server) = pair(1_000);
    let m0 = client.seal(b"first", 10).unwrap();
    let m1 = client.seal(b"second", 10).unwrap();
    let m2 = client.seal(b"third", 10).unwrap();
    assert_eq!(server.open(&m0, 10).unwrap(), b"first");
    // Replayed.
    assert_eq!(server.open(&m0, 10), Err(SessionError::Refused));
    // A sequence number rewritten does not authenticate.
    let mut renumbered = m1.clone();
    renumbered[7] = 2;
    assert_eq!(server.open(&renumbered, 10), Err(SessionError::Refused));
    // Altered in the ciphertext.
    let mut altered = m2.clone();
    *altered.last_mut().unwrap() ^= 1;
    assert_eq!(server.open(&altered, 10), Err(SessionError::Refused));
    // The third before the second (the second was lost): the third opens, and the second is
    // then older than its lane's last and refused.
    assert_eq!(server.open(&m2, 10).unwrap(), b"third");
    assert_eq!(server.open(&m1, 10), Err(SessionError::Refused));

    // Answers: the client opens only the answer to the request it sealed last.
    let c3 = client.seal(b"fourth", 10).unwrap();
    let r3 = answer(&mut server, &c3, b"answer 4").unwrap();
    // Reflected: the client's own message sent back to it.
    assert_eq!(client.open(&c3, 10), Err(SessionError::Refused));
    assert_eq!(client.open(&r3, 10).unwrap(), b"answer 4");
    // An old answer replayed to a later request.
    let c4 = client.seal(b"fifth", 10).unwrap();
    assert_eq!(client.open(&r3, 10), Err(SessionError::Refused));
    let r4 = answer(&mut server, &c4, b"answer 5").unwrap();
    assert_eq!(client.open(&r4, 10).unwrap(), b"answer 5");
    // A keeper seals nothing it was not asked.
    assert_eq!(server.seal(b"unasked", 10), Err(SessionError::Refused));

    // Another session with the same key but another id, or another key.
    let mut elsewhere = Channel::new(&[9u8; 64], [2; 16], Role::Server, 1_000);
    let fresh = Channel::new(&[9u8; 64], [1; 16], Role::Client, 1_000).seal(b"x", 10);
    assert_eq!(
        elsewhere.open(&fresh.unwrap(), 10),
        Err(SessionError::Refused)
    );
    let mut other_key = Channel::new(&[8u8; 64], [1; 16], Role::Server, 1_000);
    let fresh = Channel::new(&[9u8; 64], [1; 16], Role::Client, 1_000).seal(b"x", 10);
    assert_eq!(
        other_key.open(&fresh.unwrap(), 10),
        Err(SessionError::Refused)
    );
    assert_eq!(server.open(&[1, 2, 3], 10), Err(SessionError::Refused));
}

/// The faults that broke sessions for good: a request that never arrived or whose answer never
/// came back (a timeout, a killed client), and two processes using one session at once. With
/// exact next numbers, each left the keeper and the client out of step until a new login.
#[test]
fn a_lost_request_or_two_processes_at_once_do_not_break_a_session() {
    let key = [9u8; 64];
    let mut server = Channel::new(&key, [1; 16], Role::Server, 1_000);
    let mut first = Channel::resume(&key, [1; 16], 1_000, 0);
    // Lost on the way: the keeper never saw it. Then answered, but the answer was lost.
    let _lost = first.seal(b"lost", 10).unwrap();
    let unanswered = first.seal(b"unanswered", 10).unwrap();
    answer(&mut server, &unanswered, b"never read").unwrap();
    let next = first.seal(b"next", 10).unwrap();
    let r = answer(&mut server, &next, b"fine").unwrap();
    assert_eq!(first.open(&r, 10).unwrap(), b"fine");
    // A second process in its own lane, interleaved with the first.
    let mut second = Channel::resume(&key, [1; 16], 1_000, 1);
    assert_eq!((first.lane(), second.lane()), (Some(0), Some(1)));
    for round in 0..3u8 {
        for c in [&mut second, &mut first] {
            let m = c.seal(&[round], 10).unwrap();
            let r = answer(&mut server, &m, &[round, 1]).unwrap();
            assert_eq!(c.open(&r, 10).unwrap(), [round, 1]);
        }
    }
    // Numbers never repeat across lanes: the same plaintext seals differently.
    let (a, b) = (
        first.seal(b"same", 10).unwrap(),
        second.seal(b"same", 10).unwrap(),
    );
    assert_ne!(a[..8], b[..8]);
}

/// A keeper keeps the newest `LANES` lanes of a session; a request in a lane older than those
/// is refused, so a replay cannot come back through a forgotten lane.
#[test]
fn requests_in_lanes_older_than_the_newest_kept_are_refused() {
    let key = [9u8; 64];
    let mut server = Channel::new(&key, [1; 16], Role::Server, 1_000);
    let mut oldest = Channel::resume(&key, [1; 16], 1_000, 0);
    let old = oldest.seal(b"old", 10).unwrap();
    let later = oldest.seal(b"later", 10).unwrap();
    answer(&mut server, &old, b"ok").unwrap();
    for lane in 1..=obscura_keeper::session::LANES as u32 {
        let mut c = Channel::resume(&key, [1; 16], 1_000, lane);
        answer(&mut server, &c.seal(b"x", 10).unwrap(), b"ok").unwrap();
    }
    assert_eq!(server.open(&later, 10), Err(SessionError::Refused));
    let mut newest = Channel::resume(&key, [1; 16], 1_000, 1_000);
    assert!(answer(&mut server, &newest.seal(b"y", 10).unwrap(), b"ok").is_ok());
}

#[test]
fn an_expired_session_refuses_everything() {
    let (mut client, mut server) = pair(100);
    let m = client.seal(b"late", 99).unwrap();
    assert_eq!(server.open(&m, 100), Err(SessionError::Expired));
    assert_eq!(client.seal(b"later", 100), Err(SessionError::Expired));
    // Before expiry the same message still opens.
    assert_eq!(server.open(&m, 99).unwrap(), b"late");
}

/// Found by fuzzing: opaque-ke reads the fields of a message and ignores what follows, so a
/// genuine KE3 with bytes appended finished a login. Every OPAQUE message a keeper or client
/// reads must now be exactly its encoding.
#[test]
fn an_opaque_message_with_bytes_appended_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let keeper = ServerKeys::random(&mut rng);
    let longer = |m: &[u8]| [m, b"trailing".as_slice()].concat();

    let (reg, request) = ClientRegistration::start(b"pw", &mut rng).unwrap();
    assert!(keeper
        .registration_response(&longer(&request), b"alice")
        .is_err());
    let response = keeper.registration_response(&request, b"alice").unwrap();
    let upload = reg.finish(b"pw", &response, &mut rng).unwrap();
    assert!(ServerKeys::password_file(&longer(&upload)).is_err());
    let file = ServerKeys::password_file(&upload).unwrap();

    let (client, ke1) = ClientLogin::start(b"pw", &mut rng).unwrap();
    assert!(keeper
        .login_response(Some(&file), &longer(&ke1), b"alice", CONTEXT, &mut rng)
        .is_err());
    assert!(keeper
        .login_response(Some(&longer(&file)), &ke1, b"alice", CONTEXT, &mut rng)
        .is_err());
    let (pending, ke2) = keeper
        .login_response(Some(&file), &ke1, b"alice", CONTEXT, &mut rng)
        .unwrap();
    let (ke3, _) = client.finish(b"pw", &ke2, CONTEXT, &mut rng).unwrap();
    assert_eq!(
        pending.finish(&longer(&ke3), CONTEXT),
        Err(SessionError::LoginFailed)
    );
}
