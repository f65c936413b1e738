//! Artifacts between an agent and a real coordinator over gRPC on 127.0.0.1: uploads and
//! downloads of every size around the chunk boundary come back byte for byte, the local cache
//! is used when it is right and refetched when it is not, and an unknown artifact is a typed,
//! fatal-or-retryable error rather than a string.

mod common;

use std::path::Path;

use common::cluster::start_coordinator as start_cluster_coordinator;
use ndhtl_agent::runtime::artifacts::{
    ArtifactError, CHUNK_BYTES, download_to_file, fetch, pack_dir, unpack_into, upload,
};
use ndhtl_coordinator::service::EmbeddedCoordinator;
use ndhtl_proto::v1::agent_service_client::AgentServiceClient;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// A coordinator on 127.0.0.1 with its state in `dir/state` (kept across restarts), and a client.
async fn start_coordinator(dir: &Path) -> (EmbeddedCoordinator, AgentServiceClient<Channel>) {
    let any_port = "127.0.0.1:0".parse().unwrap();
    let coordinator = start_cluster_coordinator(&dir.join("state"), any_port, None).await;
    let client = AgentServiceClient::connect(coordinator.url())
        .await
        .unwrap();
    (coordinator, client)
}

fn artifact(size: usize) -> (String, Vec<u8>) {
    // Not a repeating pattern: a chunk put at the wrong offset changes the hash.
    let bytes: Vec<u8> = (0..size).map(|i| (i * 31 + i / 251) as u8).collect();
    (hex::encode(Sha256::digest(&bytes)), bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_size_around_the_chunk_boundary_round_trips_through_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, mut client) = start_coordinator(dir.path()).await;
    for size in [
        0,
        1,
        CHUNK_BYTES - 1,
        CHUNK_BYTES,
        CHUNK_BYTES + 1,
        3 * CHUNK_BYTES + 5,
    ] {
        let (hash, bytes) = artifact(size);
        upload(&mut client, &hash, bytes.clone()).await.unwrap();
        assert!(
            coordinator.artifacts().contains(&hash),
            "{size} bytes stored"
        );

        let cache = dir.path().join(format!("cache-{size}"));
        let fetched = fetch(&mut client, &cache, &hash).await.unwrap();
        assert!(fetched == bytes, "{size} bytes fetched back unchanged");
        assert!(
            std::fs::read(cache.join(&hash)).unwrap() == bytes,
            "and cached"
        );

        let file = dir.path().join(format!("file-{size}.bin"));
        let written = download_to_file(&mut client, &hash, &file).await.unwrap();
        assert_eq!(written, size as u64);
        assert!(
            std::fs::read(&file).unwrap() == bytes,
            "{size} bytes written"
        );
    }
    coordinator.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_used_when_right_refetched_when_damaged_and_unknown_hashes_fail_typed() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, mut client) = start_coordinator(dir.path()).await;

    // A packed folder, as checkpoints travel.
    let folder = dir.path().join("checkpoint");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("model.mpk"), artifact(CHUNK_BYTES + 17).1).unwrap();
    std::fs::write(folder.join("state.json"), b"{\"lifetime\": 3}").unwrap();
    let (hash, packed) = pack_dir(&folder).unwrap();
    assert_eq!(
        pack_dir(&folder).unwrap().0,
        hash,
        "packing is deterministic"
    );
    upload(&mut client, &hash, packed.clone()).await.unwrap();

    let cache = dir.path().join("cache");
    fetch(&mut client, &cache, &hash).await.unwrap();
    // A right cache file is used without asking: it is served even with the coordinator gone.
    coordinator.shutdown().await.unwrap();
    assert!(fetch(&mut client, &cache, &hash).await.unwrap() == packed);
    // A damaged one is not: with nobody to refetch from, the fetch fails, retryably.
    std::fs::write(cache.join(&hash), b"torn").unwrap();
    let error = fetch(&mut client, &cache, &hash).await.unwrap_err();
    assert!(
        matches!(error, ArtifactError::Rpc { .. }) && error.is_retryable(),
        "{error}"
    );

    let (coordinator, mut client) = start_coordinator(dir.path()).await;
    let unpacked = dir.path().join("unpacked");
    let bytes = fetch(&mut client, &cache, &hash).await.unwrap();
    unpack_into(&bytes, &unpacked).unwrap();
    assert_eq!(
        std::fs::read(unpacked.join("state.json")).unwrap(),
        b"{\"lifetime\": 3}"
    );
    assert!(
        std::fs::read(cache.join(&hash)).unwrap() == packed,
        "cache repaired"
    );

    let unknown = "5".repeat(64);
    match fetch(&mut client, &cache, &unknown).await.unwrap_err() {
        ArtifactError::Rpc { hash, status } => {
            assert_eq!(hash, unknown);
            assert_eq!(status.code(), tonic::Code::NotFound);
        }
        other => panic!("expected an RPC error, got {other}"),
    }
    let target = dir.path().join("x.bin");
    let malformed = download_to_file(&mut client, "../x", &target)
        .await
        .unwrap_err();
    assert!(
        !malformed.is_retryable(),
        "a malformed hash is fatal: {malformed}"
    );
    assert!(!target.exists() && !target.with_extension("partial").exists());
    coordinator.shutdown().await.unwrap();
}
