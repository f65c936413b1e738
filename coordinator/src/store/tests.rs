//! The store: round trips, idempotent metrics, migrations, and a restart driven through the
//! state machine exactly as the event loop drives it.

use super::*;
use crate::domain::{AgentCapabilities, DeviceKind, JobKind, JobSpec, JobState, Resources};
use crate::state::{ClusterState, Timing};

fn spec(id: &str) -> JobSpec {
    JobSpec {
        id: id.into(),
        kind: JobKind::Finetune,
        config_json: "{}".into(),
        depends_on: None,
        resources: Resources::ANY,
    }
}

fn caps() -> AgentCapabilities {
    AgentCapabilities {
        backend: "flex".into(),
        devices: vec![DeviceKind::Cpu],
        slots: 1,
        version: "0.1.0".into(),
        hostname: "h".into(),
    }
}

#[test]
fn state_survives_a_restart_through_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let timing = Timing::default();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::SCHEMA_VERSION);
    let mut state = ClusterState::new(timing);
    let (_, changes) = state
        .submit_sweep("s".into(), "sweep".into(), 1, vec![spec("a"), spec("b")])
        .unwrap();
    store.apply(&changes).unwrap();
    let (agent, _, changes) = state.register_agent(caps(), "0.1.0", None, &[], 0).unwrap();
    store.apply(&changes).unwrap();
    let (grant, changes) = state.lease(&agent, 0, 0).unwrap();
    store.apply(&changes).unwrap();
    let job = grant.unwrap().spec.id;
    let (_, changes) = state
        .report_metrics(
            &agent,
            &job,
            1,
            1,
            r#"{"val_top1":50.0}"#.into(),
            Some("c".repeat(64)),
        )
        .unwrap();
    store.apply(&changes).unwrap();
    // The same record again (a retried RPC): acknowledged by the state, ignored by the store.
    let (new, changes) = state
        .report_metrics(&agent, &job, 1, 1, r#"{"val_top1":50.0}"#.into(), None)
        .unwrap();
    assert!(!new && changes.is_empty());
    drop(store); // the coordinator is killed

    let store = Store::open(dir.path()).unwrap();
    let snapshot = store.load().unwrap();
    let restored = ClusterState::restore(
        timing,
        snapshot.jobs.clone(),
        snapshot.sweeps.clone(),
        snapshot.agents.clone(),
        10,
    );
    let original: Vec<_> = state.jobs().cloned().collect();
    let mut reloaded: Vec<_> = restored.jobs().cloned().collect();
    // Restore only grants leases a fresh grace period; everything else is identical.
    for job in &mut reloaded {
        if let JobState::Leased(lease) = &mut job.state {
            lease.deadline_ms = timing.lease_timeout_ms;
        }
    }
    assert_eq!(reloaded, original);
    assert_eq!(snapshot.sweeps[0].priority, 1);
    assert_eq!(snapshot.agents[0].id, agent);
    let metrics = store.metrics_of(&job).unwrap();
    assert_eq!(
        metrics,
        vec![StoredMetrics {
            attempt: 1,
            lifetime: 1,
            metrics_json: r#"{"val_top1":50.0}"#.into()
        }]
    );
}

#[test]
fn metrics_rows_are_written_once_per_job_attempt_and_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut state = ClusterState::new(Timing::default());
    let (_, changes) = state
        .submit_sweep("s".into(), "s".into(), 0, vec![spec("a")])
        .unwrap();
    store.apply(&changes).unwrap();
    let record = |body: &str| {
        Change::Metrics(crate::state::MetricsRecord {
            job: "a".into(),
            attempt: 1,
            lifetime: 3,
            metrics_json: body.into(),
        })
    };
    store.apply(&[record("first")]).unwrap();
    store.apply(&[record("second")]).unwrap();
    let stored = store.metrics_of("a").unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].metrics_json, "first",
        "the first write wins; duplicates are ignored"
    );
    store
        .apply(&[Change::Summary {
            job: "a".into(),
            attempt: 2,
            summary_json: "{}".into(),
        }])
        .unwrap();
    assert_eq!(store.summary_of("a").unwrap(), Some((2, "{}".into())));
    assert_eq!(store.summary_of("b").unwrap(), None);
}

