//! Where the world meets the engine: the gRPC services, the seed's HTTP API
//! and the live page,
//! the listener that accepts (and authenticates) connections, and the server
//! that puts them on one port. Edges turn requests into engine inputs and
//! never decide anything the scheduler decides.

pub mod agent_gateway_server;
pub mod artifact_upload;
pub mod auth;
pub mod control_server;
pub mod http_api;
pub mod idle;
pub mod limits;
pub mod listener;
pub mod live_agents;
pub(crate) mod same_origin;
pub mod server;
pub mod tls_reload;
pub mod web_page;
