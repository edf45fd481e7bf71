//! Compiles a system-call policy into a seccomp BPF program that finds the call by binary
//! search.
//!
//! seccompiler (which installs the program) emits a linear chain of comparisons; the kernel
//! emulates a new filter once for every system call number to build its allow cache, so a
//! linear chain of ~370 instructions took ~0.3 ms to install — an eighth of a `wrun run`.
//! A search tree makes each lookup about ten instructions deep, in the kernel and at run time.
//!
//! A policy is a default action and rules; the rules of one call are tried in order and the
//! first whose argument checks all hold decides, else the default does (OCI's semantics).
//! Arguments are compared on their low 32 bits, where every argument filtered on here lives.

use seccompiler::sock_filter;

/// A condition on one argument (its low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgCheck {
    /// `arg & mask == 0`.
    MaskClear {
        arg: u8,
        mask: u32,
    },
    /// `arg & mask == value`.
    MaskedEq {
        arg: u8,
        mask: u32,
        value: u32,
    },
    Eq {
        arg: u8,
        value: u32,
    },
    Ne {
        arg: u8,
        value: u32,
    },
    /// Unsigned comparisons with `value`.
    Ge {
        arg: u8,
        value: u32,
    },
    Gt {
        arg: u8,
        value: u32,
    },
    Le {
        arg: u8,
        value: u32,
    },
    Lt {
        arg: u8,
        value: u32,
    },
}

/// One rule: when the call is `nr` and every check holds, `action` is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub nr: u32,
    pub checks: Vec<ArgCheck>,
    pub action: u32,
}

impl Rule {
    pub fn new(nr: i64, action: u32) -> Rule {
        Rule {
            nr: nr as u32,
            checks: Vec::new(),
            action,
        }
    }

    pub fn when(nr: i64, checks: Vec<ArgCheck>, action: u32) -> Rule {
        Rule {
            nr: nr as u32,
            checks,
            action,
        }
    }
}

pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
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
const BPF_ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn ret(k: u32) -> sock_filter {
    insn(BPF_RET_K, 0, 0, k)
}

/// The program: x86_64 only (any other architecture is killed), x32 calls answered with
/// `x32`, then the rules, and `default` for everything else.
pub fn compile(rules: &[Rule], default: u32, x32: u32) -> Vec<sock_filter> {
    let mut numbers: Vec<u32> = rules.iter().map(|r| r.nr).collect();
    numbers.sort_unstable();
    numbers.dedup();
    let groups: Vec<(u32, Vec<&Rule>)> = numbers
        .into_iter()
        .map(|nr| (nr, rules.iter().filter(|r| r.nr == nr).collect()))
        .collect();
    let mut program = vec![
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ret(RET_KILL_PROCESS),
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ret(x32),
    ];
    if groups.is_empty() {
        program.push(ret(default));
    } else {
        program.extend(search(&groups, default));
    }
    program
}

/// A subtree that, with the call number in the accumulator, decides among `groups`.
fn search(groups: &[(u32, Vec<&Rule>)], default: u32) -> Vec<sock_filter> {
    if let [(nr, rules)] = groups {
        return leaf(*nr, rules, default);
    }
    let middle = groups.len() / 2;
    let below = search(&groups[..middle], default);
    let above = search(&groups[middle..], default);
    // `nr >= pivot` lands on the `ja`, which jumps over the lower half; BPF_JA's 32-bit
    // offset keeps any tree size reachable, where jt/jf only reach 255 ahead.
    let mut out = vec![
        insn(BPF_JGE_K, 0, 1, groups[middle].0),
        insn(BPF_JMP_JA, 0, 0, below.len() as u32),
    ];
    out.extend(below);
    out.extend(above);
    out
}

/// Decides one call number: its rules in order, then `default`.
fn leaf(nr: u32, rules: &[&Rule], default: u32) -> Vec<sock_filter> {
    let mut body = Vec::new();
    for rule in rules {
        body.extend(rule_block(rule));
    }
    body.push(ret(default));
    let mut out = vec![insn(BPF_JEQ_K, 0, body.len() as u8, nr)];
    out.extend(body);
    out.push(ret(default));
    out
}

/// A rule's checks, each jumping past the block when it fails, then its action. The call
/// number is reloaded in front, since checks overwrite the accumulator.
fn rule_block(rule: &Rule) -> Vec<sock_filter> {
    if rule.checks.is_empty() {
        return vec![ret(rule.action)];
    }
    let mut parts: Vec<Vec<sock_filter>> = rule.checks.iter().map(check).collect();
    parts.push(vec![ret(rule.action)]);
    let total: usize = parts.iter().map(Vec::len).sum();
    // Patch the failure jumps (marked 255) to land just past the block.
    let mut block = Vec::with_capacity(total);
    for part in parts {
        for mut i in part {
            let here = block.len();
            let to_end = (total - here - 1) as u8;
            if i.jt == u8::MAX {
                i.jt = to_end;
            }
            if i.jf == u8::MAX {
                i.jf = to_end;
            }
            block.push(i);
        }
    }
    block
}

