//! Reports checked against values computed by hand.

use super::*;
use crate::config::{FinetuneConfig, Method};
use crate::metrics::RunSummary;

fn outcome(task: &str, method: Method, seed: u64, top1: f64, top5: f64) -> FinetuneOutcome {
    FinetuneOutcome {
        job_id: format!("{task}-{method:?}-{seed}"),
        history: Vec::new(),
        config: FinetuneConfig {
            task: task.into(),
            method,
            seed,
            ..FinetuneConfig::default()
        },
        summary: Some(RunSummary {
            lifetimes: 2,
            final_top1: top1,
            final_top5: top5,
            final_val_loss: 1.0,
            best_top1: top1 + 1.0,
            best_top1_lifetime: 1,
            best_top5: top5,
        }),
    }
}

#[test]
fn statistics_match_hand_computed_values() {
    // mean 4, deviations -2, 0, 2: variance (4 + 0 + 4) / 2 = 4, std 2.
    let m = mean_std(&[2.0, 4.0, 6.0]).unwrap();
    assert_eq!((m.mean, m.std, m.n), (4.0, 2.0, 3));
    // Differences 1, 2, 3: mean 2, std 1, half-width t(2) · 1/√3 = 4.303 / 1.7320508.
    let d = paired_difference(&[(10.0, 11.0), (10.0, 12.0), (10.0, 13.0)]).unwrap();
    assert_eq!(d.mean, 2.0);
    assert!((d.half_width.unwrap() - 2.484339).abs() < 1e-5, "{d:?}");
    assert_eq!(paired_difference(&[(1.0, 2.0)]).unwrap().half_width, None);
    assert_eq!(t_quantile_975(1), 12.706);
    assert_eq!(t_quantile_975(100), 1.96);
}

#[test]
fn table3_pairs_by_seed_and_averages_over_targets() {
    let outcomes = vec![
        outcome("T2", Method::Stl, 0, 60.0, 90.0),
        outcome("T2", Method::Ndhtl, 0, 62.0, 91.0),
        outcome("T2", Method::Stl, 1, 64.0, 92.0),
        outcome("T2", Method::Ndhtl, 1, 65.0, 92.0),
        outcome("T1", Method::Stl, 0, 50.0, 80.0),
        outcome("T1", Method::Ndhtl, 0, 53.0, 85.0),
        FinetuneOutcome {
            summary: None,
            ..outcome("T1", Method::Ndhtl, 1, 0.0, 0.0)
        },
    ];
    let table = table3(&outcomes, LifetimeView::Final);
    assert_eq!(table.rows[0].target, "T1");
    assert_eq!((table.rows[0].finished, table.rows[0].total), (2, 3));
    let t2 = &table.rows[1].top1;
    assert_eq!(t2.stl.unwrap().mean, 62.0);
    // STL 60, 64: std √8 = 2.828…
    assert!((t2.stl.unwrap().std - 8f64.sqrt()).abs() < 1e-12);
    // Paired differences 2 and 1: mean 1.5, std √0.5, half-width 12.706 · √0.5/√2 = 6.353.
    let d = t2.difference.unwrap();
    assert_eq!(d.mean, 1.5);
    assert!((d.half_width.unwrap() - 6.353).abs() < 1e-9);
    assert_eq!((t2.paper_stl, t2.paper_ndhtl), (Some(69.9), Some(73.1)));
    // Average over T1 (50 → 53) and T2 (62 → 63.5): STL 56, NDHTL 58.25, Δ 2.25.
    let average = table.average.as_ref().unwrap();
    assert_eq!(average.top1.stl.unwrap().mean, 56.0);
    assert_eq!(average.top1.ndhtl.unwrap().mean, 58.25);
    assert_eq!(average.top1.difference.unwrap().mean, 2.25);
    assert!((average.top1.paper_stl.unwrap() - (59.6 + 69.9) / 2.0).abs() < 1e-12);
    let best = table3(&outcomes, LifetimeView::Best);
    assert_eq!(best.rows[1].top1.stl.unwrap().mean, 63.0);
    let markdown = table.to_markdown();
    assert!(
        markdown.contains(
            "| T2 | 62.00 ± 2.83 | 63.50 ± 2.12 | +1.50 [-4.85, +7.85] | 69.9 | 73.1 | +3.2 |"
        ),
        "{markdown}"
    );
    assert!(markdown.contains("| 2/3 |"));
    assert!(table.to_csv().lines().count() == 1 + 2 * 3);
    assert!(table.to_json().contains("\"view\": \"final\""));
}

