//! Istio's injection templates, rendered for one pod: `sidecar` adds the `istio-proxy`
//! container (our agent + Envoy) and the `istio-init` init container that redirects the
//! pod's traffic to it; `gateway` fills in the `istio-proxy` container a gateway
//! Deployment declares with `image: auto`. The result is the whole injected pod; the
//! webhook answers with the difference as a JSONPatch.

use crate::policy::Template;
use crate::{INIT_CONTAINER, PROXY_CONTAINER, Revision, annotations, labels, probes};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Volume};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Who injected a pod: the managed data plane replaces only webhook-injected pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedBy {
    /// The mutating webhook.
    Webhook,
    /// `fleetmesh kube-inject`, by hand.
    KubeInject,
}

/// What the templates need beyond the pod.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The revision whose proxy is injected.
    pub revision: &'static Revision,
    /// meshd's xDS (and CA) address, as proxies in the cluster reach it.
    pub xds_address: String,
    /// The mesh's trust domain, for the proxy's identity.
    pub trust_domain: String,
    /// The cluster's id (`CLUSTER_ID` of the proxies).
    pub cluster_id: String,
    /// The cluster's CNI plugin redirects traffic: no `istio-init` container.
    pub cni_managed: bool,
    /// Who injects.
    pub injected_by: InjectedBy,
    /// The proxy version to inject instead of the channel table's: the revision's
    /// DataPlaneControl `spec.proxyVersion`, which starts a managed rollout.
    pub proxy_version: Option<String>,
    /// Where the cluster pulls the images from (`fleetmesh install --hub`).
    pub hub: String,
    /// The proxy speaks delta xDS (`XDS_MODE=delta`; state of the world otherwise): a
    /// mesh whose sidecars fetch routes on demand needs it, which only delta offers.
    pub delta_xds: bool,
}

impl Settings {
    /// The proxy version pods get.
    pub fn proxy_version(&self) -> &str {
        self.proxy_version
            .as_deref()
            .unwrap_or(self.revision.proxy_version)
    }

    /// The `istio-proxy` image of that version.
    pub fn proxy_image(&self) -> String {
        crate::channel::proxy_image(&self.hub, self.proxy_version())
    }
}

/// The agent's working directory in the pod (bootstrap, SDS socket).
const PROXY_DIR: &str = "/etc/istio/proxy";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// The mesh roots, from ConfigMap `istio-ca-root-cert` (meshd keeps one in every
/// namespace): the agent verifies meshd's TLS port with them.
const ROOT_CERT_DIR: &str = "/var/run/secrets/istio";
/// The ConfigMap of the mesh roots, mounted at `ROOT_CERT_DIR`.
pub const ROOT_CERT_CONFIG_MAP: &str = "istio-ca-root-cert";
/// The user the proxy runs as; `istio-init` exempts its traffic from redirection.
const PROXY_UID: i64 = 1337;
/// The volumes every template adds.
const VOLUMES: [&str; 4] = ["istio-envoy", "istio-data", "istio-token", "istiod-ca-cert"];

/// A pod the template cannot be applied to (and why).
#[derive(Debug, thiserror::Error)]
#[error("cannot inject: {0}")]
pub struct InjectError(String);

/// Istio's labels on an injected pod: its canonical service name and revision (from the
/// usual app labels, else its owner's name), the mTLS mode its peers use, and which
/// revision and proxy version injected it.
fn add_labels(
    metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    template: Template,
    settings: &Settings,
) {
    let labels_map = metadata.labels.get_or_insert_default();
    let canonical_name = labels_map
        .get("app.kubernetes.io/name")
        .or_else(|| labels_map.get("app"))
        .cloned()
        .or_else(|| metadata.generate_name.as_ref().map(|g| owner_name(g)))
        .or_else(|| metadata.name.clone())
        .unwrap_or_default();
    let labels_map = metadata.labels.get_or_insert_default();
    let canonical_revision = labels_map
        .get("app.kubernetes.io/version")
        .or_else(|| labels_map.get("version"))
        .cloned()
        .unwrap_or_else(|| "latest".into());
    if template == Template::Sidecar {
        labels_map.insert(labels::TLS_MODE.into(), "istio".into());
    }
    labels_map
        .entry(labels::CANONICAL_NAME.into())
        .or_insert(canonical_name);
    labels_map
        .entry(labels::CANONICAL_REVISION.into())
        .or_insert(canonical_revision);
    labels_map.insert(labels::REVISION.into(), settings.revision.name.into());
    labels_map.insert(
        labels::PROXY_VERSION.into(),
        settings.proxy_version().into(),
    );
}

