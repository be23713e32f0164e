//! The fleet registry in a host Kubernetes cluster (`--registry-kubeconfig`), so that
//! several meshd replicas share it: the projects and memberships in one `FleetRegistry`
//! object (`fleetmesh.io/v1alpha1`, named `fleet`, in `--registry-namespace`), changed
//! with its resourceVersion so that two replicas' changes never overwrite each other, and
//! each member's credential in a Secret of that namespace. Every replica follows both and
//! keeps a copy of each credential in its own state directory (0600), which is what it
//! serves the member with.
//!
//! One object bounds the registry by the API server's object size (about 1.5 MB: some
//! thousands of members). meshd creates the CRD, the namespace and the object on first
//! start; its credential for the host cluster needs that, and Secrets of the namespace.
//! Who can read the namespace's Secrets can reach every member: it is the provider's.

use super::Project;
use super::credential::Files;
use fleetmesh_kube::reflect::WatchRetry;
use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The registry, as one object of the host cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "fleetmesh.io",
    version = "v1alpha1",
    kind = "FleetRegistry",
    plural = "fleetregistries",
    namespaced
)]
pub struct FleetRegistrySpec {
    /// Every project, by name.
    #[serde(default)]
    pub projects: BTreeMap<String, Project>,
}

/// The registry object's name.
const NAME: &str = "fleet";
/// Marks a member credential's Secret.
const CREDENTIAL_LABEL: &str = "fleetmesh.io/member-credential";
/// Its member's project and cluster (annotations: a cluster name may be longer than a
/// label value).
const PROJECT_ANNOTATION: &str = "fleetmesh.io/project";
const CLUSTER_ANNOTATION: &str = "fleetmesh.io/cluster";
const FIELD_MANAGER: &str = "meshd";
/// How long meshd waits for its CRD to be served after creating it.
const CRD_READY: Duration = Duration::from_secs(30);

/// Why a registry write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another replica changed the registry since it was read: read it again.
    #[error("the registry changed meanwhile")]
    Conflict,
    /// The host cluster refused or could not be reached.
    #[error(transparent)]
    Failed(#[from] kube::Error),
}

/// A member credential as the host cluster keeps it.
pub struct StoredCredential {
    /// The member's project.
    pub project: String,
    /// The member cluster.
    pub cluster: String,
    /// Its kubeconfig and token.
    pub files: Files,
}

/// The registry's objects in the host cluster.
pub struct HostRegistry {
    registries: Api<FleetRegistry>,
    secrets: Api<Secret>,
}

impl HostRegistry {
    /// The registry in `namespace` of `client`'s cluster; its CRD, namespace and object
    /// are created if missing.
    pub async fn open(client: kube::Client, namespace: &str) -> anyhow::Result<HostRegistry> {
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd = FleetRegistry::crd();
        let crd_name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&crd_name, &apply, &Patch::Apply(&crd))
            .await
            .map_err(|e| anyhow::anyhow!("creating CRD {crd_name}: {e}"))?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let wanted = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        namespaces
            .patch(namespace, &apply, &Patch::Apply(&wanted))
            .await
            .map_err(|e| anyhow::anyhow!("creating namespace {namespace}: {e}"))?;
        let registry = HostRegistry {
            registries: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
        };
        registry.create_object().await?;
        Ok(registry)
    }

    /// Creates the registry object unless it exists, once the new CRD is served.
    async fn create_object(&self) -> anyhow::Result<()> {
        let empty = FleetRegistry::new(NAME, FleetRegistrySpec::default());
        let started = std::time::Instant::now();
        loop {
            match self.registries.create(&PostParams::default(), &empty).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
                // The CRD was just created and is not served yet.
                Err(kube::Error::Api(status))
                    if status.code == 404 && started.elapsed() < CRD_READY =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(anyhow::anyhow!("creating the fleet registry: {e}")),
            }
        }
    }

    /// The projects, and the version to write them back with.
    pub async fn read(&self) -> Result<(BTreeMap<String, Project>, Option<String>), kube::Error> {
        let registry = self.registries.get(NAME).await?;
        Ok((registry.spec.projects, registry.metadata.resource_version))
    }

    /// Replaces the projects, if the registry is still at `version`.
    pub async fn write(
        &self,
        projects: BTreeMap<String, Project>,
        version: Option<String>,
    ) -> Result<(), WriteError> {
        let mut registry = FleetRegistry::new(NAME, FleetRegistrySpec { projects });
        registry.metadata.resource_version = version;
        match self
            .registries
            .replace(NAME, &PostParams::default(), &registry)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(WriteError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps `files` as the credential of `cluster` of `project`.
    pub async fn store_credential(
        &self,
        project: &str,
        cluster: &str,
        files: &Files,
    ) -> Result<(), kube::Error> {
        let name = secret_name(project, cluster);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(CREDENTIAL_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some(
                    [
                        (PROJECT_ANNOTATION.to_string(), project.to_string()),
                        (CLUSTER_ANNOTATION.to_string(), cluster.to_string()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(
                [
                    ("kubeconfig".to_string(), bytes(&files.kubeconfig)),
                    ("token".to_string(), bytes(&files.token)),
                ]
                .into(),
            ),
            ..Secret::default()
        };
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        self.secrets
            .patch(&name, &apply, &Patch::Apply(&secret))
            .await?;
        Ok(())
    }

    /// Forgets the credential of `cluster` of `project`.
    pub async fn remove_credential(&self, project: &str, cluster: &str) -> Result<(), kube::Error> {
        let name = secret_name(project, cluster);
        match self.secrets.delete(&name, &DeleteParams::default()).await {
            Err(kube::Error::Api(status)) if status.code != 404 => Err(kube::Error::Api(status)),
            _ => Ok(()),
        }
    }

    /// Every member credential kept.
    pub async fn credentials(&self) -> Result<Vec<StoredCredential>, kube::Error> {
        let params = ListParams::default().labels(CREDENTIAL_LABEL);
        let secrets = self.secrets.list(&params).await?;
        Ok(secrets.items.into_iter().filter_map(stored).collect())
    }

    /// Yields whenever the registry or a credential may have changed (and once at the
    /// start), retrying with backoff when the host cluster cannot be reached.
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + use<> {
        let registry = watcher(
            self.registries.clone(),
            watcher::Config::default().fields(&format!("metadata.name={NAME}")),
        )
        .backoff(WatchRetry::default())
        .map(|_| ());
        let credentials = watcher(
            self.secrets.clone(),
            watcher::Config::default().labels(CREDENTIAL_LABEL),
        )
        .backoff(WatchRetry::default())
        .map(|_| ());
        futures::stream::select(registry, credentials)
    }
}

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

/// The credential a Secret holds, if it is a whole one.
fn stored(secret: Secret) -> Option<StoredCredential> {
    let annotations = secret.metadata.annotations?;
    let data = secret.data?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    Some(StoredCredential {
        project: annotations.get(PROJECT_ANNOTATION)?.clone(),
        cluster: annotations.get(CLUSTER_ANNOTATION)?.clone(),
        files: Files {
            kubeconfig: text("kubeconfig")?,
            token: text("token")?,
        },
    })
}

/// A Secret name for any project and cluster name (together longer than a name may be).
fn secret_name(project: &str, cluster: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{project}/{cluster}"));
    format!("member-credential-{}", &hex::encode(digest)[..20])
}
