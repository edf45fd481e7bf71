//! `wrun completion SHELL` and `wrun man DIR`: shell completions (clap_complete) and man
//! pages (clap_mangen), both from the command line's own definition, so they never drift.

use super::{Cli, Failure};
use anyhow::Context;
use clap::CommandFactory;
use std::path::PathBuf;

/// Print the completion script for a shell (bash, zsh, fish, elvish, powershell)
#[derive(clap::Args, Debug)]
pub struct CompletionCommand {
    shell: clap_complete::Shell,
}

impl CompletionCommand {
    pub fn execute(self) -> Result<(), Failure> {
        let mut command = Cli::command();
        // Into memory first: the generator panics on a failed write (`| head`).
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut command, "wrun", &mut script);
        match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::runtime(
                anyhow::Error::new(e).context("failed to write the completion script"),
            )),
            _ => Ok(()),
        }
    }
}

/// Write the man pages (wrun.1, wrun-run.1, ...) into a directory
#[derive(clap::Args, Debug)]
#[command(hide = true)]
pub struct ManCommand {
    /// Where the pages go (the install script's: /usr/local/share/man/man1)
    dir: PathBuf,
}

impl ManCommand {
    pub fn execute(self) -> Result<(), Failure> {
        self.write().map_err(Failure::runtime)
    }

    fn write(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("failed to create `{}`", self.dir.display()))?;
        let wrun = Cli::command();
        let mut pages = vec![("wrun".to_string(), wrun.clone())];
        for sub in wrun.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("wrun-{}", sub.get_name());
            pages.push((name.clone(), sub.clone().name(name)));
        }
        for (name, command) in pages {
            let path = self.dir.join(format!("{name}.1"));
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .with_context(|| format!("failed to render the man page {name}"))?;
            std::fs::write(&path, page)
                .with_context(|| format!("failed to write `{}`", path.display()))?;
        }
        Ok(())
    }
}
