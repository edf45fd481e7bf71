//! Run records: one lock file per live run, held by the `wrun` process that supervises it, so
//! that a later `wrun` can recognise a run whose supervisor died (`kill -9`, a crash, a reboot
//! that kept the state root) and remove what it left: its cgroup and its record.
//!
//! A pool's supervisors take reusable records instead ([`RunRecord::take_slot`]): making and
//! removing a file per pooled run cost each run an inode's allocation and release, the
//! largest single item of a pooled run's CPU on a file system without a journal (ext4 then
//! looks past every inode freed in the last minutes for one it may reuse).

use super::cgroup::RunCgroup;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A run record as one process hands it to the next ([`RunRecord::held`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HeldRecord {
    path: PathBuf,
    fd: std::os::fd::RawFd,
    #[serde(default)]
    reusable: bool,
}

impl HeldRecord {
    /// The descriptor holding the record's lock.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.fd
    }
}

/// The record of a live run; the lock is held for as long as this value lives.
pub struct RunRecord {
    path: PathBuf,
    lock: Flock<File>,
    /// A pool's slot ([`RunRecord::take_slot`]): emptied at the end, not removed.
    reusable: bool,
}

/// The name of a pool's reusable record: never a run's ID, which cannot start with a dot.
fn slot_name(slot: usize) -> String {
    format!(".slot-{slot}.lock")
}

impl RunRecord {
    /// Creates `<dir>/<id>.lock` holding the run's cgroup path, already locked when it
    /// appears, so no sweeper ever sees it unlocked: written as an unnamed file and linked
    /// in, so a supervisor killed on the way leaves nothing (where the file system has no
    /// unnamed files, or the ID's record exists already, written aside and renamed in).
    pub fn create(dir: &Path, id: &str, cgroup: &str) -> std::io::Result<RunRecord> {
        let path = dir.join(format!("{id}.lock"));
        if let Some(lock) = unnamed_locked(dir, cgroup) {
            let linked = nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                format!("/proc/self/fd/{}", lock.as_raw_fd()).as_str(),
                nix::fcntl::AT_FDCWD,
                &path,
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            );
            if linked.is_ok() {
                return Ok(RunRecord {
                    path,
                    lock,
                    reusable: false,
                });
            }
        }
        // A live run's record under the same ID (a reused `--id`) is never replaced.
        if let Ok(existing) = File::open(&path) {
            if Flock::lock(existing, FlockArg::LockExclusiveNonblock).is_err() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("a live run has the ID `{id}`"),
                ));
            }
        }
        let tmp = dir.join(format!(".{id}.tmp"));
        let file = File::options().write(true).create_new(true).open(&tmp)?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| std::io::Error::from(errno))?;
        let written = writeln!(lock, "{cgroup}").and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(RunRecord {
            path,
            lock,
            reusable: false,
        })
    }

    /// Takes the pool's reusable record number `slot` in `dir` (made the first time), holding
    /// `cgroup`. An empty record is a free one. One a dead supervisor left naming cgroups is
    /// cleaned up first, as a sweep would. Fails with `WouldBlock` while another process holds
    /// it.
    pub fn take_slot(dir: &Path, slot: usize, cgroup: &str) -> std::io::Result<RunRecord> {
        use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
        let path = dir.join(slot_name(slot));
        // A sweep removes a free record it can lock: taken from under it, look again.
        for _ in 0..3 {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
            let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, errno)| std::io::Error::from(errno))?;
            let metadata = lock.metadata()?;
            if metadata.nlink() == 0 {
                continue;
            }
            if metadata.len() > 0 {
                let mut left = String::new();
                std::io::Read::read_to_string(&mut &*lock, &mut left)?;
                if !remove_named_cgroups(&left, &slot_name(slot)) {
                    return Err(std::io::Error::other(format!(
                        "a dead run's cgroups in {} could not be removed",
                        path.display()
                    )));
                }
            }
            let text = format!("{cgroup}\n");
            lock.write_all_at(text.as_bytes(), 0)?;
            // A free record is empty: the write alone gives it its length.
            if metadata.len() > text.len() as u64 {
                lock.set_len(text.len() as u64)?;
            }
            return Ok(RunRecord {
                path,
                lock,
                reusable: true,
            });
        }
        Err(std::io::Error::other(format!(
            "{} was removed each time it was taken",
            path.display()
        )))
    }

    /// Replaces the cgroups a sweep removes (a pooled sandbox moved to its claim's cgroup
    /// names both until it has left its own), one per line, under the held lock. Written
    /// over the old text, then cut to length: a process that dies in between leaves a
    /// record naming at least every cgroup that exists, never an empty one.
    pub fn name_cgroups(&mut self, cgroups: &[&str]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let text = format!("{}\n", cgroups.join("\n"));
        self.lock.write_all_at(text.as_bytes(), 0)?;
        self.lock.set_len(text.len() as u64)
    }

    /// The record's path and the descriptor that holds its lock, for a process that carries
    /// the run on after an exec: the lock belongs to the open file, which the exec keeps.
    pub fn held(&self) -> HeldRecord {
        HeldRecord {
            path: self.path.clone(),
            fd: self.lock.as_raw_fd(),
            reusable: self.reusable,
        }
    }

    /// The record `held` describes, its lock still held through the descriptor the process
    /// this one was exec'd from left open.
    ///
    /// # Safety
    /// `held.fd` must be that open descriptor, owned by nothing else in this process.
    pub unsafe fn from_held(held: HeldRecord) -> std::io::Result<RunRecord> {
        use std::os::fd::FromRawFd;
        // SAFETY: the caller's promise.
        let file = unsafe { File::from_raw_fd(held.fd) };
        // The lock is this open file's already: taking it again only confirms it.
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| std::io::Error::from(errno))?;
        Ok(RunRecord {
            path: held.path,
            lock,
            reusable: held.reusable,
        })
    }

    /// Ends the record of a run that was cleaned up normally: removed, or a pool's slot left
    /// empty for the next run.
    pub fn finish(self) {
        if self.reusable {
            let _ = self.lock.set_len(0);
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A locked `O_TMPFILE` in `dir` holding `cgroup`, if the file system makes one.
fn unnamed_locked(dir: &Path, cgroup: &str) -> Option<Flock<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
        .ok()?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
    writeln!(lock, "{cgroup}").ok()?;
    Some(lock)
}

/// Cleans up after every run in `dir` whose supervisor is gone; returns their IDs.
pub fn sweep(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let names = entries.flatten().map(|entry| entry.file_name());
    names
        .filter_map(|name| sweep_entry(dir, &name.to_string_lossy()))
        .collect()
}

/// As [`sweep`], for at most `most` entries of `dir`, from where the last such sweep stopped
/// (a directory stream's position, kept in the file `cursor`; the start again past the end):
/// each entry costs an open and a lock (≈4 µs; with 1,000 live containers a whole sweep, its
/// listing included, took 4 ms), and sweeps one after another go round every entry where the
/// file system keeps a directory position across changes (ext4, XFS, Btrfs; tmpfs since
/// Linux 6.6); elsewhere an entry may be passed over in a round, and any other command's
/// whole sweep takes it. Where `dir` has no more than `most` entries, one sweep takes them
/// all and leaves no cursor.
pub fn sweep_some(dir: &Path, cursor: &Path, most: usize) -> Vec<String> {
    let Some(names) = names_from_cursor(dir, cursor, most) else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|name| sweep_entry(dir, name))
        .collect()
}

