//! The services of a mesh's clusters as one registry, Istio's way: a Service of the same
//! name and namespace in several clusters is one service, whose endpoints are those of
//! every cluster (each keeps its cluster id and locality).

use crate::service::Service;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Merges the services of several clusters, the proxies' own cluster first: its
/// definition of a service (ports, virtual IPs, selector) is the one kept, since config
/// applied to a cluster governs that cluster's proxies. A service only another cluster
/// has joins with that cluster's definition, less any virtual IP an earlier service
/// already uses (clusters allocate ClusterIPs independently, and a sidecar tells TCP
/// services apart by their virtual IP).
pub fn merge_clusters(clusters: impl IntoIterator<Item = Vec<Service>>) -> Vec<Service> {
    let mut merged: Vec<Service> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut taken: BTreeSet<IpAddr> = BTreeSet::new();
    for services in clusters {
        for mut service in services {
            match index.get(&service.hostname) {
                Some(&at) => merged[at].endpoints.append(&mut service.endpoints),
                None => {
                    service.addresses.retain(|ip| !taken.contains(ip));
                    taken.extend(service.addresses.iter().copied());
                    index.insert(service.hostname.clone(), merged.len());
                    merged.push(service);
                }
            }
        }
    }
    for service in &mut merged {
        // Deterministic, whatever order the clusters' watches delivered them in.
        service
            .endpoints
            .sort_by(|a, b| (&a.cluster_id, &a.address).cmp(&(&b.cluster_id, &b.address)));
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ExportTo;
    use crate::service::{Endpoint, Resolution, ServicePort};

    fn service(host: &str, vip: &str, cluster: &str, endpoints: &[&str]) -> Service {
        Service {
            hostname: host.into(),
            namespace: "default".into(),
            addresses: vec![vip.parse().unwrap()],
            ports: vec![ServicePort::kube(Some("http"), 80, Some(8080), None)],
            endpoints: endpoints
                .iter()
                .map(|address| Endpoint {
                    address: (*address).into(),
                    ports: [(80, 8080)].into(),
                    labels: Default::default(),
                    locality: Some(format!("{cluster}-region/a")),
                    weight: 1,
                    service_account: None,
                    cluster_id: cluster.into(),
                    workload: None,
                })
                .collect(),
            export_to: ExportTo::All,
            selector: Default::default(),
            resolution: Resolution::Static,
            mesh_external: false,
            subject_alt_names: Vec::new(),
            address_ranges: Vec::new(),
        }
    }

    #[test]
    fn one_service_across_clusters_keeps_every_clusters_endpoints() {
        let merged = merge_clusters([
            vec![service("reviews", "10.0.0.1", "c1", &["1.1.1.1"])],
            vec![
                service("reviews", "10.0.0.9", "c2", &["2.2.2.2", "2.2.2.3"]),
                service("ratings", "10.0.0.1", "c2", &["2.2.2.4"]),
            ],
        ]);
        assert_eq!(merged.len(), 2);
        let reviews = &merged[0];
        assert_eq!(
            reviews.addresses,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let from: Vec<(&str, &str)> = reviews
            .endpoints
            .iter()
            .map(|e| (e.cluster_id.as_str(), e.address.as_str()))
            .collect();
        assert_eq!(
            from,
            [("c1", "1.1.1.1"), ("c2", "2.2.2.2"), ("c2", "2.2.2.3")]
        );
        assert_eq!(
            reviews.endpoints[1].locality.as_deref(),
            Some("c2-region/a")
        );
        // ratings exists only in c2, and its ClusterIP is c1's reviews's: it joins
        // without a virtual IP rather than taking reviews's.
        assert_eq!(merged[1].hostname, "ratings");
        assert!(merged[1].addresses.is_empty());
    }
}
