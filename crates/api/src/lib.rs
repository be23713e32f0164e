//! fleetmesh's config API: Istio and Kubernetes resources exactly as their YAML spells
//! them, and the validator shared by local mode and (later) the validating webhook.
//!
//! Every struct denies unknown fields: a misspelt field in a user's file is an error that
//! names it, never a setting silently dropped.

#![warn(missing_docs)]

pub mod duration;
pub mod error;
pub mod fields;
pub mod kube;
pub mod load;
pub mod mesh_config;
pub mod meta;
pub mod networking;
pub mod peer;
pub mod protocol;
pub mod resource;
pub mod security;
pub mod string_match;
pub mod validate;

pub use duration::Duration;
pub use error::{ConfigError, FieldError};
pub use load::{LoadedResource, load_documents, load_stored_object};
pub use meta::ObjectMeta;
pub use resource::{Kind, Resource};
pub use string_match::StringMatch;
