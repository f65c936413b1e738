//! A harness for system tests with real processes: the `ndhtl` binary as a coordinator and as
//! agents on 127.0.0.1, each in its own process, so that tests can SIGKILL, SIGSTOP and restart
//! them. Faults are injected at chosen points of a job's progress (deterministic budgets), not
//! at random times.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ndhtl_core::metrics::LifetimeMetrics;
use ndhtl_proto::v1;
use ndhtl_proto::v1::sweep_service_client::SweepServiceClient;
use tonic::transport::Channel;

/// The workspace's root folder.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
}

/// Builds one binary of the workspace (a no-op when `cargo test --workspace` built it
/// already) and returns its path.
fn build_binary(package: &str, binary: &str) -> PathBuf {
    let workspace = workspace_root();
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", package, "--bin", binary])
        .current_dir(workspace)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build --bin {binary} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let path = target.join("debug").join(binary);
    assert!(path.exists(), "no {binary} binary at {}", path.display());
    path
}

/// The `ndhtl` binary of this workspace, built once.
pub fn ndhtl_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_binary("ndhtl-agent", "ndhtl"))
}

/// The standalone `ndhtl-coordinator` binary (the coordinator image's), built once.
pub fn coordinator_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_binary("ndhtl-coordinator", "ndhtl-coordinator"))
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a free port")
        .port()
}