/// The pod with its proxy.
pub fn inject(pod: &Pod, template: Template, settings: &Settings) -> Result<Pod, InjectError> {
    let mut pod = pod.clone();
    let spec = pod
        .spec
        .as_mut()
        .ok_or_else(|| InjectError("the pod has no spec".into()))?;
    let native = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::NATIVE_SIDECAR))
        .is_some_and(|v| v == "true");
    let rewrite_probes = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::REWRITE_PROBES))
        .is_none_or(|v| v != "false");
    let mut init_containers = Vec::new();
    match template {
        Template::Sidecar => {
            let probers = if rewrite_probes {
                probes::rewrite(&mut spec.containers)
            } else {
                Default::default()
            };
            let mut proxy = proxy_container(settings, "sidecar", "REDIRECT")?;
            if !probers.is_empty() {
                proxy.env.get_or_insert_default().push(EnvVar {
                    name: probes::APP_PROBERS_ENV.into(),
                    value: Some(Value::Object(probers).to_string()),
                    ..Default::default()
                });
            }
            if !settings.cni_managed {
                init_containers.push(INIT_CONTAINER);
                spec.init_containers
                    .get_or_insert_default()
                    .push(init_container(settings)?);
            }
            if native {
                // Kubernetes runs a restartable init container beside the app, started
                // before it and stopped after it; the app starts once it is ready.
                proxy.restart_policy = Some("Always".into());
                proxy.startup_probe = Some(typed(json!({
                    "httpGet": {"path": "/healthz/ready", "port": READINESS_PORT},
                    "periodSeconds": 1, "failureThreshold": HOLD_SECONDS,
                }))?);
                spec.init_containers.get_or_insert_default().push(proxy);
            } else {
                // First, and the kubelet starts the next container only once this one's
                // postStart hook ends: the app's first request finds Envoy configured
                // (Istio's holdApplicationUntilProxyStarts, always on here).
                proxy.lifecycle = Some(typed(json!({
                    "postStart": {"exec": {"command": [
                        "fleetmesh-agent", "wait", "--workdir", PROXY_DIR,
                        "--timeout", format!("{HOLD_SECONDS}s"),
                    ]}},
                }))?);
                spec.containers.insert(0, proxy);
            }
        }
        Template::Gateway => {
            let rendered = proxy_container(settings, "router", "NONE")?;
            let declared = spec
                .containers
                .iter_mut()
                .find(|c| c.name == PROXY_CONTAINER)
                .ok_or_else(|| InjectError(format!("no {PROXY_CONTAINER} container")))?;
            fill_in(declared, rendered);
        }
    }
    add_volumes(spec)?;
    let first_app = spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .find(|n| *n != PROXY_CONTAINER)
        .map(str::to_string);

    add_labels(&mut pod.metadata, template, settings);
    tell_the_agent_the_labels(spec, &pod.metadata);

    let status = json!({
        "initContainers": init_containers,
        "containers": [PROXY_CONTAINER],
        "volumes": VOLUMES,
        "imagePullSecrets": null,
        "revision": settings.revision.name,
    });
    let annotations_map = pod.metadata.annotations.get_or_insert_default();
    annotations_map.insert(annotations::STATUS.into(), status.to_string());
    annotations_map.insert(
        annotations::INJECTED_BY.into(),
        match settings.injected_by {
            InjectedBy::Webhook => "webhook",
            InjectedBy::KubeInject => "kube-inject",
        }
        .into(),
    );
    if let Some(first_app) = first_app {
        annotations_map
            .entry(annotations::DEFAULT_CONTAINER.into())
            .or_insert(first_app);
    }
    scraped_at_the_agent(spec, annotations_map);
    Ok(pod)
}

