//! Istio's mutual TLS between sidecars: certificates come from the agent over SDS
//! (secrets `default` and `ROOTCA` on the bootstrap cluster `sds-grpc`); peers are
//! accepted when their certificate chains to the mesh roots and names a SPIFFE id of the
//! mesh's trust domain.

use crate::pack;
use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, GrpcService, Metadata, TransportSocket,
    api_config_source, config_source, grpc_service, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext, common_tls_context,
    subject_alt_name_matcher, tls_parameters,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{
    BoolValue, Duration as ProtoDuration, Struct, Value, value::Kind,
};
use fleetmesh_api::networking::{
    ClientTlsMode, ClientTlsSettings, ServerTlsMode, ServerTlsSettings, TlsVersion,
};

/// The bootstrap cluster of the agent's SDS socket.
pub const SDS_CLUSTER: &str = "sds-grpc";
/// The SDS name of the workload's own certificate, as Istio's agent serves it.
pub const CERTIFICATE_SECRET: &str = "default";
/// The SDS name of the mesh's trusted roots.
pub const ROOT_SECRET: &str = "ROOTCA";
/// Endpoint metadata that picks the mTLS transport socket, as Istio marks sidecars.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The label Istio's injector puts on pods with a sidecar (`istio`).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// ALPN Istio's sidecars offer to each other.
const ISTIO_ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];

/// How long Envoy holds a listener or cluster for a secret of files before going on
/// without it (Envoy's default is 15 s). The agent reads local files at once, so only a
/// file that is not there takes this long, and holding the proxy's readiness for it helps
/// nobody: the secret is applied whenever it arrives.
const FILE_SECRET_FETCH_TIMEOUT: u64 = 2;

fn sds(name: &str) -> SdsSecretConfig {
    let of_files = name.starts_with(FILE_ROOT) || name.starts_with(FILE_CERT);
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: api_config_source::ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    set_node_on_first_message_only: true,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: SDS_CLUSTER.into(),
                                ..Default::default()
                            },
                        )),
                        ..GrpcService::default()
                    }],
                    ..ApiConfigSource::default()
                },
            )),
            initial_fetch_timeout: of_files.then_some(ProtoDuration {
                seconds: FILE_SECRET_FETCH_TIMEOUT as i64,
                nanos: 0,
            }),
            ..ConfigSource::default()
        }),
    }
}

/// The workload's own certificate, and peers checked against the mesh roots and named by
/// one of `peers` (SPIFFE ids, or DNS names a ServiceEntry gives), or by any id of the
/// trust domain when `peers` is empty.
fn istio_context(trust_domain: &str, peers: &[String], alpn: &[&str]) -> CommonTlsContext {
    let uri = |pattern| san(subject_alt_name_matcher::SanType::Uri, pattern);
    let names = if peers.is_empty() {
        vec![uri(string_matcher::MatchPattern::Prefix(format!(
            "spiffe://{trust_domain}/"
        )))]
    } else {
        peers.iter().map(|id| named(id)).collect()
    };
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(CERTIFICATE_SECRET)],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: names,
                        ..CertificateValidationContext::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(ROOT_SECRET)),
                    ..Default::default()
                },
            ),
        ),
        alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        ..CommonTlsContext::default()
    }
}

pub(crate) fn tls_socket(config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}

/// A client side of Istio mTLS to another sidecar, which must prove one of `peers` (the
/// destination's identities; any of the trust domain when unknown).
pub fn istio_upstream(sni: &str, trust_domain: &str, peers: &[String]) -> TransportSocket {
    tls_socket(pack(UpstreamTlsContext {
        common_tls_context: Some(istio_context(trust_domain, peers, &ISTIO_ALPN)),
        sni: sni.into(),
        ..UpstreamTlsContext::default()
    }))
}

/// SDS names of secrets the agent reads from the proxy's host (Istio's agent's names): a
/// CA bundle (`file-root:system`: the system's roots) and a certificate with its key.
const FILE_ROOT: &str = "file-root:";
const FILE_CERT: &str = "file-cert:";

