//! Who may connect: the `[[users]]` of the config turned into credentials
//! ready for each method, computed once at startup (a SCRAM verifier from a
//! cleartext password costs a PBKDF2 run; not per login).

use std::collections::HashMap;

use crate::config::{AuthMethod, UserConfig};

use super::scram::ScramVerifier;

/// One user's credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// How the client must authenticate.
    pub method: AuthMethod,
    /// Always present for SCRAM; for a cleartext config password, derived from it.
    pub verifier: Option<ScramVerifier>,
    /// The cleartext password when the config holds one (md5 needs it).
    pub cleartext: Option<String>,
}

/// All users, by name, plus a per-process key for fake exchanges.
#[derive(Debug)]
pub struct UserDirectory {
    users: HashMap<String, Credentials>,
    /// Keys the fake SCRAM salt of unknown users (stable within a process).
    pub fake_key: [u8; 32],
}

impl UserDirectory {
    /// Prepares credentials for every configured user.
    pub fn new(users: &HashMap<String, UserConfig>) -> Self {
        let users = users
            .iter()
            .map(|(name, u)| {
                let (verifier, cleartext) = if u.password.starts_with("SCRAM-SHA-256$") {
                    (ScramVerifier::parse(&u.password), None)
                } else {
                    (
                        Some(ScramVerifier::from_password(&u.password)),
                        Some(u.password.clone()),
                    )
                };
                if verifier.is_none() {
                    tracing::warn!(user = %name, "password is not a valid SCRAM-SHA-256 verifier; this user cannot log in");
                }
                (
                    name.clone(),
                    Credentials {
                        method: u.auth,
                        verifier,
                        cleartext,
                    },
                )
            })
            .collect();
        let mut fake_key = [0u8; 32];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fake_key);
        Self { users, fake_key }
    }

    /// The same users with a given fake-exchange key: a reload keeps the
    /// process's key, so an unknown user's fake salt does not change (a
    /// change would tell a prober the name is unknown).
    pub fn with_fake_key(users: &HashMap<String, UserConfig>, fake_key: [u8; 32]) -> Self {
        Self {
            fake_key,
            ..Self::new(users)
        }
    }

    /// The credentials of `user`, if configured.
    pub fn get(&self, user: &str) -> Option<&Credentials> {
        self.users.get(user)
    }
}

/// The md5 method's expected answer: `"md5" + md5(md5(password + user) + salt)`.
pub fn md5_expected(user: &str, password: &str, salt: [u8; 4]) -> String {
    postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt)
}
