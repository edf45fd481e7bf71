//! A spinner for long work (compiling, importing, exporting) on a terminal; silent otherwise.

use std::io::IsTerminal;

/// Shows `message` with a spinner until dropped, if stderr is a terminal.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn start(message: impl Into<String>) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(message.into());
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        Progress(Some(bar))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
