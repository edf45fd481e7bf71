//! `wrun image pack`: a Wasm module or component as an OCI image, in either of the two forms
//! containerd's Wasm shims understand.

use super::reference::Reference;
use super::store::{entry_annotations, now_rfc3339, ImageEntry, ImageStore, StoreError};
use super::wasm_config::{WasmArtifactConfig, WASM_CONFIG, WASM_LAYER};
use crate::wasm::source::{Kind, Source};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use std::path::Path;

/// The two forms of a Wasm image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackFormat {
    /// A regular OCI image: a config with architecture `wasm` and os `wasip1`/`wasip2`, one
    /// tar layer holding `/app.wasm`, the entrypoint set to it. The default: `ctr` and every
    /// image tool handle it, and it carries an environment and arguments.
    #[default]
    Image,
    /// The CNCF Wasm OCI artifact: config `application/vnd.wasm.config.v0+json`, the module
    /// itself as an `application/wasm` layer.
    Artifact,
}

/// What goes into the image besides the module.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    pub format: PackFormat,
    /// The entrypoint; `["/app.wasm"]` by default (image form only).
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments (`CMD`; image form only).
    pub args: Vec<String>,
    /// `NAME=VALUE` pairs (image form only).
    pub env: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Source(#[from] crate::wasm::source::SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--entrypoint, --env and --arg need the image form (--format image); the Wasm artifact has no place for them")]
    ArtifactOptions,
    #[error("failed to build the image {what}")]
    Spec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("failed to build the image layer")]
    Layer(#[source] std::io::Error),
}

/// The path of the module inside the image form's layer.
pub const MODULE_PATH: &str = "/app.wasm";

/// Stores `value` as a JSON blob: its bytes and their digest.
fn put_json(
    store: &ImageStore,
    value: &impl serde::Serialize,
    what: &'static str,
) -> Result<(Vec<u8>, String), PackError> {
    let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Json { what, source })?;
    let digest = store.put_blob(&bytes)?;
    Ok((bytes, digest))
}

fn spec_err(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> PackError {
    move |source| PackError::Spec { what, source }
}

/// Packs the module at `module` as `reference`; the image replaces any of the same name.
/// Returns the new entry and the module's bytes (as stored, WAT translated).
pub fn pack(
    store: &ImageStore,
    module: &Path,
    reference: &Reference,
    options: &PackOptions,
) -> Result<(ImageEntry, Vec<u8>), PackError> {
    let file =
        std::fs::File::open(module).map_err(|source| crate::wasm::source::SourceError::Read {
            path: module.to_path_buf(),
            source,
        })?;
    let source = crate::wasm::source::ModuleFile::new(file, module)?.read()?;
    let (binary, kind) = Source::binary(&source)?;
    let binary = binary.into_owned();
    let os = match kind {
        Kind::Module => "wasip1",
        Kind::Component => "wasip2",
    };
    let created = now_rfc3339();
    let module_digest = store.put_blob(&binary)?;
    let (config, layer) = match options.format {
        PackFormat::Artifact => {
            if options.entrypoint.is_some() || !options.args.is_empty() || !options.env.is_empty() {
                return Err(PackError::ArtifactOptions);
            }
            artifact_parts(store, &binary, &module_digest, os, &created)?
        }
        PackFormat::Image => image_parts(store, &binary, os, &created, options)?,
    };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .build()
        .map_err(spec_err("manifest"))?;
    let (manifest_bytes, manifest_digest) = put_json(store, &manifest, "image manifest")?;
    let platform = PlatformBuilder::default()
        .architecture(Arch::Wasm)
        .os(Os::Other(os.to_string()))
        .build()
        .map_err(spec_err("platform"))?;
    let descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(parse(&manifest_digest)?)
        .size(manifest_bytes.len() as u64)
        .platform(platform)
        .annotations(entry_annotations(
            reference,
            "wasm",
            Some(&module_digest),
            &created,
        ))
        .build()
        .map_err(spec_err("index entry"))?;
    let entry = ImageEntry {
        reference: reference.clone(),
        descriptor: descriptor.clone(),
    };
    store.update_index(|manifests| {
        manifests.retain(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(super::store::REF_NAME))
                != Some(&reference.to_string())
        });
        manifests.push(descriptor);
        Ok(())
    })?;
    Ok((entry, binary))
}

fn parse(digest: &str) -> Result<Digest, PackError> {
    digest.parse::<Digest>().map_err(spec_err("digest"))
}

fn descriptor(media_type: MediaType, digest: &str, size: usize) -> Result<Descriptor, PackError> {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(parse(digest)?)
        .size(size as u64)
        .build()
        .map_err(spec_err("descriptor"))
}

/// The CNCF artifact: the module is the layer.
fn artifact_parts(
    store: &ImageStore,
    binary: &[u8],
    module_digest: &str,
    os: &str,
    created: &str,
) -> Result<(Descriptor, Descriptor), PackError> {
    let config = WasmArtifactConfig {
        created: Some(created.to_string()),
        author: None,
        architecture: "wasm".into(),
        os: os.into(),
        layer_digests: vec![module_digest.to_string()],
    };
    let (config_bytes, config_digest) = put_json(store, &config, "wasm config")?;
    Ok((
        descriptor(
            MediaType::Other(WASM_CONFIG.into()),
            &config_digest,
            config_bytes.len(),
        )?,
        descriptor(
            MediaType::Other(WASM_LAYER.into()),
            module_digest,
            binary.len(),
        )?,
    ))
}

/// The image form: a tar layer holding `/app.wasm`, and a regular image config.
fn image_parts(
    store: &ImageStore,
    binary: &[u8],
    os: &str,
    created: &str,
    options: &PackOptions,
) -> Result<(Descriptor, Descriptor), PackError> {
    let layer = module_tar(binary).map_err(PackError::Layer)?;
    let layer_digest = store.put_blob(&layer)?;
    let entrypoint = options
        .entrypoint
        .clone()
        .unwrap_or_else(|| vec![MODULE_PATH.to_string()]);
    let mut run_config = ConfigBuilder::default().entrypoint(entrypoint);
    if !options.args.is_empty() {
        run_config = run_config.cmd(options.args.clone());
    }
    if !options.env.is_empty() {
        run_config = run_config.env(options.env.clone());
    }
    let config = ImageConfigurationBuilder::default()
        .created(created.to_string())
        .architecture(Arch::Wasm)
        .os(Os::Other(os.to_string()))
        .config(run_config.build().map_err(spec_err("run config"))?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer_digest.clone()])
                .build()
                .map_err(spec_err("rootfs"))?,
        )
        .build()
        .map_err(spec_err("config"))?;
    let (config_bytes, config_digest) = put_json(store, &config, "image config")?;
    Ok((
        descriptor(MediaType::ImageConfig, &config_digest, config_bytes.len())?,
        descriptor(MediaType::ImageLayer, &layer_digest, layer.len())?,
    ))
}

/// A reproducible tar holding the module as `app.wasm` (mode 0755, time 0, owner 0).
fn module_tar(binary: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, MODULE_PATH.trim_start_matches('/'), binary)?;
    builder.into_inner()
}
