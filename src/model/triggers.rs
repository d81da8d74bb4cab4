//! `triggers`: what starts a run by itself, a Git push or an image push, each with its secret.

use serde::{Deserialize, Serialize};

use super::Spanned;
use crate::diag::{Diagnostics, did_you_mean};

/// The Git hosts whose push webhooks promote verifies.
pub const GIT_PROVIDERS: &[&str] = &["github", "gitlab", "gitea", "bitbucket", "standard"];
/// The registries whose push webhooks promote verifies.
pub const IMAGE_PROVIDERS: &[&str] = &["harbor", "dockerhub", "quay", "standard"];

/// One trigger: exactly one of `git` or `image`, and the secret its webhooks are verified with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    /// A push of a branch or tag to a Git repo.
    #[serde(default)]
    pub git: Option<GitTrigger>,
    /// A push of an image to a registry.
    #[serde(default)]
    pub image: Option<ImageTrigger>,
    /// The environment variable that holds the webhook secret.
    #[serde(default)]
    pub secret_env: Option<Spanned<String>>,
    /// The file that holds the webhook secret.
    #[serde(default)]
    pub secret_file: Option<Spanned<String>>,
}

/// `git:` a push of matching refs to a repo.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitTrigger {
    /// Who sends the webhook: github, gitlab, gitea (Forgejo, Gogs), bitbucket, standard.
    pub provider: Spanned<String>,
    /// The repo as the provider names it (`acme/checkout`).
    pub repo: Spanned<String>,
    /// Which refs start a run: globs (`refs/tags/v*`); default every tag.
    #[serde(default = "default_refs")]
    pub refs: Vec<Spanned<String>>,
    /// Where the version comes from: `tag` (the tag's name, default), `commit` (the commit id) or
    /// `{file: PATH}` (a file of the repo at the commit).
    #[serde(default)]
    pub version: GitVersion,
    /// Where to poll the repo's refs (a URL, or a path relative to the pipeline file), to catch
    /// pushes whose webhook was missed; none: webhooks only.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// How often to poll `url` (default 1m; at least 1s).
    #[serde(default)]
    pub poll: Option<super::Duration>,
}

fn default_refs() -> Vec<Spanned<String>> {
    vec![Spanned::new(Default::default(), "refs/tags/*".to_string())]
}

/// Where a Git trigger's version comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GitVersion {
    /// The tag's name (`refs/tags/v1.4.2` -> `v1.4.2`).
    #[default]
    Tag,
    /// The pushed commit's id.
    Commit,
    /// The first line of a file of the repo at the pushed commit (`version: {file: VERSION}`),
    /// read through `url`.
    File(String),
}

impl GitVersion {
    /// The file the version is read from, if it is.
    pub fn file(&self) -> Option<&str> {
        match self {
            GitVersion::File(f) => Some(f),
            _ => None,
        }
    }
}

/// `image:` a push of a repository's tag to a registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageTrigger {
    /// Who sends the webhook: harbor, dockerhub, quay, standard.
    pub provider: Spanned<String>,
    /// The repository (`registry.example.com/acme/checkout`).
    pub repository: Spanned<String>,
    /// Which tags start a run: a regular expression (`^v?[0-9]+\.[0-9]+\.[0-9]+$`); default any.
    #[serde(default)]
    pub tags: Option<Spanned<String>>,
}

impl Trigger {
    /// The provider that sends this trigger's webhooks.
    pub fn provider(&self) -> &str {
        match (&self.git, &self.image) {
            (Some(g), _) => &g.provider.value,
            (_, Some(i)) => &i.provider.value,
            _ => "",
        }
    }
}

/// Checks the triggers' shape: one kind each, a known provider, a secret, valid patterns.
pub fn check(triggers: &[Spanned<Trigger>], diags: &mut Diagnostics) {
    for t in triggers {
        let pos = t.pos;
        let t = &t.value;
        match (&t.git, &t.image) {
            (Some(_), Some(_)) | (None, None) => {
                diags.error(pos, "a trigger is exactly one of `git: {provider, repo, refs, version}` or `image: {provider, repository, tags}`")
            }
            (Some(g), None) => {
                if !GIT_PROVIDERS.contains(&g.provider.value.as_str()) {
                    let hint = did_you_mean(&g.provider.value, GIT_PROVIDERS.iter().copied());
                    diags.error(g.provider.pos, format!("unknown git provider `{}`{hint}: one of {}", g.provider.value, GIT_PROVIDERS.join(", ")));
                }
                for r in &g.refs {
                    if !r.value.starts_with("refs/") || glob::Pattern::new(&r.value).is_err() {
                        diags.error(r.pos, format!("`{}` is not a ref pattern: write `refs/tags/v*` or `refs/heads/main`", r.value));
                    }
                }
                if let Some(p) = &g.poll
                    && (p.0 < std::time::Duration::from_secs(1) || g.url.is_none())
                {
                    diags.error(g.repo.pos, "`poll` is at least 1s, and needs `url` (where to poll)");
                }
                if let Some(f) = g.version.file() {
                    if g.url.is_none() {
                        diags.error(g.repo.pos, format!("`version: {{file: {f}}}` reads the file at the pushed commit: give the repo's `url` to read it from"));
                    }
                    if f.is_empty() || f.starts_with('/') || f.split('/').any(|p| p == ".." || p.is_empty()) {
                        diags.error(g.repo.pos, format!("`version: {{file: {f}}}`: a path in the repo, like `VERSION` or `deploy/version.txt`"));
                    }
                }
                if g.version == GitVersion::Tag && g.refs.iter().any(|r| !r.value.starts_with("refs/tags/")) {
                    diags.error(g.repo.pos, "`version: tag` takes the version from a tag: its `refs` must be tags (`refs/tags/...`), or use `version: commit`");
                }
            }
            (None, Some(i)) => {
                if !IMAGE_PROVIDERS.contains(&i.provider.value.as_str()) {
                    let hint = did_you_mean(&i.provider.value, IMAGE_PROVIDERS.iter().copied());
                    diags.error(i.provider.pos, format!("unknown registry provider `{}`{hint}: one of {}", i.provider.value, IMAGE_PROVIDERS.join(", ")));
                }
                if let Some(tags) = &i.tags
                    && let Err(e) = regex::Regex::new(&tags.value)
                {
                    let why = e.to_string().lines().last().unwrap_or("").trim().to_string();
                    diags.error(tags.pos, format!("`tags` is a regular expression: {why}"));
                }
            }
        }
        if t.secret_env.is_some() == t.secret_file.is_some() {
            diags
                .error(pos, "a trigger names its webhook secret with exactly one of `secretEnv` or `secretFile`: an unauthenticated webhook is never accepted");
        }
    }
}
