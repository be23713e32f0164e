//! The objects that select workloads by their labels, checked against each other and,
//! when a cluster was read, against its pods: Gateways and Sidecars that select no pod,
//! Sidecars that apply to the same workload (a namespace's Sidecars without a selector,
//! or two selectors matching one pod: which one a proxy gets is undefined), and Gateways
//! on the same workloads and port that claim the same host (one of their servers is
//! dropped). The codes and wording are istioctl analyze's for the same findings.

use super::{Message, NOT_FOUND};
use fleetmesh_api::Resource;
use fleetmesh_api::meta::ObjectMeta;
use fleetmesh_api::networking::{GatewaySpec, Labels, SidecarSpec};
use fleetmesh_api::resource::{Config, Kind};
use fleetmesh_model::service::labels_match;
use std::collections::BTreeMap;

/// IST0110, ConflictingSidecarWorkloadSelectors.
const SIDECARS_SELECT_ONE_POD: &str = "IST0110";
/// IST0111, MultipleSidecarsWithoutWorkloadSelectors.
const SIDECARS_WITHOUT_SELECTOR: &str = "IST0111";
/// IST0145, ConflictingGateways.
const CONFLICTING_GATEWAYS: &str = "IST0145";

/// A pod of the cluster read: what selectors match.
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
}

/// Every finding about selecting objects; `pods` when a cluster was read (without them,
/// only what the objects show among themselves).
pub(super) fn findings(read: &[(Resource, String)], pods: Option<&[Pod]>) -> Vec<Message> {
    let gateways: Vec<_> = read
        .iter()
        .filter_map(|(r, origin)| match r {
            Resource::Gateway(g) => Some((g, origin)),
            _ => None,
        })
        .collect();
    let sidecars: Vec<_> = read
        .iter()
        .filter_map(|(r, origin)| match r {
            Resource::Sidecar(s) => Some((s, origin)),
            _ => None,
        })
        .collect();
    let mut messages = conflicting_gateways(&gateways, pods);
    messages.extend(sidecars_without_selector(&sidecars));
    if let Some(pods) = pods {
        messages.extend(unselected_gateways(&gateways, pods));
        messages.extend(sidecars_by_pod(&sidecars, pods));
    }
    messages
}

/// A finding about the object of `kind` whose metadata is `meta`.
fn message(
    code: &'static str,
    kind: Kind,
    meta: &ObjectMeta,
    origin: &str,
    text: String,
) -> Message {
    Message {
        code,
        resource: kind.describe(meta),
        origin: origin.to_string(),
        text,
    }
}

/// A Gateway or Sidecar whose `selector` matches no pod: it configures nothing.
fn selects_no_pod(kind: Kind, meta: &ObjectMeta, origin: &str, selector: &Labels) -> Message {
    message(
        NOT_FOUND,
        kind,
        meta,
        origin,
        format!(
            "Referenced selector not found: {:?} (no pod has these labels)",
            shown(selector)
        ),
    )
}

