//! The pipelines a server serves: every pipeline file of its folders, checked as `validate`
//! checks them, reloaded when they change; an invalid version is refused with its errors while
//! the last good one keeps serving.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::plan::Plan;

/// The most pipeline files a server loads from its folders.
const MAX_FILES: usize = 1000;

/// One pipeline file as loaded.
#[derive(Clone)]
pub struct Loaded {
    /// The file, absolute.
    pub file: PathBuf,
    /// Its text (stored with each run it starts).
    pub source: Arc<str>,
    /// Its plan.
    pub plan: Arc<Plan>,
    /// Its users file as read at this load (the API's tokens are checked against it; a changed
    /// file is read again at the next reload). `None`: none, or it does not load.
    pub users: Option<Arc<crate::governance::users::Users>>,
}

impl Loaded {
    /// Its plan, for the driver of a run it started ([`crate::exec::Executor::drive_planned`]).
    pub fn planned(&self) -> crate::exec::Planned {
        crate::exec::Planned { source: self.source.clone(), plan: self.plan.clone(), users: self.users.clone() }
    }
}

/// Every pipeline and every file that does not load.
#[derive(Clone, Default)]
pub struct Pipelines {
    /// By pipeline name: the last good version of each.
    pub by_name: BTreeMap<String, Loaded>,
    /// By file: the errors of its newest version (`FILE:LINE:COL: error: ...`), when it has any.
    pub errors: BTreeMap<String, Vec<String>>,
}

impl Pipelines {
    /// Reads every `*.yaml`/`*.yml` with `kind: Pipeline` in `dirs` (not recursive), over the last
    /// good versions in `previous`.
    pub fn load(dirs: &[PathBuf], previous: &Pipelines) -> Pipelines {
        let mut out = Pipelines { by_name: previous.by_name.clone(), errors: BTreeMap::new() };
        let mut seen = 0;
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                out.errors.insert(dir.display().to_string(), vec![format!("{}: cannot read the folder", dir.display())]);
                continue;
            };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml")).collect();
            files.sort();
            for file in files {
                seen += 1;
                if seen > MAX_FILES {
                    out.errors.insert(dir.display().to_string(), vec![format!("more than {MAX_FILES} YAML files: the rest are not loaded")]);
                    break;
                }
                let Ok(text) = crate::files::read_text(&file, crate::files::MAX_TEXT) else { continue };
                if !text.lines().any(|l| l.trim() == "kind: Pipeline") {
                    continue; // a users file, policy data, ...
                }
                let file = std::path::absolute(&file).unwrap_or(file);
                let checked = crate::ops::check_file(&file);
                let errors: Vec<String> = checked.diagnostics.iter().filter(|d| d.severity == crate::diag::Severity::Error).map(|d| d.to_string()).collect();
                match checked.plan {
                    Some(plan) if errors.is_empty() => {
                        let base = file.parent().unwrap_or(std::path::Path::new("."));
                        let users = crate::governance::users_of(&plan.pipeline, base).ok().flatten().map(Arc::new);
                        // The text the plan was made from (read once: a file written meanwhile
                        // is loaded at the next reload, never half old, half new).
                        out.by_name.insert(plan.pipeline.name.value.clone(), Loaded { file, source: checked.source.into(), plan: Arc::new(plan), users });
                    }
                    _ => {
                        out.errors.insert(file.display().to_string(), errors);
                    }
                }
            }
        }
        out
    }

    /// The pipeline named `name`.
    pub fn get(&self, name: &str) -> Option<&Loaded> {
        self.by_name.get(name)
    }
}
