//! The `ndhtl` binary end to end, as a newcomer runs it: generated data, a source model, STL and
//! NDHTL fine-tunes of T1, JSON-lines metrics, resume by rerunning, export, and clear errors.

use std::path::Path;
use std::process::{Command, Output};

fn ndhtl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ndhtl"))
        .current_dir(dir)
        .env("NDHTL_LOG", "warn")
        .args(args)
        .output()
        .expect("running ndhtl")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn synth_source_and_both_fine_tunes_of_t1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(ndhtl(
        d,
        &[
            "data",
            "synth",
            "--out",
            "data",
            "--cifar10-train-per-class",
            "40",
            "--cifar100-train-per-class",
            "12",
            "--cifar100-test-per-class",
            "8",
        ],
    ));
    assert!(d.join("data/cifar-100-binary/train.bin").exists());

    let source = ok(ndhtl(
        d,
        &[
            "train",
            "source",
            "--data",
            "data",
            "--out",
            "src.bpk",
            "--epochs",
            "3",
            "--lr",
            "0.02",
            "--batch-size",
            "32",
        ],
    ));
    let events = lines(&source);
    assert_eq!(
        events.iter().filter(|e| e["event"] == "lifetime").count(),
        3
    );
    assert_eq!(events.last().unwrap()["event"], "summary");
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("src.json")).unwrap()).unwrap();
    assert_eq!(info["num_classes"], 10);

    for method in ["stl", "ndhtl"] {
        let args = [
            "train",
            "finetune",
            "--data",
            "data",
            "--source",
            "src.bpk",
            "--task",
            "T1",
            "--method",
            method,
            "--lifetimes",
            "2",
            "--lr",
            "1e-3",
            "--run-dir",
            method,
        ];
        let stdout = ok(ndhtl(d, &args));
        let events = lines(&stdout);
        let lifetimes: Vec<_> = events.iter().filter(|e| e["event"] == "lifetime").collect();
        assert_eq!(lifetimes.len(), 2);
        assert_eq!(
            lifetimes[0]["steps"], 120,
            "10 classes × 12 images at batch 1"
        );
        assert_eq!(
            lifetimes[0]["backward_passes"],
            if method == "stl" { 120 } else { 12 }
        );
        assert_eq!(lifetimes[1]["eta"].is_null(), method == "stl");
        let summary = events.last().unwrap();
        assert_eq!(summary["event"], "summary");
        assert!(d.join(method).join("checkpoint/model.bpk").exists());
        assert_eq!(
            std::fs::read_to_string(d.join(method).join("metrics.jsonl"))
                .unwrap()
                .lines()
                .count(),
            2
        );

        // Running the same command again resumes from the checkpoint: identical output, no training.
        let again = lines(&ok(ndhtl(d, &args)));
        let strip = |events: &[serde_json::Value]| -> Vec<(f64, f64)> {
            events
                .iter()
                .filter(|e| e["event"] == "lifetime")
                .map(|e| {
                    (
                        e["val_loss"].as_f64().unwrap(),
                        e["val_top1"].as_f64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(strip(&again), strip(&events));
    }

    ok(ndhtl(
        d,
        &["export", "--model", "src.bpk", "--out", "src.safetensors"],
    ));
    // The exported PyTorch-named weights are a valid source, here for a custom superclass task.
    let custom = lines(&ok(ndhtl(
        d,
        &[
            "train",
            "finetune",
            "--data",
            "data",
            "--source",
            "src.safetensors",
            "--task",
            "cifar100:super=fish,flowers",
            "--method",
            "stl",
            "--lifetimes",
            "1",
            "--run-dir",
            "custom",
        ],
    )));
    assert_eq!(
        custom[0]["steps"], 120,
        "2 superclasses × 5 classes × 12 images"
    );

    // A negative η₀ parses (`--eta -1`, not a flag), warns why, and the job fails as diverged
    // once the trace E, growing 2× per step, overflows (within 3 lifetimes of 120 steps).
    let diverging = ndhtl(
        d,
        &[
            "train",
            "finetune",
            "--data",
            "data",
            "--source",
            "src.bpk",
            "--task",
            "T1",
            "--eta",
            "-1",
            "--fixed-eta",
            "--lifetimes",
            "3",
            "--run-dir",
            "diverging",
        ],
    );
    let stderr = String::from_utf8_lossy(&diverging.stderr);
    assert!(!diverging.status.success(), "{stderr}");
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(
        stderr.contains("eta = -1") && stderr.contains("overflows"),
        "{stderr}"
    );
    assert!(stderr.contains("training diverged"), "{stderr}");
}

#[test]
fn bad_flags_and_bad_data_fail_cleanly_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "train", "finetune", "--data", "data", "--source", "x.bpk", "--k", "zero",
            ],
            "invalid value 'zero'",
        ),
        (
            vec![
                "train", "finetune", "--data", "nowhere", "--source", "x.bpk",
            ],
            "x.bpk",
        ),
        (
            vec![
                "train",
                "source",
                "--data",
                "nowhere",
                "--out",
                "m.bpk",
                "--batch-size",
                "0",
            ],
            "batch_size",
        ),
        (
            vec!["train", "source", "--data", "nowhere", "--out", "m.bpk"],
            "nowhere",
        ),
        (
            vec![
                "train", "source", "--data", "nowhere", "--out", "m.bpk", "--device", "tpu",
            ],
            "unknown device",
        ),
        (
            vec![
                "train",
                "finetune",
                "--data",
                "nowhere",
                "--source",
                "x.bpk",
                "--task",
                "cifar100:apple,super=fish",
            ],
            "`super=` must start the list",
        ),
    ];
    for (args, expected) in cases {
        let output = ndhtl(d, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected `{expected}` in: {stderr}"
        );
    }
    // A data file that is not a whole number of records names the file.
    ok(ndhtl(
        d,
        &[
            "data",
            "synth",
            "--out",
            "data",
            "--cifar10-train-per-class",
            "2",
            "--cifar100-train-per-class",
            "1",
            "--cifar100-test-per-class",
            "1",
        ],
    ));
    let test_batch = d.join("data/cifar-10-batches-bin/test_batch.bin");
    let mut bytes = std::fs::read(&test_batch).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&test_batch, bytes).unwrap();
    let output = ndhtl(
        d,
        &[
            "train", "source", "--data", "data", "--out", "m.bpk", "--epochs", "1",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("test_batch.bin")
            && stderr.contains("3073-byte"),
        "{stderr}"
    );
}

