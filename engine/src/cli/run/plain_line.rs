//! `wrun run`'s everyday command lines read without clap: `--root` and fifteen of `run`'s
//! flags in their plain spellings. Any other word, a flag given twice, or a value its parser
//! refuses leaves the line to clap, which stays the authority on what a line means and on
//! every error and help text.
//!
//! Building clap's parser of `run` (≈40 arguments) and matching a line with it cost ≈0.23 ms
//! of every start, warm, and ≈0.3 ms after a pause: a seventh of a pooled start. A unit test
//! reads each line both ways and checks that they agree.

use super::super::{Cli, Command, GlobalArgs};
use super::RunCommand;
use std::ffi::OsString;
use std::path::PathBuf;
use wrun::container::record::RestartPolicy;
use wrun::handoff::Handoff;
use wrun::spec::{self, Preopen};

/// A flag read here.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flag {
    Root,
    Detach,
    Rm,
    ReadOnly,
    Init,
    Name,
    CgroupParent,
    Env,
    Dir,
    Volume,
    Memory,
    Cpus,
    Pids,
    Timeout,
    Rootfs,
    Bundle,
}

/// Each flag's short and long spelling and whether it takes a value, as `RunCommand` and
/// `GlobalArgs` declare them.
const SPELLINGS: [(Flag, Option<&str>, &str, bool); 16] = [
    (Flag::Root, None, "--root", true),
    (Flag::Detach, Some("-d"), "--detach", false),
    (Flag::Rm, None, "--rm", false),
    (Flag::ReadOnly, None, "--read-only", false),
    (Flag::Init, None, "--init", false),
    (Flag::Name, None, "--name", true),
    (Flag::CgroupParent, None, "--cgroup-parent", true),
    (Flag::Env, Some("-e"), "--env", true),
    (Flag::Dir, None, "--dir", true),
    (Flag::Volume, Some("-v"), "--volume", true),
    (Flag::Memory, Some("-m"), "--memory", true),
    (Flag::Cpus, None, "--cpus", true),
    (Flag::Pids, None, "--pids", true),
    (Flag::Timeout, None, "--timeout", true),
    (Flag::Rootfs, None, "--rootfs", true),
    (Flag::Bundle, None, "--bundle", true),
];

/// Flags that may be given more than once, each adding to a list.
const REPEATABLE: [Flag; 3] = [Flag::Env, Flag::Dir, Flag::Volume];

/// What the line said so far.
#[derive(Default)]
struct Line {
    seen: Vec<Flag>,
    root: Option<PathBuf>,
    run: Options,
}

/// `run`'s flags read here.
#[derive(Default)]
struct Options {
    detach: bool,
    rm: bool,
    read_only: bool,
    init: bool,
    name: Option<String>,
    cgroup_parent: Option<String>,
    env: Vec<spec::EnvEntry>,
    dirs: Vec<Preopen>,
    volumes: Vec<Preopen>,
    memory: Option<u64>,
    cpus: Option<u64>,
    pids: Option<u64>,
    timeout: Option<std::time::Duration>,
    rootfs: Option<PathBuf>,
    bundle: Option<PathBuf>,
}

/// Reads `args` (the program's name first, `run` already in place) as clap would, or `None`
/// to leave it to clap.
pub fn parse(args: &[OsString]) -> Option<Cli> {
    let words: Vec<&str> = args.iter().map(|arg| arg.to_str()).collect::<Option<_>>()?;
    let mut line = Line::default();
    let mut words = words.into_iter().skip(1);
    // Before `run`, only `--root`: `-v` there counts verbosity, and the rest is rarer.
    loop {
        let word = words.next()?;
        if word == "run" {
            break;
        }
        if line.read(word, &mut words)? != Flag::Root {
            return None;
        }
    }
    let mut words = words.peekable();
    while let Some(word) = words.next_if(|word| word.starts_with('-')) {
        line.read(word, &mut words)?;
    }
    // The module, image or command, then the guest's words; a bundle names its own.
    let command: Vec<String> = words.map(str::to_string).collect();
    let run = &line.run;
    let target_missing = match command.first() {
        Some(target) => target.is_empty(),
        None => run.bundle.is_none(),
    };
    if target_missing || run.bundle.is_some() && run.rootfs.is_some() {
        return None;
    }
    line.into_cli(command)
}

