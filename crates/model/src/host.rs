//! Istio's host semantics: short names, wildcards and exportTo.

use std::collections::BTreeSet;

/// Expands a short name the way Istio does: a name without dots is a service in the
/// resource's namespace (`reviews` in `default` → `reviews.default.svc.cluster.local`);
/// anything with a dot, and wildcards, are taken as written.
pub fn resolve_host(host: &str, namespace: &str, domain: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_string()
    } else {
        service_hostname(host, namespace, domain)
    }
}

/// A Kubernetes Service's host name: `name.namespace.svc.domain`.
pub fn service_hostname(name: &str, namespace: &str, domain: &str) -> String {
    format!("{name}.{namespace}.svc.{domain}")
}

/// Whether `pattern` (`*`, `*.example.com` or an exact name) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

/// Which namespaces may see a resource (Istio's `exportTo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTo {
    /// Every namespace (`*`, or no `exportTo`).
    All,
    /// These namespaces only (`.` is resolved to the resource's own).
    Namespaces(BTreeSet<String>),
}

impl ExportTo {
    /// From the `exportTo` list of a resource in `namespace`: empty or `*` is everyone,
    /// `.` its own namespace, `~` nobody.
    pub fn parse(entries: &[String], namespace: &str) -> ExportTo {
        if entries.is_empty() || entries.iter().any(|e| e == "*") {
            return ExportTo::All;
        }
        let namespaces = entries
            .iter()
            .filter(|e| *e != "~")
            .map(|e| {
                if e == "." {
                    namespace.to_string()
                } else {
                    e.clone()
                }
            })
            .collect();
        ExportTo::Namespaces(namespaces)
    }

    /// Whether a proxy in `namespace` may see the resource.
    pub fn visible_to(&self, namespace: &str) -> bool {
        match self {
            ExportTo::All => true,
            ExportTo::Namespaces(set) => set.contains(namespace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_their_namespace() {
        assert_eq!(
            resolve_host("reviews", "bookinfo", "cluster.local"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(
            resolve_host(
                "reviews.other.svc.cluster.local",
                "bookinfo",
                "cluster.local"
            ),
            "reviews.other.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("api.example.com", "bookinfo", "cluster.local"),
            "api.example.com"
        );
        assert_eq!(
            resolve_host("*.example.com", "bookinfo", "cluster.local"),
            "*.example.com"
        );
    }

    #[test]
    fn wildcards() {
        assert!(host_matches("*", "anything"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "a.example.org"));
        assert!(host_matches("a.example.com", "a.example.com"));
        assert!(!host_matches("a.example.com", "b.example.com"));
    }

    #[test]
    fn export_to() {
        assert!(ExportTo::parse(&[], "a").visible_to("b"));
        let own = ExportTo::parse(&[".".into()], "a");
        assert!(own.visible_to("a") && !own.visible_to("b"));
        let none = ExportTo::parse(&["~".into()], "a");
        assert!(!none.visible_to("a"));
        let listed = ExportTo::parse(&[".".into(), "c".into()], "a");
        assert!(listed.visible_to("a") && listed.visible_to("c") && !listed.visible_to("b"));
    }
}
