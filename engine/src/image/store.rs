//! The image store: an OCI image layout under the state root. Blobs are content-addressed and
//! verified on the way in and again before use; `index.json` names the images.

use super::reference::Reference;
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Index annotation holding an image's `NAME:TAG`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Index annotation: `wasm` or `native`.
pub const KIND: &str = "io.wrun.image.kind";
/// Index annotation: the sha256 of a Wasm image's module, as it is run.
pub const MODULE_DIGEST: &str = "io.wrun.module.digest";
/// Index annotation: when the image was created (RFC 3339).
pub const CREATED: &str = "org.opencontainers.image.created";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to access the image store at `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} does not match its digest (got {actual}, {size} bytes)")]
    Corrupt {
        digest: String,
        actual: String,
        size: u64,
    },
    #[error("blob {0} is missing from the image store")]
    Missing(String),
    #[error("invalid {what} in the image store")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {what}")]
    Spec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("no such image: `{0}`")]
    NoSuchImage(String),
    #[error("image reference `{0}` matches more than one image")]
    Ambiguous(String),
}

/// The OCI image layout of a state root.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

/// One named image of the store.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    pub reference: Reference,
    pub descriptor: Descriptor,
}

impl ImageEntry {
    pub fn digest(&self) -> String {
        self.descriptor.digest().to_string()
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.descriptor
            .annotations()
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ImageStore {
    /// Opens (creating if needed) the layout at `dir`.
    pub fn open(dir: PathBuf) -> Result<ImageStore, StoreError> {
        let store = ImageStore { dir };
        std::fs::create_dir_all(store.dir.join("blobs/sha256")).map_err(io_err(&store.dir))?;
        let layout = store.dir.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.put_blob_from(&mut &bytes[..], None, u64::MAX)
    }

    /// Streams a blob in, verifying it against `expected` (digest, size) when given and
    /// refusing more than `cap` bytes; the blob appears only once complete and verified.
    pub fn put_blob_from(
        &self,
        reader: &mut dyn Read,
        expected: Option<(&str, u64)>,
        cap: u64,
    ) -> Result<String, StoreError> {
        let tmp = self.dir.join(format!(".blob-{}.tmp", unique()));
        let result = (|| {
            let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                let n = reader.read(&mut buffer).map_err(io_err(&tmp))?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                if size > cap || expected.is_some_and(|(_, want)| size > want) {
                    return Err(StoreError::Io {
                        path: tmp.clone(),
                        source: std::io::Error::other("blob larger than announced or allowed"),
                    });
                }
                hasher.update(&buffer[..n]);
                file.write_all(&buffer[..n]).map_err(io_err(&tmp))?;
            }
            file.sync_all().map_err(io_err(&tmp))?;
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            if let Some((want, want_size)) = expected {
                if want != digest || want_size != size {
                    return Err(StoreError::Corrupt {
                        digest: want.to_string(),
                        actual: digest,
                        size,
                    });
                }
            }
            let path = self.blob_path(&digest);
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
            Ok(digest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Reads a blob, checking it against its digest first.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::Missing(digest.to_string()),
            _ => StoreError::Io { path, source: e },
        })?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != digest {
            return Err(StoreError::Corrupt {
                digest: digest.to_string(),
                actual,
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Checks a (possibly large) blob against its digest without keeping it in memory.
    pub fn verify_blob(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let path = self.blob_path(digest);
        let mut file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::Missing(digest.to_string()),
            _ => StoreError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let (actual, size) = sha256_reader(&mut file).map_err(io_err(&path))?;
        if actual != digest {
            return Err(StoreError::Corrupt {
                digest: digest.to_string(),
                actual,
                size,
            });
        }
        Ok(path)
    }

    pub fn read_manifest(&self, digest: &str) -> Result<ImageManifest, StoreError> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: "image manifest",
            source,
        })
    }

    /// The named images, in index order.
    pub fn entries(&self) -> Result<Vec<ImageEntry>, StoreError> {
        Ok(self
            .read_index()?
            .manifests()
            .iter()
            .filter_map(|d| {
                let name = d.annotations().as_ref()?.get(REF_NAME)?;
                Some(ImageEntry {
                    reference: Reference::parse(name).ok()?,
                    descriptor: d.clone(),
                })
            })
            .collect())
    }

    /// The image `text` names: `NAME[:TAG]`, a digest, or a unique prefix of one (12+ hex).
    pub fn resolve(&self, text: &str) -> Result<ImageEntry, StoreError> {
        let entries = self.entries()?;
        if let Ok(reference) = Reference::parse(text) {
            if let Some(entry) = entries.iter().find(|e| e.reference == reference) {
                return Ok(entry.clone());
            }
        }
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches = entries
                .iter()
                .filter(|e| e.digest().trim_start_matches("sha256:").starts_with(hex));
            if let Some(first) = matches.next() {
                if matches.any(|other| other.digest() != first.digest()) {
                    return Err(StoreError::Ambiguous(text.to_string()));
                }
                return Ok(first.clone());
            }
        }
        Err(StoreError::NoSuchImage(text.to_string()))
    }

    fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.dir.join("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: "index.json",
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => empty_index(Vec::new()),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Changes the list of named images under the store's lock, writing it atomically.
    pub fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.lock()?;
        let mut manifests = self.read_index()?.manifests().clone();
        let result = change(&mut manifests)?;
        let index = empty_index(manifests)?;
        let bytes = serde_json::to_vec_pretty(&index).map_err(|source| StoreError::Json {
            what: "index.json",
            source,
        })?;
        write_atomic(&self.dir.join("index.json"), &bytes)?;
        Ok(result)
    }

    /// The store's lock, held while the index changes or blobs are collected.
    pub fn lock(&self) -> Result<Flock<File>, StoreError> {
        let path = self.dir.join("store.lock");
        crate::state::lock_file(&path, FlockArg::LockExclusive).map_err(io_err(&path))
    }

    /// Deletes blobs no named image refers to (call with the lock held).
    pub fn collect_garbage(&self, keep: &[String]) -> Result<usize, StoreError> {
        let dir = self.dir.join("blobs/sha256");
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.iter().any(|d| d.trim_start_matches("sha256:") == name) {
                let _ = std::fs::remove_file(entry.path());
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn empty_index(manifests: Vec<Descriptor>) -> Result<ImageIndex, StoreError> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|source| StoreError::Spec {
            what: "image index",
            source,
        })
}

/// Annotations for an index entry.
pub fn entry_annotations(
    reference: &Reference,
    kind: &str,
    module_digest: Option<&str>,
    created: &str,
) -> HashMap<String, String> {
    let mut annotations = HashMap::from([
        (REF_NAME.to_string(), reference.to_string()),
        (KIND.to_string(), kind.to_string()),
        (CREATED.to_string(), created.to_string()),
    ]);
    if let Some(digest) = module_digest {
        annotations.insert(MODULE_DIGEST.to_string(), digest.to_string());
    }
    annotations
}

/// Writes a file so that readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("{}.tmp", unique()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// The sha256 digest (`sha256:<hex>`) and length of everything `reader` yields.
pub fn sha256_reader(reader: &mut dyn Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// A string unique to this moment and process, for temporary names.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// Now, in RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        (dir, store)
    }

    #[test]
    fn blobs_are_content_addressed_and_verified() {
        let (_dir, store) = store();
        let digest = store.put_blob(b"hello").unwrap();
        assert_eq!(
            digest,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
        std::fs::write(store.blob_path(&digest), b"tampered").unwrap();
        assert!(matches!(
            store.read_blob(&digest),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.verify_blob(&digest),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_blob_that_does_not_match_never_appears() {
        let (_dir, store) = store();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = store.put_blob_from(&mut &b"data"[..], Some((&wrong, 4)), u64::MAX);
        assert!(matches!(err, Err(StoreError::Corrupt { .. })));
        assert!(!store.blob_path(&wrong).exists());
        let too_big = store.put_blob_from(&mut &b"data"[..], None, 3);
        assert!(too_big.is_err());
        let names: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")),
            "{names:?}"
        );
    }

    #[test]
    fn names_resolve_by_reference_and_digest_prefix() {
        let (_dir, store) = store();
        let reference = Reference::parse("app:v1").unwrap();
        let digest = store.put_blob(b"{}").unwrap();
        let descriptor = oci_spec::image::DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(digest.parse::<oci_spec::image::Digest>().unwrap())
            .size(2u64)
            .annotations(entry_annotations(
                &reference,
                "wasm",
                None,
                "2026-01-01T00:00:00Z",
            ))
            .build()
            .unwrap();
        store
            .update_index(|m| {
                m.push(descriptor);
                Ok(())
            })
            .unwrap();
        assert_eq!(store.resolve("app:v1").unwrap().reference, reference);
        assert_eq!(store.resolve(&digest[7..19]).unwrap().reference, reference);
        assert!(matches!(
            store.resolve("app"),
            Err(StoreError::NoSuchImage(_))
        ));
    }
}
