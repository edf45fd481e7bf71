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
        // The code segment padded to its last 2 MiB boundary: its last, partial 2 MiB could
        // not be mapped whole, and took one fault per 64 KiB touched (≈10 a process).
        let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
        let script = std::path::Path::new(&out).join("pad-code.ld");
        std::fs::write(&script, PAD_CODE).expect("write the linker script");
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}

/// Added to the linker's default script (`INSERT`): a section after the last code section
/// that reaches the next 2 MiB boundary. Its one byte makes it file contents, in the code's
/// read-only segment; with none it would be zero-filled memory, and the segment writable.
const PAD_CODE: &str =
    "SECTIONS { .pad_code : { BYTE(0xcc); . = ALIGN(0x200000); } } INSERT AFTER .fini;\n";
