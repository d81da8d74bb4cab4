//! How the writer commits (identity, signing), what it pushes with (credentials), where it
//! keeps its caches, and how often it retries.

use super::*;

/// How the writer commits and where it keeps its caches.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Folder of the bare clones (one per remote), beside the state file.
    pub cache_dir: PathBuf,
    /// Author of promotion commits.
    pub author: Identity,
    /// Committer of promotion commits.
    pub committer: Identity,
    /// Signs promotion commits when set.
    pub signing: Option<SigningKey>,
    /// Tokens and keys for remotes.
    pub credentials: Credentials,
    /// Push attempts in all when the branch keeps moving (default 10).
    pub max_attempts: u32,
    /// How many commits back to look for a promotion already made (default 1,000).
    pub history_depth: usize,
}

impl WriterConfig {
    /// Defaults: author and committer `promote <promote@localhost>`, no signing, no credentials.
    pub fn new(cache_dir: impl Into<PathBuf>) -> WriterConfig {
        WriterConfig {
            cache_dir: cache_dir.into(),
            author: Identity::default(),
            committer: Identity::default(),
            signing: None,
            credentials: Credentials::default(),
            max_attempts: 10,
            history_depth: 1000,
        }
    }

    /// Reads the `PROMOTE_GIT_*` environment variables (docs/git.md) over the defaults.
    pub fn from_env(cache_dir: impl Into<PathBuf>) -> Result<WriterConfig, String> {
        let mut c = WriterConfig::new(cache_dir);
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(a) = var("PROMOTE_GIT_AUTHOR") {
            c.author = Identity::parse(&a).ok_or_else(|| format!("PROMOTE_GIT_AUTHOR=`{a}`: write it as `Name <email>`"))?;
        }
        c.committer = c.author.clone();
        if let Some(a) = var("PROMOTE_GIT_COMMITTER") {
            c.committer = Identity::parse(&a).ok_or_else(|| format!("PROMOTE_GIT_COMMITTER=`{a}`: write it as `Name <email>`"))?;
        }
        if let Some(k) = var("PROMOTE_GIT_SIGNING_KEY") {
            c.signing = Some(SigningKey::parse(&k).ok_or_else(|| format!("PROMOTE_GIT_SIGNING_KEY=`{k}`: write `ssh:PATH-TO-PRIVATE-KEY` or `gpg:KEYID`"))?);
        }
        if let Some(t) = var("PROMOTE_GIT_TOKEN") {
            c.credentials.token = Some(Secret::new(t));
        } else if let Some(f) = var("PROMOTE_GIT_TOKEN_FILE") {
            let t = crate::files::read_text(Path::new(&f), crate::files::MAX_SMALL).map_err(|e| format!("PROMOTE_GIT_TOKEN_FILE: cannot read {f}: {e}"))?;
            c.credentials.token = Some(Secret::new(t));
        }
        c.credentials.ssh_key = var("PROMOTE_GIT_SSH_KEY").map(PathBuf::from);
        Ok(c)
    }
}
