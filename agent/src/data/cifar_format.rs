//! Readers for the official CIFAR binary formats.
//!
//! - CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_{1..5}.bin`, `test_batch.bin`; records of
//!   1 label byte then 3072 pixel bytes (R, G, B planes of 32×32, row-major).
//! - CIFAR-100 (`cifar-100-binary/`): `train.bin`, `test.bin`; records of 1 coarse byte, 1 fine
//!   byte, then 3072 pixel bytes.
//!
//! Every record is validated: the file must hold a whole number of records, every label must be
//! in range, and every CIFAR-100 coarse byte must agree with the official fine-to-coarse table.
//! Each error names the file and, where it applies, the record.

use std::fs;
use std::path::{Path, PathBuf};

use ndhtl_core::labels::CIFAR100_FINE_TO_COARSE;

pub use ndhtl_core::dataset::{
    CIFAR10_DIR_NAME, CIFAR10_TRAIN_BATCHES, CIFAR100_DIR_NAME, DatasetKind, IMAGE_BYTES,
};

/// Everything that can be wrong with a dataset on disk.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: file not found ({what})")]
    MissingFile { path: PathBuf, what: String },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: size {len} bytes is not a whole number of {record_bytes}-byte {dataset} records \
         (the last record is cut off after {remainder} bytes)"
    )]
    NotWholeRecords {
        path: PathBuf,
        dataset: DatasetKind,
        len: u64,
        record_bytes: usize,
        remainder: u64,
    },
    #[error("{path}: holds no records")]
    Empty { path: PathBuf },
    #[error("{path}: record {record}: {field} label {label} is out of range 0..{limit}")]
    LabelOutOfRange {
        path: PathBuf,
        record: usize,
        field: &'static str,
        label: u8,
        limit: usize,
    },
    #[error(
        "{path}: record {record}: coarse label {coarse} does not match fine label {fine}, whose \
         superclass is {expected} in the official fine-to-coarse table"
    )]
    CoarseMismatch {
        path: PathBuf,
        record: usize,
        fine: u8,
        coarse: u8,
        expected: u8,
    },
    #[error(
        "{dir}: neither {dir_name}/ nor its files were found; run `ndhtl data download` or `ndhtl data synth`"
    )]
    DatasetNotFound {
        dir: PathBuf,
        dir_name: &'static str,
    },
}

/// Images of one split, as stored on disk: `pixels` is `len × 3072` bytes in CHW order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawSplit {
    pub pixels: Vec<u8>,
    /// The (fine, for CIFAR-100) label of each record.
    pub labels: Vec<u8>,
    /// CIFAR-100 only: the coarse label of each record.
    pub coarse_labels: Option<Vec<u8>>,
}

impl RawSplit {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, index: usize) -> &[u8] {
        &self.pixels[index * IMAGE_BYTES..(index + 1) * IMAGE_BYTES]
    }

    fn append(&mut self, other: RawSplit) {
        self.pixels.extend_from_slice(&other.pixels);
        self.labels.extend_from_slice(&other.labels);
        match (&mut self.coarse_labels, other.coarse_labels) {
            (Some(mine), Some(theirs)) => mine.extend_from_slice(&theirs),
            (None, theirs) if self.labels.len() == other.labels.len() => {
                self.coarse_labels = theirs
            }
            _ => {}
        }
    }
}

/// A dataset's train and test splits.
#[derive(Debug, Clone)]
pub struct RawDataset {
    pub kind: DatasetKind,
    pub root: PathBuf,
    pub train: RawSplit,
    pub test: RawSplit,
}

/// Parses one binary file of `kind` records, validating every record.
pub fn read_record_file(path: &Path, kind: DatasetKind) -> Result<RawSplit, DataError> {
    let bytes = fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::MissingFile {
            path: path.to_path_buf(),
            what: format!("{kind} binary batch"),
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    parse_records(path, &bytes, kind)
}

/// Parses an in-memory buffer of `kind` records; `path` is only used in error messages.
pub fn parse_records(path: &Path, bytes: &[u8], kind: DatasetKind) -> Result<RawSplit, DataError> {
    let record_bytes = kind.record_bytes();
    let remainder = bytes.len() % record_bytes;
    if remainder != 0 {
        return Err(DataError::NotWholeRecords {
            path: path.to_path_buf(),
            dataset: kind,
            len: bytes.len() as u64,
            record_bytes,
            remainder: remainder as u64,
        });
    }
    let count = bytes.len() / record_bytes;
    if count == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut split = RawSplit {
        pixels: Vec::with_capacity(count * IMAGE_BYTES),
        labels: Vec::with_capacity(count),
        coarse_labels: (kind == DatasetKind::Cifar100).then(|| Vec::with_capacity(count)),
    };
    for (record, chunk) in bytes.chunks_exact(record_bytes).enumerate() {
        let (label, pixels) = match kind {
            DatasetKind::Cifar10 => (chunk[0], &chunk[1..]),
            DatasetKind::Cifar100 => {
                let (coarse, fine) = (chunk[0], chunk[1]);
                if coarse as usize >= 20 {
                    return Err(DataError::LabelOutOfRange {
                        path: path.to_path_buf(),
                        record,
                        field: "coarse",
                        label: coarse,
                        limit: 20,
                    });
                }
                if let Some(&expected) = CIFAR100_FINE_TO_COARSE.get(fine as usize)
                    && expected != coarse
                {
                    return Err(DataError::CoarseMismatch {
                        path: path.to_path_buf(),
                        record,
                        fine,
                        coarse,
                        expected,
                    });
                }
                if let Some(coarse_labels) = split.coarse_labels.as_mut() {
                    coarse_labels.push(coarse);
                }
                (fine, &chunk[2..])
            }
        };
        if label as usize >= kind.num_classes() {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                record,
                field: if kind == DatasetKind::Cifar10 {
                    "class"
                } else {
                    "fine"
                },
                label,
                limit: kind.num_classes(),
            });
        }
        split.labels.push(label);
        split.pixels.extend_from_slice(pixels);
    }
    debug_assert_eq!(split.pixels.len(), split.labels.len() * IMAGE_BYTES);
    Ok(split)
}