/// Up to `most` names of `dir`'s entries from the position saved in `cursor` on, wrapping
/// past the end once; saves where the next sweep goes on.
fn names_from_cursor(dir: &Path, cursor_path: &Path, most: usize) -> Option<Vec<String>> {
    let cursor: i64 = std::fs::read_to_string(cursor_path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let mut listing = rustix::fs::Dir::new(fd).ok()?;
    let mut wrapped = cursor == 0 || listing.seek(cursor).is_err();
    if wrapped {
        listing.rewind();
    }
    let mut names: Vec<String> = Vec::new();
    let mut next = 0;
    while names.len() < most {
        match listing.read() {
            Some(Ok(entry)) => {
                let name = entry.file_name().to_string_lossy().into_owned();
                next = entry.offset();
                if name != "." && name != ".." && !names.contains(&name) {
                    names.push(name);
                }
            }
            Some(Err(_)) => {
                // A position the directory no longer reads from: the next share starts over.
                let _ = std::fs::remove_file(cursor_path);
                return None;
            }
            None if wrapped => {
                next = 0;
                break;
            }
            None => {
                wrapped = true;
                listing.rewind();
            }
        }
    }
    let _ = match next {
        0 => std::fs::remove_file(cursor_path),
        _ => save_cursor(cursor_path, next),
    };
    Some(names)
}

/// Writes `position` over the cursor in one fixed-width write, never truncating first: a
/// concurrent run reads the old position or the new one, not an empty or mixed one.
fn save_cursor(cursor_path: &Path, position: i64) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(cursor_path)?;
    file.write_all_at(format!("{position:020}\n").as_bytes(), 0)
}

