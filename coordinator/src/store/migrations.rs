//! Schema migrations. `PRAGMA user_version` holds the schema version; each migration moves it up
//! by one inside a transaction. A database newer than this code is refused, never altered.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: jobs, sweeps, agents as JSON rows (with the job state indexed), metrics keyed by
    // (job, attempt, lifetime) so a repeated report is stored once, final summaries.
    "CREATE TABLE jobs (
         id    TEXT PRIMARY KEY,
         state TEXT NOT NULL,
         body  TEXT NOT NULL
     );
     CREATE INDEX jobs_by_state ON jobs (state);
     CREATE TABLE sweeps (
         id   TEXT PRIMARY KEY,
         body TEXT NOT NULL
     );
     CREATE TABLE agents (
         id   TEXT PRIMARY KEY,
         body TEXT NOT NULL
     );
     CREATE TABLE metrics (
         job_id   TEXT    NOT NULL REFERENCES jobs (id),
         attempt  INTEGER NOT NULL,
         lifetime INTEGER NOT NULL,
         body     TEXT    NOT NULL,
         PRIMARY KEY (job_id, attempt, lifetime)
     );
     CREATE TABLE summaries (
         job_id  TEXT    PRIMARY KEY REFERENCES jobs (id),
         attempt INTEGER NOT NULL,
         body    TEXT    NOT NULL
     );",
    // 1 → 2: the CIFAR archives the coordinator serves, keyed by dataset (`cifar10`).
    "CREATE TABLE datasets (
         id   TEXT PRIMARY KEY,
         body TEXT NOT NULL
     );",
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let current: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sqlite)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let transaction = connection.transaction().map_err(sqlite)?;
        transaction.execute_batch(sql).map_err(sqlite)?;
        transaction
            .execute_batch(&format!("PRAGMA user_version = {}", version + 1))
            .map_err(sqlite)?;
        transaction.commit().map_err(sqlite)?;
        tracing::info!(path = %path.display(), version = version + 1, "state database migrated");
    }
    Ok(())
}
