//! Command-line structure: global flags, subcommands, and `wrun MODULE` as shorthand for run.

mod compile;
mod completion;
mod containers;
mod cp;
mod daemon;
mod exec;
mod format;
mod image;
mod logging;
mod oci;
mod progress;
mod prune;
mod ps;
mod registry;
mod relay;
mod run;
mod system;
mod table;
mod time;
mod usage;

pub use logging::init_logging;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use wrun::config::Config;
use wrun::exit;
use wrun::state::StateRoot;

/// Run WebAssembly workloads in wasmtime inside a namespaced, cgroup-limited Linux sandbox.
///
/// `wrun MODULE [ARGS...]` is short for `wrun run MODULE [ARGS...]`.
#[derive(Parser, Debug)]
#[command(name = "wrun", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// The flags every subcommand takes.
#[derive(clap::Args, Debug, Clone)]
struct GlobalArgs {
    /// More detail on stderr (-v debug, -vv trace); WRUN_LOG takes a tracing filter instead
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose_short: u8,
    /// More detail on stderr, anywhere on the command line (`run -v` is a volume, as in Docker)
    #[arg(long = "verbose", action = clap::ArgAction::Count, global = true)]
    verbose_long: u8,
    /// State root (cache, sandbox mount point) [default: /var/lib/wrun as root, else $XDG_DATA_HOME/wrun]
    #[arg(long, env = "WRUN_ROOT", global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Configuration file (TOML): `root`, and the wasm engine's `[engine]` settings
    #[arg(long, env = "WRUN_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also write wrun's errors to this file (an OCI runtime's callers read them there)
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,
    /// How --log is written: text, or json lines as runc writes them
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Accepted from an OCI runtime's callers: a bundle's cgroup path is read in both of
    /// runc's forms whatever this says
    #[arg(long, global = true, hide = true)]
    systemd_cgroup: bool,
}

/// `wrun run` alone: the global flags and `run`'s, parsed without the other subcommands.
/// clap builds every argument of every subcommand before it parses anything, which took
/// ≈0.35 ms of each start here (twice the time of the rest of the parse).
#[derive(Parser, Debug, Clone)]
#[command(name = "wrun", version, propagate_version = true)]
struct RunCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Subcommand, Debug, Clone)]
enum RunOnly {
    Run(run::RunCommand),
}

impl From<RunCli> for Cli {
    fn from(parsed: RunCli) -> Cli {
        let RunOnly::Run(run) = parsed.command;
        Cli {
            global: parsed.global,
            command: Command::Run(run),
        }
    }
}

/// The OCI runtime's short verbs alone, with the global flags: what containerd's runc shim
/// (under Docker) and conmon (under Podman) run, several times a container. Parsed as `run`
/// is ([`RunCli`]): the whole command line's parser took ≈0.8 ms of each call, this one
/// ≈0.25 ms. Not `create` nor `exec`: their later steps (the bundle's configuration read, a
/// process forked and set up) then paid the first touches of heap that the whole parser had
/// made, and `create` took 0.3 ms longer (4.18 against 3.86 ms median, 60 runs each).
#[derive(Parser, Debug)]
#[command(name = "wrun", version, propagate_version = true)]
struct OciCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: OciOnly,
}

/// The subcommands of [`OciCli`], as [`Command`] declares them.
#[derive(Subcommand, Debug)]
enum OciOnly {
    Kill(containers::KillCommand),
    Start(oci::StartCommand),
    State(oci::StateCommand),
    Delete(oci::DeleteCommand),
    Features(oci::FeaturesCommand),
}

/// The words [`OciCli`] parses.
const OCI_VERBS: [&str; 5] = ["kill", "start", "state", "delete", "features"];

