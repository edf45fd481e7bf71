//! Compiles a system-call allowlist into a seccomp BPF program that finds the call by binary
//! search.
//!
//! seccompiler (which installs the program) emits a linear chain of comparisons; the kernel
//! emulates a new filter once for every system call number to build its allow cache, so a
//! linear chain of ~370 instructions took ~0.3 ms to install — an eighth of a `wrun run`.
//! A search tree makes each lookup about ten instructions deep, in the kernel and at run time.

use seccompiler::sock_filter;

/// What must hold of a call's arguments for it to be allowed (low 32 bits of one argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgCheck {
    /// `arg & mask == 0`.
    MaskClear { arg: u8, mask: u32 },
    /// `arg & mask == mask`.
    MaskSet { arg: u8, mask: u32 },
    /// `arg` is one of `values`.
    OneOf { arg: u8, values: Vec<u32> },
}

/// One allowed system call, with an optional condition on its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub nr: u32,
    pub check: Option<ArgCheck>,
}

impl Allowed {
    pub fn call(nr: i64) -> Allowed {
        Allowed {
            nr: nr as u32,
            check: None,
        }
    }

    pub fn when(nr: i64, check: ArgCheck) -> Allowed {
        Allowed {
            nr: nr as u32,
            check: Some(check),
        }
    }
}

pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// `SECCOMP_RET_ERRNO` with `errno`.
pub fn ret_errno(errno: i32) -> u32 {
    RET_ERRNO | (errno as u32 & 0xffff)
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

// Classic BPF opcodes (linux/filter.h): class | size/op | source.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn ret(k: u32) -> sock_filter {
    insn(BPF_RET_K, 0, 0, k)
}

/// The program: x86_64 only (any other architecture is killed), x32 calls denied, the
/// `allowed` calls allowed when their checks hold, everything else answered with `deny`.
pub fn compile(allowed: &[Allowed], deny: u32) -> Vec<sock_filter> {
    let mut rules = allowed.to_vec();
    rules.sort_by_key(|r| r.nr);
    rules.dedup_by_key(|r| r.nr);
    let mut program = vec![
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ret(RET_KILL_PROCESS),
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ret(deny),
    ];
    if rules.is_empty() {
        program.push(ret(deny));
    } else {
        program.extend(search(&rules, deny));
    }
    program
}

/// A subtree that, with the call number in the accumulator, decides among `rules` (sorted).
fn search(rules: &[Allowed], deny: u32) -> Vec<sock_filter> {
    if let [rule] = rules {
        return leaf(rule, deny);
    }
    let middle = rules.len() / 2;
    let below = search(&rules[..middle], deny);
    let above = search(&rules[middle..], deny);
    // `nr >= pivot` lands on the `ja`, which jumps over the lower half; BPF_JA's 32-bit
    // offset keeps any tree size reachable, where jt/jf only reach 255 ahead.
    let mut out = vec![
        insn(BPF_JGE_K, 0, 1, rules[middle].nr),
        insn(BPF_JMP_JA, 0, 0, below.len() as u32),
    ];
    out.extend(below);
    out.extend(above);
    out
}

/// Decides one candidate call: allowed if the number matches and its check holds.
fn leaf(rule: &Allowed, deny: u32) -> Vec<sock_filter> {
    let body = match &rule.check {
        None => vec![ret(RET_ALLOW)],
        Some(check) => check_block(check, deny),
    };
    let mut out = vec![insn(BPF_JEQ_K, 0, body.len() as u8, rule.nr)];
    out.extend(body);
    out.push(ret(deny));
    out
}

/// Loads the argument and returns allow or deny; never falls through.
fn check_block(check: &ArgCheck, deny: u32) -> Vec<sock_filter> {
    let load = |arg: u8| insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARGS + 8 * u32::from(arg));
    match check {
        ArgCheck::MaskClear { arg, mask } => vec![
            load(*arg),
            insn(BPF_JSET_K, 1, 0, *mask),
            ret(RET_ALLOW),
            ret(deny),
        ],
        ArgCheck::MaskSet { arg, mask } => vec![
            load(*arg),
            insn(BPF_JSET_K, 0, 1, *mask),
            ret(RET_ALLOW),
            ret(deny),
        ],
        ArgCheck::OneOf { arg, values } => {
            let mut out = vec![load(*arg)];
            for value in values {
                out.push(insn(BPF_JEQ_K, 0, 1, *value));
                out.push(ret(RET_ALLOW));
            }
            out.push(ret(deny));
            out
        }
    }
}

