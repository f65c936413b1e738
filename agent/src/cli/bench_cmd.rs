//! `ndhtl bench`: images per second on each compiled backend, beside PyTorch on the same
//! machine when `import torch` works, as a markdown table with ratios.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;
use ndhtl_agent::bench::{BenchPlan, Measurement, bench_device, bench_pipeline};
use ndhtl_agent::device::{BackendKind, ComputeDevice, DeviceSpec, compiled_backends};
use serde::Serialize;

const PYTORCH_REFERENCE: &str = include_str!("../../bench/pytorch_reference.py");

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Backends to measure (default: every compiled one).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backends: Vec<BackendKind>,
    /// Device for the model workloads: `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Python interpreter used for the PyTorch reference (skipped if it cannot import torch).
    #[arg(long, env = "NDHTL_BENCH_PYTHON", default_value = "python3")]
    pub python: String,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_pytorch: bool,
    /// A quarter of the steps and three repeats (for smoke checks; less precise).
    #[arg(long)]
    pub quick: bool,
    /// Measure only these workloads (e.g. `train_b1_stl`; for profiling).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Measure everything this many times, alternating ndhtl and PyTorch, and report each
    /// cell's median: on a shared 2-core machine one run's figures can move by 20 %.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Also write the results as JSON (medians, and every round's figures).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    device: String,
    threads: usize,
    rounds: u32,
    /// backend → workload → images/s, the median over rounds
    results: BTreeMap<String, BTreeMap<String, f64>>,
    /// backend (and `pytorch`) → workload → images/s of each round
    rounds_measured: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    pytorch_version: Option<String>,
    pipeline_images_per_second: f64,
}

/// Figures of every round: backend → workload → images/s per round.
type Samples = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

fn record(samples: &mut Samples, label: &str, figures: impl IntoIterator<Item = (String, f64)>) {
    let row = samples.entry(label.to_string()).or_default();
    for (workload, value) in figures {
        row.entry(workload).or_default().push(value);
    }
}

fn medians(row: &BTreeMap<String, Vec<f64>>) -> BTreeMap<String, f64> {
    row.iter()
        .map(|(workload, values)| {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            (workload.clone(), sorted[sorted.len() / 2])
        })
        .collect()
}

const PYTORCH_LABEL: &str = "pytorch";

/// In how many of the rounds `ours` beat `reference` (more images per second), of how many:
/// the rounds alternate ndhtl and PyTorch, so round i of one pairs with round i of the other,
/// under the same machine load. `None` unless both have every round.
fn rounds_won(ours: &[f64], reference: &[f64]) -> Option<(usize, usize)> {
    if ours.is_empty() || ours.len() != reference.len() {
        return None;
    }
    let won = ours.iter().zip(reference).filter(|(a, b)| a > b).count();
    Some((won, ours.len()))
}

/// Adds the workloads of `measured` (one backend's, in its order) that `order` lacks, each right
/// after the workload before it in `measured`, so that the table lists every backend's rows
/// (some run only on one backend) in the bench's order.
fn merge_workload_order(order: &mut Vec<&'static str>, measured: &[&'static str]) {
    let mut insert_at = 0;
    for &workload in measured {
        match order.iter().position(|&known| known == workload) {
            Some(position) => insert_at = position + 1,
            None => {
                order.insert(insert_at, workload);
                insert_at += 1;
            }
        }
    }
}

fn run_pytorch(
    args: &BenchArgs,
    plan: &BenchPlan,
    threads: usize,
) -> Result<Option<(String, BTreeMap<String, f64>)>> {
    if args.no_pytorch {
        return Ok(None);
    }
    let probe = Command::new(&args.python)
        .args(["-c", "import torch"])
        .output();
    if !matches!(&probe, Ok(output) if output.status.success()) {
        tracing::warn!(python = %args.python, "PyTorch is not importable: skipping the reference (pip install torch==2.9.0)");
        return Ok(None);
    }
    let script = tempfile_path("ndhtl-pytorch-reference.py");
    std::fs::File::create(&script)
        .and_then(|mut f| f.write_all(PYTORCH_REFERENCE.as_bytes()))
        .with_context(|| format!("writing {}", script.display()))?;
    // The reference takes the same device strings (`cpu`, `cuda:N`).
    let device = args.device.clone();
    tracing::info!(python = %args.python, "bench: PyTorch reference");
    let output = Command::new(&args.python)
        .arg(&script)
        .args(["--threads", &threads.to_string(), "--device", &device])
        .args([
            "--repeats",
            &plan.repeats.to_string(),
            "--scale",
            &plan.scale.to_string(),
        ])
        .output()
        .context("running the PyTorch reference")?;
    let _ = std::fs::remove_file(&script);
    if !output.status.success() {
        anyhow::bail!(
            "PyTorch reference failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing the PyTorch reference output")?;
    let version = parsed["torch"].as_str().unwrap_or("?").to_string();
    let results = parsed["images_per_second"]
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some((version, results)))
}

fn tempfile_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{name}", std::process::id()))
}

