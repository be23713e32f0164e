//! The injection webhook's URL path, which install writes into each
//! MutatingWebhookConfiguration and meshd reads back (the API server allows no query
//! string): `/inject/<revision>/cluster/<cluster id>/redirect/<cni|init>/hub/<hub>`.
//! `cni`: the cluster's CNI plugin redirects traffic, so pods get no `istio-init`;
//! `hub`: where the cluster pulls the proxy image from (`HUB/proxyv2:VERSION`). Installs
//! from before `--hub` end after the redirect and get [`crate::DEFAULT_HUB`].
//!
//! Anyone who reaches the webhook port can send any path, so every part is checked.

use crate::channel::{DEFAULT_HUB, Revision, valid_hub};

/// What an injection call's path says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectPath {
    /// The revision whose proxy to inject.
    pub revision: &'static Revision,
    /// The cluster the pod runs in (its proxies' `CLUSTER_ID`).
    pub cluster: String,
    /// Whether the cluster's CNI plugin redirects traffic.
    pub cni_managed: bool,
    /// The image repository prefix.
    pub hub: String,
}

/// Why a path is not an injection path (answered as 404 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not the shape above.
    #[error("expected /inject/<revision>/cluster/<cluster>/redirect/<cni|init>/hub/<hub>")]
    Shape,
    /// No such revision.
    #[error("no revision {0:?} (revisions: asm-managed-rapid, asm-managed, asm-managed-stable)")]
    Revision(String),
    /// A cluster id that is not a plain name.
    #[error("cluster {0:?}: expected letters, digits, '.', '_' or '-' (at most 253)")]
    Cluster(String),
    /// Neither `cni` nor `init`.
    #[error("redirect {0:?}: expected cni or init")]
    Redirect(String),
    /// Not an image repository prefix.
    #[error("hub {0:?}: expected an image repository prefix such as registry.example.com/team")]
    Hub(String),
}

impl InjectPath {
    /// Reads `path` (the URL's path, without query).
    pub fn parse(path: &str) -> Result<InjectPath, PathError> {
        let rest = path.strip_prefix("/inject/").ok_or(PathError::Shape)?;
        // The hub, last, may hold slashes.
        let parts: Vec<&str> = rest.splitn(7, '/').collect();
        let (revision, cluster, redirect, hub) = match parts[..] {
            [revision, "cluster", cluster, "redirect", redirect] => {
                (revision, cluster, redirect, DEFAULT_HUB)
            }
            [
                revision,
                "cluster",
                cluster,
                "redirect",
                redirect,
                "hub",
                hub,
            ] => (revision, cluster, redirect, hub),
            _ => return Err(PathError::Shape),
        };
        let revision =
            Revision::named(revision).ok_or_else(|| PathError::Revision(revision.into()))?;
        if !valid_cluster(cluster) {
            return Err(PathError::Cluster(cluster.into()));
        }
        let cni_managed = match redirect {
            "cni" => true,
            "init" => false,
            other => return Err(PathError::Redirect(other.into())),
        };
        if !valid_hub(hub) {
            return Err(PathError::Hub(hub.into()));
        }
        Ok(InjectPath {
            revision,
            cluster: cluster.into(),
            cni_managed,
            hub: hub.into(),
        })
    }

    /// The path that reads back as `self`.
    pub fn to_path(&self) -> String {
        let redirect = if self.cni_managed { "cni" } else { "init" };
        format!(
            "/inject/{}/cluster/{}/redirect/{redirect}/hub/{}",
            self.revision.name, self.cluster, self.hub
        )
    }
}

/// A cluster id that fits in a URL path segment and an environment variable unchanged.
pub fn valid_cluster(cluster: &str) -> bool {
    (1..=253).contains(&cluster.len())
        && cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Channel;

    #[test]
    fn a_path_reads_back_as_what_wrote_it() {
        let written = InjectPath {
            revision: Revision::of(Channel::Rapid),
            cluster: "c1".into(),
            cni_managed: true,
            hub: "localhost:5000/team/fleetmesh".into(),
        };
        assert_eq!(InjectPath::parse(&written.to_path()), Ok(written));
        let before_hubs =
            InjectPath::parse("/inject/asm-managed/cluster/c1/redirect/init").unwrap();
        assert_eq!(before_hubs.hub, DEFAULT_HUB);
        assert!(!before_hubs.cni_managed);
    }

    #[test]
    fn every_part_is_checked() {
        for (path, expected) in [
            ("/validate", PathError::Shape),
            ("/inject/asm-managed", PathError::Shape),
            ("/inject/asm-managed/x/c1/redirect/cni", PathError::Shape),
            (
                "/inject/asm-managed/cluster/c1/redirect/cni/hu/b",
                PathError::Shape,
            ),
            (
                "/inject/nope/cluster/c1/redirect/cni",
                PathError::Revision("nope".into()),
            ),
            (
                "/inject/asm-managed/cluster/c%0A1/redirect/cni",
                PathError::Cluster("c%0A1".into()),
            ),
            (
                "/inject/asm-managed/cluster/c1/redirect/both",
                PathError::Redirect("both".into()),
            ),
            (
                "/inject/asm-managed/cluster/c1/redirect/cni/hub/../etc",
                PathError::Hub("../etc".into()),
            ),
        ] {
            assert_eq!(InjectPath::parse(path), Err(expected), "{path}");
        }
    }
}
