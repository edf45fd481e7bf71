//! The configuration file (`--config`, `WRUN_CONFIG`; the shim's `ConfigPath`): the state root
//! and the wasmtime engine's settings, in TOML.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The state root (its `cache/` is the AOT cache unless `cache_dir` says otherwise).
    pub root: Option<PathBuf>,
    /// Where compiled code is cached (shared by every state root that names it).
    pub cache_dir: Option<PathBuf>,
    pub engine: EngineSettings,
    pub registries: RegistrySettings,
}

/// How registries are reached (`[registries]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Hosts (`host:port`) reached over plain HTTP when they do not answer HTTPS, besides
    /// loopback ones (Docker's `insecure-registries`).
    pub insecure: Vec<String>,
    /// Where a registry's own CA is looked for, as `<dir>/<host:port>/ca.crt`
    /// (default `/etc/docker/certs.d`, Docker's).
    pub certs_dir: Option<PathBuf>,
}

impl RegistrySettings {
    pub fn certs_dir(&self) -> PathBuf {
        self.certs_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/docker/certs.d"))
    }
}

/// How the wasmtime engine is built. Compiled artifacts depend on it, and the cache key
/// covers it (wasmtime's compatibility hash includes the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// wasmtime's pooling instance allocator: slots reserved up front. It costs milliseconds
    /// per process to set up, so it only pays where one process serves many instances.
    pub pooling_allocator: bool,
    /// Interruption checks compiled into every function and loop. They cost up to 2× on a
    /// long computation, so wrun compiles them in only for the runs that need to interrupt a
    /// guest that keeps running (`--timeout`, serving HTTP with `-p`: see
    /// [`crate::spec::RunSpec::with_engine`]); a stop signal ends any other run at once.
    /// `true` compiles them into every run.
    pub epoch_interruption: bool,
    /// The compiler of every run's code (wasmtime's `-C compiler`).
    pub compiler: Compiler,
    /// What the first run of a cold module waits for (see [`FirstRun`]).
    pub first_run: FirstRun,
    pub features: Features,
}

/// Which compiler makes a run's code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    /// Optimized code (wasmtime's default).
    #[default]
    Cranelift,
    /// wasmtime's baseline compiler: code compiled ≈4–5× faster that runs ≈2–3× slower, for
    /// fewer Wasm proposals (no exceptions, GC, tail calls or relaxed SIMD).
    Winch,
}

/// What a run of a module with no compiled code yet waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstRun {
    /// A large module (≥ 1 MiB) in a foreground run starts on Winch's code, and Cranelift's is
    /// compiled in the background for the runs after it. A detached container, a server
    /// (`-p`) and an OCI bundle's run (containerd, Docker, Podman) always wait for Cranelift's
    /// code: they may run for long on whatever code they start with.
    #[default]
    Baseline,
    /// Every run waits for Cranelift's code.
    Optimized,
}