/// The 1-minute load average, where the OS reports one.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(load) = load_average().filter(|&load| load > 0.5) {
        tracing::warn!(
            load,
            "the machine is not idle: other processes skew CPU timings (PyTorch's most of all); rerun on an idle machine"
        );
    }
    let plan = if args.quick {
        BenchPlan::QUICK
    } else {
        BenchPlan::STANDARD
    };
    let spec: DeviceSpec = args.device.parse()?;
    let backends = if args.backends.is_empty() {
        compiled_backends()
    } else {
        args.backends.clone()
    };
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });

    let mut samples = Samples::new();
    let mut order: Vec<&'static str> = Vec::new();
    let mut pytorch_version = None;
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            tracing::info!(round, rounds = args.rounds, "bench round");
        }
        for &backend in &backends {
            let device = ComputeDevice::resolve(spec, Some(backend))?;
            let measured: Vec<Measurement> = bench_device(&device, &plan, &args.only);
            let workloads: Vec<&'static str> = measured.iter().map(|m| m.workload).collect();
            merge_workload_order(&mut order, &workloads);
            let figures = measured
                .into_iter()
                .map(|m| (m.workload.to_string(), m.images_per_second));
            record(&mut samples, &device.label(), figures);
        }
        if let Some((version, figures)) = run_pytorch(&args, &plan, threads)? {
            record(&mut samples, PYTORCH_LABEL, figures);
            pytorch_version = Some(version);
        }
    }
    let pipeline = bench_pipeline(&plan);
    let mut results: BTreeMap<String, BTreeMap<String, f64>> = samples
        .iter()
        .map(|(label, row)| (label.clone(), medians(row)))
        .collect();
    let pytorch = results
        .remove(PYTORCH_LABEL)
        .and_then(|figures| pytorch_version.clone().map(|version| (version, figures)));

    let labels: Vec<String> = results.keys().cloned().collect();
    let mut table = String::new();
    let statistic = if args.rounds > 1 {
        format!(", median of {} rounds", args.rounds)
    } else {
        String::new()
    };
    let mut header = format!("| workload (images/s, {threads} threads{statistic}) |");
    let mut rule = String::from("|---|");
    if let Some((version, _)) = &pytorch {
        header.push_str(&format!(" PyTorch {version} |"));
        rule.push_str("---|");
    }
    let paired = pytorch.is_some() && args.rounds > 1;
    for label in &labels {
        header.push_str(&format!(" {label} |"));
        rule.push_str("---|");
        if pytorch.is_some() {
            header.push_str(" ratio |");
            rule.push_str("---|");
        }
        if paired {
            header.push_str(" faster in |");
            rule.push_str("---|");
        }
    }
    table.push_str(&header);
    table.push('\n');
    table.push_str(&rule);
    table.push('\n');
    for workload in &order {
        let reference = pytorch
            .as_ref()
            .and_then(|(_, r)| r.get(*workload))
            .copied();
        let mut row = format!("| {workload} |");
        if pytorch.is_some() {
            row.push_str(&reference.map_or(" – |".into(), |v| format!(" {v:.1} |")));
        }
        for label in &labels {
            let Some(ours) = results[label].get(*workload).copied() else {
                // A workload this backend does not run (`*_aten_conv` on flex, say).
                row.push_str(" – |");
                if pytorch.is_some() {
                    row.push_str(" – |");
                }
                if paired {
                    row.push_str(" – |");
                }
                continue;
            };
            row.push_str(&format!(" {ours:.1} |"));
            if let Some(reference) = reference {
                row.push_str(&format!(" {:.2} |", ours / reference));
            } else if pytorch.is_some() {
                row.push_str(" – |");
            }
            if paired {
                let won = rounds_won(
                    samples[label].get(*workload).map_or(&[][..], Vec::as_slice),
                    samples[PYTORCH_LABEL]
                        .get(*workload)
                        .map_or(&[][..], Vec::as_slice),
                );
                row.push_str(
                    &won.map_or(" – |".into(), |(won, of)| format!(" {won}/{of} rounds |")),
                );
            }
        }
        table.push_str(&row);
        table.push('\n');
    }
    println!("{table}");
    println!(
        "input pipeline (crop + flip + normalise, one thread): {:.0} images/s",
        pipeline.images_per_second
    );
    if let Some(path) = args.json {
        let report = BenchReport {
            device: args.device.clone(),
            threads,
            rounds: args.rounds,
            results,
            rounds_measured: samples,
            pytorch_version: pytorch.as_ref().map(|(v, _)| v.clone()),
            pipeline_images_per_second: pipeline.images_per_second,
        };
        let mut json = serde_json::to_value(&report)?;
        if let Some((_, reference)) = pytorch {
            json["results"]["pytorch"] = serde_json::to_value(reference)?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{merge_workload_order, rounds_won};

    #[test]
    fn every_backends_workloads_are_listed_in_the_bench_order() {
        let mut order = Vec::new();
        merge_workload_order(&mut order, &["b128", "b128_aten", "b1", "b1_aten", "infer"]);
        merge_workload_order(&mut order, &["b128", "b128_burn", "b1", "infer"]);
        assert_eq!(
            order,
            ["b128", "b128_burn", "b128_aten", "b1", "b1_aten", "infer"]
        );
        // A second round adds nothing.
        merge_workload_order(&mut order, &["b128", "b128_aten", "b1", "b1_aten", "infer"]);
        assert_eq!(order.len(), 6);
    }

    #[test]
    fn rounds_are_paired_by_index_and_ties_are_not_wins() {
        // Medians alone would call these equal (both 10); round by round ours won twice.
        assert_eq!(
            rounds_won(&[11.0, 10.0, 9.0, 12.0], &[10.0, 10.0, 10.0, 10.0]),
            Some((2, 4))
        );
        assert_eq!(rounds_won(&[1.0, 2.0], &[1.0]), None, "a missing round");
        assert_eq!(rounds_won(&[], &[]), None);
    }
}
