//! The image commands: `image pack|import|export|ls|rm`, with `images` and `rmi` as Docker's
//! shorter names.

use super::format::{self, text_fields};
use super::progress::Progress;
use super::time::{ago, docker_time, size};
use super::Failure;
use std::path::{Path, PathBuf};
use wrun::config::EngineSettings;
use wrun::container::record::Containers;
use wrun::image::pack::{PackFormat, PackOptions};
use wrun::image::reference::Reference;
use wrun::image::store::{ImageEntry, ImageStore};
use wrun::image::{self, Runnable};
use wrun::state::StateRoot;

/// Manage images
#[derive(clap::Args, Debug)]
pub struct ImageCommand {
    #[command(subcommand)]
    command: ImageSubcommand,
}

#[derive(clap::Subcommand, Debug)]
enum ImageSubcommand {
    Pack(PackCommand),
    Import(ImportCommand),
    Export(ExportCommand),
    #[command(alias = "list")]
    Ls(LsCommand),
    Rm(RmiCommand),
    /// Remove images no container was made from (-a), or blobs no image refers to
    Prune(super::prune::PruneAll),
}

impl ImageCommand {
    pub fn execute(self, state: &StateRoot, engine: &EngineSettings) -> Result<(), Failure> {
        match self.command {
            ImageSubcommand::Pack(cmd) => cmd.execute(state, engine),
            ImageSubcommand::Import(cmd) => cmd.execute(state, engine),
            ImageSubcommand::Export(cmd) => cmd.execute(state),
            ImageSubcommand::Ls(cmd) => cmd.execute(state),
            ImageSubcommand::Rm(cmd) => cmd.execute(state),
            ImageSubcommand::Prune(prune) => super::prune::image_prune(state, prune),
        }
    }
}

fn store(state: &StateRoot) -> Result<ImageStore, Failure> {
    image::open_store(state).map_err(|e| Failure::runtime(e.into()))
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    /// A regular OCI image: config architecture wasm, os wasip1/wasip2, a tar layer with /app.wasm
    Image,
    /// The CNCF Wasm OCI artifact: config application/vnd.wasm.config.v0+json, the module as an application/wasm layer
    Artifact,
}

/// Build a Wasm image from a module or component (and precompile it)
#[derive(clap::Args, Debug)]
pub struct PackCommand {
    /// Name of the image, NAME[:TAG] (tag `latest` by default)
    #[arg(short = 't', long = "tag", value_parser = Reference::parse)]
    tag: Reference,
    /// Image form to emit
    #[arg(long, value_enum, default_value = "image")]
    format: Format,
    /// Entrypoint (default /app.wasm); repeat for its arguments (image form only)
    #[arg(long, value_name = "ARG")]
    entrypoint: Vec<String>,
    /// Default argument, the image's CMD (repeatable; image form only)
    #[arg(long = "arg", value_name = "ARG")]
    args: Vec<String>,
    /// Environment variable NAME=VALUE (repeatable; image form only)
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// The module: a wasm binary, a component, or WAT text
    module: PathBuf,
}

impl PackCommand {
    fn execute(self, state: &StateRoot, engine: &EngineSettings) -> Result<(), Failure> {
        for pair in &self.env {
            if !pair.contains('=') {
                return Err(Failure::runtime(anyhow::anyhow!(
                    "invalid --env `{pair}`: an image sets NAME=VALUE"
                )));
            }
        }
        let store = store(state)?;
        let options = PackOptions {
            format: match self.format {
                Format::Image => PackFormat::Image,
                Format::Artifact => PackFormat::Artifact,
            },
            entrypoint: (!self.entrypoint.is_empty()).then(|| self.entrypoint.clone()),
            args: self.args.clone(),
            env: self.env.clone(),
        };
        if !self.module.exists() {
            return Err(Failure {
                code: wrun::exit::NOT_FOUND,
                error: anyhow::anyhow!("module `{}` not found", self.module.display()),
            });
        }
        let (entry, _) =
            image::pack::pack(&store, &self.module, &self.tag, &options).map_err(|e| Failure {
                code: wrun::exit::CANNOT_EXECUTE,
                error: e.into(),
            })?;
        precompile(&store, &entry, state, engine)?;
        wrun::out_line!("{}", entry.digest());
        Ok(())
    }
}

/// Compiles a Wasm image's module into the AOT cache, so its first run starts warm: without
/// interruption checks, for a plain run, and with them, for one with `--timeout` or one
/// serving HTTP.
pub(super) fn precompile(
    store: &ImageStore,
    entry: &ImageEntry,
    state: &StateRoot,
    settings: &EngineSettings,
) -> Result<(), Failure> {
    let Runnable::Wasm {
        module,
        module_digest,
        ..
    } = image::runnable(store, entry).map_err(|e| Failure::runtime(e.into()))?
    else {
        return Ok(());
    };
    let file = std::fs::File::open(&module).map_err(|e| Failure::runtime(e.into()))?;
    let module = wrun::wasm::source::ModuleFile::new(file, &module)
        .map_err(|e| Failure::runtime(e.into()))?;
    state.ensure().map_err(|e| Failure::runtime(e.into()))?;
    let cache = wrun::wasm::cache::AotCache::new(state.cache_dir());
    let interruptible = EngineSettings {
        epoch_interruption: true,
        ..settings.clone()
    };
    let mut variants = vec![settings.clone(), interruptible];
    variants.dedup();
    let watcher = wrun::progress::on_terminal();
    for (index, variant) in variants.iter().enumerate() {
        let name = format!(
            "compiling {} ({}/{})",
            entry.reference,
            index + 1,
            variants.len()
        );
        let engine = wrun::wasm::engine::compiling_engine(variant, &module, &name, &*watcher)
            .map_err(|e| Failure::runtime(e.into()))?;
        wrun::wasm::load(&engine, &module, &cache, Some(&module_digest)).map_err(|e| Failure {
            code: wrun::exit::CANNOT_EXECUTE,
            error: e.into(),
        })?;
    }
    Ok(())
}

