//! Which fields of a spec fleetmesh reads, checked before the spec is parsed so that every
//! unread field of an object is reported at once, each as what it is: one of Istio's that
//! fleetmesh does not support yet (with why, from [`NOT_SUPPORTED`]) or a mistake (with
//! the fields that would fit there). The types' own JSON schemas (the ones the CRDs are
//! generated from) say which fields exist, so there is no second list to keep in step.

use crate::error::FieldError;
use crate::resource::Kind;
use serde_json::{Map, Value as Json};
use serde_yaml_ng::Value as Yaml;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// One of Istio's fields that fleetmesh does not read: the type holding it (as our config
/// types name it), the field as YAML spells it, and what a user should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotSupported {
    /// The config type that holds the field, as fleetmesh's types name it.
    pub holder: &'static str,
    /// The field as Istio's YAML spells it.
    pub field: &'static str,
    /// Why it is not read, and what to do instead where there is something.
    pub reason: &'static str,
}

const fn not_supported(
    holder: &'static str,
    field: &'static str,
    reason: &'static str,
) -> NotSupported {
    NotSupported {
        holder,
        field,
        reason,
    }
}

const AMBIENT: &str = "waypoints and ambient mode are not part of fleetmesh";
const GATEWAY_SECRETS: &str = "gateway certificates are files on the gateway's host (serverCertificate, privateKey, caCertificates); Secrets and their options are not served yet";

/// Istio's fields that fleetmesh does not support yet. `e2e/tests/istio_conformance.rs`
/// checks this list against Istio's own CRDs: each is a field of Istio's, and every field of
/// Istio's is either read or here.
#[rustfmt::skip]
pub const NOT_SUPPORTED: &[NotSupported] = &[
    not_supported("AuthorizationPolicySpec", "targetRef", AMBIENT),
    not_supported("AuthorizationPolicySpec", "targetRefs", AMBIENT),
    not_supported("RequestAuthenticationSpec", "targetRef", AMBIENT),
    not_supported("RequestAuthenticationSpec", "targetRefs", AMBIENT),
    not_supported("JwtRule", "jwks_uri", "spell it jwksUri"),
    not_supported("TrafficPolicy", "proxyProtocol", "the PROXY protocol to upstreams is not sent yet"),
    not_supported("TrafficPolicy", "retryBudget", "retries are bounded per route (retries.attempts) only"),
    not_supported("TrafficPolicy", "tunnel", "HTTP CONNECT tunnels to upstreams are not supported"),
    not_supported("LoadBalancerSettings", "zoneAwareLbSetting", "use localityLbSetting"),
    not_supported("OutlierDetection", "outlierDetectionHttpErrorCodes", "5xx responses are what count"),
    not_supported("ServerTlsSettings", "caCertCredentialName", GATEWAY_SECRETS),
    not_supported("ServerTlsSettings", "credentialNames", GATEWAY_SECRETS),
    not_supported("ServerTlsSettings", "insecureSkipVerify", "client certificates are always verified in MUTUAL mode"),
    not_supported("ServerTlsSettings", "tlsCertificates", GATEWAY_SECRETS),
    not_supported("Server", "defaultEndpoint", "Gateway servers forward to the routes bound to them"),
    not_supported("SidecarSpec", "inboundConnectionPool", "inbound connections are not pooled by the sidecar's settings"),
    not_supported("IstioIngressListener", "connectionPool", "inbound connections are not pooled by the sidecar's settings"),
    not_supported("IstioIngressListener", "tls", "inbound TLS from a Sidecar resource is not terminated"),
    not_supported("OutboundTrafficPolicy", "egressProxy", "traffic to unknown hosts is passed through or refused, never sent to an egress proxy"),
    not_supported("HttpRoute", "delegate", "delegate VirtualServices are not supported yet"),
    not_supported("HttpRoute", "mirror_percent", "spell it mirrorPercent"),
    not_supported("FaultAbort", "http2Error", "aborts answer with an HTTP status"),
    not_supported("FaultDelay", "exponentialDelay", "delays are fixed (fixedDelay)"),
    not_supported("L4MatchAttributes", "sourceSubnet", "TCP routes match ports and labels only"),
];

/// One field fleetmesh does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    /// The field and the reason, as a validation error.
    pub error: FieldError,
    /// Its entry in [`NOT_SUPPORTED`]; `None` for a field Istio does not have either.
    pub declared: Option<&'static NotSupported>,
}

