//! The coordinator's HTTP side, beside gRPC: `/healthz` (the event loop answers), and
//! `/metrics` (Prometheus text: jobs by state, agents, slots, sweeps). The dashboard will be
//! served here too.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::dataset_loop::DatasetView;
use super::event_loop::CoordinatorHandle;
use crate::domain::JobState;
use crate::state::ClusterState;

/// How long `/healthz` waits for the event loop before calling the coordinator unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

pub fn router(handle: CoordinatorHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(handle)
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: TcpListener,
    handle: CoordinatorHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(handle))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(handle): State<CoordinatorHandle>) -> impl IntoResponse {
    match tokio::time::timeout(HEALTH_TIMEOUT, handle.inspect(|_, _| ())).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n"),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the event loop does not answer\n",
        ),
    }
}

async fn metrics(State(handle): State<CoordinatorHandle>) -> impl IntoResponse {
    let text = match handle.inspect(|state, _| prometheus_text(state)).await {
        Ok(text) => handle
            .datasets()
            .await
            .map(|views| text + &dataset_gauges(&views)),
        Err(error) => Err(error),
    };
    match text {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("{error}\n"),
        ),
    }
}

/// The served datasets as Prometheus gauges: bytes stored (ready) or fetched so far.
pub fn dataset_gauges(views: &[DatasetView]) -> String {
    let mut out = String::from(
        "# HELP ndhtl_dataset_bytes CIFAR archives the coordinator serves: bytes stored, or fetched so far.\n# TYPE ndhtl_dataset_bytes gauge\n",
    );
    for view in views {
        let _ = writeln!(
            out,
            "ndhtl_dataset_bytes{{dataset=\"{}\",state=\"{}\"}} {}",
            view.dataset, view.state, view.bytes
        );
    }
    out
}

/// The state as Prometheus gauges. Pure, so it is tested without a server.
pub fn prometheus_text(state: &ClusterState) -> String {
    let mut by_state = [
        ("queued", 0u64),
        ("running", 0),
        ("succeeded", 0),
        ("failed", 0),
        ("cancelled", 0),
    ];
    let mut attempts = 0u64;
    for job in state.jobs() {
        let name = job.state.name();
        if let Some(entry) = by_state.iter_mut().find(|(state, _)| *state == name) {
            entry.1 += 1;
        }
        attempts += u64::from(job.attempts);
    }
    let (mut alive, mut lost, mut slots) = (0u64, 0u64, 0u64);
    for agent in state.agents() {
        if agent.lost {
            lost += 1;
        } else {
            alive += 1;
            slots += u64::from(agent.capabilities.slots);
        }
    }
    let busy = state
        .jobs()
        .filter(|job| matches!(job.state, JobState::Leased(_)))
        .count();
    let unfinished_sweeps = state
        .sweeps()
        .filter(|sweep| {
            sweep
                .jobs
                .iter()
                .any(|id| state.job(id).is_some_and(|job| !job.state.is_finished()))
        })
        .count();

    let mut out = String::new();
    out.push_str("# HELP ndhtl_jobs Jobs by state.\n# TYPE ndhtl_jobs gauge\n");
    for (name, count) in by_state {
        let _ = writeln!(out, "ndhtl_jobs{{state=\"{name}\"}} {count}");
    }
    out.push_str("# HELP ndhtl_job_attempts_total Attempts started over all jobs.\n# TYPE ndhtl_job_attempts_total counter\n");
    let _ = writeln!(out, "ndhtl_job_attempts_total {attempts}");
    out.push_str("# HELP ndhtl_agents Agents by liveness.\n# TYPE ndhtl_agents gauge\n");
    let _ = writeln!(out, "ndhtl_agents{{state=\"alive\"}} {alive}");
    let _ = writeln!(out, "ndhtl_agents{{state=\"lost\"}} {lost}");
    out.push_str("# HELP ndhtl_slots Job slots of live agents.\n# TYPE ndhtl_slots gauge\n");
    let _ = writeln!(out, "ndhtl_slots{{state=\"busy\"}} {busy}");
    let _ = writeln!(out, "ndhtl_slots{{state=\"total\"}} {slots}");
    out.push_str("# HELP ndhtl_sweeps Sweeps by progress.\n# TYPE ndhtl_sweeps gauge\n");
    let total_sweeps = state.sweeps().count();
    let _ = writeln!(out, "ndhtl_sweeps{{state=\"running\"}} {unfinished_sweeps}");
    let _ = writeln!(
        out,
        "ndhtl_sweeps{{state=\"done\"}} {}",
        total_sweeps - unfinished_sweeps
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentCapabilities, DeviceKind, JobKind, JobSpec, Resources};
    use crate::state::Timing;

    fn spec(id: &str) -> JobSpec {
        JobSpec {
            id: id.into(),
            kind: JobKind::Finetune,
            config_json: "{}".into(),
            depends_on: None,
            resources: Resources::ANY,
        }
    }

    #[test]
    fn metrics_count_jobs_agents_slots_and_sweeps() {
        let mut state = ClusterState::new(Timing {
            lease_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
            agent_timeout_ms: 5_000,
            max_attempts: 3,
        });
        state
            .submit_sweep(
                "s".into(),
                "s".into(),
                0,
                vec![spec("a"), spec("b"), spec("c")],
            )
            .unwrap();
        let capabilities = AgentCapabilities {
            backend: "flex".into(),
            devices: vec![DeviceKind::Cpu],
            slots: 2,
            version: crate::VERSION.into(),
            hostname: "h".into(),
        };
        let (agent, ..) = state
            .register_agent(capabilities, crate::VERSION, None, &[], 0)
            .unwrap();
        let (grant, _) = state.lease(&agent, 0, 0).unwrap();
        let job = grant.expect("a job to lease").spec.id;
        state.complete(&agent, &job, 1, "{}".into(), None).unwrap();
        state.lease(&agent, 1, 20).unwrap();

        let text = prometheus_text(&state);
        for line in [
            "ndhtl_jobs{state=\"queued\"} 1",
            "ndhtl_jobs{state=\"running\"} 1",
            "ndhtl_jobs{state=\"succeeded\"} 1",
            "ndhtl_job_attempts_total 2",
            "ndhtl_agents{state=\"alive\"} 1",
            "ndhtl_slots{state=\"busy\"} 1",
            "ndhtl_slots{state=\"total\"} 2",
            "ndhtl_sweeps{state=\"running\"} 1",
            "ndhtl_sweeps{state=\"done\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample is preceded by its HELP and TYPE lines.
        assert_eq!(text.matches("# TYPE").count(), 5);
    }

    #[test]
    fn served_datasets_are_gauges_by_dataset_and_state() {
        let views = [
            DatasetView {
                dataset: ndhtl_core::dataset::DatasetKind::Cifar10,
                state: "ready",
                detail: "https://mirror/cifar-10-binary.tar.gz".into(),
                bytes: 170_052_171,
            },
            DatasetView {
                dataset: ndhtl_core::dataset::DatasetKind::Cifar100,
                state: "fetching",
                detail: String::new(),
                bytes: 1_024,
            },
        ];
        let text = dataset_gauges(&views);
        assert!(text.contains("# TYPE ndhtl_dataset_bytes gauge"), "{text}");
        assert!(
            text.contains("ndhtl_dataset_bytes{dataset=\"cifar10\",state=\"ready\"} 170052171"),
            "{text}"
        );
        assert!(
            text.contains("ndhtl_dataset_bytes{dataset=\"cifar100\",state=\"fetching\"} 1024"),
            "{text}"
        );
    }
}
