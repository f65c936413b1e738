//! Artifacts (checkpoints, source models) in a content-addressed folder: `ab/abcdef…` named by
//! the SHA-256 of their bytes. A write streams into a temporary file while hashing, is checked
//! against the hash it claims, then renamed into place, so a stored artifact is always whole.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("`{0}` is not a SHA-256 in hex (64 characters 0-9a-f)")]
    InvalidHash(String),
    #[error("artifact bytes hash to {actual}, not the claimed {expected}; nothing was stored")]
    HashMismatch { expected: String, actual: String },
    #[error("artifact {0} is not stored")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The artifact folder.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

fn valid_hash(hash: &str) -> Result<&str, ArtifactError> {
    if hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hash)
    } else {
        Err(ArtifactError::InvalidHash(hash.to_string()))
    }
}

impl ArtifactStore {
    pub fn open(dir: &Path) -> Result<Self, ArtifactError> {
        fs::create_dir_all(dir).map_err(|source| ArtifactError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path_of(&self, hash: &str) -> Result<PathBuf, ArtifactError> {
        let hash = valid_hash(hash)?;
        Ok(self.dir.join(&hash[..2]).join(hash))
    }

    pub fn contains(&self, hash: &str) -> bool {
        self.path_of(hash).map(|p| p.exists()).unwrap_or(false)
    }

    /// Stores the bytes of `reader` under `expected_hash`. Returns (bytes, whether it was
    /// already stored).
    pub fn put(
        &self,
        expected_hash: &str,
        reader: &mut impl Read,
    ) -> Result<(u64, bool), ArtifactError> {
        let target = self.path_of(expected_hash)?;
        let parent = target.parent().expect("hash paths have a parent");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ArtifactError::Io { path, source }
        };
        fs::create_dir_all(parent).map_err(io(parent))?;
        let temporary = parent.join(format!(".{expected_hash}.{}.partial", std::process::id()));
        let mut file = File::create(&temporary).map_err(io(&temporary))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let read = reader.read(&mut buffer).map_err(io(&temporary))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            file.write_all(&buffer[..read]).map_err(io(&temporary))?;
            total += read as u64;
        }
        file.sync_all().map_err(io(&temporary))?;
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if actual != expected_hash {
            let _ = fs::remove_file(&temporary);
            return Err(ArtifactError::HashMismatch {
                expected: expected_hash.to_string(),
                actual,
            });
        }
        if target.exists() {
            let _ = fs::remove_file(&temporary);
            return Ok((total, true));
        }
        fs::rename(&temporary, &target).map_err(io(&target))?;
        Ok((total, false))
    }

    /// Opens a stored artifact for reading.
    pub fn open_artifact(&self, hash: &str) -> Result<(File, u64), ArtifactError> {
        let path = self.path_of(hash)?;
        let file = File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ArtifactError::NotFound(hash.to_string()),
            _ => ArtifactError::Io {
                path: path.clone(),
                source,
            },
        })?;
        let size = file
            .metadata()
            .map_err(|source| ArtifactError::Io { path, source })?
            .len();
        Ok((file, size))
    }
}
