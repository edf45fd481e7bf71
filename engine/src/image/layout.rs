//! `wrun image import` and `export`: OCI image layouts, as directories or tar archives (what
//! `skopeo copy oci-archive:`, `ctr image export` and `docker save` write, and what
//! `ctr image import` reads).
//!
//! An import touches the store only once everything in it checked out: the archive is staged
//! beside the store, every blob is verified against its digest, modules are extracted and
//! native root file systems unpacked into staging; only then are blobs moved in and names
//! written. A bad archive leaves the store as it was.

use super::reference::Reference;
use super::store::{
    entry_annotations, sha256_reader, unique, ImageEntry, ImageStore, StoreError, REF_NAME,
};
use super::unpack::{self, Budget, UnpackError};
use super::wasm_config::{self, WasmArtifactConfig};
use crate::progress::{CountedReader, Unit, Watcher};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageConfiguration, ImageIndex, ImageIndexBuilder,
    ImageManifest, MediaType,
};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Most bytes an archive or any one blob in it may hold.
pub const ARCHIVE_CAP: u64 = 16 << 30;
/// Most bytes a Wasm module in an image may have.
pub const MODULE_CAP: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid archive entry `{0}`: an OCI layout holds only oci-layout, index.json and blobs/<algorithm>/<digest>")]
    BadEntry(String),
    #[error("`{0}` is not an OCI image layout (no index.json)")]
    NotLayout(PathBuf),
    #[error("invalid {what} {digest}")]
    Json {
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the archive holds no Wasm or linux/amd64 image")]
    NothingToImport,
    #[error("image {0} has no name: give it one with --tag")]
    Unnamed(String),
    #[error("image {digest}: {reason}")]
    Unsupported { digest: String, reason: String },
    #[error("failed to unpack image {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("failed to write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to build the exported {what}")]
    Spec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// One image found in an archive, checked and ready to enter the store.
struct Candidate {
    references: Vec<Reference>,
    manifest: Descriptor,
    blobs: Vec<Descriptor>,
    kind: ImageKind,
    created: String,
}

enum ImageKind {
    /// A Wasm image: its module (bytes verified) and platform os.
    Wasm { module: Vec<u8> },
    /// A linux/amd64 image, its layers in order.
    Native { layers: Vec<Descriptor> },
}

/// Imports every Wasm and linux/amd64 image of the layout at `source` (a directory or a tar
/// file). `tag` names the image when the archive holds exactly one. Returns the new entries.
pub fn import(
    store: &ImageStore,
    source: &Path,
    tag: Option<&Reference>,
    watcher: &dyn Watcher,
) -> Result<Vec<ImageEntry>, LayoutError> {
    let staging = store.dir().join(format!(".import-{}", unique()));
    let result = import_staged(store, source, tag, &staging, watcher);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn import_staged(
    store: &ImageStore,
    source: &Path,
    tag: Option<&Reference>,
    staging: &Path,
    watcher: &dyn Watcher,
) -> Result<Vec<ImageEntry>, LayoutError> {
    std::fs::create_dir_all(staging).map_err(|source| LayoutError::Write {
        path: staging.to_path_buf(),
        source,
    })?;
    let layout = if source.is_dir() {
        source.to_path_buf()
    } else {
        let dir = staging.join("layout");
        extract_archive(source, &dir)?;
        dir
    };
    let index_path = layout.join("index.json");
    let index_bytes =
        std::fs::read(&index_path).map_err(|_| LayoutError::NotLayout(source.into()))?;
    let index: ImageIndex =
        serde_json::from_slice(&index_bytes).map_err(|e| LayoutError::Json {
            what: "index.json",
            digest: source.display().to_string(),
            source: e,
        })?;
    let reader = LayoutReader { dir: layout };
    let mut candidates = Vec::new();
    for descriptor in index.manifests() {
        reader.collect(descriptor, &names_of(descriptor), &mut candidates, 0)?;
    }
    if candidates.is_empty() {
        return Err(LayoutError::NothingToImport);
    }
    if let Some(tag) = tag {
        if candidates.len() > 1 {
            return Err(LayoutError::Unsupported {
                digest: source.display().to_string(),
                reason: "--tag names one image, but the archive holds several".into(),
            });
        }
        candidates[0].references = vec![tag.clone()];
    }
    for candidate in &candidates {
        if candidate.references.is_empty() {
            return Err(LayoutError::Unnamed(
                candidate.manifest.digest().to_string(),
            ));
        }
    }
    // Native root file systems are unpacked in staging before anything is committed.
    let mut rootfs = Vec::new();
    for candidate in &candidates {
        if let ImageKind::Native { layers } = &candidate.kind {
            let digest = candidate.manifest.digest().to_string();
            let target = super::rootfs_dir(store, &digest);
            if !target.exists() {
                let staged = staging.join(format!("rootfs-{}", rootfs.len()));
                reader.unpack(layers, &staged, &digest, watcher)?;
                rootfs.push((staged, target));
            }
        }
    }
    commit(store, &reader, &candidates, rootfs)
}

/// Moves verified blobs, modules and root file systems into the store, then names them.
fn commit(
    store: &ImageStore,
    reader: &LayoutReader,
    candidates: &[Candidate],
    rootfs: Vec<(PathBuf, PathBuf)>,
) -> Result<Vec<ImageEntry>, LayoutError> {
    let mut seen = BTreeSet::new();
    for candidate in candidates {
        for blob in &candidate.blobs {
            let digest = blob.digest().to_string();
            if seen.insert(digest.clone()) && !store.blob_path(&digest).exists() {
                let path = reader.blob_path(&digest)?;
                let mut file = std::fs::File::open(&path).map_err(|source| LayoutError::Read {
                    path: path.clone(),
                    source,
                })?;
                store.put_blob_from(&mut file, Some((&digest, blob.size())), ARCHIVE_CAP)?;
            }
        }
        if let ImageKind::Wasm { module } = &candidate.kind {
            store.put_blob(module)?;
        }
    }
    for (staged, target) in rootfs {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|source| LayoutError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        if let Err(source) = std::fs::rename(&staged, &target) {
            if !target.exists() {
                return Err(LayoutError::Write {
                    path: target,
                    source,
                });
            }
        }
    }
    let mut entries = Vec::new();
    for candidate in candidates {
        let (kind, module_digest) = match &candidate.kind {
            ImageKind::Wasm { module } => {
                let (digest, _) =
                    sha256_reader(&mut &module[..]).map_err(|source| LayoutError::Read {
                        path: PathBuf::from("module"),
                        source,
                    })?;
                ("wasm", Some(digest))
            }
            ImageKind::Native { .. } => ("native", None),
        };
        for reference in &candidate.references {
            let mut descriptor = candidate.manifest.clone();
            descriptor.set_annotations(Some(entry_annotations(
                reference,
                kind,
                module_digest.as_deref(),
                &candidate.created,
            )));
            entries.push(ImageEntry {
                reference: reference.clone(),
                descriptor,
            });
        }
    }
    store.update_index(|manifests| {
        for entry in &entries {
            let name = entry.reference.to_string();
            manifests
                .retain(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) != Some(&name));
            manifests.push(entry.descriptor.clone());
        }
        Ok(())
    })?;
    Ok(entries)
}

/// The names an index entry gives its image (containerd's full name first).
fn names_of(descriptor: &Descriptor) -> Vec<Reference> {
    let Some(annotations) = descriptor.annotations() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Some(name) = annotations.get("io.containerd.image.name") {
        names.extend(Reference::from_qualified(name).ok());
    }
    if names.is_empty() {
        if let Some(name) = annotations.get(REF_NAME) {
            // In an OCI layout this is often just the tag: only a full reference names.
            if name.contains(':') || name.contains('/') {
                names.extend(Reference::from_qualified(name).ok());
            }
        }
    }
    names
}

/// Reads blobs of a staged layout, verifying each against its digest.
struct LayoutReader {
    dir: PathBuf,
}

impl LayoutReader {
    fn blob_path(&self, digest: &str) -> Result<PathBuf, LayoutError> {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        if algorithm != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LayoutError::Unsupported {
                digest: digest.to_string(),
                reason: "only sha256 digests are supported".into(),
            });
        }
        Ok(self.dir.join("blobs").join(algorithm).join(hex))
    }

    /// Verifies the blob behind `descriptor` (digest and size) and returns its path.
    fn verified(&self, descriptor: &Descriptor) -> Result<PathBuf, LayoutError> {
        let digest = descriptor.digest().to_string();
        let path = self.blob_path(&digest)?;
        let mut file =
            std::fs::File::open(&path).map_err(|_| StoreError::Missing(digest.clone()))?;
        let (actual, size) = sha256_reader(&mut file).map_err(|source| LayoutError::Read {
            path: path.clone(),
            source,
        })?;
        if actual != digest || size != descriptor.size() {
            return Err(StoreError::Corrupt {
                digest,
                actual,
                size,
            }
            .into());
        }
        Ok(path)
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        descriptor: &Descriptor,
        what: &'static str,
    ) -> Result<T, LayoutError> {
        let path = self.verified(descriptor)?;
        let bytes = std::fs::read(&path).map_err(|source| LayoutError::Read { path, source })?;
        serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
            what,
            digest: descriptor.digest().to_string(),
            source,
        })
    }

    /// Walks an index entry: nested indexes are followed, images checked and kept.
    fn collect(
        &self,
        descriptor: &Descriptor,
        names: &[Reference],
        out: &mut Vec<Candidate>,
        depth: usize,
    ) -> Result<(), LayoutError> {
        let media_type = descriptor.media_type().to_string();
        if depth > 4 {
            return Err(LayoutError::Unsupported {
                digest: descriptor.digest().to_string(),
                reason: "indexes nested too deep".into(),
            });
        }
        if media_type == MediaType::ImageIndex.to_string()
            || media_type == wasm_config::DOCKER_MANIFEST_LIST
        {
            let index: ImageIndex = self.json(descriptor, "image index")?;
            for child in index.manifests() {
                let mut child_names = names_of(child);
                if child_names.is_empty() {
                    child_names = names.to_vec();
                }
                self.collect(child, &child_names, out, depth + 1)?;
            }
            return Ok(());
        }
        if media_type != MediaType::ImageManifest.to_string()
            && media_type != wasm_config::DOCKER_MANIFEST
        {
            return Ok(());
        }
        let manifest: ImageManifest = self.json(descriptor, "image manifest")?;
        if let Some(candidate) = self.candidate(descriptor, &manifest, names)? {
            out.push(candidate);
        }
        Ok(())
    }

    /// A checked image, or `None` for a platform wrun does not run.
    fn candidate(
        &self,
        descriptor: &Descriptor,
        manifest: &ImageManifest,
        names: &[Reference],
    ) -> Result<Option<Candidate>, LayoutError> {
        let digest = descriptor.digest().to_string();
        let config_type = manifest.config().media_type().to_string();
        let mut blobs = vec![descriptor.clone(), manifest.config().clone()];
        blobs.extend(manifest.layers().iter().cloned());
        for blob in &blobs {
            self.verified(blob)?;
        }
        let unsupported = |reason: &str| LayoutError::Unsupported {
            digest: digest.clone(),
            reason: reason.to_string(),
        };
        let (kind, created) = if config_type == wasm_config::WASM_CONFIG {
            let config: WasmArtifactConfig = self.json(manifest.config(), "wasm config")?;
            let layer = manifest
                .layers()
                .iter()
                .find(|l| wasm_config::is_wasm_layer(l.media_type().as_ref()))
                .ok_or_else(|| unsupported("a Wasm artifact without an application/wasm layer"))?;
            let module = self.read_module_blob(layer)?;
            (
                ImageKind::Wasm { module },
                config.created.unwrap_or_default(),
            )
        } else {
            let config: ImageConfiguration = self.json(manifest.config(), "image config")?;
            let created = config.created().clone().unwrap_or_default();
            let arch = config.architecture().to_string();
            let os = config.os().to_string();
            let wasm_layer = manifest
                .layers()
                .iter()
                .find(|l| wasm_config::is_wasm_layer(l.media_type().as_ref()));
            if let Some(layer) = wasm_layer {
                let module = self.read_module_blob(layer)?;
                (ImageKind::Wasm { module }, created)
            } else if arch == "wasm" {
                let entrypoint = config
                    .config()
                    .as_ref()
                    .and_then(|c| c.entrypoint().clone())
                    .and_then(|e| e.first().cloned())
                    .unwrap_or_else(|| super::pack::MODULE_PATH.to_string());
                let module = self.module_from_layers(manifest.layers(), &entrypoint, &digest)?;
                (ImageKind::Wasm { module }, created)
            } else if arch == "amd64" && os == "linux" {
                (
                    ImageKind::Native {
                        layers: manifest.layers().clone(),
                    },
                    created,
                )
            } else {
                tracing::debug!(digest, arch, os, "skipping an image of another platform");
                return Ok(None);
            }
        };
        Ok(Some(Candidate {
            references: names.to_vec(),
            manifest: descriptor.clone(),
            blobs,
            kind,
            created,
        }))
    }

    fn read_module_blob(&self, layer: &Descriptor) -> Result<Vec<u8>, LayoutError> {
        if layer.size() > MODULE_CAP {
            return Err(LayoutError::Unsupported {
                digest: layer.digest().to_string(),
                reason: format!("a module larger than {MODULE_CAP} bytes"),
            });
        }
        let path = self.verified(layer)?;
        std::fs::read(&path).map_err(|source| LayoutError::Read { path, source })
    }

    /// The module at `entrypoint` in the image's tar layers (the last layer holding it wins).
    fn module_from_layers(
        &self,
        layers: &[Descriptor],
        entrypoint: &str,
        digest: &str,
    ) -> Result<Vec<u8>, LayoutError> {
        let mut found = None;
        for layer in layers {
            let path = self.verified(layer)?;
            let file = std::fs::File::open(&path).map_err(|source| LayoutError::Read {
                path: path.clone(),
                source,
            })?;
            let reader = decompressed(file).map_err(|source| LayoutError::Read { path, source })?;
            let module =
                unpack::read_file_from_layer(reader, entrypoint, MODULE_CAP).map_err(|source| {
                    LayoutError::Unpack {
                        digest: digest.to_string(),
                        source,
                    }
                })?;
            found = module.or(found);
        }
        found.ok_or_else(|| LayoutError::Unsupported {
            digest: digest.to_string(),
            reason: format!("its entrypoint `{entrypoint}` is not in its layers"),
        })
    }

    /// Applies `layers` in order into a fresh directory `target`.
    fn unpack(
        &self,
        layers: &[Descriptor],
        target: &Path,
        digest: &str,
        watcher: &dyn Watcher,
    ) -> Result<(), LayoutError> {
        // The container's `/`: 0755 as in Docker's images, whatever wrun's umask.
        std::fs::create_dir_all(target)
            .and_then(|()| {
                std::fs::set_permissions(
                    target,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
            })
            .map_err(|source| LayoutError::Write {
                path: target.to_path_buf(),
                source,
            })?;
        let dir = cap_std::fs::Dir::open_ambient_dir(target, cap_std::ambient_authority())
            .map_err(|source| LayoutError::Write {
                path: target.to_path_buf(),
                source,
            })?;
        let mut budget = Budget::new(unpack::DEFAULT_UNPACKED_CAP);
        let mut devices = 0;
        for layer in layers {
            let path = self.verified(layer)?;
            let file =
                std::fs::File::open(&path).map_err(|source| LayoutError::Read { path, source })?;
            let short = layer.digest().to_string();
            let short = short.trim_start_matches("sha256:");
            let counter = watcher.start(&short[..short.len().min(12)], layer.size(), Unit::Bytes);
            let file = CountedReader {
                inner: file,
                counter,
            };
            let skipped = unpack::apply_layer(&dir, file, &mut budget).map_err(|source| {
                LayoutError::Unpack {
                    digest: digest.to_string(),
                    source,
                }
            })?;
            devices += skipped.devices;
        }
        if devices > 0 {
            tracing::debug!(digest, devices, "device nodes in the image were skipped");
        }
        Ok(())
    }
}

