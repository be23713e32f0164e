//! `fleetmesh analyze [FILE|DIR...]`: checks Istio config before it is applied, or what
//! a cluster holds (`cluster`). Each object is loaded as meshd loads it (parse and
//! validation errors, with file, field and reason), then all are checked together for
//! what no single object shows: routes to hosts no Service or ServiceEntry has, to
//! subsets no DestinationRule defines, through Gateways nothing defines, two
//! VirtualServices claiming one host for the mesh, Sidecars or Gateways that contradict
//! each other (`selectors`), and (with a cluster's Pods) Gateways and Sidecars selecting
//! no pod. Findings carry the codes of `istioctl analyze` for the same finding, so
//! users and CI jobs read them as they read istioctl's; like istioctl, the command exits
//! with status 79 when it finds an error.

mod cluster;
mod selectors;

use anyhow::{Context, bail};
use fleetmesh_api::networking::{Destination, VirtualServiceSpec};
use fleetmesh_api::resource::Config;
use fleetmesh_api::{Resource, load_documents};
use fleetmesh_model::Snapshot;
use fleetmesh_model::host::{host_matches, resolve_host};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// istioctl analyze's exit status when it finds an error.
pub const FOUND_ERRORS: i32 = 79;

/// IST0106, SchemaValidationError: an object that does not parse or validate.
const INVALID: &str = "IST0106";
/// IST0101, ReferencedResourceNotFound: a host, subset or Gateway nothing defines.
const NOT_FOUND: &str = "IST0101";
/// IST0109, ConflictingMeshGatewayVirtualServiceHosts.
const CONFLICTING_HOSTS: &str = "IST0109";

/// One finding: an error (istioctl's level for each of these codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// istioctl analyze's code for the same finding.
    pub code: &'static str,
    /// `Kind namespace/name`, or what is known of it when it did not parse.
    pub resource: String,
    /// The file (and document) it is written in.
    pub origin: String,
    pub text: String,
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Error [{}] ({} {}) {}",
            self.code, self.resource, self.origin, self.text
        )
    }
}

/// What analyze checks together: each object with where it was read (a file and
/// document, or a cluster), the findings of reading them, and, when a cluster was read,
/// its Pods (what Gateways and Sidecars select).
#[derive(Default)]
pub struct Objects {
    read: Vec<(Resource, String)>,
    messages: Vec<Message>,
    pods: Option<Vec<selectors::Pod>>,
}

impl Objects {
    /// The YAML files of `paths` (files, or directories walked as meshd walks its config
    /// directory), each loaded as meshd loads it.
    pub fn from_files(paths: &[PathBuf]) -> anyhow::Result<Objects> {
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                files.extend(fleetmesh_meshd::local::files_with_extensions(
                    path,
                    &["yaml", "yml"],
                ));
            } else if path.is_file() {
                files.push(path.clone());
            } else {
                bail!("{}: no such file or directory", path.display());
            }
        }
        let mut objects = Objects::default();
        for file in &files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            match load_documents(Some(file), &text) {
                Ok(resources) => objects.read.extend(
                    resources
                        .into_iter()
                        .map(|l| (l.resource, file.display().to_string())),
                ),
                Err(errors) => objects.messages.extend(errors.into_iter().map(|e| Message {
                    code: INVALID,
                    resource: e.resource,
                    origin: e.location,
                    text: e.error.to_string(),
                })),
            }
        }
        Ok(objects)
    }

    /// These objects and `other`'s, as if both had been applied.
    pub fn add(&mut self, other: Objects) {
        self.read.extend(other.read);
        self.messages.extend(other.messages);
        if let Some(pods) = other.pods {
            self.pods.get_or_insert_with(Vec::new).extend(pods);
        }
    }

    /// Every finding, by where the object was read.
    pub fn findings(self) -> Vec<Message> {
        let mut messages = self.messages;
        messages.extend(references(&self.read));
        messages.extend(selectors::findings(&self.read, self.pods.as_deref()));
        messages.sort_by(|a, b| (&a.origin, &a.text).cmp(&(&b.origin, &b.text)));
        messages
    }
}

/// Every finding in the YAML files of `paths`.
pub fn analyze(paths: &[PathBuf]) -> anyhow::Result<Vec<Message>> {
    Ok(Objects::from_files(paths)?.findings())
}

/// What the loaded objects name that none of them defines, and hosts claimed twice.
fn references(read: &[(Resource, String)]) -> Vec<Message> {
    let snapshot = Snapshot::of_config(read.iter().map(|(r, _)| r).collect());
    let mut messages = Vec::new();
    let mut mesh_hosts: BTreeMap<String, String> = BTreeMap::new();
    for (resource, origin) in read {
        let Resource::VirtualService(vs) = resource else {
            continue;
        };
        let mut found = |text: String| {
            messages.push(Message {
                code: NOT_FOUND,
                resource: resource.describe(),
                origin: origin.clone(),
                text,
            })
        };
        let namespace = &vs.metadata.namespace;
        for gateway in &vs.spec.gateways {
            if gateway != "mesh" && !gateway_defined(&snapshot, gateway, namespace) {
                found(format!("Referenced gateway not found: {gateway:?}"));
            }
        }
        for destination in destinations(&vs.spec) {
            let host = resolve_host(&destination.host, namespace, &snapshot.domain);
            if host.starts_with('*') {
                continue;
            }
            if !snapshot
                .services
                .keys()
                .any(|known| host_matches(known, &host))
            {
                found(format!("Referenced host not found: {:?}", destination.host));
            } else if let Some(subset) = &destination.subset
                && !subset_defined(&snapshot, &host, subset)
            {
                found(format!(
                    "Referenced host+subset in destinationrule not found: \"{}+{subset}\"",
                    destination.host
                ));
            }
        }
        if bound_to_mesh(vs) {
            for host in &vs.spec.hosts {
                let host = resolve_host(host, namespace, &snapshot.domain);
                let name = resource.describe();
                if let Some(first) = mesh_hosts.insert(host.clone(), name.clone()) {
                    messages.push(Message {
                        code: CONFLICTING_HOSTS,
                        resource: name,
                        origin: origin.clone(),
                        text: format!(
                            "The VirtualServices {first} and this one, bound to the mesh, both define host {host:?}; only one applies"
                        ),
                    });
                }
            }
        }
    }
    messages
}

