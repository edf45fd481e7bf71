//! A bundle's lifecycle hooks, run as runc runs them, in the runtime's own namespaces with
//! the container's state as JSON on stdin: `prestart` and `createRuntime` once the container
//! is created, `poststart` once it is started, `poststop` when it is deleted
//! (runtime-spec config.md, "POSIX-platform Hooks").

use oci_spec::runtime::Hook;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{phase} hook `{path}` could not be run")]
    Spawn {
        phase: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{phase} hook `{path}` failed ({status}){detail}")]
    Failed {
        phase: &'static str,
        path: String,
        status: String,
        detail: String,
    },
    #[error("{phase} hook `{path}` did not finish within {seconds}s")]
    TimedOut {
        phase: &'static str,
        path: String,
        seconds: i64,
    },
}

/// Runs `hooks` in order with `state` (the container's state JSON) on stdin; the first
/// failure stops them.
pub fn run(phase: &'static str, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    hooks
        .iter()
        .try_for_each(|hook| run_one(phase, hook, state))
}

fn run_one(phase: &'static str, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    let mut command = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((first, rest)) = args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut command, first);
            command.args(rest);
        }
    }
    // As runc's: a hook without `env` inherits the runtime's environment.
    if let Some(env) = hook.env() {
        command.env_clear();
        command.envs(env.iter().filter_map(|pair| pair.split_once('=')));
    }
    let spawned = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = spawned.map_err(|source| HookError::Spawn {
        phase,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that reads nothing closes its end: that is no failure.
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .filter(|&seconds| seconds > 0)
        .map(|seconds| {
            (
                seconds,
                Instant::now() + Duration::from_secs(seconds as u64),
            )
        });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Spawn {
                    phase,
                    path,
                    source,
                })
            }
        }
        if let Some((seconds, deadline)) = deadline {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::TimedOut {
                    phase,
                    path,
                    seconds,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let mut errors = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut errors);
    }
    let last = errors.lines().rev().find(|l| !l.trim().is_empty());
    Err(HookError::Failed {
        phase,
        path,
        status: status.to_string(),
        detail: last.map(|l| format!(": {}", l.trim())).unwrap_or_default(),
    })
}
