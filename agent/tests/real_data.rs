//! A short run on real CIFAR-10 images: the subset in the shared folder (../shared/data, see its
//! README). This test needs that folder; without it, it says so and does nothing. Generated data
//! covers the same code in the other tests.

use std::path::PathBuf;

use ndhtl_agent::data::{DatasetKind, TaskSpec, read_dataset};
use ndhtl_agent::device::{BackendKind, ComputeDevice, DeviceSpec};
use ndhtl_agent::train::{CancelToken, NoObserver, SourceConfig, TaskData, run_source};

fn subset_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("NDHTL_CIFAR10_SUBSET")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cifar-10-subset")
        });
    dir.join("cifar-10-batches-bin/test_batch.bin")
        .exists()
        .then_some(dir)
}

#[test]
fn source_training_on_the_real_cifar10_subset_learns_well_above_chance() {
    let Some(dir) = subset_dir() else {
        eprintln!(
            "SKIPPED: the real CIFAR-10 subset is not at ../shared/data/cifar-10-subset \
             (set NDHTL_CIFAR10_SUBSET to its folder to run this test)"
        );
        return;
    };
    let raw = read_dataset(&dir, DatasetKind::Cifar10).unwrap();
    assert_eq!(
        raw.train.len(),
        10_000,
        "data_batch_1.bin holds 10,000 images"
    );
    assert_eq!(raw.test.len(), 10_000);
    let counts = (0..10u8)
        .map(|c| raw.train.labels.iter().filter(|&&l| l == c).count())
        .collect::<Vec<_>>();
    assert_eq!(
        counts,
        vec![1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981],
        "class counts of the README"
    );

    let task: TaskSpec = "cifar10".parse().unwrap();
    let data = TaskData::load(&dir, &task, Some(400)).unwrap();
    let config = SourceConfig {
        epochs: 3,
        lr: 0.05,
        batch_size: 64,
        seed: 0,
        ..SourceConfig::default()
    };
    let device = ComputeDevice::resolve(DeviceSpec::Cpu, Some(BackendKind::Flex)).unwrap();
    let outcome = run_source(
        &config,
        &data,
        &device,
        None,
        &mut NoObserver,
        &CancelToken::new(),
    )
    .unwrap();
    let top1 = outcome.run.summary.final_top1;
    eprintln!(
        "real CIFAR-10 subset: top-1 {top1:.2}% on 10,000 test images after 3 epochs on 4,000"
    );
    assert!(
        top1 > 20.0,
        "top-1 {top1:.2}% should be at least twice chance (10%)"
    );
}