#[test]
fn a_database_from_a_newer_coordinator_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let connection = rusqlite::Connection::open(dir.path().join(Store::FILE_NAME)).unwrap();
    connection
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    drop(connection);
    let error = Store::open(dir.path()).err().expect("refused");
    assert!(
        matches!(error, StoreError::SchemaTooNew { found: 99, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("written by a newer ndhtl"),
        "{error}"
    );
}

#[test]
fn a_state_folder_has_one_coordinator_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open_exclusive(dir.path()).unwrap();
    let lock_file = dir.path().join(StateLock::FILE_NAME);
    let holder = std::fs::read_to_string(&lock_file).unwrap();
    assert!(
        holder.starts_with(&format!("pid {} on ", std::process::id())),
        "{holder}"
    );

    // A second coordinator (another open of the file, as another process makes) is refused,
    // and told who holds the folder.
    let error = Store::open_exclusive(dir.path()).err().expect("refused");
    match &error {
        StoreError::Locked { state_dir, holder } => {
            assert_eq!(state_dir, dir.path());
            assert_eq!(holder, holder.trim());
            assert!(holder.starts_with("pid "), "{holder}");
        }
        other => panic!("expected Locked, got {other}"),
    }
    assert!(
        error.to_string().contains("in use by another coordinator"),
        "{error}"
    );
    // Readers take no lock, and the refused attempt left the holder's note intact.
    Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(std::fs::read_to_string(&lock_file).unwrap(), holder);

    // Dropped (a stop, or the process's death), the folder is free at once.
    drop(first);
    let second = Store::open_exclusive(dir.path()).unwrap();
    drop(second);
}

#[test]
fn a_reader_opens_only_a_current_folder_a_coordinator_wrote_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-state");
    for folder in [missing.as_path(), dir.path()] {
        let error = Store::open_for_reading(folder)
            .err()
            .expect("no state there");
        match &error {
            StoreError::NoState { state_dir } => assert_eq!(state_dir, folder),
            other => panic!("expected NoState, got {other}"),
        }
        assert!(
            error.to_string().contains("--state-dir"),
            "says what to give instead: {error}"
        );
    }
    assert!(!missing.exists(), "the missing folder was created");
    assert!(
        !dir.path().join(Store::FILE_NAME).exists(),
        "a database was created"
    );

    // Beside the coordinator that holds the folder, a reader sees what it stored.
    let mut coordinator = Store::open_exclusive(dir.path()).unwrap();
    let (_, changes) = ClusterState::new(Timing::default())
        .submit_sweep("s".into(), "sweep".into(), 1, vec![spec("j1")])
        .unwrap();
    coordinator.apply(&changes).unwrap();
    let reader = Store::open_for_reading(dir.path()).unwrap();
    let jobs = reader.load().unwrap().jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].spec.id, "j1");
    drop((reader, coordinator));

    // A database of another schema version is refused, and left at its version: migrating an
    // older one under its coordinator would keep that coordinator from starting again.
    let database = dir.path().join(Store::FILE_NAME);
    let user_version = || -> i64 {
        rusqlite::Connection::open(&database)
            .unwrap()
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    };
    let set_user_version = |version: i64| {
        rusqlite::Connection::open(&database)
            .unwrap()
            .execute_batch(&format!("PRAGMA user_version = {version}"))
            .unwrap()
    };
    set_user_version(migrations::SCHEMA_VERSION - 1);
    let error = Store::open_for_reading(dir.path()).err().expect("older");
    assert!(
        matches!(error, StoreError::SchemaTooOld { found, .. } if found == migrations::SCHEMA_VERSION - 1),
        "{error}"
    );
    assert_eq!(
        user_version(),
        migrations::SCHEMA_VERSION - 1,
        "migrated by a reader"
    );
    set_user_version(99);
    let error = Store::open_for_reading(dir.path()).err().expect("newer");
    assert!(
        matches!(error, StoreError::SchemaTooNew { found: 99, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("upgrade this one (coordinator or reader)"),
        "{error}"
    );
    assert_eq!(user_version(), 99);
}

#[test]
fn a_reader_sees_one_moment_while_the_coordinator_commits_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Store::open_exclusive(dir.path()).unwrap();
    let mut state = ClusterState::new(Timing::default());
    let (_, changes) = state
        .submit_sweep("s".into(), "sweep".into(), 1, vec![spec("a")])
        .unwrap();
    coordinator.apply(&changes).unwrap();
    let reader = Store::open_for_reading(dir.path()).unwrap();
    let (first_read, second_read) = reader
        .read_at_one_moment(|reader| -> Result<_, StoreError> {
            let first_read = reader.load()?.jobs.len();
            // The coordinator commits a second sweep's job between the reader's two reads.
            let (_, changes) = state
                .submit_sweep("t".into(), "other".into(), 1, vec![spec("b")])
                .unwrap();
            coordinator.apply(&changes)?;
            Ok((first_read, reader.load()?.jobs.len()))
        })
        .unwrap();
    assert_eq!(
        (first_read, second_read),
        (1, 1),
        "both reads see one moment"
    );
    assert_eq!(
        reader.load().unwrap().jobs.len(),
        2,
        "the next read sees the commit"
    );
}