/// Prometheus scrapes the workload's metrics at the agent, as Istio's pods say. An app
/// that asks to be scraped itself has its annotations moved aside for the agent
/// ([`APP_METRICS_ENV`]), which serves the app's metrics with the proxy's (Istio's
/// metrics merging); `prometheus.io/scrape: "false"` or
/// `prometheus.istio.io/merge-metrics: "false"` leaves the annotations alone.
fn scraped_at_the_agent(
    spec: &mut k8s_openapi::api::core::v1::PodSpec,
    annotations_map: &mut BTreeMap<String, String>,
) {
    let said = |key: &str| annotations_map.get(key).map(String::as_str);
    let status_port = probes::STATUS_PORT.to_string();
    if said(annotations::PROMETHEUS_SCRAPE).is_some_and(|s| s.eq_ignore_ascii_case("false"))
        || said(annotations::MERGE_METRICS).is_some_and(|s| s.eq_ignore_ascii_case("false"))
        || said(annotations::PROMETHEUS_PORT) == Some(status_port.as_str())
    {
        return;
    }
    if said(annotations::PROMETHEUS_SCRAPE).is_some() {
        let original = json!({
            "scrape": said(annotations::PROMETHEUS_SCRAPE).unwrap_or_default(),
            "port": said(annotations::PROMETHEUS_PORT).unwrap_or_default(),
            "path": said(annotations::PROMETHEUS_PATH).unwrap_or_default(),
        });
        tell_the_agent(spec, APP_METRICS_ENV, original.to_string());
    }
    let scrape = [
        (annotations::PROMETHEUS_SCRAPE, "true".to_string()),
        (annotations::PROMETHEUS_PORT, status_port),
        (
            annotations::PROMETHEUS_PATH,
            "/stats/prometheus".to_string(),
        ),
    ];
    annotations_map.extend(scrape.map(|(k, v)| (k.to_string(), v)));
}

/// Where the agent finds the app's own Prometheus annotations (JSON), as Istio's agent.
pub const APP_METRICS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";

/// The pod's labels (as injected: with Istio's canonical ones) for its agent, which has
/// its Envoy report them in metrics (`app`, `version`, the Deployment by
/// `pod-template-hash`), as Istio's `ISTIO_METAJSON_LABELS`. A label changed on the
/// running pod later is not seen until it restarts.
fn tell_the_agent_the_labels(
    spec: &mut k8s_openapi::api::core::v1::PodSpec,
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) {
    let labels = serde_json::to_string(&metadata.labels.clone().unwrap_or_default())
        .expect("labels serialize");
    tell_the_agent(spec, LABELS_ENV, labels);
}

/// Sets `name` to `value` in the environment of the proxy container (a regular or, as
/// a native sidecar, an init container), which the agent reads.
fn tell_the_agent(spec: &mut k8s_openapi::api::core::v1::PodSpec, name: &str, value: String) {
    let proxy = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
        .find(|c| c.name == PROXY_CONTAINER);
    if let Some(proxy) = proxy {
        proxy.env.get_or_insert_default().push(EnvVar {
            name: name.into(),
            value: Some(value),
            ..Default::default()
        });
    }
}

/// Where the agent finds the pod's labels (JSON).
pub const LABELS_ENV: &str = "ISTIO_METAJSON_LABELS";

/// The JSONPatch turning `original` into `injected`. Both sides go through the same
/// typed form, so fields this build does not know never show up as removed.
pub fn patch(original: &Pod, injected: &Pod) -> json_patch::Patch {
    let before = serde_json::to_value(original).expect("a pod always serializes");
    let after = serde_json::to_value(injected).expect("a pod always serializes");
    json_patch::diff(&before, &after)
}

