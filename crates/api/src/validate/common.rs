//! Small checks shared by every kind's validator.

use crate::error::FieldError;
use crate::string_match::StringMatch;

#[derive(Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError::new(field, reason));
    }
}

/// Whether `text` is a DNS-1123 label: up to 63 lower-case letters, digits and `-`, not starting or
/// ending with `-`.
pub fn is_dns1123_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Whether `text` is a DNS-1123 subdomain: up to 253 characters of labels joined by `.`.
pub fn is_dns1123_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns1123_label)
}

/// Ports the sidecar itself uses (admin, outbound/inbound capture, HBONE, agent, health,
/// stats): a listener of the user's there would collide with Envoy's own.
pub const RESERVED_PORTS: [u32; 8] = [15000, 15001, 15004, 15006, 15008, 15020, 15021, 15090];

pub fn check_listener_port(field: &str, port: u32, errors: &mut Errors) {
    check_port(field, port, errors);
    if RESERVED_PORTS.contains(&port) {
        errors.push(
            field,
            format!("port {port} is reserved for the sidecar itself ({RESERVED_PORTS:?})"),
        );
    }
}

pub fn check_port(field: &str, port: u32, errors: &mut Errors) {
    if !(1..=65535).contains(&port) {
        errors.push(field, "port must be in 1..=65535");
    }
}

/// A host as Istio accepts it: a DNS name, optionally `*.`-prefixed, or `*` where allowed.
pub fn check_host(field: &str, host: &str, allow_star: bool, errors: &mut Errors) {
    if host == "*" {
        if !allow_star {
            errors.push(field, "\"*\" is not allowed here; name the host");
        }
        return;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        errors.push(
            field,
            format!("{host:?} is not a valid host (a DNS name, optionally starting with \"*.\")"),
        );
    }
}

pub fn check_regex(field: &str, pattern: &str, errors: &mut Errors) {
    // Envoy uses RE2; the regex crate accepts the same syntax minus a few rarities, so a
    // pattern it rejects would also be NACKed by Envoy.
    if let Err(e) = regex::Regex::new(pattern) {
        errors.push(
            field,
            format!(
                "invalid regex: {}",
                e.to_string().lines().last().unwrap_or("")
            ),
        );
    }
}

pub fn check_string_match(field: &str, m: &StringMatch, errors: &mut Errors) {
    match m {
        StringMatch::Regex(pattern) => check_regex(&format!("{field}.regex"), pattern, errors),
        StringMatch::Exact(_) | StringMatch::Prefix(_) => {}
    }
}

/// HTTP header names: lower-case tokens (Envoy and HTTP/2 require lower case).
pub fn check_header_name(field: &str, name: &str, errors: &mut Errors) {
    let valid = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        });
    if !valid {
        errors.push(
            field,
            format!("{name:?} is not a valid header name (lower-case letters, digits and -_.)"),
        );
    }
}

pub fn check_percent(field: &str, value: f64, errors: &mut Errors) {
    if !(0.0..=100.0).contains(&value) {
        errors.push(field, "percentage must be in 0..=100");
    }
}

/// Istio's floor for a duration (a timeout, a window): 1ms.
pub fn check_at_least_1ms(field: &str, value: Option<crate::Duration>, errors: &mut Errors) {
    if value.is_some_and(|d| d.as_std() < std::time::Duration::from_millis(1)) {
        errors.push(field, "must be at least 1ms");
    }
}

pub fn check_export_to(export_to: &[String], errors: &mut Errors) {
    for (i, entry) in export_to.iter().enumerate() {
        if !matches!(entry.as_str(), "*" | "." | "~") && !is_dns1123_label(entry) {
            errors.push(
                format!("spec.exportTo[{i}]"),
                format!("{entry:?} is not \".\", \"*\", \"~\" or a namespace"),
            );
        }
    }
    if export_to.len() > 1 && export_to.iter().any(|e| e == "*" || e == "~") {
        errors.push("spec.exportTo", "\"*\" and \"~\" must stand alone");
    }
}

/// A file the proxy's agent reads for a TLS setting: `~` separates the files of one
/// secret in the names the agent serves (`file-cert:CERT~KEY`, `file-root:CA~CRL`), so a
/// path cannot hold one.
pub fn check_agent_file(field: &str, path: &str, errors: &mut Errors) {
    if path.contains('~') {
        errors.push(
            field,
            format!("{path:?}: a certificate file's path cannot contain '~' (it separates the files the proxy's agent serves together); rename or link the file"),
        );
    }
}
