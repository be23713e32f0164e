//! `fleetmesh install` against a real kube-apiserver, which then calls meshd's webhooks
//! over TLS: a re-run changes nothing; the install guide's labels decide injection; a bad
//! Istio resource is refused at apply; the guide's gateway YAML yields an injected
//! gateway pod, and a real Envoy with that pod's identity routes through a Gateway and
//! VirtualService from the cluster to a backend on loopback. (Pod IPs are fake,
//! 198.18.0.0/22, and never receive a packet.)

use fleetmesh_cli::install::manifests::Plan;
use fleetmesh_cli::install::meshd_api::MeshdApi;
use fleetmesh_cli::install::{self, InstallOptions};
use fleetmesh_cli::local_mesh::PodConnection;
use fleetmesh_e2e::*;
use fleetmesh_inject::{Channel, INIT_CONTAINER, PROXY_CONTAINER, annotations, labels};
use fleetmesh_kube::testing::{TestCluster, TestNamespace, wait_for};
use fleetmesh_kube::token_review::AUDIENCE as TOKEN_AUDIENCE;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use std::time::Duration;

/// Plain HTTP on 80; on 443 TLS with the Secret `shop-cert`, on 8443 mutual TLS with
/// `shop-mtls` (its client CA in `shop-mtls-cacert`), both served to the gateway over SDS.
const GATEWAY_ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shop.example.com]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 8443, name: https-mutual, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: MUTUAL, credentialName: shop-mtls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [shop]
  http:
  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
"#;

fn deployment(name: &str, pod_labels: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}{pod_labels}}}}}
    spec:
      containers:
      - name: {name}
        image: {name}:v1
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /ready, port: http}}}}
"#
    )
}

/// Runs kubectl against the cluster; its stdout, or its stderr as the error.
/// `shop-cert` (server certificate), `shop-mtls` (the same, for MUTUAL) and
/// `shop-mtls-cacert` (the client CA) in `namespace`, as a user creates them.
fn create_tls_secrets(cluster: &TestCluster, namespace: &str, pki: &Pki) {
    let (crt, key, ca) = (pki.path("tls.crt"), pki.path("tls.key"), pki.path("ca.crt"));
    for args in [
        vec![
            "create",
            "secret",
            "tls",
            "shop-cert",
            "--cert",
            &crt,
            "--key",
            &key,
        ],
        vec![
            "create",
            "secret",
            "tls",
            "shop-mtls",
            "--cert",
            &crt,
            "--key",
            &key,
        ],
        vec!["create", "secret", "generic", "shop-mtls-cacert"],
    ] {
        let mut args = args;
        let from_file = format!("--from-file=ca.crt={ca}");
        if args[3] == "shop-mtls-cacert" {
            args.push(&from_file);
        }
        args.extend(["-n", namespace]);
        cluster.run_kubectl(&args, None).unwrap();
    }
}

/// `proxy-config secret` of the gateway: shop-cert's certificate described, as meshd
/// sends it, and the workload certificate its agent serves; the key in neither the table
/// nor the JSON.
async fn proxy_config_describes_the_gateways_secrets(api: &MeshdApi, pod: &str, pki: &Pki) {
    use base64::Engine;
    use fleetmesh_cli::proxy_config::{Section, show};
    let table = show(api, Section::Secret, pod, false).await.unwrap();
    let row = |name: &str| -> Vec<String> {
        let line = table.lines().find(|l| l.starts_with(&format!("{name} ")));
        let line = line.unwrap_or_else(|| panic!("{name} in:\n{table}"));
        line.split_whitespace().map(String::from).collect()
    };
    let shop = row("kubernetes://shop-cert");
    assert_eq!(shop[1..4], ["meshd", "Cert", "Chain"], "{table}");
    assert!(shop[4].chars().all(|c| c.is_ascii_hexdigit()), "{table}");
    assert_eq!(row("default")[1], "agent", "{table}");
    let json = show(api, Section::Secret, pod, true).await.unwrap();
    let key = std::fs::read_to_string(pki.path("tls.key")).unwrap();
    let key_body = key.lines().nth(1).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&key);
    assert!(json.contains("[redacted]"), "{json}");
    for secret in [key_body, encoded.as_str()] {
        assert!(
            !json.contains(secret) && !table.contains(secret),
            "the key is shown"
        );
    }
}

