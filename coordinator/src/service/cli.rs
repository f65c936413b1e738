//! The coordinator's command-line flags, shared by `ndhtl coordinator` and `ndhtl-coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;

use ndhtl_core::archive::OFFICIAL_BASE_URL;

use super::run::{CoordinatorOptions, DatasetOptions};
use crate::datasets::FetchPolicy;
use crate::state::Timing;

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArgs {
    /// Address for gRPC (agents, clients, health probes).
    #[arg(long, env = "NDHTL_LISTEN", default_value = "0.0.0.0:7070")]
    pub listen: SocketAddr,
    /// Address for HTTP: `/healthz` and Prometheus `/metrics`; `off` to serve none.
    #[arg(long, env = "NDHTL_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: HttpListen,
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
    /// When to fetch the official CIFAR archives, which the coordinator then serves to agents
    /// that have no `--data` of their own: `on-demand` (when an agent first asks), `at-start`,
    /// or `off`.
    #[arg(
        long,
        env = "NDHTL_CIFAR_FETCH",
        value_enum,
        default_value = "on-demand"
    )]
    pub cifar_fetch: FetchPolicy,
    /// Where the coordinator fetches the CIFAR archives from: the CIFAR page, or any HTTP
    /// server holding `cifar-10-binary.tar.gz` and `cifar-100-binary.tar.gz` (air-gapped
    /// clusters). They are checked against the published sizes and md5s either way.
    #[arg(long, env = "NDHTL_CIFAR_MIRROR", default_value = OFFICIAL_BASE_URL)]
    pub cifar_mirror: String,
}

impl CoordinatorArgs {
    pub fn into_options(self) -> CoordinatorOptions {
        CoordinatorOptions {
            listen: self.listen,
            http_listen: self.http_listen.0,
            state_dir: self.state_dir,
            timing: Timing {
                lease_timeout_ms: self.lease_timeout_secs * 1000,
                heartbeat_interval_ms: self.heartbeat_secs * 1000,
                agent_timeout_ms: self.agent_timeout_secs * 1000,
                max_attempts: self.max_attempts.max(1),
            },
            datasets: DatasetOptions {
                policy: self.cifar_fetch,
                mirror: self.cifar_mirror,
            },
        }
    }
}

/// Where HTTP is served: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListen(pub Option<SocketAddr>);

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(HttpListen(None));
        }
        text.parse()
            .map(|address| HttpListen(Some(address)))
            .map_err(|error| {
                format!("`{text}` is neither an address (0.0.0.0:8080) nor `off`: {error}")
            })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: CoordinatorArgs,
    }

    #[test]
    fn flags_parse_into_options() {
        let options =
            Command::try_parse_from(["c", "--listen=127.0.0.1:7000", "--http-listen=off"])
                .unwrap()
                .args
                .into_options();
        assert_eq!(options.listen.port(), 7000);
        assert_eq!(options.http_listen, None);
        let options = Command::try_parse_from(["c", "--max-attempts=0"])
            .unwrap()
            .args
            .into_options();
        assert_eq!(options.http_listen, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(options.timing.max_attempts, 1);
        let error = Command::try_parse_from(["c", "--http-listen=nowhere"])
            .err()
            .unwrap();
        assert!(error.to_string().contains("neither an address"), "{error}");
    }
}
