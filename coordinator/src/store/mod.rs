//! Durable state: an embedded SQLite database (WAL) with a schema version and migrations, and a
//! content-addressed artifact folder beside it.
//!
//! The event loop applies each call's [`Change`]s in one transaction before it answers, so
//! whatever a client or agent was told survives a crash; [`Store::load`] gives back what
//! [`ClusterState::restore`](crate::state::ClusterState::restore) needs.

mod artifacts;
mod lock;
mod migrations;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

pub use artifacts::{ArtifactError, ArtifactStore};
pub use lock::StateLock;

use crate::datasets::StoredDataset;
use crate::domain::{Agent, Job, Sweep};
use crate::state::Change;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "state database {path} has schema version {found}, newer than this ndhtl's {supported}; it was written by a newer ndhtl: upgrade this one (coordinator or reader) to read or serve it"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "state database {path} has schema version {found}, older than this ndhtl's {supported}; a reader does not migrate it: read it with the ndhtl that wrote it, or let a coordinator of this version open the folder first"
    )]
    SchemaTooOld {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "{state_dir} is in use by another coordinator ({holder}); stop it first, or give this one another state folder"
    )]
    Locked { state_dir: PathBuf, holder: String },
    #[error(
        "{state_dir} holds no coordinator state (no {file}): give the folder a coordinator ran with (its --state-dir; `ndhtl run` uses ndhtl-run)",
        file = Store::FILE_NAME
    )]
    NoState { state_dir: PathBuf },
    #[error("state database {path}: row `{key}` of {table} is not valid: {source}")]
    CorruptRow {
        path: PathBuf,
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Everything persisted, read back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub jobs: Vec<Job>,
    pub sweeps: Vec<Sweep>,
    pub agents: Vec<Agent>,
    pub datasets: Vec<StoredDataset>,
}

/// One stored metric record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMetrics {
    pub attempt: u32,
    pub lifetime: u32,
    pub metrics_json: String,
}

/// The coordinator's database.
pub struct Store {
    path: PathBuf,
    connection: Connection,
    /// Held by the coordinator's store ([`Store::open_exclusive`]); dropped after the
    /// connection is closed.
    lock: Option<StateLock>,
}

impl Store {
    pub const FILE_NAME: &'static str = "ndhtl.sqlite3";