/// Every field of `spec` (the spec of a `kind`) that fleetmesh does not read, each with
/// its path from the resource root (`spec.http[0].delegate`) and why. Fields spelt as
/// their `.proto` names (`prefix_rewrite`), which Istio also reads, are renamed in place
/// to their YAML names (`prefixRewrite`).
pub fn unread_fields(kind: Kind, spec: &mut Yaml) -> Vec<FieldError> {
    unread(kind, spec).into_iter().map(|u| u.error).collect()
}

/// [`unread_fields`], each with its entry in [`NOT_SUPPORTED`] if it has one.
pub fn unread(kind: Kind, spec: &mut Yaml) -> Vec<Unread> {
    let Some(schema) = spec_schemas().get(&kind) else {
        return Vec::new();
    };
    let mut walker = Walker {
        defs: schema.get("$defs").and_then(Json::as_object),
        found: Vec::new(),
    };
    let holder = schema.get("title").and_then(Json::as_str).unwrap_or("");
    walker.walk(schema, holder, spec, "spec");
    walker.found
}

/// The JSON schema of each Istio kind's spec type, generated once.
fn spec_schemas() -> &'static BTreeMap<Kind, Json> {
    use crate::networking::*;
    use crate::security::*;
    fn of<T: schemars::JsonSchema>() -> Json {
        schemars::schema_for!(T).to_value()
    }
    static SCHEMAS: OnceLock<BTreeMap<Kind, Json>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        BTreeMap::from([
            (Kind::VirtualService, of::<VirtualServiceSpec>()),
            (Kind::DestinationRule, of::<DestinationRuleSpec>()),
            (Kind::Gateway, of::<GatewaySpec>()),
            (Kind::ServiceEntry, of::<ServiceEntrySpec>()),
            (Kind::WorkloadEntry, of::<WorkloadEntrySpec>()),
            (Kind::Sidecar, of::<SidecarSpec>()),
            (Kind::PeerAuthentication, of::<PeerAuthenticationSpec>()),
            (Kind::AuthorizationPolicy, of::<AuthorizationPolicySpec>()),
            (
                Kind::RequestAuthentication,
                of::<RequestAuthenticationSpec>(),
            ),
        ])
    })
}

/// A schema and the config type that holds the fields it describes.
type Shape = (&'static Json, &'static str);

struct Walker {
    defs: Option<&'static Map<String, Json>>,
    found: Vec<Unread>,
}

impl Walker {
    fn walk(&mut self, schema: &'static Json, holder: &'static str, value: &mut Yaml, path: &str) {
        let mut shapes = Vec::new();
        self.alternatives(schema, holder, &mut shapes);
        match value {
            Yaml::Mapping(mapping) => {
                let objects: Vec<Shape> = shapes
                    .into_iter()
                    .filter(|(s, _)| {
                        s.get("properties").is_some() || s.get("additionalProperties").is_some()
                    })
                    .collect();
                if objects.is_empty() {
                    return;
                }
                rename_proto_names(mapping, &objects);
                for (key, child) in mapping.iter_mut() {
                    let Some(key) = key.as_str() else { continue };
                    let child_path = format!("{path}.{key}");
                    let known = objects.iter().find_map(|(shape, owner)| {
                        let property = shape.get("properties").and_then(|p| p.get(key));
                        let values = shape.get("additionalProperties").filter(|a| a.is_object());
                        property.or(values).map(|s| (s, *owner))
                    });
                    match known {
                        Some((schema, owner)) => self.walk(schema, owner, child, &child_path),
                        None if objects.iter().any(|(s, _)| {
                            s.get("additionalProperties") == Some(&Json::Bool(true))
                        }) => {}
                        None => self.found.push(unread_field(key, &objects, child_path)),
                    }
                }
            }
            Yaml::Sequence(items) => {
                let Some((item, owner)) = shapes
                    .iter()
                    .find_map(|(s, h)| s.get("items").map(|i| (i, *h)))
                else {
                    return;
                };
                for (index, child) in items.iter_mut().enumerate() {
                    self.walk(item, owner, child, &format!("{path}[{index}]"));
                }
            }
            _ => {}
        }
    }

    /// Every shape a schema allows (`anyOf`/`oneOf`/`allOf` flattened), `$ref`s resolved
    /// to their definitions, whose names become the holders of their fields.
    fn alternatives(&self, schema: &'static Json, holder: &'static str, out: &mut Vec<Shape>) {
        let reference = schema
            .get("$ref")
            .and_then(Json::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"));
        if let Some(reference) = reference {
            if let Some((name, definition)) = self.defs.and_then(|d| d.get_key_value(reference)) {
                self.alternatives(definition, name, out);
            }
            return;
        }
        out.push((schema, holder));
        for key in ["anyOf", "oneOf", "allOf"] {
            for alternative in schema
                .get(key)
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                self.alternatives(alternative, holder, out);
            }
        }
    }
}