#[test]
fn version_names_the_compiled_backends() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = ok(ndhtl(dir.path(), &["--version"]));
    assert!(
        stdout.contains("backends:") && stdout.contains("flex"),
        "{stdout}"
    );
}

/// Every sweep we ship parses, validates against the class tables and expands to the job count
/// its header comment promises.
#[test]
fn every_shipped_sweep_plans_to_its_documented_size() {
    let sweeps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps");
    let expected = [
        ("smoke.yaml", 9),
        ("table3.yaml", 61),
        ("table3-cpu-scaled.yaml", 21),
        ("grid-eta-k-clip.yaml", 651),
        ("ablations.yaml", 331),
        ("custom-targets.yaml", 13),
    ];
    let mut shipped: Vec<String> = std::fs::read_dir(&sweeps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    let mut listed: Vec<String> = expected.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(shipped, listed, "every shipped sweep is checked here");
    let dir = tempfile::tempdir().unwrap();
    for (file, jobs) in expected {
        let path = sweeps.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# "), "{file} starts with a comment");
        let stdout = ok(ndhtl(dir.path(), &["plan", path.to_str().unwrap()]));
        assert!(
            stdout.contains(&format!("jobs: {jobs} (")),
            "{file}: expected {jobs} jobs\n{stdout}"
        );
    }
}

#[test]
fn a_bad_sweep_is_refused_with_its_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "name: bad\nfinetune:\n  targets: [T1, T99]\n  k: 4\n",
    )
    .unwrap();
    let output = ndhtl(dir.path(), &["plan", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.yaml:3:3: finetune.target:") && stderr.contains("T99"),
        "{stderr}"
    );
    std::fs::write(&path, "name: bad\nfinetune:\n  k: 0\n").unwrap();
    let stderr =
        String::from_utf8_lossy(&ndhtl(dir.path(), &["plan", path.to_str().unwrap()]).stderr)
            .into_owned();
    assert!(
        stderr.contains("bad.yaml:3:6: finetune.k: 0 is too small"),
        "{stderr}"
    );
}

