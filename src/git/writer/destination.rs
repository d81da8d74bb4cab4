//! Where a promotion goes: an environment turned into a remote, a branch, a file and an edit.

use super::*;

/// Which value of which file of which branch an environment's promotions change.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The environment repo.
    pub remote: Remote,
    /// The branch.
    pub branch: String,
    /// The file, relative to the repo's root.
    pub file: String,
    /// The value in the file.
    pub target: EditTarget,
}

/// An owned [`edit::Target`].
#[derive(Debug, Clone)]
pub enum EditTarget {
    /// A kustomization's `images:` entry by name; its `newTag`, or `digest`.
    KustomizeImage {
        /// The entry's `name`.
        name: String,
        /// Write `digest`.
        digest: bool,
    },
    /// A YAML path (also Helm values paths).
    Path(String),
}

impl EditTarget {
    /// The borrowed form that `edit::apply` takes.
    pub fn as_target(&self) -> Target<'_> {
        match self {
            EditTarget::KustomizeImage { name, digest } => Target::KustomizeImage { name, digest: *digest },
            EditTarget::Path(p) => Target::Path(p),
        }
    }

    /// How the target is named in messages.
    pub fn describe(&self) -> String {
        match self {
            EditTarget::KustomizeImage { name, digest } => format!("images[name={name}].{}", if *digest { "digest" } else { "newTag" }),
            EditTarget::Path(p) => p.clone(),
        }
    }
}

impl Destination {
    /// The destination of an environment of a pipeline file that lives in `base_dir`.
    pub fn of(env: &Environment, base_dir: &Path) -> Destination {
        let spec = &env.spec;
        let u = &spec.update.value;
        let target = match (&u.kustomize_image, &u.yaml_path, &u.helm_values) {
            (Some(name), _, _) => EditTarget::KustomizeImage { name: name.clone(), digest: u.digest },
            (None, Some(p), _) | (None, None, Some(p)) => EditTarget::Path(p.value.clone()),
            (None, None, None) => unreachable!("validated: an update names one target"),
        };
        Destination {
            remote: Remote::resolve(&spec.repo.value, base_dir),
            branch: spec.branch.value.clone(),
            file: spec.file.value.trim_start_matches("./").to_string(),
            target,
        }
    }

    /// The value a promotion writes: the version for a kustomize image, else the update's `value`
    /// (default `${version}`) with its variables filled by `vars`.
    pub fn value<'a>(update: &'a Update, vars: impl Fn(&str) -> Option<&'a str>) -> Result<String, String> {
        match (&update.kustomize_image, &update.value) {
            (None, Some(v)) => crate::model::interpolate(&v.value, vars),
            _ => crate::model::interpolate("${version}", vars),
        }
    }
}