/// Cleans up after a dead run with the ID `id`, if there was one: a run given its ID (a
/// containerd task's) must not take over a dead namesake's record and cgroup.
pub fn sweep_id(dir: &Path, id: &str) -> bool {
    sweep_entry(dir, &format!("{id}.lock")).is_some()
}

/// Sweeps the entry `name` of `dir`: a dead run's record, or a record its writer never
/// named. Returns the dead run's ID.
fn sweep_entry(dir: &Path, name: &str) -> Option<String> {
    let path = dir.join(name);
    if name.starts_with('.') && name.ends_with(".tmp") {
        remove_if_unlocked(&path);
        return None;
    }
    if name.starts_with(".slot-") {
        // A pool's record, free or a dead supervisor's: no run's ID, no writable layer.
        clean_if_stale(&path, name);
        return None;
    }
    let id = name.strip_suffix(".lock")?;
    clean_if_stale(&path, id).then(|| id.to_string())
}

/// A record being written is renamed into place within microseconds of its creation; one
/// still unnamed after a while, and unlocked, was being written by a supervisor killed
/// before it named the record (it had made nothing yet). The age matters: a writer takes
/// the lock only just after creating the file.
fn remove_if_unlocked(path: &Path) {
    const SETTLED: std::time::Duration = std::time::Duration::from_secs(10);
    let Ok(file) = File::open(path) else {
        return;
    };
    let old = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age > SETTLED);
    if !old {
        return;
    }
    if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        let _ = std::fs::remove_file(path);
        drop(lock);
    }
}

/// A record whose lock can be taken belongs to a dead supervisor.
fn clean_if_stale(path: &Path, id: &str) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        return false;
    };
    let cgroups = std::fs::read_to_string(path).unwrap_or_default();
    if !remove_named_cgroups(&cgroups, id) {
        return false;
    }
    let _ = std::fs::remove_file(path);
    drop(lock);
    tracing::debug!(id, "cleaned up after a run whose supervisor died");
    true
}

