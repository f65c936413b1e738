//! The download path against an HTTP server on 127.0.0.1 serving generated archives: a clean
//! download, one cut off midway (resumed with a Range request), a corrupted one, a server that
//! ignores Range, a missing file, and archives that are unsafe or truncated.

mod common;

use std::path::Path;
use std::time::Duration;

use common::http::{cifar_archive, serve};

use md5::{Digest, Md5};
use ndhtl_agent::data::DatasetKind;
use ndhtl_agent::data::download::{
    ArchiveSpec, DownloadError, FetchError, FetchOptions, extract_archive, fetch_archive,
    fetch_archive_once,
};
use ndhtl_agent::data::synth::{SynthOptions, write_synthetic};

const FILE: &str = "cifar-10-binary.tar.gz";

/// A gzip'd tar holding a generated `cifar-10-batches-bin/`.
fn cifar10_archive(work: &Path) -> Vec<u8> {
    let data = work.join("synth");
    write_synthetic(
        &data,
        &SynthOptions {
            seed: 3,
            cifar10_train_per_class: 5,
            cifar10_test_per_class: 2,
            cifar100_train_per_class: 1,
            cifar100_test_per_class: 1,
        },
    )
    .unwrap();
    cifar_archive(&data, DatasetKind::Cifar10)
}

fn spec_for(archive: &[u8], url: String) -> ArchiveSpec {
    ArchiveSpec {
        dataset: DatasetKind::Cifar10,
        file_name: "cifar-10-binary.tar.gz".into(),
        url,
        size: archive.len() as u64,
        md5: hex::encode(Md5::digest(archive)),
    }
}

fn options(cache: &Path) -> FetchOptions {
    let mut options = FetchOptions::new(cache.to_path_buf());
    options.retry_delay = Duration::from_millis(10);
    options.timeout = Duration::from_secs(5);
    options
}

#[test]
fn clean_download_verifies_extracts_and_is_cached() {
    let work = tempfile::tempdir().unwrap();
    let archive = cifar10_archive(work.path());
    let server = serve(vec![(FILE.to_string(), archive.clone())], 10);
    let spec = spec_for(
        &archive,
        format!("{}/good/cifar-10-binary.tar.gz", server.base),
    );
    let cache = work.path().join("cache");
    let path = fetch_archive(&spec, &options(&cache)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), archive);
    let extracted =
        extract_archive(&path, &work.path().join("data"), DatasetKind::Cifar10).unwrap();
    assert!(extracted.join("data_batch_5.bin").exists());
    let dataset =
        ndhtl_agent::data::read_dataset(&work.path().join("data"), DatasetKind::Cifar10).unwrap();
    assert_eq!(dataset.train.len(), 50);

    // A second fetch is served from the cache: no new request.
    let before = server.log.lock().unwrap().requests.len();
    fetch_archive(&spec, &options(&cache)).unwrap();
    assert_eq!(server.log.lock().unwrap().requests.len(), before);
}

#[test]
fn a_download_cut_off_midway_resumes_with_a_range_request() {
    let work = tempfile::tempdir().unwrap();
    let archive = cifar10_archive(work.path());
    let server = serve(vec![(FILE.to_string(), archive.clone())], 10);
    let spec = spec_for(
        &archive,
        format!("{}/cut/cifar-10-binary.tar.gz", server.base),
    );
    let cache = work.path().join("cache");

    // One attempt stops halfway and keeps the partial file.
    let error = fetch_archive_once(&spec, &options(&cache)).unwrap_err();
    assert!(matches!(error, FetchError::Incomplete { .. }), "{error}");
    assert!(error.is_retryable());
    let part = cache.join("downloads/cifar-10-binary.tar.gz.part");
    let partial = std::fs::metadata(&part).unwrap().len();
    assert!(
        partial > 0 && partial < archive.len() as u64,
        "kept {partial} bytes"
    );

    // The next attempt asks only for the rest.
    let path = fetch_archive(&spec, &options(&cache)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), archive);
    let requests = &server.log.lock().unwrap().requests;
    assert_eq!(
        requests.last().unwrap().1.as_deref(),
        Some(partial.to_string().as_str())
    );
}

#[test]
fn a_server_that_ignores_range_restarts_the_download_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let archive = cifar10_archive(work.path());
    let server = serve(vec![(FILE.to_string(), archive.clone())], 10);
    let spec = spec_for(
        &archive,
        format!("{}/norange/cifar-10-binary.tar.gz", server.base),
    );
    let cache = work.path().join("cache");
    let downloads = cache.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::write(
        downloads.join("cifar-10-binary.tar.gz.part"),
        &archive[..100],
    )
    .unwrap();
    let path = fetch_archive(&spec, &options(&cache)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), archive);
}

