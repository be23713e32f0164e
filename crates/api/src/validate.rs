//! Istio's validation rules. Pure: one resource in, every problem out. Used by local mode
//! and, later, by the validating webhook, so both reject exactly the same input.

mod common;
mod destination_rule;
pub mod security;
mod virtual_service;

use crate::error::FieldError;
use crate::networking::ServerTlsMode;
use crate::protocol::Protocol;
use crate::resource::Resource;
use common::*;
pub use common::{is_dns1123_label, is_dns1123_subdomain};
pub use virtual_service::MAX_DIRECT_RESPONSE_BODY;

/// Every problem found in `resource`; empty when it is valid.
pub fn validate(resource: &Resource) -> Vec<FieldError> {
    let mut errors = Errors::default();
    let meta = resource.meta();
    if !is_dns1123_subdomain(&meta.name) {
        errors.push(
            "metadata.name",
            format!("{:?} is not a valid DNS-1123 name", meta.name),
        );
    }
    if !is_dns1123_label(&meta.namespace) {
        errors.push(
            "metadata.namespace",
            format!("{:?} is not a valid namespace name", meta.namespace),
        );
    }
    match resource {
        Resource::Service(s) => validate_service(&s.spec, &mut errors),
        Resource::Endpoints(e) => validate_endpoints(e, &mut errors),
        Resource::VirtualService(vs) => virtual_service::validate(&vs.spec, &mut errors),
        Resource::DestinationRule(dr) => destination_rule::validate(&dr.spec, &mut errors),
        Resource::Gateway(gw) => validate_gateway(&gw.spec, &mut errors),
        Resource::ServiceEntry(se) => validate_service_entry(&se.spec, &mut errors),
        Resource::WorkloadEntry(we) => validate_workload_entry("spec", &we.spec, &mut errors),
        Resource::Sidecar(sc) => validate_sidecar(&sc.spec, &mut errors),
        Resource::PeerAuthentication(pa) => {
            security::validate_peer_authentication(&pa.spec, &mut errors)
        }
        Resource::AuthorizationPolicy(ap) => {
            security::validate_authorization_policy(&ap.spec, &mut errors)
        }
        Resource::RequestAuthentication(ra) => {
            security::validate_request_authentication(&ra.spec, &mut errors)
        }
    }
    errors.0
}

fn validate_service(spec: &crate::kube::ServiceSpec, errors: &mut Errors) {
    if spec.ports.is_empty() {
        errors.push("spec.ports", "a Service needs at least one port");
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        check_port(&format!("{at}.port"), port.port, errors);
        if spec.ports.len() > 1 && port.name.is_none() {
            errors.push(
                format!("{at}.name"),
                "every port of a multi-port Service needs a name",
            );
        }
        if let Some(name) = &port.name
            && !names.insert(name)
        {
            errors.push(
                format!("{at}.name"),
                format!("duplicate port name {name:?}"),
            );
        }
        match port.target_port {
            Some(crate::kube::TargetPort::Number(n)) => {
                check_listener_port(&format!("{at}.targetPort"), n, errors)
            }
            // Without targetPort, workloads listen on the service port itself.
            None if RESERVED_PORTS.contains(&port.port) => errors.push(
                format!("{at}.port"),
                format!(
                    "port {} is reserved for the sidecar itself; set a targetPort",
                    port.port
                ),
            ),
            None => {}
            Some(crate::kube::TargetPort::Name(_)) => {}
        }
    }
}

