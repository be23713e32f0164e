//! RequestAuthentication → Envoy's jwt_authn HTTP filter on a workload's inbound side.
//! A request with a token that fails validation gets 401; one without a token passes
//! (AuthorizationPolicy decides). Keys are inline: given in the policy, or fetched by
//! meshd from `jwksUri` (proxies never fetch them). The validated payload is kept in the
//! request's metadata, where RBAC reads `iss`, `sub` and claims.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementOrList, RequirementRule, jwt_provider, jwt_requirement, requirement_rule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, Empty};
use fleetmesh_api::resource::Config;
use fleetmesh_api::security::{JwtRule, RequestAuthenticationSpec};
use fleetmesh_model::Snapshot;
use std::collections::BTreeMap;

pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
/// Where the validated payload goes in the filter's metadata.
pub const PAYLOAD_KEY: &str = "payload";
const JWT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

/// Keys that validate nothing, for a `jwksUri` meshd has not fetched (yet): every token
/// of that issuer is refused rather than accepted unchecked. A point on P-256 whose
/// private key was thrown away.
const UNFETCHED_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","kid":"fleetmesh-unfetched","x":"OUVBrQ63S7_PVeEYVGdwjawYomPMLxMXGNUIlHnQt-s","y":"kUb6hAcim_3J_-VbAHaRGkjvPDvgTpH08K0-zLrdL4Q"}]}"#;

/// The jwt_authn filter for the RequestAuthentications that apply, if any.
pub fn http_filter(
    snapshot: &Snapshot,
    policies: &[&Config<RequestAuthenticationSpec>],
) -> Option<HttpFilter> {
    let mut providers = BTreeMap::new();
    for rule in policies.iter().flat_map(|p| &p.spec.jwt_rules) {
        // The first rule for an issuer wins, as one provider per issuer.
        providers
            .entry(rule.issuer.clone())
            .or_insert_with(|| provider(snapshot, rule));
    }
    if providers.is_empty() {
        return None;
    }
    let mut any_of: Vec<JwtRequirement> = providers
        .keys()
        .map(|name| JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.clone())),
        })
        .collect();
    any_of.push(JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
    });
    let rules = JwtAuthentication {
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..RouteMatch::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(
                JwtRequirement {
                    requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                        JwtRequirementOrList {
                            requirements: any_of,
                        },
                    )),
                },
            )),
        }],
        ..JwtAuthentication::default()
    };
    let config = Any {
        type_url: JWT_TYPE.into(),
        value: crate::sorted_map::encode(&rules, 1, &providers), // JwtAuthentication.providers
    };
    Some(HttpFilter {
        name: JWT_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..HttpFilter::default()
    })
}

/// The rule's space-delimited claims and those that always are (OAuth's `scope`, and
/// `permission`), sorted, as istiod lists them.
fn space_delimited_claims(rule: &JwtRule) -> Vec<String> {
    let mut claims: std::collections::BTreeSet<String> =
        ["permission", "scope"].map(String::from).into();
    claims.extend(rule.space_delimited_claims.iter().cloned());
    claims.into_iter().collect()
}

fn provider(snapshot: &Snapshot, rule: &JwtRule) -> JwtProvider {
    let jwks = match (&rule.jwks, &rule.jwks_uri) {
        (Some(inline), _) => inline.clone(),
        (None, Some(uri)) => snapshot
            .jwks
            .get(uri)
            .cloned()
            .unwrap_or_else(|| UNFETCHED_JWKS.to_string()),
        (None, None) => UNFETCHED_JWKS.to_string(),
    };
    // With no location given, Envoy's defaults are Istio's: the Authorization header
    // (Bearer), then the access_token query parameter.
    let from_headers = rule
        .from_headers
        .iter()
        .map(|h| JwtHeader {
            name: h.name.clone(),
            value_prefix: h.prefix.clone(),
        })
        .collect();
    let claim_to_headers = rule
        .output_claim_to_headers
        .iter()
        .map(|c| JwtClaimToHeader {
            header_name: c.header.clone(),
            claim_name: c.claim.clone(),
            ..JwtClaimToHeader::default()
        })
        .collect();
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token,
        from_headers,
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
        claim_to_headers,
        payload_in_metadata: PAYLOAD_KEY.into(),
        normalize_payload_in_metadata: Some(jwt_provider::NormalizePayload {
            space_delimited_claims: space_delimited_claims(rule),
        }),
        jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(jwks)),
            ..DataSource::default()
        })),
        ..JwtProvider::default()
    }
}