impl Line {
    /// Reads the flag `word` and its value (taking the next word for a separate one), or
    /// `None` for a word not read here or a value its parser refuses.
    fn read<'a>(
        &mut self,
        word: &'a str,
        words: &mut impl Iterator<Item = &'a str>,
    ) -> Option<Flag> {
        let (spelling, inline) = match word.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (word, None),
        };
        let (flag, _, _, takes_value) = *SPELLINGS
            .iter()
            .find(|(_, short, long, _)| *long == spelling || *short == Some(spelling))?;
        if self.seen.contains(&flag) && !REPEATABLE.contains(&flag) {
            return None;
        }
        self.seen.push(flag);
        if !takes_value {
            if inline.is_some() {
                return None;
            }
            self.set(flag);
            return Some(flag);
        }
        let value = match inline {
            Some(value) => value,
            None => words.next()?,
        };
        // clap reads a separate word that starts with `-` as a flag, not as a value (after
        // `=` it would take it: left to clap as well).
        if value.is_empty() || value.starts_with('-') {
            return None;
        }
        self.set_value(flag, value)?;
        Some(flag)
    }

    /// Sets a flag that takes no value.
    fn set(&mut self, flag: Flag) {
        let run = &mut self.run;
        match flag {
            Flag::Detach => run.detach = true,
            Flag::Rm => run.rm = true,
            Flag::ReadOnly => run.read_only = true,
            Flag::Init => run.init = true,
            _ => {}
        }
    }

    /// Parses `value` with the parser clap is given for `flag`.
    fn set_value(&mut self, flag: Flag, value: &str) -> Option<()> {
        let run = &mut self.run;
        match flag {
            Flag::Root => self.root = Some(PathBuf::from(value)),
            Flag::Name => run.name = Some(spec::parse_name(value).ok()?),
            Flag::CgroupParent => run.cgroup_parent = Some(spec::parse_cgroup_parent(value).ok()?),
            Flag::Env => run.env.push(spec::parse_env(value).ok()?),
            Flag::Dir => run.dirs.push(Preopen::parse(value).ok()?),
            Flag::Volume => run.volumes.push(Preopen::parse_volume(value).ok()?),
            Flag::Memory => run.memory = Some(spec::parse_memory(value).ok()?),
            Flag::Cpus => run.cpus = Some(spec::parse_cpus(value).ok()?),
            Flag::Pids => run.pids = Some(spec::parse_pids(value).ok()?),
            Flag::Timeout => run.timeout = Some(spec::parse_duration(value).ok()?),
            Flag::Rootfs => run.rootfs = Some(PathBuf::from(value)),
            Flag::Bundle => run.bundle = Some(PathBuf::from(value)),
            Flag::Detach | Flag::Rm | Flag::ReadOnly | Flag::Init => return None,
        }
        Some(())
    }

    /// The parsed line, with clap's defaults (and its environment variables) for everything
    /// not given.
    fn into_cli(self, command: Vec<String>) -> Option<Cli> {
        let Options {
            detach,
            rm,
            read_only,
            init,
            name,
            cgroup_parent,
            env,
            dirs,
            volumes,
            memory,
            cpus,
            pids,
            timeout,
            rootfs,
            bundle,
        } = self.run;
        let global = GlobalArgs {
            verbose_short: 0,
            verbose_long: 0,
            root: match self.root {
                Some(root) => Some(root),
                None => from_env("WRUN_ROOT")?,
            },
            config: from_env("WRUN_CONFIG")?,
            log: None,
            log_format: "text".to_string(),
            systemd_cgroup: false,
        };
        let run = RunCommand {
            detach,
            name,
            rm,
            dirs,
            volumes,
            env,
            env_files: Vec::new(),
            restart: RestartPolicy::No,
            labels: Vec::new(),
            label_files: Vec::new(),
            memory,
            cpus,
            pids,
            timeout,
            publish: Vec::new(),
            request_timeout: None,
            allow_outbound: Vec::new(),
            cgroup_parent: match cgroup_parent {
                Some(parent) => parent,
                None => spec::parse_cgroup_parent("wrun").ok()?,
            },
            rootfs,
            bundle,
            read_only,
            shared_memory: false,
            init,
            user: None,
            workdir: None,
            id: None,
            handoff: Handoff::default(),
            command,
        };
        Some(Cli {
            global,
            command: Command::Run(run),
        })
    }
}

