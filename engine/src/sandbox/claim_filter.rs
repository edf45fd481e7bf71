//! A sandbox's seccomp filter in two stages: a wide one while it waits (a pooled sandbox:
//! every call any guest filter allows, whatever its arguments, and what taking a claim
//! needs; a standalone one: its guest's filter and what the rest of its set-up needs), and
//! once set up a narrow one that takes back what the guest filter does not allow.
//!
//! Installing a filter is mostly the kernel's BPF JIT, linear in the program: the Wasm filter
//! (351 instructions) took ≈0.15 ms of the claim path. The narrow filter is a fraction of it.
//! Stacked, the two answer every call as the guest filter alone would: the kernel runs every
//! filter and takes the strictest answer, the newest filter's among equally strict ones,
//! and the narrow filter answers each call the wide one allows more of exactly as the guest
//! filter does. The unit tests check that on every call number.

use super::bpf::{self, ArgCheck, Rule};
use super::harden::{GuestFilter, DENIED_ERRNO, UNLISTED_ERRNO};
use crate::spec::{RunSpec, WasmPayload};
use seccompiler::BpfProgram;
use std::collections::BTreeSet;

/// What a pooled sandbox calls between its waiting filter and its claim's, beyond what any
/// guest filter allows: taking the work (`recvmsg`, with `recvfrom` to peek at its size),
/// joining a pod's namespaces and confirming (`setns`, `sendto`, `sendmsg`; a bundle's new
/// ones: [`claim_unshare_rule`]), dropping its last two capabilities (`prctl`, `capget`, `capset`),
/// installing the caller's stdio (`dup2`, `dup3`), mapping the module's code (`mmap` and
/// `mprotect` with PROT_EXEC, a component's memory images in a `memfd_create` file), an
/// interruptible or HTTP engine's runtime (`epoll_create1`, `eventfd2`), opening the preopens
/// (musl's `open`), and the claim's filter itself (`prctl` for `no_new_privs`, `seccomp`).
/// Found by tracing claims of each kind (`strace -f` on the daemon); a call missing here
/// fails the claim, which the pool tests would show.
const CLAIM_SYSCALLS: &[i64] = &[
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_setns,
    libc::SYS_prctl,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_memfd_create,
    libc::SYS_epoll_create1,
    libc::SYS_eventfd2,
    libc::SYS_open,
    libc::SYS_seccomp,
];

/// What a standalone sandbox calls between its set-up filter, installed before it waits for
/// its go-ahead, and its guest's, beyond what its guest filter allows: joining its network
/// and cgroup namespaces (`setns`, `unshare`), getting every CPU back (`sched_setaffinity`),
/// dropping its capabilities (`prctl`, `capget`, `capset`), opening the preopens (musl's
/// `open`), and the narrowing filter itself (`seccomp`). Checked by tracing a run with a
/// `--dir` (`strace -f`: between its two filters the sandbox called `close`, `openat`,
/// `write`, `read`, `fcntl`, which every guest filter allows, and the calls above but
/// `sched_setaffinity`, which the CPU split may leave to it); a call missing here fails the
/// run, which the run tests would show.
const SET_UP_SYSCALLS: &[i64] = &[
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_sched_setaffinity,
    libc::SYS_prctl,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_open,
    libc::SYS_seccomp,
];

/// A standalone command's [`set_up_filters`], for its guest filter
/// (`harden::command_filter`).
pub fn command_filters(spec: &RunSpec, wasm: &WasmPayload) -> (BpfProgram, BpfProgram) {
    let pod = spec.sandbox.join.network.is_some();
    set_up_filters(super::harden::command_filter(wasm, pod))
}

/// A standalone sandbox's two filters for running its guest under `guest`: the set-up one,
/// which answers [`SET_UP_SYSCALLS`] with allow and every other call as `guest` does, and the
/// narrowing one installed over it once the set-up is done.
pub fn set_up_filters(guest: GuestFilter) -> (BpfProgram, BpfProgram) {
    let allowed: BTreeSet<u32> = SET_UP_SYSCALLS.iter().map(|&nr| nr as u32).collect();
    // Built once for both: it is on the sandbox's start path.
    let rules = guest.rules();
    (
        wide_filter(&allowed, &rules),
        narrowing_filter(&rules, &allowed),
    )
}

/// Every program a pooled sandbox installs, compiled once by the pool (each sandbox, a fork,
/// inherits them): building the rules of all four guest filters and compiling at the claim
/// would be on its path.
pub struct ClaimFilters {
    pub waiting: BpfProgram,
    wasm: BpfProgram,
    socket: BpfProgram,
    pod: BpfProgram,
    http_server: BpfProgram,
}

