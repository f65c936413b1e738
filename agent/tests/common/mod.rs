//! Shared by the agent's integration tests (each test binary uses a part of it).
#![allow(dead_code)]

pub mod cluster;
pub mod http;
