//! Config errors that name the file, the object, the field and the reason.

use std::fmt;
use std::path::PathBuf;

/// One problem with one field of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the resource root, e.g. `spec.http[0].route[1].weight`.
    pub field: String,
    /// What is wrong with it, for a person to read.
    pub reason: String,
}

impl FieldError {
    /// A problem with the field at `field` (a dotted path).
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// A config problem, located well enough for a user to fix it without guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {resource}: {error}")]
pub struct ConfigError {
    /// `FILE` or `FILE (document N)`.
    pub location: String,
    /// `Kind namespace/name`, or what is known of it when the document did not parse.
    pub resource: String,
    /// The field and what is wrong with it.
    pub error: FieldError,
}

impl ConfigError {
    /// A problem with document `document` (counted from 0) of `file` (`None`: standard input).
    pub fn new(
        file: Option<&PathBuf>,
        document: usize,
        resource: String,
        error: FieldError,
    ) -> Self {
        let file = file.map_or("<input>".to_string(), |f| f.display().to_string());
        let location = if document > 0 {
            format!("{file} (document {})", document + 1)
        } else {
            file
        };
        ConfigError {
            location,
            resource,
            error,
        }
    }
}
