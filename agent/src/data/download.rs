//! `ndhtl data download`: fetches the official CIFAR binary archives.
//!
//! - Downloads into a cache folder shared by every run (`$NDHTL_CACHE_DIR`, else
//!   `$XDG_CACHE_HOME/ndhtl`, else `~/.cache/ndhtl`), under an exclusive file lock so that
//!   concurrent agents on one machine download once.
//! - Resumes a partial download with an HTTP `Range` request.
//! - Checks the published size and md5 before anything is used; a corrupt file is deleted.
//! - Extracts safely: only regular files and folders, no absolute paths, no `..`, nothing
//!   outside the target folder; extraction goes to a staging folder renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use super::cifar_format::{DataError, DatasetKind, read_dataset};

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
pub enum DownloadError {
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
    #[error("{archive}: refusing to extract entry `{entry}`: {reason}")]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("{archive}: the archive is truncated or damaged: {source}")]
    DamagedArchive {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: does not contain the folder {expected_dir}/")]
    MissingDatasetDir {
        archive: PathBuf,
        expected_dir: String,
    },
    #[error("the extracted data failed validation: {0}")]
    InvalidData(#[from] DataError),
}

impl DownloadError {
    /// Whether trying again (and resuming) can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DownloadError::HttpStatus { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            DownloadError::Transport { .. } | DownloadError::Incomplete { .. } => true,
            _ => false,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache folder shared by every run.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NDHTL_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("ndhtl");
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("ndhtl"))
        .unwrap_or_else(|| std::env::temp_dir().join("ndhtl-cache"))
}

/// md5 of a file, hex.
pub fn file_md5(path: &Path) -> Result<String, DownloadError> {
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

/// Checks size then md5; deletes the file on mismatch.
fn verify_or_delete(path: &Path, spec: &ArchiveSpec) -> Result<(), DownloadError> {
    let actual = fs::metadata(path).map_err(io_error(path))?.len();
    if actual != spec.size {
        let _ = fs::remove_file(path);
        return Err(DownloadError::SizeMismatch {
            path: path.to_path_buf(),
            actual,
            expected: spec.size,
        });
    }
    let md5 = file_md5(path)?;
    if !md5.eq_ignore_ascii_case(&spec.md5) {
        let _ = fs::remove_file(path);
        return Err(DownloadError::Md5Mismatch {
            path: path.to_path_buf(),
            actual: md5,
            expected: spec.md5.clone(),
        });
    }
    Ok(())
}

/// Options of one download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub cache_dir: PathBuf,
    pub show_progress: bool,
    pub attempts: u32,
    pub retry_delay: Duration,
    pub timeout: Duration,
}

impl DownloadOptions {
    pub fn new(cache_dir: PathBuf) -> Self {
        DownloadOptions {
            cache_dir,
            show_progress: true,
            attempts: 5,
            retry_delay: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Downloads `spec` into the cache (resuming, verifying) and returns the verified archive path.
/// Retryable failures are retried `options.attempts` times, each resuming where the last stopped.
pub fn fetch_archive(
    spec: &ArchiveSpec,
    options: &DownloadOptions,
) -> Result<PathBuf, DownloadError> {
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
    options: &DownloadOptions,
) -> Result<PathBuf, DownloadError> {
    let downloads = options.cache_dir.join("downloads");
    fs::create_dir_all(&downloads).map_err(io_error(&downloads))?;
    let final_path = downloads.join(&spec.file_name);
    let part_path = downloads.join(format!("{}.part", spec.file_name));

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
        return Err(DownloadError::Incomplete {
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
    options: &DownloadOptions,
    part: &mut File,
    part_path: &Path,
    offset: u64,
) -> Result<u64, DownloadError> {
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
    let transport = |source| DownloadError::Transport {
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
            return Err(DownloadError::HttpStatus {
                url: spec.url.clone(),
                status,
            });
        }
    };
    part.seek(SeekFrom::Start(written))
        .map_err(io_error(part_path))?;
    tracing::info!(url = %spec.url, resume_from = written, total = spec.size, "downloading");

    let progress = if options.show_progress {
        indicatif::ProgressBar::new(spec.size)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    progress.set_message(spec.file_name.clone());
    progress.set_position(written);

    let mut reader = response.body_mut().as_reader();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                part.flush().map_err(io_error(part_path))?;
                progress.abandon();
                tracing::warn!(url = %spec.url, written, %error, "connection broke off");
                return Ok(written);
            }
        };
        part.write_all(&buffer[..read])
            .map_err(io_error(part_path))?;
        written += read as u64;
        progress.set_position(written);
        if written > spec.size {
            break; // larger than published: verification will reject it
        }
    }
    part.sync_all().map_err(io_error(part_path))?;
    progress.finish_and_clear();
    Ok(written)
}

/// Checks an archive entry's path: relative, no `..`, no root or prefix.
fn safe_relative_path(path: &Path) -> Result<PathBuf, &'static str> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("it climbs out of the target folder (`..`)"),
            Component::RootDir | Component::Prefix(_) => return Err("it is an absolute path"),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err("it has an empty path");
    }
    Ok(clean)
}

/// Extracts the archive's `expected_dir/` into `out_dir/expected_dir/`, safely and atomically,
/// then validates the extracted dataset.
pub fn extract_archive(
    archive: &Path,
    out_dir: &Path,
    dataset: DatasetKind,
) -> Result<PathBuf, DownloadError> {
    let expected_dir = dataset.dir_name();
    fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;
    let staging = out_dir.join(format!(".{expected_dir}.extracting"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io_error(&staging))?;
    let result = unpack_into(archive, &staging);
    if let Err(error) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    let extracted = staging.join(expected_dir);
    if !extracted.is_dir() {
        let _ = fs::remove_dir_all(&staging);
        return Err(DownloadError::MissingDatasetDir {
            archive: archive.to_path_buf(),
            expected_dir: expected_dir.into(),
        });
    }
    if let Err(error) = read_dataset(&staging, dataset) {
        let _ = fs::remove_dir_all(&staging);
        return Err(error.into());
    }
    let target = out_dir.join(expected_dir);
    if target.exists() {
        fs::remove_dir_all(&target).map_err(io_error(&target))?;
    }
    fs::rename(&extracted, &target).map_err(io_error(&target))?;
    let _ = fs::remove_dir_all(&staging);
    Ok(target)
}

fn unpack_into(archive_path: &Path, staging: &Path) -> Result<(), DownloadError> {
    let damaged = |source| DownloadError::DamagedArchive {
        archive: archive_path.to_path_buf(),
        source,
    };
    let file = File::open(archive_path).map_err(io_error(archive_path))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let raw_path = entry.path().map_err(damaged)?.into_owned();
        let unsafe_entry = |reason| DownloadError::UnsafeEntry {
            archive: archive_path.to_path_buf(),
            entry: raw_path.display().to_string(),
            reason,
        };
        let relative = safe_relative_path(&raw_path).map_err(unsafe_entry)?;
        let destination = staging.join(&relative);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&destination).map_err(io_error(&destination))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = destination.parent() {
                    fs::create_dir_all(parent).map_err(io_error(parent))?;
                }
                let mut output = File::create(&destination).map_err(io_error(&destination))?;
                io::copy(&mut entry, &mut output).map_err(damaged)?;
            }
            // pax/GNU metadata records carry no file.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName => {}
            _ => {
                return Err(unsafe_entry(
                    "only regular files and folders are extracted (links are refused)",
                ));
            }
        }
    }
    Ok(())
}