fn validate_endpoints(endpoints: &crate::kube::Endpoints, errors: &mut Errors) {
    for (i, subset) in endpoints.subsets.iter().enumerate() {
        for (list, addresses) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, address) in addresses.iter().enumerate() {
                if address.ip.parse::<std::net::IpAddr>().is_err() {
                    errors.push(
                        format!("subsets[{i}].{list}[{j}].ip"),
                        format!("{:?} is not an IP address", address.ip),
                    );
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (j, port) in subset.ports.iter().enumerate() {
            check_port(&format!("subsets[{i}].ports[{j}].port"), port.port, errors);
            if !names.insert(port.name.clone().unwrap_or_default()) {
                errors.push(
                    format!("subsets[{i}].ports[{j}].name"),
                    "duplicate port name",
                );
            }
        }
    }
}

fn validate_gateway(spec: &crate::networking::GatewaySpec, errors: &mut Errors) {
    if spec.servers.is_empty() {
        errors.push("spec.servers", "a Gateway needs at least one server");
    }
    // A port takes HTTP (HTTP, HTTP2, GRPC, HTTPS) or plain TCP, not both: the TCP
    // server would never see a connection.
    let http_ports: std::collections::BTreeSet<u32> = spec
        .servers
        .iter()
        .filter(|s| {
            s.port
                .protocol()
                .is_some_and(|p| p.is_http() || p == Protocol::Https)
        })
        .map(|s| s.port.number)
        .collect();
    for (i, server) in spec.servers.iter().enumerate() {
        if server.port.protocol() == Some(Protocol::Tcp) && http_ports.contains(&server.port.number)
        {
            errors.push(
                format!("spec.servers[{i}].port"),
                format!(
                    "port {} also serves HTTP here: a TCP server needs a port of its own",
                    server.port.number
                ),
            );
        }
    }
    for (i, server) in spec.servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        check_listener_port(&format!("{at}.port.number"), server.port.number, errors);
        let Some(protocol) = server.port.protocol() else {
            errors.push(
                format!("{at}.port.protocol"),
                format!(
                    "unknown protocol {:?}",
                    server.port.protocol.to_ascii_uppercase()
                ),
            );
            continue;
        };
        validate_server_tls(&at, protocol, server.tls.as_ref(), errors);
        if server.bind.is_some() {
            errors.push(
                format!("{at}.bind"),
                "not supported by this meshd yet (a gateway listens on its own address)",
            );
        }
        if server.hosts.is_empty() {
            errors.push(format!("{at}.hosts"), "a server needs at least one host");
        }
        for (j, host) in server.hosts.iter().enumerate() {
            let (namespace, dns) = host.split_once('/').unwrap_or(("*", host));
            if !matches!(namespace, "*" | "." | "~") && !is_dns1123_label(namespace) {
                errors.push(
                    format!("{at}.hosts[{j}]"),
                    format!("{namespace:?} is not a namespace, \".\" or \"*\""),
                );
            }
            check_host(&format!("{at}.hosts[{j}]"), dns, true, errors);
        }
    }
}

/// As the API spells it.
fn server_protocol_name(protocol: Protocol) -> String {
    format!("{protocol:?}").to_ascii_uppercase()
}

/// HTTPS servers terminate TLS with a credential or certificate files the gateway reads
/// (Istio's file-mounted form): SIMPLE, or MUTUAL with client certificates checked
/// against `caCertificates`. PASSTHROUGH (protocol HTTPS or TLS) forwards the encrypted
/// connection, chosen by SNI, to what a VirtualService's `tls` route names.
fn validate_server_tls(
    at: &str,
    protocol: Protocol,
    tls: Option<&crate::networking::ServerTlsSettings>,
    errors: &mut Errors,
) {
    let Some(tls) = tls else {
        if protocol.is_tls() {
            errors.push(
                format!("{at}.tls"),
                format!(
                    "protocol {} needs tls settings",
                    server_protocol_name(protocol)
                ),
            );
        }
        return;
    };
    if !protocol.is_tls() {
        // Only httpsRedirect is meaningful on a plain server.
        if tls.mode.is_some() {
            errors.push(
                format!("{at}.tls.mode"),
                "TLS settings need protocol HTTPS or TLS",
            );
        }
        return;
    }
    let Some(mode) = tls.tls_mode() else {
        errors.push(
            format!("{at}.tls.mode"),
            format!(
                "unknown TLS mode {:?}",
                tls.mode.as_deref().unwrap_or_default()
            ),
        );
        return;
    };
    match (mode, protocol) {
        (ServerTlsMode::Passthrough, _) => {
            if tls.credential_name.is_some() || names_files(tls) {
                errors.push(
                    format!("{at}.tls.mode"),
                    "PASSTHROUGH does not terminate TLS: give no credential or certificate files",
                );
            }
            return;
        }
        (ServerTlsMode::Simple | ServerTlsMode::Mutual, Protocol::Https) => {}
        (ServerTlsMode::Simple | ServerTlsMode::Mutual, _) => errors.push(
            format!("{at}.tls.mode"),
            format!(
                "{} on a TLS server (terminated TCP) is not supported by this meshd yet: use protocol HTTPS, or mode PASSTHROUGH",
                mode.name()
            ),
        ),
        (
            ServerTlsMode::AutoPassthrough
            | ServerTlsMode::IstioMutual
            | ServerTlsMode::OptionalMutual,
            _,
        ) => {
            errors.push(
                format!("{at}.tls.mode"),
                format!(
                    "{} is not supported by this meshd yet (supported: SIMPLE, MUTUAL, PASSTHROUGH)",
                    mode.name()
                ),
            );
            // Its certificate fields mean something else (or nothing): no more errors.
            return;
        }
    }
    validate_certificate_source(at, tls, mode, errors);
    validate_tls_parameters(at, tls, errors);
}