impl From<OciCli> for Cli {
    fn from(parsed: OciCli) -> Cli {
        let command = match parsed.command {
            OciOnly::Kill(cmd) => Command::Kill(cmd),
            OciOnly::Start(cmd) => Command::Start(cmd),
            OciOnly::State(cmd) => Command::State(cmd),
            OciOnly::Delete(cmd) => Command::Delete(cmd),
            OciOnly::Features(cmd) => Command::Features(cmd),
        };
        Cli {
            global: parsed.global,
            command,
        }
    }
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    Run(run::RunCommand),
    Compile(compile::CompileCommand),
    Ps(ps::PsCommand),
    Logs(containers::LogsCommand),
    Stop(containers::StopCommand),
    Kill(containers::KillCommand),
    Rm(containers::RmCommand),
    Inspect(containers::InspectCommand),
    Stats(usage::StatsCommand),
    Image(image::ImageCommand),
    /// List images (`image ls`)
    Images(image::LsCommand),
    /// Remove images (`image rm`)
    Rmi(image::RmiCommand),
    Daemon(daemon::DaemonCommand),
    Create(oci::CreateCommand),
    Start(oci::StartCommand),
    State(oci::StateCommand),
    Delete(oci::DeleteCommand),
    Exec(exec::ExecCommand),
    Features(oci::FeaturesCommand),
    Version(system::VersionCommand),
    Info(system::InfoCommand),
    Completion(completion::CompletionCommand),
    Man(completion::ManCommand),
    Restart(containers::RestartCommand),
    Wait(containers::WaitCommand),
    Port(ps::PortCommand),
    Top(usage::TopCommand),
    Rename(containers::RenameCommand),
    Cp(cp::CpCommand),
    Pull(registry::PullCommand),
    Push(registry::PushCommand),
    Login(registry::LoginCommand),
    Logout(registry::LogoutCommand),
    Container(prune::ContainerCommand),
    System(prune::SystemCommand),
}

/// A failed command: what to print, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub code: i32,
}

/// A run that could not be carried out exits with its documented code.
impl From<wrun::sandbox::RunError> for Failure {
    fn from(error: wrun::sandbox::RunError) -> Failure {
        Failure {
            code: error.exit_code(),
            error: error.into(),
        }
    }
}

/// So does a container whose monitor failed.
impl From<wrun::container::monitor::MonitorError> for Failure {
    fn from(error: wrun::container::monitor::MonitorError) -> Failure {
        Failure {
            code: error.exit_code(),
            error: error.into(),
        }
    }
}

impl Failure {
    pub fn runtime(error: anyhow::Error) -> Failure {
        Failure {
            error,
            code: exit::RUNTIME_ERROR,
        }
    }

    /// A failure whose lines were already printed.
    pub fn silent(self) -> Failure {
        Failure {
            error: anyhow::Error::new(AlreadyReported),
            code: self.code,
        }
    }

    pub fn is_silent(&self) -> bool {
        self.error.is::<AlreadyReported>()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("already reported")]
struct AlreadyReported;

impl Cli {
    pub fn verbosity(&self) -> u8 {
        self.global.verbose_short + self.global.verbose_long
    }

    /// Where errors are also written (`--log`), and whether as runc's JSON lines.
    pub fn error_log(&self) -> Option<(PathBuf, bool)> {
        Some((self.global.log.clone()?, self.global.log_format == "json"))
    }

