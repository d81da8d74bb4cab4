//! `triggers`: what starts a run by itself, a Git push or an image push, each with its secret.

use serde::{Deserialize, Serialize};

use super::Spanned;
use super::tags::{Reading, TagFilter};
use crate::diag::{Diagnostics, did_you_mean};

/// The Git hosts whose push webhooks promote verifies.
pub const GIT_PROVIDERS: &[&str] = &["github", "gitlab", "gitea", "bitbucket", "standard"];
/// The registries whose push webhooks promote verifies.
pub const IMAGE_PROVIDERS: &[&str] = &["harbor", "dockerhub", "quay", "standard", "github"];

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
    /// How a polled registry is signed in to (image triggers with `poll`).
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
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

/// `image:` a push of a repository's tag to a registry, announced by its webhook (`provider`) or
/// found by polling the registry (`poll`), or both.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageTrigger {
    /// Who sends the webhook: harbor, dockerhub, quay, standard; none: the registry is polled.
    #[serde(default)]
    pub provider: Option<Spanned<String>>,
    /// The repository (`registry.example.com/acme/checkout`).
    pub repository: Spanned<String>,
    /// Which tags start a run: a semver range (`>=1.0.0 <2.0.0`; pre-releases only where the
    /// range names one); default any. A regular expression written here before ranges existed
    /// keeps its meaning (with a warning): use `tagPattern`.
    #[serde(default)]
    pub tags: Option<Spanned<String>>,
    /// Which tags start a run, for tags that are not versions: a regular expression; ordered by
    /// its `order` group (or the whole tag), runs of digits as numbers.
    #[serde(default)]
    pub tag_pattern: Option<Spanned<String>>,
    /// How often to list the repository's tags through the OCI distribution API (at least 1s);
    /// none: webhooks only.
    #[serde(default)]
    pub poll: Option<Spanned<super::Duration>>,
    /// Poll over plain http (a registry without TLS); default https.
    #[serde(default)]
    pub insecure: bool,
}

impl ImageTrigger {
    /// Which tags this trigger admits (checked at load: an invalid one admits nothing).
    pub fn filter(&self) -> TagFilter {
        TagFilter::new(self.tags.as_ref().map(|t| t.value.as_str()), self.tag_pattern.as_ref().map(|t| t.value.as_str()))
            .map_or_else(|_| TagFilter::Pattern(regex::Regex::new("$^").expect("a regex that matches nothing")), |(f, _)| f)
    }
}

/// `auth:` how a polled registry is signed in to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryAuth {
    /// A docker `config.json` whose `auths` has the registry's host (`auth`, or `username` and
    /// `password`); read at each poll.
    pub docker_config_file: Spanned<String>,
}

impl Trigger {
    /// The provider that sends this trigger's webhooks.
    pub fn provider(&self) -> &str {
        match (&self.git, &self.image) {
            (Some(g), _) => &g.provider.value,
            (_, Some(i)) => i.provider.as_ref().map_or("", |p| p.value.as_str()),
            _ => "",
        }
    }
}

/// The registry host and the repository's name in it, of a repository as people write it
/// (`registry.example.com/acme/checkout`, `localhost:5000/app`; no host: Docker Hub, where a
/// one-part name is under `library/`).
pub fn registry_of(repository: &str) -> Result<(String, String), String> {
    let (first, rest) = repository.split_once('/').unwrap_or(("", repository));
    let (host, name) = if first.contains(['.', ':']) || first == "localhost" {
        (first.to_string(), rest.to_string())
    } else if repository.contains('/') {
        ("registry-1.docker.io".to_string(), repository.to_string())
    } else {
        ("registry-1.docker.io".to_string(), format!("library/{repository}"))
    };
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if host.is_empty() || host.contains(['@', '/', '?', '#']) || name.len() > 255 || !name.split('/').all(component) {
        return Err(format!("`{repository}` is not a repository: write HOST/PATH (`registry.example.com/acme/checkout`), lowercase, without a tag or digest"));
    }
    Ok((host, name))
}

/// Checks the triggers' shape: one kind each, a known provider, a secret, valid patterns.
pub fn check(triggers: &[Spanned<Trigger>], diags: &mut Diagnostics) {
    for t in triggers {
        let pos = t.pos;
        let t = &t.value;
        match (&t.git, &t.image) {
            (Some(_), Some(_)) | (None, None) => {
                diags.error(pos, "a trigger is exactly one of `git: {provider, repo, refs, version}` or `image: {provider, repository, tags, poll}`")
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
                if let Some(p) = &i.provider
                    && !IMAGE_PROVIDERS.contains(&p.value.as_str())
                {
                    let hint = did_you_mean(&p.value, IMAGE_PROVIDERS.iter().copied());
                    diags.error(p.pos, format!("unknown registry provider `{}`{hint}: one of {}", p.value, IMAGE_PROVIDERS.join(", ")));
                }
                if i.provider.is_none() && i.poll.is_none() {
                    diags.error(i.repository.pos, "an image trigger is told of pushes by a webhook (`provider: harbor`, `dockerhub`, `quay` or `standard`) or polls the registry (`poll: 1m`): give one or both");
                }
                if let Some(p) = &i.poll {
                    if p.value.0 < std::time::Duration::from_secs(1) {
                        diags.error(p.pos, "`poll` is at least 1s");
                    }
                    if let Err(why) = registry_of(&i.repository.value) {
                        diags.error(i.repository.pos, format!("`poll` lists the tags of `repository`: {why}"));
                    }
                } else if i.insecure {
                    diags.error(i.repository.pos, "`insecure` is how a polled registry is reached (plain http): it needs `poll`");
                }
                match TagFilter::new(i.tags.as_ref().map(|t| t.value.as_str()), i.tag_pattern.as_ref().map(|t| t.value.as_str())) {
                    Ok((_, Reading::Plain)) => {}
                    Ok((_, Reading::TagsAsRegex)) => {
                        let tags = i.tags.as_ref().expect("read from tags");
                        diags.warning(tags.pos, format!("`{}` is not a semver range: it is read as a regular expression, as before ranges; write it as `tagPattern` (or a range such as `>=1.0.0 <2.0.0`)", tags.value));
                    }
                    Err(e) => {
                        let pos = match e {
                            super::tags::FilterError::Pattern(_) => i.tag_pattern.as_ref().map(|t| t.pos),
                            _ => i.tags.as_ref().map(|t| t.pos),
                        };
                        diags.error(pos.unwrap_or(i.repository.pos), e.to_string());
                    }
                }
            }
        }
        if t.auth.is_some() && t.image.as_ref().is_none_or(|i| i.poll.is_none()) {
            diags.error(pos, "`auth` signs in to a polled registry: it needs `image` with `poll`");
        }
        let webhooks = t.git.is_some() || t.image.as_ref().is_some_and(|i| i.provider.is_some());
        if !webhooks {
            if t.secret_env.is_some() || t.secret_file.is_some() {
                diags.error(pos, "`secretEnv`/`secretFile` verify webhooks: an image trigger without `provider` receives none (it polls)");
            }
            continue;
        }
        if t.secret_env.is_some() == t.secret_file.is_some() {
            diags
                .error(pos, "a trigger names its webhook secret with exactly one of `secretEnv` or `secretFile`: an unauthenticated webhook is never accepted");
        }
    }
}
