//! Who may do what: the person a surface authenticated ([`Person`], with who vouched for them),
//! the pipeline's `access:` rules ([`Permission`]), and the one check every operation makes
//! ([`allow`]) whatever the surface (API, pages, `--server` commands). Commands run without a
//! server act on a state their user can write anyway: they are [`Caller::Local`], and the rules
//! of `access:` are not theirs (approvals still check their approvers and tokens).
//!
//! A refusal names the rule that would allow the action (`access.rollback` or `access.admin` of
//! pipeline `checkout`: group:sre, group:platform) and is recorded in the trail by the surface
//! that refused ([`refused`]).

use std::collections::BTreeSet;

use super::OpsError;
use crate::model::{Pipeline, Spanned};

/// Who vouched for a person: recorded with every action they take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A token of the server's directory (`Authorization: Bearer`, or the pages' token sign-in).
    Token,
    /// An OpenID Provider: its issuer and the person's subject there.
    Oidc {
        /// The issuer URL.
        issuer: String,
        /// The `sub` claim.
        subject: String,
    },
    /// A trusted proxy's identity headers.
    Proxy {
        /// The proxy's address.
        addr: String,
    },
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Token => f.write_str("directory token"),
            Via::Oidc { issuer, subject } => write!(f, "OIDC subject {subject} of {issuer}"),
            Via::Proxy { addr } => write!(f, "trusted proxy {addr}"),
        }
    }
}

impl Via {
    /// The stored form (a session keeps it): `token`, `oidc ISSUER SUBJECT`, `proxy ADDR`.
    pub fn encode(&self) -> String {
        match self {
            Via::Token => "token".into(),
            Via::Oidc { issuer, subject } => format!("oidc {issuer} {subject}"),
            Via::Proxy { addr } => format!("proxy {addr}"),
        }
    }

    /// Reads [`Via::encode`]'s form.
    pub fn decode(s: &str) -> Option<Via> {
        let mut parts = s.splitn(3, ' ');
        match (parts.next()?, parts.next(), parts.next()) {
            ("token", None, None) => Some(Via::Token),
            ("oidc", Some(issuer), Some(subject)) => Some(Via::Oidc { issuer: issuer.into(), subject: subject.into() }),
            ("proxy", Some(addr), None) => Some(Via::Proxy { addr: addr.into() }),
            _ => None,
        }
    }
}

/// A person a surface authenticated: their login in the server's directory (one person for every
/// pipeline), their groups (the directory's and their identity provider's), and who vouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Their login.
    pub login: String,
    /// `Name <email>` for trailers.
    pub signature: String,
    /// Every group they are in (directory and IdP).
    pub groups: BTreeSet<String>,
    /// Who vouched for them.
    pub via: Via,
}

impl Person {
    /// Whether a list of people (`alice`, `group:NAME`, `group:everyone`, `group:*`) names them.
    pub fn listed(&self, list: &[Spanned<String>]) -> bool {
        list.iter().any(|a| match a.value.strip_prefix("group:") {
            Some("*" | "everyone") => true,
            Some(g) => self.groups.contains(g),
            None => a.value == self.login,
        })
    }

    /// The person as a users file of one (their groups included), for the rules written over
    /// users files (approvers, separation of duties): the server vouched for them already.
    pub fn as_users(&self) -> crate::governance::Users {
        let (name, email) = match self.signature.rsplit_once(" <") {
            Some((n, e)) => (n.to_string(), e.trim_end_matches('>').to_string()),
            None => (self.login.clone(), String::new()),
        };
        let user = crate::governance::User { name, email, groups: self.groups.iter().cloned().collect(), token: None, disabled: false };
        crate::governance::Users { users: [(self.login.clone(), user)].into_iter().collect() }
    }

    /// The person of `login` in `directory` (enabled), with extra groups (an IdP's).
    pub fn of(directory: &crate::governance::Users, login: &str, via: Via, extra: impl IntoIterator<Item = String>) -> Option<Person> {
        let login = directory.login(login)?;
        let u = &directory.users[login];
        let mut groups: BTreeSet<String> = u.groups.iter().cloned().collect();
        groups.extend(extra);
        Some(Person { login: login.to_string(), signature: directory.signature(login), groups, via })
    }

    /// The actor as the trail records it: `alice (directory token)`.
    pub fn actor(&self) -> String {
        format!("{} ({})", self.login, self.via)
    }
}

/// Who asks an operation.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// A command run on the state directly (no server): it names a user (`--as`), proven where
    /// the pipeline's users file gives tokens.
    Local {
        /// The login named.
        user: &'a str,
        /// The token given (`PROMOTE_TOKEN`).
        token: Option<&'a str>,
    },
    /// A person the server authenticated.
    Person(&'a Person),
}

impl Caller<'_> {
    /// The login acting.
    pub fn login(&self) -> &str {
        match self {
            Caller::Local { user, .. } => user,
            Caller::Person(p) => &p.login,
        }
    }
}

