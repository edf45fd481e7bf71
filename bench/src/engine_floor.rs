//! The engine's floor: the precompiled hello instantiated and run in this process through the
//! engine library, with no process, namespace or cgroup around it.

use anyhow::{anyhow, bail, Context, Result};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wrun::wasm::exec::{self, Outcome};
use wrun::wasm::source::ModuleFile;
use wrun::wasm::{self, Program};

pub struct EngineFloor {
    engine: wasmtime::Engine,
    program: Program,
    path: PathBuf,
}

impl EngineFloor {
    /// Loads the module once from the AOT cache (the cost wrun pays per process is measured
    /// by the wrun rows).
    pub fn load(module: &Path, cache_dir: &Path) -> Result<EngineFloor> {
        let engine = wasm::engine::new_engine(false, &Default::default())
            .map_err(|e| anyhow!("failed to build the engine: {e:#}"))?;
        let file = std::fs::File::open(module)
            .with_context(|| format!("failed to open {}", module.display()))?;
        let module_file = ModuleFile::new(file, module)?;
        let cache = wasm::cache::AotCache::new(cache_dir.to_path_buf());
        let (program, _origin) = wasm::load(&engine, &module_file, &cache, None)?;
        Ok(EngineFloor {
            engine,
            program,
            path: module.to_path_buf(),
        })
    }

    /// One instantiate-and-run, its stdout sent to /dev/null.
    pub fn run_once(&self) -> Result<Duration> {
        let _quiet = StdoutToNull::new()?;
        let started = Instant::now();
        let args = vec!["hello.wasm".to_string()];
        let host = exec::prepare_host(&self.engine, self.program.kind(), &args, &[])?;
        let outcome = exec::run(&self.engine, &self.program, &self.path, host, None)?;
        let elapsed = started.elapsed();
        match outcome {
            Outcome::Exited(0) => Ok(elapsed),
            Outcome::Exited(code) => bail!("hello exited with {code}"),
            Outcome::Trapped(e) => bail!("hello trapped: {e:#}"),
            Outcome::Interrupted => bail!("hello was interrupted"),
        }
    }
}

/// Points fd 1 at /dev/null until dropped (the guest inherits the process's stdout).
struct StdoutToNull {
    saved: std::os::fd::OwnedFd,
}

impl StdoutToNull {
    fn new() -> Result<StdoutToNull> {
        use std::io::Write;
        std::io::stdout().flush()?;
        let saved = nix::unistd::dup(std::io::stdout())?;
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        // SAFETY: both descriptors are open; fd 1 is replaced atomically.
        if unsafe { libc::dup2(null.as_raw_fd(), 1) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(StdoutToNull { saved })
    }
}

impl Drop for StdoutToNull {
    fn drop(&mut self) {
        // SAFETY: `saved` is a descriptor this guard owns.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 1) };
    }
}
