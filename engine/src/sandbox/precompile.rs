//! A cold module is compiled before its sandbox exists, by a process of wrun's own outside
//! the run's cgroup and limits, on every core; the sandbox then maps the cached code.
//!
//! Compilation is wrun's cost, not the guest's: a large module can need far more memory to
//! compile than the guest is allowed (a 26 MB interpreter under `--memory 192m` was OOM-killed
//! while compiling, cached nothing, and died the same way on every retry), and a cold
//! `--timeout 1s` counted the compilation. The sandbox's own compiler stays as the fallback
//! (a module that fails to compile here reports its error from the sandbox, as before).
//!
//! Whether a module is warm is told without an engine (making one costs ≈0.3 ms): a marker
//! `warm/<module file identity>-<engine identity>` in the cache, made once the code is stored.
//! The engine identity is this binary's file identity and the engine settings, so a new wrun
//! or other settings compile again. A marker is only a hint: code it promises that has gone
//! is compiled in the sandbox as before.

use crate::config::EngineSettings;
use crate::spec::WasmPayload;
use crate::wasm::cache::AotCache;
use crate::wasm::source::{FileIdentity, ModuleFile};
use crate::wasm::{self, engine::compiling_engine};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Compiles `wasm`'s module into the cache for an engine with `settings` first if it is
/// cold. Call while the process is single-threaded (the compiling process is forked).
pub fn ensure_compiled(
    wasm: &WasmPayload,
    settings: &EngineSettings,
    cache: &AotCache,
    module: &File,
) {
    let Some(marker) = warm_marker(cache, module, settings) else {
        return;
    };
    if marker.exists() {
        return;
    }
    crate::timeline::mark("compiling outside the sandbox");
    let parent = nix::unistd::getpid();
    // SAFETY: the caller is single-threaded, so the child may run arbitrary code; it ends
    // with _exit and touches nothing of the parent's but the cache.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // Dies with its parent (a killed run leaves no compiler behind), holds none of
            // its descriptors (a monitor's lock), and never unwinds through its frames.
            let alive = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_ok()
                && nix::unistd::getppid() == parent
                && super::harden::close_inherited_fds(&[]).is_ok();
            let compiled = alive
                && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    compile(wasm, settings, cache, &marker)
                }))
                .unwrap_or(false);
            crate::sys::exit_now(if compiled { 0 } else { 1 })
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
            crate::timeline::mark("compiled");
        }
        // The sandbox compiles it then, as before.
        Err(e) => tracing::debug!("cannot fork the compiler: {e}"),
    }
}

/// In the forked compiler: compiles (or finds) the module's code, with every core, and
/// marks it warm. Silent: a module that cannot be compiled fails again in the sandbox,
/// which reports it.
fn compile(
    spec: &WasmPayload,
    settings: &EngineSettings,
    cache: &AotCache,
    marker: &std::path::Path,
) -> bool {
    // Opened again: a forked copy of the parent's descriptor would share its offset.
    let Ok(module) = File::open(&spec.module)
        .map_err(drop)
        .and_then(|file| ModuleFile::new(file, &spec.module).map_err(drop))
    else {
        return false;
    };
    // A bar on the terminal of a run in the foreground (a detached run's stderr is its log).
    let watcher = crate::progress::on_terminal();
    let file_name = spec.module.file_name().unwrap_or(spec.module.as_os_str());
    let name = format!("compiling {}", file_name.to_string_lossy());
    let Ok(engine) = compiling_engine(settings, &module, &name, &*watcher) else {
        return false;
    };
    match wasm::precompile(&engine, &module, cache, spec.module_digest.as_deref()) {
        Ok(wasm::Origin::Compiled(None)) | Err(_) => false,
        Ok(origin) => {
            if let wasm::Origin::Compiled(_) = origin {
                tracing::debug!("compiled (aot cache miss), outside the sandbox");
            }
            let _ = std::fs::create_dir(cache.dir().join("warm"));
            File::create(marker).is_ok()
        }
    }
}

/// Where the marker of `module`'s code for this binary and `settings` lives, if this binary
/// can name itself.
fn warm_marker(cache: &AotCache, module: &File, settings: &EngineSettings) -> Option<PathBuf> {
    let module = FileIdentity::of(&module.metadata().ok()?);
    let exe = std::fs::metadata("/proc/self/exe").ok()?;
    let mut engine = Sha256::new();
    engine.update(format!(
        "{}-{}-{}-{}.{}\0{settings:?}",
        exe.dev(),
        exe.ino(),
        exe.size(),
        exe.mtime(),
        exe.mtime_nsec()
    ));
    let engine = hex::encode(&engine.finalize()[..12]);
    Some(
        cache
            .dir()
            .join("warm")
            .join(format!("{}-{engine}", module.name())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_differ_by_module_version_and_engine_settings() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AotCache::new(dir.path().to_path_buf());
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
        let file = File::open(&path).unwrap();
        let plain = warm_marker(&cache, &file, &EngineSettings::default()).unwrap();
        assert!(plain.starts_with(dir.path().join("warm")));
        assert_eq!(
            plain,
            warm_marker(&cache, &file, &EngineSettings::default()).unwrap()
        );
        let pooled = EngineSettings {
            pooling_allocator: true,
            ..EngineSettings::default()
        };
        assert_ne!(plain, warm_marker(&cache, &file, &pooled).unwrap());
        std::fs::write(&path, b"\0asm\x01\0\0\0\0").unwrap();
        let changed = File::open(&path).unwrap();
        assert_ne!(
            plain,
            warm_marker(&cache, &changed, &EngineSettings::default()).unwrap()
        );
    }
}
