//! The AOT cache: compiled artifacts stored by content, written atomically, checked before use.
//!
//! Each artifact `<key>.cwasm` carries an integrity record in the extended attribute
//! `user.wrun.aot`: the kind, length, modification time and SHA-256 of the file, set before
//! the file is renamed into place. A lookup trusts a file whose length and mtime still match
//! the record (one `fstat` and one `fgetxattr`, no read of the code); any other file is hashed
//! in full, and one whose hash differs is deleted and compiled again. wasmtime's own header
//! check then refuses artifacts of another engine configuration.
//!
//! `files/` remembers the digest of module files already seen, by file identity (device,
//! inode, size, mtime, ctime), so a warm run neither reads nor hashes the module.

use super::source::{FileIdentity, Kind};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use xattr::FileExt;

const RECORD_ATTR: &str = "user.wrun.aot";
const RECORD_VERSION: &str = "v1";

/// The compiled-artifact directory of a state root.
#[derive(Debug, Clone)]
pub struct AotCache {
    dir: PathBuf,
}

/// A cache entry that passed the integrity check, open and ready to map.
#[derive(Debug)]
pub struct Artifact {
    pub file: File,
    pub kind: Kind,
    pub path: PathBuf,
}

impl Artifact {
    /// The key it is stored under.
    pub fn key(&self) -> String {
        self.path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Artifact),
    Miss,
    /// An entry existed but failed the integrity check; it has been removed.
    Corrupt(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("failed to write cache entry `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to record the integrity attribute of `{path}` (does the file system support user xattrs?)")]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The integrity record stored with each artifact.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    kind: Kind,
    len: u64,
    mtime: (i64, i64),
    sha256: String,
}

impl Record {
    fn encode(&self) -> String {
        format!(
            "{RECORD_VERSION} {} {} {}.{} {}",
            self.kind.tag(),
            self.len,
            self.mtime.0,
            self.mtime.1,
            self.sha256
        )
    }

    fn decode(text: &str) -> Option<Record> {
        let mut fields = text.split(' ');
        if fields.next()? != RECORD_VERSION {
            return None;
        }
        let kind = Kind::from_tag(fields.next()?)?;
        let len = fields.next()?.parse().ok()?;
        let (secs, nanos) = fields.next()?.split_once('.')?;
        let sha256 = fields.next()?.to_string();
        if fields.next().is_some() || sha256.len() != 64 {
            return None;
        }
        Some(Record {
            kind,
            len,
            mtime: (secs.parse().ok()?, nanos.parse().ok()?),
            sha256,
        })
    }
}

impl AotCache {
    pub fn new(dir: PathBuf) -> AotCache {
        AotCache { dir }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_path(&self, id: &FileIdentity) -> PathBuf {
        self.dir.join("files").join(id.name())
    }

    /// The content digest recorded for this exact version of a module file, if any.
    pub fn indexed_digest(&self, id: &FileIdentity) -> Option<String> {
        let text = std::fs::read_to_string(self.index_path(id)).ok()?;
        let digest = text.trim_end();
        let valid = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| digest.to_ascii_lowercase())
    }

    /// Records the digest of a module file version, once that version can no longer change
    /// unnoticed (see [`FileIdentity::settled`]). Failing to record only costs a later hash.
    pub fn index_digest(&self, id: &FileIdentity, digest: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.index_digest_at(id, digest, now);
    }

    fn index_digest_at(&self, id: &FileIdentity, digest: &str, now_secs: i64) {
        if !id.settled(now_secs) {
            return;
        }
        let path = self.index_path(id);
        let dir = self.dir.join("files");
        let _ = std::fs::create_dir(&dir);
        let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), unique_suffix()));
        let written =
            std::fs::write(&tmp, format!("{digest}\n")).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(path = %path.display(), "module digest not recorded: {e}");
        }
    }

    pub fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// Opens the artifact for `key` if there is one that can be trusted.
    pub fn lookup(&self, key: &str) -> Lookup {
        let path = self.path_of(key);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => file,
            Err(_) => return Lookup::Miss,
        };
        match verify(&file) {
            Ok(kind) => Lookup::Hit(Artifact { file, kind, path }),
            Err(reason) => {
                // A concurrent writer may have renamed a good entry in meanwhile; removing it
                // only costs that writer's successor one compilation.
                let _ = std::fs::remove_file(&path);
                Lookup::Corrupt(reason)
            }
        }
    }

    /// Stores `artifact` under `key` atomically: readers see the old entry, none, or this one.
    pub fn store(&self, key: &str, kind: Kind, artifact: &[u8]) -> Result<PathBuf, CacheError> {
        let path = self.path_of(key);
        let tmp = self.dir.join(format!(
            ".{key}.{}.{}.tmp",
            std::process::id(),
            unique_suffix()
        ));
        let result = write_entry(&tmp, kind, artifact).and_then(|()| {
            std::fs::rename(&tmp, &path).map_err(|source| CacheError::Write {
                path: path.clone(),
                source,
            })
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| path)
    }
}

