//! Wasm execution: reading modules, the engine, the AOT cache, and running a guest.

pub mod budget;
pub mod cache;
pub mod connect;
pub mod engine;
pub mod exec;
pub mod outbound;
mod p1_sockets;
pub mod serve;
pub mod sockets;
pub mod source;

use cache::{AotCache, Lookup};
use source::{Kind, ModuleFile, Source, SourceError};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// A compiled guest, either kind.
pub enum Program {
    Module(Module),
    Component(Component),
}

impl Program {
    pub fn kind(&self) -> Kind {
        match self {
            Program::Module(_) => Kind::Module,
            Program::Component(_) => Kind::Component,
        }
    }

    /// Where the compiled code and data lie in memory.
    pub fn image_range(&self) -> std::ops::Range<*const u8> {
        match self {
            Program::Module(module) => module.image_range(),
            Program::Component(component) => component.image_range(),
        }
    }
}

/// How the program was obtained, for `-v` and the tests that check the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Mapped from the cache file at this path; nothing was compiled.
    Cached(PathBuf),
    /// Compiled now, and stored at this path when the cache allowed it.
    Compiled(Option<PathBuf>),
}

/// Why a module could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("failed to compile `{path}`")]
    Compile {
        path: PathBuf,
        #[source]
        source: wasmtime::Error,
    },
    #[error("compiled code for `{path}` could not be cached: {reason}")]
    NotCached { path: PathBuf, reason: String },
    #[error("module `{path}` does not match its image: sha256 {actual}, expected {expected}")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// Maps the cached artifact of `module` or compiles it (storing the result). A warm load reads
/// eight bytes of the module, its recorded digest and the artifact's integrity record. With
/// `expected` (an image's module digest, `sha256:<hex>`), a module whose content differs is
/// refused.
pub fn load(
    engine: &Engine,
    module: &ModuleFile,
    cache: &AotCache,
    expected: Option<&str>,
) -> Result<(Program, Origin), LoadError> {
    // A broken header is reported as such even when an old artifact exists.
    let header_kind = module.header_kind()?;
    let digest = module_digest(module, cache, expected)?;
    let key = engine::cache_key(engine, &digest);
    match cache.lookup(&key) {
        Lookup::Hit(artifact) if header_kind.is_none_or(|k| k == artifact.kind) => {
            match deserialize(engine, artifact.kind, artifact.file) {
                Ok(program) => return Ok((program, Origin::Cached(artifact.path))),
                Err(e) => {
                    tracing::warn!(path = %artifact.path.display(), "cached artifact refused by wasmtime, recompiling: {e:#}");
                    let _ = std::fs::remove_file(&artifact.path);
                }
            }
        }
        Lookup::Hit(artifact) => {
            let _ = std::fs::remove_file(&artifact.path);
        }
        Lookup::Corrupt(reason) => {
            tracing::warn!(key, "corrupt cache entry removed, recompiling: {reason}");
        }
        Lookup::Miss => tracing::debug!(key, "aot cache miss"),
    }
    // Read again on a miss (a first run, which compiles for far longer than it reads).
    let program = compile(engine, &module.read()?)?;
    let stored =
        match serialize(&program).and_then(|(kind, bytes)| Ok(cache.store(&key, kind, &bytes)?)) {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!("compiled code not cached: {e:#}");
                None
            }
        };
    Ok((program, Origin::Compiled(stored)))
}

/// Stores `module`'s compiled code in the cache unless it is there already: for a process
/// that only fills the cache (the compiler forked outside the sandbox). The code is compiled
/// straight into the artifact's bytes, which are stored: none of it is made executable here,
/// copied out again, or given memory images, as a module to run here would need.
pub fn precompile(
    engine: &Engine,
    module: &ModuleFile,
    cache: &AotCache,
    expected: Option<&str>,
) -> Result<Origin, LoadError> {
    let key = match look_up(engine, module, cache, expected)? {
        Ok((artifact, _)) => return Ok(Origin::Cached(artifact.path)),
        Err((_, key)) => key,
    };
    crate::allocator::allocate_for_speed();
    let source = module.read()?;
    let (binary, kind) = source.binary()?;
    let compiled = match kind {
        Kind::Module => engine.precompile_module(&binary),
        Kind::Component => engine.precompile_component(&binary),
    };
    let artifact = compiled.map_err(|e| LoadError::Compile {
        path: source.path.clone(),
        source: e,
    })?;
    crate::timeline::mark("compiler: code compiled");
    let stored = cache.store(&key, kind, &artifact);
    crate::timeline::mark("compiler: code stored");
    match stored {
        Ok(path) => Ok(Origin::Compiled(Some(path))),
        Err(e) => {
            tracing::warn!("compiled code not cached: {e:#}");
            Ok(Origin::Compiled(None))
        }
    }
}

/// The cache entry for `module`, compiled and stored first on a miss, and the module's
/// digest: for a process that hands the artifact to a sandbox which can no longer name paths
/// (the warm pool).
pub fn artifact(
    engine: &Engine,
    module: &ModuleFile,
    cache: &AotCache,
    expected: Option<&str>,
) -> Result<(cache::Artifact, String), LoadError> {
    let (digest, key) = match look_up(engine, module, cache, expected)? {
        Ok(found) => return Ok(found),
        Err(missing) => missing,
    };
    let program = compile(engine, &module.read()?)?;
    let not_cached = |e: anyhow::Error| LoadError::NotCached {
        path: module.path.clone(),
        reason: format!("{e:#}"),
    };
    let (kind, bytes) = serialize(&program).map_err(not_cached)?;
    cache
        .store(&key, kind, &bytes)
        .map_err(|e| not_cached(e.into()))?;
    match cache.lookup(&key) {
        Lookup::Hit(artifact) => Ok((artifact, digest)),
        _ => Err(not_cached(anyhow::anyhow!(
            "the stored entry cannot be read back"
        ))),
    }
}