    /// Opens (or creates) `state_dir/ndhtl.sqlite3` and brings its schema up to date.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(Self::FILE_NAME);
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut connection = Connection::open(&path).map_err(sqlite)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 5000;",
            )
            .map_err(sqlite)?;
        migrations::migrate(&mut connection, &path)?;
        Ok(Store {
            path,
            connection,
            lock: None,
        })
    }

    /// [`Store::open`] for a coordinator: first takes the folder's [`StateLock`], so a second
    /// coordinator over the same folder is refused ([`StoreError::Locked`]) instead of leasing
    /// the same jobs. The lock is released when the store is dropped.
    pub fn open_exclusive(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let lock = StateLock::acquire(state_dir)?;
        let mut store = Store::open(state_dir)?;
        store.lock = Some(lock);
        Ok(store)
    }

    /// Opens a state folder a coordinator wrote, for reading (`ndhtl report --state-dir`,
    /// `ndhtl plan --state-dir`), beside a running coordinator or after it. A reader changes
    /// nothing: a folder without a database is [`StoreError::NoState`] and stays as it was; a
    /// database of another schema version is refused ([`StoreError::SchemaTooNew`],
    /// [`StoreError::SchemaTooOld`]) rather than migrated, since a migration under the
    /// coordinator that owns the folder would stop it from starting again. Takes no lock.
    pub fn open_for_reading(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(Self::FILE_NAME);
        if !path.is_file() {
            return Err(StoreError::NoState {
                state_dir: state_dir.to_path_buf(),
            });
        }
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let connection = Connection::open(&path).map_err(sqlite)?;
        connection
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(sqlite)?;
        let store = Store {
            path: path.clone(),
            connection,
            lock: None,
        };
        let found = store.schema_version()?;
        let supported = migrations::SCHEMA_VERSION;
        if found > supported {
            return Err(StoreError::SchemaTooNew {
                path,
                found,
                supported,
            });
        }
        if found < supported {
            return Err(StoreError::SchemaTooOld {
                path,
                found,
                supported,
            });
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(self.sqlite())
    }

    /// Writes one call's changes atomically. Metric records are keyed by (job, attempt,
    /// lifetime) and written once: a repeated record is ignored.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let transaction = self.connection.transaction().map_err(sqlite)?;
        for change in changes {
            match change {
                Change::Job(job) => {
                    transaction
                        .execute(
                            "INSERT INTO jobs (id, state, body) VALUES (?1, ?2, ?3)
                             ON CONFLICT(id) DO UPDATE SET state = excluded.state, body = excluded.body",
                            params![job.spec.id, job.state.name(), to_json(job)],
                        )
                        .map_err(sqlite)?;
                }
                Change::Sweep(sweep) => {
                    transaction
                        .execute(
                            "INSERT INTO sweeps (id, body) VALUES (?1, ?2)
                             ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                            params![sweep.id, to_json(sweep)],
                        )
                        .map_err(sqlite)?;
                }
                Change::Agent(agent) => {
                    transaction
                        .execute(
                            "INSERT INTO agents (id, body) VALUES (?1, ?2)
                             ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                            params![agent.id, to_json(agent)],
                        )
                        .map_err(sqlite)?;
                }
                Change::Metrics(record) => {
                    transaction
                        .execute(
                            "INSERT OR IGNORE INTO metrics (job_id, attempt, lifetime, body) VALUES (?1, ?2, ?3, ?4)",
                            params![record.job, record.attempt, record.lifetime, record.metrics_json],
                        )
                        .map_err(sqlite)?;
                }
                Change::Summary {
                    job,
                    attempt,
                    summary_json,
                } => {
                    transaction
                        .execute(
                            "INSERT INTO summaries (job_id, attempt, body) VALUES (?1, ?2, ?3)
                             ON CONFLICT(job_id) DO UPDATE SET attempt = excluded.attempt, body = excluded.body",
                            params![job, attempt, summary_json],
                        )
                        .map_err(sqlite)?;
                }
                Change::Dataset(stored) => {
                    transaction
                        .execute(
                            "INSERT INTO datasets (id, body) VALUES (?1, ?2)
                             ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                            params![stored.dataset.as_str(), to_json(stored)],
                        )
                        .map_err(sqlite)?;
                }
            }
        }
        transaction.commit().map_err(sqlite)
    }

    fn load_table<T: serde::de::DeserializeOwned>(
        &self,
        table: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let mut statement = self
            .connection
            .prepare(&format!("SELECT id, body FROM {table} ORDER BY id"))
            .map_err(self.sqlite())?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(self.sqlite())?;
        let mut values = Vec::new();
        for row in rows {
            let (key, body) = row.map_err(self.sqlite())?;
            let value = serde_json::from_str(&body).map_err(|source| StoreError::CorruptRow {
                path: self.path.clone(),
                table,
                key,
                source,
            })?;
            values.push(value);
        }
        Ok(values)
    }

    /// Everything the state machine needs to carry on.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            jobs: self.load_table("jobs")?,
            sweeps: self.load_table("sweeps")?,
            agents: self.load_table("agents")?,
            datasets: self.load_table("datasets")?,
        })
    }

    /// A job's metric records in lifetime order.
    pub fn metrics_of(&self, job_id: &str) -> Result<Vec<StoredMetrics>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT attempt, lifetime, body FROM metrics WHERE job_id = ?1 ORDER BY lifetime, attempt")
            .map_err(self.sqlite())?;
        let rows = statement
            .query_map([job_id], |row| {
                Ok(StoredMetrics {
                    attempt: row.get(0)?,
                    lifetime: row.get(1)?,
                    metrics_json: row.get(2)?,
                })
            })
            .map_err(self.sqlite())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sqlite())
    }

    /// A job's final summary (attempt, JSON), if it succeeded.
    pub fn summary_of(&self, job_id: &str) -> Result<Option<(u32, String)>, StoreError> {
        self.connection
            .query_row(
                "SELECT attempt, body FROM summaries WHERE job_id = ?1",
                [job_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(self.sqlite())
    }

    /// Runs `read` in one read transaction: all its queries see the database as of one moment,
    /// though a coordinator commits beside this reader meanwhile (WAL lets it write on). Meant
    /// for readers of a live folder ([`Store::open_for_reading`]); it writes nothing.
    pub fn read_at_one_moment<T, E: From<StoreError>>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        // Rolled back when dropped: there is nothing to commit.
        let _transaction = self
            .connection
            .unchecked_transaction()
            .map_err(self.sqlite())?;
        read(self)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("domain types serialise")
}

#[cfg(test)]
mod tests;
