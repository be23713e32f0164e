//! Everything `fleetmesh install` applies to a cluster, rendered as files: Istio's CRDs,
//! the istio-system namespace and mesh config, meshd's RBAC, the validating webhook and
//! one injection webhook per revision plus the `default` tag. Webhooks come last, so a
//! failed install never leaves a webhook that blocks pod creation behind.

use fleetmesh_inject::channel::{DEFAULT_TAG, REVISIONS};
use fleetmesh_inject::webhook_path::InjectPath;
use fleetmesh_inject::{Channel, Revision, labels};
use serde_json::{Value, json};

/// Where the cluster's webhooks and proxies reach the hosted control plane (meshd's
/// `/v1/install`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    pub webhook_url: String,
    pub ca_bundle: String,
    pub xds_address: String,
    pub trust_domain: String,
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub project: String,
    pub location: String,
    pub cluster: String,
    pub channel: Channel,
    pub cni_managed: bool,
    /// Where the cluster pulls fleetmesh's images (`HUB/proxyv2:VERSION`).
    pub hub: String,
}

/// Another Istio control plane in the cluster, and what install may take from it.
#[derive(Debug, Clone, Default)]
pub struct Coexistence {
    /// What serves the cluster besides fleetmesh (`istiod in istio-system (1.27.0)`, an
    /// injector webhook), if anything does.
    pub other_istio: Option<String>,
    /// `--default-tag`: the `default` tag (and with it `istio-injection=enabled`) is
    /// fleetmesh's even beside another Istio.
    pub take_default_tag: bool,
}

impl Coexistence {
    /// Whether install applies the `default` tag: unless another Istio serves the
    /// cluster (whose namespaces it would take over), or when asked.
    pub fn default_tag(&self) -> bool {
        self.other_istio.is_none() || self.take_default_tag
    }
}

/// The MutatingWebhookConfiguration of the `default` tag, as Istio names it.
pub fn default_tag_configuration() -> String {
    format!("istio-revision-tag-{DEFAULT_TAG}")
}

/// One file of manifests, applied in order.
pub struct Manifest {
    /// Relative to the output directory.
    pub file: &'static str,
    pub yaml: String,
}

/// The root namespace, as Istio names it.
pub const ISTIO_SYSTEM: &str = "istio-system";
/// Marks what install manages, so a reader of the cluster knows where it came from.
pub const MANAGED_BY: &str = "fleetmesh.io/managed-by";

/// Every manifest install applies for `plan`, beside what `coexistence` found.
pub fn render(
    plan: &Plan,
    control_plane: &ControlPlane,
    coexistence: &Coexistence,
) -> Vec<Manifest> {
    let mut manifests = vec![
        Manifest {
            file: "manifests/01-crds.yaml",
            yaml: format!(
                "{}---\n{}",
                fleetmesh_kube::crds::istio_crds_yaml(),
                fleetmesh_dataplane::control::crd_yaml()
            ),
        },
        Manifest {
            file: "manifests/02-istio-system.yaml",
            yaml: documents(&istio_system(plan, control_plane)),
        },
        Manifest {
            file: "manifests/03-rbac.yaml",
            yaml: documents(&rbac()),
        },
    ];
    if plan.cni_managed {
        manifests.push(Manifest {
            file: "manifests/04-cni-node.yaml",
            yaml: documents(&cni_node(plan)),
        });
    }
    manifests.push(Manifest {
        file: "manifests/05-validation-webhook.yaml",
        yaml: documents(&[validation_webhook(control_plane, coexistence)]),
    });
    manifests.push(Manifest {
        file: "manifests/06-injection-webhooks.yaml",
        yaml: documents(&injection_webhooks(plan, control_plane, coexistence)),
    });
    manifests
}

fn documents(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).expect("manifests serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn managed_labels() -> Value {
    json!({ MANAGED_BY: "fleetmesh-install" })
}

