//! Fetching one archive into the artifact store: the resumable download of `ndhtl_core::archive`
//! (checked against the published size and md5) into `<state>/downloads/`, then the import into
//! the artifact folder under its SHA-256, then the download is deleted. A coordinator restarted
//! mid-download resumes where it stopped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ndhtl_core::archive::{
    ArchiveSpec, FetchError, FetchObserver, FetchOptions, OFFICIAL_BASE_URL, fetch_archive,
};
use ndhtl_core::dataset::DatasetKind;
use sha2::{Digest, Sha256};

use super::{FetchPolicy, StoredDataset};
use crate::store::{ArtifactError, ArtifactStore};

/// What the coordinator serves and where it fetches it from.
#[derive(Debug, Clone)]
pub struct DatasetSource {
    pub policy: FetchPolicy,
    /// The archive of each dataset: the official ones at a mirror, or (tests) archives of
    /// generated data with their own checksums.
    pub archives: BTreeMap<DatasetKind, ArchiveSpec>,
    /// Downloads go to `fetch.cache_dir/downloads/`.
    pub fetch: FetchOptions,
    pub artifacts: ArtifactStore,
    /// A failed fetch is tried again on a request after this long.
    pub retry_after: Duration,
}

impl DatasetSource {
    /// The official archives, fetched from `mirror` (the CIFAR page by default) into
    /// `state_dir/downloads/`.
    pub fn official(
        policy: FetchPolicy,
        mirror: Option<&str>,
        state_dir: &Path,
        artifacts: ArtifactStore,
    ) -> Self {
        let mirror = mirror.unwrap_or(OFFICIAL_BASE_URL);
        DatasetSource {
            policy,
            archives: DatasetKind::ALL
                .into_iter()
                .map(|dataset| (dataset, ArchiveSpec::official(dataset, mirror)))
                .collect(),
            fetch: FetchOptions::new(state_dir.to_path_buf()),
            artifacts,
            retry_after: Duration::from_secs(60),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchFailure {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("storing the archive: {0}")]
    Store(#[from] ArtifactError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FetchFailure {
    /// Whether the same fetch can succeed later (a network fault) rather than needing a fix (a
    /// wrong mirror, a full disk).
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchFailure::Fetch(error) => error.is_retryable(),
            FetchFailure::Store(_) | FetchFailure::Io { .. } => false,
        }
    }
}

/// Bytes fetched so far, shared by a running fetch with whoever reports on it.
pub type Progress = Arc<AtomicU64>;

/// Counts bytes and logs a line at every tenth of the archive.
struct LogProgress {
    progress: Progress,
}

impl FetchObserver for LogProgress {
    fn advanced(&self, spec: &ArchiveSpec, received: u64) {
        let before = self.progress.swap(received, Ordering::Relaxed);
        let tenth = (spec.size / 10).max(1);
        if received / tenth != before / tenth {
            tracing::info!(archive = %spec.file_name, received, total = spec.size, "fetching");
        }
    }
}

/// Downloads `spec` (resuming, verifying), imports it into `artifacts` and deletes the download.
pub fn fetch_into_artifacts(
    spec: &ArchiveSpec,
    options: &FetchOptions,
    artifacts: &ArtifactStore,
    progress: Progress,
) -> Result<StoredDataset, FetchFailure> {
    let options = FetchOptions {
        observer: Some(Arc::new(LogProgress { progress })),
        ..options.clone()
    };
    let path = fetch_archive(spec, &options)?;
    let stored = import_archive(&path, spec, &spec.url, artifacts)?;
    let _ = std::fs::remove_file(&path);
    Ok(stored)
}

/// Stores a verified archive file as an artifact.
pub fn import_archive(
    path: &Path,
    spec: &ArchiveSpec,
    origin: &str,
    artifacts: &ArtifactStore,
) -> Result<StoredDataset, FetchFailure> {
    let io = |source| FetchFailure::Io {
        path: path.to_path_buf(),
        source,
    };
    let hash = {
        let mut file = File::open(path).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file.read(&mut buffer).map_err(io)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        hex::encode(hasher.finalize())
    };
    let mut file = File::open(path).map_err(io)?;
    let (bytes, _) = artifacts.put(&hash, &mut file)?;
    Ok(StoredDataset {
        dataset: spec.dataset,
        file_name: spec.file_name.clone(),
        artifact: hash,
        bytes,
        md5: spec.md5.clone(),
        origin: origin.to_string(),
    })
}
