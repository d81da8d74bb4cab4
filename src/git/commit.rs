//! Promotion and rollback commits built in memory: the changed blob, the trees on its path, the
//! commit object (signed when configured). No working tree, whatever the repo's size.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use git2::{Oid, Repository, Tree};

use super::GitError;

/// Author or committer of promotion commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

impl Identity {
    /// Reads `Name <email>`.
    pub fn parse(text: &str) -> Option<Identity> {
        let (name, rest) = text.split_once('<')?;
        let email = rest.strip_suffix('>')?.trim();
        let name = name.trim();
        (!name.is_empty() && email.contains('@')).then(|| Identity { name: name.into(), email: email.into() })
    }
}

impl Default for Identity {
    fn default() -> Self {
        Identity { name: "promote".into(), email: "promote@localhost".into() }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <{}>", self.name, self.email)
    }
}

/// A key that signs promotion commits, as git does it (`gpg.format`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKey {
    /// An SSH private key file, signed with `ssh-keygen -Y sign -n git`.
    Ssh(PathBuf),
    /// A GnuPG key id, signed with `gpg --detach-sign --armor`.
    Gpg(String),
}

impl SigningKey {
    /// Reads `ssh:PATH` or `gpg:KEYID`.
    pub fn parse(text: &str) -> Option<SigningKey> {
        match text.split_once(':')? {
            ("ssh", path) if !path.is_empty() => Some(SigningKey::Ssh(path.into())),
            ("gpg", id) if !id.is_empty() => Some(SigningKey::Gpg(id.into())),
            _ => None,
        }
    }

    /// A detached signature of `data`, in the armored form git stores in `gpgsig`.
    pub fn sign(&self, data: &[u8]) -> Result<String, GitError> {
        let mut cmd = match self {
            SigningKey::Ssh(key) => {
                let mut c = Command::new("ssh-keygen");
                c.args(["-Y", "sign", "-n", "git", "-f"]).arg(key);
                c
            }
            SigningKey::Gpg(id) => {
                let mut c = Command::new("gpg");
                c.args(["--batch", "--yes", "--detach-sign", "--armor", "--local-user", id]);
                c
            }
        };
        let what = match self {
            SigningKey::Ssh(_) => "ssh-keygen",
            SigningKey::Gpg(_) => "gpg",
        };
        let fail = |message: String| GitError::Signing { key: self.describe(), message };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run {what}: {e} (install it, or unset PROMOTE_GIT_SIGNING_KEY)")))?;
        child.stdin.take().expect("piped").write_all(data).map_err(|e| fail(format!("{what}: {e}")))?;
        let out = child.wait_with_output().map_err(|e| fail(format!("{what}: {e}")))?;
        let sig = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || !sig.contains("-----BEGIN") {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(fail(format!("{what} failed ({}): {}", out.status, err.trim())));
        }
        Ok(sig)
    }

    fn describe(&self) -> String {
        match self {
            SigningKey::Ssh(p) => format!("ssh:{}", p.display()),
            SigningKey::Gpg(id) => format!("gpg:{id}"),
        }
    }
}

/// A promotion or rollback commit message: subject, blank line, trailers in the order given.
pub fn message(subject: &str, trailers: &[(&str, &str)]) -> String {
    let mut m = String::with_capacity(subject.len() + 40 * trailers.len());
    m.push_str(subject);
    m.push_str("\n\n");
    for (k, v) in trailers {
        m.push_str(k);
        m.push_str(": ");
        m.push_str(v);
        m.push('\n');
    }
    m
}

/// Refuses a text meant for a commit message that is not one line: a newline (or any control
/// character) could add a trailer.
pub fn one_line(what: &str, text: &str) -> Result<(), super::GitError> {
    if text.chars().any(char::is_control) {
        return Err(super::GitError::NotOneLine(format!("the {what} {text:?} has a control character (a newline?): a commit message takes one line of it")));
    }
    Ok(())
}

