//! ndhtl's gRPC contract: the generated `ndhtl.v1` messages, clients and servers.
//!
//! These are wire types only. The coordinator and the agents convert them to and from their
//! domain types in one place each, so the wire format never leaks into the logic.

/// The `ndhtl.v1` package.
pub mod v1 {
    tonic::include_proto!("ndhtl.v1");
}
