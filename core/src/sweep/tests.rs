use proptest::prelude::*;

use super::*;
use crate::config::Method;

fn parse(text: &str) -> Result<SweepDefinition, SweepError> {
    parse_sweep(text, "test.yaml")
}

fn plan(text: &str) -> SweepPlan {
    parse(text).unwrap().expand(DEFAULT_MAX_JOBS).unwrap()
}

fn error(text: &str) -> (usize, usize, String) {
    match parse(text).and_then(|d| d.expand(DEFAULT_MAX_JOBS).map(|_| d)) {
        Err(SweepError::Invalid {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected an invalid-sweep error, got {other:?}"),
    }
}

const GRID: &str = "\
name: grid
finetune:
  targets: [T1, T2]
  methods: [stl, ndhtl]
  seeds: [0, 1]
  k: [5, 10, 20]
";

#[test]
fn grid_expands_to_the_product_and_stl_is_not_repeated_per_k() {
    let plan = plan(GRID);
    assert_eq!(plan.sources.len(), 1);
    // NDHTL: 2 targets × 2 seeds × 3 K = 12; STL ignores K: 2 × 2 = 4.
    let ndhtl = plan
        .finetunes
        .iter()
        .filter(|f| f.config.method == Method::Ndhtl)
        .count();
    let stl = plan
        .finetunes
        .iter()
        .filter(|f| f.config.method == Method::Stl)
        .count();
    assert_eq!((ndhtl, stl), (12, 4));
    assert_eq!(plan.job_count(), 17);
    assert!(
        plan.finetunes
            .iter()
            .filter(|f| f.config.method == Method::Stl)
            .all(|f| f.config.k == 10)
    );
}

#[test]
fn all_targets_and_ranges_expand() {
    let plan = plan(
        "name: r\nfinetune:\n  target: all\n  method: ndhtl\n  eta: {range: {from: 0.05, to: 0.2, step: 0.05}}\n",
    );
    assert_eq!(plan.finetunes.len(), 10 * 4);
    let mut etas: Vec<f32> = plan.finetunes.iter().map(|f| f.config.eta).collect();
    etas.sort_by(f32::total_cmp);
    etas.dedup();
    assert_eq!(etas, vec![0.05, 0.1, 0.15, 0.2]);
    let targets: Vec<&str> = plan
        .finetunes
        .iter()
        .map(|f| f.config.task.as_str())
        .collect();
    assert_eq!(targets[0], "T1");
    assert_eq!(targets[targets.len() - 1], "T10");
}

#[test]
fn exclude_drops_matching_combinations_and_include_adds_blocks() {
    let plan = plan(&format!(
        "{GRID}exclude:\n  - {{target: T2, k: [5, 20]}}\ninclude:\n  - {{target: T3, method: ndhtl, k: 50}}\n"
    ));
    let ndhtl_t2: Vec<usize> = plan
        .finetunes
        .iter()
        .filter(|f| f.config.task == "T2" && f.config.method == Method::Ndhtl)
        .map(|f| f.config.k)
        .collect();
    assert_eq!(ndhtl_t2, vec![10, 10]);
    let t3: Vec<(usize, u64)> = plan
        .finetunes
        .iter()
        .filter(|f| f.config.task == "T3")
        .map(|f| (f.config.k, f.config.seed))
        .collect();
    // The include keeps the other axes (both seeds) and replaces target, method and K.
    assert_eq!(t3, vec![(50, 0), (50, 1)]);
    assert_eq!(plan.finetunes.len(), 16 - 4 + 2);
}

#[test]
fn ids_do_not_depend_on_key_order_or_runs() {
    let a = plan("name: a\nfinetune: {method: ndhtl, k: [5, 10], eta: 0.2}\n");
    let b = plan("name: b\nfinetune:\n  eta: 0.2\n  k: [5, 10]\n  method: ndhtl\n");
    let canon = |plan: &SweepPlan| {
        plan.finetunes
            .iter()
            .map(|f| crate::ids::content_hash(&f.config))
            .collect::<Vec<_>>()
    };
    assert_eq!(canon(&a), canon(&b));
    assert_eq!(
        canon(&a),
        canon(&plan(
            "name: a\nfinetune: {method: ndhtl, k: [5, 10], eta: 0.2}\n"
        ))
    );
}

#[test]
fn random_search_is_deterministic_and_within_bounds() {
    let text = "name: s\nsamples: 6\nsample_seed: 3\nfinetune:\n  target: [T1, T2]\n  method: ndhtl\n  lr: {log_uniform: [1e-5, 1e-2]}\n  k: {uniform: [3, 30]}\n  clip: {choice: [0.1, 0.5]}\n";
    let first = plan(text);
    assert_eq!(first.finetunes.len(), 12);
    assert_eq!(first, plan(text));
    for f in &first.finetunes {
        assert!((1e-5..=1e-2).contains(&f.config.lr), "{}", f.config.lr);
        assert!((3..=30).contains(&f.config.k));
        assert!([0.1f32, 0.5].contains(&f.config.plastic.clip));
    }
    // Each draw runs on both targets.
    assert_eq!(first.finetunes[0].config.lr, first.finetunes[1].config.lr);
    assert_ne!(first.finetunes[0].config.lr, first.finetunes[2].config.lr);
    let reseeded = plan(&text.replace("sample_seed: 3", "sample_seed: 4"));
    assert_ne!(
        first.finetunes[0].config.lr,
        reseeded.finetunes[0].config.lr
    );
}

#[test]
fn unknown_keys_name_their_line_and_column() {
    let (line, column, message) = error("name: x\nfinetune:\n  method: ndhtl\n  kk: 3\n");
    assert_eq!((line, column), (4, 3));
    assert!(message.contains("unknown field `kk`"), "{message}");
    assert!(message.contains("expected one of"), "{message}");
    let (line, _, message) = error("name: x\nfinetune: {}\nsauce: {epochs: 1}\n");
    assert_eq!(line, 3);
    assert!(message.contains("unknown field `sauce`"), "{message}");
}

#[test]
fn out_of_range_values_name_their_line_column_and_rule() {
    let (line, column, message) = error("name: x\nfinetune:\n  k: [5, 0]\n");
    // serde_yaml points at the list that holds the bad value.
    assert_eq!((line, column), (3, 6));
    assert!(
        message.contains("finetune.k") && message.contains("at least 1"),
        "{message}"
    );
    let (line, _, message) = error("name: x\nfinetune:\n  lr: -0.1\n");
    assert_eq!(line, 3);
    assert!(message.contains("above 0"), "{message}");
    let (line, _, message) = error("name: x\nfinetune:\n  clip: -1\n");
    assert_eq!(line, 3);
    assert!(message.contains("≥ 0"), "{message}");
    let (line, _, message) = error("name: x\nfinetune:\n  momentum: 1.5\n");
    assert_eq!(line, 3);
    assert!(message.contains("[0, 1)"), "{message}");
    let (_, _, message) = error("name: x\nfinetune:\n  method: sgd\n");
    assert!(message.contains("unknown variant `sgd`"), "{message}");
    let (line, _, message) = error("name: x\nfinetune:\n  k: five\n");
    assert_eq!(line, 3);
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn malformed_parameter_forms_are_explained() {
    let (line, _, message) =
        error("name: x\nfinetune:\n  eta: {range: {from: 0.2, to: 0.1, step: 0.05}}\n");
    assert_eq!(line, 3);
    assert!(message.contains("`to` must be ≥ `from`"), "{message}");
    let (_, _, message) = error("name: x\nfinetune:\n  eta: {gaussian: [0, 1]}\n");
    assert!(
        message.contains("unknown parameter form `gaussian`"),
        "{message}"
    );
    let (_, _, message) = error("name: x\nfinetune:\n  k: []\n");
    assert!(message.contains("empty list"), "{message}");
    let (_, _, message) = error("name: x\nfinetune:\n  lr: {log_uniform: [0, 1]}\nsamples: 2\n");
    assert!(message.contains("above 0"), "{message}");
}

#[test]
fn semantic_errors_are_located() {
    let (line, column, message) =
        error("name: x\nfinetune:\n  method: ndhtl\n  lr: {uniform: [0.001, 0.01]}\n");
    assert_eq!((line, column), (2, 1));
    assert!(message.contains("samples"), "{message}");
    let (line, _, message) = error("name: x\nsamples: 3\nfinetune: {k: 3}\n");
    assert_eq!(line, 2);
    assert!(message.contains("nothing to sample"), "{message}");
    let (line, _, message) = error("name: x\nfinetune:\n  targets: [T1, T11]\n");
    assert_eq!(line, 3);
    assert!(message.contains("unknown task `T11`"), "{message}");
    assert!(
        message.ends_with("may also be `all` (T1..T10)"),
        "{message}"
    );
    // A source task is one task: `all` is not offered there.
    let (line, _, message) = error("name: x\nsource:\n  task: T11\nfinetune: {}\n");
    assert_eq!(line, 3);
    assert!(message.contains("unknown task `T11`"), "{message}");
    assert!(!message.contains("`all`"), "{message}");
    // Targets and source tasks are checked against the class tables, not only their syntax.
    let (line, _, message) = error("name: x\nfinetune:\n  target: \"cifar100:apple,aple\"\n");
    assert_eq!(line, 3);
    assert!(
        message
            .contains("finetune.target: task `cifar100:apple,aple`: unknown cifar100 class `aple`"),
        "{message}"
    );
    let (line, _, message) = error(
        "name: x\nsource:\n  epochs: 2\n  task: [cifar10, \"cifar10:super=fish\"]\nfinetune: {}\n",
    );
    assert_eq!(line, 4);
    assert!(
        message.contains(
            "source.task: task `cifar10:super=fish`: superclasses only exist in CIFAR-100"
        ),
        "{message}"
    );
    let (line, column, message) =
        error("name: x\nfinetune: {k: 3}\nexclude:\n  - {k: 3}\n  - {}\n");
    assert_eq!((line, column), (5, 3));
    assert!(message.contains("exclude every job"), "{message}");
    let (line, _, message) = error("name: x\ndata: {}\nfinetune: {}\n");
    assert_eq!(line, 2);
    assert!(message.contains("give one of"), "{message}");
    let (line, _, message) = error("name: x\nsource:\n  lr_milestones: [0.5, 2]\nfinetune: {}\n");
    assert_eq!(line, 3);
    assert!(message.contains("fractions"), "{message}");
}

#[test]
fn useless_choices_warn_with_a_location() {
    let plan = plan("name: w\nfinetune:\n  method: [stl, ndhtl]\n  k: [1, 2, 10]\n");
    let messages: Vec<String> = plan.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(plan.warnings.len(), 2, "{messages:?}");
    assert!(
        messages
            .iter()
            .all(|m| m.starts_with("test.yaml:4:3: warning: k = ")),
        "{messages:?}"
    );
    assert!(messages[0].contains("modulator"));
    assert_eq!(plan.warnings[0].jobs, 1);
}

#[test]
fn each_warning_points_at_its_own_key() {
    let eta_plan =
        plan("name: w\nfinetune:\n  targets: [T1, T2]\n  clip: [0, 0.5]\n  eta: [0.1, -1]\n");
    let messages: Vec<String> = eta_plan.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("test.yaml:4:3: warning: clip = 0"),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("test.yaml:5:3: warning: eta = -1"),
        "{messages:?}"
    );
    assert_eq!(eta_plan.warnings[1].jobs, 4, "two targets, two clips");
}

#[test]
fn oversized_sweeps_are_refused_before_expansion() {
    // 10 targets × 2 methods × 1000 seeds × 1000 K: 2e7 jobs, refused from the axis lengths.
    let text = "name: big\nfinetune:\n  target: all\n  method: [stl, ndhtl]\n  seed: {range: {from: 0, to: 999, step: 1}}\n  k: {range: {from: 1, to: 1000, step: 1}}\n";
    let definition = parse(text).unwrap();
    match definition.expand(DEFAULT_MAX_JOBS) {
        Err(SweepError::TooManyJobs { count, limit, .. }) => {
            assert_eq!(count, 1 + 10 * 2 * 1000 * 1000);
            assert_eq!(limit, 100_000);
        }
        other => panic!("{other:?}"),
    }
    let limited = "name: l\nmax_jobs: 5\nfinetune: {k: [3, 4, 5, 6, 7]}\n";
    assert!(matches!(
        parse(limited).unwrap().expand(DEFAULT_MAX_JOBS),
        Err(SweepError::TooManyJobs {
            count: 6,
            limit: 5,
            ..
        })
    ));
    let huge = "#".repeat(MAX_SWEEP_FILE_BYTES + 1);
    assert!(matches!(parse(&huge), Err(SweepError::FileTooLarge { .. })));
}

#[test]
fn data_and_sources_enter_the_configurations() {
    let plan = plan(
        "name: d\ndata: {synthetic: {cifar10_train_per_class: 20}}\nsource: {epochs: [2, 3], lr: 0.02}\nfinetune: {target: T1, method: stl}\n",
    );
    assert_eq!(plan.sources.len(), 2);
    assert_eq!(plan.finetunes.len(), 2);
    assert_eq!(plan.finetunes[1].source, 1);
    match plan.sources[0].dataset {
        crate::dataset::Dataset::Synthetic(settings) => {
            assert_eq!(settings.cifar10_train_per_class, 20);
            assert_eq!(settings.cifar100_train_per_class, 60);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.finetunes[0].config.dataset, plan.sources[0].dataset);
    // Real data keeps the configuration JSON (and so the ids) unchanged.
    let real = super::tests::plan("name: r\nfinetune: {target: T1}\n");
    assert!(
        !serde_json::to_string(&real.finetunes[0].config)
            .unwrap()
            .contains("dataset")
    );
}

fn values_yaml(values: &[u32]) -> String {
    format!(
        "[{}]",
        values
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// NDHTL grids: the job count is the product of the axes minus the excluded combinations,
    /// and no two jobs are the same.
    #[test]
    fn ndhtl_job_count_is_the_product_minus_exclusions(
        targets in proptest::sample::subsequence(vec!["T1", "T2", "T3", "T4"], 1..=4),
        seeds in proptest::collection::btree_set(0u32..50, 1..4),
        ks in proptest::collection::btree_set(1u32..40, 1..4),
        clips in proptest::collection::btree_set(0u32..20, 1..3),
        excluded_k in 1u32..40,
        excluded_target in proptest::sample::select(vec!["T1", "T2", "T3", "T4"]),
    ) {
        let seeds: Vec<u32> = seeds.into_iter().collect();
        let ks: Vec<u32> = ks.into_iter().collect();
        let clips: Vec<u32> = clips.into_iter().collect();
        let text = format!(
            "name: p\nfinetune:\n  method: ndhtl\n  target: [{}]\n  seed: {}\n  k: {}\n  clip: [{}]\nexclude:\n  - {{target: {excluded_target}, k: {excluded_k}}}\n",
            targets.join(", "),
            values_yaml(&seeds),
            values_yaml(&ks),
            clips.iter().map(|c| format!("{}", *c as f64 / 10.0)).collect::<Vec<_>>().join(", "),
        );
        let plan = plan(&text);
        let excluded = if targets.contains(&excluded_target) && ks.contains(&excluded_k) {
            seeds.len() * clips.len()
        } else {
            0
        };
        let product = targets.len() * seeds.len() * ks.len() * clips.len();
        prop_assert_eq!(plan.finetunes.len(), product - excluded);
        let distinct: HashSet<String> = plan
            .finetunes
            .iter()
            .map(|f| serde_json::to_string(&f.config).unwrap())
            .collect();
        prop_assert_eq!(distinct.len(), plan.finetunes.len());
        prop_assert!(plan.finetunes.iter().all(|f| !(f.config.task == excluded_target && f.config.k == excluded_k as usize)));
    }

    /// With STL in the grid, STL jobs count once per (target, seed) whatever the NDHTL axes.
    #[test]
    fn stl_counts_once_per_target_and_seed(
        targets in 1usize..4,
        seeds in 1usize..4,
        ks in 1usize..5,
        etas in 1usize..4,
    ) {
        let list = |n: usize, scale: f64| format!(
            "[{}]",
            (1..=n).map(|i| format!("{}", i as f64 * scale)).collect::<Vec<_>>().join(", ")
        );
        let text = format!(
            "name: p\nfinetune:\n  method: [stl, ndhtl]\n  target: [{}]\n  seed: {}\n  k: {}\n  eta: {}\n",
            (1..=targets).map(|t| format!("T{t}")).collect::<Vec<_>>().join(", "),
            list(seeds, 1.0),
            list(ks, 3.0),
            list(etas, 0.05),
        );
        let plan = plan(&text);
        prop_assert_eq!(plan.finetunes.len(), targets * seeds * (1 + ks * etas));
        prop_assert!(plan.job_count() as u128 <= parse(&text).unwrap().job_bound());
    }
}