#[test]
fn a_corrupt_row_names_its_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let connection = rusqlite::Connection::open(dir.path().join(Store::FILE_NAME)).unwrap();
    connection
        .execute(
            "INSERT INTO sweeps (id, body) VALUES ('broken', '{not json')",
            [],
        )
        .unwrap();
    drop(connection);
    let error = Store::open(dir.path()).unwrap().load().unwrap_err();
    assert!(
        matches!(&error, StoreError::CorruptRow { table: "sweeps", key, .. } if key == "broken"),
        "{error}"
    );
}

#[test]
fn artifacts_are_content_addressed_and_verified() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let artifacts = ArtifactStore::open(dir.path()).unwrap();
    let bytes = b"a checkpoint".to_vec();
    let hash = hex::encode(Sha256::digest(&bytes));
    assert_eq!(artifacts.put(&hash, &mut &bytes[..]).unwrap(), (12, false));
    assert_eq!(
        artifacts.put(&hash, &mut &bytes[..]).unwrap(),
        (12, true),
        "stored once"
    );
    assert!(artifacts.contains(&hash));
    let (mut file, size) = artifacts.open_artifact(&hash).unwrap();
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut read).unwrap();
    assert_eq!((read, size), (bytes.clone(), 12));

    let wrong = "0".repeat(64);
    assert!(matches!(
        artifacts.put(&wrong, &mut &bytes[..]),
        Err(ArtifactError::HashMismatch { .. })
    ));
    assert!(
        !artifacts.contains(&wrong),
        "a mismatching upload leaves nothing behind"
    );
    assert!(matches!(
        artifacts.put("../etc/passwd", &mut &bytes[..]),
        Err(ArtifactError::InvalidHash(_))
    ));
    assert!(matches!(
        artifacts.open_artifact(&wrong),
        Err(ArtifactError::NotFound(_))
    ));
}

#[test]
fn a_served_dataset_survives_a_restart_and_a_newer_fetch_replaces_it() {
    use crate::datasets::StoredDataset;
    use ndhtl_core::dataset::DatasetKind;
    let dir = tempfile::tempdir().unwrap();
    let stored = |artifact: &str| StoredDataset {
        dataset: DatasetKind::Cifar100,
        file_name: "cifar-100-binary.tar.gz".into(),
        artifact: artifact.repeat(64),
        bytes: 168_513_733,
        md5: "03b5dce01913d631647c71ecec9e9cb8".into(),
        origin: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz".into(),
    };
    let mut store = Store::open(dir.path()).unwrap();
    store.apply(&[Change::Dataset(stored("a"))]).unwrap();
    store.apply(&[Change::Dataset(stored("b"))]).unwrap();
    drop(store);
    let snapshot = Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(snapshot.datasets, vec![stored("b")]);
}