/// The value of a commit message's trailer `key`, each occurrence.
pub fn trailer_values<'m>(message: &'m str, key: &str) -> Vec<&'m str> {
    // Trailers are the last paragraph; `git interpret-trailers` rules are more lenient, but these
    // are commits promote wrote itself.
    let last = message.trim_end().rsplit("\n\n").next().unwrap_or("");
    last.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim)).collect()
}

/// Writes `text` as the blob at `path` (slash-separated, must exist) in `base`, and the trees along
/// the path; returns the new root tree. Every other entry is reused as it is.
pub fn replace_file(repo: &Repository, base: &Tree<'_>, path: &str, text: &[u8]) -> Result<Oid, git2::Error> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let blob = repo.blob(text)?;
    replace_in(repo, base, &parts, blob)
}

fn replace_in(repo: &Repository, tree: &Tree<'_>, parts: &[&str], blob: Oid) -> Result<Oid, git2::Error> {
    let name = parts[0];
    let entry = tree.get_name(name).ok_or_else(|| git2::Error::from_str(&format!("`{name}` does not exist")))?;
    let mut builder = repo.treebuilder(Some(tree))?;
    if parts.len() == 1 {
        builder.insert(name, blob, entry.filemode())?;
    } else {
        let sub = repo.find_tree(entry.id())?;
        let id = replace_in(repo, &sub, &parts[1..], blob)?;
        builder.insert(name, id, 0o040000)?;
    }
    builder.write()
}

/// Creates the commit object (not on any branch): `tree` on `parent`, signed when `key` is given.
pub fn create(
    repo: &Repository,
    parent: &git2::Commit<'_>,
    tree: Oid,
    message: &str,
    author: &Identity,
    committer: &Identity,
    key: Option<&SigningKey>,
) -> Result<Oid, GitError> {
    let git = |e: git2::Error| GitError::Cache { path: repo.path().display().to_string(), message: e.message().to_string() };
    let author = git2::Signature::now(&author.name, &author.email).map_err(git)?;
    let committer = git2::Signature::now(&committer.name, &committer.email).map_err(git)?;
    let tree = repo.find_tree(tree).map_err(git)?;
    match key {
        None => repo.commit(None, &author, &committer, message, &tree, &[parent]).map_err(git),
        Some(key) => {
            let buf = repo.commit_create_buffer(&author, &committer, message, &tree, &[parent]).map_err(git)?;
            let content = buf.as_str().map_err(git)?;
            let signature = key.sign(content.as_bytes())?;
            repo.commit_signed(content, &signature, None).map_err(git)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_and_trailers_round_trip() {
        let m = message(
            "promote checkout 1.4.2 to qa",
            &[("Promote-Pipeline", "checkout"), ("Promote-Run", "01J"), ("Approved-By", "a <a@x>"), ("Approved-By", "b <b@x>")],
        );
        assert_eq!(m, "promote checkout 1.4.2 to qa\n\nPromote-Pipeline: checkout\nPromote-Run: 01J\nApproved-By: a <a@x>\nApproved-By: b <b@x>\n");
        assert_eq!(trailer_values(&m, "Approved-By"), ["a <a@x>", "b <b@x>"]);
        assert_eq!(trailer_values(&m, "Promote-Run"), ["01J"]);
        assert!(trailer_values("fix\n\nPromote-Run: x\n\nbody later", "Promote-Run").is_empty());
    }

    #[test]
    fn identities_and_keys_parse() {
        assert_eq!(Identity::parse("Release Bot <bot@acme.io>"), Some(Identity { name: "Release Bot".into(), email: "bot@acme.io".into() }));
        assert_eq!(Identity::parse("bot"), None);
        assert_eq!(SigningKey::parse("ssh:/k"), Some(SigningKey::Ssh("/k".into())));
        assert_eq!(SigningKey::parse("gpg:ABCD"), Some(SigningKey::Gpg("ABCD".into())));
        assert_eq!(SigningKey::parse("x509:k"), None);
    }
}
