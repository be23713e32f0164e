//! Server-side apply of multi-document YAML, as `kubectl apply --server-side` does it,
//! telling for each object whether it was created, changed or already as asked (so a
//! re-run of the installer can say "unchanged").

use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use serde::Deserialize;
use std::fmt;
use std::time::{Duration, Instant};

/// Why a manifest could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Document number `document` (from 1) is not YAML of an object.
    #[error("document {document}: {source}")]
    Yaml {
        /// Which document, from 1.
        document: usize,
        /// What the parser said.
        source: serde_yaml_ng::Error,
    },
    /// A document without `apiVersion` and `kind`.
    #[error("document {document}: every document needs apiVersion and kind")]
    NoType {
        /// Which document, from 1.
        document: usize,
    },
    /// An object without `apiVersion` and `kind`.
    #[error("every object needs apiVersion and kind")]
    Untyped,
    /// An object without `metadata.name`.
    #[error("every document needs metadata.name")]
    NoName,
    /// A namespaced object with no namespace of its own or given.
    #[error("{kind} is namespaced: give metadata.namespace or a namespace")]
    NoNamespace {
        /// The object's kind.
        kind: String,
    },
    /// A kind the API server does not serve (its CRD is missing).
    #[error("the cluster does not serve {api_version}")]
    NotServed {
        /// The object's `apiVersion`.
        api_version: String,
    },
    /// The API server's resource types could not be listed.
    #[error("listing the API server's resource types: {0}")]
    Discovery(kube::Error),
    /// A CRD the installer applied is not served in time.
    #[error("CRD {name} was not established within {timeout:?}")]
    NotEstablished {
        /// The CRD's name.
        name: String,
        /// How long it was waited for.
        timeout: Duration,
    },
    /// The API server refused or failed a request.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// What applying an object did, in kubectl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// It changed.
    Configured,
    /// It was already as asked.
    Unchanged,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// Whose an object in the cluster is, as its managed fields tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// There is no such object (or its kind is not served yet).
    Absent,
    /// This applier's field manager applied it (others may manage fields of it too).
    Ours,
    /// It exists, and this applier never applied it: the managers that did.
    Theirs(Vec<String>),
}

/// What [`Applier::apply_unless_theirs`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// It applied the object.
    Done(Outcome),
    /// It left the object as it is: another manager applied it (these ones).
    Kept(Vec<String>),
}

/// The field managers that wrote `metadata`'s object.
pub fn managers(metadata: &ObjectMeta) -> impl Iterator<Item = &str> {
    metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|entry| entry.manager.as_deref())
}

/// The objects of a multi-document YAML text, in order (empty documents skipped).
pub fn documents(yaml: &str) -> Result<Vec<DynamicObject>, ApplyError> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let number = index + 1;
        let yaml_error = |source| ApplyError::Yaml {
            document: number,
            source,
        };
        let value = serde_yaml_ng::Value::deserialize(document).map_err(yaml_error)?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_yaml_ng::from_value(value).map_err(yaml_error)?;
        if object.types.is_none() {
            return Err(ApplyError::NoType { document: number });
        }
        objects.push(object);
    }
    Ok(objects)
}

