//! The security profile of native workloads: the default capability set and seccomp policy
//! (in the spirit of Docker's), and the translation of a bundle's own `linux.seccomp`.

use crate::sandbox::bpf::{self, ArgCheck, Rule};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::BpfProgram;
use std::str::FromStr;

/// The capabilities a native workload keeps by default: podman's default set, which is
/// Docker's without `CAP_MKNOD` (no new device nodes), `CAP_NET_RAW` (no raw sockets) and
/// `CAP_AUDIT_WRITE`.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// System calls a native workload may not make (EPERM), as Docker's default profile
/// refuses them to a container without extra capabilities.
const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_quotactl,
    libc::SYS_lookup_dcookie,
    libc::SYS_userfaultfd,
    libc::SYS_uselib,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_fsconfig,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_get_mempolicy,
    libc::SYS_set_mempolicy,
    libc::SYS_mbind,
    libc::SYS_move_pages,
    libc::SYS_nfsservctl,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    // io_uring's operations run in kernel workers that seccomp never sees (denied by
    // Docker since 25.0 and by Podman).
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// Namespace flags whose creation needs privileges a container lacks.
const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// The default policy: everything but [`DENIED`]; `unshare` and `clone` only without
/// namespace flags; `clone3` answers ENOSYS (so libcs fall back to `clone`, whose flags the
/// filter can see); `personality` only for the ordinary personalities.
pub fn default_filter() -> BpfProgram {
    let deny = bpf::ret_errno(libc::EPERM);
    let mut rules: Vec<Rule> = DENIED.iter().map(|&nr| Rule::new(nr, deny)).collect();
    for nr in [libc::SYS_unshare, libc::SYS_clone] {
        rules.push(Rule::when(
            nr,
            vec![ArgCheck::MaskClear {
                arg: 0,
                mask: NAMESPACE_FLAGS,
            }],
            bpf::RET_ALLOW,
        ));
        rules.push(Rule::new(nr, deny));
    }
    rules.push(Rule::new(libc::SYS_clone3, bpf::ret_errno(libc::ENOSYS)));
    for persona in [0u32, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff] {
        rules.push(Rule::when(
            libc::SYS_personality,
            vec![ArgCheck::Eq {
                arg: 0,
                value: persona,
            }],
            bpf::RET_ALLOW,
        ));
    }
    rules.push(Rule::new(libc::SYS_personality, deny));
    bpf::compile(&rules, bpf::RET_ALLOW, deny)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeccompSpecError {
    #[error("linux.seccomp: action {0} is not supported")]
    Action(String),
    #[error("linux.seccomp: argument {index} value {value:#x} does not fit 32 bits")]
    WideValue { index: usize, value: u64 },
    #[error("linux.seccomp: argument index {0} is out of range")]
    Index(usize),
    #[error("linux.seccomp: only the x86_64 architecture is supported")]
    Architecture,
    #[error("linux.seccomp: {0} is not supported")]
    Unsupported(&'static str),
}

/// Compiles a bundle's `linux.seccomp` into a program with the same meaning.
pub fn from_spec(seccomp: &LinuxSeccomp) -> Result<BpfProgram, SeccompSpecError> {
    if seccomp.listener_path().is_some() {
        return Err(SeccompSpecError::Unsupported("a seccomp notify listener"));
    }
    if let Some(arches) = seccomp.architectures() {
        let names: Vec<String> = arches.iter().map(|a| format!("{a:?}")).collect();
        if !names.iter().any(|n| {
            n.to_ascii_lowercase().contains("x86_64") || n.to_ascii_lowercase().contains("x8664")
        }) && !names.is_empty()
        {
            return Err(SeccompSpecError::Architecture);
        }
    }
    let default = action(&seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut rules = Vec::new();
    for syscall in seccomp.syscalls().iter().flatten() {
        let act = action(&syscall.action(), syscall.errno_ret())?;
        let mut checks = Vec::new();
        for arg in syscall.args().iter().flatten() {
            checks.push(arg_check(
                arg.index(),
                arg.value(),
                arg.value_two(),
                arg.op(),
            )?);
        }
        for name in syscall.names() {
            // As runc and crun (libseccomp) do: a name this architecture does not have
            // (Podman's and Docker's profiles list `bdflush`, `socketcall`…) is skipped.
            let Ok(nr) = syscalls::Sysno::from_str(name) else {
                tracing::debug!(name, "linux.seccomp: no such system call here, skipped");
                continue;
            };
            rules.push(Rule::when(nr.id() as i64, checks.clone(), act));
        }
    }
    Ok(bpf::compile(&rules, default, default))
}

fn action(action: &LinuxSeccompAction, errno: Option<u32>) -> Result<u32, SeccompSpecError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => bpf::RET_ALLOW,
        LinuxSeccompAction::ScmpActErrno => {
            bpf::ret_errno(errno.unwrap_or(libc::EPERM as u32) as i32)
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            bpf::RET_KILL_THREAD
        }
        LinuxSeccompAction::ScmpActKillProcess => bpf::RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => bpf::RET_TRAP,
        LinuxSeccompAction::ScmpActLog => bpf::RET_LOG,
        other => return Err(SeccompSpecError::Action(format!("{other:?}"))),
    })
}