/// The first pod of Deployment `app` once it exists.
async fn pod_of(pods: &Api<Pod>, app: &str) -> Pod {
    wait_for(
        &format!("a pod of {app}"),
        Duration::from_secs(60),
        async || {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?;
            list.items.into_iter().next()
        },
    )
    .await
    .unwrap()
}

fn containers(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let spec = pod.spec.as_ref().expect("pods have a spec");
    let names = |list: Option<&Vec<k8s_openapi::api::core::v1::Container>>| {
        list.into_iter().flatten().map(|c| c.name.clone()).collect()
    };
    (
        names(spec.init_containers.as_ref()),
        names(Some(&spec.containers)),
    )
}

fn pod_label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// What the steps share: a cluster of its own (install puts cluster-wide webhooks in it),
/// meshd serving the bookstore, and the options install runs with.
struct Scenario {
    cluster: TestCluster,
    client: kube::Client,
    store: Bookstore,
    meshd_url: String,
    token_file: std::path::PathBuf,
    output: tempfile::TempDir,
    options: InstallOptions,
}

impl Scenario {
    async fn start() -> Scenario {
        let cluster = TestCluster::start("fleetmesh-install").expect("the local cluster starts");
        let client = cluster.client().await.unwrap();
        // meshd knows the cluster by the name install registers it under.
        let mesh = LocalMesh::start_configured(None, XdsMode::Delta, |meshd| {
            meshd.kubeconfig = Some(cluster.kubeconfig.clone());
            meshd.cluster_id = "install-test".into();
        })
        .await
        .expect("meshd starts");
        let store = Bookstore::start_on(mesh).await;
        let meshd_url = format!("http://{}", store.mesh.meshd().http_address());
        let token_file = store.mesh.meshd().admin_token_file().to_path_buf();
        let output = tempfile::tempdir().unwrap();
        let options = InstallOptions {
            plan: Plan {
                project: "shop-project".into(),
                location: "us-central1".into(),
                cluster: "install-test".into(),
                channel: Channel::Regular,
                cni_managed: false,
                hub: "registry.example.com/mesh".into(),
            },
            output_dir: output.path().to_path_buf(),
            verbose: true,
            register: true,
            kubeconfig: Some(cluster.kubeconfig.clone()),
            context: None,
            meshd_url: meshd_url.clone(),
            admin_token_file: token_file.clone(),
            take_default_tag: false,
        };
        Scenario {
            cluster,
            client,
            store,
            meshd_url,
            token_file,
            output,
            options,
        }
    }

    /// meshd's management API, as install calls it.
    fn api(&self) -> MeshdApi {
        MeshdApi::new(&self.meshd_url, &self.token_file)
    }

    /// A token of `account` in `namespace` for `audience`.
    fn token(&self, account: &str, namespace: &str, audience: &str) -> String {
        self.cluster
            .run_kubectl(
                &[
                    "create",
                    "token",
                    account,
                    "-n",
                    namespace,
                    "--audience",
                    audience,
                ],
                None,
            )
            .map(|t| t.trim().to_string())
            .unwrap()
    }
}

/// The guide's gateway as injected: its namespace, its pod and the pod's identity.
struct GatewayPod {
    namespace: TestNamespace,
    pod: Pod,
    name: String,
    account: String,
}

