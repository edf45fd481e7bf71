//! `wrun compile`: fills the AOT cache ahead of time.

use super::Failure;
use anyhow::Context;
use std::path::PathBuf;
use wrun::config::EngineSettings;
use wrun::state::StateRoot;
use wrun::wasm::{self, cache::AotCache, source::ModuleFile, Origin};

/// Compile a module into the AOT cache so its first run starts warm
#[derive(clap::Args, Debug)]
pub struct CompileCommand {
    /// The module: a wasm binary, a component, or WAT text
    module: PathBuf,
}

impl CompileCommand {
    pub fn execute(self, state: &StateRoot, settings: &EngineSettings) -> Result<(), Failure> {
        state
            .ensure()
            .with_context(|| {
                format!(
                    "failed to prepare the state root `{}`",
                    state.path().display()
                )
            })
            .map_err(Failure::runtime)?;
        let file = std::fs::File::open(&self.module).map_err(|e| Failure {
            code: if e.kind() == std::io::ErrorKind::NotFound {
                wrun::exit::NOT_FOUND
            } else {
                wrun::exit::CANNOT_EXECUTE
            },
            error: anyhow::Error::new(e)
                .context(format!("failed to open module `{}`", self.module.display())),
        })?;
        let cannot_execute = |e: anyhow::Error| Failure {
            error: e,
            code: wrun::exit::CANNOT_EXECUTE,
        };
        let cache = AotCache::new(state.cache_dir());
        // A run's background compiler may be making this very code: it is then found cached.
        wrun::sandbox::precompile::wait_for_background(&cache, &file, settings);
        let module = ModuleFile::new(file, &self.module).map_err(|e| cannot_execute(e.into()))?;
        let watcher = wrun::progress::on_terminal();
        let name = format!("compiling {}", file_name(&self.module));
        let engine =
            wasm::engine::compiling_engine(settings, &module, &name, &*watcher).map_err(|e| {
                Failure::runtime(anyhow::Error::from(e).context("failed to create the wasm engine"))
            })?;
        let (_, origin) =
            wasm::load(&engine, &module, &cache, None).map_err(|e| cannot_execute(e.into()))?;
        match origin {
            Origin::Cached(path) | Origin::Compiled(Some(path)) => {
                wrun::out_line!("{}", path.display());
                Ok(())
            }
            Origin::Compiled(None) => Err(Failure::runtime(anyhow::anyhow!(
                "compiled `{}` but could not store it in the cache `{}`",
                self.module.display(),
                state.cache_dir().display()
            ))),
        }
    }
}

/// A path's last part, for a bar's label.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}
