//! `without-clone3 PROGRAM [ARG...]`: runs PROGRAM under a seccomp filter that answers
//! `clone3` with `ENOSYS` and allows everything else, as Docker's default profile and older
//! container runtimes do, so that tests can check what wrun does where `clone3` is refused.

use std::os::unix::process::CommandExt;

/// `seccomp_data`'s offsets: the call's number, then the architecture.
const NR: u32 = 0;
const ARCH: u32 = 4;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_equal(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn refuse_clone3() -> std::io::Result<()> {
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut program = [
        statement(load, ARCH),
        // Another architecture's numbers mean other calls: allow them.
        jump_if_equal(AUDIT_ARCH_X86_64, 0, 3),
        statement(load, NR),
        jump_if_equal(libc::SYS_clone3 as u32, 0, 1),
        statement(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        statement(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let filter = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; the filter outlives them (the kernel copies it).
    let installed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &filter) == 0
    };
    match installed {
        true => Ok(()),
        false => Err(std::io::Error::last_os_error()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: without-clone3 PROGRAM [ARG...]");
        std::process::exit(2);
    };
    if let Err(e) = refuse_clone3() {
        eprintln!("without-clone3: failed to install the seccomp filter: {e}");
        std::process::exit(1);
    }
    let e = std::process::Command::new(program).args(rest).exec();
    eprintln!("without-clone3: failed to run `{program}`: {e}");
    std::process::exit(127);
}