/// Runs `program` on one system call the way the kernel does (for the tests).
#[cfg(test)]
pub fn evaluate(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    execute(program, arch, nr, args).0
}

/// The program's answer and how many instructions it took.
#[cfg(test)]
fn execute(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
    let word = |offset: u32| -> u32 {
        match offset {
            OFFSET_NR => nr,
            OFFSET_ARCH => arch,
            o if o >= OFFSET_ARGS && (o - OFFSET_ARGS).is_multiple_of(8) => {
                args[((o - OFFSET_ARGS) / 8) as usize] as u32
            }
            o => panic!("unexpected load at offset {o}"),
        }
    };
    let mut accumulator = 0u32;
    let mut pc = 0usize;
    for steps in 1.. {
        let i = &program[pc];
        pc += 1;
        match i.code {
            BPF_LD_W_ABS => accumulator = word(i.k),
            BPF_JMP_JA => pc += i.k as usize,
            BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                let taken = match i.code {
                    BPF_JEQ_K => accumulator == i.k,
                    BPF_JGE_K => accumulator >= i.k,
                    _ => accumulator & i.k != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            BPF_RET_K => return (i.k, steps),
            code => panic!("unexpected instruction {code:#x}"),
        }
    }
    unreachable!("the loop only ends by returning")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: u32 = RET_ERRNO | 1;

    fn rules() -> Vec<Allowed> {
        let mut rules: Vec<Allowed> = (0..300).step_by(3).map(Allowed::call).collect();
        rules.push(Allowed::when(
            301,
            ArgCheck::MaskClear { arg: 2, mask: 0x4 },
        ));
        rules.push(Allowed::when(
            302,
            ArgCheck::MaskSet {
                arg: 0,
                mask: 0x10000,
            },
        ));
        rules.push(Allowed::when(
            303,
            ArgCheck::OneOf {
                arg: 1,
                values: vec![7, 9],
            },
        ));
        rules
    }

    fn run(program: &[sock_filter], nr: u32, args: [u64; 6]) -> u32 {
        evaluate(program, AUDIT_ARCH_X86_64, nr, args)
    }

    #[test]
    fn exactly_the_listed_calls_are_allowed() {
        let program = compile(&rules(), DENY);
        for nr in 0..450 {
            let expected = if nr < 300 && nr % 3 == 0 {
                RET_ALLOW
            } else {
                DENY
            };
            if (301..=303).contains(&nr) {
                continue;
            }
            assert_eq!(run(&program, nr, [0; 6]), expected, "nr {nr}");
        }
    }

    #[test]
    fn argument_checks_hold() {
        let program = compile(&rules(), DENY);
        assert_eq!(run(&program, 301, [0, 0, 0x3, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&program, 301, [0, 0, 0x7, 0, 0, 0]), DENY);
        assert_eq!(run(&program, 302, [0x10f00, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&program, 302, [0x00f00, 0, 0, 0, 0, 0]), DENY);
        assert_eq!(run(&program, 303, [0, 9, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&program, 303, [0, 8, 0, 0, 0, 0]), DENY);
    }

    #[test]
    fn other_architectures_die_and_x32_is_denied() {
        let program = compile(&rules(), DENY);
        assert_eq!(evaluate(&program, 0x4000_0003, 3, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(run(&program, X32_SYSCALL_BIT | 3, [0; 6]), DENY);
    }

    #[test]
    fn lookups_are_shallow() {
        let program = compile(&rules(), DENY);
        assert!(program.len() > 300);
        let deepest = (0..450)
            .map(|nr| execute(&program, AUDIT_ARCH_X86_64, nr, [0; 6]).1)
            .max()
            .unwrap();
        // 103 rules: a 7-level search (two instructions a level) plus prologue and leaf.
        assert!(deepest <= 24, "deepest lookup took {deepest} instructions");
    }

    #[test]
    fn an_empty_list_denies_everything() {
        let program = compile(&[], DENY);
        assert_eq!(run(&program, 0, [0; 6]), DENY);
    }
}
