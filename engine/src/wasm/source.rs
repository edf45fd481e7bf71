//! Reads a module file and tells what it holds: a core module, a component, or WAT text.

use std::borrow::Cow;
use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The two kinds of binary wasmtime runs, told apart by the binary header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// A core module: run as a WASI preview 1 command (`_start`).
    Module,
    /// A component: run as a WASI 0.2 `wasi:cli/command`.
    Component,
}

impl Kind {
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Component => "component",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Kind> {
        match tag {
            "module" => Some(Kind::Module),
            "component" => Some(Kind::Component),
            _ => None,
        }
    }
}

/// Why a module file could not be turned into a wasm binary.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("failed to read module `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a WebAssembly module: it has no `\\0asm` header and is not WAT text")]
    NotWasm { path: PathBuf },
    #[error(
        "`{path}` is truncated: a wasm binary needs an 8-byte header, the file has {len} bytes"
    )]
    Truncated { path: PathBuf, len: usize },
    #[error("`{path}` has an unsupported wasm binary version {version:#010x}")]
    UnknownVersion { path: PathBuf, version: u32 },
    #[error("`{path}` is not valid WAT text: {message}")]
    BadWat { path: PathBuf, message: String },
}

/// The bytes of a module file as given, before any translation.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// What identifies one version of a file without reading it: if any field differs, the file
/// may have changed. Used to remember a module's digest between runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    pub fn of(meta: &Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// A name for this identity, usable as a file name.
    pub fn name(&self) -> String {
        format!(
            "{}-{}-{}-{}.{:09}-{}.{:09}",
            self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }

    /// Whether the file last changed well before `now_secs`. File times advance in clock
    /// ticks, so a change within the same tick as an earlier one can leave the identity as it
    /// was; once a tick has passed, any further change shows (git's "racy" index rule).
    pub fn settled(&self, now_secs: i64) -> bool {
        self.ctime.0.saturating_add(2) < now_secs
    }
}

/// An opened module file, read only when its bytes are needed.
#[derive(Debug)]
pub struct ModuleFile {
    pub path: PathBuf,
    file: File,
    meta: Metadata,
}

impl ModuleFile {
    pub fn new(file: File, path: &Path) -> Result<ModuleFile, SourceError> {
        let meta = file.metadata().map_err(|source| SourceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ModuleFile {
            path: path.to_path_buf(),
            file,
            meta,
        })
    }

    pub fn identity(&self) -> FileIdentity {
        FileIdentity::of(&self.meta)
    }