/// `reviews-7d4b9c5f8-` (a ReplicaSet's pod prefix) → `reviews`: the Deployment's name,
/// without the pod-template hash the ReplicaSet adds.
fn owner_name(generate_name: &str) -> String {
    let trimmed = generate_name.trim_end_matches('-');
    match trimmed.rsplit_once('-') {
        Some((owner, hash)) if looks_like_template_hash(hash) => owner.to_string(),
        _ => trimmed.to_string(),
    }
}

fn looks_like_template_hash(part: &str) -> bool {
    (5..=10).contains(&part.len())
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && part.bytes().any(|b| b.is_ascii_digit())
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, InjectError> {
    serde_json::from_value(value).map_err(|e| InjectError(format!("template: {e}")))
}

/// Envoy's readiness port (200 once its first config is in force).
const READINESS_PORT: i32 = 15021;

/// How long a pod's app waits for its proxy to be ready before the kubelet gives up on
/// the proxy (and restarts it).
const HOLD_SECONDS: u32 = 60;

fn proxy_container(
    settings: &Settings,
    kind: &str,
    interception: &str,
) -> Result<Container, InjectError> {
    let field = |path: &str| json!({"valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        ("POD_NAME", field("metadata.name")),
        ("POD_NAMESPACE", field("metadata.namespace")),
        ("INSTANCE_IP", field("status.podIP")),
        ("SERVICE_ACCOUNT", field("spec.serviceAccountName")),
        ("HOST_IP", field("status.hostIP")),
    ];
    let values = [
        ("XDS_ADDRESS", settings.xds_address.as_str()),
        ("TRUST_DOMAIN", settings.trust_domain.as_str()),
        ("ISTIO_META_CLUSTER_ID", settings.cluster_id.as_str()),
        ("ISTIO_META_INTERCEPTION_MODE", interception),
        (
            "FLEETMESH_TOKEN_FILE",
            "/var/run/secrets/tokens/istio-token",
        ),
        ("XDS_ROOT_CERT", "/var/run/secrets/istio/root-cert.pem"),
    ];
    env.extend(values.map(|(name, value)| (name, json!({"value": value}))));
    if settings.delta_xds {
        env.push(("XDS_MODE", json!({"value": "delta"})));
    }
    let env: Vec<Value> = env
        .into_iter()
        .map(|(name, mut value)| {
            value["name"] = json!(name);
            value
        })
        .collect();
    typed(json!({
        "name": PROXY_CONTAINER,
        "image": settings.proxy_image(),
        "args": ["--kind", kind, "--workdir", PROXY_DIR, "--status-port", probes::STATUS_PORT.to_string()],
        "env": env,
        "ports": [
            {"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"},
            {"name": "status-port", "containerPort": READINESS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": READINESS_PORT},
            "initialDelaySeconds": 1, "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 30,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "securityContext": {
            "runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": true,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "privileged": false,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "istio-envoy", "mountPath": PROXY_DIR},
            {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
            {"name": "istio-token", "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": "istiod-ca-cert", "mountPath": ROOT_CERT_DIR, "readOnly": true},
        ],
    }))
}

/// The arguments of `fleetmesh-iptables`, as `istio-init` and the CNI plugin run it:
/// everything to Envoy except the proxy's own traffic and its own ports.
pub fn redirect_args() -> Vec<String> {
    let excluded = [15090, READINESS_PORT, probes::STATUS_PORT]
        .map(|p| p.to_string())
        .join(",");
    [
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--outbound-port",
        "15001",
        "--inbound-port",
        "15006",
        "--exclude-inbound-ports",
        &excluded,
    ]
    .map(str::to_string)
    .to_vec()
}

/// Whether `pod` runs an injected proxy that captures its traffic (the sidecar
/// template; a gateway does not): what the CNI plugin redirects.
pub fn captures_traffic(pod: &Pod) -> bool {
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(annotations::STATUS));
    injected
        && proxy_environment(pod)
            .get("ISTIO_META_INTERCEPTION_MODE")
            .is_some_and(|mode| mode == "REDIRECT")
}

fn init_container(settings: &Settings) -> Result<Container, InjectError> {
    typed(json!({
        "name": INIT_CONTAINER,
        "image": settings.proxy_image(),
        "command": ["fleetmesh-iptables"],
        "args": redirect_args(),
        "resources": {
            "requests": {"cpu": "10m", "memory": "10Mi"},
            "limits": {"cpu": "100m", "memory": "50Mi"},
        },
        "securityContext": {
            "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false, "privileged": false,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }))
}

/// The gateway's declared container keeps what the user set (ports, resources, extra
/// env); the template supplies the rest, and the image when it says `auto`.
fn fill_in(declared: &mut Container, rendered: Container) {
    if declared.image.as_deref().is_none_or(|i| i == "auto") {
        declared.image = rendered.image;
        // The API server defaulted the pull policy for `auto`, a tagless image (Always);
        // the real image's tag is a proxy version, which never changes content, so a
        // node that has it (or a cluster without a registry) need not pull it.
        declared.image_pull_policy = Some("IfNotPresent".into());
    }
    if declared.args.as_ref().is_none_or(|a| a.is_empty()) {
        declared.args = rendered.args;
    }
    let env = declared.env.get_or_insert_default();
    for var in rendered.env.unwrap_or_default() {
        if !env.iter().any(|e| e.name == var.name) {
            env.push(var);
        }
    }
    let ports = declared.ports.get_or_insert_default();
    for port in rendered.ports.unwrap_or_default() {
        if !ports
            .iter()
            .any(|p| p.container_port == port.container_port)
        {
            ports.push(port);
        }
    }
    let mounts = declared.volume_mounts.get_or_insert_default();
    for mount in rendered.volume_mounts.unwrap_or_default() {
        if !mounts.iter().any(|m| m.name == mount.name) {
            mounts.push(mount);
        }
    }
    declared.readiness_probe = declared.readiness_probe.take().or(rendered.readiness_probe);
    declared.resources = declared.resources.take().or(rendered.resources);
    declared.security_context = declared
        .security_context
        .take()
        .or(rendered.security_context);
}

fn add_volumes(spec: &mut PodSpec) -> Result<(), InjectError> {
    let volumes: Vec<Volume> = typed(json!([
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {"name": "istio-data", "emptyDir": {}},
        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token",
        }}]}},
        {"name": "istiod-ca-cert", "configMap": {"name": ROOT_CERT_CONFIG_MAP}},
    ]))?;
    let existing = spec.volumes.get_or_insert_default();
    for volume in volumes {
        if !existing.iter().any(|v| v.name == volume.name) {
            existing.push(volume);
        }
    }
    Ok(())
}

/// The values of the pod's `istio-proxy` environment that do not come from the pod
/// itself (fieldRefs): what an agent started for this pod outside the cluster needs.
pub fn proxy_environment(pod: &Pod) -> BTreeMap<String, String> {
    let spec = pod.spec.as_ref();
    let proxy = spec.and_then(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .find(|c| c.name == PROXY_CONTAINER)
    });
    proxy
        .and_then(|c| c.env.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Channel;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn settings(cni_managed: bool) -> Settings {
        Settings {
            revision: Revision::of(Channel::Rapid),
            xds_address: "127.0.0.1:15010".into(),
            trust_domain: "cluster.local".into(),
            cluster_id: "c1".into(),
            cni_managed,
            injected_by: InjectedBy::Webhook,
            proxy_version: None,
            hub: "registry.example.com/mesh".into(),
            delta_xds: false,
        }
    }

    fn app_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"generateName": "reviews-5f7d8c9b4-", "labels": {"app": "reviews", "version": "v1"}},
            "spec": {"containers": [{"name": "reviews", "image": "reviews:v1",
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}]},
        }))
        .unwrap()
    }

    fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
        let spec = pod.spec.as_ref()?;
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
    }

    #[test]
    fn a_mesh_with_routes_on_demand_injects_delta_xds() {
        let pod = inject(&app_pod(), Template::Sidecar, &settings(false)).unwrap();
        let env = proxy_environment(&pod);
        assert!(
            !env.contains_key("XDS_MODE"),
            "the agent's default: {env:?}"
        );
        let delta = Settings {
            delta_xds: true,
            ..settings(false)
        };
        let pod = inject(&app_pod(), Template::Sidecar, &delta).unwrap();
        assert_eq!(proxy_environment(&pod)["XDS_MODE"], "delta");
    }

    #[test]
    fn sidecar_template_adds_proxy_init_volumes_and_status() {
        let pod = inject(&app_pod(), Template::Sidecar, &settings(false)).unwrap();
        let proxy = container(&pod, PROXY_CONTAINER).expect("istio-proxy");
        assert_eq!(
            proxy.image.as_deref(),
            Some(
                format!(
                    "registry.example.com/mesh/proxyv2:{}",
                    Revision::of(Channel::Rapid).proxy_version
                )
                .as_str()
            ),
            "the install's hub, the revision's proxy version"
        );
        assert_eq!(
            pod.spec.as_ref().unwrap().containers[0].name,
            PROXY_CONTAINER
        );
        let env = proxy_environment(&pod);
        assert_eq!(env["XDS_ADDRESS"], "127.0.0.1:15010");
        assert_eq!(env["ISTIO_META_INTERCEPTION_MODE"], "REDIRECT");
        assert!(env[probes::APP_PROBERS_ENV].contains("/app-health/reviews/readyz"));
        assert!(container(&pod, INIT_CONTAINER).is_some());
        let volumes = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 4);
        assert_eq!(env["XDS_ROOT_CERT"], "/var/run/secrets/istio/root-cert.pem");
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::REVISION], "asm-managed-rapid");
        assert_eq!(labels[labels::TLS_MODE], "istio");
        assert_eq!(labels[labels::CANONICAL_NAME], "reviews");
        assert_eq!(labels[labels::CANONICAL_REVISION], "v1");
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        let status: Value = serde_json::from_str(&annotations[annotations::STATUS]).unwrap();
        assert_eq!(status["revision"], "asm-managed-rapid");
        assert_eq!(status["initContainers"], json!(["istio-init"]));
        assert_eq!(annotations[annotations::DEFAULT_CONTAINER], "reviews");
        assert_eq!(annotations[annotations::INJECTED_BY], "webhook");
        assert_eq!(annotations[annotations::PROMETHEUS_PORT], "15020");
        assert_eq!(
            annotations[annotations::PROMETHEUS_PATH],
            "/stats/prometheus"
        );
    }

    #[test]
    fn an_apps_own_scrape_annotations_go_to_the_agent() {
        let injected = |given: &[(&str, &str)]| {
            let mut pod = app_pod();
            pod.metadata.annotations = Some(
                given
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            let pod = inject(&pod, Template::Sidecar, &settings(false)).unwrap();
            let annotations = pod.metadata.annotations.clone().unwrap();
            let said = |key: &str| annotations.get(key).cloned().unwrap_or_default();
            let env = proxy_environment(&pod);
            (
                [
                    annotations::PROMETHEUS_SCRAPE,
                    annotations::PROMETHEUS_PORT,
                    annotations::PROMETHEUS_PATH,
                ]
                .map(said),
                env.get(APP_METRICS_ENV).cloned(),
            )
        };
        let agents = ["true", "15020", "/stats/prometheus"].map(String::from);
        let app = [
            (annotations::PROMETHEUS_SCRAPE, "true"),
            (annotations::PROMETHEUS_PORT, "9090"),
        ];
        let (annotations, handed) = injected(&app);
        assert_eq!(annotations, agents);
        let handed: Value = serde_json::from_str(&handed.unwrap()).unwrap();
        assert_eq!(
            handed,
            json!({"scrape": "true", "port": "9090", "path": ""})
        );
        assert_eq!(injected(&[]), (agents.clone(), None));
        for kept in [
            vec![(annotations::PROMETHEUS_SCRAPE, "false")],
            vec![app[0], app[1], (annotations::MERGE_METRICS, "false")],
        ] {
            let (annotations, handed) = injected(&kept);
            assert_ne!(annotations, agents, "{kept:?}");
            assert_eq!(handed, None, "{kept:?}");
        }
    }

    #[test]
    fn cni_managed_clusters_get_no_init_container() {
        let pod = inject(&app_pod(), Template::Sidecar, &settings(true)).unwrap();
        assert!(container(&pod, INIT_CONTAINER).is_none());
        let status: Value =
            serde_json::from_str(&pod.metadata.annotations.as_ref().unwrap()[annotations::STATUS])
                .unwrap();
        assert_eq!(status["initContainers"], json!([]));
    }

    #[test]
    fn native_sidecars_run_as_restartable_init_containers() {
        let mut pod = app_pod();
        pod.metadata.annotations =
            Some([(annotations::NATIVE_SIDECAR.into(), "true".into())].into());
        let pod = inject(&pod, Template::Sidecar, &settings(false)).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert!(spec.containers.iter().all(|c| c.name != PROXY_CONTAINER));
        let inits: Vec<_> = spec
            .init_containers
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            inits,
            [INIT_CONTAINER, PROXY_CONTAINER],
            "iptables first, then the proxy"
        );
        let proxy = container(&pod, PROXY_CONTAINER).unwrap();
        assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
        let startup = proxy.startup_probe.as_ref().expect("the app waits for it");
        let ready = startup.http_get.as_ref().unwrap();
        assert_eq!(ready.path.as_deref(), Some("/healthz/ready"));
        assert_eq!(ready.port, IntOrString::Int(15021));
        assert!(proxy.lifecycle.is_none());
    }

    #[test]
    fn the_app_starts_once_its_proxy_is_ready() {
        let pod = inject(&app_pod(), Template::Sidecar, &settings(false)).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.containers[0].name, PROXY_CONTAINER);
        let hook = spec.containers[0]
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone())
            .expect("a postStart hook on the proxy");
        assert_eq!(
            hook,
            [
                "fleetmesh-agent",
                "wait",
                "--workdir",
                "/etc/istio/proxy",
                "--timeout",
                "60s"
            ]
        );
        assert!(
            spec.containers[1].lifecycle.is_none(),
            "the app's own is left"
        );
    }

    #[test]
    fn gateway_template_fills_in_the_declared_container() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"labels": {"istio": "ingressgateway"},
                         "annotations": {"inject.istio.io/templates": "gateway"}},
            "spec": {"containers": [{"name": "istio-proxy", "image": "auto",
                "imagePullPolicy": "Always",
                "env": [{"name": "ISTIO_META_CLUSTER_ID", "value": "mine"}]}]},
        }))
        .unwrap();
        let injected = inject(&pod, Template::Gateway, &settings(false)).unwrap();
        let spec = injected.spec.as_ref().unwrap();
        assert_eq!(spec.containers.len(), 1);
        assert!(spec.init_containers.is_none(), "gateways capture nothing");
        let env = proxy_environment(&injected);
        assert_eq!(
            env["ISTIO_META_CLUSTER_ID"], "mine",
            "the user's value stays"
        );
        assert_eq!(env["ISTIO_META_INTERCEPTION_MODE"], "NONE");
        let proxy = &spec.containers[0];
        assert_eq!(proxy.image, Some(settings(false).proxy_image()));
        assert_eq!(
            proxy.image_pull_policy.as_deref(),
            Some("IfNotPresent"),
            "Always was defaulted for `auto`, not for a versioned image"
        );
        assert!(proxy.args.as_ref().unwrap().contains(&"router".to_string()));
        assert!(
            !injected
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(labels::TLS_MODE)
        );
    }

    #[test]
    fn the_patch_turns_the_pod_into_the_injected_pod() {
        let original = app_pod();
        let injected = inject(&original, Template::Sidecar, &settings(false)).unwrap();
        let patch = patch(&original, &injected);
        let mut patched = serde_json::to_value(&original).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched, serde_json::to_value(&injected).unwrap());
    }

    #[test]
    fn owner_names_drop_the_replicaset_hash() {
        assert_eq!(owner_name("reviews-5f7d8c9b4-"), "reviews");
        assert_eq!(owner_name("my-app-5f7d8c9b4-"), "my-app");
        assert_eq!(owner_name("solo-"), "solo");
    }
}