/// Wasm proposals to turn on or off; absent means wasmtime's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Features {
    pub simd: Option<bool>,
    pub relaxed_simd: Option<bool>,
    pub multi_memory: Option<bool>,
    pub memory64: Option<bool>,
    pub tail_call: Option<bool>,
    pub extended_const: Option<bool>,
    pub function_references: Option<bool>,
    pub gc: Option<bool>,
    /// Shared memories (`run --shared-memory`): off by default, as in wasmtime, whose
    /// support for them is tier 2.
    pub shared_memory: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read the configuration `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    /// Reads and checks a configuration file; unknown keys are errors, not ignored.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config =
            toml::from_str(text).map_err(|e| e.message().trim_end_matches('.').to_lowercase())?;
        if config.root.as_ref().is_some_and(|r| !r.is_absolute()) {
            return Err("`root` must be an absolute path".into());
        }
        if config.cache_dir.as_ref().is_some_and(|c| !c.is_absolute()) {
            return Err("`cache_dir` must be an absolute path".into());
        }
        Ok(config)
    }
}

/// A wasmtime configuration method that turns a proposal on or off.
type FeatureSwitch = fn(&mut wasmtime::Config, bool) -> &mut wasmtime::Config;

impl EngineSettings {
    /// Whether `self` and `other` differ in nothing but the interruption checks (a pool has
    /// an engine with them and one without).
    pub fn same_but_interruption(&self, other: &EngineSettings) -> bool {
        self.of_code()
            == EngineSettings {
                epoch_interruption: self.epoch_interruption,
                ..other.of_code()
            }
    }

    /// The settings that make code: without the first-run policy, which only decides which
    /// code a run waits for.
    pub fn of_code(&self) -> EngineSettings {
        EngineSettings {
            first_run: FirstRun::default(),
            ..self.clone()
        }
    }

    /// Applies the settings to a wasmtime configuration.
    pub fn apply(&self, config: &mut wasmtime::Config) {
        if self.compiler == Compiler::Winch {
            config.strategy(wasmtime::Strategy::Winch);
        }
        if self.pooling_allocator {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::pooling());
        }
        let f = &self.features;
        let switches: [(Option<bool>, FeatureSwitch); 9] = [
            (f.simd, wasmtime::Config::wasm_simd),
            (f.relaxed_simd, wasmtime::Config::wasm_relaxed_simd),
            (f.multi_memory, wasmtime::Config::wasm_multi_memory),
            (f.memory64, wasmtime::Config::wasm_memory64),
            (f.tail_call, wasmtime::Config::wasm_tail_call),
            (f.extended_const, wasmtime::Config::wasm_extended_const),
            (
                f.function_references,
                wasmtime::Config::wasm_function_references,
            ),
            (f.gc, wasmtime::Config::wasm_gc),
            (f.shared_memory, wasmtime::Config::shared_memory),
        ];
        for (value, set) in switches {
            if let Some(on) = value {
                set(config, on);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let config = Config::parse(
            "root = \"/var/lib/wrun\"\ncache_dir = \"/var/cache/wrun\"\n[engine]\npooling_allocator = true\n\
             [engine.features]\nsimd = false\nmemory64 = true\n",
        )
        .unwrap();
        assert_eq!(config.root, Some(PathBuf::from("/var/lib/wrun")));
        assert_eq!(config.cache_dir, Some(PathBuf::from("/var/cache/wrun")));
        assert!(config.engine.pooling_allocator);
        assert_eq!(config.engine.features.simd, Some(false));
        assert_eq!(config.engine.features.memory64, Some(true));
        assert_eq!(config.engine.features.gc, None);
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn mistakes_are_errors() {
        for bad in [
            "rooot = \"/x\"",
            "root = \"relative\"",
            "[engine]\npooling = true",
            "[engine.features]\nsimd = \"yes\"",
            "[engine",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_change_the_engine_and_so_the_cache_key() {
        let digest = crate::wasm::engine::module_digest(b"\0asm\x01\0\0\0");
        let plain = crate::wasm::engine::new_engine(false, &EngineSettings::default()).unwrap();
        let mut no_simd = EngineSettings::default();
        no_simd.features.simd = Some(false);
        no_simd.features.relaxed_simd = Some(false);
        let other = crate::wasm::engine::new_engine(false, &no_simd).unwrap();
        assert_ne!(
            crate::wasm::engine::cache_key(&plain, &digest),
            crate::wasm::engine::cache_key(&other, &digest)
        );
        let checked = EngineSettings {
            epoch_interruption: true,
            ..EngineSettings::default()
        };
        let interruptible = crate::wasm::engine::new_engine(false, &checked).unwrap();
        assert_ne!(
            crate::wasm::engine::cache_key(&plain, &digest),
            crate::wasm::engine::cache_key(&interruptible, &digest)
        );
    }

    #[test]
    fn the_compiler_and_the_first_run_policy_parse_and_only_the_compiler_makes_other_code() {
        let config =
            Config::parse("[engine]\ncompiler = \"winch\"\nfirst_run = \"optimized\"").unwrap();
        assert_eq!(config.engine.compiler, Compiler::Winch);
        assert_eq!(config.engine.first_run, FirstRun::Optimized);
        assert!(Config::parse("[engine]\ncompiler = \"llvm\"").is_err());
        let defaults = EngineSettings::default();
        assert_eq!(
            (defaults.compiler, defaults.first_run),
            (Compiler::Cranelift, FirstRun::Baseline)
        );

        let digest = crate::wasm::engine::module_digest(b"\0asm\x01\0\0\0");
        let key = |settings: &EngineSettings| {
            let engine = crate::wasm::engine::new_engine(false, settings).unwrap();
            crate::wasm::engine::cache_key(&engine, &digest)
        };
        let winch = EngineSettings {
            compiler: Compiler::Winch,
            ..EngineSettings::default()
        };
        let waits = EngineSettings {
            first_run: FirstRun::Optimized,
            ..EngineSettings::default()
        };
        assert_ne!(key(&defaults), key(&winch));
        assert_eq!(key(&defaults), key(&waits));
        assert_eq!(waits.of_code(), defaults);
        assert!(waits.same_but_interruption(&defaults));
        assert!(!winch.same_but_interruption(&defaults));
    }

    #[test]
    fn interruption_checks_are_told_apart_from_other_settings() {
        let plain = EngineSettings::default();
        let checked = EngineSettings {
            epoch_interruption: true,
            ..EngineSettings::default()
        };
        assert!(checked.same_but_interruption(&plain) && plain.same_but_interruption(&checked));
        let pooling = EngineSettings {
            pooling_allocator: true,
            ..EngineSettings::default()
        };
        assert!(!checked.same_but_interruption(&pooling));
        assert_eq!(
            Config::parse("[engine]\nepoch_interruption = true")
                .unwrap()
                .engine,
            checked
        );
    }
}
