//! Hostile-input-safe layer extraction: image layers (tar, optionally gzip) applied in order
//! into one directory. Every path is resolved beneath the target through cap-std, so no entry
//! can write outside it — not with `..`, not with an absolute path, not through a symlink an
//! earlier entry planted. Device nodes and FIFOs are skipped, whiteouts applied, and the
//! total size is capped against decompression bombs.

use cap_std::fs::{Dir, OpenOptions, Permissions};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Most bytes all layers of one image may unpack to.
pub const DEFAULT_UNPACKED_CAP: u64 = 8 << 30;
/// Most entries all layers of one image may hold.
pub const MAX_ENTRIES: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("failed to read the layer")]
    Read(#[source] std::io::Error),
    #[error("layer entry `{path}` is not allowed: {reason}")]
    Refused { path: String, reason: &'static str },
    #[error("failed to write layer entry `{path}`")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the layers unpack to more than {cap} bytes (a decompression bomb?)")]
    TooLarge { cap: u64 },
    #[error("the layers hold more than {MAX_ENTRIES} entries")]
    TooManyEntries,
}

/// What extraction skipped, for the caller to report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    pub devices: usize,
}

/// Applies the layer in `reader` (plain or gzip tar) on top of `target`.
pub fn apply_layer(
    target: &Dir,
    reader: impl Read,
    budget: &mut Budget,
) -> Result<Skipped, UnpackError> {
    let mut buffered = std::io::BufReader::new(reader);
    let gzip = {
        use std::io::BufRead;
        let head = buffered.fill_buf().map_err(UnpackError::Read)?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(reader);
    let mut skipped = Skipped::default();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        budget.entry()?;
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let Some(path) = clean(&raw)? else { continue };
        let shown = path.display().to_string();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        // Whiteouts: `.wh..wh..opq` empties the directory, `.wh.NAME` deletes NAME.
        if let Some(name) = &name {
            if name == ".wh..wh..opq" {
                let dir = path.parent().unwrap_or(Path::new(""));
                clear_dir(target, dir).map_err(write_err(&shown))?;
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let victim = path.with_file_name(hidden);
                remove_any(target, &victim).map_err(write_err(&shown))?;
                continue;
            }
        }
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_parents(target, parent).map_err(write_err(&shown))?;
        }
        // A link's target, or the refusal of a link without one.
        let link_name = |kind: &'static str| {
            header
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(|| refused(&shown, kind))
        };
        match header.entry_type() {
            tar::EntryType::Directory => {
                if !target.is_dir(&path) {
                    remove_any(target, &path).map_err(write_err(&shown))?;
                    target.create_dir(&path).map_err(write_err(&shown))?;
                }
                set_mode(target, &path, mode).map_err(write_err(&shown))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                budget.bytes(header.size().unwrap_or(0))?;
                remove_any(target, &path).map_err(write_err(&shown))?;
                let mut file = target
                    .open_with(&path, OpenOptions::new().write(true).create_new(true))
                    .map_err(write_err(&shown))?;
                let mut limited = (&mut entry).take(budget.left() + 1);
                let copied = std::io::copy(&mut limited, &mut file).map_err(write_err(&shown))?;
                budget.bytes_written(copied, header.size().unwrap_or(0))?;
                file.set_permissions(Permissions::from_std(std::fs::Permissions::from_mode(mode)))
                    .map_err(write_err(&shown))?;
            }
            tar::EntryType::Symlink => {
                let link = link_name("a symlink without a target")?;
                remove_any(target, &path).map_err(write_err(&shown))?;
                // The target is only text here; it is resolved inside the container's root.
                target
                    .symlink_contents(link.as_ref(), &path)
                    .map_err(write_err(&shown))?;
            }
            tar::EntryType::Link => {
                let link = link_name("a hard link without a target")?;
                let source =
                    clean(&link)?.ok_or_else(|| refused(&shown, "a hard link to the root"))?;
                remove_any(target, &path).map_err(write_err(&shown))?;
                target
                    .hard_link(&source, target, &path)
                    .map_err(write_err(&shown))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                skipped.devices += 1;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            _ => return Err(refused(&shown, "an unsupported entry type")),
        }
    }
    Ok(skipped)
}