/// Protocol bounds in order, and cipher suites Envoy knows (a name Envoy does not know
/// would make it reject the whole listener).
fn validate_tls_parameters(
    at: &str,
    tls: &crate::networking::ServerTlsSettings,
    errors: &mut Errors,
) {
    use crate::networking::{CIPHER_SUITES, TlsVersion};
    let bound = |v: Option<TlsVersion>| v.filter(|v| *v != TlsVersion::Auto);
    if let (Some(min), Some(max)) = (
        bound(tls.min_protocol_version),
        bound(tls.max_protocol_version),
    ) && max < min
    {
        errors.push(
            format!("{at}.tls.maxProtocolVersion"),
            "is below minProtocolVersion",
        );
    }
    for (i, hash) in tls.verify_certificate_hash.iter().enumerate() {
        let hex = hash.replace(':', "");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(
                format!("{at}.tls.verifyCertificateHash[{i}]"),
                "must be a SHA-256 digest in hex (64 digits, colons allowed)",
            );
        }
    }
    for (i, spki) in tls.verify_certificate_spki.iter().enumerate() {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(spki);
        if decoded.map_or(true, |d| d.len() != 32) {
            errors.push(
                format!("{at}.tls.verifyCertificateSpki[{i}]"),
                "must be a SHA-256 digest in base64 (44 characters)",
            );
        }
    }
    for (i, suite) in tls.cipher_suites.iter().enumerate() {
        let names = suite
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(suite);
        if !names.split('|').all(|name| CIPHER_SUITES.contains(&name)) {
            errors.push(
                format!("{at}.tls.cipherSuites[{i}]"),
                format!(
                    "{suite:?} is not a cipher suite Envoy supports (one of {}, or [A|B] for a group of equal preference)",
                    CIPHER_SUITES.join(", ")
                ),
            );
        }
    }
}