/// The secret of roots read from files: `file-root:CA` (`system`: the system's roots),
/// `file-root:CA~CRL` with a revocation list (validation keeps `~` out of the paths).
fn file_roots(ca: Option<&str>, crl: Option<&str>) -> String {
    let ca = ca.unwrap_or("system");
    match crl {
        Some(crl) => format!("{FILE_ROOT}{ca}~{crl}"),
        None => format!("{FILE_ROOT}{ca}"),
    }
}

/// TLS the proxy originates to a destination outside the mesh (DestinationRule SIMPLE or
/// MUTUAL), for server name `host` unless `sni` says otherwise. The server must chain to
/// `caCertificates` (else to the system's roots) and be named by one of
/// `subjectAltNames` (else by one of `service_names`, the ServiceEntry's, else by the
/// SNI), unless `insecureSkipVerify`; MUTUAL presents the client certificate files. The
/// agent reads the files and serves them over SDS, so a missing file leaves the cluster
/// waiting instead of the config rejected.
pub fn originate(
    settings: &ClientTlsSettings,
    host: &str,
    service_names: &[String],
) -> TransportSocket {
    let sni = settings.sni.clone().unwrap_or_else(|| host.to_string());
    let verify = settings.insecure_skip_verify != Some(true);
    let validation = verify.then(|| {
        let names = match (settings.subject_alt_names.as_slice(), service_names) {
            ([], []) => std::slice::from_ref(&sni),
            ([], names) | (names, _) => names,
        };
        let roots = file_roots(
            settings.ca_certificates.as_deref(),
            settings.ca_crl.as_deref(),
        );
        common_tls_context::ValidationContextType::CombinedValidationContext(
            common_tls_context::CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: names.iter().map(|n| named(n)).collect(),
                    ..CertificateValidationContext::default()
                }),
                validation_context_sds_secret_config: Some(sds(&roots)),
                ..Default::default()
            },
        )
    });
    let client_certificate = match (&settings.client_certificate, &settings.private_key) {
        (Some(certificate), Some(key)) if settings.mode == Some(ClientTlsMode::Mutual) => {
            vec![sds(&format!("{FILE_CERT}{certificate}~{key}"))]
        }
        _ => Vec::new(),
    };
    tls_socket(pack(UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: client_certificate,
            validation_context_type: validation,
            ..CommonTlsContext::default()
        }),
        sni,
        ..UpstreamTlsContext::default()
    }))
}

/// A certificate name to accept: a URI (SPIFFE id) when it has a scheme, else a DNS name.
fn named(name: &str) -> SubjectAltNameMatcher {
    let san_type = if name.contains("://") {
        subject_alt_name_matcher::SanType::Uri
    } else {
        subject_alt_name_matcher::SanType::Dns
    };
    san(san_type, string_matcher::MatchPattern::Exact(name.into()))
}

/// Certificate names of `san_type` that match `pattern`.
fn san(
    san_type: subject_alt_name_matcher::SanType,
    pattern: string_matcher::MatchPattern,
) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(pattern),
            ..StringMatcher::default()
        }),
        ..SubjectAltNameMatcher::default()
    }
}

/// The server side: a client certificate is required.
pub fn istio_downstream(trust_domain: &str) -> TransportSocket {
    tls_socket(pack(DownstreamTlsContext {
        common_tls_context: Some(istio_context(trust_domain, &[], &["h2", "http/1.1"])),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    }))
}

/// A gateway's TLS for clients outside the mesh, from the certificate files the Gateway
/// server names; MUTUAL also asks for a client certificate that chains to
/// `caCertificates`. The files are the gateway's own (mounted in its pod), so its agent
/// reads them and serves them over SDS, as Istio's agent does: a file missing there
/// leaves the listener waiting for it (and a replaced file reaches Envoy) instead of
/// Envoy rejecting the whole port's listeners.
pub fn gateway_downstream(settings: &ServerTlsSettings) -> TransportSocket {
    let mutual = settings.tls_mode() == Some(ServerTlsMode::Mutual);
    let certificate = match (&settings.server_certificate, &settings.private_key) {
        (Some(certificate), Some(key)) => vec![sds(&format!("{FILE_CERT}{certificate}~{key}"))],
        _ => Vec::new(),
    };
    let validation = settings.ca_certificates.as_ref().map(|ca| {
        let roots = file_roots(Some(ca), settings.ca_crl.as_deref());
        client_validation(settings, sds(&roots))
    });
    tls_socket(pack(DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: certificate,
            validation_context_type: validation,
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            tls_params: server_tls_parameters(settings),
            ..CommonTlsContext::default()
        }),
        require_client_certificate: Some(BoolValue { value: mutual }),
        ..DownstreamTlsContext::default()
    }))
}

