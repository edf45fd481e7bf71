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
///
/// Written into one buffer, jumps patched once their targets are known: built from a vector
/// per check, rule, leaf and subtree, the Wasm filter took 228 µs instead of 34 (unit-test
/// binary). The search is over runs of call numbers with one outcome, not over single calls:
/// the kernel JIT-compiles every instruction when the filter is installed, and the Wasm
/// filter went from 1214 instructions to 351 (Docker's default profile for a native
/// container, from 361 to 149).
pub fn compile(rules: &[Rule], default: u32, x32: u32) -> Vec<sock_filter> {
    // By call number; the stable sort keeps each call's rules in their order.
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by_key(|rule| rule.nr);
    let spans = spans(&sorted, default);
    let mut program = Vec::with_capacity(8 + 4 * spans.len());
    program.extend([
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ret(RET_KILL_PROCESS),
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ret(x32),
    ]);
    search(&spans, default, &mut program);
    program
}

/// What the calls of one span get: an action, or one call's rules tried in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome<'a> {
    Action(u32),
    Rules(&'a [&'a Rule]),
}

/// The calls from `first` up to the next span's first.
#[derive(Debug, Clone, Copy)]
struct Span<'a> {
    first: u32,
    outcome: Outcome<'a>,
}

/// Every call number from 0 up, in runs with one outcome: `default` between the listed calls,
/// neighbours with the same action merged.
fn spans<'a>(sorted: &'a [&'a Rule], default: u32) -> Vec<Span<'a>> {
    let mut spans = vec![Span {
        first: 0,
        outcome: Outcome::Action(default),
    }];
    let mut push = |first: u32, outcome: Outcome<'a>| {
        let last = spans.last_mut().expect("spans start with one");
        if last.first == first {
            last.outcome = outcome;
        } else if last.outcome != outcome || matches!(outcome, Outcome::Rules(_)) {
            spans.push(Span { first, outcome });
        }
        // A span replaced at its start may now equal the one before it.
        if let [.., before, last] = spans.as_slice() {
            if before.outcome == last.outcome && matches!(last.outcome, Outcome::Action(_)) {
                spans.pop();
            }
        }
    };
    for rules in sorted.chunk_by(|a, b| a.nr == b.nr) {
        let nr = rules[0].nr;
        // A rule without checks decides its call; the rules after it are never reached.
        let outcome = match rules[0].checks.is_empty() {
            true => Outcome::Action(rules[0].action),
            false => Outcome::Rules(rules),
        };
        push(nr, outcome);
        if let Some(next) = nr.checked_add(1) {
            push(next, Outcome::Action(default));
        }
    }
    spans
}

/// Appends a subtree that, with the call number in the accumulator, decides among `spans`.
fn search(spans: &[Span], default: u32, out: &mut Vec<sock_filter>) {
    if let [span] = spans {
        return leaf(span, default, out);
    }
    let middle = spans.len() / 2;
    // `nr >= pivot` jumps over the lower half, with jt when it is near enough (255
    // instructions), else through a BPF_JA, whose 32-bit offset reaches any tree size. A
    // subtree's jumps all land inside it, so inserting that JA before it moves nothing.
    let node = out.len();
    out.push(insn(BPF_JGE_K, 0, 0, spans[middle].first));
    search(&spans[..middle], default, out);
    let lower_half = out.len() - node - 1;
    match u8::try_from(lower_half) {
        Ok(over_lower_half) => out[node].jt = over_lower_half,
        Err(_) => {
            out[node].jf = 1;
            out.insert(node + 1, insn(BPF_JMP_JA, 0, 0, lower_half as u32));
        }
    }
    search(&spans[middle..], default, out);
}

/// Appends the decision for one span: its action, or its call's rules in order, then
/// `default`.
fn leaf(span: &Span, default: u32, out: &mut Vec<sock_filter>) {
    match span.outcome {
        Outcome::Action(action) => out.push(ret(action)),
        Outcome::Rules(rules) => {
            for rule in rules {
                rule_block(rule, out);
            }
            out.push(ret(default));
        }
    }
}