impl ClaimFilters {
    pub fn new() -> ClaimFilters {
        let waiting = waiting_allowed();
        let narrowing = |guest: GuestFilter| narrowing_filter(&guest.rules(), &waiting);
        ClaimFilters {
            waiting: waiting_program(&waiting),
            wasm: narrowing(GuestFilter::Wasm),
            socket: narrowing(GuestFilter::Socket),
            pod: narrowing(GuestFilter::Pod),
            http_server: narrowing(GuestFilter::HttpServer),
        }
    }

    /// The narrowing program that makes the waiting one `guest`'s.
    pub fn narrowing(&self, guest: GuestFilter) -> BpfProgram {
        match guest {
            GuestFilter::Wasm => &self.wasm,
            GuestFilter::Socket => &self.socket,
            GuestFilter::Pod => &self.pod,
            GuestFilter::HttpServer => &self.http_server,
        }
        .clone()
    }
}

/// What a pooled sandbox may `unshare` at its claim, and nothing else: a new network or IPC
/// namespace or both, which a bundle's claim makes instead of keeping the shared ones
/// (`pool::claim`).
fn claim_unshare_rule() -> Rule {
    let namespaces = (libc::CLONE_NEWNET | libc::CLONE_NEWIPC) as u32;
    let checks = vec![
        ArgCheck::MaskClear {
            arg: 0,
            mask: !namespaces,
        },
        ArgCheck::Ne { arg: 0, value: 0 },
    ];
    Rule::when(libc::SYS_unshare, checks, bpf::RET_ALLOW)
}

/// The waiting filter: the calls in `waiting` ([`waiting_allowed`]) allowed, `unshare` as
/// [`claim_unshare_rule`] says, every other call answered as the Wasm guest filter does.
fn waiting_program(waiting: &BTreeSet<u32>) -> BpfProgram {
    let unshare = claim_unshare_rule();
    let mut allowed = waiting.clone();
    allowed.remove(&unshare.nr);
    let mut rules = vec![unshare];
    rules.extend(GuestFilter::Wasm.rules());
    wide_filter(&allowed, &rules)
}

/// The calls the waiting filter allows with some arguments, which the narrowing filters take
/// back: [`CLAIM_SYSCALLS`], the claim's `unshare`, and every call some guest filter allows,
/// with any arguments or some.
fn waiting_allowed() -> BTreeSet<u32> {
    let mut allowed: BTreeSet<u32> = CLAIM_SYSCALLS.iter().map(|&nr| nr as u32).collect();
    allowed.insert(claim_unshare_rule().nr);
    for guest in GuestFilter::ALL {
        let rules = guest.rules();
        allowed.extend(
            rules
                .iter()
                .filter(|rule| rule.action == bpf::RET_ALLOW)
                .map(|rule| rule.nr),
        );
    }
    allowed
}

/// The calls `rules` allow whatever their arguments: those whose first rule allows without
/// a check (the first rule of a call that holds decides it).
fn always_allowed(rules: &[Rule]) -> BTreeSet<u32> {
    let mut decided = BTreeSet::new();
    let mut allowed = BTreeSet::new();
    for rule in rules {
        if decided.insert(rule.nr) && rule.checks.is_empty() && rule.action == bpf::RET_ALLOW {
            allowed.insert(rule.nr);
        }
    }
    allowed
}

/// A filter that allows the calls in `allowed` and answers every other as the guest filter
/// with `base` rules does: a pooled sandbox's before it says it is ready ([`waiting_allowed`]
/// over the Wasm filter), a standalone sandbox's before its go-ahead.
fn wide_filter(allowed: &BTreeSet<u32>, base: &[Rule]) -> BpfProgram {
    let mut rules: Vec<Rule> = allowed
        .iter()
        .map(|&nr| Rule::new(i64::from(nr), bpf::RET_ALLOW))
        .collect();
    rules.extend_from_slice(base);
    bpf::compile(
        &rules,
        bpf::ret_errno(UNLISTED_ERRNO),
        bpf::ret_errno(DENIED_ERRNO),
    )
}

