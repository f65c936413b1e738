//! The gRPC server: the agent API, the sweep API and the standard gRPC health service
//! (Kubernetes probes).

use std::future::Future;

use ndhtl_proto::v1::agent_service_server::AgentServiceServer;
use ndhtl_proto::v1::sweep_service_server::SweepServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use super::agent_api::AgentApi;
use super::event_loop::CoordinatorHandle;
use super::sweep_api::SweepApi;
use crate::store::ArtifactStore;

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    handle: CoordinatorHandle,
    artifacts: ArtifactStore,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServiceServer<AgentApi>>()
        .await;
    health_reporter
        .set_serving::<SweepServiceServer<SweepApi>>()
        .await;
    let sweeps = SweepServiceServer::new(SweepApi::new(handle.clone()))
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(64 << 20);
    let api = AgentServiceServer::new(AgentApi { handle, artifacts })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(api)
        .add_service(sweeps)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