/// A path flag's environment variable as clap reads it when the flag is absent: `Some(None)`
/// when unset, `None` (leave the line to clap) when set but empty.
fn from_env(name: &str) -> Option<Option<PathBuf>> {
    match std::env::var_os(name) {
        None => Some(None),
        Some(value) if value.is_empty() => None,
        Some(value) => Some(Some(PathBuf::from(value))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::os::unix::ffi::OsStringExt;

    fn line(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    /// Each flag read here, in each of its spellings.
    const SNIPPETS: [&[&str]; 29] = [
        &["-d"],
        &["--detach"],
        &["--rm"],
        &["--read-only"],
        &["--init"],
        &["--root", "/r"],
        &["--root=/s"],
        &["--name", "web-1"],
        &["--name=web.2"],
        &["--cgroup-parent", "wrun-pb"],
        &["--cgroup-parent=a/b"],
        &["-e", "A=1"],
        &["-e", "HOME"],
        &["--env", "B="],
        &["--env=C=d=e"],
        &["--dir", "."],
        &["--dir=/tmp::/data:ro"],
        &["-v", "/h:/g:ro"],
        &["--volume=/h:/g"],
        &["-m", "64m"],
        &["--memory=1g"],
        &["--cpus", "0.5"],
        &["--pids", "10"],
        &["--pids=7"],
        &["--timeout", "2s"],
        &["--timeout=500ms"],
        &["--memory", "2097152"],
        &["--rootfs", "/srv/root"],
        &["--rootfs=rel"],
    ];

    /// Whether the two snippets give one flag twice that may be given once.
    fn repeats_a_single_flag(a: &[&str], b: &[&str]) -> bool {
        let flag = |words: &[&str]| words[0].split('=').next().unwrap().to_string();
        let (a, b) = (flag(a), flag(b));
        let same = |x: &str, y: &str| {
            SPELLINGS.iter().any(|(flag, short, long, _)| {
                !REPEATABLE.contains(flag)
                    && (*long == x || *short == Some(x))
                    && (*long == y || *short == Some(y))
            })
        };
        same(&a, &b)
    }

    /// Reads `args` both ways: where this module reads it, clap must read it alike.
    fn agrees(args: &[OsString]) -> bool {
        let Some(plain) = parse(args) else {
            return false;
        };
        match Cli::try_parse_from(args) {
            Ok(clap) => assert_eq!(format!("{plain:?}"), format!("{clap:?}"), "{args:?}"),
            Err(e) => panic!("{args:?}: read here, refused by clap: {e}"),
        }
        true
    }

    #[test]
    fn every_flag_alone_and_in_pairs_reads_as_clap_reads_it() {
        let mut read = 0;
        for guest in [&[][..], &["x", "--rm", "-e", "A=1"], &["--", "y"]] {
            for a in SNIPPETS {
                let words = [&["wrun", "run"], a, &["a.wasm"], guest].concat();
                assert!(agrees(&line(&words)), "{words:?} left to clap");
                for b in SNIPPETS {
                    let words = [&["wrun", "run"], a, b, &["m.wasm"], guest].concat();
                    let expected = !repeats_a_single_flag(a, b);
                    assert_eq!(agrees(&line(&words)), expected, "{words:?}");
                    read += usize::from(expected);
                }
            }
        }
        assert!(read > 2000, "{read}");
    }

    #[test]
    fn a_bundle_reads_as_clap_reads_it() {
        for words in [
            &["wrun", "run", "--bundle", "/b"][..],
            &[
                "wrun",
                "--root",
                "/r",
                "run",
                "--cgroup-parent",
                "p",
                "--bundle=/b",
            ],
            &["wrun", "run", "--bundle", "/b", "--rm", "-m", "64m", "-d"],
            &["wrun", "run", "--bundle", "/b", "sh", "-c", "true"],
        ] {
            assert!(agrees(&line(words)), "{words:?}");
        }
    }

    #[test]
    fn the_root_reads_before_run_as_after_it() {
        for words in [
            &["wrun", "--root", "/r", "run", "a.wasm"][..],
            &["wrun", "--root=/r", "run", "--rm", "a.wasm", "b"],
            &["wrun", "run", "--root", "/r", "-e", "A=1", "a.wasm"],
        ] {
            assert!(agrees(&line(words)), "{words:?}");
        }
    }

    #[test]
    fn anything_else_is_left_to_clap() {
        for words in [
            &["wrun", "-v", "run", "a.wasm"][..],
            &["wrun", "-vv", "run", "a.wasm"],
            &["wrun", "--verbose", "run", "a.wasm"],
            &["wrun", "--rm", "run", "a.wasm"],
            &["wrun", "--root", "/r", "--root", "/s", "run", "a.wasm"],
            &["wrun", "--root", "/r", "run", "--root", "/s", "a.wasm"],
            &["wrun", "--log", "/l", "run", "a.wasm"],
            &["wrun", "ps"],
            &["wrun", "run"],
            &["wrun", "run", "--rm"],
            &["wrun", "run", ""],
            &["wrun", "run", "-"],
            &["wrun", "run", "--", "a.wasm"],
            &["wrun", "run", "--verbose", "a.wasm"],
            &["wrun", "run", "--help"],
            &["wrun", "run", "--memory", "lots", "a.wasm"],
            &["wrun", "run", "--name", "-x", "a.wasm"],
            &["wrun", "run", "--name=", "a.wasm"],
            &["wrun", "run", "--name", "bad name", "a.wasm"],
            &["wrun", "run", "-e", "=1", "a.wasm"],
            &["wrun", "run", "-v", "rel:/g", "a.wasm"],
            &["wrun", "run", "--timeout", "soon", "a.wasm"],
            &["wrun", "run", "-dit", "a.wasm"],
            &["wrun", "run", "-m64m", "a.wasm"],
            &["wrun", "run", "-e=A=1", "a.wasm"],
            &["wrun", "run", "--rm=true", "a.wasm"],
            &["wrun", "run", "--rm", "--rm", "a.wasm"],
            &["wrun", "run", "--pids-limit", "5", "a.wasm"],
            &["wrun", "run", "--label", "x", "a.wasm"],
            &["wrun", "run", "--restart", "always", "-d", "a.wasm"],
            &["wrun", "run", "-p", "8080:80", "a.wasm"],
            &["wrun", "run", "--rootfs", "/r", "--bundle", "/b"],
            &["wrun", "run", "--bundle", "/b", "--bundle", "/c"],
        ] {
            assert!(parse(&line(words)).is_none(), "{words:?} read here");
        }
        let not_utf8 = vec!["wrun".into(), "run".into(), OsString::from_vec(vec![0xff])];
        assert!(parse(&not_utf8).is_none());
    }
}
