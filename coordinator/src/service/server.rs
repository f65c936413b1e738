//! The gRPC server: the agent API and the standard gRPC health service (Kubernetes probes).

use std::future::Future;

use ndhtl_proto::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use super::agent_api::AgentApi;
use super::event_loop::CoordinatorHandle;
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
    let api = AgentServiceServer::new(AgentApi { handle, artifacts })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(api)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