/// How a MUTUAL gateway server checks client certificates: they chain to `roots` and,
/// when the server says so, carry one of its `subjectAltNames` and match one of its
/// certificate hashes or SPKI digests.
pub fn client_validation(
    settings: &ServerTlsSettings,
    roots: SdsSecretConfig,
) -> common_tls_context::ValidationContextType {
    use common_tls_context::ValidationContextType;
    let checks = CertificateValidationContext {
        match_typed_subject_alt_names: settings
            .subject_alt_names
            .iter()
            .map(|n| named(n))
            .collect(),
        verify_certificate_hash: settings.verify_certificate_hash.clone(),
        verify_certificate_spki: settings.verify_certificate_spki.clone(),
        ..CertificateValidationContext::default()
    };
    if checks == CertificateValidationContext::default() {
        return ValidationContextType::ValidationContextSdsSecretConfig(roots);
    }
    ValidationContextType::CombinedValidationContext(
        common_tls_context::CombinedCertificateValidationContext {
            default_validation_context: Some(checks),
            validation_context_sds_secret_config: Some(roots),
            ..Default::default()
        },
    )
}

/// A Gateway server's protocol bounds and cipher suites (`TLS_AUTO` and an empty list:
/// Envoy's defaults), as istiod's `applyServerTLSSettings` sets them.
pub fn server_tls_parameters(settings: &ServerTlsSettings) -> Option<TlsParameters> {
    use tls_parameters::TlsProtocol;
    let version = |v: Option<TlsVersion>| match v {
        None | Some(TlsVersion::Auto) => TlsProtocol::TlsAuto,
        Some(TlsVersion::V1_0) => TlsProtocol::TlSv10,
        Some(TlsVersion::V1_1) => TlsProtocol::TlSv11,
        Some(TlsVersion::V1_2) => TlsProtocol::TlSv12,
        Some(TlsVersion::V1_3) => TlsProtocol::TlSv13,
    } as i32;
    let parameters = TlsParameters {
        tls_minimum_protocol_version: version(settings.min_protocol_version),
        tls_maximum_protocol_version: version(settings.max_protocol_version),
        cipher_suites: settings.cipher_suites.clone(),
        ..TlsParameters::default()
    };
    (parameters != TlsParameters::default()).then_some(parameters)
}

/// Whether `endpoint` runs a sidecar (its `tlsMode: istio` label), so takes mutual TLS.
pub fn has_sidecar(endpoint: &fleetmesh_model::service::Endpoint) -> bool {
    endpoint
        .labels
        .get(TLS_MODE_LABEL)
        .is_some_and(|m| m == "istio")
}

/// Auto mTLS: endpoints marked `tlsMode: istio` (they have a sidecar) get mTLS, others
/// plaintext.
pub fn auto_mtls_matches(
    sni: &str,
    trust_domain: &str,
    peers: &[String],
) -> Vec<TransportSocketMatch> {
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(tls_mode_struct()),
            transport_socket: Some(istio_upstream(sni, trust_domain, peers)),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Struct::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
                    RawBuffer::default(),
                ))),
            }),
        },
    ]
}

fn tls_mode_struct() -> Struct {
    Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(Kind::StringValue("istio".into())),
            },
        )]
        .into(),
    }
}

/// The metadata of an endpoint with a sidecar, which selects the mTLS socket.
pub fn istio_endpoint_metadata() -> Metadata {
    Metadata {
        filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_string(), tls_mode_struct())].into(),
        ..Metadata::default()
    }
}

/// Istio's SNI for mTLS to a service port: `outbound_.9080_.v1_.reviews.ns.svc.cluster.local`.
pub fn istio_sni(port: u32, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}
