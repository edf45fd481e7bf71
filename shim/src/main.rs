//! `containerd-shim-wrun-v1`: containerd's runtime v2 shim for `io.containerd.wrun.v1`. It
//! runs each task with the `wrun` binary, which picks wasmtime or the native adapter.

mod exec;
mod info;
mod metrics;
mod options;
mod process;
mod service;
mod task;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.wrun.v1";

fn main() {
    let flag = |names: &[&str]| {
        std::env::args()
            .skip(1)
            .any(|a| names.contains(&a.as_str()))
    };
    if flag(&["-v", "--v", "-version", "--version"]) {
        info::print_version();
        return;
    }
    if flag(&["-info", "--info"]) {
        if let Err(e) = info::write_runtime_info() {
            eprintln!("{RUNTIME_ID}: failed to write the runtime info: {e}");
            std::process::exit(1);
        }
        return;
    }
    // The crate's reaper waits for every child (its mount helper relies on it); the shim
    // learns of wrun's exit through the reaper's subscriptions.
    containerd_shim::run::<service::Service>(RUNTIME_ID, None);
}