/// A terminating server's certificate: a credential of the gateway's namespace, or files
/// the gateway's agent reads (a relative path from its working directory, as Istio's
/// agent reads it; MUTUAL also needs the CA).
fn validate_certificate_source(
    at: &str,
    tls: &crate::networking::ServerTlsSettings,
    mode: ServerTlsMode,
    errors: &mut Errors,
) {
    if let Some(credential) = &tls.credential_name {
        // A Secret in the gateway's own namespace, served to it over SDS.
        let name = credential
            .strip_prefix("kubernetes://")
            .unwrap_or(credential);
        if !is_dns1123_subdomain(name) {
            errors.push(
                format!("{at}.tls.credentialName"),
                format!(
                    "{credential:?} must name a Secret of the gateway's namespace (a DNS-1123 name)"
                ),
            );
        }
        if names_files(tls) {
            errors.push(
                format!("{at}.tls.credentialName"),
                "give either credentialName or certificate files, not both",
            );
        }
        return;
    }
    for (field, value) in [
        ("serverCertificate", &tls.server_certificate),
        ("privateKey", &tls.private_key),
    ] {
        if value.is_none() {
            errors.push(format!("{at}.tls.{field}"), "required for an HTTPS server");
        }
    }
    if tls.ca_certificates.is_none() && mode == ServerTlsMode::Mutual {
        errors.push(
            format!("{at}.tls.caCertificates"),
            "MUTUAL needs the CA that client certificates chain to",
        );
    }
    if tls.ca_crl.is_some() && mode != ServerTlsMode::Mutual {
        errors.push(
            format!("{at}.tls.caCrl"),
            "revocation lists check client certificates: only with MUTUAL",
        );
    }
    for (field, value) in [
        ("serverCertificate", &tls.server_certificate),
        ("privateKey", &tls.private_key),
        ("caCertificates", &tls.ca_certificates),
        ("caCrl", &tls.ca_crl),
    ] {
        if let Some(path) = value {
            check_agent_file(&format!("{at}.tls.{field}"), path, errors);
        }
    }
}

/// Whether a server's TLS settings name any certificate file.
fn names_files(tls: &crate::networking::ServerTlsSettings) -> bool {
    [
        &tls.server_certificate,
        &tls.private_key,
        &tls.ca_certificates,
        &tls.ca_crl,
    ]
    .iter()
    .any(|f| f.is_some())
}

fn validate_service_entry(spec: &crate::networking::ServiceEntrySpec, errors: &mut Errors) {
    use crate::networking::Resolution;
    if spec.hosts.is_empty() {
        errors.push("spec.hosts", "a ServiceEntry needs at least one host");
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        check_host(&format!("spec.hosts[{i}]"), host, false, errors);
    }
    if spec.ports.is_empty() {
        errors.push("spec.ports", "a ServiceEntry needs at least one port");
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        check_port(&format!("spec.ports[{i}].number"), port.number, errors);
        if !names.insert(&port.name) {
            errors.push(
                format!("spec.ports[{i}].name"),
                format!("duplicate port name {:?}", port.name),
            );
        }
    }
    let resolution = spec.resolution.unwrap_or(Resolution::None);
    for (i, address) in spec.addresses.iter().enumerate() {
        let at = format!("spec.addresses[{i}]");
        if security::parse_cidr(address).is_none() {
            errors.push(
                at,
                format!("{address:?} is not an IP address or a CIDR range"),
            );
        } else if address.contains('/')
            && !matches!(resolution, Resolution::None | Resolution::Static)
        {
            errors.push(
                at,
                "CIDR ranges are allowed only for resolution NONE or STATIC",
            );
        }
    }
    if resolution == Resolution::Static
        && spec.endpoints.is_empty()
        && spec.workload_selector.is_none()
    {
        errors.push(
            "spec.endpoints",
            "resolution STATIC needs endpoints or a workloadSelector",
        );
    }
    if resolution == Resolution::Dns
        && spec.endpoints.is_empty()
        && spec.hosts.iter().any(|h| h.contains('*'))
    {
        errors.push(
            "spec.hosts",
            "resolution DNS without endpoints needs hosts without wildcards",
        );
    }
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        let at = format!("spec.endpoints[{i}]");
        validate_workload_entry(&at, endpoint, errors);
        if endpoint.address.starts_with("unix://") {
            errors.push(
                format!("{at}.address"),
                "unix domain socket endpoints are not supported by this meshd yet",
            );
        } else if resolution == Resolution::Static
            && !endpoint.address.is_empty()
            && endpoint.address.parse::<std::net::IpAddr>().is_err()
        {
            errors.push(
                format!("{at}.address"),
                "resolution STATIC needs IP addresses",
            );
        }
    }
    check_export_to(&spec.export_to, errors);
}

