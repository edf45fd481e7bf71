//! wasi:cli: environment (arguments, variables, initial-cwd), stdin, stdout, stderr and terminal-*.

use wasip2::cli::{
    environment, stderr, stdin, stdout, terminal_stderr, terminal_stdin, terminal_stdout,
};
use wasip2::io::streams::StreamError;

use crate::io::{read_to_end, stream_error};
use crate::report::{ensure, show, Checker};

const ENV: &str = "wasi:cli/environment";
const STDIN: &str = "wasi:cli/stdin";
const STDOUT: &str = "wasi:cli/stdout";
const STDERR: &str = "wasi:cli/stderr";
const TERMINAL: &str = "wasi:cli/terminal";

pub fn check(c: &mut Checker) {
    // wasi:cli/environment
    let args = environment::get_arguments();
    c.run(ENV, "get-arguments count", || {
        ensure(args.len() == 3, || {
            format!("expected 3 arguments, got {}", args.len())
        })
    });
    c.run(ENV, "get-arguments values", || {
        let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
        ensure(rest == ["alpha", "two words"], || {
            format!("args[1..] are {rest:?}")
        })
    });
    let env = environment::get_environment();
    for (name, value) in [("CONF_ONE", "1"), ("CONF_TWO", "zwei")] {
        c.run(ENV, &format!("get-environment {name}"), || {
            let found: Vec<&str> = env
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            ensure(found == [value], || format!("{name} values {found:?}"))
        });
    }
    // Neither wasmtime run nor wrun sets an initial working directory.
    c.run(ENV, "initial-cwd none", || {
        let cwd = environment::initial_cwd();
        ensure(cwd.is_none(), || format!("got {cwd:?}"))
    });

    // wasi:cli/stdin: the whole of it, then EOF (closed).
    let input = stdin::get_stdin();
    c.run(STDIN, "blocking-read to eof", || {
        read_to_end(&input, 5).and_then(|data| {
            ensure(data == b"hello from stdin\n", || {
                format!("read {}", show(&data))
            })
        })
    });
    c.run(STDIN, "read after eof closed", || match input.read(16) {
        Err(StreamError::Closed) => Ok(()),
        Ok(bytes) => Err(format!("read returned {} bytes", bytes.len())),
        Err(e) => Err(stream_error(e)),
    });
    c.run(STDIN, "subscribe ready at eof", || {
        let ready = input.subscribe();
        ready.block();
        ensure(ready.ready(), || {
            "pollable not ready after block".to_string()
        })
    });
    drop(input);

    // wasi:cli/stdout: the checker's own stream carries every line; a second handle works too.
    c.run(STDOUT, "check-write", || {
        let out = stdout::get_stdout();
        match out.check_write() {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err("check-write permits 0 bytes".to_string()),
            Err(e) => Err(stream_error(e)),
        }
    });
    // This check's own line goes out through write + blocking-flush on a second handle.
    {
        let out = stdout::get_stdout();
        let line = format!("{STDOUT} check-write write blocking-flush: ok\n");
        let result = out
            .check_write()
            .map_err(stream_error)
            .and_then(|n| {
                ensure(n as usize >= line.len(), || {
                    format!("check-write permits {n}")
                })
            })
            .and_then(|()| out.write(line.as_bytes()).map_err(stream_error))
            .and_then(|()| out.blocking_flush().map_err(stream_error));
        c.check_printed(STDOUT, "check-write write blocking-flush", result);
    }
    c.run(STDOUT, "subscribe ready", || {
        let out = stdout::get_stdout();
        let ready = out.subscribe();
        ready.block();
        ensure(ready.ready(), || "not ready".to_string())
    });

    // wasi:cli/stderr: exactly one line in all.
    c.run(STDERR, "blocking-write-and-flush", || {
        stderr::get_stderr()
            .blocking_write_and_flush(b"conformance-p2: stderr works\n")
            .map_err(stream_error)
    });

    // wasi:cli/terminal-*: stdin and stdout are pipes in the contract.
    c.run(TERMINAL, "get-terminal-stdout none", || {
        ensure(terminal_stdout::get_terminal_stdout().is_none(), || {
            "stdout reported as a terminal".to_string()
        })
    });
    c.run(TERMINAL, "get-terminal-stdin none", || {
        ensure(terminal_stdin::get_terminal_stdin().is_none(), || {
            "stdin reported as a terminal".to_string()
        })
    });
    // stderr may or may not be a terminal (whoever runs the test decides): only call it.
    let _ = terminal_stderr::get_terminal_stderr();
}