/// Finds the folder holding `kind`'s binary files under `data_root`: either
/// `data_root/<official dir name>/` or `data_root` itself.
pub fn locate_dataset_dir(data_root: &Path, kind: DatasetKind) -> Result<PathBuf, DataError> {
    let probe_file = match kind {
        DatasetKind::Cifar10 => "test_batch.bin",
        DatasetKind::Cifar100 => "test.bin",
    };
    let nested = data_root.join(kind.dir_name());
    for candidate in [nested.clone(), data_root.to_path_buf()] {
        if candidate.join(probe_file).exists() {
            return Ok(candidate);
        }
    }
    if !data_root.exists() {
        return Err(DataError::MissingFile {
            path: data_root.to_path_buf(),
            what: "data folder".into(),
        });
    }
    if nested.exists() {
        return Err(DataError::MissingFile {
            path: nested.join(probe_file),
            what: format!("{kind} test split"),
        });
    }
    Err(DataError::DatasetNotFound {
        dir: data_root.to_path_buf(),
        dir_name: kind.dir_name(),
    })
}

/// Reads CIFAR-10 from `data_root`. The training batches must be a prefix `data_batch_1..n` of
/// the official five (a development subset may hold fewer); `test_batch.bin` must be present.
pub fn read_cifar10(data_root: &Path) -> Result<RawDataset, DataError> {
    let dir = locate_dataset_dir(data_root, DatasetKind::Cifar10)?;
    let mut train = RawSplit::default();
    let mut batches_read = 0;
    for batch in 1..=CIFAR10_TRAIN_BATCHES {
        let path = dir.join(format!("data_batch_{batch}.bin"));
        if !path.exists() {
            // A later batch without this one means a damaged download, not a subset.
            if let Some(later) = (batch + 1..=CIFAR10_TRAIN_BATCHES)
                .map(|b| dir.join(format!("data_batch_{b}.bin")))
                .find(|p| p.exists())
            {
                return Err(DataError::MissingFile {
                    path,
                    what: format!("training batch (found {} after it)", later.display()),
                });
            }
            break;
        }
        train.append(read_record_file(&path, DatasetKind::Cifar10)?);
        batches_read += 1;
    }
    if batches_read == 0 {
        return Err(DataError::MissingFile {
            path: dir.join("data_batch_1.bin"),
            what: "first CIFAR-10 training batch".into(),
        });
    }
    if batches_read < CIFAR10_TRAIN_BATCHES {
        tracing::warn!(
            dir = %dir.display(),
            batches_read,
            train_images = train.len(),
            "CIFAR-10 holds only a subset of the five training batches"
        );
    }
    let test = read_record_file(&dir.join("test_batch.bin"), DatasetKind::Cifar10)?;
    Ok(RawDataset {
        kind: DatasetKind::Cifar10,
        root: dir,
        train,
        test,
    })
}

/// Reads CIFAR-100 (`train.bin`, `test.bin`) from `data_root`.
pub fn read_cifar100(data_root: &Path) -> Result<RawDataset, DataError> {
    let dir = locate_dataset_dir(data_root, DatasetKind::Cifar100)?;
    let train = read_record_file(&dir.join("train.bin"), DatasetKind::Cifar100)?;
    let test = read_record_file(&dir.join("test.bin"), DatasetKind::Cifar100)?;
    Ok(RawDataset {
        kind: DatasetKind::Cifar100,
        root: dir,
        train,
        test,
    })
}

/// Whether `data_root` holds `kind` in the official layout (its first training file and its
/// test file; [`read_dataset`] validates the records).
pub fn dataset_present(data_root: &Path, kind: DatasetKind) -> bool {
    let dir = data_root.join(kind.dir_name());
    let files: [&str; 2] = match kind {
        DatasetKind::Cifar10 => ["data_batch_1.bin", "test_batch.bin"],
        DatasetKind::Cifar100 => ["train.bin", "test.bin"],
    };
    files.iter().all(|file| dir.join(file).is_file())
}

