//! The warm pool: `wrun daemon` keeps sandboxes isolated and waiting before any workload
//! arrives, and `wrun run` hands its workload to one of them when the daemon answers.

mod claim;
pub mod client;
pub mod daemon;
pub mod shape;
mod supervisor;
pub mod wire;

use crate::state::StateRoot;
use std::path::PathBuf;

/// Where the daemon of `state` listens.
pub fn socket_path(state: &StateRoot) -> PathBuf {
    state.path().join("daemon.sock")
}
