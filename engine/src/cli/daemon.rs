//! `wrun daemon`: the warm pool, in the foreground.

use super::Failure;
use wrun::config::EngineSettings;
use wrun::state::StateRoot;

/// Keep a pool of isolated sandboxes ready, so that `wrun run` starts below the kernel floor
#[derive(clap::Args, Debug)]
pub struct DaemonCommand {
    /// How many sandboxes to keep ready
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pool: u16,
    /// Cgroup under which the sandboxes' cgroups are made; runs asking for another one run
    /// standalone
    #[arg(long, value_name = "PATH", default_value = "wrun", value_parser = wrun::spec::parse_cgroup_parent)]
    cgroup_parent: String,
}

impl DaemonCommand {
    pub fn execute(self, state: &StateRoot, settings: &EngineSettings) -> Result<(), Failure> {
        let shape = wrun::pool::shape::Shape {
            settings: settings.clone(),
            cgroup_parent: self.cgroup_parent,
        };
        wrun::pool::daemon::run(state, &shape, usize::from(self.pool)).map_err(Failure::runtime)
    }
}