/// `k=v,k2=v2`, as Kubernetes prints a selector.
fn shown(selector: &Labels) -> String {
    let pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// Gateways whose selector matches no pod (Istio's gateway analyzer: such a Gateway
/// configures nothing).
fn unselected_gateways(gateways: &[(&Config<GatewaySpec>, &String)], pods: &[Pod]) -> Vec<Message> {
    let mut messages = Vec::new();
    for (gateway, origin) in gateways {
        let selector = &gateway.spec.selector;
        if !pods.iter().any(|pod| labels_match(selector, &pod.labels)) {
            messages.push(selects_no_pod(
                Kind::Gateway,
                &gateway.metadata,
                origin,
                selector,
            ));
        }
    }
    messages
}

/// Whether two Gateways' selectors are the same, or (pods known) both match one pod.
fn same_workloads(a: &Labels, b: &Labels, pods: Option<&[Pod]>) -> bool {
    a == b
        || pods.is_some_and(|pods| {
            pods.iter()
                .any(|pod| labels_match(a, &pod.labels) && labels_match(b, &pod.labels))
        })
}

/// Each server of a Gateway whose port and host (with the same `bind`) another Gateway of
/// the same workloads also serves: the proxies get one of the two.
fn conflicting_gateways(
    gateways: &[(&Config<GatewaySpec>, &String)],
    pods: Option<&[Pod]>,
) -> Vec<Message> {
    let mut messages = Vec::new();
    for (gateway, origin) in gateways {
        let name = gateway.metadata.key();
        for server in &gateway.spec.servers {
            let mut others: Vec<String> = gateways
                .iter()
                .filter(|(other, _)| other.metadata.key() != name)
                .filter(|(other, _)| {
                    same_workloads(&gateway.spec.selector, &other.spec.selector, pods)
                })
                .filter(|(other, _)| {
                    other.spec.servers.iter().any(|theirs| {
                        theirs.port.number == server.port.number
                            && theirs.bind == server.bind
                            && theirs.hosts.iter().any(|h| server.hosts.contains(h))
                    })
                })
                .map(|(other, _)| other.metadata.key())
                .collect();
            if others.is_empty() {
                continue;
            }
            others.sort();
            messages.push(message(
                CONFLICTING_GATEWAYS,
                Kind::Gateway,
                &gateway.metadata,
                origin,
                format!(
                    "Conflict with gateways {} (workload selector {}, port {}, hosts {}).",
                    others.join(","),
                    shown(&gateway.spec.selector),
                    server.port.number,
                    server.hosts.join(",")
                ),
            ));
        }
    }
    messages
}

fn selector(sidecar: &Config<SidecarSpec>) -> Option<&Labels> {
    sidecar
        .spec
        .workload_selector
        .as_ref()
        .map(|s| &s.labels)
        .filter(|labels| !labels.is_empty())
}

/// A namespace's Sidecars without a workload selector, when there are several: each
/// applies to every workload of the namespace.
fn sidecars_without_selector(sidecars: &[(&Config<SidecarSpec>, &String)]) -> Vec<Message> {
    let mut by_namespace: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for (sidecar, origin) in sidecars {
        if selector(sidecar).is_none() {
            by_namespace
                .entry(&sidecar.metadata.namespace)
                .or_default()
                .push((*sidecar, *origin));
        }
    }
    let mut messages = Vec::new();
    for (namespace, unselective) in by_namespace {
        messages.extend(each_of_several(SIDECARS_WITHOUT_SELECTOR, &unselective, |names| {
            format!(
                "The Sidecars {names:?} in namespace {namespace:?} have no workload selector, which can lead to undefined behavior."
            )
        }));
    }
    messages
}

/// When `sidecars` are more than one, a finding on each of them, its text made from all
/// their names (sorted); nothing for a single Sidecar.
fn each_of_several(
    code: &'static str,
    sidecars: &[(&Config<SidecarSpec>, &String)],
    text: impl Fn(&[&str]) -> String,
) -> Vec<Message> {
    if sidecars.len() < 2 {
        return Vec::new();
    }
    let mut names: Vec<&str> = sidecars
        .iter()
        .map(|(s, _)| s.metadata.name.as_str())
        .collect();
    names.sort();
    let text = text(&names);
    sidecars
        .iter()
        .map(|(sidecar, origin)| {
            message(code, Kind::Sidecar, &sidecar.metadata, origin, text.clone())
        })
        .collect()
}

/// Sidecars whose selector matches no pod of their namespace, and pods that more than
/// one Sidecar selects.
fn sidecars_by_pod(sidecars: &[(&Config<SidecarSpec>, &String)], pods: &[Pod]) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut selecting: BTreeMap<(&str, &str), Vec<_>> = BTreeMap::new();
    for (sidecar, origin) in sidecars {
        let Some(selector) = selector(sidecar) else {
            continue;
        };
        let namespace = sidecar.metadata.namespace.as_str();
        let mut selects_any = false;
        for pod in pods
            .iter()
            .filter(|pod| pod.namespace == namespace && labels_match(selector, &pod.labels))
        {
            selects_any = true;
            selecting
                .entry((namespace, pod.name.as_str()))
                .or_default()
                .push((*sidecar, *origin));
        }
        if !selects_any {
            messages.push(selects_no_pod(
                Kind::Sidecar,
                &sidecar.metadata,
                origin,
                selector,
            ));
        }
    }
    for ((namespace, pod), sidecars) in selecting {
        messages.extend(each_of_several(SIDECARS_SELECT_ONE_POD, &sidecars, |names| {
            format!(
                "The Sidecars {names:?} in namespace {namespace:?} select the same workload pod {pod:?}, which can lead to undefined behavior."
            )
        }));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_api::load_documents;

    fn read(yaml: &str) -> Vec<(Resource, String)> {
        let loaded = load_documents(None, yaml).expect("valid objects");
        loaded
            .into_iter()
            .map(|l| (l.resource, "policies.yaml".to_string()))
            .collect()
    }

    fn pod(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: namespace.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn shown(messages: Vec<Message>) -> Vec<String> {
        let mut lines: Vec<String> = messages
            .into_iter()
            .map(|m| format!("{} {}: {}", m.code, m.resource, m.text))
            .collect();
        lines.sort();
        lines
    }

    const GATEWAYS: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: shop, namespace: edge}\n\
        spec: {selector: {istio: ingress}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com, cart.example.com]}]}\n---\n\
        apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: cart, namespace: edge}\n\
        spec: {selector: {istio: ingress}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [cart.example.com]}]}\n---\n\
        apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: other-port, namespace: edge}\n\
        spec: {selector: {istio: ingress}, servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: [cart.example.com]}]}\n---\n\
        apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: other-host, namespace: edge}\n\
        spec: {selector: {istio: ingress}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [blog.example.com]}]}\n";

    #[test]
    fn gateways_on_one_workload_claiming_one_host_and_port_conflict() {
        assert_eq!(
            shown(findings(&read(GATEWAYS), None)),
            [
                "IST0145 Gateway edge/cart: Conflict with gateways edge/shop (workload selector istio=ingress, port 80, hosts cart.example.com).",
                "IST0145 Gateway edge/shop: Conflict with gateways edge/cart (workload selector istio=ingress, port 80, hosts shop.example.com,cart.example.com).",
            ]
        );
    }

    #[test]
    fn gateways_with_other_selectors_conflict_only_on_a_pod_both_select() {
        let yaml = GATEWAYS.replacen(
            "{name: cart, namespace: edge}\nspec: {selector: {istio: ingress}",
            "{name: cart, namespace: edge}\nspec: {selector: {app: cart-gateway}",
            1,
        );
        assert_eq!(shown(findings(&read(&yaml), None)), Vec::<String>::new());
        let both = pod(
            "edge",
            "gw-1",
            &[("istio", "ingress"), ("app", "cart-gateway")],
        );
        let found = shown(findings(&read(&yaml), Some(&[both])));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("IST0145 Gateway edge/cart: Conflict with gateways edge/shop")
        );
    }

    #[test]
    fn sidecars_that_apply_to_the_same_workloads_are_errors() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\n\
            spec: {egress: [{hosts: ['./*']}]}\n---\n\
            apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: also-default, namespace: shop}\n\
            spec: {egress: [{hosts: ['./*', 'istio-system/*']}]}\n---\n\
            apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: reviews, namespace: shop}\n\
            spec: {workloadSelector: {labels: {app: reviews}}, egress: [{hosts: ['./*']}]}\n---\n\
            apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: reviews-v2, namespace: shop}\n\
            spec: {workloadSelector: {labels: {version: v2}}, egress: [{hosts: ['./*']}]}\n---\n\
            apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: ratings, namespace: shop}\n\
            spec: {workloadSelector: {labels: {app: ratings}}, egress: [{hosts: ['./*']}]}\n";
        let unselective = [
            "IST0111 Sidecar shop/also-default: The Sidecars [\"also-default\", \"default\"] in namespace \"shop\" have no workload selector, which can lead to undefined behavior.",
            "IST0111 Sidecar shop/default: The Sidecars [\"also-default\", \"default\"] in namespace \"shop\" have no workload selector, which can lead to undefined behavior.",
        ];
        assert_eq!(shown(findings(&read(yaml), None)), unselective);

        let pods = [
            pod(
                "shop",
                "reviews-v1-a",
                &[("app", "reviews"), ("version", "v1")],
            ),
            pod(
                "shop",
                "reviews-v2-b",
                &[("app", "reviews"), ("version", "v2")],
            ),
            // Another namespace's pod is not the shop Sidecars' to select.
            pod("blog", "ratings-c", &[("app", "ratings")]),
        ];
        let mut expected = vec![
            "IST0101 Sidecar shop/ratings: Referenced selector not found: \"app=ratings\" (no pod has these labels)".to_string(),
            "IST0110 Sidecar shop/reviews: The Sidecars [\"reviews\", \"reviews-v2\"] in namespace \"shop\" select the same workload pod \"reviews-v2-b\", which can lead to undefined behavior.".to_string(),
            "IST0110 Sidecar shop/reviews-v2: The Sidecars [\"reviews\", \"reviews-v2\"] in namespace \"shop\" select the same workload pod \"reviews-v2-b\", which can lead to undefined behavior.".to_string(),
        ];
        expected.extend(unselective.map(String::from));
        expected.sort();
        assert_eq!(shown(findings(&read(yaml), Some(&pods))), expected);
    }
}
