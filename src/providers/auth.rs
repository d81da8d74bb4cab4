//! Credentials named in a pipeline (`auth:`), read from the environment or a file when used.

use crate::model::Auth;
use crate::secret::Secret;

use super::ProviderError;

/// What to send.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `Authorization: Bearer TOKEN`.
    Bearer(Secret),
    /// `Authorization: Basic`.
    Basic(String, Option<Secret>),
}

impl Credential {
    /// Reads what `auth` names; a named variable or file that is missing or empty is an error.
    pub fn resolve(auth: &Auth) -> Result<Option<Credential>, ProviderError> {
        let read = |env: &Option<String>, file: &Option<String>, what: &str| -> Result<Option<Secret>, ProviderError> {
            if let Some(var) = env {
                return match std::env::var(var) {
                    Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v))),
                    _ => Err(ProviderError::Auth(format!("the {what} is to come from the environment variable {var}, which is not set"))),
                };
            }
            if let Some(path) = file {
                return match crate::files::read_text(std::path::Path::new(path), crate::files::MAX_SMALL) {
                    Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v))),
                    Ok(_) => Err(ProviderError::Auth(format!("the {what} file {path} is empty"))),
                    Err(e) => Err(ProviderError::Auth(format!("the {what} file {path} cannot be read: {e}"))),
                };
            }
            Ok(None)
        };
        if let Some(token) = read(&auth.bearer_token_env, &auth.bearer_token_file, "bearer token")? {
            return Ok(Some(Credential::Bearer(token)));
        }
        if let Some(user) = &auth.username {
            let password = read(&auth.password_env, &auth.password_file, "password")?;
            if let Some(p) = &password {
                crate::redact::register_basic(user, p.expose());
            }
            return Ok(Some(Credential::Basic(user.clone(), password)));
        }
        Ok(None)
    }

    /// Adds the header to a request.
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credential::Bearer(t) => req.bearer_auth(t.expose()),
            Credential::Basic(u, p) => req.basic_auth(u, p.as_ref().map(|p| p.expose())),
        }
    }

    /// Replaces the secret in `text` by `***` (servers sometimes echo what they were sent).
    pub fn scrub(&self, text: &str) -> String {
        let secret = match self {
            Credential::Bearer(t) => Some(t),
            Credential::Basic(_, p) => p.as_ref(),
        };
        match secret {
            Some(s) if !s.expose().is_empty() => text.replace(s.expose(), "***"),
            _ => text.to_string(),
        }
    }
}