/// Renames keys spelt as `.proto` field names (`prefix_rewrite`) to the property the
/// shapes know (`prefixRewrite`); keys of maps (labels, headers) are left as they are.
fn rename_proto_names(mapping: &mut serde_yaml_ng::Mapping, shapes: &[Shape]) {
    let property = |name: &str| {
        shapes
            .iter()
            .any(|(shape, _)| shape.get("properties").and_then(|p| p.get(name)).is_some())
    };
    let renames: Vec<(String, String)> = mapping
        .keys()
        .filter_map(Yaml::as_str)
        .filter(|key| key.contains('_') && !property(key))
        .filter_map(|key| {
            let camel = lower_camel_case(key);
            (property(&camel) && !mapping.contains_key(camel.as_str()))
                .then(|| (key.to_string(), camel))
        })
        .collect();
    for (from, to) in renames {
        if let Some(value) = mapping.remove(from.as_str()) {
            mapping.insert(to.into(), value);
        }
    }
}

/// `prefix_rewrite` → `prefixRewrite`, as protobuf's JSON mapping names fields.
fn lower_camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The error for a field no shape has: Istio's and not supported, or a mistake.
fn unread_field(key: &str, shapes: &[Shape], path: String) -> Unread {
    let declared = NOT_SUPPORTED
        .iter()
        .find(|n| n.field == key && shapes.iter().any(|(_, holder)| *holder == n.holder));
    if let Some(declared) = declared {
        return Unread {
            error: FieldError::new(
                path,
                format!("not supported by fleetmesh yet: {}", declared.reason),
            ),
            declared: Some(declared),
        };
    }
    let mut expected: Vec<&str> = shapes
        .iter()
        .filter_map(|(shape, _)| shape.get("properties").and_then(Json::as_object))
        .flat_map(|properties| properties.keys().map(String::as_str))
        .collect();
    expected.sort_unstable();
    expected.dedup();
    let expected: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
    Unread {
        error: FieldError::new(
            path,
            format!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            ),
        ),
        declared: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unread_of(kind: Kind, spec: &str) -> Vec<String> {
        let mut spec: Yaml = serde_yaml_ng::from_str(spec).unwrap();
        unread_fields(kind, &mut spec)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn proto_field_names_are_read_as_their_yaml_names() {
        let mut spec: Yaml = serde_yaml_ng::from_str(
            "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  cors_policy: {allow_methods: [GET]}\n  headers: {request: {set: {x_y: z}}}\n",
        )
        .unwrap();
        assert!(unread_fields(Kind::VirtualService, &mut spec).is_empty());
        let http = &spec["http"][0];
        assert_eq!(http["corsPolicy"]["allowMethods"][0].as_str(), Some("GET"));
        assert_eq!(
            http["headers"]["request"]["set"]["x_y"].as_str(),
            Some("z"),
            "map keys stay"
        );
    }

    #[test]
    fn every_unread_field_is_reported_at_once() {
        let found = unread_of(
            Kind::VirtualService,
            "hosts: [a]\nhttp:\n- delegate: {name: b}\n  route: [{destination: {host: a, subsett: v1}}]\n  fault: {delay: {exponentialDelay: 1s}}\n",
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("spec.http[0].delegate: not supported by fleetmesh yet: delegate"),
            "{found:?}"
        );
        assert!(found[1].starts_with("spec.http[0].route[0].destination.subsett: unknown field `subsett`, expected one of `host`, `port`, `subset`"), "{found:?}");
        assert!(
            found[2].starts_with("spec.http[0].fault.delay.exponentialDelay: not supported"),
            "{found:?}"
        );
    }

    #[test]
    fn maps_and_optional_fields_are_followed() {
        assert_eq!(
            unread_of(
                Kind::DestinationRule,
                "host: a\nsubsets: [{name: v1, labels: {version: v1}, trafficPolicy: {tunnel: {}}}]\n"
            ),
            vec![
                "spec.subsets[0].trafficPolicy.tunnel: not supported by fleetmesh yet: HTTP CONNECT tunnels to upstreams are not supported"
            ]
        );
        assert!(
            unread_of(
                Kind::Gateway,
                "selector: {istio: ingressgateway, any-label: x}\nservers: []\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn kubernetes_kinds_are_left_to_their_parsers() {
        assert!(unread_of(Kind::Service, "whatever: 1\n").is_empty());
    }
}
