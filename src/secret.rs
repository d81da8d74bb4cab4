//! Secret values (tokens, passwords): kept out of `Debug`, logs, errors and the audit trail.

/// A secret value: `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret (surrounding whitespace, such as a file's final newline, is dropped), and
    /// has [`crate::redact`] look for it, in every form, in all that is stored, logged or printed.
    pub fn new(value: impl Into<String>) -> Secret {
        let s = value.into().trim().to_string();
        crate::redact::register(&s);
        Secret(s)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}
