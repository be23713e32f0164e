//! The Kubernetes core resources that local mode reads from files.

pub mod service;
pub use service::*;