fn istio_system(plan: &Plan, control_plane: &ControlPlane) -> Vec<Value> {
    let mesh = format!(
        "rootNamespace: {ISTIO_SYSTEM}\ntrustDomain: {}\noutboundTrafficPolicy:\n  mode: ALLOW_ANY\n",
        control_plane.trust_domain
    );
    vec![
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ISTIO_SYSTEM, "labels": managed_labels()},
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": ISTIO_SYSTEM, "labels": managed_labels()},
            "data": {"mesh": mesh},
        }),
        // The managed data plane of each revision; meshd fills in the status.
    ]
    .into_iter()
    .chain(REVISIONS.iter().map(|revision| {
        serde_json::to_value(fleetmesh_dataplane::control::for_revision(revision))
            .expect("a DataPlaneControl serializes")
    }))
    .chain([
        // What this cluster was installed with: the managed data plane and a re-run read it.
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": fleetmesh_kube::discovery::INSTALL_CONFIG_MAP, "namespace": ISTIO_SYSTEM, "labels": managed_labels()},
            "data": {
                "project": plan.project,
                "location": plan.location,
                "cluster": plan.cluster,
                "channel": plan.channel.to_string(),
                "defaultRevision": Revision::of(plan.channel).name,
                "cniManaged": plan.cni_managed.to_string(),
                "xdsAddress": control_plane.xds_address,
                "hub": plan.hub,
            },
        }),
    ])
    .collect()
}

/// The identity a hosted meshd uses in this cluster: read the mesh's config, workloads
/// and gateway credentials (Secrets), keep the mesh roots in every namespace, review
/// workload tokens and gateways' access to Secrets, record events.
fn rbac() -> Vec<Value> {
    let read = ["get", "list", "watch"];
    vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "fleetmesh-meshd", "namespace": ISTIO_SYSTEM, "labels": managed_labels()},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "fleetmesh-meshd", "labels": managed_labels()},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "services", "endpoints", "namespaces", "configmaps", "nodes", "secrets"], "verbs": read},
                // ConfigMap istio-ca-root-cert in every namespace.
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch", "update"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                {"apiGroups": ["networking.istio.io", "security.istio.io"], "resources": ["*"], "verbs": read},
                // meshd moves each revision's spec.proxyVersion forward with its releases.
                {"apiGroups": ["mesh.cloud.google.com"], "resources": ["dataplanecontrols"], "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": ["mesh.cloud.google.com"], "resources": ["dataplanecontrols/status"], "verbs": ["patch", "update"]},
                // The managed data plane: evictions, its Lease, its Events.
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": read},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
                {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": read},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "fleetmesh-meshd", "labels": managed_labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "fleetmesh-meshd"},
            "subjects": [{"kind": "ServiceAccount", "name": "fleetmesh-meshd", "namespace": ISTIO_SYSTEM}],
        }),
        // meshd renews its own short-lived token (TokenRequest), and no other account's.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "fleetmesh-meshd-token", "namespace": ISTIO_SYSTEM, "labels": managed_labels()},
            "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": ["fleetmesh-meshd"], "verbs": ["create"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "fleetmesh-meshd-token", "namespace": ISTIO_SYSTEM, "labels": managed_labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fleetmesh-meshd-token"},
            "subjects": [{"kind": "ServiceAccount", "name": "fleetmesh-meshd", "namespace": ISTIO_SYSTEM}],
        }),
    ]
}

/// `--option cni-managed`: the `istio-cni-node` DaemonSet puts `fleetmesh-cni` on every
/// node (chained after the cluster's network plugin), so injected pods need no
/// privileged `istio-init` container. It may read pods (to tell which to redirect).
fn cni_node(plan: &Plan) -> Vec<Value> {
    let revision = Revision::of(plan.channel);
    let namespace = "kube-system";
    let name = "istio-cni-node";
    let host_path = |volume: &str, path: &str| json!({"name": volume, "hostPath": {"path": path, "type": "DirectoryOrCreate"}});
    vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": managed_labels()},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": managed_labels()},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": managed_labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace, "labels": managed_labels()},
            "spec": {
                "selector": {"matchLabels": {"k8s-app": name}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {
                        "labels": {"k8s-app": name, "sidecar.istio.io/inject": "false"},
                    },
                    "spec": {
                        "serviceAccountName": name,
                        "hostNetwork": true,
                        "priorityClassName": "system-node-critical",
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{
                            "name": "install-cni",
                            "image": fleetmesh_inject::channel::proxy_image(&plan.hub, revision.proxy_version),
                            "command": ["fleetmesh-cni", "install"],
                            "securityContext": {"runAsUser": 0, "privileged": false},
                            "resources": {"requests": {"cpu": "10m", "memory": "20Mi"}},
                            "volumeMounts": [
                                {"name": "cni-bin-dir", "mountPath": "/host/opt/cni/bin"},
                                {"name": "cni-net-dir", "mountPath": "/host/etc/cni/net.d"},
                            ],
                        }],
                        "volumes": [
                            host_path("cni-bin-dir", "/opt/cni/bin"),
                            host_path("cni-net-dir", "/etc/cni/net.d"),
                        ],
                    },
                },
            },
        }),
    ]
}

