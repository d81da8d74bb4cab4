//! What a version may be (PRODUCT.md, "Versions"): an OCI tag, `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`,
//! or a digest, `sha256:` and 64 lowercase hex digits. Every entry point checks it before anything
//! runs, so no version carries a newline, a trailer or a path into a commit or a file.

/// The grammar, in words, for error messages.
pub const GRAMMAR: &str =
    "an OCI tag (a letter, digit or `_`, then up to 127 of letters, digits, `.`, `_`, `-`) or a digest (`sha256:` and 64 lowercase hex digits)";

/// Whether `v` is a version.
pub fn check(v: &str) -> Result<(), String> {
    if let Some(hex) = v.strip_prefix("sha256:") {
        return if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(())
        } else {
            Err(format!("{v:?} is not a version: a `sha256:` digest has 64 lowercase hex digits"))
        };
    }
    let b = v.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..].iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(format!("{v:?} is not a version: a version is {GRAMMAR}")) }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn tags_and_digests_pass_and_nothing_else() {
        for good in ["1.4.2", "v2.0.0-rc.1", "_x", "latest", "2.0.1-hotfix", &"a".repeat(128), &format!("sha256:{}", "0a".repeat(32))] {
            assert!(check(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "6.6.6\nApproved-By: Forged <f@example.com>",
            "-rc",
            ".1",
            "1.0+build",
            "a/b",
            "1 2",
            &"a".repeat(129),
            "sha256:abc",
            &format!("sha256:{}", "0A".repeat(32)),
            "1.0\u{0}",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