/// The filter installed over a [`wide_filter`] that allowed `allowed` to run the guest under
/// the guest filter with `rules`: each call in `allowed` that it does not always allow gets
/// its own rules (then its answer for a call none of them decides); every other call passes,
/// the wide filter answering it as the guest filter does.
fn narrowing_filter(rules: &[Rule], allowed: &BTreeSet<u32>) -> BpfProgram {
    let open = always_allowed(rules);
    let taken_back: BTreeSet<u32> = allowed.difference(&open).copied().collect();
    let mut narrowing: Vec<Rule> = rules
        .iter()
        .filter(|rule| taken_back.contains(&rule.nr))
        .cloned()
        .collect();
    narrowing.extend(
        taken_back
            .iter()
            .map(|&nr| Rule::new(i64::from(nr), bpf::ret_errno(UNLISTED_ERRNO))),
    );
    bpf::compile(&narrowing, bpf::RET_ALLOW, bpf::ret_errno(DENIED_ERRNO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer of two stacked filters, `older` installed first: the stricter action, the
    /// newer filter's answer when both take the same action (the kernel's
    /// `seccomp_run_filters`, which walks from the newest filter and keeps a later answer only
    /// when its action is strictly lower as a signed number).
    fn stricter(older: u32, newer: u32) -> u32 {
        const ACTION_FULL: u32 = 0xffff_0000;
        let action = |answer: u32| (answer & ACTION_FULL) as i32;
        if action(older) < action(newer) {
            older
        } else {
            newer
        }
    }

    const X86_64: u32 = 0xc000_003e;
    const I386: u32 = 0x4000_0003;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;

    /// Argument values the guest filters' checks tell apart: memory protections, clone
    /// flags, ioctl requests, socket families and types, `open` flags, and the extremes.
    fn values() -> Vec<u64> {
        let mut values = vec![0, 1, 2, 3, 4, 5, 7, 10, 16, u64::from(u32::MAX), u64::MAX];
        values.extend(
            [
                libc::PROT_READ | libc::PROT_EXEC,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::CLONE_THREAD | libc::CLONE_VM | libc::CLONE_SIGHAND,
                libc::CLONE_VM | libc::CLONE_VFORK,
                libc::CLONE_NEWNET,
                libc::CLONE_NEWIPC | libc::CLONE_NEWNET,
                libc::CLONE_NEWNET | libc::CLONE_NEWNS,
                libc::O_DIRECTORY,
                libc::O_DIRECTORY | libc::O_CLOEXEC,
                libc::O_DIRECTORY | libc::O_CREAT,
                libc::O_DIRECTORY | libc::O_RDWR,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::SOCK_RAW,
                libc::AF_INET6,
                libc::AF_NETLINK,
                libc::AF_UNIX,
            ]
            .map(|v| v as u64),
        );
        values.extend(
            [
                libc::TCGETS,
                libc::TIOCGWINSZ,
                libc::FIONBIO,
                libc::FIOCLEX,
                libc::TIOCSTI,
            ]
            .map(|request| request as u64),
        );
        values
    }

    /// Every combination of [`values`] in the first three arguments.
    fn argument_sets() -> Vec<[u64; 6]> {
        let values = values();
        let mut sets = Vec::new();
        for &a in &values {
            for &b in &values {
                for &c in &values {
                    sets.push([a, b, c, 0, 0, 0]);
                }
            }
        }
        sets
    }

    /// The calls whose answer may depend on their arguments in some guest filter.
    fn argument_checked() -> BTreeSet<u32> {
        GuestFilter::ALL
            .iter()
            .flat_map(|guest| guest.rules())
            .filter(|rule| !rule.checks.is_empty())
            .map(|rule| rule.nr)
            .collect()
    }

    fn waiting_filter() -> BpfProgram {
        waiting_program(&waiting_allowed())
    }

    #[test]
    fn the_two_filters_together_answer_every_call_as_the_guest_filter_does() {
        let waiting = waiting_filter();
        for guest in GuestFilter::ALL {
            let narrowing = narrowing_filter(&guest.rules(), &waiting_allowed());
            assert_stacked_answer_as(guest, &waiting, &narrowing);
        }
    }

    #[test]
    fn a_standalone_sandboxs_two_filters_answer_every_call_as_its_guest_filter_does() {
        for guest in GuestFilter::ALL {
            let (set_up, narrowing) = set_up_filters(guest);
            assert_stacked_answer_as(guest, &set_up, &narrowing);
        }
    }

    #[test]
    fn a_standalone_sandbox_may_finish_its_set_up_under_its_set_up_filter() {
        let (set_up, narrowing) = set_up_filters(GuestFilter::Wasm);
        for &nr in SET_UP_SYSCALLS {
            let answer = bpf::evaluate(&set_up, X86_64, nr as u32, [0; 6]);
            assert_eq!(answer, bpf::RET_ALLOW, "{nr}");
        }
        for nr in [
            libc::SYS_mount,
            libc::SYS_execve,
            libc::SYS_fork,
            libc::SYS_bpf,
        ] {
            let answer = bpf::evaluate(&set_up, X86_64, nr as u32, [0; 6]);
            assert_ne!(answer, bpf::RET_ALLOW, "{nr}");
        }
        let whole = GuestFilter::Wasm.program().len();
        assert!(
            narrowing.len() * 4 < whole,
            "{} of {whole} instructions",
            narrowing.len()
        );
    }

    /// `older` then `newer` stacked answer every call, for both architectures and the x32
    /// calls, as `guest`'s filter alone does.
    fn assert_stacked_answer_as(guest: GuestFilter, older: &BpfProgram, newer: &BpfProgram) {
        let checked = argument_checked();
        let every_set = argument_sets();
        let plain_sets = vec![[0; 6], [u64::MAX; 6], [4, 4, 4, 4, 4, 4]];
        let alone = guest.program();
        for arch in [X86_64, I386] {
            let numbers = (0..1024u32).chain((0..1024).map(|nr| nr | X32_SYSCALL_BIT));
            for nr in numbers.chain([u32::MAX]) {
                let sets = match checked.contains(&nr) {
                    true => &every_set,
                    false => &plain_sets,
                };
                for &args in sets {
                    let expected = bpf::evaluate(&alone, arch, nr, args);
                    let both = stricter(
                        bpf::evaluate(older, arch, nr, args),
                        bpf::evaluate(newer, arch, nr, args),
                    );
                    assert_eq!(both, expected, "{guest:?}: call {nr} {args:x?}");
                }
            }
        }
    }

    #[test]
    fn a_waiting_sandbox_may_take_its_claim_but_not_mount_or_make_processes() {
        let waiting = waiting_filter();
        let answer = |nr: i64, args: [u64; 6]| bpf::evaluate(&waiting, X86_64, nr as u32, args);
        for &nr in CLAIM_SYSCALLS {
            assert_eq!(answer(nr, [0; 6]), bpf::RET_ALLOW, "{nr}");
        }
        let exec = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        assert_eq!(
            answer(libc::SYS_mmap, [0, 4096, exec, 0, 0, 0]),
            bpf::RET_ALLOW
        );
        // A bundle's new network and IPC namespaces, and no other kind.
        let unshare = |flags: i32| answer(libc::SYS_unshare, [flags as u64, 0, 0, 0, 0, 0]);
        for flags in [
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWNET | libc::CLONE_NEWIPC,
        ] {
            assert_eq!(unshare(flags), bpf::RET_ALLOW, "{flags:#x}");
        }
        for flags in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET | libc::CLONE_NEWNS,
            libc::CLONE_NEWIPC | libc::CLONE_FS,
        ] {
            assert_ne!(unshare(flags), bpf::RET_ALLOW, "{flags:#x}");
        }
        for nr in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_execve,
            libc::SYS_fork,
            libc::SYS_unshare,
            libc::SYS_ptrace,
            libc::SYS_bpf,
        ] {
            assert_ne!(answer(nr, [0; 6]), bpf::RET_ALLOW, "{nr}");
        }
    }

    #[test]
    fn the_narrowing_filter_is_a_fraction_of_the_guest_filter() {
        for guest in GuestFilter::ALL {
            let narrowing = narrowing_filter(&guest.rules(), &waiting_allowed());
            let (narrow, whole) = (narrowing.len(), guest.program().len());
            assert!(
                narrow * 2 < whole,
                "{guest:?}: {narrow} of {whole} instructions"
            );
        }
    }

    #[test]
    fn the_newer_filter_decides_between_equally_strict_answers() {
        let (eperm, enosys) = (bpf::ret_errno(libc::EPERM), bpf::ret_errno(libc::ENOSYS));
        assert_eq!(stricter(eperm, enosys), enosys);
        assert_eq!(stricter(bpf::RET_ALLOW, eperm), eperm);
        assert_eq!(stricter(eperm, bpf::RET_ALLOW), eperm);
        assert_eq!(
            stricter(bpf::RET_KILL_PROCESS, eperm),
            bpf::RET_KILL_PROCESS
        );
        assert_eq!(stricter(bpf::RET_KILL_THREAD, eperm), bpf::RET_KILL_THREAD);
        assert_eq!(
            stricter(bpf::RET_KILL_PROCESS, bpf::RET_KILL_THREAD),
            bpf::RET_KILL_PROCESS
        );
    }
}
