//! `fleetmesh uninstall`: takes out of a cluster what `fleetmesh install` put in, in the
//! reverse order: the webhooks first (so no pod creation calls a control plane that is
//! going away, and none fails because it is gone), then the CNI plugin, meshd's access,
//! istio-system's config, and last the CRDs of which no object is left. It needs only
//! the cluster (not meshd), so it is also the way out for a cluster whose meshd is gone
//! for good: its injection webhooks fail closed, and pods of labelled namespaces cannot
//! be created until they are removed.
//!
//! Kept unless `--purge`: the `istio-system` namespace (it may hold what you put there,
//! remote secrets say) and every CRD with objects left (your VirtualServices survive).
//! Kept always: what install did not apply itself (an existing Istio's CRDs, MeshConfig
//! and webhooks, left alone by install too).

use super::manifests::{self, ControlPlane, Plan};
use anyhow::Context;
use fleetmesh_kube::apply::{self, Applier, Ownership};
use kube::api::DynamicObject;

/// What `uninstall` is asked to do.
#[derive(clap::Args)]
pub struct UninstallOptions {
    /// Also remove the istio-system namespace and CRDs that still have objects.
    #[arg(long)]
    pub purge: bool,
    /// Print every object.
    #[arg(long)]
    pub verbose: bool,
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Objects deleted.
    pub deleted: usize,
    /// Objects left in place, each with why.
    pub kept: Vec<String>,
}

/// Removes what install applies from the cluster of `options`.
pub async fn run(options: &UninstallOptions) -> anyhow::Result<Removal> {
    let client =
        crate::kubeconfig::connect(options.kubeconfig.as_deref(), options.context.as_deref())
            .await?;
    client.apiserver_version().await.context(
        "the cluster's API server cannot be reached (check the kubeconfig context, or pass --context)",
    )?;
    let applier = Applier::new(client, "fleetmesh-install").await?;
    let mut removal = Removal::default();
    // Every object install can apply, whatever its options were (the CNI plugin too).
    for manifest in everything_installed().iter().rev() {
        println!("Removing what {} applied", manifest.file);
        let objects = apply::documents(&manifest.yaml)?;
        for object in objects.iter().rev() {
            let described = apply::describe(object);
            if let Some(why) = keep(&applier, object, options.purge).await? {
                println!("    {described} kept: {why}");
                removal.kept.push(format!("{described}: {why}"));
                continue;
            }
            let deleted = applier
                .delete(object)
                .await
                .with_context(|| format!("deleting {described}"))?;
            if deleted {
                removal.deleted += 1;
            }
            if options.verbose {
                let outcome = if deleted { "deleted" } else { "not there" };
                println!("    {described} {outcome}");
            }
        }
    }
    println!(
        "Removed {} objects; kept {}.",
        removal.deleted,
        removal.kept.len()
    );
    println!("A cluster registered in a fleet: `fleetmesh fleet remove` takes it out of it.");
    Ok(removal)
}

/// Why `object` stays, if it does.
async fn keep(
    applier: &Applier,
    object: &DynamicObject,
    purge: bool,
) -> anyhow::Result<Option<String>> {
    if let Ownership::Theirs(managers) = applier.ownership(object).await? {
        let why = super::coexist::whose(&managers);
        return Ok(Some(format!("install did not apply it ({why})")));
    }
    if purge {
        return Ok(None);
    }
    let kind = object.types.as_ref().map(|t| t.kind.as_str());
    match kind {
        Some("Namespace") => Ok(Some("it may hold your objects (--purge removes it)".into())),
        Some("CustomResourceDefinition") => {
            let spec = &object.data["spec"];
            let group = spec["group"].as_str().unwrap_or_default();
            let kind = spec["names"]["kind"].as_str().unwrap_or_default();
            for version in spec["versions"].as_array().into_iter().flatten() {
                let version = version["name"].as_str().unwrap_or_default();
                if applier.any_of(&format!("{group}/{version}"), kind).await? {
                    let why = format!("{kind} objects exist (--purge removes them too)");
                    return Ok(Some(why));
                }
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Everything install applies with any options, in install's order.
fn everything_installed() -> Vec<manifests::Manifest> {
    let plan = Plan {
        project: "any".into(),
        location: "any".into(),
        cluster: "any".into(),
        channel: fleetmesh_inject::Channel::Regular,
        cni_managed: true,
        hub: fleetmesh_inject::DEFAULT_HUB.into(),
    };
    let control_plane = ControlPlane {
        webhook_url: "https://meshd.invalid".into(),
        ca_bundle: String::new(),
        xds_address: "meshd.invalid:15012".into(),
        trust_domain: "cluster.local".into(),
    };
    manifests::render(&plan, &control_plane, &manifests::Coexistence::default())
}
