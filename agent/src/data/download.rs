//! `ndhtl data download`: fetches the official CIFAR binary archives and extracts them.
//!
//! - The download itself ([`fetch_archive`]: cache folder, file lock, resume, published size
//!   and md5) is `ndhtl_core::archive`, shared with the coordinator, which serves the archives
//!   to its agents.
//! - Extraction is safe: only regular files and folders, no absolute paths, no `..`, nothing
//!   outside the target folder; it goes to a staging folder renamed into place, and the
//!   extracted dataset is validated before it is used.

use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub use ndhtl_core::archive::{
    ArchiveSpec, FetchError, FetchObserver, FetchOptions, OFFICIAL_BASE_URL, fetch_archive,
    fetch_archive_once, file_md5, verify_archive,
};

use super::cifar_format::{DataError, DatasetKind, read_dataset};

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
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
            DownloadError::Fetch(error) => error.is_retryable(),
            DownloadError::Io { .. } => true,
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

/// A progress bar on stderr for each transfer.
#[derive(Default)]
pub struct ProgressBars {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl FetchObserver for ProgressBars {
    fn started(&self, spec: &ArchiveSpec, offset: u64) {
        let bar = indicatif::ProgressBar::new(spec.size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(spec.file_name.clone());
        bar.set_position(offset);
        *self.bar.lock().expect("progress lock") = Some(bar);
    }
    fn advanced(&self, _spec: &ArchiveSpec, received: u64) {
        if let Some(bar) = self.bar.lock().expect("progress lock").as_ref() {
            bar.set_position(received);
        }
    }
    fn stopped(&self, spec: &ArchiveSpec, received: u64) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            if received >= spec.size {
                bar.finish_and_clear();
            } else {
                bar.abandon();
            }
        }
    }
}

/// Download options for a terminal: [`FetchOptions::new`] with progress bars.
pub fn options_with_progress(cache_dir: PathBuf) -> FetchOptions {
    FetchOptions {
        observer: Some(Arc::new(ProgressBars::default())),
        ..FetchOptions::new(cache_dir)
    }
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
    options: &FetchOptions,
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
}
