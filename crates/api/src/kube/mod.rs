//! The Kubernetes core resources that local mode reads from files.

pub mod endpoints;
pub mod service;
pub use endpoints::*;
pub use service::*;
