//! Gateway TLS from Kubernetes Secrets (`credentialName`), as istiod serves it: the
//! listener's TLS context asks for secret `kubernetes://<name>` (and, for MUTUAL,
//! `kubernetes://<name>-cacert`) over ADS, and meshd answers with the Secret's
//! certificate, key and CA. A gateway gets a credential only from its own namespace and
//! only when its service account may read that namespace's Secrets; a server whose
//! credential is missing or withheld is left out of the listener (its other servers keep
//! serving) rather than leave Envoy waiting for a secret that never comes.

use crate::common::ads;
use crate::tls::tls_socket;
use crate::{NamedResource, Scope, pack};
use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, secret,
};
use envoy_types::pb::google::protobuf::BoolValue;
use fleetmesh_api::networking::{ServerTlsMode, ServerTlsSettings};
use fleetmesh_model::Credential;
use std::collections::BTreeMap;

/// What one credential name resolved to for this gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    /// The Secret's name (without `kubernetes://`).
    pub name: String,
    pub credential: &'a Credential,
    /// The client CA, for MUTUAL: the Secret's own, or its `<name>-cacert` Secret's.
    pub ca_certificates: Option<&'a str>,
}

/// The credential a TLS server names, if this gateway may have it and it is complete
/// (a certificate and key; for MUTUAL also a client CA).
pub fn resolve<'a>(scope: &Scope<'a>, tls: &ServerTlsSettings) -> Option<Resolved<'a>> {
    let named = tls.credential_name.as_deref()?;
    let name = named.strip_prefix("kubernetes://").unwrap_or(named);
    let proxy = scope.proxy;
    let reader = (proxy.namespace.clone(), proxy.service_account.clone());
    if !scope.snapshot.secret_readers.contains(&reader) {
        return None;
    }
    let lookup = |secret: &str| {
        scope
            .snapshot
            .credentials
            .get(&(proxy.namespace.clone(), secret.to_string()))
    };
    let credential = lookup(name)?;
    credential.certificate_chain.as_ref()?;
    credential.private_key.as_ref()?;
    let ca_certificates = credential.ca_certificates.as_deref().or_else(|| {
        lookup(&format!("{name}-cacert"))?
            .ca_certificates
            .as_deref()
    });
    if tls.tls_mode() == Some(ServerTlsMode::Mutual) && ca_certificates.is_none() {
        return None;
    }
    Some(Resolved {
        name: name.to_string(),
        credential,
        ca_certificates,
    })
}

fn certificate_secret(name: &str) -> String {
    format!("kubernetes://{name}")
}

fn ca_secret(name: &str) -> String {
    format!("kubernetes://{name}-cacert")
}

fn over_ads(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads()),
    }
}

/// The server side of a gateway TLS server whose certificate comes over ADS.
pub fn downstream(
    resolved: &Resolved,
    mutual: bool,
    settings: &ServerTlsSettings,
) -> TransportSocket {
    let validation = mutual
        .then(|| crate::tls::client_validation(settings, over_ads(ca_secret(&resolved.name))));
    tls_socket(pack(DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![over_ads(certificate_secret(&resolved.name))],
            validation_context_type: validation,
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            tls_params: crate::tls::server_tls_parameters(settings),
            ..CommonTlsContext::default()
        }),
        require_client_certificate: Some(BoolValue { value: mutual }),
        ..DownstreamTlsContext::default()
    }))
}

/// The Secret resources for the credentials a gateway's listeners use.
pub fn secrets(used: &BTreeMap<String, Resolved>) -> Vec<NamedResource> {
    let inline = |text: &str| {
        Some(DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(
                text.as_bytes().to_vec(),
            )),
            ..DataSource::default()
        })
    };
    let mut resources = Vec::new();
    for resolved in used.values() {
        let credential = resolved.credential;
        let name = certificate_secret(&resolved.name);
        resources.push(NamedResource {
            resource: pack(Secret {
                name: name.clone(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: credential.certificate_chain.as_deref().and_then(inline),
                    private_key: credential.private_key.as_deref().and_then(inline),
                    ..TlsCertificate::default()
                })),
            }),
            name,
        });
        if let Some(ca) = resolved.ca_certificates {
            let name = ca_secret(&resolved.name);
            resources.push(NamedResource {
                resource: pack(Secret {
                    name: name.clone(),
                    r#type: Some(secret::Type::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: inline(ca),
                            ..CertificateValidationContext::default()
                        },
                    )),
                }),
                name,
            });
        }
    }
    resources
}
