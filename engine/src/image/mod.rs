//! Images: the OCI image store, Wasm image packing, import and export of OCI layouts, and
//! what it takes to run an image.

pub mod layout;
pub mod pack;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;
pub mod wasm_config;

use oci_spec::image::{ImageConfiguration, MediaType};
use std::path::{Path, PathBuf};
use store::{ImageEntry, ImageStore, StoreError};

/// The store of a state root.
pub fn open_store(state: &crate::state::StateRoot) -> Result<ImageStore, StoreError> {
    ImageStore::open(state.path().join("images"))
}

/// Where a native image's layers are unpacked, one directory per manifest.
pub fn rootfs_dir(store: &ImageStore, manifest_digest: &str) -> PathBuf {
    let hex = manifest_digest.trim_start_matches("sha256:");
    store.dir().join("rootfs").join(hex)
}

/// What running an image needs.
#[derive(Debug, Clone)]
pub enum Runnable {
    Wasm {
        /// The module (a verified blob of the store).
        module: PathBuf,
        /// Its digest: the run refuses a module that no longer matches.
        module_digest: String,
        /// argv[0]: the module's path inside the image.
        argv0: String,
        /// The entrypoint's own arguments, then the default command (`CMD`).
        entry_args: Vec<String>,
        default_args: Vec<String>,
        env: Vec<String>,
    },
    Native {
        rootfs: PathBuf,
        config: Option<oci_spec::image::Config>,
    },
}

/// The kind an entry was imported as (`wasm` or `native`).
pub fn kind_of(entry: &ImageEntry) -> &str {
    entry.annotation(store::KIND).unwrap_or("wasm")
}

/// How to run `entry`.
pub fn runnable(store: &ImageStore, entry: &ImageEntry) -> Result<Runnable, StoreError> {
    let manifest = store.read_manifest(&entry.digest())?;
    let config_type = manifest.config().media_type().to_string();
    let config: Option<ImageConfiguration> = if config_type == wasm_config::WASM_CONFIG {
        None
    } else {
        let bytes = store.read_blob(manifest.config().digest().as_ref())?;
        Some(
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: "image config",
                source,
            })?,
        )
    };
    let run_config = config.as_ref().and_then(|c| c.config().clone());
    if kind_of(entry) == "native" {
        return Ok(Runnable::Native {
            rootfs: rootfs_dir(store, &entry.digest()),
            config: run_config,
        });
    }
    let module_digest = entry
        .annotation(store::MODULE_DIGEST)
        .ok_or_else(|| StoreError::Missing(format!("the module of {}", entry.reference)))?
        .to_string();
    let entrypoint = run_config
        .as_ref()
        .and_then(|c| c.entrypoint().clone())
        .unwrap_or_else(|| vec![pack::MODULE_PATH.to_string()]);
    let (argv0, entry_args) = match entrypoint.split_first() {
        Some((first, rest)) => (first.clone(), rest.to_vec()),
        None => (pack::MODULE_PATH.to_string(), Vec::new()),
    };
    Ok(Runnable::Wasm {
        module: store.blob_path(&module_digest),
        module_digest,
        argv0,
        entry_args,
        default_args: run_config
            .as_ref()
            .and_then(|c| c.cmd().clone())
            .unwrap_or_default(),
        env: run_config
            .as_ref()
            .and_then(|c| c.env().clone())
            .unwrap_or_default(),
    })
}

/// One line of `wrun images`.
#[derive(Debug, Clone)]
pub struct Summary {
    pub entry: ImageEntry,
    pub kind: String,
    /// Bytes of the manifest, config and layers.
    pub size: u64,
    pub created: String,
}

/// Every named image with its size.
pub fn summaries(store: &ImageStore) -> Result<Vec<Summary>, StoreError> {
    store
        .entries()?
        .into_iter()
        .map(|entry| {
            let manifest = store.read_manifest(&entry.digest())?;
            let size = entry.descriptor.size()
                + manifest.config().size()
                + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
            Ok(Summary {
                kind: kind_of(&entry).to_string(),
                created: entry.annotation(store::CREATED).unwrap_or("").to_string(),
                size,
                entry,
            })
        })
        .collect()
}

/// Removes the name `entry`, then every blob, module and root file system no remaining name
/// needs. Returns how many blobs went.
pub fn remove(store: &ImageStore, entry: &ImageEntry) -> Result<usize, StoreError> {
    let name = entry.reference.to_string();
    store.update_index(|manifests| {
        manifests.retain(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(store::REF_NAME))
                != Some(&name)
        });
        Ok(())
    })?;
    let _lock = store.lock()?;
    let mut keep = Vec::new();
    let mut keep_rootfs = Vec::new();
    for remaining in store.entries()? {
        let digest = remaining.digest();
        if let Ok(manifest) = store.read_manifest(&digest) {
            keep.push(manifest.config().digest().to_string());
            keep.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
        }
        if let Some(module) = remaining.annotation(store::MODULE_DIGEST) {
            keep.push(module.to_string());
        }
        keep_rootfs.push(digest.trim_start_matches("sha256:").to_string());
        keep.push(digest);
    }
    let removed = store.collect_garbage(&keep)?;
    remove_unused_rootfs(store.dir(), &keep_rootfs);
    Ok(removed)
}

fn remove_unused_rootfs(dir: &Path, keep: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir.join("rootfs")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a media type is a Wasm image's config.
pub fn is_wasm_config(media_type: &MediaType) -> bool {
    media_type.to_string() == wasm_config::WASM_CONFIG
}
