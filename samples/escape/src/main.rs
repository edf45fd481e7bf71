//! Attacks on the sandbox, for the escape suite: each command tries something the sandbox must
//! refuse. It prints `denied: WHAT: ERROR` and exits 0 when the attempt failed, or
//! `ESCAPED: WHAT` and exits 1 when it succeeded. `tour DIR` instead exercises the whole WASI
//! file system API inside DIR (used to list the system calls the host needs). `random` prints
//! 16 bytes of the host's `random_get` in hex: no two runs may print the same.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "read" => attempt(&format!("read {}", arg(1)), || fs::read(arg(1)).map(drop)),
        "write" => attempt(&format!("write {}", arg(1)), || fs::write(arg(1), b"pwned")),
        "list" => attempt(&format!("list {}", arg(1)), || fs::read_dir(arg(1)).map(drop)),
        "hardlink" => attempt(&format!("hard link {} -> {}", arg(2), arg(1)), || {
            fs::hard_link(arg(1), arg(2))
        }),
        "rename" => attempt(&format!("rename {} -> {}", arg(1), arg(2)), || {
            fs::rename(arg(1), arg(2))
        }),
        "connect" => connect(arg(1)),
        "descriptor" => descriptor(arg(1).parse().unwrap_or(-1)),
        "fill" => fill(arg(1)),
        "open-many" => open_many(arg(1)),
        "tour" => tour(arg(1)),
        "random" => {
            let mut random = [0u8; 16];
            getrandom(&mut random);
            println!("{}", random.iter().map(|b| format!("{b:02x}")).collect::<String>());
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("escape: unknown command `{other}`");
            ExitCode::from(2)
        }
    }
}

/// Reports the outcome of one attempt that must fail.
fn attempt(what: &str, action: impl FnOnce() -> std::io::Result<()>) -> ExitCode {
    match action() {
        Ok(()) => {
            println!("ESCAPED: {what}");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("denied: {what}: {e}");
            ExitCode::SUCCESS
        }
    }
}

#[cfg(target_env = "p2")]
fn connect(addr: &str) -> ExitCode {
    attempt(&format!("tcp connect {addr}"), || {
        std::net::TcpStream::connect(addr).map(drop)
    })
}

#[cfg(not(target_env = "p2"))]
fn connect(addr: &str) -> ExitCode {
    println!("denied: tcp connect {addr}: WASI preview 1 has no sockets");
    ExitCode::SUCCESS
}

/// Tries to reach a directory through descriptor FD with preview 1's own calls (opening "."
/// and `etc/passwd` under it, listing it): for a descriptor that must not be one, such as a
/// pre-opened socket's.
#[cfg(not(target_env = "p2"))]
fn descriptor(fd: i32) -> ExitCode {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        fn path_open(
            fd: i32,
            dirflags: i32,
            path: *const u8,
            path_len: usize,
            oflags: i32,
            base: i64,
            inheriting: i64,
            fdflags: i32,
            opened: *mut i32,
        ) -> i32;
        fn fd_readdir(fd: i32, buf: *mut u8, len: usize, cookie: i64, used: *mut usize) -> i32;
    }
    let open = |path: &str, oflags: i32| {
        let mut opened = -1;
        // SAFETY: the path and the result are live for the call.
        unsafe { path_open(fd, 0, path.as_ptr(), path.len(), oflags, 0, 0, 0, &mut opened) }
    };
    let mut buf = [0u8; 256];
    let mut used = 0;
    let errnos = [
        open(".", 2),
        open("etc/passwd", 0),
        // SAFETY: the buffer and the count are live for the call.
        unsafe { fd_readdir(fd, buf.as_mut_ptr(), buf.len(), 0, &mut used) },
    ];
    if errnos.contains(&0) {
        println!("ESCAPED: reached a directory through fd {fd} (errnos {errnos:?})");
        return ExitCode::FAILURE;
    }
    println!("denied: reach a directory through fd {fd}: errnos {errnos:?}");
    ExitCode::SUCCESS
}

#[cfg(target_env = "p2")]
fn descriptor(fd: i32) -> ExitCode {
    println!("denied: reach a directory through fd {fd}: WASI 0.2 has no descriptor numbers");
    ExitCode::SUCCESS
}

/// Writes 64 KiB chunks into DIR/fill until the file system refuses; a full disk must be an
/// error the guest sees, not harm to the host.
fn fill(dir: &str) -> ExitCode {
    let path = format!("{dir}/fill");
    let mut file = match fs::File::create(&path) {
        Ok(file) => file,
        Err(e) => {
            println!("denied: create {path}: {e}");
            return ExitCode::SUCCESS;
        }
    };
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut written: u64 = 0;
    loop {
        match file.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => {
                println!("denied: fill {path} after {} KiB: {e}", written >> 10);
                return ExitCode::SUCCESS;
            }
        }
        if written > (64 << 30) {
            println!("ESCAPED: wrote 64 GiB to {path}");
            return ExitCode::FAILURE;
        }
    }
}

/// Opens DIR/f-N files (kept open) until refused.
fn open_many(dir: &str) -> ExitCode {
    let mut open = Vec::new();
    loop {
        let path = format!("{dir}/f-{}", open.len());
        match fs::File::create(&path) {
            Ok(file) => open.push(file),
            Err(e) => {
                println!("denied: open file {} : {e}", open.len() + 1);
                return ExitCode::SUCCESS;
            }
        }
        if open.len() > 1_000_000 {
            println!("ESCAPED: a million open files");
            return ExitCode::FAILURE;
        }
    }
}

/// Uses every file system operation WASI offers, inside DIR.
fn tour(dir: &str) -> ExitCode {
    let run = || -> std::io::Result<()> {
        let sub = format!("{dir}/tour");
        let _ = fs::remove_dir_all(&sub);
        fs::create_dir(&sub)?;
        let file = format!("{sub}/a.txt");
        fs::write(&file, b"hello tour\n")?;
        let mut f = fs::OpenOptions::new().read(true).write(true).open(&file)?;
        f.seek(SeekFrom::Start(6))?;
        let mut rest = String::new();
        f.read_to_string(&mut rest)?;
        f.write_all(b"more")?;
        f.set_len(4)?;
        f.sync_all()?;
        f.sync_data()?;
        f.set_modified(std::time::SystemTime::UNIX_EPOCH)?;
        drop(f);
        fs::metadata(&file)?;
        fs::symlink_metadata(&file)?;
        // Guests cannot create symlinks with stable std; read one the host planted, if any.
        let _ = fs::read_link(format!("{dir}/link"));
        fs::hard_link(&file, format!("{sub}/hard"))?;
        fs::rename(format!("{sub}/hard"), format!("{sub}/moved"))?;
        for entry in fs::read_dir(&sub)? {
            entry?.metadata()?;
        }
        fs::copy(&file, format!("{sub}/copy"))?;
        fs::remove_file(format!("{sub}/copy"))?;
        fs::remove_dir_all(&sub)?;
        let _ = std::time::SystemTime::now();
        let _ = std::time::Instant::now();
        let mut random = [0u8; 16];
        getrandom(&mut random);
        std::thread::sleep(std::time::Duration::from_millis(1));
        Ok(())
    };
    match run() {
        Ok(()) => {
            println!("tour: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("tour: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `random_get` through the std hash map's seed, without a crate.
fn getrandom(buf: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    for byte in buf.iter_mut() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u8(0);
        *byte = hasher.finish() as u8;
    }
}