/// A layer's bytes, gunzipped when they are gzip.
fn decompressed(file: std::fs::File) -> std::io::Result<Box<dyn std::io::Read>> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(file);
    let gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

/// Extracts an OCI layout archive into `dir`, accepting only its three kinds of entries.
fn extract_archive(archive: &Path, dir: &Path) -> Result<(), LayoutError> {
    let file = std::fs::File::open(archive).map_err(|source| LayoutError::Read {
        path: archive.to_path_buf(),
        source,
    })?;
    let read_err = |source| LayoutError::Read {
        path: archive.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir.join("blobs")).map_err(read_err)?;
    let mut total = 0u64;
    let mut tar = tar::Archive::new(decompressed(file).map_err(read_err)?);
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let path = entry
            .path()
            .map_err(read_err)?
            .to_string_lossy()
            .into_owned();
        let path = path.trim_start_matches("./").to_string();
        let kind = entry.header().entry_type();
        if kind.is_dir() || path.is_empty() {
            continue;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let allowed = match parts.as_slice() {
            ["oci-layout"] | ["index.json"] | ["manifest.json"] | ["repositories"] => true,
            ["blobs", algorithm, hex] => {
                algorithm.bytes().all(|b| b.is_ascii_alphanumeric())
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
            }
            _ => false,
        };
        if !allowed || !kind.is_file() {
            return Err(LayoutError::BadEntry(path));
        }
        total += entry.header().size().unwrap_or(0);
        if total > ARCHIVE_CAP {
            return Err(LayoutError::Unsupported {
                digest: archive.display().to_string(),
                reason: format!("an archive larger than {ARCHIVE_CAP} bytes"),
            });
        }
        let target = dir.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(read_err)?;
        }
        let mut out = std::fs::File::create(&target).map_err(read_err)?;
        std::io::copy(&mut entry, &mut out).map_err(read_err)?;
    }
    Ok(())
}

