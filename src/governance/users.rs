//! The users file: who may approve, in which groups, with which API token (stored hashed).
//!
//! ```yaml
//! users:
//!   alice:
//!     name: Alice Liddell
//!     email: alice@example.com
//!     groups: [release-managers]
//!     token: sha256:9f86d0...      # `promote token --for alice` makes one
//!   bob: {name: Bob, email: bob@example.com, disabled: true}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::GovernanceError;

/// A user of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    /// Full name, for `Approved-By:` trailers.
    pub name: String,
    /// E-mail, for `Approved-By:` trailers.
    pub email: String,
    /// Groups (`group:NAME` in approvers).
    #[serde(default)]
    pub groups: Vec<String>,
    /// `sha256:HEX` of the user's API token; when set, the user's decisions need the token
    /// (`PROMOTE_TOKEN`).
    #[serde(default)]
    pub token: Option<String>,
    /// A disabled user may not decide anything.
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    users: BTreeMap<String, User>,
}

/// The users of a users file.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// By login.
    pub users: BTreeMap<String, User>,
}

impl Users {
    /// Reads and checks a users file; mistakes name the file, line and column.
    pub fn load(path: &Path) -> Result<Users, GovernanceError> {
        let file = path.display().to_string();
        let text = crate::files::read_text(path, crate::files::MAX_SMALL).map_err(|e| GovernanceError::Unreadable { file: file.clone(), why: e.why })?;
        Users::parse(&file, &text)
    }

    /// Parses the text of a users file named `file`.
    pub fn parse(file: &str, text: &str) -> Result<Users, GovernanceError> {
        if let Err((pos, why)) = crate::model::yaml::within_limits(text) {
            return Err(GovernanceError::Invalid { file: file.to_string(), line: pos.line, col: pos.col, why });
        }
        let options = serde_saphyr::options! { strict_booleans: true };
        let parsed: File = serde_saphyr::from_str_with_options(text, options).map_err(|e| GovernanceError::Invalid {
            file: file.to_string(),
            line: e.location().map_or(1, |l| l.line() as usize),
            col: e.location().map_or(1, |l| l.column() as usize),
            why: first_line(&e.to_string()),
        })?;
        for (login, u) in &parsed.users {
            if let Some(t) = &u.token
                && !(t.len() == 71 && t.starts_with("sha256:") && t[7..].bytes().all(|b| b.is_ascii_hexdigit()))
            {
                let (line, col) = find(text, t);
                return Err(GovernanceError::Invalid {
                    file: file.to_string(),
                    line,
                    col,
                    why: format!(
                        "user `{login}`: `token` must be `sha256:` and 64 hex digits (never the token itself); `promote token --for {login}` makes one"
                    ),
                });
            }
        }
        Ok(Users { users: parsed.users })
    }

    /// Whether `login` is in group `group`.
    pub fn in_group(&self, login: &str, group: &str) -> bool {
        self.users.get(login).is_some_and(|u| u.groups.iter().any(|g| g == group))
    }

