//! Fleet members for the suites: real kube-apiservers joined to a hosted meshd by
//! `fleetmesh install --enable-registration`, and proxies running as their pods (on
//! loopback, with the pods' tokens; pod IPs are fake and receive no packet).

use fleetmesh_cli::install;
use fleetmesh_cli::install::manifests::Plan;
use fleetmesh_cli::install::meshd_api::MeshdApi;
use fleetmesh_cli::local_mesh::{LocalMesh, PodConnection, Workload};
use fleetmesh_inject::Channel;
use fleetmesh_kube::testing::TestCluster;
use fleetmesh_kube::token_review::AUDIENCE;

/// A member cluster: its project and that project's trust domain, its name in the
/// fleet, the test cluster.
pub struct Member {
    pub project: &'static str,
    pub trust_domain: &'static str,
    pub name: &'static str,
    pub cluster: TestCluster,
}

impl Member {
    /// A token of `namespace/default` for the CA's audience, as a pod of this cluster has.
    pub fn pod_token(&self, namespace: &str) -> String {
        let args = [
            "create",
            "token",
            "default",
            "-n",
            namespace,
            "--audience",
            AUDIENCE,
        ];
        self.cluster
            .run_kubectl(&args, None)
            .expect("a token of the default service account")
            .trim()
            .to_string()
    }

    /// `jsonpath` of `kind`/`name` in `namespace` (empty if there is no such object).
    pub fn get(&self, kind: &str, name: &str, namespace: &str, jsonpath: &str) -> String {
        let output = format!("jsonpath={jsonpath}");
        let args = ["get", kind, name, "-n", namespace, "-o", &output];
        self.cluster.run_kubectl(&args, None).unwrap_or_default()
    }

    /// `kubectl apply` of `yaml` in this cluster.
    pub fn apply(&self, yaml: &str) {
        self.cluster
            .run_kubectl(&["apply", "-f", "-"], Some(yaml))
            .expect("kubectl apply succeeds");
    }

    /// `fleetmesh install --enable-registration` against `mesh`'s meshd, its files under
    /// `output`.
    pub async fn install(&self, mesh: &LocalMesh, output: &std::path::Path) {
        let plan = Plan {
            project: self.project.into(),
            location: "us-central1".into(),
            cluster: self.name.into(),
            channel: Channel::Regular,
            cni_managed: false,
            hub: fleetmesh_inject::DEFAULT_HUB.into(),
        };
        let output = output.join(self.name);
        let mut options = crate::install_options(plan, &self.cluster, mesh.meshd(), &output);
        options.register = true;
        install::run(&options).await.expect("install succeeds");
    }

    /// A sidecar of this cluster's pod `pod` (service account `default`), proving itself
    /// with `token`.
    pub async fn connect(
        &self,
        mesh: &LocalMesh,
        pod: &str,
        namespace: &str,
        token: String,
    ) -> anyhow::Result<Workload> {
        let connection = PodConnection {
            token,
            meshd_roots: None,
            cluster_id: self.name.into(),
            trust_domain: self.trust_domain.into(),
        };
        mesh.add_pod_proxy("sidecar", pod, namespace, "default", connection)
            .await
    }
}

/// The management API of `mesh`'s meshd, with its admin token.
pub fn api(mesh: &LocalMesh) -> MeshdApi {
    let url = format!("http://{}", mesh.meshd().http_address());
    MeshdApi::new(&url, mesh.meshd().admin_token_file())
}

/// Whether `mesh`'s meshd serves `member` now (awake or asleep), as `fleet list` shows it.
pub async fn served(mesh: &LocalMesh, member: &Member) -> bool {
    membership(mesh, member).await["served"] == true
}

/// Whether `member` is scaled to zero in `mesh`'s meshd now.
pub async fn idle(mesh: &LocalMesh, member: &Member) -> bool {
    membership(mesh, member).await["idle"] == true
}

async fn membership(mesh: &LocalMesh, member: &Member) -> serde_json::Value {
    let projects = api(mesh)
        .projects()
        .await
        .expect("meshd lists its projects");
    projects[member.project]["memberships"][member.name].clone()
}

/// Asks `mesh`'s CA for a certificate of `spiffe_id` with `token`, naming `cluster` (as a
/// pod's agent does); the chain (the root last), or the refusal's code.
pub async fn certificate(
    mesh: &LocalMesh,
    token: &str,
    cluster: &str,
    spiffe_id: &str,
) -> Result<Vec<String>, tonic::Code> {
    let address = format!("http://{}", mesh.meshd().xds_address());
    let channel = tonic::transport::Channel::from_shared(address)
        .expect("meshd's address is a URI")
        .connect()
        .await
        .map_err(|_| tonic::Code::Unavailable)?;
    let csr = fleetmesh_ca::csr::generate(spiffe_id)
        .expect("a CSR")
        .csr_pem;
    let ttl = std::time::Duration::from_secs(3600);
    fleetmesh_ca::client::create_certificate(channel, token, Some(cluster), csr, ttl)
        .await
        .map_err(|status| status.code())
}
