//! Generated CIFAR-like data in the official binary layouts (`ndhtl data synth`).
//!
//! Each class has its own colour, stripe period and stripe orientation; every image adds a
//! random phase, brightness jitter and pixel noise. The patterns are learnable by the CIFAR
//! AlexNet in a few hundred steps and share structure across datasets (colour and stripes), so
//! CIFAR-10 → CIFAR-100 transfer on them is meaningful. CIFAR-100 coarse labels follow the
//! official fine-to-coarse table.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cifar_format::{
    CIFAR10_DIR_NAME, CIFAR10_TRAIN_BATCHES, CIFAR100_DIR_NAME, DatasetKind, IMAGE_BYTES, RawSplit,
    encode_records,
};
use ndhtl_core::labels::{
    CIFAR10_CLASS_NAMES, CIFAR100_COARSE_NAMES, CIFAR100_FINE_NAMES, CIFAR100_FINE_TO_COARSE,
};

/// How much synthetic data to write (the same settings a sweep's `data: {synthetic: …}` names).
pub use ndhtl_core::dataset::SyntheticData as SynthOptions;

#[derive(Debug, thiserror::Error)]
#[error("cannot write synthetic data to {path}: {source}")]
pub struct SynthError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthSummary {
    pub cifar10_dir: PathBuf,
    pub cifar100_dir: PathBuf,
    pub cifar10_train: usize,
    pub cifar10_test: usize,
    pub cifar100_train: usize,
    pub cifar100_test: usize,
}

