//! One coordinator per state folder. Two coordinators over the same database would lease the
//! same jobs twice and each trust its own view of what is running, so the one that opens a
//! folder holds an exclusive lock on `coordinator.lock` in it until its store is dropped.
//!
//! The lock is the operating system's (`flock`): it goes with the process, so a coordinator
//! that was killed leaves no stale lock behind, and a restart takes it again at once. Readers
//! that only look at a folder ([`super::Store::open`], `ndhtl plan --state-dir`) take none.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// The exclusive right to run a coordinator over a state folder, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    // Held open: closing the file releases the lock.
    _file: File,
}

impl StateLock {
    pub const FILE_NAME: &'static str = "coordinator.lock";

    /// Takes the lock of `state_dir`, or says who holds it. Never waits.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, StoreError> {
        let path = state_dir.join(Self::FILE_NAME);
        let io_error = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StoreError::Locked {
                    state_dir: state_dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
        // Who holds it, for the next one's error message.
        file.set_len(0).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        writeln!(file, "{}", holder_description()).map_err(io_error)?;
        file.flush().map_err(io_error)?;
        Ok(StateLock { path, _file: file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `pid 1234 on host-a`: enough to find the other coordinator.
fn holder_description() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "this host".to_string());
    format!("pid {} on {host}", std::process::id())
}
