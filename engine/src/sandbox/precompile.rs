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
//!
//! A large cold module in a foreground run is first compiled by Winch, wasmtime's baseline
//! compiler (≈4–5× faster than Cranelift), and runs on that code while a detached compiler
//! makes Cranelift's optimized code for the runs after it, at idle priority; until it is
//! done, runs keep to Winch's code (see [`crate::config::FirstRun`]).

use crate::config::{Compiler, EngineSettings, FirstRun};
use crate::spec::WasmPayload;
use crate::wasm::cache::AotCache;
use crate::wasm::source::{FileIdentity, ModuleFile};
use crate::wasm::{self, engine::compiling_engine};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::hash::Hasher;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The smallest module whose first run starts on Winch's code: below it Cranelift compiles
/// in well under a second (a 60 KiB hello in ≈0.1 s) and a second compile is not worth it.
const BASELINE_FROM_BYTES: u64 = 1 << 20;

/// The forked compiler's exit code when it compiled Winch's code, not Cranelift's.
const COMPILED_BASELINE: i32 = 3;

/// Compiles `wasm`'s module into the cache for an engine with `settings` first if it is
/// cold; the settings the run is to use instead when that is Winch's code. Call while the
/// process is single-threaded (the compiling processes are forked).
pub fn ensure_compiled(
    wasm: &WasmPayload,
    settings: &EngineSettings,
    cache: &AotCache,
    module: &File,
) -> Option<EngineSettings> {
    let optimized = warm_marker(cache, module, settings)?;
    if optimized.exists() {
        return None;
    }
    let baseline = baseline_of(settings, module);
    if let Some(baseline) = &baseline {
        if warm_marker(cache, module, baseline).is_some_and(|marker| marker.exists()) {
            compile_in_background(wasm, settings, cache, &optimized);
            return baseline.clone().into();
        }
    }
    crate::timeline::mark("compiling outside the sandbox");
    let compiled = compile_in_fork(wasm, settings, baseline.as_ref(), cache);
    crate::timeline::mark("compiled");
    if compiled != Some(COMPILED_BASELINE) {
        return None;
    }
    compile_in_background(wasm, settings, cache, &optimized);
    tracing::debug!("first run on winch's code; cranelift's compiles in the background");
    baseline
}

/// Winch's settings for `settings`, if a first run of `module` under them starts on it.
fn baseline_of(settings: &EngineSettings, module: &File) -> Option<EngineSettings> {
    let large = module
        .metadata()
        .is_ok_and(|m| m.len() >= BASELINE_FROM_BYTES);
    (large && settings.first_run == FirstRun::Baseline && settings.compiler == Compiler::Cranelift)
        .then(|| EngineSettings {
            compiler: Compiler::Winch,
            ..settings.clone()
        })
}

/// Runs [`compile`] in a forked process that dies with this one; its exit code.
fn compile_in_fork(
    wasm: &WasmPayload,
    settings: &EngineSettings,
    baseline: Option<&EngineSettings>,
    cache: &AotCache,
) -> Option<i32> {
    let parent = nix::unistd::getpid();
    // SAFETY: the caller is single-threaded, so the child may run arbitrary code; it ends
    // with _exit and touches nothing of the parent's but the cache.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // Dies with its parent (a killed run leaves no compiler behind), holds none of
            // its descriptors (a monitor's lock), and never unwinds through its frames.
            // A monitor, whose fork this may be, gives pages back at once: a compiler must not.
            crate::idle_memory::purge_later();
            let alive = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_ok()
                && nix::unistd::getppid() == parent
                && super::harden::close_inherited_fds(&[]).is_ok();
            let code = match alive {
                true => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    first_code(wasm, settings, baseline, cache)
                }))
                .unwrap_or(1),
                false => 1,
            };
            crate::sys::exit_now(code)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Some(code),
                _ => None,
            }
        }
        // The sandbox compiles it then, as before.
        Err(e) => {
            tracing::debug!("cannot fork the compiler: {e}");
            None
        }
    }
}

/// In the forked compiler: the code a first run uses. Cranelift's if it is cached already
/// (`wrun compile` made it), else Winch's if the run may start on it and Winch can compile
/// the module, else Cranelift's, compiled now.
fn first_code(
    wasm: &WasmPayload,
    settings: &EngineSettings,
    baseline: Option<&EngineSettings>,
    cache: &AotCache,
) -> i32 {
    let Some(baseline) = baseline else {
        return exit_code(compile(wasm, settings, cache, false));
    };
    if compile(wasm, settings, cache, true) {
        return 0;
    }
    if compile(wasm, baseline, cache, false) {
        return COMPILED_BASELINE;
    }
    tracing::debug!("winch cannot compile the module: cranelift's code first");
    exit_code(compile(wasm, settings, cache, false))
}