/// Import images from an OCI image layout (a tar archive or a directory)
#[derive(clap::Args, Debug)]
pub struct ImportCommand {
    /// Name for the image, when the archive holds one without a name
    #[arg(short = 't', long = "tag", value_parser = Reference::parse)]
    tag: Option<Reference>,
    /// The archive (.tar, optionally gzip) or directory
    source: PathBuf,
}

impl ImportCommand {
    fn execute(self, state: &StateRoot, engine: &EngineSettings) -> Result<(), Failure> {
        let store = store(state)?;
        if !self.source.exists() {
            return Err(Failure {
                code: wrun::exit::NOT_FOUND,
                error: anyhow::anyhow!("`{}` not found", self.source.display()),
            });
        }
        let entries = {
            let watcher = wrun::progress::on_terminal();
            image::layout::import(&store, &self.source, self.tag.as_ref(), &*watcher)
                .map_err(|e| Failure::runtime(e.into()))?
        };
        for entry in &entries {
            precompile(&store, entry, state, engine)?;
            wrun::out_line!("{} {}", entry.reference, entry.digest());
        }
        Ok(())
    }
}

/// Write an image as an OCI image layout tar (which `ctr image import` reads)
#[derive(clap::Args, Debug)]
pub struct ExportCommand {
    /// The archive to write
    #[arg(short, long)]
    output: PathBuf,
    /// Image name or digest
    image: String,
}

impl ExportCommand {
    fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let store = store(state)?;
        let entry = store
            .resolve(&self.image)
            .map_err(|e| Failure::runtime(e.into()))?;
        let _progress = Progress::start(format!("exporting {}", entry.reference));
        image::layout::export(&store, &entry, Path::new(&self.output))
            .map_err(|e| Failure::runtime(e.into()))
    }
}

/// List images
#[derive(clap::Args, Debug)]
pub struct LsCommand {
    /// Only print image IDs
    #[arg(short, long)]
    quiet: bool,
    /// A Go template per image as Docker takes it (`{{.Repository}}:{{.Tag}}`, `table …`,
    /// `json`); fields: ID, Repository, Tag, Digest, Type, CreatedSince, CreatedAt, Size
    #[arg(long)]
    format: Option<String>,
}

/// `images --format`'s fields, Docker's names with their column titles.
const IMAGE_FIELDS: &[(&str, &str)] = &[
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("Type", "TYPE"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
];

/// The default listing: Docker's, with the kind of image (wasm or native).
const IMAGE_TABLE: &str =
    "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Type}}\t{{.Size}}\t{{.CreatedSince}}";

impl LsCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let format = format::Format::parse(self.format.as_deref().unwrap_or(IMAGE_TABLE))?;
        let store = store(state)?;
        let summaries = image::summaries(&store).map_err(|e| Failure::runtime(e.into()))?;
        if self.quiet {
            for s in summaries {
                wrun::out_line!("{}", &s.entry.digest()[7..19]);
            }
            return Ok(());
        }
        let rows: Vec<_> = summaries.iter().map(image_fields).collect();
        wrun::out!("{}", format.render_rows(IMAGE_FIELDS, &rows)?);
        Ok(())
    }
}

fn image_fields(s: &image::Summary) -> serde_json::Map<String, serde_json::Value> {
    let digest = s.entry.digest();
    let fields = [
        ("ID", digest[7..19].to_string()),
        ("Repository", s.entry.reference.name.clone()),
        ("Tag", s.entry.reference.tag.clone()),
        ("Digest", digest.to_string()),
        ("Type", s.kind.clone()),
        ("CreatedSince", ago(&s.created)),
        ("CreatedAt", docker_time(&s.created)),
        ("Size", size(s.size)),
    ];
    text_fields(fields)
}

/// Remove images
#[derive(clap::Args, Debug)]
pub struct RmiCommand {
    /// Remove even if containers were made from it
    #[arg(short, long)]
    force: bool,
    /// Image names or digests
    #[arg(required = true)]
    images: Vec<String>,
}

impl RmiCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let store = store(state)?;
        let containers = Containers::open(state).map_err(|e| Failure::runtime(e.into()))?;
        for name in &self.images {
            let entry = store
                .resolve(name)
                .map_err(|e| Failure::runtime(e.into()))?;
            let users: Vec<String> = containers
                .list()
                .into_iter()
                .filter(|c| {
                    c.config
                        .image
                        .as_ref()
                        .is_some_and(|i| i.digest == entry.digest())
                })
                .map(|c| c.config.name)
                .collect();
            if !users.is_empty() && !self.force {
                return Err(Failure::runtime(anyhow::anyhow!(
                    "image {} is used by container{} {}: remove {} first, or use -f",
                    entry.reference,
                    if users.len() > 1 { "s" } else { "" },
                    users.join(", "),
                    if users.len() > 1 { "them" } else { "it" }
                )));
            }
            image::remove(&store, &entry).map_err(|e| Failure::runtime(e.into()))?;
            wrun::out_line!("Untagged: {}", entry.reference);
        }
        Ok(())
    }
}
