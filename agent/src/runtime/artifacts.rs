//! Artifacts on the agent: folders (checkpoints, source models) packed as tar, addressed by the
//! SHA-256 of the tar, uploaded and downloaded in chunks, and cached locally by hash.

use std::path::{Path, PathBuf};

use ndhtl_proto::v1;
use ndhtl_proto::v1::agent_service_client::AgentServiceClient;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// Bytes per uploaded chunk.
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("artifact {hash}: {status}")]
    Rpc { hash: String, status: tonic::Status },
    #[error("artifact {expected} arrived with hash {actual}")]
    Corrupt { expected: String, actual: String },
}

impl ArtifactError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ArtifactError::Rpc { status, .. } if status.code() == tonic::Code::InvalidArgument)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Packs a folder's files (sorted, fixed metadata) into tar bytes, so equal folders give equal
/// bytes and hashes.
pub fn pack_dir(dir: &Path) -> Result<(String, Vec<u8>), ArtifactError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let mut builder = tar::Builder::new(Vec::new());
    for path in entries {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        let name = path.file_name().expect("files have names");
        builder
            .append_data(&mut header, name, &bytes[..])
            .map_err(io(&path))?;
    }
    let bytes = builder.into_inner().map_err(io(dir))?;
    Ok((hex::encode(Sha256::digest(&bytes)), bytes))
}

/// Unpacks tar bytes made by [`pack_dir`] into `dir` (replaced).
pub fn unpack_into(bytes: &[u8], dir: &Path) -> Result<(), ArtifactError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().map_err(io(dir))? {
        let mut entry = entry.map_err(io(dir))?;
        // unpack_in refuses paths that leave `dir`.
        entry.unpack_in(dir).map_err(io(dir))?;
    }
    Ok(())
}

pub async fn upload(
    client: &mut AgentServiceClient<Channel>,
    hash: &str,
    bytes: Vec<u8>,
) -> Result<(), ArtifactError> {
    let total = bytes.len() as u64;
    let hash_owned = hash.to_string();
    let chunks: Vec<v1::ArtifactChunk> = if bytes.is_empty() {
        vec![v1::ArtifactChunk {
            sha256: hash_owned.clone(),
            total_bytes: 0,
            offset: 0,
            data: Vec::new(),
        }]
    } else {
        bytes
            .chunks(CHUNK_BYTES)
            .enumerate()
            .map(|(i, data)| v1::ArtifactChunk {
                sha256: hash_owned.clone(),
                total_bytes: total,
                offset: (i * CHUNK_BYTES) as u64,
                data: data.to_vec(),
            })
            .collect()
    };
    client
        .upload_artifact(tokio_stream::iter(chunks))
        .await
        .map_err(|status| ArtifactError::Rpc {
            hash: hash.to_string(),
            status,
        })?;
    Ok(())
}

/// Downloads an artifact, or takes it from the local cache (`cache_dir/<hash>`), verified.
pub async fn fetch(
    client: &mut AgentServiceClient<Channel>,
    cache_dir: &Path,
    hash: &str,
) -> Result<Vec<u8>, ArtifactError> {
    let cached = cache_dir.join(hash);
    if let Ok(bytes) = std::fs::read(&cached)
        && hex::encode(Sha256::digest(&bytes)) == hash
    {
        return Ok(bytes);
    }
    let rpc = |status| ArtifactError::Rpc {
        hash: hash.to_string(),
        status,
    };
    let mut stream = client
        .download_artifact(v1::DownloadArtifactRequest {
            sha256: hash.to_string(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(rpc)? {
        bytes.extend_from_slice(&chunk.data);
    }
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != hash {
        return Err(ArtifactError::Corrupt {
            expected: hash.to_string(),
            actual,
        });
    }
    std::fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
    let temporary = cache_dir.join(format!(".{hash}.partial"));
    std::fs::write(&temporary, &bytes).map_err(io(&temporary))?;
    std::fs::rename(&temporary, &cached).map_err(io(&cached))?;
    Ok(bytes)
}

/// Downloads an artifact into the file `path` in chunks (never whole in memory), checking its
/// SHA-256; the file appears only once it is complete and correct. Returns its size.
pub async fn download_to_file(
    client: &mut AgentServiceClient<Channel>,
    hash: &str,
    path: &Path,
) -> Result<u64, ArtifactError> {
    use tokio::io::AsyncWriteExt;
    let rpc = |status| ArtifactError::Rpc {
        hash: hash.to_string(),
        status,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let partial = path.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(io(&partial))?;
    let mut stream = client
        .download_artifact(v1::DownloadArtifactRequest {
            sha256: hash.to_string(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.message().await.map_err(rpc)? {
        hasher.update(&chunk.data);
        file.write_all(&chunk.data).await.map_err(io(&partial))?;
        bytes += chunk.data.len() as u64;
    }
    file.sync_all().await.map_err(io(&partial))?;
    drop(file);
    let actual = hex::encode(hasher.finalize());
    if actual != hash {
        let _ = std::fs::remove_file(&partial);
        return Err(ArtifactError::Corrupt {
            expected: hash.to_string(),
            actual,
        });
    }
    std::fs::rename(&partial, path).map_err(io(path))?;
    Ok(bytes)
}
