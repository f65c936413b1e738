//! The official CIFAR binary archives: where they are, their published sizes and md5s, and a
//! resumable, verified download. Burn-free, because two sides download them: the agent's
//! `ndhtl data download`, and the coordinator, which fetches each archive once and serves it to
//! its agents as an artifact.
//!
//! - Downloads go to `<cache>/downloads/`, under an exclusive file lock, so that concurrent
//!   processes on one machine download once.
//! - A partial download resumes with an HTTP `Range` request.
//! - The published size and md5 are checked before anything is used; a corrupt file is deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};

use crate::dataset::DatasetKind;

/// Where the official archives live.
pub const OFFICIAL_BASE_URL: &str = "https://www.cs.toronto.edu/~kriz/";

/// One downloadable archive and its published checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSpec {
    pub dataset: DatasetKind,
    pub file_name: String,
    pub url: String,
    pub size: u64,
    pub md5: String,
}

impl ArchiveSpec {
    /// The official archive of `dataset`, fetched from `base_url` (the CIFAR page, or a mirror).
    pub fn official(dataset: DatasetKind, base_url: &str) -> Self {
        let (file_name, size, md5) = match dataset {
            DatasetKind::Cifar10 => (
                "cifar-10-binary.tar.gz",
                170_052_171,
                "c32a1d4ab5d03f1284b67883e8d87530",
            ),
            DatasetKind::Cifar100 => (
                "cifar-100-binary.tar.gz",
                168_513_733,
                "03b5dce01913d631647c71ecec9e9cb8",
            ),
        };
        let separator = if base_url.ends_with('/') { "" } else { "/" };
        ArchiveSpec {
            dataset,
            file_name: file_name.into(),
            url: format!("{base_url}{separator}{file_name}"),
            size,
            md5: md5.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: HTTP status {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error(
        "{path}: download stopped at {received} of {expected} bytes (the partial file is kept; run again to resume)"
    )]
    Incomplete {
        path: PathBuf,
        received: u64,
        expected: u64,
    },
    #[error(
        "{path}: size is {actual} bytes, but the published size is {expected}; the file was deleted"
    )]
    SizeMismatch {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("{path}: md5 is {actual}, but the published md5 is {expected}; the file was deleted")]
    Md5Mismatch {
        path: PathBuf,
        actual: String,
        expected: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// Whether trying again (and resuming) can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::HttpStatus { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            FetchError::Transport { .. } | FetchError::Incomplete { .. } => true,
            _ => false,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// md5 of a file, hex.
pub fn file_md5(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io_error(path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks a file's size, then its md5, against `spec`.
pub fn verify_archive(path: &Path, spec: &ArchiveSpec) -> Result<(), FetchError> {
    let actual = fs::metadata(path).map_err(io_error(path))?.len();
    if actual != spec.size {
        return Err(FetchError::SizeMismatch {
            path: path.to_path_buf(),
            actual,
            expected: spec.size,
        });
    }
    let md5 = file_md5(path)?;
    if !md5.eq_ignore_ascii_case(&spec.md5) {
        return Err(FetchError::Md5Mismatch {
            path: path.to_path_buf(),
            actual: md5,
            expected: spec.md5.clone(),
        });
    }
    Ok(())
}

/// [`verify_archive`], deleting the file when it fails.
fn verify_or_delete(path: &Path, spec: &ArchiveSpec) -> Result<(), FetchError> {
    let verified = verify_archive(path, spec);
    if matches!(
        verified,
        Err(FetchError::SizeMismatch { .. } | FetchError::Md5Mismatch { .. })
    ) {
        let _ = fs::remove_file(path);
    }
    verified
}

/// Watches a transfer: a progress bar on a terminal, periodic log lines in a server.
pub trait FetchObserver: Send + Sync {
    /// The transfer of `spec` (re)starts at `offset` bytes.
    fn started(&self, _spec: &ArchiveSpec, _offset: u64) {}
    /// `received` of the archive's bytes are on disk.
    fn advanced(&self, _spec: &ArchiveSpec, _received: u64) {}
    /// The transfer ended (finished, or broke off and will resume).
    fn stopped(&self, _spec: &ArchiveSpec, _received: u64) {}
}

/// Options of one download.
#[derive(Clone)]
pub struct FetchOptions {
    /// Downloads go to `cache_dir/downloads/`.
    pub cache_dir: PathBuf,
    pub attempts: u32,
    pub retry_delay: Duration,
    pub timeout: Duration,
    pub observer: Option<Arc<dyn FetchObserver>>,
}

impl std::fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("cache_dir", &self.cache_dir)
            .field("attempts", &self.attempts)
            .field("retry_delay", &self.retry_delay)
            .field("timeout", &self.timeout)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl FetchOptions {
    pub fn new(cache_dir: PathBuf) -> Self {
        FetchOptions {
            cache_dir,
            attempts: 5,
            retry_delay: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            observer: None,
        }
    }

    /// Where `spec`'s verified archive lands.
    pub fn archive_path(&self, spec: &ArchiveSpec) -> PathBuf {
        self.cache_dir.join("downloads").join(&spec.file_name)
    }

    /// Where `spec`'s partial download grows.
    pub fn partial_path(&self, spec: &ArchiveSpec) -> PathBuf {
        self.cache_dir
            .join("downloads")
            .join(format!("{}.part", spec.file_name))
    }
}

/// Downloads `spec` into the cache (resuming, verifying) and returns the verified archive path.
/// Retryable failures are retried `options.attempts` times, each resuming where the last stopped.
pub fn fetch_archive(spec: &ArchiveSpec, options: &FetchOptions) -> Result<PathBuf, FetchError> {
    let mut attempt = 1;
    loop {
        match fetch_archive_once(spec, options) {
            Ok(path) => return Ok(path),
            Err(error) if error.is_retryable() && attempt < options.attempts => {
                tracing::warn!(url = %spec.url, attempt, %error, "download failed; resuming");
                std::thread::sleep(options.retry_delay * attempt);
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// One attempt: resume or start the transfer, then verify.
pub fn fetch_archive_once(
    spec: &ArchiveSpec,
    options: &FetchOptions,
) -> Result<PathBuf, FetchError> {
    let downloads = options.cache_dir.join("downloads");
    fs::create_dir_all(&downloads).map_err(io_error(&downloads))?;
    let final_path = options.archive_path(spec);
    let part_path = options.partial_path(spec);

    let mut part = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(&part_path)
        .map_err(io_error(&part_path))?;
    // One downloader per archive per machine; others wait here, then find the finished file.
    part.lock().map_err(io_error(&part_path))?;

    if final_path.exists() {
        match verify_or_delete(&final_path, spec) {
            Ok(()) => {
                tracing::info!(path = %final_path.display(), "archive already in the cache");
                let _ = fs::remove_file(&part_path);
                return Ok(final_path);
            }
            Err(error) => tracing::warn!(%error, "cached archive is damaged; downloading again"),
        }
    }

    let mut offset = part.metadata().map_err(io_error(&part_path))?.len();
    if offset > spec.size {
        part.set_len(0).map_err(io_error(&part_path))?;
        offset = 0;
    }
    if offset < spec.size {
        offset = transfer(spec, options, &mut part, &part_path, offset)?;
    }
    drop(part);
    if offset < spec.size {
        return Err(FetchError::Incomplete {
            path: part_path,
            received: offset,
            expected: spec.size,
        });
    }
    verify_or_delete(&part_path, spec)?;
    fs::rename(&part_path, &final_path).map_err(io_error(&final_path))?;
    tracing::info!(path = %final_path.display(), bytes = spec.size, md5 = %spec.md5, "archive verified");
    Ok(final_path)
}

/// Streams the body into `part` from `offset`; returns the new length of the file.
fn transfer(
    spec: &ArchiveSpec,
    options: &FetchOptions,
    part: &mut File,
    part_path: &Path,
    offset: u64,
) -> Result<u64, FetchError> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(options.timeout))
        .timeout_recv_body(None)
        .timeout_per_read(Some(options.timeout))
        .timeout_recv_response(Some(options.timeout))
        .build()
        .new_agent();
    let mut request = agent.get(&spec.url);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    let transport = |source| FetchError::Transport {
        url: spec.url.clone(),
        source: Box::new(source),
    };
    let mut response = request.call().map_err(transport)?;
    let status = response.status().as_u16();
    let mut written = match status {
        206 => offset,
        200 => {
            if offset > 0 {
                tracing::info!(url = %spec.url, "server ignored the range request; restarting");
            }
            part.set_len(0).map_err(io_error(part_path))?;
            0
        }
        416 => return Ok(offset),
        _ => {
            return Err(FetchError::HttpStatus {
                url: spec.url.clone(),
                status,
            });
        }
    };
    part.seek(SeekFrom::Start(written))
        .map_err(io_error(part_path))?;
    tracing::info!(url = %spec.url, resume_from = written, total = spec.size, "downloading");
    let observer = options.observer.as_deref();
    if let Some(observer) = observer {
        observer.started(spec, written);
    }

    let mut reader = response.body_mut().as_reader();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                part.flush().map_err(io_error(part_path))?;
                if let Some(observer) = observer {
                    observer.stopped(spec, written);
                }
                tracing::warn!(url = %spec.url, written, %error, "connection broke off");
                return Ok(written);
            }
        };
        part.write_all(&buffer[..read])
            .map_err(io_error(part_path))?;
        written += read as u64;
        if let Some(observer) = observer {
            observer.advanced(spec, written);
        }
        if written > spec.size {
            break; // larger than published: verification will reject it
        }
    }
    part.sync_all().map_err(io_error(part_path))?;
    if let Some(observer) = observer {
        observer.stopped(spec, written);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_specs_carry_the_published_checksums() {
        let spec = ArchiveSpec::official(DatasetKind::Cifar100, OFFICIAL_BASE_URL);
        assert_eq!(
            spec.url,
            "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
        );
        assert_eq!(spec.size, 168_513_733);
        let mirror = ArchiveSpec::official(DatasetKind::Cifar10, "http://127.0.0.1:9");
        assert_eq!(mirror.url, "http://127.0.0.1:9/cifar-10-binary.tar.gz");
        assert_eq!(mirror.md5, "c32a1d4ab5d03f1284b67883e8d87530");
    }

    #[test]
    fn retryability_separates_transient_from_fatal() {
        let status = |status| FetchError::HttpStatus {
            url: "u".into(),
            status,
        };
        assert!(status(503).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(
            FetchError::Incomplete {
                path: "p".into(),
                received: 1,
                expected: 2
            }
            .is_retryable()
        );
        assert!(
            !FetchError::Md5Mismatch {
                path: "p".into(),
                actual: "a".into(),
                expected: "b".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn verification_checks_size_then_md5() {
        let dir = std::env::temp_dir().join(format!("ndhtl-archive-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.tar.gz");
        fs::write(&path, b"hello").unwrap();
        let spec = |size, md5: &str| ArchiveSpec {
            dataset: DatasetKind::Cifar10,
            file_name: "a.tar.gz".into(),
            url: String::new(),
            size,
            md5: md5.into(),
        };
        // md5("hello"), computed by hand with `printf hello | md5sum`.
        let hello = "5d41402abc4b2a76b9719d911017c592";
        verify_archive(&path, &spec(5, hello)).unwrap();
        verify_archive(&path, &spec(5, &hello.to_uppercase())).unwrap();
        assert!(matches!(
            verify_archive(&path, &spec(6, hello)),
            Err(FetchError::SizeMismatch {
                actual: 5,
                expected: 6,
                ..
            })
        ));
        assert!(matches!(
            verify_archive(&path, &spec(5, "00")),
            Err(FetchError::Md5Mismatch { .. })
        ));
        assert!(path.exists(), "verify_archive never deletes");
        let _ = fs::remove_dir_all(&dir);
    }
}