fn client_config(control_plane: &ControlPlane, path: &str) -> Value {
    use base64::Engine;
    json!({
        "url": format!("{}{path}", control_plane.webhook_url),
        "caBundle": base64::engine::general_purpose::STANDARD.encode(&control_plane.ca_bundle),
    })
}

/// A bad Istio resource is refused at `kubectl apply`, naming the field. `Ignore`: when
/// the hosted control plane is unreachable, config can still be applied; meshd
/// validates everything it reads again, so an invalid object never reaches a proxy.
/// Beside another Istio, only objects labelled for fleetmesh's revisions, as a
/// revisioned istiod validates: the other control plane's config is its own to judge.
fn validation_webhook(control_plane: &ControlPlane, coexistence: &Coexistence) -> Value {
    let resources: Vec<&str> = fleetmesh_kube::crds::KINDS
        .iter()
        .map(|k| k.plural)
        .collect();
    let object_selector = match &coexistence.other_istio {
        None => json!({}),
        Some(_) => {
            let ours: Vec<&str> = REVISIONS.iter().map(|r| r.name).collect();
            json!({"matchExpressions": [{"key": labels::REVISION, "operator": "In", "values": ours}]})
        }
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "istio-validator-fleetmesh", "labels": managed_labels()},
        "webhooks": [{
            "name": "validation.istio.io",
            "clientConfig": client_config(control_plane, "/validate"),
            "rules": [{
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": ["networking.istio.io", "security.istio.io"],
                "apiVersions": ["*"],
                "resources": resources,
            }],
            "objectSelector": object_selector,
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    })
}