/// Instructions that fall through when `check` holds and jump with offset 255 (patched by
/// [`rule_block`]) when it fails.
fn check(check: &ArgCheck) -> Vec<sock_filter> {
    const FAIL: u8 = u8::MAX;
    let load = |arg: u8| insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARGS + 8 * u32::from(arg));
    match *check {
        ArgCheck::MaskClear { arg, mask } => vec![load(arg), insn(BPF_JSET_K, FAIL, 0, mask)],
        ArgCheck::MaskedEq { arg, mask, value } => vec![
            load(arg),
            insn(BPF_ALU_AND_K, 0, 0, mask),
            insn(BPF_JEQ_K, 0, FAIL, value),
        ],
        ArgCheck::Eq { arg, value } => vec![load(arg), insn(BPF_JEQ_K, 0, FAIL, value)],
        ArgCheck::Ne { arg, value } => vec![load(arg), insn(BPF_JEQ_K, FAIL, 0, value)],
        ArgCheck::Ge { arg, value } => vec![load(arg), insn(BPF_JGE_K, 0, FAIL, value)],
        ArgCheck::Gt { arg, value } => vec![load(arg), insn(BPF_JGT_K, 0, FAIL, value)],
        ArgCheck::Le { arg, value } => vec![load(arg), insn(BPF_JGT_K, FAIL, 0, value)],
        ArgCheck::Lt { arg, value } => vec![load(arg), insn(BPF_JGE_K, FAIL, 0, value)],
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
            BPF_ALU_AND_K => accumulator &= i.k,
            BPF_JMP_JA => pc += i.k as usize,
            BPF_JEQ_K | BPF_JGE_K | BPF_JGT_K | BPF_JSET_K => {
                let taken = match i.code {
                    BPF_JEQ_K => accumulator == i.k,
                    BPF_JGE_K => accumulator >= i.k,
                    BPF_JGT_K => accumulator > i.k,
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

    fn rules() -> Vec<Rule> {
        let mut rules: Vec<Rule> = (0..300)
            .step_by(3)
            .map(|nr| Rule::new(nr, RET_ALLOW))
            .collect();
        rules.push(Rule::when(
            301,
            vec![ArgCheck::MaskClear { arg: 2, mask: 0x4 }],
            RET_ALLOW,
        ));
        rules.push(Rule::when(
            302,
            vec![ArgCheck::MaskedEq {
                arg: 0,
                mask: 0x10000,
                value: 0x10000,
            }],
            RET_ALLOW,
        ));
        for value in [7, 9] {
            let check = ArgCheck::Eq { arg: 1, value };
            rules.push(Rule::when(303, vec![check], RET_ALLOW));
        }
        rules.push(Rule::when(
            304,
            vec![
                ArgCheck::Ge { arg: 0, value: 10 },
                ArgCheck::Lt { arg: 0, value: 20 },
            ],
            RET_ALLOW,
        ));
        rules
    }

    fn run(program: &[sock_filter], nr: u32, args: [u64; 6]) -> u32 {
        evaluate(program, AUDIT_ARCH_X86_64, nr, args)
    }

    #[test]
    fn exactly_the_listed_calls_are_allowed() {
        let program = compile(&rules(), DENY, DENY);
        for nr in 0..450 {
            if (301..=304).contains(&nr) {
                continue;
            }
            let expected = if nr < 300 && nr % 3 == 0 {
                RET_ALLOW
            } else {
                DENY
            };
            assert_eq!(run(&program, nr, [0; 6]), expected, "nr {nr}");
        }
    }

    #[test]
    fn argument_checks_hold() {
        let program = compile(&rules(), DENY, DENY);
        assert_eq!(run(&program, 301, [0, 0, 0x3, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&program, 301, [0, 0, 0x7, 0, 0, 0]), DENY);
        assert_eq!(run(&program, 302, [0x10f00, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&program, 302, [0x00f00, 0, 0, 0, 0, 0]), DENY);
        assert_eq!(run(&program, 303, [0, 9, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&program, 303, [0, 7, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&program, 303, [0, 8, 0, 0, 0, 0]), DENY);
        assert_eq!(run(&program, 304, [15, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&program, 304, [20, 0, 0, 0, 0, 0]), DENY);
        assert_eq!(run(&program, 304, [9, 0, 0, 0, 0, 0]), DENY);
    }

    #[test]
    fn a_denylist_allows_by_default() {
        let rules = vec![
            Rule::new(165, DENY),
            Rule::when(
                272,
                vec![ArgCheck::MaskedEq {
                    arg: 0,
                    mask: 0x1000_0000,
                    value: 0x1000_0000,
                }],
                DENY,
            ),
        ];
        let program = compile(&rules, RET_ALLOW, DENY);
        assert_eq!(run(&program, 165, [0; 6]), DENY);
        assert_eq!(run(&program, 272, [0x1000_0000, 0, 0, 0, 0, 0]), DENY);
        assert_eq!(run(&program, 272, [0x2_0000, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&program, 0, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn other_architectures_die_and_x32_is_answered() {
        let program = compile(&rules(), DENY, ret_errno(38));
        assert_eq!(evaluate(&program, 0x4000_0003, 3, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(run(&program, X32_SYSCALL_BIT | 3, [0; 6]), ret_errno(38));
    }

    #[test]
    fn lookups_are_shallow() {
        let program = compile(&rules(), DENY, DENY);
        assert!(program.len() > 300);
        let deepest = (0..450)
            .map(|nr| execute(&program, AUDIT_ARCH_X86_64, nr, [0; 6]).1)
            .max()
            .unwrap();
        // 104 call numbers: a 7-level search (two instructions a level) plus prologue and leaf.
        assert!(deepest <= 30, "deepest lookup took {deepest} instructions");
    }

    #[test]
    fn an_empty_policy_answers_the_default() {
        let program = compile(&[], DENY, DENY);
        assert_eq!(run(&program, 0, [0; 6]), DENY);
    }
}