/// Reads whichever dataset `kind` names.
pub fn read_dataset(data_root: &Path, kind: DatasetKind) -> Result<RawDataset, DataError> {
    match kind {
        DatasetKind::Cifar10 => read_cifar10(data_root),
        DatasetKind::Cifar100 => read_cifar100(data_root),
    }
}

/// Serialises records in the official layout (used by `data synth` and by tests).
pub fn encode_records(kind: DatasetKind, split: &RawSplit) -> Vec<u8> {
    let mut out = Vec::with_capacity(split.len() * kind.record_bytes());
    for index in 0..split.len() {
        if kind == DatasetKind::Cifar100 {
            let coarse = split
                .coarse_labels
                .as_ref()
                .map(|c| c[index])
                .unwrap_or(CIFAR100_FINE_TO_COARSE[split.labels[index] as usize]);
            out.push(coarse);
        }
        out.push(split.labels[index]);
        out.extend_from_slice(split.image(index));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_of(labels: &[u8]) -> RawSplit {
        RawSplit {
            pixels: labels
                .iter()
                .flat_map(|&l| std::iter::repeat_n(l.wrapping_mul(7), IMAGE_BYTES))
                .collect(),
            labels: labels.to_vec(),
            coarse_labels: None,
        }
    }

    #[test]
    fn cifar100_round_trip_keeps_labels_pixels_and_coarse() {
        let split = split_of(&[0, 1, 99]);
        let bytes = encode_records(DatasetKind::Cifar100, &split);
        assert_eq!(bytes.len(), 3 * 3074);
        let parsed = parse_records(Path::new("t.bin"), &bytes, DatasetKind::Cifar100).unwrap();
        assert_eq!(parsed.labels, vec![0, 1, 99]);
        assert_eq!(parsed.coarse_labels, Some(vec![4, 1, 13]));
        assert_eq!(parsed.image(2), split.image(2));
    }

    #[test]
    fn partial_record_is_reported_with_sizes() {
        let mut bytes = encode_records(DatasetKind::Cifar10, &split_of(&[1, 2]));
        bytes.truncate(bytes.len() - 5);
        let err = parse_records(Path::new("d.bin"), &bytes, DatasetKind::Cifar10).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                DataError::NotWholeRecords {
                    remainder: 3068,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("d.bin") && msg.contains("3073-byte"), "{msg}");
    }

    #[test]
    fn label_out_of_range_names_the_record() {
        let mut bytes = encode_records(DatasetKind::Cifar10, &split_of(&[1, 2, 3]));
        bytes[2 * 3073] = 10;
        let err = parse_records(Path::new("d.bin"), &bytes, DatasetKind::Cifar10).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    record: 2,
                    label: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("record 2"));
    }

    #[test]
    fn fine_label_out_of_range_and_coarse_mismatch_are_caught() {
        let mut bytes = encode_records(DatasetKind::Cifar100, &split_of(&[5, 6]));
        bytes[3074 + 1] = 100;
        let err = parse_records(Path::new("x"), &bytes, DatasetKind::Cifar100).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    record: 1,
                    field: "fine",
                    ..
                }
            ),
            "{err}"
        );

        let mut bytes = encode_records(DatasetKind::Cifar100, &split_of(&[5, 6]));
        bytes[0] = 0; // fine 5 (bed) belongs to coarse 6 (household_furniture)
        let err = parse_records(Path::new("x"), &bytes, DatasetKind::Cifar100).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::CoarseMismatch {
                    record: 0,
                    fine: 5,
                    coarse: 0,
                    expected: 6,
                    ..
                }
            ),
            "{err}"
        );

        let mut bytes = encode_records(DatasetKind::Cifar100, &split_of(&[5]));
        bytes[0] = 20;
        let err = parse_records(Path::new("x"), &bytes, DatasetKind::Cifar100).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    field: "coarse",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        let err = parse_records(Path::new("e.bin"), &[], DatasetKind::Cifar10).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }));
    }

    #[test]
    fn directory_errors_name_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_cifar10(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::DatasetNotFound { .. }), "{err}");

        let batches = dir.path().join(CIFAR10_DIR_NAME);
        fs::create_dir_all(&batches).unwrap();
        let bytes = encode_records(DatasetKind::Cifar10, &split_of(&[1, 2]));
        fs::write(batches.join("test_batch.bin"), &bytes).unwrap();
        let err = read_cifar10(dir.path()).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingFile { path, .. } if path.ends_with("data_batch_1.bin")),
            "{err}"
        );

        // A gap in the batch sequence is damage, not a subset.
        fs::write(batches.join("data_batch_2.bin"), &bytes).unwrap();
        let err = read_cifar10(dir.path()).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingFile { path, .. } if path.ends_with("data_batch_1.bin")),
            "{err}"
        );

        fs::write(batches.join("data_batch_1.bin"), &bytes).unwrap();
        let data = read_cifar10(dir.path()).unwrap();
        assert_eq!(data.train.len(), 4);
        assert_eq!(data.test.len(), 2);

        let err = read_cifar100(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::DatasetNotFound { .. }), "{err}");
    }
}
