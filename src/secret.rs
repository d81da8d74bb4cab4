//! Secret values (tokens, passwords): kept out of `Debug`, logs, errors and the audit trail.

/// A secret value: `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret (surrounding whitespace, such as a file's final newline, is dropped).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into().trim().to_string())
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