#[test]
fn a_folder_without_coordinator_state_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps/smoke.yaml");
    let smoke = smoke.to_str().unwrap();
    for args in [
        vec!["plan", smoke, "--state-dir", "nowhere"],
        vec!["report", "smoke-0", "--state-dir", "nowhere"],
    ] {
        let output = ndhtl(d, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(
            stderr.contains("nowhere holds no coordinator state"),
            "{args:?}: {stderr}"
        );
        assert!(!d.join("nowhere").exists(), "{args:?} created the folder");
    }

    // No coordinator at the address: the error says where, once each cause, and how to report
    // without one.
    let output = ndhtl(
        d,
        &["report", "smoke-0", "--coordinator", "http://127.0.0.1:1"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("error: cannot reach the coordinator at http://127.0.0.1:1: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("\nhint: with no coordinator up, report from the sweep's state folder: ndhtl report smoke-0 --state-dir DIR"),
        "{stderr}"
    );
    for line in stderr.lines() {
        let causes: Vec<&str> = line.split(": ").collect();
        assert!(
            causes.windows(2).all(|pair| pair[0] != pair[1]),
            "a cause repeated: {line}"
        );
    }
}

#[test]
fn a_failed_job_stays_failed_on_a_rerun_and_runs_again_with_retry_failed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One good fine-tune, and one whose trace grows 2× a step until the loss is NaN.
    let sweep = "name: diverging\n\
                 data:\n  synthetic:\n    cifar10_train_per_class: 20\n    cifar10_test_per_class: 5\n    cifar100_train_per_class: 12\n    cifar100_test_per_class: 4\n\
                 source: {epochs: 1, lr: 0.02, batch_size: 32}\n\
                 finetune:\n  target: T1\n  method: ndhtl\n  lifetimes: 3\n  eta: [0.1, -1]\n  fixed_eta: true\n";
    std::fs::write(d.join("diverging.yaml"), sweep).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "diverging.yaml", "--agents", "1"];
        args.extend_from_slice(extra);
        let output = ndhtl(d, &args);
        assert!(!output.status.success(), "a failed job fails the run");
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (stdout, stderr) = run(&[]);
    assert!(
        stdout.contains("2 succeeded, 1 failed, 0 cancelled (0 reused"),
        "{stdout}"
    );
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("failed: "))
        .collect();
    assert_eq!(failed.len(), 1, "{stdout}");
    assert!(
        failed[0].contains(
            "(T1 ndhtl seed 0, K 10, η -1 fixed, clip 0.5, lr 0.0001), attempt 1: training diverged"
        ),
        "{}",
        failed[0]
    );
    assert!(
        stderr.contains("error: 1 of 3 jobs failed")
            && stderr.contains("\nhint: a rerun keeps a failed job failed")
            && stderr.contains("ndhtl run diverging.yaml --retry-failed --state-dir ndhtl-run"),
        "{stderr}"
    );

    // A rerun reuses the two results and reports the failure as it was.
    let (stdout, _) = run(&[]);
    assert!(
        stdout.contains("2 succeeded, 1 failed, 0 cancelled (2 reused from earlier runs)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("), attempt 1: training diverged"),
        "{stdout}"
    );

    // --retry-failed runs it again, as attempt 2 (here it fails the same way: the cause stays).
    let (stdout, _) = run(&["--retry-failed"]);
    assert!(
        stdout.contains("(2 reused from earlier runs, 1 failed before and run again)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("), attempt 2: training diverged"),
        "{stdout}"
    );

    // Its reports by the sweep's name, as well as by its id.
    let by_name = ndhtl(d, &["report", "diverging", "--state-dir", "ndhtl-run"]);
    let stderr = String::from_utf8_lossy(&by_name.stderr).into_owned();
    assert!(
        stderr.contains("note: `diverging` is sweep diverging-"),
        "{stderr}"
    );
    let id = stderr
        .split("is sweep ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the id")
        .to_string();
    let by_id = ok(ndhtl(d, &["report", &id, "--state-dir", "ndhtl-run"]));
    assert_eq!(ok(by_name), by_id);
    assert!(by_id.contains("| T1 |"), "{by_id}");
}
