//! The hosted control plane's HTTP API, as the CLI uses it: where the cluster's
//! webhooks and proxies reach it, and the fleet's member clusters.

use super::manifests::{ControlPlane, Plan};
use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Where the CLI finds meshd's admin token when no file is named: meshd's default
/// `--state-dir`, as on meshd's own host.
pub const DEFAULT_ADMIN_TOKEN_FILE: &str = "./var/lib/fleetmesh/state/admin-token";

/// What `mesh enable` changed (`updated` or `unchanged`), and the project's trust domain.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshEnabled {
    pub change: String,
    pub trust_domain: String,
    /// Whether the project's sidecars fetch their routes on demand.
    #[serde(default)]
    pub on_demand_routes: bool,
}

/// What `mesh enable` sets besides enabling the mesh; what is unset stays as it was.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshSettings {
    /// The project's trust domain (default `PROJECT.svc.id.goog`; fixed once it has
    /// members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Whether its sidecars fetch their outbound routes on demand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_demand_routes: Option<bool>,
}

pub struct MeshdApi {
    base: String,
    client: reqwest::Client,
    /// The admin token, if the CLI has one (the management API refuses requests without).
    token: Option<String>,
}

impl MeshdApi {
    /// meshd at `base`, with the admin token of `FLEETMESH_ADMIN_TOKEN` or, without it,
    /// of `token_file` (if it exists).
    pub fn new(base: &str, token_file: &std::path::Path) -> MeshdApi {
        let token = std::env::var("FLEETMESH_ADMIN_TOKEN")
            .ok()
            .or_else(|| std::fs::read_to_string(token_file).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        MeshdApi {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            token,
        }
    }

    /// What the cluster is installed with; `member`: the cluster joins its project's
    /// fleet (and gets the project's trust domain).
    pub async fn install_info(&self, member: Option<&Plan>) -> anyhow::Result<ControlPlane> {
        let mut request = self.client.get(self.url("/v1/install"));
        if let Some(plan) = member {
            request = request.query(&[("project", &plan.project), ("cluster", &plan.cluster)]);
        }
        self.send(request)
            .await
            .and_then(|v| Ok(serde_json::from_value(v)?))
    }

    /// Registers the plan's cluster; returns what changed (`created`, `updated`,
    /// `unchanged`).
    pub async fn register(
        &self,
        plan: &Plan,
        channel: &str,
        kubeconfig: &str,
    ) -> anyhow::Result<String> {
        let path = format!("/v1/projects/{}/memberships/{}", plan.project, plan.cluster);
        let body = json!({"location": plan.location, "channel": channel, "kubeconfig": kubeconfig});
        let answer = self
            .send(self.client.put(self.url(&path)).json(&body))
            .await?;
        Ok(answer["change"].as_str().unwrap_or_default().to_string())
    }

    /// Removes `cluster` from `project`'s fleet.
    pub async fn remove_membership(&self, project: &str, cluster: &str) -> anyhow::Result<()> {
        let path = format!("/v1/projects/{project}/memberships/{cluster}");
        self.send(self.client.delete(self.url(&path))).await?;
        Ok(())
    }

    /// Enables `project`'s mesh, with what `settings` sets.
    pub async fn enable_mesh(
        &self,
        project: &str,
        settings: &MeshSettings,
    ) -> anyhow::Result<MeshEnabled> {
        let path = format!("/v1/projects/{project}/mesh/enable");
        let request = self.client.post(self.url(&path)).json(settings);
        let answer = self.send(request).await?;
        Ok(serde_json::from_value(answer)?)
    }

    /// Every project with its member clusters.
    pub async fn projects(&self) -> anyhow::Result<Value> {
        self.send(self.client.get(self.url("/v1/projects"))).await
    }

    /// Every connected proxy and its sync state (istiod's `/debug/syncz`).
    pub async fn syncz(&self) -> anyhow::Result<Value> {
        self.send(self.client.get(self.url("/debug/syncz"))).await
    }

    /// What meshd serves the proxy `proxy_id` (istiod's `/debug/config_dump`).
    pub async fn config_dump(&self, proxy_id: &str) -> anyhow::Result<Value> {
        let request = self.client.get(self.url("/debug/config_dump"));
        self.send(request.query(&[("proxyID", proxy_id)])).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach meshd at {} (is it running? pass --meshd-url or set FLEETMESH_URL)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("meshd answered {status}: {}", text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("meshd's answer: {text}"))
    }
}