/// An NDHTL fine-tune of `task` with η and K set, finished with `top1` unless `None`.
fn ndhtl(task: &str, eta: f32, k: usize, seed: u64, top1: Option<f64>) -> FinetuneOutcome {
    let mut o = outcome(task, Method::Ndhtl, seed, top1.unwrap_or(0.0), 90.0);
    o.config.eta = eta;
    o.config.k = k;
    match top1 {
        Some(top1) => o.summary.as_mut().unwrap().final_val_loss = 100.0 - top1,
        None => o.summary = None,
    }
    o
}

fn grid_outcomes() -> Vec<FinetuneOutcome> {
    vec![
        ndhtl("T1", 0.01, 5, 0, Some(50.0)),
        ndhtl("T1", 0.01, 5, 1, Some(54.0)),
        ndhtl("T1", 0.01, 10, 0, Some(60.0)),
        ndhtl("T1", 0.01, 10, 1, Some(62.0)),
        ndhtl("T1", 0.1, 5, 0, Some(55.0)),
        ndhtl("T1", 0.1, 5, 1, None),
        ndhtl("T1", 0.1, 10, 0, Some(58.0)),
        ndhtl("T1", 0.1, 10, 1, Some(59.0)),
        ndhtl("T10", 0.01, 5, 0, Some(70.0)),
        ndhtl("T10", 0.01, 5, 1, Some(72.0)),
    ]
}

