//! The one wasmtime configuration wrun uses, and the cache key derived from it.

use crate::config::EngineSettings;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use wasmtime::{Config, Engine, OptLevel};

/// Builds the engine every run and every `wrun compile` uses; artifacts are only valid for it.
///
/// `parallel_compilation` spreads a compilation over a thread pool whose threads live on. A
/// sandboxed child must not have them: they would stay outside the namespaces it joins
/// later, so it compiles on its one thread. The choice does not change the artifact.
pub fn new_engine(
    parallel_compilation: bool,
    settings: &EngineSettings,
) -> wasmtime::Result<Engine> {
    Engine::new(&config_of(parallel_compilation, settings))
}

/// An engine like [`new_engine`]'s (compiling with every core) that counts each function
/// it compiles on `functions`, for a progress bar. Its code is the same; Cranelift's cache
/// hooks cost a few percent of the compile, so it is only for a compile someone watches.
pub fn new_counting_engine(
    settings: &EngineSettings,
    functions: std::sync::Arc<dyn crate::progress::Counter>,
) -> wasmtime::Result<Engine> {
    let mut config = config_of(true, settings);
    let counted = crate::progress::CompiledFunctions(functions);
    config.enable_incremental_compilation(std::sync::Arc::new(counted))?;
    Engine::new(&config)
}

/// An engine to compile `module` with every core, its functions counted on a bar named
/// `name` if someone watches.
pub fn compiling_engine(
    settings: &EngineSettings,
    module: &crate::wasm::source::ModuleFile,
    name: &str,
    watcher: &dyn crate::progress::Watcher,
) -> wasmtime::Result<Engine> {
    if !watcher.watching() {
        return new_engine(true, settings);
    }
    let total = module
        .read()
        .map(|source| crate::progress::functions_defined(&source.bytes))
        .unwrap_or(0);
    let functions = watcher.start(name, total, crate::progress::Unit::Functions);
    new_counting_engine(settings, functions)
}

fn config_of(parallel_compilation: bool, settings: &EngineSettings) -> Config {
    let mut config = Config::new();
    config.parallel_compilation(parallel_compilation);
    // Epoch checks let `--timeout`, a served request's deadline and stop signals interrupt a
    // guest that never calls the host; only where a run needs them (they cost up to 2×).
    config.epoch_interruption(settings.epoch_interruption);
    config.cranelift_opt_level(OptLevel::Speed);
    config.wasm_component_model(true);
    // Atomics on ordinary memories, as C/C++ toolchains for WASI emit them and wasmtime's
    // CLI accepts them. Shared memories stay off (wasmtime's default, a tier-2 feature):
    // a module that defines one fails to instantiate (126) unless `run --shared-memory`.
    config.wasm_threads(true);
    // Unwind tables only serve native unwinders walking through wasm frames: wasm backtraces
    // do not need them and wasmtime carries host panics across wasm frames itself.
    // Registering them made up much of the time to map a cached module.
    config.native_unwind_info(false);
    // The default is the on-demand allocator: the pooling allocator costs milliseconds to set
    // up, which a one-shot process never wins back.
    settings.apply(&mut config);
    config
}

/// An engine for a process that forks many sandboxes (the daemon), which each use it as
/// inherited instead of making their own (≈0.3 ms each). Making it also probes the CPU's
/// features once (`cpuid`, a VM exit each), and the children inherit the answers. Nothing
/// that seeds a random generator may run here: every child would inherit the same state
/// (each sandbox makes its WASI context, and so seeds its generators, after its fork).
pub fn new_forking_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let engine = new_engine(false, settings)?;
    probe_generator_features();
    Ok(engine)
}

/// Has the ChaCha generators' crate probe the CPU (three `cpuid`, each a VM exit here) in this
/// process, for its forked sandboxes to inherit the answers: each sandbox's WASI context
/// makes generators, so every refill probed again. The generator made here from a constant
/// seed is dropped unused: no random state is inherited.
fn probe_generator_features() {
    use rand::SeedableRng;
    drop(rand::rngs::StdRng::seed_from_u64(0));
}

/// The SHA-256 of a module's bytes, as lowercase hex: its content address.
pub fn module_digest(module_bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(module_bytes))
}

/// The address of a compiled artifact: the module's content digest plus everything about the
/// engine that makes compiled code (in)compatible — wasmtime's own compatibility hash covers
/// its version, the configuration and the host CPU features the code was compiled for.
pub fn cache_key(engine: &Engine, module_digest: &str) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.0.update(b"wrun-aot-v1\0");
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.update(module_digest.as_bytes());
    hex::encode(hasher.0.finalize())
}

/// Feeds `Hash` implementations into SHA-256, so the key is stable across Rust releases
/// (unlike `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Never asked for: the digest is read with `finalize`.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_the_module_content_only_for_one_engine() {
        let engine = new_engine(false, &EngineSettings::default()).unwrap();
        let digest = module_digest(b"\0asm\x01\0\0\0");
        let a = cache_key(&engine, &digest);
        assert_eq!(
            a,
            cache_key(
                &new_engine(false, &EngineSettings::default()).unwrap(),
                &digest
            )
        );
        // `wrun compile` compiles in parallel for the sandbox's single-threaded engine.
        assert_eq!(
            a,
            cache_key(
                &new_engine(true, &EngineSettings::default()).unwrap(),
                &digest
            )
        );
        assert_ne!(a, cache_key(&engine, &module_digest(b"\0asm\x01\0\0\0\0")));
        assert_ne!(a, digest);
        assert_eq!(a.len(), 64);
    }
}