/// Writes `entry` as an OCI layout tar at `out` (atomically), for `ctr image import`.
pub fn export(store: &ImageStore, entry: &ImageEntry, out: &Path) -> Result<(), LayoutError> {
    let digest = entry.digest();
    let manifest = store.read_manifest(&digest)?;
    let mut annotations = HashMap::from([
        (
            "io.containerd.image.name".to_string(),
            entry.reference.qualified(),
        ),
        (REF_NAME.to_string(), entry.reference.tag.clone()),
    ]);
    if let Some(created) = entry.annotation(super::store::CREATED) {
        annotations.insert(super::store::CREATED.to_string(), created.to_string());
    }
    let mut descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(entry.descriptor.digest().clone())
        .size(entry.descriptor.size())
        .annotations(annotations)
        .build()
        .map_err(|source| LayoutError::Spec {
            what: "index entry",
            source,
        })?;
    descriptor.set_platform(entry.descriptor.platform().clone());
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()
        .map_err(|source| LayoutError::Spec {
            what: "index",
            source,
        })?;
    let index_bytes = serde_json::to_vec(&index).map_err(|source| LayoutError::Json {
        what: "index.json",
        digest: digest.clone(),
        source,
    })?;
    let mut blobs = vec![digest.clone(), manifest.config().digest().to_string()];
    blobs.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
    let tmp = out.with_extension(format!("{}.tmp", unique()));
    let write_err = |source| LayoutError::Write {
        path: out.to_path_buf(),
        source,
    };
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(write_err)?;
        // Outside the state root: the caller's umask, not wrun's own.
        let mode = 0o666 & !crate::state::caller_umask().bits();
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(write_err)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(write_err)?;
        append(&mut tar, "index.json", &index_bytes).map_err(write_err)?;
        for blob in &blobs {
            let path = store.verify_blob(blob)?;
            let hex = blob.trim_start_matches("sha256:");
            tar.append_path_with_name(&path, format!("blobs/sha256/{hex}"))
                .map_err(write_err)?;
        }
        let writer = tar.into_inner().map_err(write_err)?;
        writer
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?
            .sync_all()
            .map_err(write_err)?;
        std::fs::rename(&tmp, out).map_err(write_err)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, bytes)
}