/// As [`artifact`], but `None` on a miss instead of compiling.
pub fn cached_artifact(
    engine: &Engine,
    module: &ModuleFile,
    cache: &AotCache,
    expected: Option<&str>,
) -> Result<Option<(cache::Artifact, String)>, LoadError> {
    Ok(look_up(engine, module, cache, expected)?.ok())
}

/// What the cache holds for a module: its entry and the module's digest, or on a miss the
/// digest and the key to store the compiled code under.
type Found = Result<(cache::Artifact, String), (String, String)>;

/// What the cache holds for `module`.
fn look_up(
    engine: &Engine,
    module: &ModuleFile,
    cache: &AotCache,
    expected: Option<&str>,
) -> Result<Found, LoadError> {
    // A broken header is reported as such even when an old artifact exists.
    let header_kind = module.header_kind()?;
    let digest = module_digest(module, cache, expected)?;
    let key = engine::cache_key(engine, &digest);
    match cache.lookup(&key) {
        Lookup::Hit(artifact) if header_kind.is_none_or(|k| k == artifact.kind) => {
            return Ok(Ok((artifact, digest)))
        }
        Lookup::Hit(artifact) => {
            let _ = std::fs::remove_file(&artifact.path);
        }
        Lookup::Corrupt(reason) => {
            tracing::warn!(key, "corrupt cache entry removed, recompiling: {reason}");
        }
        Lookup::Miss => {}
    }
    Ok(Err((digest, key)))
}

/// The module's sha256, from the cache's index when the file is unchanged, checked against
/// `expected` (an image's digest) when given.
fn module_digest(
    module: &ModuleFile,
    cache: &AotCache,
    expected: Option<&str>,
) -> Result<String, LoadError> {
    let identity = module.identity();
    let digest = match cache.indexed_digest(&identity) {
        Some(digest) => digest,
        None => {
            let digest = engine::module_digest(&module.read()?.bytes);
            cache.index_digest(&identity, &digest);
            digest
        }
    };
    if let Some(expected) = expected {
        let want = expected.trim_start_matches("sha256:");
        if want != digest {
            return Err(LoadError::DigestMismatch {
                path: module.path.clone(),
                expected: want.to_string(),
                actual: digest,
            });
        }
    }
    Ok(digest)
}

/// Maps an artifact in a process that has no `/proc` (a pooled sandbox): a module straight
/// from its open file, a component (which has no open-file variant) from its bytes.
pub fn deserialize_artifact(
    engine: &Engine,
    kind: Kind,
    mut file: std::fs::File,
) -> wasmtime::Result<Program> {
    match kind {
        Kind::Module => deserialize(engine, kind, file),
        Kind::Component => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut bytes)?;
            // SAFETY: as in `deserialize`: an artifact from `AotCache`, checked on this file.
            let component = unsafe { Component::deserialize(engine, &bytes) }?;
            // Not backed by a file, so its memory images need a memfd: made now, before the
            // seccomp filter forbids one.
            component.initialize_copy_on_write_image()?;
            Ok(Program::Component(component))
        }
    }
}

/// Compiles `source` without touching the cache.
pub fn compile(engine: &Engine, source: &Source) -> Result<Program, LoadError> {
    crate::allocator::allocate_for_speed();
    let (binary, kind) = source.binary()?;
    let compile_err = |e| LoadError::Compile {
        path: source.path.clone(),
        source: e,
    };
    // A freshly compiled module builds the copy-on-write images of its memories in a memfd at
    // first instantiation; build them now, while the process may still create one (the
    // sandbox's seccomp filter refuses memfd_create). Mapped artifacts need none.
    Ok(match kind {
        Kind::Module => {
            let module = Module::from_binary(engine, &binary).map_err(compile_err)?;
            module
                .initialize_copy_on_write_image()
                .map_err(compile_err)?;
            Program::Module(module)
        }
        Kind::Component => {
            let component = Component::from_binary(engine, &binary).map_err(compile_err)?;
            component
                .initialize_copy_on_write_image()
                .map_err(compile_err)?;
            Program::Component(component)
        }
    })
}

fn serialize(program: &Program) -> anyhow::Result<(Kind, Vec<u8>)> {
    Ok(match program {
        Program::Module(m) => (Kind::Module, m.serialize()?),
        Program::Component(c) => (Kind::Component, c.serialize()?),
    })
}

fn deserialize(engine: &Engine, kind: Kind, file: std::fs::File) -> wasmtime::Result<Program> {
    // SAFETY: the artifact was written by `AotCache::store` from wasmtime's own output and
    // passed the integrity check on this very open file; wasmtime checks that its header
    // matches this engine before using it.
    unsafe {
        match kind {
            Kind::Module => Module::deserialize_open_file(engine, file).map(Program::Module),
            Kind::Component => {
                // Components have no open-file variant: name the verified file through /proc.
                let path = format!("/proc/self/fd/{}", file.as_raw_fd());
                Component::deserialize_file(engine, path).map(Program::Component)
            }
        }
    }
}