/// The entry's path made relative; `None` for the root itself. `..` is refused outright.
fn clean(raw: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(refused(
                    &raw.display().to_string(),
                    "it climbs out with `..`",
                ))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn refused(path: &str, reason: &'static str) -> UnpackError {
    UnpackError::Refused {
        path: path.to_string(),
        reason,
    }
}

fn write_err(path: &str) -> impl FnOnce(std::io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Write {
        path: path.to_string(),
        source,
    }
}

/// Creates the directories above an entry that its layer does not list, 0755 as Docker
/// makes them (wrun's own umask would make them 0700).
fn create_parents(target: &Dir, parent: &Path) -> std::io::Result<()> {
    let mut path = PathBuf::new();
    for part in parent.components() {
        path.push(part);
        if !target.is_dir(&path) {
            target.create_dir(&path)?;
            set_mode(target, &path, 0o755)?;
        }
    }
    Ok(())
}

fn set_mode(target: &Dir, path: &Path, mode: u32) -> std::io::Result<()> {
    target.set_permissions(
        path,
        Permissions::from_std(std::fs::Permissions::from_mode(mode)),
    )
}

/// Removes whatever is at `path` (file, link or tree), if anything.
fn remove_any(target: &Dir, path: &Path) -> std::io::Result<()> {
    match target.symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => target.remove_dir_all(path),
        Ok(_) => target.remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn clear_dir(target: &Dir, dir: &Path) -> std::io::Result<()> {
    let entries = if dir.as_os_str().is_empty() {
        target.entries()?
    } else if target.is_dir(dir) {
        target.read_dir(dir)?
    } else {
        return Ok(());
    };
    for entry in entries {
        remove_any(target, &dir.join(entry?.file_name()))?;
    }
    Ok(())
}

/// The size and entry limits shared by all layers of one image.
#[derive(Debug)]
pub struct Budget {
    cap: u64,
    used: u64,
    entries: u64,
}

impl Budget {
    pub fn new(cap: u64) -> Budget {
        Budget {
            cap,
            used: 0,
            entries: 0,
        }
    }

    fn left(&self) -> u64 {
        self.cap - self.used
    }

    fn entry(&mut self) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(UnpackError::TooManyEntries);
        }
        Ok(())
    }

    fn bytes(&mut self, announced: u64) -> Result<(), UnpackError> {
        if announced > self.left() {
            return Err(UnpackError::TooLarge { cap: self.cap });
        }
        Ok(())
    }

    fn bytes_written(&mut self, written: u64, announced: u64) -> Result<(), UnpackError> {
        if written > self.left() || written != announced {
            return Err(UnpackError::TooLarge { cap: self.cap });
        }
        self.used += written;
        Ok(())
    }
}

