//! The reference the conformance and real-program tests compare wrun with: the wasmtime crate
//! and wasmtime-wasi run in-process, configured as `wasmtime run -S tcp=n,udp=n` configures
//! them (wrun grants no network: a guest's socket is refused when it is made, where the
//! wasmtime CLI makes one that can reach nothing).
//!
//! `wasmtime-reference [--dir HOST::GUEST]... [--env NAME=VALUE]... MODULE [ARGS...]`: stdio
//! inherited, argv[0] the module as given, exit code as the wasmtime CLI gives it (the guest's
//! `proc_exit`/`wasi:cli/exit` code, 134 for a trap, 1 for a failure before the guest ran).
//! No sandbox, no limits, no cache: nothing of wrun's. For `wrun-bench real`, as
//! `wasmtime compile` and `wasmtime run --allow-precompiled` do: `--compile-only OUT MODULE`
//! writes the compiled module and exits, `--precompiled OUT` runs it instead of compiling
//! MODULE, and `--epoch-interruption` compiles in the interruption checks wrun compiles in
//! (`wasmtime run -W epoch-interruption`), to measure what they cost; `--compiler winch`
//! compiles with Winch, wasmtime's baseline compiler (`wasmtime run -C compiler=winch`), as
//! wrun's first run of a large module does. For the socket tests,
//! `--inherit-network` grants TCP and UDP on the host's whole network, as `wasmtime run -S
//! inherit-network` does.

use anyhow::{bail, Context, Result};
use std::process::ExitCode;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, Linker, Module, Precompiled, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The wasmtime CLI's exit code for a trap on Unix: 128 + SIGABRT.
const TRAP_EXIT: u8 = 134;

#[derive(Default)]
struct Invocation {
    dirs: Vec<(String, String)>,
    env: Vec<(String, String)>,
    argv: Vec<String>,
    compile_only: Option<String>,
    precompiled: Option<String>,
    epoch_interruption: bool,
    inherit_network: bool,
    winch: bool,
}

/// A component's store data: its WASI context and its resource table.
struct ComponentState(WasiCtx, ResourceTable);

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ComponentState(ctx, table) = self;
        WasiCtxView { ctx, table }
    }
}

fn main() -> ExitCode {
    let invocation = match parse(std::env::args().skip(1).collect()) {
        Ok(invocation) => invocation,
        Err(error) => {
            eprintln!("wasmtime-reference: {error:#}");
            return ExitCode::from(2);
        }
    };
    match run(&invocation) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(exit) = error.downcast_ref::<I32Exit>() {
                return ExitCode::from(exit.0 as u8);
            }
            eprintln!("Error: {error:#}");
            if error.downcast_ref::<wasmtime::Trap>().is_some() {
                ExitCode::from(TRAP_EXIT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn parse(mut args: Vec<String>) -> Result<Invocation> {
    let mut invocation = Invocation::default();
    args.reverse();
    while let Some(arg) = args.pop() {
        let mut value = || args.pop().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--dir" => {
                let dir = value()?;
                let (host, guest) = dir.split_once("::").unwrap_or((&dir, &dir));
                invocation.dirs.push((host.to_string(), guest.to_string()));
            }
            "--compile-only" => invocation.compile_only = Some(value()?),
            "--epoch-interruption" => invocation.epoch_interruption = true,
            "--inherit-network" => invocation.inherit_network = true,
            "--compiler" => {
                invocation.winch = match value()?.as_str() {
                    "cranelift" => false,
                    "winch" => true,
                    other => bail!("--compiler {other}: cranelift or winch"),
                }
            }
            "--precompiled" => invocation.precompiled = Some(value()?),
            "--env" => {
                let pair = value()?;
                let (name, val) = pair.split_once('=').context("--env takes NAME=VALUE")?;
                invocation.env.push((name.to_string(), val.to_string()));
            }
            _ => {
                invocation.argv.push(arg);
                invocation.argv.extend(args.drain(..).rev());
            }
        }
    }
    if invocation.argv.is_empty() {
        bail!("usage: wasmtime-reference [--dir HOST::GUEST]... [--env NAME=VALUE]... MODULE [ARGS...]");
    }
    Ok(invocation)
}

fn wasi_builder(invocation: &Invocation) -> wasmtime::Result<WasiCtxBuilder> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .inherit_stdio()
        .args(&invocation.argv)
        .envs(&invocation.env);
    if invocation.inherit_network {
        // The CLI's `-S tcp` and `-S udp` both default to on.
        builder.inherit_network().allow_tcp(true).allow_udp(true);
    }
    for (host, guest) in &invocation.dirs {
        builder
            .preopened_dir(host, guest, FsPerms::ReadWrite)
            .map_err(|e| e.context(format!("preopening {host}")))?;
    }
    Ok(builder)
}

fn run(invocation: &Invocation) -> wasmtime::Result<()> {
    let mut config = Config::new();
    // What `wasmtime run` enables by default beyond the crate's defaults.
    config.wasm_threads(true);
    config.epoch_interruption(invocation.epoch_interruption);
    if invocation.winch {
        config.strategy(wasmtime::Strategy::Winch);
    }
    let engine = Engine::new(&config)?;
    let path = &invocation.argv[0];
    if let Some(artifact) = &invocation.precompiled {
        return run_precompiled(&engine, artifact, invocation);
    }
    let bytes = std::fs::read(path)
        .map_err(|e| wasmtime::Error::from(e).context(format!("reading {path}")))?;
    let component = wasmparser::Parser::is_component(&bytes);
    if let Some(out) = &invocation.compile_only {
        let compiled = if component {
            engine.precompile_component(&bytes)?
        } else {
            engine.precompile_module(&bytes)?
        };
        return std::fs::write(out, compiled)
            .map_err(|e| wasmtime::Error::from(e).context(format!("writing {out}")));
    }
    if component {
        run_component(&engine, Component::new(&engine, &bytes)?, invocation)
    } else {
        run_module(&engine, Module::new(&engine, &bytes)?, invocation)
    }
}

fn run_precompiled(
    engine: &Engine,
    artifact: &str,
    invocation: &Invocation,
) -> wasmtime::Result<()> {
    // SAFETY: the artifact was written by this binary's `--compile-only`, for this engine.
    match Engine::detect_precompiled_file(artifact)? {
        Some(Precompiled::Module) => {
            let module = unsafe { Module::deserialize_file(engine, artifact)? };
            run_module(engine, module, invocation)
        }
        Some(Precompiled::Component) => {
            let component = unsafe { Component::deserialize_file(engine, artifact)? };
            run_component(engine, component, invocation)
        }
        None => Err(wasmtime::Error::msg(format!(
            "{artifact} is not a compiled module"
        ))),
    }
}

fn run_module(engine: &Engine, module: Module, invocation: &Invocation) -> wasmtime::Result<()> {
    let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
    let mut store = Store::new(engine, wasi_builder(invocation)?.build_p1());
    // The first tick would interrupt the guest, as under wrun; nothing ticks here.
    store.set_epoch_deadline(1);
    let instance = linker.instantiate(&mut store, &module)?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    start.call(&mut store, ())
}

fn run_component(
    engine: &Engine,
    component: Component,
    invocation: &Invocation,
) -> wasmtime::Result<()> {
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let state = ComponentState(wasi_builder(invocation)?.build(), ResourceTable::new());
    let mut store = Store::new(engine, state);
    store.set_epoch_deadline(1);
    let command = Command::instantiate(&mut store, &component, &linker)?;
    match command.wasi_cli_run().call_run(&mut store)? {
        Ok(()) => Ok(()),
        Err(()) => Err(I32Exit(1).into()),
    }
}
