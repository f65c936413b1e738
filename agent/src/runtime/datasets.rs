//! CIFAR for jobs on the real data: from the agent's `--data` folder when it holds the dataset,
//! else from the coordinator, which fetches each official archive once and serves it as an
//! artifact (`GetDataset`). The agent downloads the archive, checks its SHA-256 and the
//! published md5, extracts it under `<work>/datasets/` and keeps it for later jobs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndhtl_core::config::{FinetuneConfig, SourceConfig};
use ndhtl_core::dataset::Dataset;
use ndhtl_proto::v1;
use tokio::sync::watch;
use tonic::Code;

use super::runner::RunnerError;
use super::{Shared, artifacts};
use crate::data::cifar_format::dataset_present;
use crate::data::download::{extract_archive, file_md5};
use crate::data::{DatasetKind, TaskSpec};

/// The default of `AgentOptions::dataset_wait`: how long a job waits for a dataset the
/// coordinator cannot serve right now (its fetch
/// failed, or it is unreachable) before the attempt fails and goes back to the queue.
pub const UNAVAILABLE_WAIT: Duration = Duration::from_secs(600);

fn retryable(message: impl ToString) -> RunnerError {
    RunnerError {
        message: message.to_string(),
        retryable: true,
    }
}

/// The CIFAR dataset a leased job reads, if it reads one (generated data needs none).
pub fn required_dataset(kind: &str, config_json: &str) -> Result<Option<DatasetKind>, RunnerError> {
    let fatal = |message: String| RunnerError {
        message,
        retryable: false,
    };
    let (dataset, task) = match kind {
        "source" => {
            let config: SourceConfig = serde_json::from_str(config_json)
                .map_err(|e| fatal(format!("source configuration: {e}")))?;
            (config.dataset, config.task)
        }
        "finetune" => {
            let config: FinetuneConfig = serde_json::from_str(config_json)
                .map_err(|e| fatal(format!("fine-tune configuration: {e}")))?;
            (config.dataset, config.task)
        }
        other => return Err(fatal(format!("unknown job kind `{other}`"))),
    };
    if !matches!(dataset, Dataset::Cifar) {
        return Ok(None);
    }
    let task: TaskSpec = task.parse().map_err(|e| fatal(format!("{e}")))?;
    Ok(Some(task.dataset))
}

/// Where the datasets the coordinator served are extracted.
pub fn served_root(work_dir: &Path) -> PathBuf {
    work_dir.join("datasets")
}

/// Written once a served archive is extracted: its artifact hash.
fn marker(root: &Path, dataset: DatasetKind) -> PathBuf {
    root.join(format!(".{}.served", dataset.dir_name()))
}

/// The data root a job on `dataset` reads: `None` for the agent's own `--data` folder, or the
/// folder the coordinator's archive was extracted into (downloading it first if needed).
pub(super) async fn data_root_for(
    shared: &Shared,
    dataset: DatasetKind,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<PathBuf>, RunnerError> {
    if dataset_present(&shared.options.data_dir, dataset) {
        return Ok(None);
    }
    let root = served_root(&shared.options.work_dir);
    // One download per agent, whichever slot asks first; the others find it done.
    let _one_at_a_time = shared.dataset_lock.lock().await;
    if marker(&root, dataset).is_file() && dataset_present(&root, dataset) {
        return Ok(Some(root));
    }
    tracing::info!(%dataset, data_dir = %shared.options.data_dir.display(), "no local copy of the dataset: asking the coordinator");
    let archive = wait_until_served(shared, dataset, shutdown).await?;
    let file = root.join("downloads").join(&archive.file_name);
    let mut client = shared.client.clone();
    let started = Instant::now();
    let bytes = artifacts::download_to_file(&mut client, &archive.archive_sha256, &file)
        .await
        .map_err(retryable)?;
    tracing::info!(%dataset, bytes, seconds = started.elapsed().as_secs_f64(), "archive downloaded from the coordinator");
    let expected_md5 = archive.archive_md5.clone();
    let sha = archive.archive_sha256.clone();
    let extract_root = root.clone();
    tokio::task::spawn_blocking(move || -> Result<(), RunnerError> {
        let md5 = file_md5(&file).map_err(retryable)?;
        if !md5.eq_ignore_ascii_case(&expected_md5) {
            let _ = std::fs::remove_file(&file);
            return Err(retryable(format!(
                "{}: md5 is {md5}, but the coordinator published {expected_md5}",
                file.display()
            )));
        }
        extract_archive(&file, &extract_root, dataset).map_err(|error| RunnerError {
            retryable: error.is_retryable(),
            message: error.to_string(),
        })?;
        std::fs::write(marker(&extract_root, dataset), &sha).map_err(retryable)?;
        let _ = std::fs::remove_file(&file);
        Ok(())
    })
    .await
    .map_err(|panic| retryable(format!("extracting the archive panicked: {panic}")))??;
    tracing::info!(%dataset, root = %root.display(), "dataset extracted");
    Ok(Some(root))
}

/// Asks the coordinator until the archive is stored: without a limit while its fetch runs (the
/// fetch ends, one way or the other), and for at most `dataset_wait` from the first answer
/// that it cannot serve it (a failed fetch, or no answer at all).
async fn wait_until_served(
    shared: &Shared,
    dataset: DatasetKind,
    shutdown: &watch::Receiver<bool>,
) -> Result<v1::GetDatasetResponse, RunnerError> {
    let poll = shared.options.dataset_poll;
    let mut unavailable_since: Option<Instant> = None;
    let mut last_log = Instant::now();
    loop {
        if *shutdown.borrow() {
            return Err(retryable("the agent is stopping"));
        }
        let request = v1::GetDatasetRequest {
            agent_id: shared.agent_id(),
            dataset: dataset.as_str().to_string(),
        };
        let mut client = shared.client.clone();
        match client.get_dataset(request).await {
            Ok(response) => {
                let response = response.into_inner();
                if response.ready {
                    return Ok(response);
                }
                // A fetch is running; `unavailable_since` is not reset: a coordinator that keeps
                // failing and retrying must not keep the job waiting forever.
                if last_log.elapsed() >= Duration::from_secs(30) {
                    tracing::info!(%dataset, fetched = response.fetched_bytes, total = response.archive_bytes, "the coordinator is still fetching the archive");
                    last_log = Instant::now();
                }
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                return Err(retryable(status.message()));
            }
            Err(status) => {
                let since = *unavailable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= shared.options.dataset_wait {
                    return Err(retryable(format!(
                        "gave up waiting {} s for {dataset}: {}",
                        shared.options.dataset_wait.as_secs(),
                        status.message()
                    )));
                }
                tracing::warn!(%dataset, error = %status.message(), "the coordinator cannot serve the dataset yet");
            }
        }
        tokio::time::sleep(poll).await;
    }
}