#[test]
fn grid_cells_are_mean_and_std_over_seeds_with_the_best_marked() {
    let report = grid(
        &grid_outcomes(),
        &GridSpec::new("eta", "k"),
        Metric::Top1,
        LifetimeView::Final,
    )
    .unwrap();
    // The target varies and is neither an axis nor pooled: one table per target.
    assert_eq!(report.slices.len(), 2);
    let t1 = &report.slices[0];
    assert_eq!(t1.fixed, vec![("target".to_string(), "T1".to_string())]);
    assert_eq!(t1.row_values, vec!["0.01", "0.1"]);
    assert_eq!(t1.col_values, vec!["5", "10"]);
    // (0.01, 5): 50, 54 → 52 ± √8; (0.01, 10): 60, 62 → 61 ± √2; (0.1, 5): 55 alone, 1 of 2
    // done; (0.1, 10): 58, 59 → 58.5 ± √0.5.
    let cell = |r: usize, c: usize| t1.cells[r][c].stats.unwrap();
    assert_eq!(cell(0, 0).mean, 52.0);
    assert!((cell(0, 0).std - 8f64.sqrt()).abs() < 1e-12);
    assert_eq!((cell(0, 1).mean, cell(0, 1).n), (61.0, 2));
    assert_eq!((cell(1, 0).mean, cell(1, 0).std), (55.0, 0.0));
    assert_eq!((t1.cells[1][0].finished, t1.cells[1][0].total), (1, 2));
    assert!((cell(1, 1).std - 0.5f64.sqrt()).abs() < 1e-12);
    assert_eq!(t1.best, Some((0, 1)));
    // T10 only ran (0.01, 5): the other combinations are absent, not pending.
    let t10 = &report.slices[1];
    assert_eq!((t10.row_values.len(), t10.col_values.len()), (1, 1));
    assert_eq!((report.finished, report.total), (9, 10));

    let markdown = report.to_markdown();
    assert!(
        markdown.starts_with("**Partial: 9 of 10 jobs finished**"),
        "{markdown}"
    );
    assert!(markdown.contains("### target = T1"), "{markdown}");
    assert!(
        markdown.contains("| 0.01 | 52.00 ± 2.83 | **61.00 ± 1.41** ★ |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| 0.1 | 55.00 (1/2) | 58.50 ± 0.71 |"),
        "{markdown}"
    );
    let csv = report.to_csv();
    assert!(
        csv.contains("target=T1,0.01,10,61,1.4142135623730951,2,2,2,true"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 4 + 1);
    let latex = report.to_latex();
    assert!(latex.contains("\\textbf{61.00 $\\pm$ 1.41}"), "{latex}");
    assert!(
        latex.contains("eta $\\backslash$ k & 5 & 10 \\\\"),
        "{latex}"
    );
    assert_eq!(latex.matches("\\begin{tabular}").count(), 2);
}

#[test]
fn grid_pools_filters_and_prefers_low_loss() {
    let mut spec = GridSpec::new("k", "eta");
    spec.pool.push("target".into());
    let pooled = grid(&grid_outcomes(), &spec, Metric::Top1, LifetimeView::Final).unwrap();
    assert_eq!(pooled.slices.len(), 1);
    // (k 5, η 0.01) pools T1's 50, 54 with T10's 70, 72: mean 61.5.
    assert_eq!(pooled.slices[0].cells[0][0].stats.unwrap().mean, 61.5);
    assert_eq!(pooled.slices[0].cells[0][0].total, 4);

    let mut filtered = GridSpec::new("eta", "k");
    filtered
        .filters
        .push(GridSpec::parse_filter("target=T1").unwrap());
    let loss = grid(
        &grid_outcomes(),
        &filtered,
        Metric::Loss,
        LifetimeView::Final,
    )
    .unwrap();
    assert_eq!(loss.slices.len(), 1);
    // Loss is 100 − top-1 here: the lowest loss is the cell with the highest top-1.
    assert_eq!(loss.slices[0].best, Some((0, 1)));
    assert_eq!(loss.slices[0].cells[0][1].stats.unwrap().mean, 39.0);
    assert_eq!(loss.total, 8);
}

#[test]
fn grid_requests_are_checked() {
    let outcomes = grid_outcomes();
    let run = |spec: GridSpec| grid(&outcomes, &spec, Metric::Top1, LifetimeView::Final);
    assert!(matches!(
        run(GridSpec::new("eta", "kk")),
        Err(ReportError::UnknownParameter { name }) if name == "kk"
    ));
    assert!(matches!(
        run(GridSpec::new("k", "k")),
        Err(ReportError::SameParameter(_))
    ));
    let mut pooled_axis = GridSpec::new("target", "k");
    pooled_axis.pool.push("target".into());
    assert!(matches!(
        run(pooled_axis),
        Err(ReportError::AxisPooled { .. })
    ));
    // The seed as an axis is not pooled.
    let by_seed = run(GridSpec::new("seed", "k")).unwrap();
    assert!(by_seed.pooled.is_empty());
    assert_eq!(by_seed.slices[0].row_values, ["0", "1"]);
    assert!(matches!(
        GridSpec::parse_filter("clip"),
        Err(ReportError::BadFilter { .. })
    ));
    let message = run(GridSpec::new("eta", "kk")).unwrap_err().to_string();
    assert!(
        message.contains("`kk`") && message.contains("clip"),
        "{message}"
    );
}

#[test]
fn best_configuration_per_target_and_over_all_targets() {
    let stl = |task: &str, seed: u64, top1: f64| {
        let mut o = outcome(task, Method::Stl, seed, top1, 90.0);
        o.config.eta = 0.01;
        o
    };
    let outcomes = vec![
        stl("T1", 0, 50.0),
        stl("T1", 1, 52.0),
        ndhtl("T1", 0.01, 10, 0, Some(53.0)),
        ndhtl("T1", 0.01, 10, 1, Some(55.0)),
        ndhtl("T1", 0.1, 10, 0, Some(56.0)),
        ndhtl("T1", 0.1, 10, 1, Some(50.0)),
        stl("T2", 0, 60.0),
        stl("T2", 1, 60.0),
        ndhtl("T2", 0.01, 10, 0, Some(61.0)),
        ndhtl("T2", 0.01, 10, 1, Some(61.0)),
        ndhtl("T2", 0.1, 10, 0, Some(66.0)),
        ndhtl("T2", 0.1, 10, 1, Some(64.0)),
    ];
    let report = best_configurations(&outcomes, Metric::Top1, LifetimeView::Final);
    assert_eq!(report.parameters, vec!["method", "eta"]);
    let t1 = &report.per_target[0];
    // T1: STL 51, NDHTL η 0.01 54, η 0.1 53: η 0.01 wins by 1.
    assert_eq!(t1.target, "T1");
    assert_eq!(
        t1.configuration,
        vec![
            ("method".into(), "ndhtl".into()),
            ("eta".into(), "0.01".into())
        ]
    );
    assert_eq!(t1.stats.mean, 54.0);
    assert_eq!(t1.margin, Some(1.0));
    assert_eq!(t1.configurations_compared, 3);
    // T2: STL 60, η 0.01 61, η 0.1 65: η 0.1 wins by 4.
    let t2 = &report.per_target[1];
    assert_eq!((t2.stats.mean, t2.margin), (65.0, Some(4.0)));
    // Over targets: STL 55.5, η 0.01 57.5, η 0.1 59 (std of 53 and 65: √72).
    let overall = report.overall.as_ref().unwrap();
    assert_eq!(overall.configuration[1], ("eta".into(), "0.1".into()));
    assert_eq!(overall.stats.mean, 59.0);
    assert!((overall.stats.std - 72f64.sqrt()).abs() < 1e-12);
    assert_eq!(overall.margin, Some(1.5));
    let markdown = report.to_markdown();
    assert!(
        markdown.contains("| T1 | method=ndhtl, eta=0.01 | 54.00 ± 1.41 | 1.00 | 3 | 6/6 |"),
        "{markdown}"
    );
    assert!(markdown.contains("| **All targets** | method=ndhtl, eta=0.1 | 59.00 ± 8.49 |"));
    assert!(
        report
            .to_csv()
            .contains("all,\"method=ndhtl, eta=0.1\",59,")
    );
    assert!(
        report
            .to_latex()
            .contains("All targets & method=ndhtl, eta=0.1 & 59.00 $\\pm$ 8.49 & 3 \\\\")
    );

    // Lower loss is better: loss = 100 − top-1 for the NDHTL jobs, 1.0 for STL's.
    let by_loss = best_configurations(&outcomes, Metric::Loss, LifetimeView::Final);
    assert_eq!(by_loss.per_target[0].configuration[0].1, "stl");
}

#[test]
fn an_unfinished_target_has_no_overall_winner_yet() {
    let outcomes = vec![
        ndhtl("T1", 0.01, 10, 0, Some(53.0)),
        ndhtl("T2", 0.01, 10, 0, None),
        ndhtl("T2", 0.1, 10, 0, Some(60.0)),
        ndhtl("T1", 0.1, 10, 0, None),
    ];
    let report = best_configurations(&outcomes, Metric::Top1, LifetimeView::Final);
    assert_eq!(report.per_target.len(), 2);
    assert!(report.overall.is_none());
    let markdown = report.to_markdown();
    assert!(markdown.starts_with("**Partial: 2 of 4 jobs finished**"));
    assert!(markdown.contains("no configuration has results on every target yet"));
}

#[test]
fn table3_renders_latex_in_the_papers_layout() {
    let outcomes = vec![
        outcome("T1", Method::Stl, 0, 50.0, 80.0),
        outcome("T1", Method::Ndhtl, 0, 53.0, 85.0),
        outcome("T1", Method::Stl, 1, 52.0, 80.0),
        outcome("T1", Method::Ndhtl, 1, 54.0, 85.0),
    ];
    let latex = table3(&outcomes, LifetimeView::Final).to_latex();
    // STL 50, 52 → 51 ± 1.41; NDHTL 53, 54 → 53.5 ± 0.71; Δ 3, 2 → 2.5, half-width
    // 12.706 · 0.7071 / √2 = 6.353.
    assert!(
        latex.contains(
            "T1 & 51.00 $\\pm$ 1.41 & 53.50 $\\pm$ 0.71 & +2.50 [-3.85, +8.85] & 59.6 & 60.7"
        ),
        "{latex}"
    );
    assert!(latex.contains("\\multicolumn{5}{c}{Top-1 (\\%)}"));
    assert!(latex.trim_end().ends_with("\\end{tabular}"));
}

#[test]
fn outcomes_are_read_from_stored_records() {
    let config = FinetuneConfig {
        task: "T3".into(),
        ..FinetuneConfig::default()
    };
    let summary = outcome("T3", Method::Ndhtl, 0, 61.0, 95.0).summary.unwrap();
    let config_json = serde_json::to_string(&config).unwrap();
    let summary_json = serde_json::to_string(&summary).unwrap();
    let record = r#"{"lifetime":1,"val_loss":1.5,"val_top1":40.0,"val_top5":90.0,"train_loss":2.0,"train_top1":30.0,"steps":10,"backward_passes":1,"lr":0.001,"train_seconds":1.0,"train_images_per_second":10.0}"#;
    let read = FinetuneOutcome::from_records(
        "job-1",
        "finetune",
        &config_json,
        "succeeded",
        &summary_json,
        &[record.to_string()],
    )
    .unwrap()
    .unwrap();
    assert_eq!(read.config, config);
    assert_eq!(read.summary, Some(summary));
    assert_eq!(read.history[0].val_top1, 40.0);
    // A running job's summary is not read; a source job is not a fine-tune.
    let running =
        FinetuneOutcome::from_records("job-1", "finetune", &config_json, "running", "", &[])
            .unwrap()
            .unwrap();
    assert!(!running.is_finished());
    assert!(
        FinetuneOutcome::from_records("s", "source", "{}", "succeeded", "", &[])
            .unwrap()
            .is_none()
    );
    let error =
        FinetuneOutcome::from_records("job-9", "finetune", "{", "queued", "", &[]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("job job-9: its stored configuration"),
        "{error}"
    );
}

#[test]
fn parameters_read_and_order_naturally() {
    use params::{compare_values, parameters_of};
    let config = FinetuneConfig {
        task: "T7".into(),
        eta: 0.01,
        ..FinetuneConfig::default()
    };
    let parameters = parameters_of(&config);
    assert_eq!(parameters["target"], "T7");
    assert_eq!(parameters["eta"], "0.01");
    assert_eq!(parameters["clip"], format!("{}", config.plastic.clip));
    assert_eq!(parameters["dataset"], "cifar");
    assert_eq!(parameters["train_per_class"], "none");
    assert!(compare_values("T2", "T10").is_lt());
    assert!(compare_values("0.5", "10").is_lt());
    assert!(compare_values("ndhtl", "stl").is_lt());
}

#[test]
fn render_dispatches_every_kind_and_format() {
    let outcomes = grid_outcomes();
    for kind in [
        ReportKind::Table3,
        ReportKind::Grid(GridSpec::new("eta", "k")),
        ReportKind::Best,
    ] {
        for format in [
            ReportFormat::Markdown,
            ReportFormat::Csv,
            ReportFormat::Json,
            ReportFormat::Latex,
        ] {
            let request = ReportRequest {
                kind: kind.clone(),
                metric: Metric::Top1,
                view: LifetimeView::Best,
                format,
            };
            let text = render(&outcomes, &request).unwrap();
            assert!(!text.is_empty());
            if format == ReportFormat::Json {
                serde_json::from_str::<serde_json::Value>(&text).unwrap();
            }
        }
    }
}

#[test]
fn table3_says_when_its_cells_pool_several_configurations() {
    let table = table3(&grid_outcomes(), LifetimeView::Final);
    // T1's NDHTL ran four (η, K) pairs.
    assert_eq!(table.most_configurations, 4);
    assert!(table.to_markdown().contains("up to 4 configurations"));
    let single = table3(&grid_outcomes()[8..], LifetimeView::Final);
    assert_eq!(single.most_configurations, 1);
    assert!(!single.to_markdown().contains("Note"));
}