fn exit_code(compiled: bool) -> i32 {
    if compiled {
        0
    } else {
        1
    }
}

/// Starts a compiler of `settings`' code, detached from this run and at idle priority, unless
/// one is at work on it already (it holds the marker's lock).
fn compile_in_background(
    wasm: &WasmPayload,
    settings: &EngineSettings,
    cache: &AotCache,
    marker: &Path,
) {
    // SAFETY: the caller is single-threaded; the child only forks again and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // A session of its own, and orphaned at once (its parent exits here), so that no
            // terminal's signal, no descriptor and no wait of this run's ties it to the run.
            let detached = nix::unistd::setsid().is_ok()
                && matches!(
                    unsafe { nix::unistd::fork() },
                    Ok(nix::unistd::ForkResult::Child)
                );
            if detached {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    compile_detached(wasm, settings, cache, marker)
                }));
            }
            crate::sys::exit_now(0)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(e) => tracing::debug!("cannot fork the background compiler: {e}"),
    }
}

/// In the detached compiler: compiles `settings`' code and marks it warm, holding the lock.
fn compile_detached(
    wasm: &WasmPayload,
    settings: &EngineSettings,
    cache: &AotCache,
    marker: &Path,
) {
    crate::idle_memory::purge_later();
    if super::harden::close_inherited_fds(&[]).is_err() || !stdio_to_null() {
        return;
    }
    let _ = crate::sys::set_scheduling(0, libc::SCHED_IDLE);
    // SAFETY: prctl with a NUL-terminated name that outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"wrun-compile".as_ptr()) };
    let Ok(_lock) = lock(marker, FlockArg::LockExclusiveNonblock) else {
        return;
    };
    if !marker.exists() {
        compile(wasm, settings, cache, false);
    }
}

/// Points stdin, stdout and stderr at /dev/null: a caller reading the run's output (a shell's
/// `$(…)`) waits for every holder of its pipe.
fn stdio_to_null() -> bool {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return false;
    };
    let null = std::os::fd::AsRawFd::as_raw_fd(&null);
    // SAFETY: dup2 onto the standard descriptors, which nothing here holds as owned.
    (0..3).all(|fd| unsafe { libc::dup2(null, fd) } == fd)
}

/// The lock a background compiler of `marker`'s code holds while it works.
fn lock(marker: &Path, how: FlockArg) -> std::io::Result<Flock<File>> {
    let _ = std::fs::create_dir(marker.parent().unwrap_or(Path::new(".")));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(lock_path(marker))?;
    Flock::lock(file, how).map_err(|(_, errno)| errno.into())
}

/// The lock file next to `marker` (its name has dots: no `with_extension`).
fn lock_path(marker: &Path) -> PathBuf {
    let mut name = marker.as_os_str().to_owned();
    name.push(".compiling");
    PathBuf::from(name)
}

/// Waits for a background compiler at work on `module`'s code for `settings` to finish
/// (`wrun compile` then finds the code instead of compiling it a second time).
pub fn wait_for_background(cache: &AotCache, module: &File, settings: &EngineSettings) {
    let Some(marker) = warm_marker(cache, module, settings) else {
        return;
    };
    if lock_path(&marker).exists() {
        let _ = lock(&marker, FlockArg::LockExclusive);
    }
}

/// In a compiler process: compiles (or finds) the module's code for `settings`, with every
/// core, and marks it warm; with `only_cached`, finds it or does nothing. Silent: a module
/// that cannot be compiled fails again in the sandbox, which reports it.
fn compile(
    spec: &WasmPayload,
    settings: &EngineSettings,
    cache: &AotCache,
    only_cached: bool,
) -> bool {
    // Opened again: a forked copy of the parent's descriptor would share its offset.
    let Ok(file) = File::open(&spec.module) else {
        return false;
    };
    let Some(marker) = warm_marker(cache, &file, settings) else {
        return false;
    };
    let Ok(module) = ModuleFile::new(file, &spec.module) else {
        return false;
    };
    let expected = spec.module_digest.as_deref();
    let found = if only_cached {
        wasm::engine::new_engine(false, settings)
            .ok()
            .and_then(|engine| wasm::cached_artifact(&engine, &module, cache, expected).ok())
            .flatten()
            .is_some()
    } else {
        compile_into_cache(spec, settings, cache, &module)
    };
    found && {
        let _ = std::fs::create_dir(cache.dir().join("warm"));
        File::create(marker).is_ok()
    }
}