/// Ends the processes of each cgroup a dead run's record names, one per line, and removes
/// the cgroups; whether all are gone.
fn remove_named_cgroups(record: &str, id: &str) -> bool {
    for cgroup in record.lines().map(str::trim).filter(|c| !c.is_empty()) {
        let cgroup = RunCgroup::existing(cgroup);
        cgroup.kill_all();
        if let Err(e) = cgroup.remove() {
            tracing::warn!("stale run {id}: {e:#}");
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn bounded_sweeps_go_round_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let cursor = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        // Made by the first share that stops short of the end.
        std::fs::remove_file(&cursor).unwrap();
        let _live = RunRecord::create(dir.path(), "live", "").unwrap();
        for i in 0..12 {
            std::fs::write(dir.path().join(format!("dead{i}.lock")), "\n").unwrap();
        }
        let mut swept = Vec::new();
        for round in 0..10 {
            let cleaned = sweep_some(dir.path(), &cursor, 4);
            assert!(cleaned.len() <= 4, "{cleaned:?}");
            if round == 0 {
                // One fixed-width write: never read empty or half-written by another run.
                assert_eq!(std::fs::read(&cursor).unwrap().len(), 21);
                let mode = std::fs::metadata(&cursor).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            swept.extend(cleaned);
        }
        swept.sort();
        let mut dead: Vec<String> = (0..12).map(|i| format!("dead{i}")).collect();
        dead.sort();
        assert_eq!(swept, dead);
        assert!(dir.path().join("live.lock").exists());
        // Within the bound, one sweep takes everything, wherever the last one stopped.
        std::fs::write(dir.path().join("dead.lock"), "\n").unwrap();
        assert_eq!(sweep_some(dir.path(), &cursor, 4), vec!["dead".to_string()]);
        std::fs::write(&cursor, "garbage").unwrap();
        std::fs::write(dir.path().join("dead.lock"), "\n").unwrap();
        assert_eq!(sweep_some(dir.path(), &cursor, 4), vec!["dead".to_string()]);
        assert!(
            !cursor.exists(),
            "a sweep that took everything leaves no cursor"
        );
    }

    #[test]
    fn live_records_are_kept_and_dead_ones_swept() {
        let dir = tempfile::tempdir().unwrap();
        let live = RunRecord::create(dir.path(), "live", "").unwrap();
        assert_eq!(
            RunRecord::create(dir.path(), "live", "")
                .err()
                .map(|e| e.kind()),
            Some(std::io::ErrorKind::AlreadyExists)
        );
        // A record whose supervisor died: the file remains, nobody holds its lock.
        std::fs::write(dir.path().join("dead.lock"), "\n").unwrap();
        // One whose supervisor died while writing it, a while ago; and one being written.
        let half = std::fs::File::create(dir.path().join(".half.tmp")).unwrap();
        half.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
        std::fs::write(dir.path().join(".new.tmp"), "").unwrap();
        assert_eq!(sweep(dir.path()), vec!["dead".to_string()]);
        assert!(dir.path().join("live.lock").exists());
        assert!(!dir.path().join("dead.lock").exists());
        assert!(!dir.path().join(".half.tmp").exists());
        assert!(dir.path().join(".new.tmp").exists());
        let mut moved = RunRecord::create(dir.path(), "moved", "pool/a").unwrap();
        moved.name_cgroups(&["task/b", "pool/a"]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved.lock")).unwrap(),
            "task/b\npool/a\n"
        );
        moved.finish();
        // A run given an ID takes a dead namesake's leftovers, never a live one's.
        std::fs::write(dir.path().join("gone.lock"), "\n").unwrap();
        assert!(sweep_id(dir.path(), "gone"));
        assert!(!dir.path().join("gone.lock").exists());
        assert!(!sweep_id(dir.path(), "live"));
        assert!(!sweep_id(dir.path(), "never"));
        live.finish();
        assert!(!dir.path().join("live.lock").exists());
        assert!(sweep(dir.path()).is_empty());
    }

    #[test]
    fn a_pools_slot_is_one_file_held_by_one_run_at_a_time_and_empty_when_free() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".slot-3.lock");
        let text = || std::fs::read_to_string(&path).unwrap();
        let inode = || std::fs::metadata(&path).unwrap().ino();
        let mut first = RunRecord::take_slot(dir.path(), 3, "pool/a").unwrap();
        assert_eq!(text(), "pool/a\n");
        let made = inode();
        let taken = RunRecord::take_slot(dir.path(), 3, "pool/b").map(|_| ());
        assert_eq!(
            taken.unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "held by a live run"
        );
        first.name_cgroups(&["task/b", "pool/a"]).unwrap();
        assert_eq!(text(), "task/b\npool/a\n");
        assert!(sweep(dir.path()).is_empty(), "a held slot is no dead run");
        first.finish();
        assert_eq!(text(), "", "emptied, not removed");
        let second = RunRecord::take_slot(dir.path(), 3, "pool/c").unwrap();
        assert_eq!((inode(), text()), (made, "pool/c\n".to_string()));
        // Handed across an exec, it stays a slot.
        let held = serde_json::to_string(&second.held()).unwrap();
        let fd = second.lock.as_raw_fd();
        std::mem::forget(second);
        let held: HeldRecord = serde_json::from_str(&held).unwrap();
        assert_eq!(held.fd(), fd);
        // SAFETY: the descriptor the forgotten record held, owned by nothing else now.
        let resumed = unsafe { RunRecord::from_held(held) }.unwrap();
        resumed.finish();
        assert_eq!(text(), "");
        // A free slot goes with a sweep, reporting no run, and is made again when taken.
        assert!(sweep(dir.path()).is_empty());
        assert!(!path.exists());
        let third = RunRecord::take_slot(dir.path(), 3, "pool/d").unwrap();
        drop(third);
        // Its holder died: the cgroup it names (gone already here) is cleaned up when the
        // slot is next taken, and the new run's replaces it.
        assert_eq!(text(), "pool/d\n");
        let fourth = RunRecord::take_slot(dir.path(), 3, "pool/e").unwrap();
        assert_eq!(text(), "pool/e\n");
        fourth.finish();
        // An older wrun's record of the same form hands over without the flag.
        let old: HeldRecord = serde_json::from_str(r#"{"path":"/x.lock","fd":7}"#).unwrap();
        assert!(!old.reusable);
    }
}