/// What `access:` grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See runs, evidence, environments, the trail.
    View,
    /// Start and resume runs.
    Run,
    /// Roll back an environment (its own `access.rollback` narrows the pipeline's).
    Rollback,
    /// Everything, plus drift decisions, clearing held versions, "not a risk" marks.
    Admin,
}

impl Permission {
    /// The rule's name in the file.
    pub fn rule(self) -> &'static str {
        match self {
            Permission::View => "view",
            Permission::Run => "run",
            Permission::Rollback => "rollback",
            Permission::Admin => "admin",
        }
    }
}

/// The people a list names, for a message.
fn names(list: &[Spanned<String>]) -> String {
    if list.is_empty() { "nobody".into() } else { list.iter().map(|x| x.value.as_str()).collect::<Vec<_>>().join(", ") }
}

/// Whether `person` holds `permission` on `pipeline` (for `Rollback`, in `environment`).
pub fn holds(pipeline: &Pipeline, permission: Permission, environment: Option<&str>, person: &Person) -> bool {
    let Some(a) = &pipeline.access else { return permission == Permission::View };
    if person.listed(&a.admin) {
        return true;
    }
    match permission {
        Permission::View => a.view.as_ref().is_none_or(|v| person.listed(v) || person.listed(&a.run) || person.listed(&a.rollback)),
        Permission::Run => person.listed(&a.run),
        Permission::Rollback => match environment.and_then(|e| narrowed(pipeline, e)) {
            Some(list) => person.listed(list),
            None => person.listed(&a.rollback),
        },
        Permission::Admin => false,
    }
}

/// An environment's own `access.rollback`, when it has one.
fn narrowed<'a>(pipeline: &'a Pipeline, environment: &str) -> Option<&'a [Spanned<String>]> {
    let env = pipeline.environments.iter().find(|e| e.name.value == environment)?;
    env.spec.access.as_ref().map(|a| a.rollback.as_slice())
}

/// The rules that would allow `permission`, in words: "`access.rollback` (group:sre) or
/// `access.admin` (group:platform) of pipeline checkout".
pub fn rule(pipeline: &Pipeline, permission: Permission, environment: Option<&str>) -> String {
    let name = &pipeline.name.value;
    let empty = Vec::new();
    let (admin, own) = match &pipeline.access {
        Some(a) => (
            &a.admin,
            match permission {
                Permission::View => a.view.as_ref().unwrap_or(&empty),
                Permission::Run => &a.run,
                Permission::Rollback => &a.rollback,
                Permission::Admin => &a.admin,
            },
        ),
        None => (&empty, &empty),
    };
    if permission == Permission::Admin {
        return format!("`access.admin` ({}) of pipeline {name}", names(admin));
    }
    if let (Permission::Rollback, Some(env), Some(list)) = (permission, environment, environment.and_then(|e| narrowed(pipeline, e))) {
        return format!("`environments.{env}.access.rollback` ({}) or `access.admin` ({}) of pipeline {name}", names(list), names(admin));
    }
    format!("`access.{}` ({}) or `access.admin` ({}) of pipeline {name}", permission.rule(), names(own), names(admin))
}

/// Allows `caller` to do what `permission` grants on `pipeline`, or refuses naming the rule
/// ([`OpsError::Forbidden`]). A local caller is not bound by `access:`.
pub fn allow(pipeline: &Pipeline, permission: Permission, environment: Option<&str>, caller: &Caller<'_>) -> Result<(), OpsError> {
    let Caller::Person(person) = caller else { return Ok(()) };
    if holds(pipeline, permission, environment, person) {
        return Ok(());
    }
    Err(OpsError::Forbidden(format!(
        "{} may not {}: that needs {}",
        person.login,
        match permission {
            Permission::View => "see this pipeline's runs".to_string(),
            Permission::Run => "start or resume runs of this pipeline".to_string(),
            Permission::Rollback => format!("roll back {}", environment.unwrap_or("its environments")),
            Permission::Admin => "administer this pipeline".to_string(),
        },
        if holds(pipeline, Permission::View, None, person) { rule(pipeline, permission, environment) } else { unseen_rule(pipeline, permission) }
    )))
}

/// The rule that would allow `permission`, without who it lists: said to a person who may not
/// view the pipeline (who holds what is the pipeline's to show to its viewers).
fn unseen_rule(pipeline: &Pipeline, permission: Permission) -> String {
    format!("`access.{}` or `access.admin` of pipeline {} (who they list is shown to those who may view it)", permission.rule(), pipeline.name.value)
}

/// A refusal's words for `caller`: `why` as it is for a person who may view `pipeline` (or a
/// local caller), else only the rule `field`, without who it lists.
pub fn refusal_for(pipeline: &Pipeline, caller: &Caller<'_>, field: &str, why: String) -> String {
    match caller {
        Caller::Person(p) if !holds(pipeline, Permission::View, None, p) => format!(
            "{} may not decide this: that needs the stage's `{field}` in pipeline {} (who they are is shown to those who may view it)",
            p.login, pipeline.name.value
        ),
        _ => why,
    }
}

