//! Reports through the coordinator's API and `ndhtl report`, on a real sweep run by a real
//! agent process: partial while it runs, then Table 3, a grid and the best configurations whose
//! numbers are checked against the stored results, and the folder of tables and figures; then
//! the same reports read from the coordinator's state folder, beside it and after it is killed.

use std::process::Command;
use std::time::Duration;

use ndhtl_proto::v1;
use ndhtl_system_tests::{Cluster, all_succeeded, ndhtl_binary};

/// T1 fine-tuned with STL and with NDHTL at two η, on two seeds: 1 source + 6 fine-tunes.
const SWEEP: &str = "\
name: reports
data:
  synthetic: {seed: 5, cifar10_train_per_class: 20, cifar10_test_per_class: 10, cifar100_train_per_class: 20, cifar100_test_per_class: 10}
source: {epochs: 1, lr: 0.02, batch_size: 32, eval_batch_size: 200}
finetune: {target: T1, methods: [stl, ndhtl], seeds: [0, 1], eta: [0.05, 0.2], lifetimes: 2, lr: 1.0e-3, k: 5, eval_batch_size: 200}
";

fn final_top1(job: &v1::JobResult) -> f64 {
    let summary: serde_json::Value = serde_json::from_str(&job.summary_json).expect("summary");
    summary["final_top1"].as_f64().expect("final_top1")
}

fn config(job: &v1::JobResult) -> serde_json::Value {
    serde_json::from_str(&job.config_json).expect("config")
}

/// The final top-1 of every fine-tune of `method` (at `eta`, when given), as stored.
fn final_top1s(finetunes: &[&v1::JobResult], method: &str, eta: Option<f64>) -> Vec<f64> {
    finetunes
        .iter()
        .filter(|job| {
            let c = config(job);
            c["method"] == method
                && eta.is_none_or(|eta| (c["eta"].as_f64().unwrap() - eta).abs() < 1e-6)
        })
        .map(|job| final_top1(job))
        .collect()
}

