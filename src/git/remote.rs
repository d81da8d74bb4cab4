//! Where an environment repo lives and how to authenticate to it; secrets never printed.

use std::path::Path;

/// A remote as libgit2 takes it, with a form safe to show (no user info).
#[derive(Clone)]
pub struct Remote {
    url: String,
    shown: String,
}

impl Remote {
    /// A remote from the pipeline's `repo:`; a path is taken relative to `base_dir` (the folder of
    /// the pipeline file).
    pub fn resolve(repo: &str, base_dir: &Path) -> Remote {
        let url = if repo.contains("://") || is_scp_like(repo) {
            repo.to_string()
        } else {
            let p = Path::new(repo);
            let p = if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
            p.to_string_lossy().into_owned()
        };
        let shown = redact_url(&url);
        Remote { url, shown }
    }

    /// The URL or path given to libgit2.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with any user info replaced by `***`: the only form that appears in messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The password written in the URL, if any (so that messages can redact it).
    pub(crate) fn password(&self) -> Option<&str> {
        let rest = self.url.split_once("://")?.1;
        let userinfo = &rest[..rest.find('/').unwrap_or(rest.len())];
        let userinfo = &userinfo[..userinfo.rfind('@')?];
        userinfo.split_once(':').map(|(_, p)| p).filter(|p| !p.is_empty())
    }

    /// A stable folder name for this remote's cache: readable part + hash of the full URL.
    pub(crate) fn cache_name(&self) -> String {
        let last = self.url.trim_end_matches('/').rsplit(['/', ':', '\\']).next().unwrap_or("repo");
        let readable: String =
            last.trim_end_matches(".git").chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(40).collect();
        // FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.url.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        format!("{readable}-{h:016x}.git")
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.shown)
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// `git@host:path` (scp-like ssh syntax).
fn is_scp_like(repo: &str) -> bool {
    match repo.find(':') {
        Some(i) => repo[..i].contains('@') && !repo[..i].contains('/'),
        None => false,
    }
}

/// `scheme://user:secret@host/path` -> `scheme://***@host/path`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

pub use crate::secret::Secret;

/// How to authenticate to remotes.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// For https:// remotes: a token sent as the password (user from the URL, else `x-access-token`).
    pub token: Option<Secret>,
    /// For ssh:// remotes: a private key file; without it the ssh agent is asked.
    pub ssh_key: Option<std::path::PathBuf>,
}

impl Credentials {
    /// The secret values this process knows of (for redaction elsewhere).
    pub fn secrets(&self) -> Vec<String> {
        self.token.iter().map(|t| t.expose().to_string()).collect()
    }

    /// Replaces every secret this process knows of in `message` by `***`.
    pub(crate) fn redact(&self, remote: &Remote, message: &str) -> String {
        let mut out = message.replace(remote.url(), remote.shown());
        for secret in self.token.iter().map(Secret::expose).chain(remote.password()) {
            if !secret.is_empty() {
                out = out.replace(secret, "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_never_shown() {
        let r = Remote::resolve("https://bot:s3cr3t@git.example.com/envs/qa.git", Path::new("/x"));
        assert_eq!(r.shown(), "https://***@git.example.com/envs/qa.git");
        assert_eq!(r.password(), Some("s3cr3t"));
        let creds = Credentials { token: Some(Secret::new("tok-123\n")), ssh_key: None };
        let msg = creds.redact(&r, "auth failed for https://bot:s3cr3t@git.example.com/envs/qa.git with tok-123; s3cr3t");
        assert!(!msg.contains("s3cr3t") && !msg.contains("tok-123"), "{msg}");
        assert_eq!(format!("{:?}", creds.token), "Some(Secret(***))");
    }

    #[test]
    fn paths_resolve_against_the_pipeline_folder() {
        assert_eq!(Remote::resolve("../envs/qa.git", Path::new("/repo/pipelines")).url(), "/repo/pipelines/../envs/qa.git");
        assert_eq!(Remote::resolve("git@github.com:acme/envs.git", Path::new("/x")).url(), "git@github.com:acme/envs.git");
        let a = Remote::resolve("/srv/qa.git", Path::new("/"));
        assert!(a.cache_name().starts_with("qa-") && a.cache_name().ends_with(".git"));
        assert_ne!(a.cache_name(), Remote::resolve("/srv2/qa.git", Path::new("/")).cache_name());
    }
}
