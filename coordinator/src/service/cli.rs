//! The coordinator's command-line flags, shared by `ndhtl coordinator` and `ndhtl-coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::run::CoordinatorOptions;
use crate::state::Timing;

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArgs {
    /// Address for gRPC (agents, clients, health probes).
    #[arg(long, env = "NDHTL_LISTEN", default_value = "0.0.0.0:7070")]
    pub listen: SocketAddr,
    /// Folder of the state database (ndhtl.sqlite3) and the artifacts; put it on a volume.
    #[arg(long, env = "NDHTL_STATE_DIR", default_value = "ndhtl-state")]
    pub state_dir: PathBuf,
    /// A lease lives this long after its last heartbeat (seconds).
    #[arg(long, default_value_t = 60)]
    pub lease_timeout_secs: u64,
    /// Agents heartbeat this often (seconds).
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// An agent silent this long is lost and its jobs are re-leased (seconds).
    #[arg(long, default_value_t = 120)]
    pub agent_timeout_secs: u64,
    /// Attempts before a job fails for good.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
}

impl CoordinatorArgs {
    pub fn into_options(self) -> CoordinatorOptions {
        CoordinatorOptions {
            listen: self.listen,
            state_dir: self.state_dir,
            timing: Timing {
                lease_timeout_ms: self.lease_timeout_secs * 1000,
                heartbeat_interval_ms: self.heartbeat_secs * 1000,
                agent_timeout_ms: self.agent_timeout_secs * 1000,
                max_attempts: self.max_attempts.max(1),
            },
        }
    }
}