fn validate_workload_entry(
    at: &str,
    spec: &crate::networking::WorkloadEntrySpec,
    errors: &mut Errors,
) {
    if spec.address.is_empty() && spec.network.is_some() {
        errors.push(
            format!("{at}.address"),
            "a workload reached only through its network's gateway (network, no address) is not supported by this meshd yet",
        );
    } else if spec.address.is_empty() {
        errors.push(format!("{at}.address"), "address is required");
    } else if spec.address.parse::<std::net::IpAddr>().is_err()
        && !spec.address.starts_with("unix://")
        && !is_dns1123_subdomain(&spec.address)
    {
        errors.push(
            format!("{at}.address"),
            format!(
                "{:?} is not an IP address, hostname or unix:// path",
                spec.address
            ),
        );
    }
    for (name, port) in &spec.ports {
        check_port(&format!("{at}.ports.{name}"), *port, errors);
    }
    if spec.weight == Some(0) {
        errors.push(format!("{at}.weight"), "weight must be at least 1 when set");
    }
}

/// A Sidecar listener's `bind`, which this meshd does not apply (said so rather than
/// ignored), and its `captureMode`.
fn check_unapplied_listener_settings(
    at: &str,
    bind: Option<&str>,
    capture_mode: Option<&str>,
    errors: &mut Errors,
) {
    if bind.is_some() {
        errors.push(
            format!("{at}.bind"),
            "not supported by this meshd yet (listeners use the workload's address)",
        );
    }
    // Whether traffic is captured is the proxy's own setting (its INTERCEPTION_MODE).
    match capture_mode {
        None | Some("DEFAULT" | "IPTABLES" | "NONE") => {}
        Some(other) => errors.push(
            format!("{at}.captureMode"),
            format!("unknown capture mode {other:?}"),
        ),
    }
}

fn validate_sidecar(spec: &crate::networking::SidecarSpec, errors: &mut Errors) {
    for (i, ingress) in spec.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        check_listener_port(&format!("{at}.port.number"), ingress.port.number, errors);
        if let Some(endpoint) = &ingress.default_endpoint
            && !endpoint.starts_with("unix://")
            && endpoint.parse::<std::net::SocketAddr>().is_err()
        {
            errors.push(
                format!("{at}.defaultEndpoint"),
                format!("{endpoint:?} is not IP:PORT or unix://PATH"),
            );
        }
        check_unapplied_listener_settings(
            &at,
            ingress.bind.as_deref(),
            ingress.capture_mode.as_deref(),
            errors,
        );
    }
    for (i, egress) in spec.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        if egress.hosts.is_empty() {
            errors.push(
                format!("{at}.hosts"),
                "an egress listener needs at least one host",
            );
        }
        for (j, host) in egress.hosts.iter().enumerate() {
            match host.split_once('/') {
                Some((namespace, dns)) => {
                    // `~NAMESPACE/host` excludes what the other entries import.
                    let imported = namespace.strip_prefix('~').unwrap_or(namespace);
                    if !matches!(imported, "" | "*" | ".") && !is_dns1123_label(imported) {
                        errors.push(
                            format!("{at}.hosts[{j}]"),
                            format!(
                                "{namespace:?} is not a namespace, \".\", \"*\" or one of them after \"~\" (an exclusion)"
                            ),
                        );
                    }
                    check_host(&format!("{at}.hosts[{j}]"), dns, true, errors);
                }
                None => errors.push(
                    format!("{at}.hosts[{j}]"),
                    format!("{host:?} must be namespace/dnsName, e.g. \"./*\""),
                ),
            }
        }
        if egress.port.is_some() {
            errors.push(
                format!("{at}.port"),
                "per-port egress listeners are not supported by this meshd yet (egress hosts apply to every port)",
            );
        }
        check_unapplied_listener_settings(
            &at,
            egress.bind.as_deref(),
            egress.capture_mode.as_deref(),
            errors,
        );
    }
    if let Some(policy) = &spec.outbound_traffic_policy
        && let Some(mode) = &policy.mode
        && !matches!(mode.as_str(), "ALLOW_ANY" | "REGISTRY_ONLY")
    {
        errors.push(
            "spec.outboundTrafficPolicy.mode",
            format!("{mode:?} is not ALLOW_ANY or REGISTRY_ONLY"),
        );
    }
}

#[cfg(test)]
mod tests;