/// The status of a GET to shop.example.com on `port` through `client`, or why it failed.
async fn https_status(client: reqwest::Client, port: u16) -> Result<u16, String> {
    let response = client
        .get(format!("https://shop.example.com:{port}/"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_inject_validate_and_route_through_an_injected_gateway() {
    let mut s = Scenario::start().await;
    installs_twice_and_registers_the_cluster(&s).await;
    let (shop, legacy) = the_guides_labels_decide_injection(&s).await;
    a_cni_managed_install_adds_no_init_container(&mut s, &legacy).await;
    the_webhooks_refuse_bad_input(&s, &shop).await;
    install_fails_clearly_and_applies_nothing(&s).await;
    let gw = the_guides_gateway_is_injected(&s).await;
    the_ca_checks_the_gateways_token(&s, &gw).await;
    let pki = Pki::generate();
    let gateway = the_gateway_routes_over_tls_to_meshd(&s, &gw, &pki).await;
    endpoints_carry_installs_location(&shop, &gateway).await;
    the_gateway_serves_tls_from_secrets(&s, &gw, &gateway, &pki).await;
    no_tls_without_the_right_to_read_secrets(&s, &pki).await;
    assert_eq!(nacks(&s.store.mesh), 0);
    gw.namespace.delete().await.unwrap();
    legacy.delete().await.unwrap();
    shop.delete().await.unwrap();
}

/// Install twice: the second run changes nothing; the files the guide uses are written;
/// the cluster is registered with its fleet and the mesh can be enabled.
async fn installs_twice_and_registers_the_cluster(s: &Scenario) {
    let first = install::run(&s.options).await.expect("install succeeds");
    assert!(first.created + first.configured > 0 || first.unchanged > 0);
    let second = install::run(&s.options).await.expect("a re-run succeeds");
    assert_eq!((second.created, second.configured), (0, 0), "{second:?}");
    assert_eq!(
        second.unchanged,
        first.created + first.configured + first.unchanged
    );
    assert_eq!(second.registration.as_deref(), Some("unchanged"));
    for file in [
        "manifests/01-crds.yaml",
        "manifests/06-injection-webhooks.yaml",
        "samples/gateways/istio-ingressgateway.yaml",
        "bin/fleetmesh",
        "bin/istioctl",
    ] {
        assert!(s.output.path().join(file).exists(), "{file} is written");
    }
    // The guide's `${OUTPUT_DIR}/bin/istioctl`: our CLI under Istio's name (its commands
    // run that way in crates/cli/tests/create_remote_secret.rs).
    let istioctl = std::fs::read_link(s.output.path().join("bin/istioctl")).unwrap();
    assert_eq!(istioctl, std::path::Path::new("fleetmesh"));
    let fleet = s.api();
    let projects = fleet.projects().await.unwrap();
    assert_eq!(
        projects["shop-project"]["memberships"]["install-test"]["location"],
        "us-central1"
    );
    assert_eq!(projects["shop-project"]["meshEnabled"], false);
    let enabled = fleet
        .enable_mesh("shop-project", &Default::default())
        .await
        .unwrap();
    assert_eq!(enabled.change, "updated");
    assert_eq!(enabled.trust_domain, "shop-project.svc.id.goog");
    let again = fleet
        .enable_mesh("shop-project", &Default::default())
        .await
        .unwrap();
    assert_eq!(again.change, "unchanged");
    assert_eq!(
        fleet.projects().await.unwrap()["shop-project"]["meshEnabled"],
        true
    );
}

/// The guide's labels decide injection (namespace, pod, revision, the legacy label);
/// returns the namespaces made (shop, legacy).
async fn the_guides_labels_decide_injection(s: &Scenario) -> (TestNamespace, TestNamespace) {
    // The guide's label: pods get istio-proxy and istio-init.
    let shop = TestNamespace::create(&s.client, "shop").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &shop.name);
    s.cluster
        .run_kubectl(
            &[
                "label",
                "namespace",
                &shop.name,
                "istio-injection-",
                "istio.io/rev=asm-managed-rapid",
                "--overwrite",
            ],
            None,
        )
        .unwrap();
    shop.apply(&deployment("web", "")).await.unwrap();
    let web = pod_of(&pods, "web").await;
    let (init, main) = containers(&web);
    assert_eq!(init, [INIT_CONTAINER]);
    assert_eq!(main, [PROXY_CONTAINER, "web"]);
    let proxy_version = fleetmesh_inject::Revision::named("asm-managed-rapid")
        .unwrap()
        .proxy_version;
    assert_eq!(
        web.spec.as_ref().unwrap().containers[0].image.as_deref(),
        Some(format!("registry.example.com/mesh/proxyv2:{proxy_version}").as_str()),
        "the proxy image comes from the install's hub"
    );
    // kube-inject reads what install recorded, so hand-injected pods match.
    let recorded = fleetmesh_cli::kube_inject::Recorded::read(&s.client)
        .await
        .unwrap();
    assert_eq!(
        recorded,
        fleetmesh_cli::kube_inject::Recorded {
            xds_address: Some(s.api().install_info(None).await.unwrap().xds_address),
            cluster: Some("install-test".into()),
            cni_managed: Some(false),
            hub: Some("registry.example.com/mesh".into()),
        }
    );
    assert_eq!(pod_label(&web, labels::REVISION), Some("asm-managed-rapid"));
    let status = &web.metadata.annotations.as_ref().unwrap()[annotations::STATUS];
    assert!(status.contains("asm-managed-rapid"), "{status}");
    let probe = web.spec.as_ref().unwrap().containers[1]
        .readiness_probe
        .clone()
        .unwrap();
    assert_eq!(
        probe.http_get.unwrap().path.as_deref(),
        Some("/app-health/web/readyz"),
        "the app's probe goes through the agent"
    );

    // Opted out by the pod's label in a labelled namespace: no proxy.
    shop.apply(&deployment("batch", ", sidecar.istio.io/inject: \"false\""))
        .await
        .unwrap();
    assert_eq!(containers(&pod_of(&pods, "batch").await).1, ["batch"]);

    // Label removed: no proxy.
    s.cluster
        .run_kubectl(&["label", "namespace", &shop.name, "istio.io/rev-"], None)
        .unwrap();
    shop.apply(&deployment("plain", "")).await.unwrap();
    assert_eq!(containers(&pod_of(&pods, "plain").await).1, ["plain"]);

    // The pod's own revision label in an unlabelled namespace: injected.
    shop.apply(&deployment("tagged", ", istio.io/rev: asm-managed-stable"))
        .await
        .unwrap();
    let tagged = pod_of(&pods, "tagged").await;
    assert_eq!(containers(&tagged).1, [PROXY_CONTAINER, "tagged"]);
    assert_eq!(
        pod_label(&tagged, labels::REVISION),
        Some("asm-managed-stable")
    );

    // The legacy label follows the default tag: the installed channel's revision.
    let legacy = TestNamespace::create(&s.client, "legacy").await.unwrap();
    s.cluster
        .run_kubectl(
            &[
                "label",
                "namespace",
                &legacy.name,
                "istio-injection=enabled",
            ],
            None,
        )
        .unwrap();
    legacy.apply(&deployment("old", "")).await.unwrap();
    let legacy_pods: Api<Pod> = Api::namespaced(s.client.clone(), &legacy.name);
    let old = pod_of(&legacy_pods, "old").await;
    assert_eq!(pod_label(&old, labels::REVISION), Some("asm-managed"));
    (shop, legacy)
}

/// Re-installed with the cluster's CNI redirecting traffic: no istio-init any more.
async fn a_cni_managed_install_adds_no_init_container(s: &mut Scenario, legacy: &TestNamespace) {
    s.options.plan.cni_managed = true;
    let third = install::run(&s.options)
        .await
        .expect("install with cni-managed");
    assert!(third.configured > 0, "{third:?}");
    legacy.apply(&deployment("cni", "")).await.unwrap();
    let legacy_pods: Api<Pod> = Api::namespaced(s.client.clone(), &legacy.name);
    let (init, main) = containers(&pod_of(&legacy_pods, "cni").await);
    assert!(init.is_empty(), "{init:?}");
    assert_eq!(main, [PROXY_CONTAINER, "cni"]);
}

/// A bad VirtualService is refused at apply, naming the field; a body that is not an
/// AdmissionReview gets 400 with the reason.
async fn the_webhooks_refuse_bad_input(s: &Scenario, shop: &TestNamespace) {
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n  hosts: [web]\n  http:\n  - route: [{destination: {host: web}, weight: -1}]\n";
    let refused = s
        .cluster
        .run_kubectl(&["apply", "-n", &shop.name, "-f", "-"], Some(bad))
        .unwrap_err();
    assert!(refused.contains("denied the request"), "{refused}");
    assert!(
        refused.contains("spec.http[0].route[0].weight"),
        "{refused}"
    );

    // A body that is not an AdmissionReview: 400 with the reason.
    let webhook = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(
                s.api()
                    .install_info(None)
                    .await
                    .unwrap()
                    .ca_bundle
                    .as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let address = s.store.mesh.meshd().webhook_address();
    for (path, body, reason) in [
        (
            "/inject/asm-managed/cluster/c/redirect/init",
            "{\"kind\": 1}",
            "not an AdmissionReview",
        ),
        ("/validate", "[]", "not an AdmissionReview"),
    ] {
        let response = webhook
            .post(format!("https://{address}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let text = response.text().await.unwrap();
        assert!(text.contains(reason), "{text}");
    }
}

/// Install fails clearly, and applies nothing, when the cluster is unreachable or the
/// user may not install.
async fn install_fails_clearly_and_applies_nothing(s: &Scenario) {
    let unreachable = s.output.path().join("unreachable.kubeconfig");
    std::fs::write(
        &unreachable,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:9\"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    )
    .unwrap();
    let mut failing = s.options.clone();
    failing.kubeconfig = Some(unreachable);
    failing.output_dir = s.output.path().join("unreachable");
    let error = format!("{:#}", install::run(&failing).await.unwrap_err());
    assert!(error.contains("cannot be reached"), "{error}");
    let viewer = TestNamespace::create(&s.client, "viewer").await.unwrap();
    let viewer_token = s
        .cluster
        .run_kubectl(&["create", "token", "default", "-n", &viewer.name], None)
        .unwrap();
    let forbidden = s.output.path().join("forbidden.kubeconfig");
    let server = std::fs::read_to_string(&s.cluster.kubeconfig)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.split("server: \"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .unwrap();
    std::fs::write(
        &forbidden,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}}}]\nusers: [{{name: u, user: {{token: {}}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n",
            viewer_token.trim()
        ),
    )
    .unwrap();
    failing.kubeconfig = Some(forbidden);
    failing.output_dir = s.output.path().join("forbidden");
    let error = format!("{:#}", install::run(&failing).await.unwrap_err());
    assert!(error.contains("forbidden"), "{error}");
    assert!(error.contains("cluster-admin"), "{error}");
    viewer.delete().await.unwrap();
}

/// The guide's gateway, verbatim, in a namespace whose pods opt in one by one: an
/// injected gateway pod and its Service.
async fn the_guides_gateway_is_injected(s: &Scenario) -> GatewayPod {
    let gateways = TestNamespace::create(&s.client, "gateways").await.unwrap();
    s.cluster
        .run_kubectl(
            &[
                "label",
                "namespace",
                &gateways.name,
                "istio-injection-",
                "istio.io/rev-",
            ],
            None,
        )
        .unwrap();
    let guide_yaml = fleetmesh_cli::install::samples::gateway("asm-managed-rapid")
        .replace("GATEWAY_NAMESPACE", &gateways.name);
    s.cluster
        .run_kubectl(&["apply", "-f", "-"], Some(&guide_yaml))
        .unwrap();
    let gateway_pods: Api<Pod> = Api::namespaced(s.client.clone(), &gateways.name);
    let gateway_pod = wait_for("the gateway pod", Duration::from_secs(60), async || {
        let list = gateway_pods
            .list(&ListParams::default().labels("istio=ingressgateway"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await
    .unwrap();
    let (init, main) = containers(&gateway_pod);
    assert!(init.is_empty(), "gateways capture nothing: {init:?}");
    assert_eq!(main, [PROXY_CONTAINER]);
    let environment = fleetmesh_inject::template::proxy_environment(&gateway_pod);
    assert_eq!(environment["ISTIO_META_INTERCEPTION_MODE"], "NONE");
    let proxy = &gateway_pod.spec.as_ref().unwrap().containers[0];
    assert_ne!(proxy.image.as_deref(), Some("auto"));
    assert!(proxy.args.as_ref().unwrap().contains(&"router".to_string()));
    let listed = s
        .cluster
        .run_kubectl(&["get", "pod,service", "-n", &gateways.name], None)
        .unwrap();
    assert!(listed.contains("pod/istio-ingressgateway-"), "{listed}");
    assert!(listed.contains("service/istio-ingressgateway"), "{listed}");
    let name = gateway_pod.metadata.name.clone().unwrap();
    let account = gateway_pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    GatewayPod {
        namespace: gateways,
        pod: gateway_pod,
        name,
        account,
    }
}

/// The CA takes only a token of the audience the injector mounts, from the namespace of
/// the identity asked for.
async fn the_ca_checks_the_gateways_token(s: &Scenario, gw: &GatewayPod) {
    let csr = fleetmesh_ca::csr::generate(
        &fleetmesh_ca::Identity::new(&gw.namespace.name, &gw.account).spiffe_id("cluster.local"),
    )
    .unwrap()
    .csr_pem;
    let ca = tonic::transport::Channel::from_shared(format!(
        "http://{}",
        s.store.mesh.meshd().xds_address()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let wrong_audience = fleetmesh_ca::client::create_certificate(
        ca.clone(),
        &s.token(&gw.account, &gw.namespace.name, "someone-else"),
        None,
        csr.clone(),
        Duration::from_secs(3600),
    )
    .await
    .unwrap_err();
    assert_eq!(
        wrong_audience.code(),
        tonic::Code::Unauthenticated,
        "{wrong_audience:?}"
    );
    let other = TestNamespace::create(&s.client, "other").await.unwrap();
    let foreign = fleetmesh_ca::client::create_certificate(
        ca.clone(),
        &s.token("default", &other.name, TOKEN_AUDIENCE),
        None,
        csr,
        Duration::from_secs(3600),
    )
    .await
    .unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::PermissionDenied, "{foreign:?}");
    other.delete().await.unwrap();
}

/// A real Envoy as the gateway pod (its name, namespace and service account; meshd finds
/// its labels on the Pod), proving itself with a service-account token of the audience
/// the injector mounts (checked by TokenReview), over TLS to meshd, routes the cluster's
/// Gateway + VirtualService to loopback; proxy-status and the metrics list it.
async fn the_gateway_routes_over_tls_to_meshd(
    s: &Scenario,
    gw: &GatewayPod,
    pki: &Pki,
) -> Workload {
    create_tls_secrets(&s.cluster, &gw.namespace.name, pki);
    gw.namespace.apply(GATEWAY_ROUTES).await.unwrap();
    let projected = s.token(&gw.account, &gw.namespace.name, TOKEN_AUDIENCE);
    let environment = fleetmesh_inject::template::proxy_environment(&gw.pod);
    // meshd keeps the mesh roots in every namespace; the pod mounts them to reach meshd's
    // TLS port (the injected XDS_ADDRESS), so its token never crosses a network in clear.
    let config_maps: Api<ConfigMap> = Api::namespaced(s.client.clone(), &gw.namespace.name);
    let roots = wait_for(
        "istio-ca-root-cert in the gateway's namespace",
        Duration::from_secs(30),
        async || {
            let map = config_maps.get_opt("istio-ca-root-cert").await.ok()??;
            map.data?.get("root-cert.pem").cloned()
        },
    )
    .await
    .unwrap();
    assert_eq!(roots, s.api().install_info(None).await.unwrap().ca_bundle);
    assert_eq!(
        environment["XDS_ADDRESS"],
        s.store.mesh.meshd().xds_tls_address().to_string()
    );
    let roots_file = s.output.path().join("root-cert.pem");
    std::fs::write(&roots_file, &roots).unwrap();
    let gateway = s
        .store
        .mesh
        .add_pod_proxy(
            "router",
            &gw.name,
            &gw.namespace.name,
            &gw.account,
            PodConnection {
                token: projected,
                meshd_roots: Some(roots_file),
                cluster_id: "install-test".into(),
                trust_domain: "cluster.local".into(),
            },
        )
        .await
        .expect("the gateway's Envoy starts, over TLS to meshd");
    let url = format!("http://{}:80/", gateway.ip);
    let answer = eventually(
        "the gateway to route shop.example.com",
        Duration::from_secs(30),
        async || {
            let response = reqwest::Client::new()
                .get(&url)
                .header("host", "shop.example.com")
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then(|| {
                response
                    .headers()
                    .get(VERSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            })
        },
    )
    .await;
    assert_eq!(answer, "v2");
    let rows = fleetmesh_cli::proxy_status::fetch(&s.api()).await.unwrap();
    let row = rows
        .iter()
        .find(|r| r.proxy.contains(&gw.name))
        .expect("proxy-status lists the gateway");
    assert_eq!(
        (row.version.as_str(), row.revision.as_str()),
        (env!("CARGO_PKG_VERSION"), "asm-managed-rapid")
    );
    // The guide's "proxy clients" metric: which proxies talk to this control plane.
    let metrics = reqwest::get(format!("{}/metrics", s.meshd_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        "fleetmesh_proxy_clients{{project=\"shop-project\",cluster=\"install-test\",revision=\"asm-managed-rapid\",proxy_version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    gateway
}

/// The cluster's endpoints carry install's location as their region (config only:
/// these pod IPs never receive a packet).
async fn endpoints_carry_installs_location(shop: &TestNamespace, gateway: &Workload) {
    shop.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}\n")
        .await
        .unwrap();
    let region = eventually(
        "web's endpoints with their locality",
        Duration::from_secs(30),
        async || {
            let (_, clusters) = fleetmesh_agent::process::admin_request(
                gateway.envoy.admin_socket(),
                "GET",
                "/clusters?format=json",
            )
            .ok()?;
            let clusters: serde_json::Value = serde_json::from_str(&clusters).ok()?;
            let web = format!("outbound|80||web.{}.svc.cluster.local", shop.name);
            clusters["cluster_statuses"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == web.as_str())?["host_statuses"]
                .as_array()?
                .first()?["locality"]["region"]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;
    assert_eq!(region, "us-central1");
}

/// TLS from the Secrets, which the guide's Role lets the gateway's account read.
async fn the_gateway_serves_tls_from_secrets(
    s: &Scenario,
    gw: &GatewayPod,
    gateway: &Workload,
    pki: &Pki,
) {
    let secure = |port: u16, with_certificate: bool| {
        pki.client(
            std::net::SocketAddr::new(gateway.ip.into(), port),
            with_certificate,
        )
    };
    let status = eventually(
        "the gateway to serve TLS from shop-cert",
        Duration::from_secs(30),
        async || https_status(secure(443, false), 443).await.ok(),
    )
    .await;
    assert_eq!(status, 200);
    let status = eventually(
        "the gateway to serve mutual TLS from shop-mtls",
        Duration::from_secs(30),
        async || https_status(secure(8443, true), 8443).await.ok(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        https_status(secure(8443, false), 8443).await.is_err(),
        "MUTUAL refuses a client without a certificate"
    );
    proxy_config_describes_the_gateways_secrets(
        &s.api(),
        &format!("{}.{}", gw.name, gw.namespace.name),
        pki,
    )
    .await;
}

/// The same Gateway and Secret in a namespace where no Role lets the gateway read
/// Secrets: meshd withholds the credential, so that gateway serves no TLS.
async fn no_tls_without_the_right_to_read_secrets(s: &Scenario, pki: &Pki) {
    let unbound = TestNamespace::create(&s.client, "unbound").await.unwrap();
    create_tls_secrets(&s.cluster, &unbound.name, pki);
    unbound
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: gw, labels: {istio: ingressgateway}}\nspec: {containers: [{name: istio-proxy, image: proxy}]}\n",
        )
        .await
        .unwrap();
    let unbound_pods: Api<Pod> = Api::namespaced(s.client.clone(), &unbound.name);
    wait_for(
        "the unbound gateway pod",
        Duration::from_secs(60),
        async || unbound_pods.get_opt("gw").await.ok().flatten(),
    )
    .await
    .unwrap();
    let unbound_token = s.token("default", &unbound.name, TOKEN_AUDIENCE);
    let withheld = s
        .store
        .mesh
        .add_pod_proxy(
            "router",
            "gw",
            &unbound.name,
            "default",
            PodConnection {
                token: unbound_token,
                meshd_roots: None,
                cluster_id: "install-test".into(),
                trust_domain: "cluster.local".into(),
            },
        )
        .await
        .expect("the unbound gateway's Envoy starts");
    let plain = format!("http://{}:80/", withheld.ip);
    eventually(
        "the unbound gateway to route plain HTTP",
        Duration::from_secs(30),
        async || {
            let response = reqwest::Client::new()
                .get(&plain)
                .header("host", "shop.example.com")
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        },
    )
    .await;
    let refused = https_status(
        pki.client(std::net::SocketAddr::new(withheld.ip.into(), 443), false),
        443,
    )
    .await;
    assert!(
        refused.is_err(),
        "no TLS without the right to read the Secret: {refused:?}"
    );
    unbound.delete().await.unwrap();
}