/// Every destination a VirtualService's routes and mirrors send to.
fn destinations(spec: &VirtualServiceSpec) -> Vec<&Destination> {
    let mut all = Vec::new();
    for http in &spec.http {
        all.extend(http.route.iter().map(|r| &r.destination));
        all.extend(&http.mirror);
        all.extend(http.mirrors.iter().map(|m| &m.destination));
    }
    for tcp in &spec.tcp {
        all.extend(tcp.route.iter().map(|r| &r.destination));
    }
    for tls in &spec.tls {
        all.extend(tls.route.iter().map(|r| &r.destination));
    }
    all
}

/// Whether `reference` (`NAME` in `namespace`, or `NAMESPACE/NAME`) names a Gateway.
fn gateway_defined(snapshot: &Snapshot, reference: &str, namespace: &str) -> bool {
    let (namespace, name) = reference.split_once('/').unwrap_or((namespace, reference));
    snapshot
        .gateways
        .iter()
        .any(|g| g.metadata.namespace == namespace && g.metadata.name == name)
}

/// Whether some DestinationRule for `host` defines `subset`.
fn subset_defined(snapshot: &Snapshot, host: &str, subset: &str) -> bool {
    snapshot.destination_rules.iter().any(|dr| {
        let pattern = resolve_host(&dr.spec.host, &dr.metadata.namespace, &snapshot.domain);
        host_matches(&pattern, host) && dr.spec.subsets.iter().any(|s| s.name == subset)
    })
}

/// A VirtualService without gateways, or naming `mesh`, routes the sidecars' traffic.
fn bound_to_mesh(vs: &Config<VirtualServiceSpec>) -> bool {
    vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, yaml: &str) {
        std::fs::write(dir.join(name), yaml).unwrap();
    }

    const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\n\
                            spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n---\n\
                            apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
                            metadata: {name: reviews, namespace: shop}\n\
                            spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}\n";

    #[test]
    fn references_nothing_defines_are_errors_with_istioctls_codes() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "services.yaml", SERVICES);
        write(
            dir.path(),
            "routes.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: shop}\n\
             spec:\n  hosts: [reviews]\n  gateways: [mesh, front]\n  http:\n  \
             - route: [{destination: {host: reviews, subset: v1}, weight: 50}, {destination: {host: reviews, subset: v3}, weight: 50}]\n  \
             - route: [{destination: {host: ratings}}]\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: again, namespace: shop}\n\
             spec: {hosts: [reviews.shop.svc.cluster.local], http: [{route: [{destination: {host: reviews}}]}]}\n",
        );
        write(
            dir.path(),
            "broken.yaml",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad, namespace: shop}\nspec: {host: reviews, trafficPolicy: {loadBalancer: {simple: FASTEST}}}\n",
        );
        let found: Vec<String> = analyze(&[dir.path().to_path_buf()])
            .unwrap()
            .iter()
            .map(|m| {
                m.to_string()
                    .replace(&dir.path().display().to_string(), "DIR")
            })
            .collect();
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].starts_with("Error [IST0106] (DestinationRule shop/bad DIR/broken.yaml) spec.trafficPolicy.loadBalancer.simple"), "{found:#?}");
        for expected in [
            "Error [IST0101] (VirtualService shop/reviews DIR/routes.yaml) Referenced gateway not found: \"front\"",
            "Error [IST0101] (VirtualService shop/reviews DIR/routes.yaml) Referenced host+subset in destinationrule not found: \"reviews+v3\"",
            "Error [IST0101] (VirtualService shop/reviews DIR/routes.yaml) Referenced host not found: \"ratings\"",
            "Error [IST0109] (VirtualService shop/again DIR/routes.yaml) The VirtualServices VirtualService shop/reviews and this one, bound to the mesh, both define host \"reviews.shop.svc.cluster.local\"; only one applies",
        ] {
            assert!(
                found.iter().any(|f| f == expected),
                "{expected} in {found:#?}"
            );
        }
    }

    #[test]
    fn consistent_config_has_nothing_to_say() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "services.yaml", SERVICES);
        let routes = dir.path().join("routes.yml");
        std::fs::write(
            &routes,
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: shop}\n\
             spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}, {route: [{destination: {host: '*.example.com'}}]}]}\n",
        )
        .unwrap();
        let services = dir.path().join("services.yaml");
        assert_eq!(analyze(&[services, routes]).unwrap(), Vec::new());
        let missing = analyze(&[dir.path().join("nothing.yaml")]).unwrap_err();
        assert!(missing.to_string().contains("nothing.yaml"), "{missing}");
    }
}
