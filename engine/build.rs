//! Records the locked wasmtime version for `wrun version`, and links this package's binaries (`wrun`, `wrun-hooked`) with their segments on 2 MiB boundaries (file offset and address), so
//! that the kernel can map each 2 MiB of code with one fault when the page cache holds the
//! binary in 2 MiB folios (docs/architecture.md, "The binary's page cache").

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    // `wrun version` names the wasmtime it was built with, as locked.
    let lock = std::fs::read_to_string("../Cargo.lock").unwrap_or_default();
    let wasmtime = lock
        .split("[[package]]")
        .find(|package| package.contains("\nname = \"wasmtime\"\n"))
        .and_then(|package| package.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|version| version.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WRUN_WASMTIME_VERSION={wasmtime}");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        // Code in a segment of its own (GNU ld's default, not lld's), so that it starts on a
        // 2 MiB boundary too.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,max-page-size=0x200000");
        println!("cargo:rustc-link-arg-bins=-Wl,-z,separate-code");
    }
}
