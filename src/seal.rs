//! The key that seals what promote must believe later (decisions, stage results, run sources, the
//! audit chain, its own commits): kept outside the state, so that write access to the state or
//! to a repo alone cannot forge any of them.
//!
//! The key is 32 random bytes, hex, in a file readable by its owner only: `PROMOTE_KEY_FILE` when
//! set, else `$XDG_CONFIG_HOME/promote/key` (`~/.config/promote/key`). It is created on first use
//! (atomically: two processes starting at once end up with the same key). A key file that others
//! may read is refused, as ssh refuses such a private key. Several replicas of one state share
//! one key file (a mounted secret).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why the key cannot be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("key file {path}: {why}")]
pub struct SealError {
    /// The key file.
    pub path: String,
    /// What is wrong and what to do.
    pub why: String,
}

/// The sealing key. Clones share it; it is never printed (`Debug` shows where it came from).
#[derive(Clone)]
pub struct Key {
    /// HMAC-SHA256 keyed with the key's 32 bytes (its inner and outer pads hashed once, here,
    /// not at every seal: a page reads thousands).
    keyed: Arc<Hmac<Sha256>>,
    path: Arc<str>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.path)
    }
}

impl Key {
    /// Where the key is: `PROMOTE_KEY_FILE`, else `$XDG_CONFIG_HOME/promote/key`, else
    /// `$HOME/.config/promote/key`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("PROMOTE_KEY_FILE").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from(".promote"));
        config.join("promote").join("key")
    }

    /// The key at [`Key::default_path`], created on first use.
    pub fn load_default() -> Result<Key, SealError> {
        Key::load_or_create(&Key::default_path())
    }

    /// The key in `path`, created (0600, its folder 0700) when there is none.
    pub fn load_or_create(path: &Path) -> Result<Key, SealError> {
        let err = |why: String| SealError { path: path.display().to_string(), why };
        match std::fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Key::create(path).map_err(|e| err(format!("cannot create it: {e}")))?;
            }
            Err(e) => return Err(err(format!("cannot read it: {e}"))),
        }
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        // Readable by its owner only; or by its group too when that group is this process's own
        // (a Kubernetes Secret mounted with `fsGroup` is 0440, its group the pod's).
        use std::os::unix::fs::MetadataExt;
        // SAFETY: getegid has no preconditions and cannot fail.
        let own_group = meta.gid() == unsafe { libc::getegid() };
        let others = if own_group { 0o007 } else { 0o077 };
        if meta.permissions().mode() & others != 0 || meta.permissions().mode() & 0o022 != 0 {
            return Err(err(format!(
                "readable by others (mode {:o}): anyone who reads it can forge approvals; run `chmod 600 {}`",
                meta.permissions().mode() & 0o777,
                path.display()
            )));
        }
        let text = crate::files::read_text(path, 1024).map_err(|e| err(e.why))?;
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| err("not a promote key (64 hex digits): restore it from your backup; a new key makes every sealed record unbelievable".into()))?;
        Ok(Key::new(bytes, path.display().to_string().into()))
    }

    /// Writes a new key to `path` (0600, its folder 0700 when made) and loads it back as
    /// [`Key::load_or_create`] would; a file already at `path` is refused and left as it is.
    pub fn generate(path: &Path) -> Result<Key, SealError> {
        let err = |why: String| SealError { path: path.display().to_string(), why };
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(err("already exists; it is left as it is (a new key makes every record the old one sealed unbelievable: move it away first if that is what you want)".into()));
        }
        match Key::create(path) {
            Ok(true) => {}
            Ok(false) => return Err(err("made by another process at the same moment; it is left as it is".into())),
            Err(e) => return Err(err(format!("cannot create it: {e}"))),
        }
        Key::load_or_create(path)
    }

    /// A key from bytes (tests and benchmarks that keep no key file).
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key::new(bytes, "(in memory)".into())
    }

    fn new(bytes: [u8; 32], path: Arc<str>) -> Key {
        Key { keyed: Arc::new(Hmac::<Sha256>::new_from_slice(&bytes).expect("HMAC takes any key length")), path }
    }

    /// Writes a new random key where none is, atomically: written aside, then linked into place,
    /// so that a racing process either wins or reads the winner's key. `false`: it lost the race.
    fn create(path: &Path) -> std::io::Result<bool> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        let aside = path.with_extension(format!("new-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&aside)?;
        f.write_all(format!("{}\n", hex::encode(bytes)).as_bytes())?;
        f.sync_all()?;
        let linked = std::fs::hard_link(&aside, path);
        let _ = std::fs::remove_file(&aside);
        match linked {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
            Ok(()) => Ok(true),
        }
    }

    /// Where the key came from, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The MAC of `fields` under `domain` (what is sealed: `decision`, `stage`, ...): HMAC-SHA256,
    /// each field a tag byte (0 = none, 1 = bytes), its length (8 bytes, little endian) and its
    /// bytes, so that no two lists of fields read the same. Hex.
    pub fn mac(&self, domain: &str, fields: &[Option<&[u8]>]) -> String {
        let mut m = (*self.keyed).clone();
        m.update(&(domain.len() as u64).to_le_bytes());
        m.update(domain.as_bytes());
        for f in fields {
            match f {
                None => m.update(&[0u8]),
                Some(b) => {
                    m.update(&[1u8]);
                    m.update(&(b.len() as u64).to_le_bytes());
                    m.update(b);
                }
            }
        }
        hex::encode(m.finalize().into_bytes())
    }

    /// Whether `mac` is the MAC of `fields` under `domain` (compared in constant time).
    pub fn verify(&self, domain: &str, fields: &[Option<&[u8]>], mac: Option<&str>) -> bool {
        self.verify_hex(&self.mac(domain, fields), mac)
    }

    /// Whether `mac` is `want`, a MAC computed by the caller (compared in constant time).
    pub fn verify_hex(&self, want: &str, mac: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(mac) = mac else { return false };
        want.len() == mac.len() && bool::from(want.as_bytes().ct_eq(mac.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_owner_only_and_refused_when_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/promote/key");
        let a = Key::load_or_create(&path).unwrap();
        let b = Key::load_or_create(&path).unwrap();
        assert_eq!(a.mac("d", &[Some(b"x")]), b.mac("d", &[Some(b"x")]));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(!format!("{a:?}").contains(&std::fs::read_to_string(&path).unwrap().trim().to_string()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Key::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        // Group-readable, its group this process's own (a Secret mounted with `fsGroup`): taken;
        // group-writable, or readable by everyone: refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        assert!(Key::load_or_create(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        assert!(Key::load_or_create(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        assert!(Key::load_or_create(&path).is_err());
    }

    #[test]
    fn fields_domains_and_keys_all_count() {
        let k = Key::from_bytes([7; 32]);
        let base = k.mac("stage", &[Some(b"ab"), Some(b"c")]);
        assert_ne!(base, k.mac("stage", &[Some(b"a"), Some(b"bc")]));
        assert_ne!(base, k.mac("decision", &[Some(b"ab"), Some(b"c")]));
        assert_ne!(base, k.mac("stage", &[Some(b"ab"), None, Some(b"c")]));
        assert_ne!(base, Key::from_bytes([8; 32]).mac("stage", &[Some(b"ab"), Some(b"c")]));
        assert!(k.verify("stage", &[Some(b"ab"), Some(b"c")], Some(&base)));
        assert!(!k.verify("stage", &[Some(b"ab"), Some(b"c")], None));
    }
}
