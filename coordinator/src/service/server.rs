//! The gRPC server: the agent API, the sweep API and the standard gRPC health service
//! (Kubernetes probes).

use std::future::Future;

use ndhtl_proto::v1::agent_service_server::AgentServiceServer;
use ndhtl_proto::v1::sweep_service_server::SweepServiceServer;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};

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
        .serve_with_incoming_shutdown(connections_without_nagle(listener), shutdown)
        .await
}

/// The listener's connections, each with Nagle's algorithm off (`TCP_NODELAY`), as tonic sets
/// it on the sockets it binds itself. With it on, a unary answer's trailers waited for the
/// client's delayed ACK of its body: about 40 ms more on every agent and CLI call on Linux.
fn connections_without_nagle(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|connection| {
        let connection = connection?;
        if let Err(error) = connection.set_nodelay(true) {
            // A connection that cannot take it is still served, only slower.
            tracing::warn!(%error, "TCP_NODELAY not set on a connection");
        }
        Ok(connection)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn served_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut connections = Box::pin(connections_without_nagle(listener));
        let client = TcpStream::connect(address).await.unwrap();
        let served = connections.next().await.expect("a connection").unwrap();
        assert!(served.nodelay().unwrap(), "the served side keeps Nagle on");
        assert_eq!(served.peer_addr().unwrap(), client.local_addr().unwrap());
    }
}