    pub fn execute(self) -> Result<i32, Failure> {
        let config = match &self.global.config {
            Some(path) => Config::load(path).map_err(|e| Failure::runtime(e.into()))?,
            None => Config::default(),
        };
        let state = StateRoot::resolve(self.global.root.or(config.root))
            .with_cache_dir(config.cache_dir)
            .prepare()
            .map_err(|e| Failure::runtime(e.into()))?;
        // `run` and `daemon` sweep while their sandboxes start; every other command now.
        if !matches!(self.command, Command::Run(_) | Command::Daemon(_)) {
            wrun::sandbox::sweep_stale(&state);
        }
        let engine = &config.engine;
        let done = |r: Result<(), Failure>| r.map(|()| 0);
        match self.command {
            Command::Run(cmd) => cmd.execute(&state, engine, &config.registries),
            Command::Compile(cmd) => done(cmd.execute(&state, engine)),
            Command::Ps(cmd) => done(cmd.execute(&state)),
            Command::Logs(cmd) => done(cmd.execute(&state)),
            Command::Stop(cmd) => done(cmd.execute(&state)),
            Command::Kill(cmd) => done(cmd.execute(&state)),
            Command::Rm(cmd) => done(cmd.execute(&state)),
            Command::Inspect(cmd) => done(cmd.execute(&state)),
            Command::Stats(cmd) => done(cmd.execute(&state)),
            Command::Image(cmd) => done(cmd.execute(&state, engine)),
            Command::Images(cmd) => done(cmd.execute(&state)),
            Command::Rmi(cmd) => done(cmd.execute(&state)),
            Command::Daemon(cmd) => done(cmd.execute(&state, engine)),
            Command::Create(cmd) => done(cmd.execute(&state)),
            Command::Start(cmd) => done(cmd.execute(&state)),
            Command::State(cmd) => done(cmd.execute(&state)),
            Command::Delete(cmd) => done(cmd.execute(&state)),
            Command::Exec(cmd) => cmd.execute(&state),
            Command::Features(cmd) => done(cmd.execute()),
            Command::Version(cmd) => done(cmd.execute()),
            Command::Info(cmd) => done(cmd.execute(&state)),
            Command::Completion(cmd) => done(cmd.execute()),
            Command::Man(cmd) => done(cmd.execute()),
            Command::Restart(cmd) => done(cmd.execute(&state)),
            Command::Wait(cmd) => done(cmd.execute(&state)),
            Command::Port(cmd) => done(cmd.execute(&state)),
            Command::Top(cmd) => done(cmd.execute(&state)),
            Command::Rename(cmd) => done(cmd.execute(&state)),
            Command::Cp(cmd) => done(cmd.execute(&state)),
            Command::Pull(cmd) => done(cmd.execute(&state, engine, &config.registries)),
            Command::Push(cmd) => done(cmd.execute(&state, &config.registries)),
            Command::Login(cmd) => done(cmd.execute(&config.registries)),
            Command::Logout(cmd) => done(cmd.execute()),
            Command::Container(cmd) => done(cmd.execute(&state)),
            Command::System(cmd) => done(cmd.execute(&state)),
        }
    }
}

#[rustfmt::skip]
const SUBCOMMANDS: [&str; 36] = [
    "run", "compile", "ps", "logs", "stop", "kill", "rm", "inspect", "stats", "image", "images",
    "rmi", "daemon", "create", "start", "state", "delete", "exec", "features", "version", "info",
    "completion", "man", "restart", "wait", "port", "top", "rename", "container", "system",
    "cp", "pull", "push", "login", "logout", "help",
];

/// Inserts `run` where the first word after the global flags is not a subcommand or a
/// request for help/version, so `wrun app.wasm` and `wrun --dir . app.wasm` both run. A word
/// one edit away from a subcommand that names no file (`sttart`) is a mistyped command, not a
/// module: the error says so and names the subcommand.
pub fn with_default_subcommand(mut args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let index = subcommand_position(&args);
    let Some(word) = args.get(index) else {
        return Ok(args);
    };
    let word = word.to_string_lossy();
    let is_meta = matches!(word.as_ref(), "-h" | "--help" | "-V" | "--version");
    if !is_meta && !SUBCOMMANDS.contains(&word.as_ref()) {
        if let Some(meant) = mistyped_subcommand(&word) {
            return Err(format!(
                "unknown command `{word}` (did you mean `{meant}`?)"
            ));
        }
        args.insert(index, OsString::from("run"));
    }
    Ok(args)
}

/// Where the subcommand's word is (or would be) in `args`: after the global flags.
fn subcommand_position(args: &[OsString]) -> usize {
    let mut index = 1;
    while let Some(word) = args.get(index).and_then(|a| a.to_str()) {
        match word {
            "--root" | "--config" | "--log" | "--log-format" => index += 2,
            w if ["--root=", "--config=", "--log=", "--log-format="]
                .iter()
                .any(|flag| w.starts_with(flag))
                || w == "--verbose"
                || w == "--systemd-cgroup" =>
            {
                index += 1
            }
            w if w.len() > 1 && w.starts_with('-') && w[1..].bytes().all(|b| b == b'v') => {
                index += 1
            }
            _ => break,
        }
    }
    index
}

/// The subcommand `word` is one edit (or one swap) away from, if it looks like no path.
fn mistyped_subcommand(word: &str) -> Option<&'static str> {
    if word.len() < 3 || word.contains(['/', '.']) || word.starts_with('-') {
        return None;
    }
    let meant = SUBCOMMANDS
        .iter()
        .copied()
        .find(|command| strsim::osa_distance(word, command) == 1)?;
    // Only then a look at the file system: `wrun IMAGE` costs the start path no stat.
    (!std::path::Path::new(word).exists()).then_some(meant)
}

