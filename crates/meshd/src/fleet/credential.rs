//! A member cluster's credential: what `fleetmesh install --enable-registration` gives
//! meshd, a kubeconfig for the cluster's `istio-system/fleetmesh-meshd` service account
//! with a short-lived token (never an admin's). meshd keeps it in the state directory
//! (`credentials/PROJECT/CLUSTER/`, 0600: the kubeconfig, and the current token in a file
//! of its own, which the client re-reads), and renews the token half way through its
//! lifetime with the TokenRequest API, as that service account (install lets it ask for
//! its own tokens only), whether the member is awake or scaled to zero. A token that
//! expired while meshd was down is renewed by re-running install. The kubeconfig is the cluster owner's text: it is checked like a remote
//! secret's (`fleetmesh_kube::remote::kubeconfig`), and never logged.

use super::Fleet;
use fleetmesh_kube::egress::EgressPolicy;
use fleetmesh_kube::remote::kubeconfig::{RemoteKubeconfigError, client_config};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
        Files {
            kubeconfig: self.text.clone(),
            token: self.token.clone(),
        }
        .write(dir)
    }
}

/// A stored credential's files, as they are copied between meshd replicas (a host
/// cluster's Secret). Secret: never logged.
pub struct Files {
    /// The kubeconfig install gave.
    pub kubeconfig: String,
    /// Its current token.
    pub token: String,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Files(..)")
    }
}

impl Files {
    /// The credential kept in `dir`.
    pub fn read(dir: &Path) -> std::io::Result<Files> {
        Ok(Files {
            kubeconfig: std::fs::read_to_string(dir.join(KUBECONFIG))?,
            token: std::fs::read_to_string(token_file(dir))?,
        })
    }

    /// Keeps it in `dir` (0600), each file replaced atomically, and only if it differs: a
    /// renewed token leaves the kubeconfig (and so the member, see [`written_at`]) alone.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (path, text) in [
            (dir.join(KUBECONFIG), &self.kubeconfig),
            (token_file(dir), &self.token),
        ] {
            if std::fs::read_to_string(&path).ok().as_ref() != Some(text) {
                fleetmesh_ca::files::write_private(&path, text.as_bytes())?;
            }
        }
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

/// When the kubeconfig in `dir` was last written: install's re-run writes a new one, a
/// replica's copy is rewritten only when the shared one differs, the renewal writes only
/// the token file. `None`: there is none. (A file's metadata: looked at on every
/// reconcile of every member, so no read of the file.)
pub fn written_at(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join(KUBECONFIG))
        .and_then(|m| m.modified())
        .ok()
}

fn token_file(dir: &Path) -> PathBuf {
    dir.join(TOKEN)
}

/// When the token of `dir` is due for renewal: half way through its lifetime (its JWT's
/// `iat` and `exp`). `None` for a token whose times cannot be read: not a service
/// account's token from the TokenRequest API (a static token), so not meshd's to renew.
fn renewal_due(token: &str) -> Option<SystemTime> {
    let (issued, expires) = fleetmesh_kube::jwt::lifetime(token)?;
    let life = expires.duration_since(issued).unwrap_or_default();
    Some(issued + life / 2)
}

/// Renews the token in `dir` if it is due at `now` (through the TokenRequest API, as the
/// service account the token is of); whether it did.
pub async fn renew_if_due(
    dir: &Path,
    egress: &EgressPolicy,
    now: SystemTime,
) -> anyhow::Result<bool> {
    let token = std::fs::read_to_string(token_file(dir))?;
    if renewal_due(token.trim()).is_none_or(|due| now < due) {
        return Ok(false);
    }
    let client = kube::Client::try_from(load(dir, egress).await?)?;
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client, ACCOUNT.0);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = accounts
        .create_token_request(ACCOUNT.1, &PostParams::default(), &request)
        .await?;
    let token = answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| anyhow::anyhow!("the TokenRequest answer holds no token"))?;
    fleetmesh_ca::files::write_private(&token_file(dir), token.as_bytes())?;
    Ok(true)
}

/// Renews every member's token when due, awake or scaled to zero (a member asleep longer
/// than a token lives must still wake), until dropped; looks every `every`. A failed
/// renewal is retried on the next look (the old token works until it expires).
pub async fn keep_renewed(fleet: Arc<Fleet>, egress: EgressPolicy, every: Duration) {
    loop {
        for (project, state) in fleet.projects() {
            for cluster in state.memberships.keys() {
                let dir = fleet.credential_dir(&project, cluster);
                if !dir.is_dir() {
                    continue;
                }
                let renewed = match renew_if_due(&dir, &egress, SystemTime::now()).await {
                    // Other replicas get it too.
                    Ok(true) => fleet
                        .credential_changed(&project, cluster)
                        .await
                        .map(|()| true),
                    other => other,
                };
                match renewed {
                    Ok(true) => tracing::info!(%cluster, %project, "member credential renewed"),
                    Ok(false) => {}
                    Err(error) => {
                        let error = format!("{error:#}");
                        tracing::warn!(%cluster, %project, %error, "cannot renew the member credential; retrying");
                    }
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::time::UNIX_EPOCH;

    fn jwt(payload: &str) -> String {
        let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!("{}.{}.sig", encode(r#"{"alg":"RS256"}"#), encode(payload))
    }

    #[test]
    fn a_token_is_due_half_way_through_its_lifetime() {
        let token = jwt(r#"{"iat":1000,"exp":87400,"sub":"x"}"#);
        let due = UNIX_EPOCH + Duration::from_secs(1000 + 43200);
        assert_eq!(renewal_due(&token), Some(due));
        for unreadable in ["", "a.b.c", &jwt(r#"{"exp":5}"#), &jwt("not json")] {
            assert_eq!(renewal_due(unreadable), None, "{unreadable}");
        }
    }
}
