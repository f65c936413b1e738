//! Coordinator overhead with fake jobs over real gRPC on loopback.
//!
//! `cargo bench -p ndhtl-coordinator --bench dispatch` (add `-- --quick` for a smaller grid).
//!
//! N fake agents (one connection each) run M jobs of `LIFETIMES` lifetimes: lease, report one
//! metric record per lifetime, complete. Measured per configuration:
//! - dispatch throughput: jobs completed per second, wall clock;
//! - lease latency (request to lease in hand), p50 and p99;
//! - metric ingestion: records stored per second;
//! - coordinator CPU: the event-loop thread's CPU seconds (it does all state and SQLite work);
//!   the gRPC server threads share the process with the fake agents and are not separated
//!   (the process's total CPU is reported too, as an upper bound);
//! - coordinator memory: resident set growth of the process over the run.

use std::time::{Duration, Instant};

use ndhtl_coordinator::domain::{JobKind, JobSpec, Resources};
use ndhtl_coordinator::service::{EmbeddedCoordinator, EmbeddedOptions};
use ndhtl_coordinator::state::Timing;

use ndhtl_proto::v1;
use ndhtl_proto::v1::agent_service_client::AgentServiceClient;

const LIFETIMES: u32 = 2;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds of the calling thread (`/proc/thread-self/stat`: utime + stime, in USER_HZ).
fn thread_cpu_seconds() -> f64 {
    cpu_seconds("/proc/thread-self/stat")
}

/// CPU seconds of the whole process (coordinator, gRPC server and the fake agents).
fn process_cpu_seconds() -> f64 {
    cpu_seconds("/proc/self/stat")
}

fn cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Outcome {
    agents: usize,
    jobs: usize,
    seconds: f64,
    lease_p50_ms: f64,
    lease_p99_ms: f64,
    metrics_per_second: f64,
    loop_cpu_seconds: f64,
    process_cpu_seconds: f64,
    rss_growth_mib: f64,
}

async fn run(agents: usize, jobs: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let timing = Timing {
        heartbeat_interval_ms: 5_000,
        lease_timeout_ms: 600_000,
        agent_timeout_ms: 600_000,
        max_attempts: 3,
    };
    let rss_before = rss_kib();
    let any_port = "127.0.0.1:0".parse().unwrap();
    let coordinator =
        EmbeddedCoordinator::start(EmbeddedOptions::grpc_only(dir.path(), any_port, timing))
            .await
            .unwrap();
    let handle = coordinator.handle();
    let address = coordinator.url();
    // `inspect` runs on the event-loop thread, so this is that thread's CPU time.
    let process_before = process_cpu_seconds();
    let cpu_before = handle.inspect(|_, _| thread_cpu_seconds()).await.unwrap();
    let specs: Vec<JobSpec> = (0..jobs)
        .map(|i| JobSpec {
            id: format!("{i:064x}"),
            kind: JobKind::Finetune,
            config_json: format!(r#"{{"task":"T{}","seed":{i}}}"#, i % 10 + 1),
            depends_on: None,
            resources: Resources::ANY,
        })
        .collect();
    handle
        .submit("bench".into(), "bench".into(), 0, specs)
        .await
        .unwrap();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..agents {
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = AgentServiceClient::connect(address).await.unwrap();
            let capabilities = v1::AgentCapabilities {
                backend: "flex".into(),
                devices: vec![v1::Device {
                    kind: "cpu".into(),
                    ..Default::default()
                }],
                slots: 1,
                version: ndhtl_coordinator::VERSION.into(),
                ..Default::default()
            };
            let agent = client
                .register(v1::RegisterRequest {
                    capabilities: Some(capabilities),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .agent_id;
            let mut latencies = Vec::new();
            let mut records = 0u64;
            loop {
                let asked = Instant::now();
                let lease = client
                    .lease_job(v1::LeaseJobRequest {
                        agent_id: agent.clone(),
                        slot: 0,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .lease;
                latencies.push(asked.elapsed().as_secs_f64() * 1e3);
                let Some(lease) = lease else { break };
                let reports: Vec<v1::MetricsReport> = (1..=LIFETIMES)
                    .map(|lifetime| v1::MetricsReport {
                        agent_id: agent.clone(),
                        job: lease.job.clone(),
                        lifetime,
                        metrics_json: format!(r#"{{"lifetime":{lifetime},"val_top1":50.0}}"#),
                        checkpoint_artifact: String::new(),
                    })
                    .collect();
                records += client
                    .report_metrics(tokio_stream::iter(reports))
                    .await
                    .unwrap()
                    .into_inner()
                    .stored as u64;
                client
                    .complete_job(v1::CompleteJobRequest {
                        agent_id: agent.clone(),
                        job: lease.job,
                        summary_json: "{}".into(),
                        output_artifact: String::new(),
                    })
                    .await
                    .unwrap();
            }
            (latencies, records)
        }));
    }
    let mut latencies = Vec::new();
    let mut records = 0;
    for task in tasks {
        let (mut l, r) = task.await.unwrap();
        latencies.append(&mut l);
        records += r;
    }
    let seconds = started.elapsed().as_secs_f64();
    let loop_cpu_seconds = handle.inspect(|_, _| thread_cpu_seconds()).await.unwrap() - cpu_before;
    let process_cpu_seconds = process_cpu_seconds() - process_before;
    let rss_growth_mib = rss_kib().saturating_sub(rss_before) as f64 / 1024.0;
    let counts = handle.counts("bench".into()).await.unwrap();
    assert_eq!(
        counts.succeeded as usize, jobs,
        "every job ran exactly once"
    );
    assert_eq!(records, (jobs as u64) * LIFETIMES as u64);
    coordinator.shutdown().await.unwrap();
    latencies.sort_by(f64::total_cmp);
    Outcome {
        agents,
        jobs,
        seconds,
        lease_p50_ms: percentile(&latencies, 0.5),
        lease_p99_ms: percentile(&latencies, 0.99),
        metrics_per_second: records as f64 / seconds,
        loop_cpu_seconds,
        process_cpu_seconds,
        rss_growth_mib,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let grid: Vec<(usize, usize)> = if quick {
        vec![(1, 10), (16, 1_000), (256, 1_000)]
    } else {
        vec![
            (1, 10),
            (1, 1_000),
            (16, 1_000),
            (16, 10_000),
            (256, 10_000),
            (256, 100_000),
        ]
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| agents | jobs | wall s | jobs/s | lease p50 ms | lease p99 ms | metric records/s | event-loop CPU s | event-loop CPU ms/job | process CPU s | RSS growth MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (agents, jobs) in grid {
        let o = runtime.block_on(run(agents, jobs));
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.3} | {:.2} | {:.1} |",
            o.agents,
            o.jobs,
            o.seconds,
            o.jobs as f64 / o.seconds,
            o.lease_p50_ms,
            o.lease_p99_ms,
            o.metrics_per_second,
            o.loop_cpu_seconds,
            1e3 * o.loop_cpu_seconds / o.jobs as f64,
            o.process_cpu_seconds,
            o.rss_growth_mib
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
