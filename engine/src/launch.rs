//! One way to start a run, for the CLI, a container's monitor and (through the CLI) the
//! containerd shim: a pooled sandbox when a daemon serves the state root and takes the run,
//! else a standalone sandbox of its own.

use crate::pool::client;
use crate::sandbox::{self, Options, Report, RunError};
use crate::spec::RunSpec;
use crate::state::StateRoot;

/// Runs `spec` as `options` say, pooled if a pool takes it, and reports how it ended.
pub fn launch(spec: &RunSpec, state: &StateRoot, options: Options<'_>) -> Result<Report, RunError> {
    match client::try_launch(spec, state, options) {
        Ok(pooled) => Ok(pooled?),
        Err(options) => sandbox::run(spec, state, options),
    }
}
