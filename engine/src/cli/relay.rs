//! `wrun exec -t` without a console socket: this process relays between its own terminal
//! (made raw, restored after) and the pseudo-terminal the exec'd process has.

use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::OwnedFd;
use wrun::sandbox::supervise::{self, NoEvents, OutputSink, Stream, Waited};

/// Relays until `child` ends; how waiting for it ended.
pub fn terminal(child: Pid, master: OwnedFd) -> nix::Result<Waited> {
    let _raw = RawMode::enter();
    let input = master
        .try_clone()
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    // Blocks on stdin for as long as it is open: the process exits without joining it.
    std::thread::spawn(move || {
        let mut input = std::fs::File::from(input);
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
    });
    supervise::wait_for(
        child,
        None,
        vec![(Stream::Stdout, master)],
        &mut ToStdout,
        &mut NoEvents,
    )
}

struct ToStdout;

impl OutputSink for ToStdout {
    fn output(&mut self, _: Stream, data: &[u8]) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(data);
        let _ = stdout.flush();
    }
}

/// This process's terminal in raw mode (keys go through as typed, the exec'd process's
/// terminal echoes them) while it lives; nothing when stdin is no terminal.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, saved);
        }
    }
}