/// Parses the command line; help and version print and exit 0, anything else malformed
/// prints one line and yields the runtime-error code.
pub fn parse(args: Vec<OsString>) -> Result<Cli, i32> {
    use clap::error::ErrorKind;
    let subcommand = args
        .get(subcommand_position(&args))
        .and_then(|word| word.to_str())
        .unwrap_or_default();
    let parsed = match subcommand {
        "run" => match run::plain_line::parse(&args) {
            Some(cli) => Ok(cli),
            None => parse_run(args),
        },
        verb if OCI_VERBS.contains(&verb) => OciCli::try_parse_from(args).map(Cli::from),
        _ => Cli::try_parse_from(args),
    };
    wrun::timeline::mark("command line parsed");
    parsed.map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                2
            } else {
                0
            }
        }
        _ => {
            // clap's message, without the usage and hint paragraphs, on one line.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            wrun::err_line!("wrun: {}", message.join(" ").trim_start_matches("error: "));
            exit::RUNTIME_ERROR
        }
    })
}

/// Parses `run`'s command line in the set-up arena and copies the result out of it: with
/// musl's allocator, which maps and unmaps memory as clap's vectors grow, the parse took
/// ≈0.3 ms, in the arena ≈0.2 (see [`wrun::allocator::copy_out_of_setup_arena`]). An error
/// ends the process: it stays where it was made.
fn parse_run(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    wrun::allocator::open_setup_arena();
    let parsed = RunCli::try_parse_from(args).map_err(wrun::allocator::leave_setup_arena)?;
    Ok(Cli::from(wrun::allocator::copy_out_of_setup_arena(parsed)))
}