/// Reads one file out of a layer without unpacking it (the module of a Wasm image), refusing
/// files over `cap` bytes.
pub fn read_file_from_layer(
    reader: impl Read,
    wanted: &str,
    cap: u64,
) -> Result<Option<Vec<u8>>, UnpackError> {
    let wanted = clean(Path::new(wanted))?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let path = clean(&entry.path().map_err(UnpackError::Read)?)?;
        if path == wanted && entry.header().entry_type().is_file() {
            if entry.header().size().unwrap_or(0) > cap {
                return Err(UnpackError::TooLarge { cap });
            }
            let mut bytes = Vec::new();
            (&mut entry)
                .take(cap + 1)
                .read_to_end(&mut bytes)
                .map_err(UnpackError::Read)?;
            if bytes.len() as u64 > cap {
                return Err(UnpackError::TooLarge { cap });
            }
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Item<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Device(&'a str),
    }

    fn tar_of(items: &[Item]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o755);
            match item {
                Item::File(path, data) => {
                    header.set_size(data.len() as u64);
                    header.set_entry_type(tar::EntryType::Regular);
                    set_raw_path(&mut header, path);
                    header.set_cksum();
                    builder.append(&header, *data).unwrap();
                }
                Item::Dir(path) => {
                    header.set_size(0);
                    header.set_entry_type(tar::EntryType::Directory);
                    set_raw_path(&mut header, path);
                    header.set_cksum();
                    builder.append(&header, &[][..]).unwrap();
                }
                Item::Symlink(path, target) | Item::Hardlink(path, target) => {
                    header.set_size(0);
                    header.set_entry_type(if matches!(item, Item::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    set_raw_path(&mut header, path);
                    header.set_link_name(target).unwrap();
                    header.set_cksum();
                    builder.append(&header, &[][..]).unwrap();
                }
                Item::Device(path) => {
                    header.set_size(0);
                    header.set_entry_type(tar::EntryType::Char);
                    set_raw_path(&mut header, path);
                    header.set_cksum();
                    builder.append(&header, &[][..]).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    /// Writes the name bytes as given (tar's own setters refuse `..` and absolute paths,
    /// which is exactly what hostile archives contain).
    fn set_raw_path(header: &mut tar::Header, path: &str) {
        let name = &mut header.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
    }

    fn unpack(items: &[Item]) -> (tempfile::TempDir, Result<Skipped, UnpackError>) {
        let top = tempfile::tempdir().unwrap();
        std::fs::create_dir(top.path().join("root")).unwrap();
        let dir =
            Dir::open_ambient_dir(top.path().join("root"), cap_std::ambient_authority()).unwrap();
        let result = apply_layer(&dir, &tar_of(items)[..], &mut Budget::new(1 << 20));
        (top, result)
    }

    #[test]
    fn ordinary_layers_unpack() {
        let (top, result) = unpack(&[
            Item::Dir("etc"),
            Item::File("etc/hostname", b"box\n"),
            Item::Symlink("bin", "usr/bin"),
            Item::Dir("usr/bin"),
            Item::File("usr/bin/sh", b"#!"),
            Item::Hardlink("usr/bin/ash", "usr/bin/sh"),
            Item::Symlink("abs", "/etc/hostname"),
        ]);
        result.unwrap();
        let root = top.path().join("root");
        assert_eq!(std::fs::read(root.join("etc/hostname")).unwrap(), b"box\n");
        assert_eq!(std::fs::read(root.join("bin/sh")).unwrap(), b"#!");
        assert_eq!(std::fs::read(root.join("usr/bin/ash")).unwrap(), b"#!");
        assert_eq!(
            std::fs::read_link(root.join("abs")).unwrap(),
            Path::new("/etc/hostname")
        );
    }

    #[test]
    fn traversal_is_refused() {
        for bad in ["../escape", "a/../../escape", "../../../../tmp/escape"] {
            let (top, result) = unpack(&[Item::File(bad, b"x")]);
            assert!(matches!(result, Err(UnpackError::Refused { .. })), "{bad}");
            assert!(!top.path().join("escape").exists());
        }
    }

    #[test]
    fn absolute_paths_stay_inside() {
        let (top, result) = unpack(&[Item::File("/etc/passwd-planted", b"x")]);
        result.unwrap();
        assert!(top.path().join("root/etc/passwd-planted").exists());
        assert!(!Path::new("/etc/passwd-planted").exists());
    }

    #[test]
    fn writes_through_planted_symlinks_cannot_leave() {
        let outside = tempfile::tempdir().unwrap();
        let out = outside.path().to_str().unwrap();
        for link in [out, "../..", "/"] {
            let (_top, result) =
                unpack(&[Item::Symlink("evil", link), Item::File("evil/pwned", b"x")]);
            assert!(result.is_err(), "{link}");
            assert!(!outside.path().join("pwned").exists());
        }
        let (_top, result) = unpack(&[Item::Hardlink("stolen", "../../etc/passwd")]);
        assert!(result.is_err());
    }

    #[test]
    fn devices_are_skipped_and_whiteouts_applied() {
        let (top, result) = unpack(&[
            Item::Device("dev/kmsg"),
            Item::File("keep/a", b"a"),
            Item::File("gone/b", b"b"),
            Item::File("opaque/c", b"c"),
            Item::File(".wh.gone", b""),
            Item::File("opaque/.wh..wh..opq", b""),
            Item::File("opaque/d", b"d"),
        ]);
        assert_eq!(result.unwrap(), Skipped { devices: 1 });
        let root = top.path().join("root");
        assert!(!root.join("dev/kmsg").exists());
        assert!(root.join("keep/a").exists());
        assert!(!root.join("gone").exists());
        assert!(!root.join("opaque/c").exists());
        assert!(root.join("opaque/d").exists());
    }

    #[test]
    fn bombs_hit_the_cap() {
        let top = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(top.path(), cap_std::ambient_authority()).unwrap();
        let big = vec![0u8; 4096];
        let layer = tar_of(&[Item::File("a", &big), Item::File("b", &big)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &layer).unwrap();
        let compressed = gz.finish().unwrap();
        let result = apply_layer(&dir, &compressed[..], &mut Budget::new(6000));
        assert!(matches!(result, Err(UnpackError::TooLarge { .. })));
    }

    #[test]
    fn one_file_reads_out_of_a_layer() {
        let layer = tar_of(&[Item::File("app.wasm", b"\0asm")]);
        assert_eq!(
            read_file_from_layer(&layer[..], "/app.wasm", 100).unwrap(),
            Some(b"\0asm".to_vec())
        );
        assert_eq!(
            read_file_from_layer(&layer[..], "/other", 100).unwrap(),
            None
        );
        assert!(read_file_from_layer(&layer[..], "/app.wasm", 2).is_err());
    }
}
