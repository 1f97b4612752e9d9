//! SCRAM-SHA-256 server exchange (RFC 5802/7677 as PostgreSQL speaks it),
//! sans-IO: fed the client's SASL messages, returns the server's. Built on
//! `ring` (HMAC, SHA-256, PBKDF2, random nonces); no hand-rolled crypto.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// The SASL mechanism geogate offers.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// A stored SCRAM-SHA-256 verifier, as in `pg_authid.rolpassword`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

impl ScramVerifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iter, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Self {
            iterations: iter.parse().ok().filter(|i| *i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// Makes a verifier (random salt, 4096 iterations) from a cleartext password.
    pub fn from_password(password: &str) -> Self {
        let v = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Self::parse(&v).expect("postgres-protocol produces valid verifiers")
    }

    /// Checks a cleartext password (from a `password`-method client) against it.
    pub fn check_password(&self, password: &str) -> bool {
        let salted = salted_password(password, &self.salt, self.iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored = digest::digest(&digest::SHA256, &client_key);
        ct_eq(stored.as_ref(), &self.stored_key)
    }

    /// A verifier nobody can pass, with a salt derived from the user name so
    /// that repeated probes for an unknown user look like a real one.
    fn fake(user: &str, process_key: &[u8; 32]) -> Self {
        let salt = hmac_sha256(process_key, user.as_bytes());
        let mut stored_key = [0u8; 32];
        let _ = ring::rand::SystemRandom::new().fill(&mut stored_key);
        Self {
            iterations: 4096,
            salt: salt[..16].to_vec(),
            stored_key,
            server_key: stored_key,
        }
    }
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    // SASLprep as PostgreSQL: a password that cannot be normalised is used as is.
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN),
        salt,
        prepared.as_bytes(),
        &mut out,
    );
    out
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an exchange ended without success.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's message is malformed or out of order.
    #[error("malformed SCRAM message: {0}")]
    Protocol(&'static str),
    /// The proof did not match (wrong password or unknown user).
    #[error("authentication failed")]
    Failed,
}

enum State {
    Initial,
    SentFirst {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// One server-side SCRAM-SHA-256 exchange.
pub struct ScramServer {
    verifier: ScramVerifier,
    /// Unknown user: run the whole exchange, then fail.
    fake: bool,
    state: State,
}

impl ScramServer {
    /// An exchange for a known user's verifier.
    pub fn new(verifier: ScramVerifier) -> Self {
        Self {
            verifier,
            fake: false,
            state: State::Initial,
        }
    }

    /// An exchange for an unknown user: indistinguishable on the wire until
    /// it fails exactly as a wrong password does.
    pub fn fake(user: &str, process_key: &[u8; 32]) -> Self {
        Self {
            verifier: ScramVerifier::fake(user, process_key),
            fake: true,
            state: State::Initial,
        }
    }

    /// Takes the client-first-message, returns the server-first-message.
    pub fn server_first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            return Err(ScramError::Protocol("unexpected client-first-message"));
        }
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let (gs2_header, bare) = split_gs2(msg)?;
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Protocol("missing client nonce"))?;
        let mut raw = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| ScramError::Protocol("no randomness"))?;
        let nonce = format!("{client_nonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        self.state = State::SentFirst {
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first.into_bytes())
    }

    /// Takes the client-final-message; on a valid proof returns the
    /// server-final-message (`v=…`) to send with AuthenticationSASLFinal.
    pub fn server_final(&mut self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::SentFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::Protocol("unexpected client-final-message"));
        };
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Protocol("missing proof"))?;
        let mut binding = None;
        let mut their_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                binding = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                their_nonce = Some(r);
            }
        }
        if binding != Some(B64.encode(gs2_header.as_bytes()).as_str()) {
            return Err(ScramError::Protocol("channel binding mismatch"));
        }
        if their_nonce != Some(nonce.as_str()) {
            return Err(ScramError::Protocol("nonce mismatch"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Protocol("bad proof"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ client_signature[i];
        }
        let stored = digest::digest(&digest::SHA256, &client_key);
        if !ct_eq(stored.as_ref(), &self.verifier.stored_key) || self.fake {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// Splits `gs2-header` (`n,,` / `y,,`) from `client-first-message-bare`.
fn split_gs2(msg: &str) -> Result<(&str, &str), ScramError> {
    let flag_end = msg
        .find(',')
        .ok_or(ScramError::Protocol("missing gs2 header"))?;
    match &msg[..flag_end] {
        "n" | "y" => {}
        f if f.starts_with("p=") => {
            return Err(ScramError::Protocol("channel binding is not supported"));
        }
        _ => return Err(ScramError::Protocol("bad gs2 flag")),
    }
    let authzid_end = msg[flag_end + 1..]
        .find(',')
        .ok_or(ScramError::Protocol("missing gs2 header"))?
        + flag_end
        + 1;
    Ok((&msg[..=authzid_end], &msg[authzid_end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs postgres-protocol's client against our server.
    fn exchange(server: &mut ScramServer, password: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let first = server.server_first(client.message())?;
        client.update(&first).unwrap();
        let fin = server.server_final(client.message())?;
        client
            .finish(&fin)
            .expect("client accepts the server signature");
        Ok(())
    }

    #[test]
    fn real_client_authenticates_against_password_and_stored_verifier() {
        let v = ScramVerifier::from_password("s3cret");
        assert_eq!(exchange(&mut ScramServer::new(v.clone()), "s3cret"), Ok(()));
        let text = postgres_protocol::password::scram_sha_256(b"other");
        let stored = ScramVerifier::parse(&text).unwrap();
        assert_eq!(exchange(&mut ScramServer::new(stored), "other"), Ok(()));
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_the_same_way() {
        let v = ScramVerifier::from_password("s3cret");
        assert_eq!(
            exchange(&mut ScramServer::new(v), "nope"),
            Err(ScramError::Failed)
        );
        let key = [3u8; 32];
        assert_eq!(
            exchange(&mut ScramServer::fake("ghost", &key), "anything"),
            Err(ScramError::Failed)
        );
    }

    #[test]
    fn fake_exchange_offers_a_stable_salt_per_user() {
        let key = [3u8; 32];
        let first = |u: &str| {
            let s = String::from_utf8(
                ScramServer::fake(u, &key)
                    .server_first(b"n,,n=,r=abc")
                    .unwrap(),
            )
            .unwrap();
            s.split(',').nth(1).unwrap().to_string()
        };
        assert_eq!(first("ghost"), first("ghost"));
        assert_ne!(first("ghost"), first("other"));
    }

    #[test]
    fn cleartext_password_checks_against_verifier() {
        let v = ScramVerifier::from_password("s3cret");
        assert!(v.check_password("s3cret"));
        assert!(!v.check_password("s3cre"));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let v = ScramVerifier::from_password("x");
        for junk in [
            &b""[..],
            b"n",
            b"p=tls,,n=,r=a",
            b"\xff",
            b"n,,n=,r=",
            b"x,,r=a",
        ] {
            assert!(ScramServer::new(v.clone()).server_first(junk).is_err());
        }
        let mut s = ScramServer::new(v);
        s.server_first(b"n,,n=,r=abc").unwrap();
        assert!(s.server_final(b"c=biws,r=abc,p=####").is_err());
        assert!(ScramVerifier::parse("SCRAM-SHA-256$0:AA==$AA==:AA==").is_none());
    }
}