/// Appends an error to `--log`: one line of text, or a JSON object as runc writes it (its
/// callers, containerd's shim and conmon, show the last one's `msg`).
pub fn log_error(path: &std::path::Path, json: bool, message: &str) {
    use std::io::Write;
    let line = if json {
        serde_json::json!({
            "level": "error",
            "msg": message,
            "time": wrun::image::store::now_rfc3339(),
        })
        .to_string()
    } else {
        format!("wrun: {message}")
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        with_default_subcommand(args.iter().map(OsString::from).collect())
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn module_first_means_run() {
        assert_eq!(
            rewrite(&["wrun", "a.wasm", "x"]),
            ["wrun", "run", "a.wasm", "x"]
        );
        assert_eq!(
            rewrite(&["wrun", "-v", "--root", "/r", "a.wasm"]),
            ["wrun", "-v", "--root", "/r", "run", "a.wasm"]
        );
        assert_eq!(
            rewrite(&["wrun", "--dir", ".", "a.wasm"]),
            ["wrun", "run", "--dir", ".", "a.wasm"]
        );
    }

    #[test]
    fn run_alone_parses_as_the_whole_command_line_does() {
        let cases: [&[&str]; 7] = [
            &["wrun", "run", "a.wasm", "--x", "y"],
            &[
                "wrun",
                "-vv",
                "--root",
                "/r",
                "--log-format",
                "json",
                "run",
                "-d",
                "--name",
                "w",
                "img",
            ],
            &[
                "wrun",
                "run",
                "--verbose",
                "-e",
                "A=1",
                "-v",
                "/h:/g:ro",
                "--memory",
                "64m",
                "a.wasm",
            ],
            &[
                "wrun",
                "run",
                "--rm",
                "-p",
                "8080:80",
                "--timeout",
                "2s",
                "--dir",
                ".",
                "a.wasm",
            ],
            &["wrun", "run"],
            &["wrun", "run", "--memory", "lots", "a.wasm"],
            &["wrun", "run", "--no-such-flag", "a.wasm"],
        ];
        // Through the arena and out of it, as `main` parses.
        let alone = |args: &[&str]| parse_run(args.iter().map(OsString::from).collect());
        for args in cases {
            parse_alike(args, alone(args));
        }
        parse_alike(
            &["wrun", "run", "--help"],
            alone(&["wrun", "run", "--help"]),
        );
    }

    /// Asserts that `alone` is what the whole command line's parser makes of `args`: the
    /// same command, or the same error (help included) rendered alike.
    fn parse_alike(args: &[&str], alone: Result<Cli, clap::Error>) {
        match (alone, Cli::try_parse_from(args)) {
            (Ok(alone), Ok(whole)) => {
                assert_eq!(format!("{alone:?}"), format!("{whole:?}"), "{args:?}")
            }
            (Err(alone), Err(whole)) => {
                assert_eq!(alone.kind(), whole.kind(), "{args:?}");
                assert_eq!(alone.render().to_string(), whole.render().to_string());
            }
            (alone, whole) => panic!("{args:?}: alone {alone:?}, whole {whole:?}"),
        }
    }

    #[test]
    fn the_oci_verbs_alone_parse_as_the_whole_command_line_does() {
        let cases: [&[&str]; 13] = [
            &[
                "wrun",
                "--root",
                "/r",
                "--log",
                "/l.json",
                "--log-format",
                "json",
                "--systemd-cgroup",
                "start",
                "id",
            ],
            &["wrun", "--root", "/r", "start", "id"],
            &["wrun", "start", "--all"],
            &["wrun", "start"],
            &["wrun", "state", "id"],
            &["wrun", "--log-format", "text", "state", "id"],
            &["wrun", "-v", "delete", "--force", "id"],
            &["wrun", "kill", "id", "9"],
            &["wrun", "kill", "--all", "id", "SIGTERM"],
            &["wrun", "kill", "-s", "TERM", "a", "b"],
            &["wrun", "features"],
            &["wrun", "delete", "--nosuch", "id"],
            &["wrun", "kill", "-s", "NOSUCH", "id"],
        ];
        let alone = |args: &[&str]| OciCli::try_parse_from(args).map(Cli::from);
        for args in cases {
            parse_alike(args, alone(args));
        }
        for verb in OCI_VERBS {
            assert!(Command::has_subcommand(verb), "{verb}");
            parse_alike(&["wrun", verb, "--help"], alone(&["wrun", verb, "--help"]));
        }
    }

    #[test]
    fn a_mistyped_command_is_named_not_run() {
        let mistyped = |word: &str| with_default_subcommand(vec!["wrun".into(), word.into()]).err();
        assert_eq!(
            mistyped("sttart").as_deref(),
            Some("unknown command `sttart` (did you mean `start`?)")
        );
        assert_eq!(
            mistyped("imgaes").as_deref(),
            Some("unknown command `imgaes` (did you mean `images`?)")
        );
        // Images and modules are still run.
        for word in ["busybox", "hello", "frontend-app", "app.wasm", "rn"] {
            assert_eq!(mistyped(word), None, "{word}");
        }
    }

    #[test]
    fn subcommands_and_help_stay() {
        assert_eq!(
            rewrite(&["wrun", "run", "a.wasm"]),
            ["wrun", "run", "a.wasm"]
        );
        assert_eq!(rewrite(&["wrun", "compile", "a"]), ["wrun", "compile", "a"]);
        assert_eq!(
            rewrite(&["wrun", "--config", "/c.toml", "daemon"]),
            ["wrun", "--config", "/c.toml", "daemon"]
        );
        assert_eq!(
            rewrite(&["wrun", "--config=/c.toml", "a.wasm"]),
            ["wrun", "--config=/c.toml", "run", "a.wasm"]
        );
        assert_eq!(rewrite(&["wrun", "--help"]), ["wrun", "--help"]);
        assert_eq!(rewrite(&["wrun"]), ["wrun"]);
    }
}