/// Download (or reuse from the cache), verify and extract `dataset` into `out_dir`.
pub fn download_dataset(
    dataset: DatasetKind,
    base_url: &str,
    out_dir: &Path,
    options: &DownloadOptions,
) -> Result<PathBuf, DownloadError> {
    let spec = ArchiveSpec::official(dataset, base_url);
    let archive = fetch_archive(&spec, options)?;
    extract_archive(&archive, out_dir, dataset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(safe_relative_path(Path::new("../etc/passwd")).is_err());
        assert!(safe_relative_path(Path::new("/etc/passwd")).is_err());
        assert!(safe_relative_path(Path::new("a/../../b")).is_err());
        assert_eq!(
            safe_relative_path(Path::new("./cifar-10-batches-bin/x.bin")).unwrap(),
            PathBuf::from("cifar-10-batches-bin/x.bin")
        );
    }

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
        let status = |status| DownloadError::HttpStatus {
            url: "u".into(),
            status,
        };
        assert!(status(503).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(
            DownloadError::Incomplete {
                path: "p".into(),
                received: 1,
                expected: 2
            }
            .is_retryable()
        );
        assert!(
            !DownloadError::Md5Mismatch {
                path: "p".into(),
                actual: "a".into(),
                expected: "b".into()
            }
            .is_retryable()
        );
    }
}
