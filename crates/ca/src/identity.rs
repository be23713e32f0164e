//! A workload's identity: the Kubernetes namespace and service account it runs as, and
//! the SPIFFE id that names it in certificates.

use std::fmt;

/// Who a workload is: its namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's service account.
    pub service_account: String,
}

impl Identity {
    /// The identity of `service_account` in `namespace`.
    pub fn new(namespace: &str, service_account: &str) -> Identity {
        Identity {
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, Istio's form.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_id_is_istios_form() {
        assert_eq!(
            Identity::new("bookinfo", "reviews").spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/bookinfo/sa/reviews"
        );
    }
}
