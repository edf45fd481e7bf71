//! The compiled modules a pooled sandbox maps before its claim: those the pool ran last, so
//! that a claim of one of them skips resolving and mapping the artifact (≈0.3–0.6 ms) and
//! the first touches of its code.

use super::prefault;
use crate::wasm::source::{FileIdentity, Kind};
use crate::wasm::{self, cache::AotCache, cache::Lookup, Program};
use std::collections::VecDeque;

/// How many of the most recently run artifacts each pooled sandbox maps ahead. Each costs
/// the refill a mapping per sandbox, so only the few a host runs most.
pub const RECENT_ARTIFACTS: usize = 2;

/// An artifact a claim ran, and how a later claim of the same module file is recognised
/// without reading it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecentArtifact {
    /// Its cache key.
    pub key: String,
    pub kind: Kind,
    /// The module's sha256.
    pub digest: String,
    /// The module file's identity, when it had settled (`FileIdentity::settled`): a file
    /// with this identity still holds the bytes that were hashed, as the cache's own digest
    /// index assumes.
    pub identity: Option<FileIdentity>,
}

/// The artifacts a pool ran last, most recent first.
#[derive(Debug, Default, Clone)]
pub struct Recent(VecDeque<RecentArtifact>);

impl Recent {
    /// Notes that a claim ran `artifact`.
    pub fn used(&mut self, artifact: RecentArtifact) {
        self.0.retain(|a| a.key != artifact.key);
        self.0.push_front(artifact);
        self.0.truncate(RECENT_ARTIFACTS);
    }

    pub fn artifacts(&self) -> Vec<RecentArtifact> {
        self.0.iter().cloned().collect()
    }
}

/// Programs mapped ahead, by cache key.
#[derive(Default)]
pub struct Preloaded(Vec<(String, Program)>);

impl Preloaded {
    /// Maps the artifacts of `recent` found intact in `cache`, their pages faulted in; one
    /// that is gone or does not load is left out (a claim then maps it as usual).
    pub fn load(engine: &wasmtime::Engine, cache: &AotCache, recent: &[RecentArtifact]) -> Self {
        let mut loaded = Vec::new();
        for artifact in recent {
            let Lookup::Hit(entry) = cache.lookup(&artifact.key) else {
                continue;
            };
            let Ok(program) = wasm::deserialize_artifact(engine, entry.kind, entry.file) else {
                continue;
            };
            prefault::range(program.image_range());
            loaded.push((artifact.key.clone(), program));
        }
        Preloaded(loaded)
    }

    /// The keys of what is mapped.
    pub fn keys(&self) -> Vec<String> {
        self.0.iter().map(|(key, _)| key.clone()).collect()
    }

    /// The program mapped ahead for `key`, if any.
    pub fn take(&mut self, key: &str) -> Option<Program> {
        let index = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.swap_remove(index).1)
    }
}

/// Of the artifacts a sandbox has mapped, the one a claim of the module file with
/// `identity` runs, if that file is known unchanged and matches the image's `expected`
/// digest (`sha256:<hex>`) when there is one.
pub fn recognise<'a>(
    mapped: &'a [RecentArtifact],
    identity: &FileIdentity,
    expected: Option<&str>,
) -> Option<&'a RecentArtifact> {
    mapped.iter().find(|artifact| {
        artifact.identity.as_ref() == Some(identity)
            && expected.is_none_or(|e| e.trim_start_matches("sha256:") == artifact.digest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn artifact(key: &str, identity: Option<FileIdentity>) -> RecentArtifact {
        RecentArtifact {
            key: key.to_string(),
            kind: Kind::Module,
            digest: format!("digest-of-{key}"),
            identity,
        }
    }

    #[test]
    fn recent_keeps_the_last_distinct_artifacts_most_recent_first() {
        let mut recent = Recent::default();
        for key in ["a", "b", "a", "c"] {
            recent.used(artifact(key, None));
        }
        let keys = |r: &Recent| r.artifacts().into_iter().map(|a| a.key).collect::<Vec<_>>();
        assert_eq!(keys(&recent), ["c", "a"]);
        recent.used(artifact("a", None));
        assert_eq!(keys(&recent), ["a", "c"]);
    }

    #[test]
    fn only_an_unchanged_settled_file_of_the_expected_digest_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, b"\0asm").unwrap();
        let identity = FileIdentity::of(&std::fs::metadata(&path).unwrap());
        let mapped = [artifact("k", Some(identity.clone())), artifact("u", None)];
        assert_eq!(recognise(&mapped, &identity, None).unwrap().key, "k");
        assert_eq!(
            recognise(&mapped, &identity, Some("sha256:digest-of-k"))
                .unwrap()
                .key,
            "k"
        );
        assert!(recognise(&mapped, &identity, Some("sha256:other")).is_none());
        // Rewritten: another identity, so the claim resolves the file afresh.
        std::fs::write(&path, b"\0asm\x01").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.size(), 5);
        assert!(recognise(&mapped, &FileIdentity::of(&meta), None).is_none());
    }
}
