//! Web sessions: a users file's token exchanged for a cookie sealed by promote's key (no session
//! table: any replica with the key reads it), ended by its expiry, by sign-out, or by a change of
//! the user's token (the seal covers the token's hash); and the CSRF token of every form.

use base64::Engine as _;

use crate::seal::Key;

/// The cookie's name.
pub const COOKIE: &str = "promote_session";
/// How long a session lasts.
pub const LIFETIME_MS: i64 = 8 * 3600 * 1000;

/// A signed-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Their login in the users file.
    pub user: String,
    /// Unix milliseconds when it ends.
    pub expires: i64,
    /// Random, per session: what its CSRF token is bound to.
    pub nonce: String,
}

fn mac(key: &Key, user: &str, expires: i64, nonce: &str, token_hash: &str) -> String {
    key.mac("session", &[Some(user.as_bytes()), Some(expires.to_string().as_bytes()), Some(nonce.as_bytes()), Some(token_hash.as_bytes())])
}

impl Session {
    /// A new session for `user`, whose token's stored hash is `token_hash`; the cookie's value.
    pub fn open(key: &Key, user: &str, token_hash: &str, now: i64) -> std::io::Result<(Session, String)> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(std::io::Error::other)?;
        let s = Session { user: user.to_string(), expires: now + LIFETIME_MS, nonce: hex::encode(b) };
        let user64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user);
        let value = format!("{user64}.{}.{}.{}", s.expires, s.nonce, mac(key, user, s.expires, &s.nonce, token_hash));
        Ok((s, value))
    }

    /// The session a cookie value carries, if it is sealed by `key` over the user's current token
    /// hash (`token_hash_of`) and not expired.
    pub fn read(key: &Key, value: &str, now: i64, token_hash_of: impl Fn(&str) -> Option<String>) -> Option<Session> {
        if value.len() > 1024 {
            return None;
        }
        let mut parts = value.split('.');
        let (user64, expires, nonce, seal) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let user = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(user64).ok()?).ok()?;
        let expires: i64 = expires.parse().ok()?;
        if expires <= now {
            return None;
        }
        let hash = token_hash_of(&user)?;
        key.verify_hex(&mac(key, &user, expires, nonce, &hash), Some(seal)).then(|| Session { user, expires, nonce: nonce.to_string() })
    }

    /// The CSRF token of this session's forms.
    pub fn csrf(&self, key: &Key) -> String {
        key.mac("csrf", &[Some(self.nonce.as_bytes()), Some(self.user.as_bytes())])
    }

    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, key: &Key, given: Option<&str>) -> bool {
        key.verify_hex(&self.csrf(key), given)
    }
}

/// The `Set-Cookie` value for a session (`Secure` when served over TLS).
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!("{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}", LIFETIME_MS / 1000, if secure { "; Secure" } else { "" })
}

/// The `Set-Cookie` value that ends it.
pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}", if secure { "; Secure" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_reads_back_only_sealed_unexpired_and_with_the_same_token() {
        let key = Key::from_bytes([7; 32]);
        let (s, cookie) = Session::open(&key, "alice", "sha256:aa", 1000).unwrap();
        let same = |_: &str| Some("sha256:aa".to_string());
        assert_eq!(Session::read(&key, &cookie, 2000, same), Some(s.clone()));
        assert_eq!(Session::read(&key, &cookie, 1000 + LIFETIME_MS, same), None, "expired");
        assert_eq!(Session::read(&key, &cookie, 2000, |_| Some("sha256:bb".to_string())), None, "the token changed");
        assert_eq!(Session::read(&Key::from_bytes([8; 32]), &cookie, 2000, same), None, "another key");
        let bob = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("bob");
        let forged = format!("{bob}{}", &cookie[cookie.find('.').unwrap()..]);
        assert_eq!(Session::read(&key, &forged, 2000, same), None, "another user");
        assert!(s.csrf_ok(&key, Some(&s.csrf(&key))) && !s.csrf_ok(&key, Some("00")) && !s.csrf_ok(&key, None));
    }
}