    /// Every group someone is in.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.users.values().flat_map(|u| u.groups.iter().map(String::as_str))
    }

    /// `Name <email>` of a user, or the login when the user is not in the file.
    pub fn signature(&self, login: &str) -> String {
        match self.users.get(login) {
            Some(u) => format!("{} <{}>", u.name, u.email),
            None => login.to_string(),
        }
    }

    /// `login`, if it is a user here (not disabled).
    pub fn login<'a>(&'a self, login: &str) -> Option<&'a str> {
        self.users.get_key_value(login).filter(|(_, u)| !u.disabled).map(|(k, _)| k.as_str())
    }

    /// The user whose email is `email` (case-insensitive), not disabled.
    pub fn by_email<'a>(&'a self, email: &str) -> Option<&'a str> {
        self.users.iter().find(|(_, u)| !u.disabled && u.email.eq_ignore_ascii_case(email)).map(|(k, _)| k.as_str())
    }

    /// Checks a user of a web session, proven by their token when it was opened or by a trusted
    /// proxy: refused only when they are disabled.
    pub fn authenticate_session(&self, login: &str) -> Result<(), String> {
        match self.users.get(login) {
            Some(u) if u.disabled => Err(format!("user `{login}` is disabled in the users file")),
            _ => Ok(()),
        }
    }

    /// The stored hash of a user's token, if they have one (what a web session is sealed over:
    /// a changed token ends the sessions opened with the old one).
    pub fn token_hash(&self, login: &str) -> Option<&str> {
        self.users.get(login).filter(|u| !u.disabled).and_then(|u| u.token.as_deref())
    }

    /// Checks a user's token: `Ok` when the user has none or `given` matches (compared in constant
    /// time); the token itself is never part of an error.
    pub fn authenticate(&self, login: &str, given: Option<&str>) -> Result<(), String> {
        let Some(u) = self.users.get(login) else { return Ok(()) };
        if u.disabled {
            return Err(format!("user `{login}` is disabled in the users file"));
        }
        let Some(stored) = &u.token else {
            // In a file that gives tokens, a user without one is anyone who types their name.
            if self.uses_tokens() {
                return Err(format!(
                    "user `{login}` has no token in a users file that gives tokens to others: anyone could act as them; give them a token (`token: sha256:...`)"
                ));
            }
            return Ok(());
        };
        let Some(given) = given.filter(|g| !g.is_empty()) else {
            return Err(format!("user `{login}` has an API token: set PROMOTE_TOKEN to it"));
        };
        if constant_time_eq(hash_token(given).as_bytes(), stored.to_ascii_lowercase().as_bytes()) {
            Ok(())
        } else {
            Err(format!("the token in PROMOTE_TOKEN is not `{login}`'s"))
        }
    }
}

impl Users {
    /// The enabled user whose token `given` is (compared in constant time with every stored hash).
    pub fn by_token(&self, given: &str) -> Option<&str> {
        if given.is_empty() {
            return None;
        }
        let h = hash_token(given);
        let mut found = None;
        for (login, u) in &self.users {
            if let Some(t) = &u.token
                && constant_time_eq(h.as_bytes(), t.to_ascii_lowercase().as_bytes())
                && !u.disabled
            {
                found = Some(login.as_str());
            }
        }
        found
    }

    /// Whether any user of the file has a token: then every action is authenticated by one.
    pub fn uses_tokens(&self) -> bool {
        self.users.values().any(|u| u.token.is_some())
    }
}

/// The server's directory of people: one person per login for every pipeline it loads. Read
/// from `promote serve --users FILE`; without one (the way before it existed), merged from the
/// loaded pipelines' users files, where a login that two files describe differently (another
/// email, another token) is nobody's: it names two people, so it names none (see
/// [`Directory::problems`]).
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// The people.
    pub users: Users,
    /// Why some logins were left out, for the pipelines' errors and the log.
    pub problems: Vec<String>,
}

impl Directory {
    /// The directory of one users file.
    pub fn of_file(users: Users) -> Directory {
        Directory { users, problems: Vec::new() }
    }

    /// The directory merged from several users files `(file, users)`: a login described the same
    /// way (email and token) by every file that has it is one person, in the union of the groups
    /// the files give them; a login described two ways is left out, with a problem naming both
    /// files.
    pub fn merge<'a>(files: impl IntoIterator<Item = (&'a str, &'a Users)>) -> Directory {
        let mut seen: BTreeMap<String, (String, User)> = BTreeMap::new();
        let mut clashed: BTreeMap<String, String> = BTreeMap::new();
        for (file, users) in files {
            for (login, u) in &users.users {
                if clashed.contains_key(login) {
                    continue;
                }
                match seen.get_mut(login) {
                    None => {
                        seen.insert(login.clone(), (file.to_string(), u.clone()));
                    }
                    Some((first, known)) => {
                        let same = known.email.eq_ignore_ascii_case(&u.email)
                            && known.token.as_deref().map(str::to_ascii_lowercase) == u.token.as_deref().map(str::to_ascii_lowercase)
                            && known.disabled == u.disabled;
                        if same {
                            for g in &u.groups {
                                if !known.groups.contains(g) {
                                    known.groups.push(g.clone());
                                }
                            }
                        } else {
                            clashed.insert(
                                login.clone(),
                                format!(
                                    "user `{login}` is described differently by {first} and {file} (another email, token or state): two people cannot share a login, so `{login}` cannot sign in to this server; give the server one directory of people (`promote serve --users FILE`)"
                                ),
                            );
                        }
                    }
                }
            }
        }
        for login in clashed.keys() {
            seen.remove(login);
        }
        Directory { users: Users { users: seen.into_iter().map(|(login, (_, u))| (login, u)).collect() }, problems: clashed.into_values().collect() }
    }
}

