//! A member cluster's credential: what `fleetmesh install --enable-registration` gives
//! meshd, a kubeconfig for the cluster's `istio-system/fleetmesh-meshd` service account
//! with a short-lived token (never an admin's). meshd keeps it in the state directory
//! (`credentials/PROJECT/CLUSTER/`, 0600: the kubeconfig, and the current token in a file
//! of its own, which the client re-reads), and renews the token before it expires with
//! the TokenRequest API, as that service account (install lets it ask for its own
//! tokens only). A token that expired while meshd was down is renewed by re-running
//! install. The kubeconfig is the cluster owner's text: it is checked like a remote
//! secret's (`fleetmesh_kube::remote::kubeconfig`), and never logged.

use fleetmesh_kube::egress::EgressPolicy;
use fleetmesh_kube::remote::kubeconfig::{RemoteKubeconfigError, client_config};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use std::path::{Path, PathBuf};
use std::time::Duration;

const KUBECONFIG: &str = "kubeconfig";
const TOKEN: &str = "token";
/// The service account install makes for meshd in each member cluster.
pub const ACCOUNT: (&str, &str) = ("istio-system", "fleetmesh-meshd");
/// How long a token meshd asks for lives; it asks again at half of it.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A checked member kubeconfig.
pub struct Kubeconfig {
    text: String,
    token: String,
}

impl std::fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kubeconfig(..)")
    }
}

impl Kubeconfig {
    /// Checks `text` as a tenant-written kubeconfig with a bearer token, whose server
    /// `egress` lets meshd reach.
    pub async fn parse(
        text: &str,
        egress: &EgressPolicy,
    ) -> Result<Kubeconfig, RemoteKubeconfigError> {
        let config = client_config(text, egress).await?;
        let token = config
            .auth_info
            .token
            .as_ref()
            .map(|t| secrecy::ExposeSecret::expose_secret(t).to_string())
            .filter(|t| !t.is_empty())
            .ok_or(RemoteKubeconfigError::Forbidden {
                field: "token",
                why: "a member's credential is its service account's token; none is given",
            })?;
        Ok(Kubeconfig {
            text: text.to_string(),
            token,
        })
    }

    /// Writes it into `dir` (0600).
    pub fn store(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        fleetmesh_ca::files::write_private(&dir.join(KUBECONFIG), self.text.as_bytes())?;
        fleetmesh_ca::files::write_private(&dir.join(TOKEN), self.token.as_bytes())?;
        Ok(())
    }
}

/// Client settings for the member whose credential is in `dir`, its token read from the
/// token file (so a renewed one is used without a new client).
pub async fn load(dir: &Path, egress: &EgressPolicy) -> anyhow::Result<kube::Config> {
    let text = std::fs::read_to_string(dir.join(KUBECONFIG))?;
    let mut config = client_config(&text, egress).await?;
    config.auth_info.token = None;
    config.auth_info.token_file = Some(token_file(dir).display().to_string());
    Ok(config)
}

fn token_file(dir: &Path) -> PathBuf {
    dir.join(TOKEN)
}

/// Renews the token in `dir` at half its lifetime, until dropped; a failed renewal is
/// retried (the old token keeps working until it expires).
pub async fn keep_renewed(client: kube::Client, dir: PathBuf, cluster: String) {
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client, ACCOUNT.0);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let mut wait = TOKEN_LIFETIME / 2;
    loop {
        tokio::time::sleep(wait).await;
        let renewed = accounts
            .create_token_request(ACCOUNT.1, &PostParams::default(), &request)
            .await
            .map_err(|e| e.to_string())
            .and_then(|answer| {
                answer
                    .status
                    .map(|s| s.token)
                    .ok_or_else(|| "no token in the answer".to_string())
            })
            .and_then(|token| {
                fleetmesh_ca::files::write_private(&token_file(&dir), token.as_bytes())
                    .map_err(|e| e.to_string())
            });
        wait = match renewed {
            Ok(()) => {
                tracing::info!(%cluster, "member credential renewed");
                TOKEN_LIFETIME / 2
            }
            Err(error) => {
                tracing::warn!(%cluster, %error, "cannot renew the member credential; retrying");
                Duration::from_secs(60)
            }
        };
    }
}
