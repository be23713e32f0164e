//! The management API's credential. On first start meshd writes a random admin token to
//! `STATE_DIR/admin-token` (0600, never logged); the CLI sends it as a bearer token
//! (`--admin-token-file`, or `FLEETMESH_ADMIN_TOKEN`). Requests to `/v1/...` without
//! it get 401 and change nothing; the debug endpoints (and the status page) answer
//! loopback peers that name this host, and others only with it. To rotate it: delete the
//! file and restart meshd (every meshd sharing the state directory reads the same file).

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The token's file in the state directory.
pub const FILE: &str = "admin-token";

/// The admin token, held as its digest (never printed).
pub struct AdminToken {
    digest: [u8; 32],
    path: PathBuf,
}

impl AdminToken {
    /// The token in `state_dir`, created on first start.
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<AdminToken> {
        let path = state_dir.join(FILE);
        // Hex text: what the CLI reads from the file and sends as a bearer token. Its
        // length is checked once trimmed, below.
        let stored = fleetmesh_ca::files::read_or_create_secret(&path, 0, |random| {
            hex::encode(random).into_bytes()
        })?;
        let token = String::from_utf8_lossy(&stored);
        let token = token.trim();
        if token.len() < 32 {
            let reason = format!(
                "{} holds a token of {} characters; 32 or more are needed (delete it for a new one)",
                path.display(),
                token.len()
            );
            return Err(std::io::Error::other(reason));
        }
        Ok(AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
            path,
        })
    }

    /// Whether `request` carries the token.
    fn admits(&self, request: &Request) -> bool {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        presented.is_some_and(|token| {
            let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
            // Comparing digests, not tokens: how long a comparison takes tells an attacker
            // nothing about the token's bytes.
            digest == self.digest
        })
    }

    fn refusal(&self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!(
                "meshd's management API needs its admin token (meshd wrote it to {} on this host; pass --admin-token-file or set FLEETMESH_ADMIN_TOKEN)\n",
                self.path.display()
            ),
        )
            .into_response()
    }
}

/// Lets through requests with the admin token; 401 for the rest.
pub async fn require_token(
    State(token): State<Arc<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    if token.admits(&request) {
        next.run(request).await
    } else {
        token.refusal()
    }
}

/// Lets through requests from this host, and others with the admin token.
pub async fn local_or_token(
    State(token): State<Arc<AdminToken>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if (peer.ip().is_loopback() && names_this_host(&request)) || token.admits(&request) {
        next.run(request).await
    } else {
        token.refusal()
    }
}

/// Whether the request names this host (`localhost` or a loopback address), or no host at
/// all. A web page can make a browser on this host send requests here under its own name
/// (a name of its domain resolved to 127.0.0.1) and read the answers; the name it sent
/// gives it away.
fn names_this_host(request: &Request) -> bool {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return true;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use tower::ServiceExt;

    /// `/debug` and `/v1` behind the two gates, with the token of `dir`.
    fn gated(dir: &Path) -> Router {
        let token = Arc::new(AdminToken::load_or_create(dir).unwrap());
        let debug = Router::new()
            .route("/debug", get(|| async { "debug" }))
            .layer(from_fn_with_state(token.clone(), local_or_token));
        let api = Router::new()
            .route("/v1", get(|| async { "api" }))
            .layer(from_fn_with_state(token, require_token));
        debug.merge(api)
    }

    /// The status of GET `path` from `peer`, with `token` if given.
    async fn status(router: &Router, path: &str, peer: &str, token: Option<&str>) -> StatusCode {
        status_for(router, path, peer, token, None).await
    }

    /// The status of GET `path` from `peer` naming `host`, with `token` if given.
    async fn status_for(
        router: &Router,
        path: &str,
        peer: &str,
        token: Option<&str>,
        host: Option<&str>,
    ) -> StatusCode {
        let mut request = Request::get(path);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut request = request.body(Body::empty()).unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_api_needs_the_token_and_debug_needs_it_from_afar() {
        let dir = tempfile::tempdir().unwrap();
        let router = gated(dir.path());
        let token = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let local = "127.0.0.1:40000";
        // A peer of another network: what a reachable meshd would see.
        let remote = "192.0.2.7:40000";
        assert_eq!(
            status(&router, "/v1", local, None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&router, "/v1", local, Some("wrong")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&router, "/v1", remote, Some(&token)).await,
            StatusCode::OK
        );
        assert_eq!(status(&router, "/debug", local, None).await, StatusCode::OK);
        assert_eq!(
            status(&router, "/debug", remote, None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&router, "/debug", remote, Some(&token)).await,
            StatusCode::OK
        );
        // A browser here sent by another site's page names that site.
        for (host, expected) in [
            ("localhost:15014", StatusCode::OK),
            ("127.0.0.1:15014", StatusCode::OK),
            ("[::1]:15014", StatusCode::OK),
            ("rebound.example:15014", StatusCode::UNAUTHORIZED),
            ("127.0.0.1.example", StatusCode::UNAUTHORIZED),
        ] {
            let got = status_for(&router, "/debug", local, None, Some(host)).await;
            assert_eq!(got, expected, "{host}");
        }
        assert_eq!(
            status_for(
                &router,
                "/debug",
                local,
                Some(&token),
                Some("rebound.example")
            )
            .await,
            StatusCode::OK
        );
        // The same token after a restart: it is kept, not made anew.
        let again = gated(dir.path());
        assert_eq!(
            status(&again, "/v1", local, Some(&token)).await,
            StatusCode::OK
        );
    }
}
