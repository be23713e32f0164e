//! A remote secret's kubeconfig, which a tenant wrote: only what names a cluster and
//! proves an identity to it in-line is accepted. Anything that would make meshd run a
//! command (`exec`, `auth-provider`), read a file of meshd's host (`token-file`,
//! `client-certificate`, `certificate-authority` paths), skip TLS verification, or dial
//! a network tenants may not reach is refused, with the field named.

use crate::egress::{EgressError, EgressPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::time::Duration;

/// How long connecting to a remote API server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger kubeconfigs are refused before parsing (a real one is a few kB).
const MAX_BYTES: usize = 64 * 1024;

/// Why a remote secret's kubeconfig is refused. Never carries the credential itself.
#[derive(Debug, thiserror::Error)]
pub enum RemoteKubeconfigError {
    /// Not a kubeconfig.
    #[error("not a kubeconfig: {0}")]
    Parse(String),
    /// A field meshd will not honour for a tenant.
    #[error("{field} is not allowed in a remote secret's kubeconfig ({why})")]
    Forbidden {
        /// The kubeconfig field.
        field: &'static str,
        /// Why it is refused.
        why: &'static str,
    },
    /// The API server's address.
    #[error("server {server:?}: {reason}")]
    Server {
        /// The `server` field.
        server: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address is outside what tenants may reach.
    #[error(transparent)]
    Egress(#[from] EgressError),
}

/// Client settings for the cluster `text` names (its current context), connections pinned
/// to an address `policy` allows.
pub async fn client_config(
    text: &str,
    policy: &EgressPolicy,
) -> Result<kube::Config, RemoteKubeconfigError> {
    if text.len() > MAX_BYTES {
        return Err(RemoteKubeconfigError::Parse(format!(
            "{} bytes; the limit is {MAX_BYTES}",
            text.len()
        )));
    }
    // The parser's errors may quote the text, which holds the token: only its kind is kept.
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|_| RemoteKubeconfigError::Parse("invalid YAML or fields".into()))?;
    check_fields(&kubeconfig)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| RemoteKubeconfigError::Parse(e.to_string()))?;
    pin(&mut config, policy).await?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    Ok(config)
}

/// Refuses the fields of the current context's cluster and user that reach beyond the
/// kubeconfig's own text.
fn check_fields(kubeconfig: &Kubeconfig) -> Result<(), RemoteKubeconfigError> {
    let forbidden = |field, why| Err(RemoteKubeconfigError::Forbidden { field, why });
    const FILE: &str = "it names a file on meshd's host; put the data in-line";
    const COMMAND: &str = "it runs a program on meshd's host; use a token";
    let context_name = kubeconfig.current_context.as_deref().unwrap_or_default();
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| RemoteKubeconfigError::Parse("no current context".into()))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| RemoteKubeconfigError::Parse("the current context has no cluster".into()))?;
    if cluster.certificate_authority.is_some() {
        return forbidden("certificate-authority", FILE);
    }
    if cluster.insecure_skip_tls_verify == Some(true) {
        return forbidden(
            "insecure-skip-tls-verify",
            "the API server must be verified",
        );
    }
    if cluster.proxy_url.is_some() {
        return forbidden("proxy-url", "meshd connects to the API server directly");
    }
    let user = context.user.as_deref().and_then(|name| {
        kubeconfig
            .auth_infos
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.auth_info.as_ref())
    });
    let Some(user) = user else {
        return Ok(());
    };
    if user.exec.is_some() {
        return forbidden("exec", COMMAND);
    }
    if user.auth_provider.is_some() {
        return forbidden("auth-provider", COMMAND);
    }
    if user.token_file.is_some() {
        return forbidden("tokenFile", FILE);
    }
    if user.client_certificate.is_some() {
        return forbidden("client-certificate", FILE);
    }
    if user.client_key.is_some() {
        return forbidden("client-key", FILE);
    }
    if user.impersonate.is_some() || user.impersonate_groups.is_some() {
        return forbidden("as", "meshd acts as the credential's own identity");
    }
    Ok(())
}

/// Resolves the server's host once, checks it against `policy`, and points the client at
/// that address (TLS still verifies the host name).
async fn pin(
    config: &mut kube::Config,
    policy: &EgressPolicy,
) -> Result<(), RemoteKubeconfigError> {
    let url = config.cluster_url.clone();
    let server_error = |reason: &str| RemoteKubeconfigError::Server {
        server: url.to_string(),
        reason: reason.into(),
    };
    if url.scheme_str() != Some("https") {
        return Err(server_error("only https:// API servers are accepted"));
    }
    let host = url
        .host()
        .ok_or_else(|| server_error("no host"))?
        .to_string();
    let port = url.port_u16().unwrap_or(443);
    let address = policy.resolve(&host, port).await?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_err() && config.tls_server_name.is_none() {
        config.tls_server_name = Some(bare.to_string());
    }
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    config.cluster_url = format!("https://{address}{path}")
        .parse()
        .map_err(|_| server_error("cannot be pinned to its address"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(server: &str, user: &str) -> String {
        format!(
            r#"
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}", certificate-authority-data: ""}}}}]
users: [{{name: u, user: {user}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"#
        )
    }

    fn open() -> EgressPolicy {
        EgressPolicy::denying(&[]).unwrap()
    }

    #[tokio::test]
    async fn a_token_kubeconfig_is_accepted_and_pinned() {
        let text = kubeconfig("https://localhost:6443", "{token: secret-token}");
        let config = client_config(&text, &open()).await.unwrap();
        let pinned = config.cluster_url.host().unwrap_or_default();
        assert!(pinned == "127.0.0.1" || pinned == "[::1]", "{pinned}");
        assert_eq!(config.tls_server_name.as_deref(), Some("localhost"));
    }

    #[tokio::test]
    async fn what_reaches_beyond_the_text_is_refused_by_field() {
        let cases = [
            (
                "{exec: {command: /bin/sh, apiVersion: client.authentication.k8s.io/v1}}",
                "exec",
            ),
            ("{tokenFile: /etc/shadow}", "tokenFile"),
            (
                "{client-certificate: /etc/cert, client-key: /etc/key}",
                "client-certificate",
            ),
            ("{token: t, as: admin}", "as"),
        ];
        for (user, field) in cases {
            let text = kubeconfig("https://127.0.0.1:6443", user);
            let error = client_config(&text, &open()).await.unwrap_err().to_string();
            assert!(error.starts_with(field), "{field}: {error}");
        }
        let plain = kubeconfig("http://127.0.0.1:6443", "{token: t}");
        let error = client_config(&plain, &open())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("https"), "{error}");
    }

    #[tokio::test]
    async fn denied_networks_and_garbage_are_refused_without_echoing_the_token() {
        let metadata = kubeconfig("https://169.254.169.254", "{token: secret-token}");
        let error = client_config(&metadata, &open())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("169.254.0.0/16"), "{error}");
        let broken = "clusters: [{name: c, cluster: {server: secret-token";
        let error = client_config(broken, &open())
            .await
            .unwrap_err()
            .to_string();
        assert!(!error.contains("secret-token"), "{error}");
    }
}
