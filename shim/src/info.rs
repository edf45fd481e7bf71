//! `-v` and `-info`: what containerd and users ask a shim binary about itself.

use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use std::io::Write;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The same shape as containerd's own shims print.
pub fn print_version() {
    println!(
        "{}:\n  Version:  {VERSION}\n  Runtime:  {}",
        env!("CARGO_BIN_NAME"),
        crate::RUNTIME_ID
    );
}

/// containerd 2's `-info`: a `containerd.types.RuntimeInfo` message on stdout.
pub fn write_runtime_info() -> std::io::Result<()> {
    let info = RuntimeInfo {
        name: crate::RUNTIME_ID.into(),
        version: Some(RuntimeVersion {
            version: VERSION.into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let bytes = info.write_to_bytes().map_err(std::io::Error::other)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&bytes)?;
    stdout.flush()
}
