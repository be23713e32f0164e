//! ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in every namespace, as istiod
//! keeps it: injected pods mount it to verify meshd's TLS port. Written when a namespace
//! appears and again in every namespace when the roots change (a root rotation step).
//! It holds the roots of every CA it is given: a fleet member's cluster gets its
//! project's roots and the roots of meshd's own serving certificate. (Workloads trust
//! each other through the roots their certificate comes with, not through this map.)
//! A map another control plane wrote with roots meshd does not hold (an in-cluster
//! istiod with a CA of its own) is left alone: its proxies verify istiod with it.

use fleetmesh_ca::CertificateAuthority;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::watch;

/// The ConfigMap every namespace gets, as istiod names it.
pub const CONFIG_MAP: &str = "istio-ca-root-cert";
/// Its key holding the trusted roots (PEM).
pub const KEY: &str = "root-cert.pem";

/// Keeps the ConfigMap, with the roots of all `authorities`, in every namespace of
/// `client`'s cluster (until dropped, or a CA is gone).
pub async fn publish(
    client: kube::Client,
    mut authorities: Vec<watch::Receiver<Arc<CertificateAuthority>>>,
) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut events = watcher(namespaces, watcher::Config::default())
        .backoff(crate::reflect::WatchRetry::default())
        .applied_objects()
        .boxed();
    let mut known = BTreeSet::new();
    // What the known namespaces hold: a CA file changing without changing the roots (a
    // signing certificate activated, another project's CA created) rewrites nothing.
    let mut written = bundle(&mut authorities);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(namespace)) => {
                    let Some(name) = namespace.metadata.name.clone() else { continue };
                    if namespace.metadata.deletion_timestamp.is_some() {
                        known.remove(&name);
                        continue;
                    }
                    write(&client, &name, &written).await;
                    known.insert(name);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "watching namespaces (retrying)"),
                None => return,
            },
            changed = any_changed(&mut authorities) => {
                if changed.is_err() {
                    return;
                }
                let roots = bundle(&mut authorities);
                if roots == written {
                    continue;
                }
                written = roots;
                for name in &known {
                    write(&client, name, &written).await;
                }
            }
        }
    }
}

/// The roots of every authority, each once (marked seen).
fn bundle(authorities: &mut [watch::Receiver<Arc<CertificateAuthority>>]) -> String {
    let mut bundle = String::new();
    for authority in authorities {
        let authority = authority.borrow_and_update();
        let roots = authority.roots().trim_end();
        if !bundle.contains(roots) {
            bundle.push_str(roots);
            bundle.push('\n');
        }
    }
    bundle
}

/// Waits for a change of any authority.
async fn any_changed(
    authorities: &mut [watch::Receiver<Arc<CertificateAuthority>>],
) -> Result<(), watch::error::RecvError> {
    if authorities.is_empty() {
        return std::future::pending().await;
    }
    let changes = authorities.iter_mut().map(|a| Box::pin(a.changed()));
    futures::future::select_all(changes).await.0
}

/// The certificates of a PEM bundle, each trimmed.
pub fn certificates(bundle: &str) -> impl Iterator<Item = &str> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|block| block.starts_with("-----BEGIN CERTIFICATE-----"))
}

/// Whether meshd may write `roots` over `existing`: it is meshd's, or every root it
/// holds is among `roots` (another control plane sharing the mesh's CA, whose proxies
/// lose nothing). Another CA's map (an in-cluster istiod with its own root) is its
/// proxies' way to verify it, and stays.
fn may_replace(existing: &ConfigMap, roots: &str) -> bool {
    let ours = crate::apply::managers(&existing.metadata).any(|m| m == FIELD_MANAGER);
    let held = existing.data.as_ref().and_then(|d| d.get(KEY));
    ours || held.is_none_or(|held| {
        certificates(held).all(|root| certificates(roots).any(|mine| mine == root))
    })
}

/// The field manager meshd writes the maps as.
const FIELD_MANAGER: &str = "meshd";

async fn write(client: &kube::Client, namespace: &str, roots: &str) {
    let config_map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIG_MAP,
            "namespace": namespace,
            "labels": {"istio.io/config": "true"},
        },
        "data": {KEY: roots},
    });
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    if let Ok(Some(existing)) = api.get_opt(CONFIG_MAP).await
        && !may_replace(&existing, roots)
    {
        tracing::debug!(%namespace, "another CA's root ConfigMap; left as it is");
        return;
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Err(e) = api
        .patch(CONFIG_MAP, &params, &Patch::Apply(&config_map))
        .await
    {
        // A namespace being deleted refuses new objects; nothing to do about it.
        tracing::debug!(%namespace, error = %e, "could not write the mesh roots");
    }
}