/// A child process, killed when dropped. Its output goes to a log file in the cluster folder.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    fn spawn(name: &str, args: &[String], log: PathBuf, env: &[(&str, &str)]) -> Process {
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(ndhtl_binary());
        command
            .args(args)
            .env("NDHTL_LOG", "info")
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawning ndhtl");
        Process {
            name: name.into(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {} failed", self.name);
    }

    /// SIGKILL: no cleanup, no goodbye.
    pub fn kill9(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process stalls (no heartbeats, no reports) until [`Process::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM: the graceful stop Kubernetes sends.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Waits for the process to exit by itself; its exit status, or None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Short timings so that faults are noticed in seconds.
pub const LEASE_TIMEOUT_SECS: u64 = 3;

/// A coordinator and agents, each a process, in one temporary folder.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The coordinator's HTTP port (`/healthz`, `/metrics`).
    pub http_port: u16,
    pub coordinator: Option<Process>,
    pub agents: Vec<Option<Process>>,
    restarts: usize,
}

/// How long a coordinator may take to start serving.
const COORDINATOR_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at starting a cluster's coordinator on fresh ports: a port [`free_port`] found can
/// be taken by another process before the coordinator binds it.
const COORDINATOR_START_ATTEMPTS: usize = 3;

impl Cluster {
    /// A cluster whose coordinator serves (its log says so) on ports nothing else holds.
    pub fn start() -> Cluster {
        for attempt in 1..=COORDINATOR_START_ATTEMPTS {
            let port = free_port();
            let http_port = std::iter::repeat_with(free_port)
                .find(|&http_port| http_port != port)
                .expect("a second free port");
            let cluster = Cluster::start_on(port, http_port);
            if !cluster.coordinator_could_not_listen() {
                return cluster;
            }
            assert!(
                attempt < COORDINATOR_START_ATTEMPTS,
                "the coordinator could not listen on fresh ports {attempt} times\n{}",
                cluster.logs()
            );
            eprintln!("the coordinator's port was taken before it bound it; new ports");
        }
        unreachable!("the last attempt returns or panics")
    }

    /// A cluster whose coordinator was started on these ports: it serves, or it has exited
    /// (for instance [`Cluster::coordinator_could_not_listen`]).
    pub fn start_on(port: u16, http_port: u16) -> Cluster {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            port,
            http_port,
            coordinator: None,
            agents: Vec::new(),
            restarts: 0,
        };
        cluster.start_coordinator();
        cluster
    }

    /// Whether the coordinator's log says it could not listen on its ports.
    pub fn coordinator_could_not_listen(&self) -> bool {
        self.coordinator().log_text().contains("cannot listen on")
    }

    pub fn coordinator(&self) -> &Process {
        self.coordinator.as_ref().expect("a coordinator")
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The coordinator's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn start_coordinator(&mut self) {
        assert!(self.coordinator.is_none(), "the coordinator runs already");
        let args: Vec<String> = [
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--http-listen",
            &format!("127.0.0.1:{}", self.http_port),
            "--state-dir",
            &self.state_dir().display().to_string(),
            "--lease-timeout-secs",
            &LEASE_TIMEOUT_SECS.to_string(),
            "--heartbeat-secs",
            "1",
            "--agent-timeout-secs",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self
            .dir
            .path()
            .join(format!("coordinator-{}.log", self.restarts));
        self.restarts += 1;
        self.coordinator = Some(Process::spawn("coordinator", &args, log, &[]));
        self.wait_until_coordinator_serves();
    }

    /// Waits until the coordinator's log says it serves. Returns early when it exits: the
    /// caller reads why in its log ([`Cluster::start`] retries a port taken by another
    /// process); panics with every log if it neither serves nor exits in time.
    fn wait_until_coordinator_serves(&mut self) {
        let deadline = Instant::now() + COORDINATOR_START_TIMEOUT;
        loop {
            let coordinator = self.coordinator.as_mut().expect("a coordinator");
            if coordinator.log_text().contains("coordinator serving") {
                return;
            }
            if let Ok(Some(_status)) = coordinator.child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the coordinator did not serve within {COORDINATOR_START_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill_coordinator(&mut self) {
        self.coordinator.take().expect("a coordinator").kill9();
    }

    /// Starts an agent with one slot and one CPU thread (so runs are bit-for-bit repeatable).
    pub fn add_agent(&mut self, env: &[(&str, &str)]) -> usize {
        let index = self.agents.len();
        let args: Vec<String> = [
            "agent",
            "--coordinator",
            &self.address(),
            "--slots",
            "1",
            "--threads-per-slot",
            "1",
            "--backend",
            "flex",
            "--work-dir",
            &self
                .dir
                .path()
                .join(format!("agent-{index}"))
                .display()
                .to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.dir.path().join(format!("agent-{index}.log"));
        self.agents.push(Some(Process::spawn(
            &format!("agent-{index}"),
            &args,
            log,
            env,
        )));
        index
    }

    pub fn agent(&self, index: usize) -> &Process {
        self.agents[index].as_ref().expect("agent running")
    }

    pub fn agent_mut(&mut self, index: usize) -> &mut Process {
        self.agents[index].as_mut().expect("agent running")
    }

    pub fn kill_agent(&mut self, index: usize) {
        self.agents[index].take().expect("agent running").kill9();
    }

    /// A client, retrying while the coordinator starts.
    pub async fn client(&self) -> SweepServiceClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Channel::from_shared(self.address())
                .expect("address")
                .connect()
                .await
            {
                Ok(channel) => return SweepServiceClient::new(channel),
                Err(error) if Instant::now() > deadline => {
                    panic!(
                        "coordinator unreachable at {}: {error}\n{}",
                        self.address(),
                        self.logs()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub async fn submit(&self, yaml: &str) -> String {
        self.client()
            .await
            .submit_sweep(v1::SubmitSweepRequest {
                yaml: yaml.into(),
                file_name: "chaos.yaml".into(),
                priority: 0,
                retry_failed: false,
            })
            .await
            .expect("submit")
            .into_inner()
            .sweep_id
    }

    /// The sweep's results, retrying while the coordinator is down or restarting.
    pub async fn results(&self, sweep: &str) -> Vec<v1::JobResult> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut client = self.client().await;
            match client
                .fetch_results(v1::FetchResultsRequest {
                    sweep_id: sweep.into(),
                })
                .await
            {
                Ok(response) => return response.into_inner().jobs,
                Err(status) if Instant::now() > deadline => panic!("fetch results: {status}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Polls the sweep's results until `done` holds for them, or panics with the logs.
    pub async fn wait_for(
        &self,
        sweep: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[v1::JobResult]) -> bool,
    ) -> Vec<v1::JobResult> {
        let deadline = Instant::now() + timeout;
        loop {
            let results = self.results(sweep).await;
            if done(&results) {
                return results;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; results: {results:#?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET path` on the coordinator's HTTP port: (status code, body). HTTP/1.0 over a plain
    /// socket, so the harness needs no HTTP client.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port))
            .unwrap_or_else(|error| panic!("coordinator HTTP port {}: {error}", self.http_port));
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Every process log, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        let mut entries: Vec<_> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for path in entries
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let content = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = content.lines().rev().take(40).collect();
            text.push_str(&format!("--- {} (last 40 lines)\n", path.display()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// The fields of a lifetime record that a correct run reproduces exactly (everything but
/// wall-clock timings).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparable {
    pub lifetime: usize,
    pub numbers: Vec<Option<f64>>,
    pub counts: (usize, usize),
}

pub fn comparable(metrics_json: &str) -> Comparable {
    let m: LifetimeMetrics = serde_json::from_str(metrics_json).expect("metrics record");
    Comparable {
        lifetime: m.lifetime,
        numbers: vec![
            Some(m.val_loss),
            Some(m.val_top1),
            Some(m.val_top5),
            Some(m.train_loss),
            Some(m.train_top1),
            Some(m.lr),
            m.eta,
            m.alpha_abs_mean,
            m.hebb_abs_mean,
            m.modulator_mean,
        ],
        counts: (m.steps, m.backward_passes),
    }
}

/// Per job (by id): its state, final attempt and comparable history.
pub fn outcome(results: &[v1::JobResult]) -> Vec<(String, String, Vec<Comparable>)> {
    let mut jobs: Vec<_> = results
        .iter()
        .map(|job| {
            (
                job.job_id.clone(),
                job.state.clone(),
                job.metrics_json.iter().map(|m| comparable(m)).collect(),
            )
        })
        .collect();
    jobs.sort_by(|a, b| a.0.cmp(&b.0));
    jobs
}

pub fn all_succeeded(results: &[v1::JobResult]) -> bool {
    !results.is_empty() && results.iter().all(|job| job.state == "succeeded")
}
