//! Gateway TLS credentials from the cluster: Secrets as `Credential`s (Kubernetes' TLS
//! layout `tls.crt`/`tls.key`/`ca.crt`, or Istio's generic `cert`/`key`/`cacert`), and
//! which service accounts may read their namespace's Secrets, asked of the API server by
//! SubjectAccessReview (as istiod does before it serves a credential to a gateway; the
//! gateway guide's Role and RoleBinding are what grants it).

use fleetmesh_model::Credential;
use fleetmesh_model::trigger::{Origin, Trigger};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How long an answer holds before it is asked again (a removed RoleBinding takes at
/// most this long to withhold the credentials).
const REVIEW_TTL: Duration = Duration::from_secs(30);

/// The TLS material of `secret`, if it has any.
pub fn credential_of(secret: &Secret) -> Option<Credential> {
    let data = secret.data.as_ref()?;
    let text = |keys: [&str; 2]| {
        keys.iter()
            .find_map(|k| data.get(*k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let credential = Credential {
        certificate_chain: text(["tls.crt", "cert"]),
        private_key: text(["tls.key", "key"]),
        ca_certificates: text(["ca.crt", "cacert"]),
    };
    let complete = credential.certificate_chain.is_some() && credential.private_key.is_some();
    (complete || credential.ca_certificates.is_some()).then_some(credential)
}

/// Every credential among `secrets`, by (namespace, name).
pub fn credentials<'a>(
    secrets: impl Iterator<Item = &'a Secret>,
) -> BTreeMap<(String, String), Arc<Credential>> {
    secrets
        .filter_map(|secret| {
            let key = (
                secret.metadata.namespace.clone()?,
                secret.metadata.name.clone()?,
            );
            Some((key, Arc::new(credential_of(secret)?)))
        })
        .collect()
}

type Reader = (String, String);

/// Cached SubjectAccessReview answers to "may this service account list Secrets in its
/// namespace?". Lookups never wait: an unknown account is asked in the background, and
/// an answer that changes what is allowed signals `changes` (so a new snapshot includes
/// it).
pub struct SecretAccess {
    reviews: Api<SubjectAccessReview>,
    answers: Mutex<BTreeMap<Reader, Answer>>,
    changes: UnboundedSender<Trigger>,
}

#[derive(Clone, Copy)]
enum Answer {
    Pending,
    Known { allowed: bool, at: Instant },
}

impl SecretAccess {
    /// Asks `client`'s API server; an answer that arrives later signals `changes`.
    pub fn new(client: kube::Client, changes: UnboundedSender<Trigger>) -> Arc<SecretAccess> {
        Arc::new(SecretAccess {
            reviews: Api::all(client),
            answers: Mutex::new(BTreeMap::new()),
            changes,
        })
    }

    /// Those of `wanted` known to be allowed; asks about the unknown and the stale.
    pub fn readers(self: &Arc<Self>, wanted: BTreeSet<Reader>) -> BTreeSet<Reader> {
        let mut answers = self.answers.lock();
        let mut allowed = BTreeSet::new();
        for reader in wanted {
            let answer = answers.get(&reader).copied();
            if let Some(Answer::Known { allowed: true, .. }) = answer {
                allowed.insert(reader.clone());
            }
            let ask = match answer {
                None => true,
                Some(Answer::Pending) => false,
                Some(Answer::Known { at, .. }) => at.elapsed() > REVIEW_TTL,
            };
            if ask {
                if answer.is_none() {
                    answers.insert(reader.clone(), Answer::Pending);
                }
                let access = self.clone();
                tokio::spawn(async move { access.review(reader).await });
            }
        }
        allowed
    }

    async fn review(&self, reader: Reader) {
        let (namespace, account) = &reader;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(format!("system:serviceaccount:{namespace}:{account}")),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.clone()),
                    verb: Some("list".into()),
                    resource: Some("secrets".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let allowed = match self.reviews.create(&PostParams::default(), &review).await {
            Ok(answer) => answer.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(%namespace, %account, error = %e, "SubjectAccessReview failed; credentials withheld until it succeeds");
                false
            }
        };
        let previous = {
            let mut answers = self.answers.lock();
            answers.insert(
                reader.clone(),
                Answer::Known {
                    allowed,
                    at: Instant::now(),
                },
            )
        };
        let was_allowed = matches!(previous, Some(Answer::Known { allowed: true, .. }));
        if allowed != was_allowed {
            tracing::info!(%namespace, %account, allowed, "gateway credential access");
            let _ = self.changes.send(Trigger::update(Origin::Secret));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("shop-cert".into()),
                namespace: Some("gw".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn reads_both_layouts_and_skips_other_secrets() {
        let tls = credential_of(&secret(&[
            ("tls.crt", "C"),
            ("tls.key", "K"),
            ("ca.crt", "A"),
        ]))
        .unwrap();
        assert_eq!(tls.certificate_chain.as_deref(), Some("C"));
        assert_eq!(tls.private_key.as_deref(), Some("K"));
        assert_eq!(tls.ca_certificates.as_deref(), Some("A"));
        let generic = credential_of(&secret(&[("cert", "C"), ("key", "K")])).unwrap();
        assert_eq!(generic.ca_certificates, None);
        let ca_only = credential_of(&secret(&[("cacert", "A")])).unwrap();
        assert_eq!(ca_only.ca_certificates.as_deref(), Some("A"));
        assert_eq!(credential_of(&secret(&[("password", "x")])), None);
        assert_eq!(
            credential_of(&secret(&[("tls.crt", "C")])),
            None,
            "a certificate without key"
        );
        let all = credentials([secret(&[("cert", "C"), ("key", "K")])].iter());
        assert!(all.contains_key(&("gw".to_string(), "shop-cert".to_string())));
    }
}