/// `sha256:HEX` of a token, as stored in the users file.
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// A new random token (32 bytes from the OS's generator, hex).
pub fn new_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
    Ok(format!("prt_{}", hex::encode(b)))
}

/// Equal, in a time that does not depend on where they differ (`subtle`: the compiler may not
/// turn it back into an early exit).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The first line of serde-saphyr's message, without its own `error: line L column C:` prefix
/// (the position is given separately).
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    let rest = line.strip_prefix("error: ").unwrap_or(line);
    match rest.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((at, why)) if at.split(" column ").all(|n| n.trim().parse::<usize>().is_ok()) => why.to_string(),
        _ => rest.to_string(),
    }
}

/// 1-based line and column of the first occurrence of `needle`.
fn find(text: &str, needle: &str) -> (usize, usize) {
    match text.find(needle) {
        Some(at) => {
            let before = &text[..at];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, col)
        }
        None => (1, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "users:\n  alice:\n    name: Alice\n    email: alice@example.com\n    groups: [release-managers]\n  bob:\n    name: Bob\n    email: bob@example.com\n";

    #[test]
    fn groups_and_signatures() {
        let u = Users::parse("users.yaml", FILE).unwrap();
        assert!(u.in_group("alice", "release-managers"));
        assert!(!u.in_group("bob", "release-managers"));
        assert_eq!(u.signature("alice"), "Alice <alice@example.com>");
    }

    #[test]
    fn mistakes_name_their_line() {
        let e = Users::parse("users.yaml", "users:\n  alice:\n    name: Alice\n    emial: a@x\n").unwrap_err().to_string();
        assert!(e.starts_with("users.yaml:4:"), "{e}");
        assert!(e.contains("emial"), "{e}");
        let e = Users::parse("users.yaml", "users:\n  alice:\n    name: A\n    email: a@x\n    token: hunter2\n").unwrap_err().to_string();
        assert!(e.starts_with("users.yaml:5:12:"), "{e}");
        assert!(!e.contains("hunter2"), "the bad token must not be printed: {e}");
    }

    #[test]
    fn a_login_two_files_describe_differently_is_nobody() {
        let a = Users::parse("a.yaml", "users:\n  alice: {name: Alice, email: alice@a.example, groups: [rm]}\n  carl: {name: C, email: c@x, groups: [x]}\n")
            .unwrap();
        let b = Users::parse("b.yaml", "users:\n  alice: {name: Alice B, email: alice@b.example}\n  carl: {name: C, email: C@X, groups: [y]}\n").unwrap();
        let d = Directory::merge([("a.yaml", &a), ("b.yaml", &b)]);
        assert!(d.users.login("alice").is_none(), "alice names two people");
        assert!(d.problems.len() == 1 && d.problems[0].contains("a.yaml") && d.problems[0].contains("b.yaml"), "{:?}", d.problems);
        assert!(d.users.in_group("carl", "x") && d.users.in_group("carl", "y"), "the same person in both files keeps both groups");
    }

    #[test]
    fn tokens_are_checked_against_their_hash() {
        let text = format!("users:\n  alice:\n    name: A\n    email: a@x\n    token: {}\n", hash_token("s3cret"));
        let u = Users::parse("u", &text).unwrap();
        assert!(u.authenticate("alice", Some("s3cret")).is_ok());
        let e = u.authenticate("alice", Some("wrong")).unwrap_err();
        assert!(!e.contains("wrong"));
        assert!(u.authenticate("alice", None).is_err());
    }
}
