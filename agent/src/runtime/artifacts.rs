//! Artifacts on the agent: folders (checkpoints, source models) packed as tar, addressed by the
//! SHA-256 of the tar, uploaded and downloaded in chunks, and cached locally by hash.

use std::path::{Path, PathBuf};

use ndhtl_proto::v1;
use ndhtl_proto::v1::agent_service_client::AgentServiceClient;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// Bytes per uploaded chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

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

/// Uploads `bytes` as the artifact `hash`, streamed in [`CHUNK_BYTES`] chunks (each chunk is
/// copied into its message only when the stream sends it).
pub async fn upload(
    client: &mut AgentServiceClient<Channel>,
    hash: &str,
    bytes: Vec<u8>,
) -> Result<(), ArtifactError> {
    let total_bytes = bytes.len() as u64;
    // An empty artifact is still one (empty) chunk: the coordinator needs its name and size.
    let chunk_count = bytes.len().div_ceil(CHUNK_BYTES).max(1);
    let sha256 = hash.to_string();
    let chunks = (0..chunk_count).map(move |index| {
        let offset = index * CHUNK_BYTES;
        let end = (offset + CHUNK_BYTES).min(bytes.len());
        v1::ArtifactChunk {
            sha256: sha256.clone(),
            total_bytes,
            offset: offset as u64,
            data: bytes[offset..end].to_vec(),
        }
    });
    client
        .upload_artifact(tokio_stream::iter(chunks))
        .await
        .map_err(|status| rpc_error(hash, status))?;
    Ok(())
}

/// The stream of an artifact's chunks.
async fn open_download(
    client: &mut AgentServiceClient<Channel>,
    hash: &str,
) -> Result<tonic::Streaming<v1::ArtifactChunk>, ArtifactError> {
    let request = v1::DownloadArtifactRequest {
        sha256: hash.to_string(),
    };
    match client.download_artifact(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(rpc_error(hash, status)),
    }
}

/// A status the coordinator answered for artifact `hash`.
fn rpc_error(hash: &str, status: tonic::Status) -> ArtifactError {
    ArtifactError::Rpc {
        hash: hash.to_string(),
        status,
    }
}

/// Downloads an artifact, or takes it from the local cache (`cache_dir/<hash>`), verified.
/// Held in memory (checkpoints and source models, tens of MB). The cache file is written once
/// the bytes hash right, and every read hashes it again, so a file torn by two slots fetching
/// the same artifact at once is downloaded again, never used.
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
    let mut stream = open_download(client, hash).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(|s| rpc_error(hash, s))? {
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
/// SHA-256; the file appears only once it is complete and correct, and a failed download leaves
/// no partial file behind. Returns its size.
pub async fn download_to_file(
    client: &mut AgentServiceClient<Channel>,
    hash: &str,
    path: &Path,
) -> Result<u64, ArtifactError> {
    use tokio::io::AsyncWriteExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut stream = open_download(client, hash).await?;
    let partial = path.with_extension("partial");
    let written = async {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(io(&partial))?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await.map_err(|s| rpc_error(hash, s))? {
            hasher.update(&chunk.data);
            file.write_all(&chunk.data).await.map_err(io(&partial))?;
            bytes += chunk.data.len() as u64;
        }
        file.sync_all().await.map_err(io(&partial))?;
        let actual = hex::encode(hasher.finalize());
        if actual != hash {
            return Err(ArtifactError::Corrupt {
                expected: hash.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }
    .await;
    match written {
        Ok(bytes) => {
            std::fs::rename(&partial, path).map_err(io(path))?;
            Ok(bytes)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}
