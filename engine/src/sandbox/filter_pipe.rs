//! A standalone command's two seccomp programs (`claim_filter::set_up_filters`), compiled by
//! its parent after the fork and handed to the sandbox on a pipe: the sandbox's half of a
//! start is the longer one, and compiling them took it 0.08 ms.
//!
//! Each program is sent as its length in instructions, then its instructions, in this
//! machine's byte order (both ends are the same process image).

use seccompiler::{sock_filter, BpfProgram};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

/// The bytes of one instruction: `code`, `jt`, `jf`, `k`.
const INSTRUCTION: usize = 8;

/// The pipe: the sandbox's end (read), then the parent's (write).
pub fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// Writes the set-up program, then the narrowing one, and closes the pipe.
pub fn send(to: OwnedFd, set_up: &BpfProgram, narrowing: &BpfProgram) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(8 + INSTRUCTION * (set_up.len() + narrowing.len()));
    for program in [set_up, narrowing] {
        bytes.extend((program.len() as u32).to_ne_bytes());
        for instruction in program {
            bytes.extend(instruction.code.to_ne_bytes());
            bytes.extend([instruction.jt, instruction.jf]);
            bytes.extend(instruction.k.to_ne_bytes());
        }
    }
    std::fs::File::from(to).write_all(&bytes)
}

/// The set-up and narrowing programs the parent sent; an error if it went away first.
pub fn receive(from: OwnedFd) -> io::Result<(BpfProgram, BpfProgram)> {
    let mut bytes = Vec::new();
    std::fs::File::from(from).read_to_end(&mut bytes)?;
    let mut rest = bytes.as_slice();
    let set_up = take_program(&mut rest)?;
    let narrowing = take_program(&mut rest)?;
    match rest.is_empty() {
        true => Ok((set_up, narrowing)),
        false => Err(truncated()),
    }
}

/// One program from the front of `rest`.
fn take_program(rest: &mut &[u8]) -> io::Result<BpfProgram> {
    let (length, after) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
    let length = u32::from_ne_bytes(*length) as usize;
    let body = after.get(..length * INSTRUCTION).ok_or_else(truncated)?;
    *rest = &after[body.len()..];
    Ok(body
        .chunks_exact(INSTRUCTION)
        .map(|bytes| sock_filter {
            code: u16::from_ne_bytes([bytes[0], bytes[1]]),
            jt: bytes[2],
            jf: bytes[3],
            k: u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        })
        .collect())
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the parent's seccomp programs ended early",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::claim_filter::set_up_filters;
    use crate::sandbox::harden::GuestFilter;

    #[test]
    fn the_programs_arrive_as_they_were_compiled() {
        for guest in GuestFilter::ALL {
            let (set_up, narrowing) = set_up_filters(guest);
            let (read, write) = pipe().unwrap();
            send(write, &set_up, &narrowing).unwrap();
            assert_eq!(receive(read).unwrap(), (set_up, narrowing));
        }
    }

    #[test]
    fn a_parent_gone_before_sending_is_an_error() {
        let (read, write) = pipe().unwrap();
        drop(write);
        assert_eq!(
            receive(read).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let (read, write) = pipe().unwrap();
        std::fs::File::from(write)
            .write_all(&[3, 0, 0, 0, 1])
            .unwrap();
        assert!(receive(read).is_err());
    }
}
