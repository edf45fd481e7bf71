//! wrun: WebAssembly workloads in wasmtime inside a namespaced, cgroup-limited Linux sandbox.

pub mod code_pages;
pub mod config;
pub mod container;
pub mod exit;
pub mod image;
pub mod pool;
pub mod sandbox;
pub mod spec;
pub mod state;
pub mod timeline;
pub mod wasm;