/// The class-dependent pattern parameters. Shared by both datasets: CIFAR-10 class c and
/// CIFAR-100 class c use the same family of patterns, indexed differently.
fn class_pattern(dataset: DatasetKind, class: u8) -> ([f32; 3], f32, f32) {
    let salt = match dataset {
        DatasetKind::Cifar10 => 0.0,
        DatasetKind::Cifar100 => 0.37,
    };
    // Golden-ratio hues are well spread for any number of classes.
    let hue = (class as f32 * 0.618_034 + salt).fract();
    let rgb = hsv_to_rgb(hue, 0.75, 0.85);
    let period = [4.0, 6.0, 9.0, 14.0][class as usize % 4];
    let angle = [0.0f32, 45.0, 90.0, 135.0][(class as usize / 4) % 4].to_radians();
    (rgb, period, angle)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    match i as i32 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// One 32×32 image of `class`, CHW bytes.
pub fn synth_image(rng: &mut impl Rng, dataset: DatasetKind, class: u8, out: &mut [u8]) {
    debug_assert_eq!(out.len(), IMAGE_BYTES);
    let (rgb, period, angle) = class_pattern(dataset, class);
    let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let brightness: f32 = rng.random_range(0.85..1.15);
    let (cos, sin) = (angle.cos(), angle.sin());
    for y in 0..32 {
        for x in 0..32 {
            let along = y as f32 * cos + x as f32 * sin;
            let stripe = 0.5 + 0.5 * (std::f32::consts::TAU * along / period + phase).sin();
            for (channel, &base) in rgb.iter().enumerate() {
                let noise: f32 = rng.random_range(-24.0..24.0);
                let value = 255.0 * base * brightness * (0.55 + 0.45 * stripe) + noise;
                out[channel * 1024 + y * 32 + x] = value.clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// A split with `per_class` images of every class of `dataset`, in shuffled record order.
pub fn synth_split(rng: &mut ChaCha8Rng, dataset: DatasetKind, per_class: usize) -> RawSplit {
    let mut labels: Vec<u8> = (0..dataset.num_classes() as u8)
        .flat_map(|c| std::iter::repeat_n(c, per_class))
        .collect();
    labels.shuffle(rng);
    let mut pixels = vec![0u8; labels.len() * IMAGE_BYTES];
    for (label, image) in labels.iter().zip(pixels.chunks_exact_mut(IMAGE_BYTES)) {
        synth_image(rng, dataset, *label, image);
    }
    let coarse_labels = (dataset == DatasetKind::Cifar100).then(|| {
        labels
            .iter()
            .map(|&f| CIFAR100_FINE_TO_COARSE[f as usize])
            .collect()
    });
    RawSplit {
        pixels,
        labels,
        coarse_labels,
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    let wrap = |source| SynthError {
        path: path.to_path_buf(),
        source,
    };
    // Write to a temporary name and rename, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(wrap)?;
    file.write_all(bytes).map_err(wrap)?;
    file.sync_all().map_err(wrap)?;
    fs::rename(&tmp, path).map_err(wrap)
}

fn lines(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n}\n")).collect()
}

/// Writes `cifar-10-batches-bin/` and `cifar-100-binary/` under `out`.
/// Makes the generated data for `options` under `root` once, and returns its folder. Safe
/// against concurrent callers (slots of one agent, agents sharing a folder): the data is
/// written into a staging folder and renamed into place, and a finished folder is reused.
pub fn ensure_synthetic(root: &Path, options: &SynthOptions) -> Result<PathBuf, SynthError> {
    let name = ndhtl_core::dataset::Dataset::Synthetic(*options).label();
    let dir = root.join(&name);
    if dir.join(SYNTH_DONE_MARKER).exists() {
        return Ok(dir);
    }
    let staging = root.join(format!(
        ".{name}.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SynthError { path, source }
    };
    let _ = fs::remove_dir_all(&staging);
    write_synthetic(&staging, options)?;
    fs::write(staging.join(SYNTH_DONE_MARKER), b"").map_err(io(&staging))?;
    match fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        // Another writer finished first: its bytes are the same; keep them.
        Err(_) if dir.join(SYNTH_DONE_MARKER).exists() => {
            let _ = fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(source) => Err(SynthError { path: dir, source }),
    }
}

const SYNTH_DONE_MARKER: &str = ".complete";

pub fn write_synthetic(out: &Path, options: &SynthOptions) -> Result<SynthSummary, SynthError> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let cifar10_dir = out.join(CIFAR10_DIR_NAME);
    let cifar100_dir = out.join(CIFAR100_DIR_NAME);
    for dir in [&cifar10_dir, &cifar100_dir] {
        fs::create_dir_all(dir).map_err(|source| SynthError {
            path: dir.clone(),
            source,
        })?;
    }

    let train10 = synth_split(
        &mut rng,
        DatasetKind::Cifar10,
        options.cifar10_train_per_class,
    );
    let test10 = synth_split(
        &mut rng,
        DatasetKind::Cifar10,
        options.cifar10_test_per_class,
    );
    // Spread the training records over the five official batch files.
    let per_batch = train10.len().div_ceil(CIFAR10_TRAIN_BATCHES).max(1);
    for batch in 0..CIFAR10_TRAIN_BATCHES {
        let start = (batch * per_batch).min(train10.len());
        let end = ((batch + 1) * per_batch).min(train10.len());
        if start == end {
            break;
        }
        let part = RawSplit {
            pixels: train10.pixels[start * IMAGE_BYTES..end * IMAGE_BYTES].to_vec(),
            labels: train10.labels[start..end].to_vec(),
            coarse_labels: None,
        };
        write_file(
            &cifar10_dir.join(format!("data_batch_{}.bin", batch + 1)),
            &encode_records(DatasetKind::Cifar10, &part),
        )?;
    }
    write_file(
        &cifar10_dir.join("test_batch.bin"),
        &encode_records(DatasetKind::Cifar10, &test10),
    )?;
    write_file(
        &cifar10_dir.join("batches.meta.txt"),
        lines(&CIFAR10_CLASS_NAMES).as_bytes(),
    )?;

    let train100 = synth_split(
        &mut rng,
        DatasetKind::Cifar100,
        options.cifar100_train_per_class,
    );
    let test100 = synth_split(
        &mut rng,
        DatasetKind::Cifar100,
        options.cifar100_test_per_class,
    );
    write_file(
        &cifar100_dir.join("train.bin"),
        &encode_records(DatasetKind::Cifar100, &train100),
    )?;
    write_file(
        &cifar100_dir.join("test.bin"),
        &encode_records(DatasetKind::Cifar100, &test100),
    )?;
    write_file(
        &cifar100_dir.join("fine_label_names.txt"),
        lines(&CIFAR100_FINE_NAMES).as_bytes(),
    )?;
    write_file(
        &cifar100_dir.join("coarse_label_names.txt"),
        lines(&CIFAR100_COARSE_NAMES).as_bytes(),
    )?;
    Ok(SynthSummary {
        cifar10_dir,
        cifar100_dir,
        cifar10_train: train10.len(),
        cifar10_test: test10.len(),
        cifar100_train: train100.len(),
        cifar100_test: test100.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cifar_format::{read_cifar10, read_cifar100};

    #[test]
    fn written_files_read_back_with_consistent_labels() {
        let dir = tempfile::tempdir().unwrap();
        let options = SynthOptions {
            seed: 7,
            cifar10_train_per_class: 3,
            cifar10_test_per_class: 2,
            cifar100_train_per_class: 2,
            cifar100_test_per_class: 1,
        };
        let summary = write_synthetic(dir.path(), &options).unwrap();
        assert_eq!(summary.cifar10_train, 30);
        let c10 = read_cifar10(dir.path()).unwrap();
        assert_eq!(c10.train.len(), 30);
        assert_eq!(c10.test.len(), 20);
        let c100 = read_cifar100(dir.path()).unwrap();
        assert_eq!(c100.train.len(), 200);
        for (fine, coarse) in c100
            .train
            .labels
            .iter()
            .zip(c100.train.coarse_labels.unwrap())
        {
            assert_eq!(CIFAR100_FINE_TO_COARSE[*fine as usize], coarse);
        }
        // Same seed, same bytes.
        let again = tempfile::tempdir().unwrap();
        write_synthetic(again.path(), &options).unwrap();
        let a = fs::read(dir.path().join("cifar-100-binary/train.bin")).unwrap();
        let b = fs::read(again.path().join("cifar-100-binary/train.bin")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn classes_differ_more_than_images_within_a_class() {
        // Mean colour separates classes: a nearest-class-mean classifier on channel means must
        // beat chance by far, or the data would not be learnable.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let split = synth_split(&mut rng, DatasetKind::Cifar10, 20);
        let channel_means = |img: &[u8]| -> [f32; 3] {
            std::array::from_fn(|c| {
                img[c * 1024..(c + 1) * 1024]
                    .iter()
                    .map(|&v| v as f32)
                    .sum::<f32>()
                    / 1024.0
            })
        };
        let mut centroids = [[0f32; 3]; 10];
        for i in 0..split.len() {
            let m = channel_means(split.image(i));
            for c in 0..3 {
                centroids[split.labels[i] as usize][c] += m[c] / 20.0;
            }
        }
        let correct = (0..split.len())
            .filter(|&i| {
                let m = channel_means(split.image(i));
                let nearest = (0..10)
                    .min_by(|&a, &b| {
                        let da: f32 = (0..3).map(|c| (m[c] - centroids[a][c]).powi(2)).sum();
                        let db: f32 = (0..3).map(|c| (m[c] - centroids[b][c]).powi(2)).sum();
                        da.total_cmp(&db)
                    })
                    .unwrap();
                nearest == split.labels[i] as usize
            })
            .count();
        assert!(
            correct * 10 > split.len() * 6,
            "{correct}/{} by colour alone",
            split.len()
        );
    }
}
