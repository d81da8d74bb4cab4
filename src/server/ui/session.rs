//! Web sessions, kept on the server: the cookie is 32 random bytes whose SHA-256 names a row of
//! the state's `sessions` (any replica reads it), ended by sign-out, by an admin's revoke, by a
//! change of the person's token or their being disabled or removed from the directory, after an
//! hour unused, and eight hours after sign-in; and the CSRF token of every form.

use crate::ops::access::Person;
use crate::seal::Key;

/// The cookie's name.
pub const COOKIE: &str = "promote_session";
/// How long a session lasts at most.
pub const LIFETIME_MS: i64 = 8 * 3600 * 1000;
/// How long a session lasts unused.
pub const IDLE_MS: i64 = 3600 * 1000;

/// A signed-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Their login in the directory.
    pub user: String,
    /// Who they are (groups, who vouched).
    pub person: Person,
    /// The hash of the session's cookie (`None`: a trusted proxy vouches at every request).
    pub id_hash: Option<String>,
    /// What the session's CSRF token is bound to.
    pub nonce: String,
}

impl Session {
    /// The CSRF token of this session's forms.
    pub fn csrf(&self, key: &Key) -> String {
        key.mac("csrf", &[Some(self.nonce.as_bytes()), Some(self.user.as_bytes())])
    }

    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, key: &Key, given: Option<&str>) -> bool {
        key.verify_hex(&self.csrf(key), given)
    }
}

/// A new cookie value (32 random bytes, hex) and the hash it is stored under.
pub fn new_cookie() -> std::io::Result<(String, String)> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
    let value = hex::encode(b);
    let hash = hash(&value);
    Ok((value, hash))
}

/// The hash a cookie value is stored under.
pub fn hash(value: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value.as_bytes()))
}

/// The `Set-Cookie` value for a session (`Secure` when served over TLS).
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!("{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}", LIFETIME_MS / 1000, if secure { "; Secure" } else { "" })
}

/// The `Set-Cookie` value that ends it.
pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}", if secure { "; Secure" } else { "" })
}

/// The pre-session cookie of the sign-in form: what its CSRF token is bound to before anyone is
/// signed in (a login-CSRF cannot sign a victim in as the attacker).
pub const FORM_COOKIE: &str = "promote_form";

/// The `Set-Cookie` value of the sign-in form's nonce.
pub fn set_form_cookie(nonce: &str, secure: bool) -> String {
    format!("{FORM_COOKIE}={nonce}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=3600{}", if secure { "; Secure" } else { "" })
}

/// The sign-in form's CSRF token for a form nonce.
pub fn form_csrf(key: &Key, nonce: &str) -> String {
    key.mac("login-csrf", &[Some(nonce.as_bytes())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_random_and_stored_only_as_hashes() {
        let (a, ha) = new_cookie().unwrap();
        let (b, _) = new_cookie().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(hash(&a), ha);
        assert_ne!(ha, a);
    }
}