/// `Kind namespace/name` (or `Kind name`), as progress lines and errors name an object.
pub fn describe(object: &DynamicObject) -> String {
    let kind = object
        .types
        .as_ref()
        .map_or("<no kind>", |t| t.kind.as_str());
    let name = object.metadata.name.as_deref().unwrap_or("<unnamed>");
    match &object.metadata.namespace {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Applies objects of any kind the API server serves.
pub struct Applier {
    client: Client,
    discovery: Discovery,
    field_manager: String,
}

impl Applier {
    /// An applier owning the fields it sets as `field_manager`.
    pub async fn new(client: Client, field_manager: &str) -> Result<Applier, ApplyError> {
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .map_err(ApplyError::Discovery)?;
        Ok(Applier {
            client,
            discovery,
            field_manager: field_manager.into(),
        })
    }

    /// The client it applies with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Lists the resource types again (after CRDs were installed).
    pub async fn rediscover(&mut self) -> Result<(), ApplyError> {
        self.discovery = Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(ApplyError::Discovery)?;
        Ok(())
    }

    /// Applies `object`: namespaced kinds into `namespace` if given, else their own
    /// `metadata.namespace`; cluster-scoped kinds as they are. Forces ownership of the
    /// fields it sets, as a re-run of an installer must.
    pub async fn apply(
        &self,
        object: &DynamicObject,
        namespace: Option<&str>,
    ) -> Result<Outcome, ApplyError> {
        let api = self.api_of(object, namespace)?;
        let name = object.metadata.name.as_deref().ok_or(ApplyError::NoName)?;
        let before = api.get_opt(name).await?;
        self.patch(&api, name, object, before).await
    }

    /// Applies `object` (in its own namespace) as [`Applier::apply`] does, unless it
    /// exists and this applier never applied it: then, unless `take_over`, it is left as
    /// it is.
    pub async fn apply_unless_theirs(
        &self,
        object: &DynamicObject,
        take_over: bool,
    ) -> Result<Applied, ApplyError> {
        let api = self.api_of(object, None)?;
        let name = object.metadata.name.as_deref().ok_or(ApplyError::NoName)?;
        let before = api.get_opt(name).await?;
        if let Some(live) = &before
            && let Ownership::Theirs(managers) = self.ownership_of(live)
            && !take_over
        {
            return Ok(Applied::Kept(managers));
        }
        Ok(Applied::Done(self.patch(&api, name, object, before).await?))
    }

    /// Server-side applies `object` as `name` through `api`; `before` is what was there.
    async fn patch(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        object: &DynamicObject,
        before: Option<DynamicObject>,
    ) -> Result<Outcome, ApplyError> {
        let after = api
            .patch(
                name,
                &PatchParams::apply(&self.field_manager).force(),
                &Patch::Apply(object),
            )
            .await?;
        Ok(match before {
            None => Outcome::Created,
            Some(before) if before.metadata.resource_version == after.metadata.resource_version => {
                Outcome::Unchanged
            }
            Some(_) => Outcome::Configured,
        })
    }

    /// Whether the object `object` names (in its own namespace) exists, and whether this
    /// applier's field manager ever applied it.
    pub async fn ownership(&self, object: &DynamicObject) -> Result<Ownership, ApplyError> {
        let api = match self.api_of(object, None) {
            Ok(api) => api,
            Err(ApplyError::NotServed { .. }) => return Ok(Ownership::Absent),
            Err(e) => return Err(e),
        };
        let name = object.metadata.name.as_deref().ok_or(ApplyError::NoName)?;
        Ok(match api.get_opt(name).await? {
            Some(live) => self.ownership_of(&live),
            None => Ownership::Absent,
        })
    }

    /// Whether this applier's field manager ever applied `live`.
    fn ownership_of(&self, live: &DynamicObject) -> Ownership {
        if managers(&live.metadata).any(|m| m == self.field_manager) {
            Ownership::Ours
        } else {
            Ownership::Theirs(managers(&live.metadata).map(str::to_string).collect())
        }
    }

    /// Deletes the object `object` names (in its own namespace); whether it was there.
    /// A kind the cluster does not serve has no such object.
    pub async fn delete(&self, object: &DynamicObject) -> Result<bool, ApplyError> {
        let api = match self.api_of(object, None) {
            Ok(api) => api,
            Err(ApplyError::NotServed { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let name = object.metadata.name.as_deref().ok_or(ApplyError::NoName)?;
        match api.delete(name, &kube::api::DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether any object of `kind` (`apiVersion` and kind) exists in the cluster.
    pub async fn any_of(&self, api_version: &str, kind: &str) -> Result<bool, ApplyError> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let Some((resource, _)) = self.discovery.resolve_gvk(&gvk) else {
            return Ok(false);
        };
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let one = kube::api::ListParams::default().limit(1);
        Ok(!api.list(&one).await?.items.is_empty())
    }

    /// The API of `object`'s kind: in `namespace` if given, else its own.
    fn api_of(
        &self,
        object: &DynamicObject,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, ApplyError> {
        let types = object.types.as_ref().ok_or(ApplyError::Untyped)?;
        let (group, version) = types
            .api_version
            .split_once('/')
            .unwrap_or(("", &types.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, capabilities): (ApiResource, ApiCapabilities) = self
            .discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| ApplyError::NotServed {
                api_version: types.api_version.clone(),
            })?;
        let api: Api<DynamicObject> = match (capabilities.scope, namespace) {
            (Scope::Namespaced, Some(namespace)) => {
                Api::namespaced_with(self.client.clone(), namespace, &resource)
            }
            (Scope::Namespaced, None) => match &object.metadata.namespace {
                Some(own) => Api::namespaced_with(self.client.clone(), own, &resource),
                None => {
                    return Err(ApplyError::NoNamespace {
                        kind: types.kind.clone(),
                    });
                }
            },
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &resource),
        };
        Ok(api)
    }
}

/// Waits until the API server serves every CRD of `names` (condition Established), at
/// most `timeout` in all: objects of a kind applied earlier would be refused.
pub async fn wait_established(
    client: &Client,
    names: impl IntoIterator<Item = String>,
    timeout: Duration,
) -> Result<(), ApplyError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    for name in names {
        loop {
            let established = crds.get_opt(&name).await?.and_then(|crd| {
                let conditions = crd.status?.conditions?;
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            });
            if established.is_some() {
                break;
            }
            if Instant::now() > deadline {
                return Err(ApplyError::NotEstablished { name, timeout });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