fn request(sweep: &str, kind: v1::ReportKind, format: v1::ReportFormat) -> v1::GetReportRequest {
    v1::GetReportRequest {
        sweep_id: sweep.into(),
        kind: kind as i32,
        format: format as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_cover_a_running_sweep_then_match_its_stored_results() {
    let mut cluster = Cluster::start();
    let sweep = cluster.submit(SWEEP).await;
    let mut client = cluster.client().await;

    // No agent yet: nothing has finished, and the report says so instead of failing.
    let partial = client
        .get_report(request(
            &sweep,
            v1::ReportKind::Table3,
            v1::ReportFormat::Markdown,
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!((partial.finished_jobs, partial.total_jobs), (0, 6));
    assert!(
        partial
            .text
            .starts_with("**Partial: 0 of 6 jobs finished**"),
        "{}",
        partial.text
    );
    assert!(partial.text.contains("| T1 | — | — |"), "{}", partial.text);

    cluster.add_agent(&[]);
    let results = cluster
        .wait_for(&sweep, "the sweep", Duration::from_secs(600), all_succeeded)
        .await;
    let finetunes: Vec<&v1::JobResult> = results
        .iter()
        .filter(|job| job.kind == "finetune")
        .collect();
    assert_eq!(finetunes.len(), 6);

    // The grid of η × seed over NDHTL: each cell is one job's final top-1.
    let mut grid = request(&sweep, v1::ReportKind::Grid, v1::ReportFormat::Json);
    grid.rows = "eta".into();
    grid.cols = "target".into();
    grid.filters = vec![v1::ParameterFilter {
        name: "method".into(),
        value: "ndhtl".into(),
    }];
    let report = client.get_report(grid).await.expect("grid").into_inner();
    assert_eq!(
        (report.finished_jobs, report.total_jobs),
        (6, 6),
        "the sweep's fine-tunes"
    );
    let json: serde_json::Value = serde_json::from_str(&report.text).expect("grid JSON");
    assert_eq!(
        (&json["finished"], &json["total"]),
        (&4.into(), &4.into()),
        "NDHTL's"
    );
    let slice = &json["slices"][0];
    assert_eq!(slice["row_values"], serde_json::json!(["0.05", "0.2"]));
    for (row, eta) in [0.05, 0.2].into_iter().enumerate() {
        let values = final_top1s(&finetunes, "ndhtl", Some(eta));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let cell = &slice["cells"][row][0]["stats"];
        assert!(
            (cell["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
            "{cell} vs {values:?}"
        );
        assert_eq!(cell["n"], 2);
    }

    // The best configuration on T1 scores the highest mean over seeds of any configuration.
    let best = client
        .get_report(request(
            &sweep,
            v1::ReportKind::Best,
            v1::ReportFormat::Json,
        ))
        .await
        .expect("best")
        .into_inner();
    let json: serde_json::Value = serde_json::from_str(&best.text).expect("best JSON");
    let mut means: Vec<f64> = Vec::new();
    for (method, eta) in [("stl", None), ("ndhtl", Some(0.05)), ("ndhtl", Some(0.2))] {
        let values = final_top1s(&finetunes, method, eta);
        assert_eq!(values.len(), 2);
        means.push(values.iter().sum::<f64>() / 2.0);
    }
    let top = means.iter().cloned().fold(f64::MIN, f64::max);
    let reported = json["per_target"][0]["stats"]["mean"].as_f64().unwrap();
    assert!(
        (reported - top).abs() < 1e-9,
        "best {reported}, means {means:?}"
    );
    assert_eq!(json["per_target"][0]["configurations_compared"], 3);

    // Bad requests are refused with the reason.
    let mut bad = request(&sweep, v1::ReportKind::Grid, v1::ReportFormat::Markdown);
    bad.rows = "etta".into();
    bad.cols = "k".into();
    let status = client.get_report(bad).await.expect_err("unknown parameter");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("`etta`"), "{}", status.message());
    let status = client
        .get_report(request(
            "no-such-sweep",
            v1::ReportKind::Table3,
            v1::ReportFormat::Markdown,
        ))
        .await
        .expect_err("unknown sweep");
    assert_eq!(status.code(), tonic::Code::NotFound);

    // The command line: one report printed in LaTeX, then the whole folder.
    let address = cluster.address();
    let latex = Command::new(ndhtl_binary())
        .args([
            "report",
            &sweep,
            "--coordinator",
            &address,
            "--grid",
            "eta,seed",
        ])
        .args(["--where", "method=ndhtl", "--format", "latex"])
        .output()
        .expect("ndhtl report");
    assert!(
        latex.status.success(),
        "{}",
        String::from_utf8_lossy(&latex.stderr)
    );
    let latex = String::from_utf8(latex.stdout).unwrap();
    assert!(
        latex.contains("\\begin{tabular}") && latex.contains("\\textbf{"),
        "{latex}"
    );

    let out = tempfile::tempdir().unwrap();
    let folder = Command::new(ndhtl_binary())
        .args(["report", &sweep, "--coordinator", &address, "--out-dir"])
        .arg(out.path())
        .output()
        .expect("ndhtl report --out-dir");
    assert!(
        folder.status.success(),
        "{}",
        String::from_utf8_lossy(&folder.stderr)
    );
    for file in [
        "table3.md",
        "table3.tex",
        "best.json",
        "grid-eta-method.csv",
        "plots/curves-T1.svg",
        "plots/curves-T1.png",
        "plots/gains.png",
        "plots/heatmap-eta-method.svg",
    ] {
        let path = out.path().join(file);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 100,
            "{} missing or empty; written:\n{}",
            path.display(),
            String::from_utf8_lossy(&folder.stdout)
        );
    }
    let table3 = std::fs::read_to_string(out.path().join("table3.md")).unwrap();
    let served = client
        .get_report(request(
            &sweep,
            v1::ReportKind::Table3,
            v1::ReportFormat::Markdown,
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(table3, served.text, "the folder's Table 3 is the API's");
    assert!(table3.contains("up to 2 configurations"), "{table3}");

    // The coordinator's HTTP side agrees: seven jobs done, one live agent, no sweep running.
    let (status, body) = cluster.http_get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, metrics) = cluster.http_get("/metrics");
    assert_eq!(status, 200);
    for line in [
        "ndhtl_jobs{state=\"succeeded\"} 7",
        "ndhtl_agents{state=\"alive\"} 1",
        "ndhtl_sweeps{state=\"done\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }

    // The same reports from the coordinator's state folder, with no coordinator asked: beside
    // the running one, then with it killed.
    let state_dir = cluster.state_dir();
    let from_state_dir = |args: &[&str]| {
        let output = Command::new(ndhtl_binary())
            .args(["report", &sweep, "--state-dir"])
            .arg(&state_dir)
            .args(args)
            .output()
            .expect("ndhtl report --state-dir");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let grid_args = [
        "--grid",
        "eta,seed",
        "--where",
        "method=ndhtl",
        "--format",
        "latex",
    ];
    for coordinator in ["beside the coordinator", "with the coordinator killed"] {
        if coordinator == "with the coordinator killed" {
            cluster.kill_coordinator();
        }
        assert_eq!(from_state_dir(&[]), served.text, "Table 3 {coordinator}");
        assert_eq!(from_state_dir(&grid_args), latex, "the grid {coordinator}");
        assert_eq!(
            from_state_dir(&["--best", "--format", "json"]),
            best.text,
            "the best configurations {coordinator}"
        );
    }
    let offline_out = tempfile::tempdir().unwrap();
    from_state_dir(&["--out-dir", offline_out.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(offline_out.path().join("table3.md")).unwrap(),
        table3
    );
    // `ndhtl plan` over the same folder counts every job of the sweep as done there.
    let sweep_file = offline_out.path().join("reports.yaml");
    std::fs::write(&sweep_file, SWEEP).unwrap();
    let plan = Command::new(ndhtl_binary())
        .arg("plan")
        .arg(&sweep_file)
        .arg("--state-dir")
        .arg(&state_dir)
        .output()
        .expect("ndhtl plan --state-dir");
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success()
            && plan_text.contains(&format!("({sweep})"))
            && plan_text
                .contains("jobs: 7 (1 source, 6 fine-tune); already in the store, reused: 7"),
        "{plan_text}{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let output = Command::new(ndhtl_binary())
        .args(["report", "no-such-sweep", "--state-dir"])
        .arg(&state_dir)
        .output()
        .expect("ndhtl report --state-dir");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no sweep `no-such-sweep`")
            && stderr.contains(&format!("{sweep} (reports, 7 jobs)")),
        "names the folder's sweeps: {stderr}"
    );
}
