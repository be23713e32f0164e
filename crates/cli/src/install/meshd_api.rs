//! The hosted control plane's HTTP API, as the CLI uses it: where the cluster's
//! webhooks and proxies reach it, and the fleet's member clusters.

use super::manifests::{ControlPlane, Plan};
use anyhow::{Context, bail};
use serde_json::{Value, json};

pub struct MeshdApi {
    base: String,
    client: reqwest::Client,
}

impl MeshdApi {
    pub fn new(base: &str) -> MeshdApi {
        MeshdApi {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn install_info(&self) -> anyhow::Result<ControlPlane> {
        self.send(self.client.get(self.url("/v1/install")))
            .await
            .and_then(|v| Ok(serde_json::from_value(v)?))
    }

    /// Registers the plan's cluster; returns what changed (`created`, `updated`,
    /// `unchanged`).
    pub async fn register(&self, plan: &Plan, channel: &str) -> anyhow::Result<String> {
        let path = format!("/v1/projects/{}/memberships/{}", plan.project, plan.cluster);
        let body = json!({"location": plan.location, "channel": channel});
        let answer = self
            .send(self.client.put(self.url(&path)).json(&body))
            .await?;
        Ok(answer["change"].as_str().unwrap_or_default().to_string())
    }

    pub async fn enable_mesh(&self, project: &str) -> anyhow::Result<String> {
        let path = format!("/v1/projects/{project}/mesh/enable");
        let answer = self.send(self.client.post(self.url(&path))).await?;
        Ok(answer["change"].as_str().unwrap_or_default().to_string())
    }

    /// Every project with its member clusters.
    pub async fn projects(&self) -> anyhow::Result<Value> {
        self.send(self.client.get(self.url("/v1/projects"))).await
    }

    /// Every connected proxy and its sync state (istiod's `/debug/syncz`).
    pub async fn syncz(&self) -> anyhow::Result<Value> {
        self.send(self.client.get(self.url("/debug/syncz"))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
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