fn write_entry(tmp: &Path, kind: Kind, artifact: &[u8]) -> Result<(), CacheError> {
    let write_err = |source| CacheError::Write {
        path: tmp.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(write_err)?;
    // The hash is taken on another core while the code is written and synced, both of which
    // take a good part of a second for a large program's hundreds of megabytes on a cold
    // start's path; a process that may start no thread (a pool's supervisor, under its pids
    // limit) hashes afterwards.
    let hash = || hex::encode(Sha256::digest(artifact));
    let (written, sha256) = std::thread::scope(|scope| {
        let hashing = std::thread::Builder::new().spawn_scoped(scope, hash);
        // Renaming before the data is durable could leave a valid-looking empty file after
        // a crash.
        let written = file.write_all(artifact).and_then(|()| file.sync_all());
        let sha256 = match hashing {
            Ok(hashing) => hashing.join().ok(),
            Err(_) => Some(hash()),
        };
        (written, sha256)
    });
    written.map_err(write_err)?;
    let sha256 = sha256.ok_or_else(|| write_err(std::io::Error::other("hashing failed")))?;
    let meta = file.metadata().map_err(write_err)?;
    let record = Record {
        kind,
        len: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        sha256,
    };
    file.set_xattr(RECORD_ATTR, record.encode().as_bytes())
        .map_err(|source| CacheError::Record {
            path: tmp.to_path_buf(),
            source,
        })
}

/// Checks an opened entry against its record; the error says why it is not trusted.
fn verify(file: &File) -> Result<Kind, String> {
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err("owned by another user or writable by others".into());
    }
    let raw = file
        .get_xattr(RECORD_ATTR)
        .ok()
        .flatten()
        .ok_or("no integrity record")?;
    let record = std::str::from_utf8(&raw)
        .ok()
        .and_then(Record::decode)
        .ok_or("unreadable integrity record")?;
    if record.len == meta.len() && record.mtime == (meta.mtime(), meta.mtime_nsec()) {
        return Ok(record.kind);
    }
    // Touched since it was written: trust it only if the content is still what was recorded.
    if sha256_of(file).map_err(|e| format!("cannot read: {e}"))? != record.sha256 {
        return Err("content does not match its recorded sha256".into());
    }
    Ok(record.kind)
}

fn sha256_of(mut file: &File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, AotCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = AotCache::new(dir.path().to_path_buf());
        (dir, cache)
    }

    #[test]
    fn records_round_trip() {
        let record = Record {
            kind: Kind::Component,
            len: 42,
            mtime: (1_700_000_000, 123),
            sha256: "a".repeat(64),
        };
        assert_eq!(Record::decode(&record.encode()), Some(record));
        assert_eq!(Record::decode("v0 module 1 1.1 aa"), None);
        assert_eq!(Record::decode("v1 module x 1.1 aa"), None);
    }

    #[test]
    fn a_large_artifact_is_stored_whole_with_its_hash() {
        let (_dir, cache) = cache();
        let artifact: Vec<u8> = (0..9_000_123usize).map(|i| (i * 31 / 4093) as u8).collect();
        let path = cache.store("big", Kind::Module, &artifact).unwrap();
        assert!(std::fs::read(&path).unwrap() == artifact);
        // The record's hash is the content's: a file that fails the cheap check is hashed
        // in full and kept.
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert!(matches!(cache.lookup("big"), Lookup::Hit(_)));
    }

    #[test]
    fn stored_entries_are_found_with_their_kind() {
        let (_dir, cache) = cache();
        assert!(matches!(cache.lookup("k"), Lookup::Miss));
        cache.store("k", Kind::Component, b"artifact").unwrap();
        match cache.lookup("k") {
            Lookup::Hit(artifact) => assert_eq!(artifact.kind, Kind::Component),
            other => panic!("expected a hit, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_entry_is_removed_not_trusted() {
        let (_dir, cache) = cache();
        let path = cache.store("k", Kind::Module, b"artifact bytes").unwrap();
        let mut file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all(b"garbage").unwrap();
        drop(file);
        assert!(matches!(cache.lookup("k"), Lookup::Corrupt(_)));
        assert!(!path.exists());
    }

    #[test]
    fn touched_but_intact_entry_is_kept() {
        let (_dir, cache) = cache();
        let path = cache.store("k", Kind::Module, b"artifact bytes").unwrap();
        let file = File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        drop(file);
        assert!(matches!(cache.lookup("k"), Lookup::Hit(_)));
    }

    #[test]
    fn digests_are_indexed_only_for_settled_files() {
        let (dir, cache) = cache();
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"module").unwrap();
        let fresh = FileIdentity::of(&std::fs::metadata(&module).unwrap());
        cache.index_digest(&fresh, &"a".repeat(64));
        assert_eq!(
            cache.indexed_digest(&fresh),
            None,
            "just written: not settled"
        );

        // ctime cannot be set back, so "later" stands in for an old file.
        let later = i64::MAX / 2;
        cache.index_digest_at(&fresh, &"a".repeat(64), later);
        assert_eq!(cache.indexed_digest(&fresh), Some("a".repeat(64)));

        std::fs::write(&module, b"changed").unwrap();
        let changed = FileIdentity::of(&std::fs::metadata(&module).unwrap());
        assert_eq!(cache.indexed_digest(&changed), None);
    }

    #[test]
    fn entry_without_record_is_not_trusted() {
        let (_dir, cache) = cache();
        std::fs::write(cache.path_of("k"), b"planted").unwrap();
        assert!(matches!(cache.lookup("k"), Lookup::Corrupt(_)));
    }
}