    /// The kind the first eight bytes announce; `None` for text.
    pub fn header_kind(&self) -> Result<Option<Kind>, SourceError> {
        let mut header = [0u8; 8];
        let mut len = 0;
        while len < header.len() {
            match self.file.read_at(&mut header[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(SourceError::Read {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        kind_of_header(&header[..len], &self.path)
    }

    /// Reads the whole file.
    pub fn read(&self) -> Result<Source, SourceError> {
        let mut bytes = vec![0u8; self.meta.len() as usize];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(|source| SourceError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(Source {
            path: self.path.clone(),
            bytes,
        })
    }
}

/// The kind a binary header announces; `None` when the bytes do not start like wasm.
fn kind_of_header(bytes: &[u8], path: &Path) -> Result<Option<Kind>, SourceError> {
    if !bytes.starts_with(WASM_MAGIC) {
        return Ok(None);
    }
    if bytes.len() < 8 {
        return Err(SourceError::Truncated {
            path: path.to_path_buf(),
            len: bytes.len(),
        });
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        Ok(Some(Kind::Module))
    } else if wasmparser::Parser::is_component(bytes) {
        Ok(Some(Kind::Component))
    } else {
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("8-byte header"));
        Err(SourceError::UnknownVersion {
            path: path.to_path_buf(),
            version,
        })
    }
}

impl Source {
    /// The kind the binary header announces; `None` for text, which must be parsed first.
    pub fn binary_kind(&self) -> Result<Option<Kind>, SourceError> {
        kind_of_header(&self.bytes, &self.path)
    }

    /// The wasm binary and its kind, translating WAT text when that is what the file holds.
    pub fn binary(&self) -> Result<(Cow<'_, [u8]>, Kind), SourceError> {
        if let Some(kind) = self.binary_kind()? {
            return Ok((Cow::Borrowed(&self.bytes), kind));
        }
        let text = std::str::from_utf8(&self.bytes).map_err(|_| SourceError::NotWasm {
            path: self.path.clone(),
        })?;
        if !looks_like_wat(text) {
            return Err(SourceError::NotWasm {
                path: self.path.clone(),
            });
        }
        let binary = wat::parse_str(text).map_err(|e| SourceError::BadWat {
            path: self.path.clone(),
            message: e.to_string().lines().next().unwrap_or_default().to_string(),
        })?;
        let kind = if wasmparser::Parser::is_component(&binary) {
            Kind::Component
        } else {
            Kind::Module
        };
        Ok((Cow::Owned(binary), kind))
    }
}

/// WAT starts with `(` once comments and blank space are skipped; anything else (a shell
/// script, an ELF file) is reported as "not wasm" rather than as a WAT syntax error.
fn looks_like_wat(text: &str) -> bool {
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(";;") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = rest.strip_prefix("(;") {
            rest = after.split_once(";)").map_or("", |(_, tail)| tail);
        } else {
            return rest.starts_with('(');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(bytes: &[u8]) -> Source {
        Source {
            path: "m.wasm".into(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn headers_tell_modules_from_components() {
        let module = source(b"\0asm\x01\0\0\0");
        assert_eq!(module.binary_kind().unwrap(), Some(Kind::Module));
        let component = source(b"\0asm\x0d\0\x01\0");
        assert_eq!(component.binary_kind().unwrap(), Some(Kind::Component));
    }

    #[test]
    fn short_and_unknown_headers_are_refused() {
        assert!(matches!(
            source(b"\0asm\x01").binary_kind(),
            Err(SourceError::Truncated { len: 5, .. })
        ));
        assert!(matches!(
            source(b"\0asm\x02\0\0\0").binary_kind(),
            Err(SourceError::UnknownVersion { version: 2, .. })
        ));
    }

    #[test]
    fn wat_text_is_translated() {
        let wat = source(b";; hi\n(module)");
        let (binary, kind) = wat.binary().unwrap();
        assert_eq!(kind, Kind::Module);
        assert!(binary.starts_with(WASM_MAGIC));
        let (_, kind) = source(b"(component)").binary().unwrap();
        assert_eq!(kind, Kind::Component);
    }

    #[test]
    fn module_files_read_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, b"\0asm\x0d\0\x01\0rest").unwrap();
        let module = ModuleFile::new(File::open(&path).unwrap(), &path).unwrap();
        assert_eq!(module.header_kind().unwrap(), Some(Kind::Component));
        assert_eq!(module.read().unwrap().bytes.len(), 12);
        let short = dir.path().join("s.wasm");
        std::fs::write(&short, b"\0as").unwrap();
        let module = ModuleFile::new(File::open(&short).unwrap(), &short).unwrap();
        assert_eq!(module.header_kind().unwrap(), None);
    }

    #[test]
    fn identity_changes_with_the_file_and_settles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, b"one").unwrap();
        let first = FileIdentity::of(&std::fs::metadata(&path).unwrap());
        std::fs::write(&path, b"three").unwrap();
        let second = FileIdentity::of(&std::fs::metadata(&path).unwrap());
        assert_ne!(first, second);
        assert_ne!(first.name(), second.name());
        let now = second.ctime.0;
        assert!(!second.settled(now));
        assert!(second.settled(now + 3));
    }

    #[test]
    fn other_files_are_not_wasm() {
        for bytes in [&b"#!/bin/sh\necho hi\n"[..], b"\x7fELF\x02\x01", b""] {
            assert!(
                matches!(source(bytes).binary(), Err(SourceError::NotWasm { .. })),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            source(b"(module (func (bogus)))").binary(),
            Err(SourceError::BadWat { .. })
        ));
    }
}
