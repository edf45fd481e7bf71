//! `wrun` with the escape suite's host-side test hooks compiled in (feature `test-hooks`).

#[path = "../main.rs"]
mod wrun_main;

fn main() -> std::process::ExitCode {
    wrun_main::main()
}