/// Istio's selectors: a namespace labelled `istio.io/rev=<rev>` (without the legacy
/// label), or a pod labelled so in a namespace with neither label; a pod labelled
/// `sidecar.istio.io/inject=false` never matches. The `default` tag also takes the
/// legacy `istio-injection=enabled` namespaces and `sidecar.istio.io/inject=true` pods.
/// `Fail`: a pod created while meshd cannot be reached waits (its ReplicaSet retries)
/// rather than starting without the proxy its namespace asked for.
fn injection_webhooks(
    plan: &Plan,
    control_plane: &ControlPlane,
    coexistence: &Coexistence,
) -> Vec<Value> {
    let exists = |key: &str| json!({"key": key, "operator": "DoesNotExist"});
    let is_in = |key: &str, value: &str| json!({"key": key, "operator": "In", "values": [value]});
    let not_false = json!({"key": labels::INJECT, "operator": "NotIn", "values": ["false"]});
    let webhook = |name: &str, path: &str, namespace: Vec<Value>, object: Vec<Value>| {
        json!({
            "name": name,
            "clientConfig": client_config(control_plane, path),
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchExpressions": namespace},
            "objectSelector": {"matchExpressions": object},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "reinvocationPolicy": "Never",
        })
    };
    let revision_webhooks = |label: &str, path: &str| {
        vec![
            webhook(
                "rev.namespace.sidecar-injector.istio.io",
                path,
                vec![is_in(labels::REVISION, label), exists(labels::INJECTION)],
                vec![not_false.clone()],
            ),
            webhook(
                "rev.object.sidecar-injector.istio.io",
                path,
                vec![exists(labels::REVISION), exists(labels::INJECTION)],
                vec![not_false.clone(), is_in(labels::REVISION, label)],
            ),
        ]
    };
    let path_of = |revision: &'static Revision| {
        InjectPath {
            revision,
            cluster: plan.cluster.clone(),
            cni_managed: plan.cni_managed,
            hub: plan.hub.clone(),
        }
        .to_path()
    };
    let configuration = |name: String, label: &str, webhooks: Vec<Value>| {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "labels": {MANAGED_BY: "fleetmesh-install", labels::REVISION: label}},
            "webhooks": webhooks,
        })
    };
    let mut configurations: Vec<Value> = REVISIONS
        .iter()
        .map(|revision| {
            configuration(
                format!("istio-sidecar-injector-{}", revision.name),
                revision.name,
                revision_webhooks(revision.name, &path_of(revision)),
            )
        })
        .collect();
    if !coexistence.default_tag() {
        return configurations;
    }
    let default_path = path_of(Revision::of(plan.channel));
    let mut tag = revision_webhooks(DEFAULT_TAG, &default_path);
    tag.push(webhook(
        "namespace.sidecar-injector.istio.io",
        &default_path,
        vec![is_in(labels::INJECTION, "enabled")],
        vec![not_false.clone()],
    ));
    tag.push(webhook(
        "object.sidecar-injector.istio.io",
        &default_path,
        vec![exists(labels::INJECTION), exists(labels::REVISION)],
        vec![is_in(labels::INJECT, "true"), exists(labels::REVISION)],
    ));
    configurations.push(configuration(default_tag_configuration(), DEFAULT_TAG, tag));
    configurations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            project: "p".into(),
            location: "us-central1".into(),
            cluster: "c1".into(),
            channel: Channel::Rapid,
            cni_managed: true,
            hub: fleetmesh_inject::DEFAULT_HUB.into(),
        }
    }

    fn control_plane() -> ControlPlane {
        ControlPlane {
            webhook_url: "https://127.0.0.1:15017".into(),
            ca_bundle: "-----BEGIN CERTIFICATE-----\n".into(),
            xds_address: "127.0.0.1:15010".into(),
            trust_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn webhooks_come_last_and_the_default_tag_follows_the_channel() {
        let manifests = render(&plan(), &control_plane(), &Coexistence::default());
        let files: Vec<&str> = manifests.iter().map(|m| m.file).collect();
        assert_eq!(
            files,
            [
                "manifests/01-crds.yaml",
                "manifests/02-istio-system.yaml",
                "manifests/03-rbac.yaml",
                "manifests/04-cni-node.yaml",
                "manifests/05-validation-webhook.yaml",
                "manifests/06-injection-webhooks.yaml",
            ]
        );
        let without_cni = Plan {
            cni_managed: false,
            ..plan()
        };
        assert!(
            render(&without_cni, &control_plane(), &Coexistence::default())
                .iter()
                .all(|m| !m.file.contains("cni"))
        );
        let injection = fleetmesh_kube::apply::documents(&manifests[5].yaml).unwrap();
        let names: Vec<_> = injection
            .iter()
            .map(|o| o.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "istio-sidecar-injector-asm-managed-rapid",
                "istio-sidecar-injector-asm-managed",
                "istio-sidecar-injector-asm-managed-stable",
                "istio-revision-tag-default",
            ]
        );
        let tag = &injection[3].data["webhooks"];
        assert_eq!(tag.as_array().unwrap().len(), 4);
        let url = tag[2]["clientConfig"]["url"].as_str().unwrap();
        assert_eq!(
            url,
            "https://127.0.0.1:15017/inject/asm-managed-rapid/cluster/c1/redirect/cni/hub/localhost/fleetmesh"
        );
        let validation = fleetmesh_kube::apply::documents(&manifests[4].yaml).unwrap();
        assert_eq!(
            validation[0].data["webhooks"][0]["objectSelector"],
            json!({}),
            "alone, fleetmesh validates every Istio object"
        );
    }

    #[test]
    fn beside_another_istio_no_default_tag_unless_asked_and_only_our_revisions_validated() {
        let beside = Coexistence {
            other_istio: Some("istiod in istio-system".into()),
            take_default_tag: false,
        };
        let manifests = render(&plan(), &control_plane(), &beside);
        let injection = fleetmesh_kube::apply::documents(&manifests[5].yaml).unwrap();
        assert!(
            injection
                .iter()
                .all(|o| o.metadata.name.as_deref() != Some("istio-revision-tag-default")),
            "the other Istio keeps istio-injection=enabled"
        );
        let validation = fleetmesh_kube::apply::documents(&manifests[4].yaml).unwrap();
        let selector = &validation[0].data["webhooks"][0]["objectSelector"]["matchExpressions"][0];
        assert_eq!(selector["key"], "istio.io/rev");
        assert_eq!(
            selector["values"],
            json!(["asm-managed-rapid", "asm-managed", "asm-managed-stable"])
        );

        let asked = Coexistence {
            take_default_tag: true,
            ..beside
        };
        let manifests = render(&plan(), &control_plane(), &asked);
        let injection = fleetmesh_kube::apply::documents(&manifests[5].yaml).unwrap();
        assert_eq!(injection.len(), 4, "--default-tag takes it");
    }
}