#[test]
fn a_corrupted_download_is_rejected_and_deleted() {
    let work = tempfile::tempdir().unwrap();
    let archive = cifar10_archive(work.path());
    let server = serve(vec![(FILE.to_string(), archive.clone())], 10);
    let spec = spec_for(
        &archive,
        format!("{}/corrupt/cifar-10-binary.tar.gz", server.base),
    );
    let cache = work.path().join("cache");
    let error = fetch_archive(&spec, &options(&cache)).unwrap_err();
    assert!(matches!(error, FetchError::Md5Mismatch { .. }), "{error}");
    assert!(!error.is_retryable());
    assert!(error.to_string().contains(&spec.md5), "{error}");
    let downloads = cache.join("downloads");
    assert_eq!(
        std::fs::read_dir(downloads).unwrap().count(),
        0,
        "the corrupt file is gone"
    );

    // The published size is checked before md5.
    let mut wrong_size = spec_for(
        &archive,
        format!("{}/good/cifar-10-binary.tar.gz", server.base),
    );
    wrong_size.size += 1;
    let error = fetch_archive_once(&wrong_size, &options(&work.path().join("cache2"))).unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::Incomplete { .. } | FetchError::SizeMismatch { .. }
        ),
        "{error}"
    );
}

#[test]
fn a_missing_file_is_a_fatal_http_error() {
    let work = tempfile::tempdir().unwrap();
    let archive = cifar10_archive(work.path());
    let server = serve(vec![(FILE.to_string(), archive.clone())], 10);
    let spec = spec_for(
        &archive,
        format!("{}/missing/cifar-10-binary.tar.gz", server.base),
    );
    let error = fetch_archive(&spec, &options(&work.path().join("cache"))).unwrap_err();
    assert!(
        matches!(error, FetchError::HttpStatus { status: 404, .. }),
        "{error}"
    );
    assert_eq!(
        server.log.lock().unwrap().requests.len(),
        1,
        "404 is not retried"
    );
}

#[test]
fn archives_with_unsafe_paths_or_links_are_refused() {
    let work = tempfile::tempdir().unwrap();
    for (name, entry_type) in [
        ("../escape.bin", tar::EntryType::Regular),
        ("cifar-10-batches-bin/link", tar::EntryType::Symlink),
    ] {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(if entry_type == tar::EntryType::Regular {
            4
        } else {
            0
        });
        header.set_entry_type(entry_type);
        if entry_type == tar::EntryType::Symlink {
            header.set_link_name("/etc/passwd").unwrap();
        }
        header.set_mode(0o644);
        header.set_cksum();
        let body: &[u8] = if entry_type == tar::EntryType::Regular {
            b"evil"
        } else {
            b""
        };
        builder.append(&header, body).unwrap();
        let bytes = builder.into_inner().unwrap().finish().unwrap();
        let archive = work.path().join("evil.tar.gz");
        std::fs::write(&archive, bytes).unwrap();
        let out = work.path().join("out");
        let error = extract_archive(&archive, &out, DatasetKind::Cifar10).unwrap_err();
        assert!(
            matches!(error, DownloadError::UnsafeEntry { .. }),
            "{name}: {error}"
        );
        assert!(!work.path().join("escape.bin").exists());
        assert!(
            !out.join("cifar-10-batches-bin").exists(),
            "nothing half-extracted is left"
        );
    }
}

#[test]
fn a_truncated_archive_is_reported_as_damaged() {
    let work = tempfile::tempdir().unwrap();
    let archive = cifar10_archive(work.path());
    let path = work.path().join("cut.tar.gz");
    std::fs::write(&path, &archive[..archive.len() / 3]).unwrap();
    let error = extract_archive(&path, &work.path().join("out"), DatasetKind::Cifar10).unwrap_err();
    assert!(
        matches!(error, DownloadError::DamagedArchive { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("cut.tar.gz"), "{error}");
}

#[test]
fn an_archive_whose_data_is_invalid_fails_validation() {
    let work = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for name in ["data_batch_1.bin", "test_batch.bin"] {
        let mut header = tar::Header::new_gnu();
        header.set_size(3000); // not a whole 3073-byte record
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(
                &mut header,
                format!("cifar-10-batches-bin/{name}"),
                &vec![0u8; 3000][..],
            )
            .unwrap();
    }
    let path = work.path().join("bad.tar.gz");
    std::fs::write(&path, builder.into_inner().unwrap().finish().unwrap()).unwrap();
    let error = extract_archive(&path, &work.path().join("out"), DatasetKind::Cifar10).unwrap_err();
    assert!(matches!(error, DownloadError::InvalidData(_)), "{error}");
}
