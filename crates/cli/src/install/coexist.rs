//! Installing beside an Istio the cluster already runs (an in-cluster istiod, on the way
//! to migrating from it): install finds it, says what it will change before changing
//! anything, and leaves alone every object it did not apply itself (Istio's CRDs, its
//! MeshConfig, its `default` tag), so the running Istio keeps working as it did.

use super::manifests::{Coexistence, ISTIO_SYSTEM, Manifest};
use fleetmesh_kube::apply::{self, Applier, Ownership};
use fleetmesh_kube::root_cert::certificates;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ListParams};

/// What serves `client`'s cluster besides fleetmesh: istiod Deployments in istio-system
/// (with their image's tag), and injection webhooks install did not write.
pub async fn find(
    client: &kube::Client,
    take_default_tag: bool,
) -> Result<Coexistence, kube::Error> {
    let mut found = Vec::new();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ISTIO_SYSTEM);
    for istiod in deployments
        .list(&ListParams::default().labels("app=istiod"))
        .await?
        .items
    {
        let name = istiod.metadata.name.unwrap_or_default();
        let tag = istiod
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image)
            .and_then(|image| image.rsplit_once(':').map(|(_, tag)| tag.to_string()));
        found.push(match tag {
            Some(tag) => format!("Deployment {ISTIO_SYSTEM}/{name} ({tag})"),
            None => format!("Deployment {ISTIO_SYSTEM}/{name}"),
        });
    }
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let not_ours = ListParams::default().labels(&format!("!{}", super::manifests::MANAGED_BY));
    for configuration in webhooks.list(&not_ours).await?.items {
        let injects = configuration
            .webhooks
            .iter()
            .flatten()
            .any(|w| w.name.ends_with("sidecar-injector.istio.io"));
        if injects {
            let name = configuration.metadata.name.unwrap_or_default();
            found.push(format!("MutatingWebhookConfiguration {name}"));
        }
    }
    Ok(Coexistence {
        other_istio: (!found.is_empty()).then(|| found.join(", ")),
        take_default_tag,
    })
}

/// Whether install applies `object` although another manager applied it: only the
/// `default` tag, when `--default-tag` asks for it.
pub fn takes_over(object: &DynamicObject, coexistence: &Coexistence) -> bool {
    coexistence.take_default_tag
        && object.metadata.name.as_deref() == Some(&super::manifests::default_tag_configuration())
}

/// What install will do beside the other Istio, said before anything changes: a line
/// for each object (created, updated, left as it is), the default tag's and validation's
/// scope, and whether workloads of the two control planes will trust each other
/// (`roots`: the roots of the mesh install joins). Nothing when there is no other Istio.
pub async fn changes(
    client: &kube::Client,
    applier: &Applier,
    rendered: &[Manifest],
    coexistence: &Coexistence,
    roots: &str,
) -> anyhow::Result<Vec<String>> {
    let Some(other) = &coexistence.other_istio else {
        return Ok(Vec::new());
    };
    let mut lines = vec![format!(
        "This cluster already runs Istio: {other}. What install will change:"
    )];
    for manifest in rendered {
        for object in apply::documents(&manifest.yaml)? {
            let described = apply::describe(&object);
            let what = match applier.ownership(&object).await? {
                Ownership::Absent => "create".to_string(),
                Ownership::Ours => "update (installed by fleetmesh)".to_string(),
                Ownership::Theirs(_) if takes_over(&object, coexistence) => {
                    "take over (--default-tag)".to_string()
                }
                Ownership::Theirs(managers) => format!("leave as it is ({})", whose(&managers)),
            };
            lines.push(format!("    {described}: {what}"));
        }
    }
    lines.push(if coexistence.default_tag() {
        "    the default tag (istio-injection=enabled namespaces) moves to fleetmesh".into()
    } else {
        "    the default tag stays with the other Istio (--default-tag takes it); label namespaces istio.io/rev=REVISION to move them".into()
    });
    lines.push(
        "    validation: only objects labelled istio.io/rev with a fleetmesh revision".into(),
    );
    if let Some(warning) = trust_warning(client, roots).await {
        lines.push(format!("    warning: {warning}"));
    }
    Ok(lines)
}

/// Why workloads of the other Istio and of fleetmesh would not trust each other, if they
/// would not: the other's root (its `istio-ca-root-cert` in istio-system) is not among
/// the mesh's roots.
async fn trust_warning(client: &kube::Client, roots: &str) -> Option<String> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ISTIO_SYSTEM);
    let theirs = config_maps
        .get_opt(fleetmesh_kube::root_cert::CONFIG_MAP)
        .await
        .ok()
        .flatten()?
        .data?
        .remove(fleetmesh_kube::root_cert::KEY)?;
    let shared = certificates(&theirs).any(|root| certificates(roots).any(|ours| ours == root));
    (!shared).then(|| {
        "the other Istio's root is not the mesh's: its workloads and fleetmesh's will not \
         trust each other. To move namespaces without a failed request, give meshd the \
         other Istio's CA (its plug-in cacerts) before moving any."
            .to_string()
    })
}

/// Who manages an object install did not apply, in words.
pub fn whose(managers: &[String]) -> String {
    let named: Vec<&str> = managers
        .iter()
        .map(String::as_str)
        .filter(|m| !m.is_empty())
        .collect();
    if named.is_empty() {
        "not installed by fleetmesh".into()
    } else {
        format!("managed by {}", named.join(", "))
    }
}