/// Allows a decision whose deciders are a list (drift's `approvers`, a watch's `approvers`): those
/// listed, and the pipeline's admins. Refuses naming both rules.
pub fn allow_listed(pipeline: &Pipeline, list: &[Spanned<String>], field: &str, what: &str, caller: &Caller<'_>) -> Result<(), OpsError> {
    let Caller::Person(person) = caller else { return Ok(()) };
    if holds(pipeline, Permission::Admin, None, person) || person.listed(list) {
        return Ok(());
    }
    if !holds(pipeline, Permission::View, None, person) {
        return Err(OpsError::Forbidden(format!(
            "{} may not {what}: that needs `{field}` or `access.admin` of pipeline {} (who they list is shown to those who may view it)",
            person.login, pipeline.name.value
        )));
    }
    Err(OpsError::Forbidden(format!(
        "{} may not {what}: that needs `{field}` ({}) or `access.admin` ({}) of pipeline {}",
        person.login,
        names(list),
        names(pipeline.access.as_ref().map_or(&[][..], |a| &a.admin)),
        pipeline.name.value
    )))
}

/// Records a refused action in the trail (who, what, which rule): a refusal writes nothing else.
pub async fn refused(store: &crate::store::Store, person: &Person, action: &str, why: &str) {
    let detail = format!("{} was refused {action}: {why}", person.actor());
    if let Err(e) = store.audit(None, None, crate::store::EntryKind::Refused, &person.login, &detail).await {
        tracing::warn!(error = %e, "a refusal could not be recorded in the trail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(access: &str) -> Pipeline {
        let src = format!(
            "apiVersion: promote/v1\nkind: Pipeline\nname: checkout\nartifact: {{image: r/x}}\n{access}\nenvironments:\n  qa: {{repo: q.git, file: f.yaml, update: {{yamlPath: a}}}}\n  prod:\n    repo: p.git\n    file: f.yaml\n    update: {{yamlPath: a}}\n    access: {{rollback: [carol]}}\nstages:\n  d:\n    deploy: {{environment: qa}}\n  p:\n    needs: [d]\n    deploy: {{environment: prod}}\n"
        );
        let mut d = crate::diag::Diagnostics::new("p.yaml".to_string());
        let p = crate::model::load(&src, &mut d).expect("loads");
        assert!(!d.has_errors(), "{:?}", d.into_sorted());
        p
    }

    fn person(login: &str, groups: &[&str]) -> Person {
        Person { login: login.into(), signature: login.into(), groups: groups.iter().map(|g| g.to_string()).collect(), via: Via::Token }
    }

    #[test]
    fn rules_grant_what_they_name_and_admin_everything() {
        let p = pipeline("access:\n  run: [group:rm]\n  rollback: [group:sre]\n  admin: [group:platform]");
        let (bob, rm, sre, carol, admin) = (person("bob", &[]), person("r", &["rm"]), person("s", &["sre"]), person("carol", &[]), person("a", &["platform"]));
        assert!(holds(&p, Permission::View, None, &bob), "view defaults to everyone");
        assert!(!holds(&p, Permission::Run, None, &bob) && holds(&p, Permission::Run, None, &rm));
        assert!(holds(&p, Permission::Rollback, Some("qa"), &sre));
        assert!(!holds(&p, Permission::Rollback, Some("prod"), &sre), "prod narrows rollback to carol");
        assert!(holds(&p, Permission::Rollback, Some("prod"), &carol));
        assert!(holds(&p, Permission::Rollback, Some("prod"), &admin) && holds(&p, Permission::Admin, None, &admin));
        let e = allow(&p, Permission::Rollback, Some("prod"), &Caller::Person(&sre)).unwrap_err().to_string();
        assert!(e.contains("environments.prod.access.rollback") && e.contains("carol") && e.contains("group:platform"), "{e}");
        assert!(allow(&p, Permission::Rollback, Some("prod"), &Caller::Local { user: "x", token: None }).is_ok());
    }

    #[test]
    fn no_access_block_lets_people_view_and_nothing_else() {
        let p = pipeline("");
        let bob = person("bob", &[]);
        assert!(holds(&p, Permission::View, None, &bob));
        for perm in [Permission::Run, Permission::Rollback, Permission::Admin] {
            assert!(!holds(&p, perm, Some("qa"), &bob), "{perm:?}");
        }
    }

    #[test]
    fn a_restricted_view_admits_only_those_named_and_who_may_act() {
        let p = pipeline("access:\n  view: [group:team]\n  run: [rita]");
        assert!(!holds(&p, Permission::View, None, &person("bob", &["other"])));
        assert!(holds(&p, Permission::View, None, &person("t", &["team"])));
        assert!(holds(&p, Permission::View, None, &person("rita", &[])));
    }

    #[test]
    fn via_reads_back() {
        for v in [Via::Token, Via::Oidc { issuer: "https://id.example.com".into(), subject: "a b".into() }, Via::Proxy { addr: "10.0.0.1".into() }] {
            assert_eq!(Via::decode(&v.encode()), Some(v));
        }
    }
}