/// Compiles `module` into the cache (finding it there is as good), with every core.
fn compile_into_cache(
    spec: &WasmPayload,
    settings: &EngineSettings,
    cache: &AotCache,
    module: &ModuleFile,
) -> bool {
    // A bar on the terminal of a run in the foreground (a detached run's stderr is its log);
    // Winch's compile is short, and has no per-function hooks to count.
    let watcher = match settings.compiler {
        Compiler::Cranelift => crate::progress::on_terminal(),
        Compiler::Winch => Box::new(crate::progress::Unwatched),
    };
    let file_name = spec.module.file_name().unwrap_or(spec.module.as_os_str());
    let name = format!("compiling {}", file_name.to_string_lossy());
    let Ok(engine) = compiling_engine(settings, module, &name, &*watcher) else {
        return false;
    };
    match wasm::precompile(&engine, module, cache, spec.module_digest.as_deref()) {
        Ok(wasm::Origin::Compiled(None)) | Err(_) => false,
        Ok(origin) => {
            if let wasm::Origin::Compiled(_) = origin {
                tracing::debug!(
                    compiler = ?settings.compiler,
                    "compiled (aot cache miss), outside the sandbox"
                );
            }
            true
        }
    }
}

/// Where the marker of `module`'s code for this binary and `settings` lives, if this binary
/// can name itself.
fn warm_marker(cache: &AotCache, module: &File, settings: &EngineSettings) -> Option<PathBuf> {
    let module = FileIdentity::of(&module.metadata().ok()?);
    let exe = std::fs::metadata("/proc/self/exe").ok()?;
    // FNV, not SHA-256: on a standalone run's path before the fork, and sha2 probes the CPU
    // at its first use (`cpuid`, a VM exit each). Two runs whose markers collided would only
    // compile in the sandbox instead of outside it.
    let mut engine = fnv::FnvHasher::default();
    engine.write(
        format!(
            "{}-{}-{}-{}.{}\0{:?}",
            exe.dev(),
            exe.ino(),
            exe.size(),
            exe.mtime(),
            exe.mtime_nsec(),
            settings.of_code()
        )
        .as_bytes(),
    );
    let engine = format!("{:016x}", engine.finish());
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
    fn only_a_large_module_in_a_run_that_may_start_on_baseline_code_gets_winchs_settings() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.wasm");
        std::fs::write(&small, b"\0asm\x01\0\0\0").unwrap();
        let large = dir.path().join("large.wasm");
        File::create(&large)
            .unwrap()
            .set_len(BASELINE_FROM_BYTES)
            .unwrap();
        let (small, large) = (File::open(small).unwrap(), File::open(large).unwrap());
        let settings = EngineSettings::default();
        assert_eq!(baseline_of(&settings, &small), None);
        let baseline = baseline_of(&settings, &large).unwrap();
        assert_eq!(baseline.compiler, Compiler::Winch);
        assert_eq!(
            baseline.of_code(),
            EngineSettings {
                compiler: Compiler::Winch,
                ..settings.clone()
            }
        );
        for waits in [
            EngineSettings {
                first_run: FirstRun::Optimized,
                ..settings.clone()
            },
            EngineSettings {
                compiler: Compiler::Winch,
                ..settings.clone()
            },
        ] {
            assert_eq!(baseline_of(&waits, &large), None);
        }
    }

    #[test]
    fn a_lock_sits_next_to_its_marker_whatever_dots_the_name_has() {
        let marker = Path::new("/c/warm/1-2-3-4.000000005-6.000000007-abc");
        assert_eq!(
            lock_path(marker),
            Path::new("/c/warm/1-2-3-4.000000005-6.000000007-abc.compiling")
        );
    }

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
        let winch = EngineSettings {
            compiler: Compiler::Winch,
            ..EngineSettings::default()
        };
        assert_ne!(plain, warm_marker(&cache, &file, &winch).unwrap());
        // Whether a first run waits for this code does not change the code.
        let waits = EngineSettings {
            first_run: FirstRun::Optimized,
            ..EngineSettings::default()
        };
        assert_eq!(plain, warm_marker(&cache, &file, &waits).unwrap());
        std::fs::write(&path, b"\0asm\x01\0\0\0\0").unwrap();
        let changed = File::open(&path).unwrap();
        assert_ne!(
            plain,
            warm_marker(&cache, &changed, &EngineSettings::default()).unwrap()
        );
    }
}
