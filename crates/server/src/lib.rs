//! The xDS server: Envoy's Aggregated Discovery Service, state-of-the-world and delta.
//!
//! It only pushes what `xds` computed from the latest snapshot and tracks what each proxy
//! acknowledged. Versions are content hashes, so a restarted meshd offers the same
//! versions for the same config and a reconnecting Envoy sees nothing new.
//!
//! Layers, lowest first; a module uses only those before it: `generated`, `subscribed`, `state`,
//! `changes`, `metrics`, `subscription`, `registry`, `grpc` (framing), `incoming` → `cache` →
//! `context` (what every stream of a mesh shares; which mesh a stream is) → `session` (one proxy, either protocol) →
//! `sotw`, `delta` → `service` (accepts streams).

#![warn(missing_docs)]

mod cache;
mod changes;
pub mod context;
pub mod debounce;
mod delta;
pub mod exposition;
mod generated;
mod grpc;
mod held;
mod incoming;
pub mod metrics;
mod process;
pub mod registry;
mod service;
mod session;
mod sotw;
mod state;
mod subscribed;
mod subscription;
mod virtual_hosts;

pub use context::{RouteDelivery, Router, ServerContext};
pub use generated::Generated;
pub use incoming::MAX_CONNECTIONS;
pub use metrics::Metrics;
pub use registry::{ProxyStatus, Registry};
pub use service::{HANDSHAKE_TIMEOUT, MAX_STREAMS_PER_CONNECTION, XdsServer};
pub use state::MeshState;