/// Appends a rule's checks, each jumping past the block when it fails, then its action.
fn rule_block(rule: &Rule, out: &mut Vec<sock_filter>) {
    let start = out.len();
    for rule_check in &rule.checks {
        check(rule_check, out);
    }
    out.push(ret(rule.action));
    // Patch the failure jumps (marked 255) to land just past the block.
    let end = out.len();
    for (here, i) in out.iter_mut().enumerate().skip(start) {
        let to_end = (end - here - 1) as u8;
        if i.jt == u8::MAX {
            i.jt = to_end;
        }
        if i.jf == u8::MAX {
            i.jf = to_end;
        }
    }
}

/// Appends instructions that fall through when `check` holds and jump with offset 255
/// (patched by [`rule_block`]) when it fails.
fn check(check: &ArgCheck, out: &mut Vec<sock_filter>) {
    const FAIL: u8 = u8::MAX;
    let load = |arg: u8| insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARGS + 8 * u32::from(arg));
    match *check {
        ArgCheck::MaskClear { arg, mask } => {
            out.extend([load(arg), insn(BPF_JSET_K, FAIL, 0, mask)])
        }
        ArgCheck::MaskedEq { arg, mask, value } => out.extend([
            load(arg),
            insn(BPF_ALU_AND_K, 0, 0, mask),
            insn(BPF_JEQ_K, 0, FAIL, value),
        ]),
        ArgCheck::Eq { arg, value } => out.extend([load(arg), insn(BPF_JEQ_K, 0, FAIL, value)]),
        ArgCheck::Ne { arg, value } => out.extend([load(arg), insn(BPF_JEQ_K, FAIL, 0, value)]),
        ArgCheck::Ge { arg, value } => out.extend([load(arg), insn(BPF_JGE_K, 0, FAIL, value)]),
        ArgCheck::Gt { arg, value } => out.extend([load(arg), insn(BPF_JGT_K, 0, FAIL, value)]),
        ArgCheck::Le { arg, value } => out.extend([load(arg), insn(BPF_JGT_K, FAIL, 0, value)]),
        ArgCheck::Lt { arg, value } => out.extend([load(arg), insn(BPF_JGE_K, FAIL, 0, value)]),
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

    /// Checks that `program` allows exactly the calls in `numbers` that `allowed` says, with
    /// arguments all 0, and answers `DENY` to the others.
    fn assert_allows(program: &[sock_filter], numbers: Vec<u32>, allowed: impl Fn(u32) -> bool) {
        for nr in numbers {
            let expected = if allowed(nr) { RET_ALLOW } else { DENY };
            assert_eq!(run(program, nr, [0; 6]), expected, "nr {nr}");
        }
    }

    #[test]
    fn exactly_the_listed_calls_are_allowed() {
        let program = compile(&rules(), DENY, DENY);
        // 301–304 have argument checks (below).
        let numbers = (0..450).filter(|nr| !(301..=304).contains(nr)).collect();
        assert_allows(&program, numbers, |nr| nr < 300 && nr % 3 == 0);
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
        // 209 spans: an 8-level search (one instruction a level) plus prologue and leaf.
        assert!(deepest <= 20, "deepest lookup took {deepest} instructions");
    }

    #[test]
    fn neighbouring_calls_with_one_action_share_a_leaf() {
        let mut rules: Vec<Rule> = (0..200).map(|nr| Rule::new(nr, RET_ALLOW)).collect();
        rules.push(Rule::new(200, DENY));
        rules.push(Rule::new(205, RET_ALLOW));
        let program = compile(&rules, DENY, DENY);
        // The prologue, then 4 spans (4 leaves, 3 comparisons): [0, 200) allowed, 200 denied
        // as the default is, 205 allowed, from 206 on the default.
        assert_eq!(program.len(), 6 + 7);
        assert_allows(&program, (0..300).collect(), |nr| nr < 200 || nr == 205);
    }

    #[test]
    fn far_jumps_reach_the_upper_half() {
        // 2,000 spans: the root's lower half is far beyond a conditional jump's 255.
        let rules: Vec<Rule> = (0..2000)
            .step_by(2)
            .map(|nr| Rule::new(nr, RET_ALLOW))
            .collect();
        let program = compile(&rules, DENY, DENY);
        assert!(program.iter().any(|i| i.code == BPF_JMP_JA));
        assert_allows(&program, (0..2100).collect(), |nr| nr < 2000 && nr % 2 == 0);
    }

    #[test]
    fn an_empty_policy_answers_the_default() {
        let program = compile(&[], DENY, DENY);
        assert_eq!(run(&program, 0, [0; 6]), DENY);
    }
}
