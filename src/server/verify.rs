//! Webhook signatures, each provider's way, all in constant time: nothing of a delivery is read
//! further until one of these says it came from who holds the trigger's secret.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a delivery is refused (the answer is 401; the reason goes to the log, not the sender).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// How long a Standard Webhooks timestamp may be off the server's clock.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// A request's headers, case-insensitive (what the receivers read).
pub trait Headers {
    /// The header's value, if present and text.
    fn get_str(&self, name: &str) -> Option<&str>;
}

impl Headers for axum::http::HeaderMap {
    fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Headers for [(&str, &str)] {
    fn get_str(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `sha256=<hex>` against the body's HMAC.
fn prefixed_hex(secret: &str, value: Option<&str>, body: &[u8], header: &str) -> Result<(), Refused> {
    let Some(v) = value else { return refuse(format!("no {header} header")) };
    let Some(hex) = v.trim().strip_prefix("sha256=") else { return refuse(format!("{header} is not `sha256=...` (sha1 is refused)")) };
    let Ok(given) = hex::decode(hex) else { return refuse(format!("{header} is not hex")) };
    if equal(&hmac_sha256(secret.as_bytes(), &[body]), &given) { Ok(()) } else { refuse(format!("{header} does not match the body")) }
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>`; the SHA-1 `X-Hub-Signature`
/// alone is refused.
pub fn github(secret: &str, h: &(impl Headers + ?Sized), body: &[u8]) -> Result<(), Refused> {
    prefixed_hex(secret, h.get_str("x-hub-signature-256"), body, "X-Hub-Signature-256")
}

/// Bitbucket Cloud and Server: `X-Hub-Signature: sha256=<hex>`.
pub fn bitbucket(secret: &str, h: &(impl Headers + ?Sized), body: &[u8]) -> Result<(), Refused> {
    prefixed_hex(secret, h.get_str("x-hub-signature"), body, "X-Hub-Signature")
}

/// Gitea, Forgejo, Gogs: a bare hex HMAC-SHA256 of the body in their own header.
pub fn gitea(secret: &str, h: &(impl Headers + ?Sized), body: &[u8]) -> Result<(), Refused> {
    let Some(v) = ["x-gitea-signature", "x-forgejo-signature", "x-gogs-signature"].iter().find_map(|n| h.get_str(n)) else {
        return refuse("no X-Gitea-Signature, X-Forgejo-Signature or X-Gogs-Signature header");
    };
    let Ok(given) = hex::decode(v.trim()) else { return refuse("the signature is not hex") };
    if equal(&hmac_sha256(secret.as_bytes(), &[body]), &given) { Ok(()) } else { refuse("the signature does not match the body") }
}

/// A shared secret sent as is in `header` (GitLab's `X-Gitlab-Token`, Harbor's `Authorization`).
pub fn shared(secret: &str, h: &(impl Headers + ?Sized), header: &str) -> Result<(), Refused> {
    match h.get_str(header) {
        Some(v) if !secret.is_empty() && equal(v.trim().as_bytes(), secret.as_bytes()) => Ok(()),
        Some(_) => refuse(format!("{header} is not the trigger's secret")),
        None => refuse(format!("no {header} header")),
    }
}

/// A token in the URL (Docker Hub, Quay: registries that cannot sign).
pub fn url_token(secret: &str, given: Option<&str>) -> Result<(), Refused> {
    match given {
        Some(v) if !secret.is_empty() && equal(v.as_bytes(), secret.as_bytes()) => Ok(()),
        _ => refuse("the URL's token is not the trigger's"),
    }
}

/// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` (several,
/// space-separated, for key rotation), the HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the
/// base64 secret after `whsec_`; the timestamp within [`TOLERANCE_SECS`] of `now`.
pub fn standard(secret: &str, h: &(impl Headers + ?Sized), body: &[u8], now: i64) -> Result<(), Refused> {
    let (Some(id), Some(ts), Some(sigs)) = (h.get_str("webhook-id"), h.get_str("webhook-timestamp"), h.get_str("webhook-signature")) else {
        return refuse("a Standard Webhooks delivery has webhook-id, webhook-timestamp and webhook-signature headers");
    };
    let Ok(t) = ts.trim().parse::<i64>() else { return refuse("webhook-timestamp is not a number") };
    if (now - t).abs() > TOLERANCE_SECS {
        return refuse(format!("webhook-timestamp is {}s off this server's clock (at most {TOLERANCE_SECS}s): stale or replayed", now - t));
    }
    // Padding optional, as the reference libraries take it (a secret copied without its `=`).
    let b64 = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let Ok(key) = b64.decode(secret.trim().strip_prefix("whsec_").unwrap_or(secret.trim())) else {
        return refuse("the trigger's secret is not a Standard Webhooks secret (whsec_ and base64)");
    };
    let want = hmac_sha256(&key, &[id.as_bytes(), b".", ts.trim().as_bytes(), b".", body]);
    let mut any = false;
    for s in sigs.split(' ').filter(|s| !s.is_empty()) {
        let Some(v) = s.strip_prefix("v1,") else { continue };
        any = true;
        if let Ok(given) = b64.decode(v)
            && !given.is_empty()
            && equal(&want, &given)
        {
            return Ok(());
        }
    }
    if any { refuse("no webhook-signature matches") } else { refuse("webhook-signature has no `v1,` signature") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_published_vector_verifies_and_sha1_or_tampering_does_not() {
        let ok: &[(&str, &str)] = &[("X-Hub-Signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")];
        assert_eq!(github("It's a Secret to Everybody", ok, b"Hello, World!"), Ok(()));
        assert!(github("It's a Secret to Everybody", ok, b"Hello, World?").is_err());
        assert!(github("another secret", ok, b"Hello, World!").is_err());
        let sha1: &[(&str, &str)] = &[("X-Hub-Signature", "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59")];
        assert!(github("It's a Secret to Everybody", sha1, b"Hello, World!").unwrap_err().0.contains("no X-Hub-Signature-256"));
        let bare: &[(&str, &str)] = &[("X-Hub-Signature-256", "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")];
        assert!(github("It's a Secret to Everybody", bare, b"Hello, World!").is_err());
    }

    #[test]
    fn a_standard_webhooks_secret_verifies_with_or_without_its_base64_padding() {
        use base64::Engine as _;
        let key = b"0123456789abcdefghij"; // 20 bytes: base64 ends in `=`
        let padded = base64::engine::general_purpose::STANDARD.encode(key);
        assert!(padded.ends_with('='));
        let sig = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(key, &[b"msg_1", b".", b"1700000000", b".", b"{}"]));
        let h: &[(&str, &str)] = &[("webhook-id", "msg_1"), ("webhook-timestamp", "1700000000"), ("webhook-signature", &format!("v1,{sig}"))];
        for secret in [format!("whsec_{padded}"), format!("whsec_{}", padded.trim_end_matches('='))] {
            assert_eq!(standard(&secret, h, b"{}", 1700000000), Ok(()), "{secret}");
        }
    }

    #[test]
    fn standard_webhooks_published_vector_verifies_within_its_tolerance() {
        let h: &[(&str, &str)] = &[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", "v1,bm9ldHRoZXNpZ25hdHVyZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ];
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(standard(secret, h, body, 1614265330 + 60), Ok(()), "the second signature of a rotation list matches");
        assert!(standard(secret, h, body, 1614265330 + TOLERANCE_SECS + 1).unwrap_err().0.contains("stale"));
        assert!(standard(secret, h, br#"{"test": 2432232315}"#, 1614265330).is_err());
        let empty: &[(&str, &str)] = &[("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"), ("webhook-timestamp", "1614265330"), ("webhook-signature", "v1,")];
        assert!(standard(secret, empty, body, 1614265330).is_err(), "an empty signature is refused");
    }

    #[test]
    fn gitea_gitlab_bitbucket_and_url_tokens() {
        let sig = hex::encode(hmac_sha256(b"s3cret", &[b"{}"]));
        assert_eq!(gitea("s3cret", &[("X-Forgejo-Signature", sig.as_str())][..], b"{}"), Ok(()));
        assert!(gitea("s3cret", &[("X-Gitea-Signature", sig.as_str())][..], b"{ }").is_err());
        let prefixed = format!("sha256={sig}");
        assert_eq!(bitbucket("s3cret", &[("X-Hub-Signature", prefixed.as_str())][..], b"{}"), Ok(()));
        assert_eq!(shared("glpat-xyz", &[("X-Gitlab-Token", "glpat-xyz")][..], "x-gitlab-token"), Ok(()));
        assert!(shared("glpat-xyz", &[("X-Gitlab-Token", "glpat-xy")][..], "x-gitlab-token").is_err());
        assert!(shared("", &[("X-Gitlab-Token", "")][..], "x-gitlab-token").is_err(), "an empty secret never matches");
        assert!(url_token("tok", Some("tok")).is_ok() && url_token("tok", Some("tok2")).is_err() && url_token("tok", None).is_err());
    }
}