fn arg_check(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> Result<ArgCheck, SeccompSpecError> {
    if index > 5 {
        return Err(SeccompSpecError::Index(index));
    }
    let narrow =
        |v: u64| u32::try_from(v).map_err(|_| SeccompSpecError::WideValue { index, value: v });
    use LinuxSeccompOperator as Op;
    let (arg, first) = (index as u8, narrow(value)?);
    Ok(match op {
        Op::ScmpCmpEq => ArgCheck::Eq { arg, value: first },
        Op::ScmpCmpNe => ArgCheck::Ne { arg, value: first },
        Op::ScmpCmpGe => ArgCheck::Ge { arg, value: first },
        Op::ScmpCmpGt => ArgCheck::Gt { arg, value: first },
        Op::ScmpCmpLe => ArgCheck::Le { arg, value: first },
        Op::ScmpCmpLt => ArgCheck::Lt { arg, value: first },
        Op::ScmpCmpMaskedEq => ArgCheck::MaskedEq {
            arg,
            mask: first,
            value: narrow(value_two.unwrap_or(0))?,
        },
    })
}

/// Capability names (`CAP_X`) as the caps crate knows them; unknown names are refused.
pub fn capabilities<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<caps::CapsHashSet, String> {
    names
        .into_iter()
        .map(|name| caps::Capability::from_str(name).map_err(|_| name.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: u32 = 0xc000_003e;

    /// The filter's verdict on call `nr` with `first` as its first argument (the others 0).
    fn with_arg(program: &BpfProgram, nr: i64, first: u64) -> u32 {
        bpf::evaluate(program, ARCH, nr as u32, [first, 0, 0, 0, 0, 0])
    }

    #[test]
    fn the_default_profile_denies_what_docker_denies() {
        let program = default_filter();
        let deny = bpf::ret_errno(libc::EPERM);
        for nr in [
            libc::SYS_mount,
            libc::SYS_ptrace,
            libc::SYS_kexec_load,
            libc::SYS_bpf,
            libc::SYS_keyctl,
        ] {
            assert_eq!(with_arg(&program, nr, 0), deny, "{nr}");
        }
        assert_eq!(with_arg(&program, libc::SYS_read, 0), bpf::RET_ALLOW);
        assert_eq!(with_arg(&program, libc::SYS_execve, 0), bpf::RET_ALLOW);
        let user = libc::CLONE_NEWUSER as u64;
        assert_eq!(with_arg(&program, libc::SYS_unshare, user), deny);
        assert_eq!(
            with_arg(&program, libc::SYS_unshare, libc::CLONE_FILES as u64),
            bpf::RET_ALLOW
        );
        let fork = libc::SIGCHLD as u64;
        assert_eq!(with_arg(&program, libc::SYS_clone, fork), bpf::RET_ALLOW);
        assert_eq!(with_arg(&program, libc::SYS_clone, fork | user), deny);
        assert_eq!(
            with_arg(&program, libc::SYS_clone3, 0),
            bpf::ret_errno(libc::ENOSYS)
        );
        assert_eq!(with_arg(&program, libc::SYS_personality, 0), bpf::RET_ALLOW);
        assert_eq!(with_arg(&program, libc::SYS_personality, 0x40_0000), deny);
    }

    #[test]
    fn bundle_policies_translate() {
        let json = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        }"#;
        let seccomp: LinuxSeccomp = serde_json::from_str(json).unwrap();
        let program = from_spec(&seccomp).unwrap();
        let enosys = bpf::ret_errno(38);
        assert_eq!(with_arg(&program, libc::SYS_write, 0), bpf::RET_ALLOW);
        assert_eq!(with_arg(&program, libc::SYS_mount, 0), enosys);
        assert_eq!(with_arg(&program, libc::SYS_personality, 8), bpf::RET_ALLOW);
        assert_eq!(with_arg(&program, libc::SYS_personality, 9), enosys);
        assert_eq!(
            with_arg(&program, libc::SYS_clone, libc::SIGCHLD as u64),
            bpf::RET_ALLOW
        );
        assert_eq!(
            with_arg(&program, libc::SYS_clone, libc::CLONE_NEWNET as u64),
            enosys
        );
    }

    #[test]
    fn unknown_syscalls_are_skipped_and_the_rest_of_their_rule_holds() {
        let json = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["bdflush", "no_such_call", "mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#;
        let seccomp: LinuxSeccomp = serde_json::from_str(json).unwrap();
        let program = from_spec(&seccomp).unwrap();
        assert_eq!(with_arg(&program, libc::SYS_mount, 0), bpf::ret_errno(1));
        assert_eq!(with_arg(&program, libc::SYS_read, 0), bpf::RET_ALLOW);
    }

    #[test]
    fn default_capabilities_parse() {
        assert_eq!(
            capabilities(DEFAULT_CAPABILITIES.iter().copied())
                .unwrap()
                .len(),
            11
        );
        assert!(capabilities(["CAP_NOPE"]).is_err());
    }
}
