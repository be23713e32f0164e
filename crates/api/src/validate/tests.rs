use crate::load::load_documents;

/// The error lines for one YAML document (empty when valid).
fn problems(yaml: &str) -> Vec<String> {
    match load_documents(None, yaml) {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(|e| e.error.to_string()).collect(),
    }
}

fn assert_problem(found: &[String], expected: &str) {
    assert!(
        found.iter().any(|p| p == expected),
        "{expected}\nin {found:#?}"
    );
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r}}\nspec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

#[test]
fn weights_are_shares_of_their_sum() {
    // Istio normalises: 70 and 20 send 7 of 9 requests to v1.
    let shares = vs(
        "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 70}\n    - {destination: {host: reviews, subset: v2}, weight: 20}\n",
    );
    assert_eq!(problems(&shares), Vec::<String>::new());
    let zeros = vs(
        "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 0}\n    - {destination: {host: reviews, subset: v2}}\n",
    );
    assert_eq!(
        problems(&zeros),
        ["spec.http[0].route: the weights of several destinations cannot all be 0"]
    );
    let negative = vs(
        "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: -1}\n    - {destination: {host: reviews, subset: v2}, weight: 4294967296}\n",
    );
    assert_eq!(
        problems(&negative),
        [
            "spec.http[0].route[0].weight: weight cannot be negative",
            "spec.http[0].route: the weights sum to 4294967296, above 4294967295"
        ]
    );
}

#[test]
fn tls_routes_match_sni_names_of_the_hosts_at_gateways_and_sidecars() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure}
spec:
  hosts: [secure.example.com, "*.internal.example.com"]
  gateways: [mesh, edge]
  tls:
  - match: [{sniHosts: [secure.example.com, a.internal.example.com], port: 443}]
    route: [{destination: {host: secure, port: {number: 443}}}]
  - match: [{sniHosts: [other.example.com]}, {port: 443}]
    route: [{destination: {host: secure}}]
"#;
    assert_eq!(
        problems(yaml),
        vec![
            "spec.tls[1].match[0].sniHosts[0]: \"other.example.com\" is not among the VirtualService's hosts",
            "spec.tls[1].match[1].sniHosts: a tls match needs sniHosts",
        ]
    );
}

#[test]
fn a_route_needs_a_destination_or_redirect() {
    let yaml = vs("  - match: [{uri: {prefix: /a}}]\n");
    assert_eq!(
        problems(&yaml),
        vec!["spec.http[0].route: an http route needs a route, a redirect or a directResponse"]
    );
}

#[test]
fn direct_responses_are_checked() {
    let yaml = vs(concat!(
        "  - directResponse: {status: 99}\n",
        "  - directResponse: {status: 200, body: {bytes: \"not base64!\"}}\n",
        "  - directResponse: {status: 503}\n    redirect: {uri: /x}\n",
        "  - directResponse: {status: 200, body: {bytes: aGVsbG8=}}\n",
    ));
    let found = problems(&yaml);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(
        &found,
        "spec.http[0].directResponse.status: status must be an HTTP status from 200 to 599",
    );
    assert!(
        found[1].starts_with("spec.http[1].directResponse.body.bytes: not base64"),
        "{found:#?}"
    );
    assert_problem(
        &found,
        "spec.http[2].directResponse: redirect, directResponse are mutually exclusive",
    );
}

#[test]
fn bad_regex_and_header_and_uri_are_named() {
    let yaml = vs(
        "  - match:\n    - uri: {regex: \"([a-z\"}\n      headers: {\"X User\": {exact: a}}\n    - uri: {prefix: nope}\n    route: [{destination: {host: reviews}}]\n",
    );
    let found = problems(&yaml);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.http[0].match[0].uri.regex: invalid regex")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.http[0].match[0].headers.X User:")),
        "{found:?}"
    );
    assert!(
        found.contains(&"spec.http[0].match[1].uri: \"nope\" must start with \"/\"".to_string()),
        "{found:?}"
    );
}

#[test]
fn retries_and_faults() {
    let yaml = vs(
        "  - route: [{destination: {host: reviews}}]\n    retries: {attempts: -1, retryOn: \"5xx,bogus,503\"}\n    fault: {abort: {httpStatus: 700}}\n",
    );
    let found = problems(&yaml);
    assert!(
        found.contains(&"spec.http[0].retries.attempts: attempts cannot be negative".to_string()),
        "{found:?}"
    );
    assert!(
        found.contains(&"spec.http[0].retries.retryOn: unknown retry policy \"bogus\"".to_string()),
        "{found:?}"
    );
    assert!(
        found.contains(
            &"spec.http[0].fault.abort.httpStatus: httpStatus must be in 200..=599".to_string()
        ),
        "{found:?}"
    );
}

#[test]
fn valid_virtual_service_with_every_http_feature() {
    let yaml = vs(r#"  - name: everything
    match:
    - uri: {prefix: /api}
      method: {exact: GET}
      headers: {x-user: {regex: "a.*"}}
      queryParams: {debug: {exact: "1"}}
      port: 9080
      sourceLabels: {app: frontend}
    rewrite: {uri: /v2/api, authority: reviews.internal}
    route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      weight: 50
      headers: {request: {set: {x-subset: v1}}}
    - destination: {host: reviews.default.svc.cluster.local, subset: v2}
      weight: 50
    timeout: 3s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure,503"}
    fault: {delay: {fixedDelay: 1s, percentage: {value: 10}}, abort: {httpStatus: 503, percentage: {value: 1}}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 25}
    headers: {request: {add: {x-a: b}, remove: [x-b]}, response: {set: {x-c: d}}}
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}], allowMethods: [GET, POST], maxAge: 24h}
  - redirect: {uri: /moved, redirectCode: 301}
"#);
    assert_eq!(problems(&yaml), Vec::<String>::new());
}

#[test]
fn destination_rule_rules() {
    let yaml = r#"apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN, consistentHash: {httpHeaderName: x-user}}
    tls: {mode: MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v1, labels: {version: v2}}
  - {name: V3}
"#;
    let found = problems(yaml);
    assert!(
        found.contains(
            &"spec.trafficPolicy.loadBalancer: simple and consistentHash are mutually exclusive"
                .to_string()
        )
    );
    for expected in [
        "spec.trafficPolicy.tls.clientCertificate: required for MUTUAL",
        "spec.trafficPolicy.tls.privateKey: required for MUTUAL",
    ] {
        assert_problem(&found, expected);
    }
    assert!(found.contains(&"spec.subsets[1].name: duplicate subset \"v1\"".to_string()));
    assert!(found.contains(&"spec.subsets[2].name: \"V3\" is not a valid subset name".to_string()));
}

#[test]
fn originated_tls_names_files_for_its_mode() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db.example.com
  trafficPolicy:
    tls: {mode: MUTUAL, clientCertificate: /etc/db/tls.crt, privateKey: /etc/db/tls.key, caCertificates: /etc/db/ca.crt}
  subsets:
  - name: relative
    trafficPolicy: {tls: {mode: SIMPLE, caCertificates: certs/ca.crt, clientCertificate: /etc/c.crt}}
  - name: plain
    trafficPolicy: {tls: {mode: DISABLE, caCertificates: /etc/ca.crt}}
  - name: secret
    trafficPolicy: {tls: {mode: MUTUAL, credentialName: db-client}}
"#;
    let found = problems(yaml);
    assert_eq!(
        found,
        [
            "spec.subsets[0].trafficPolicy.tls.mode: a client certificate is only presented with MUTUAL",
            "spec.subsets[1].trafficPolicy.tls.caCertificates: only used with mode SIMPLE or MUTUAL",
            "spec.subsets[2].trafficPolicy.tls.credentialName: not supported by this meshd yet: give clientCertificate and privateKey files",
        ]
    );
}

#[test]
fn unknown_enum_value_names_the_field() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: reviews\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n";
    let found = problems(yaml);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("spec.trafficPolicy.loadBalancer.simple: unknown variant `FASTEST`"),
        "{found:?}"
    );
}

#[test]
fn sidecar_and_service_entry_rules() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec:\n  egress: [{hosts: [reviews]}]\n  ingress: [{port: {number: 9080}, defaultEndpoint: localhost}]\n";
    let found = problems(yaml);
    assert!(
        found.contains(
            &"spec.egress[0].hosts[0]: \"reviews\" must be namespace/dnsName, e.g. \"./*\""
                .to_string()
        ),
        "{found:?}"
    );
    assert!(
        found.contains(
            &"spec.ingress[0].defaultEndpoint: \"localhost\" is not IP:PORT or unix://PATH"
                .to_string()
        ),
        "{found:?}"
    );

    let yaml = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: STATIC\n  endpoints: [{address: api.example.com}]\n";
    assert_eq!(
        problems(yaml),
        vec!["spec.endpoints[0].address: resolution STATIC needs IP addresses"]
    );
}

#[test]
fn service_entry_addresses_are_ip_addresses_or_ranges() {
    let entry = |resolution: &str, addresses: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: e}}\nspec:\n  hosts: [db.internal]\n  addresses: {addresses}\n  ports: [{{number: 5432, name: tcp, protocol: TCP}}]\n  resolution: {resolution}\n"
        )
    };
    assert_eq!(
        problems(&entry(
            "NONE",
            "[10.1.2.3, 10.8.0.0/16, 10.9.0.1/32, 2001:db8::/32]"
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        problems(&entry("NONE", "[db.internal, 10.0.0.0/33]")),
        vec![
            "spec.addresses[0]: \"db.internal\" is not an IP address or a CIDR range",
            "spec.addresses[1]: \"10.0.0.0/33\" is not an IP address or a CIDR range",
        ]
    );
    assert_eq!(
        problems(&entry("DNS", "[10.8.0.0/16]")),
        vec!["spec.addresses[0]: CIDR ranges are allowed only for resolution NONE or STATIC"]
    );
}

#[test]
fn sidecar_listener_settings_not_applied_are_refused() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s}
spec:
  ingress:
  - {port: {number: 9080}, bind: 127.0.0.2, captureMode: NONE}
  - {port: {number: 9081}, captureMode: IPTABLES}
  egress:
  - {port: {number: 5432, protocol: TCP, name: db}, hosts: ["./*"], captureMode: SOMETIMES}
  - {hosts: ["./*"], captureMode: DEFAULT}
"#;
    assert_eq!(
        problems(yaml),
        [
            "spec.ingress[0].bind: not supported by this meshd yet (listeners use the workload's address)",
            "spec.egress[0].port: per-port egress listeners are not supported by this meshd yet (egress hosts apply to every port)",
            "spec.egress[0].captureMode: unknown capture mode \"SOMETIMES\"",
        ]
    );
    let subnets = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db.example.com]
  gateways: [edge]
  tcp: [{match: [{port: 5432, destinationSubnets: [10.0.0.0/8]}], route: [{destination: {host: db.example.com}}]}]
"#;
    assert_eq!(
        problems(subnets),
        ["spec.tcp[0].match[0].destinationSubnets: not supported by this meshd yet"]
    );
}

#[test]
fn sidecar_ports_are_reserved() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec:\n  ingress: [{port: {number: 15001}, defaultEndpoint: \"127.0.0.1:8080\"}]\n";
    let found = problems(yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "spec.ingress[0].port.number: port 15001 is reserved for the sidecar itself"
        ),
        "{found:?}"
    );
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetPort: 15021}]}\n";
    assert!(problems(yaml)[0].starts_with("spec.ports[0].targetPort: port 15021 is reserved"));
    let yaml = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {servers: [{port: {number: 15090, protocol: HTTP}, hosts: [\"*\"]}]}\n";
    assert!(problems(yaml)[0].starts_with("spec.servers[0].port.number: port 15090 is reserved"));
}

#[test]
fn endpoints_rules() {
    let yaml = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\nsubsets:\n- addresses: [{ip: 127.0.0.1}]\n  notReadyAddresses: [{ip: not-an-ip}]\n  ports: [{name: a, port: 80}, {name: a, port: 70000}]\n";
    assert_eq!(
        problems(yaml),
        vec![
            "subsets[0].notReadyAddresses[0].ip: \"not-an-ip\" is not an IP address",
            "subsets[0].ports[1].port: port must be in 1..=65535",
            "subsets[0].ports[1].name: duplicate port name",
        ]
    );
}

#[test]
fn peer_authentication_rules() {
    let yaml = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: DISABLE}
    0: {}
"#;
    let found = problems(yaml);
    assert!(
        found.contains(
            &"spec.portLevelMtls: port-level mTLS needs a selector (ports belong to workloads)"
                .to_string()
        )
    );
    assert!(found.iter().any(|p| p.starts_with("spec.portLevelMtls.0:")));
    assert!(
        found.contains(
            &"spec.portLevelMtls.0.mode: a port-level mode must be STRICT, PERMISSIVE or DISABLE"
                .to_string()
        )
    );
    assert!(
        problems(&yaml.replace("STRICT", "STRICTEST"))
            .iter()
            .any(|p| p.contains("STRICTEST"))
    );
}

#[test]
fn authorization_policy_rules() {
    let yaml = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: checks}
spec:
  action: CUSTOM
  rules:
  - from: [{source: {ipBlocks: [10.0.0.0/33, not-an-ip], requestPrincipals: [a/b]}}]
    to: [{operation: {ports: ["http", "70000"]}}]
    when: [{key: "request.auth.claimz[group]", values: [admins]}, {key: source.colour, values: [red]}, {key: source.ip}]
"#;
    let found = problems(yaml);
    for expected in [
        "spec.action: CUSTOM (external authorization) is not supported yet; use ALLOW, DENY or AUDIT",
        "spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\" is not an IP address or CIDR block",
        "spec.rules[0].from[0].source.ipBlocks[1]: \"not-an-ip\" is not an IP address or CIDR block",
        "spec.rules[0].to[0].operation.ports[0]: \"http\" is not a port number",
        "spec.rules[0].when[2].values: a condition needs values or notValues",
    ] {
        assert_problem(&found, expected);
    }
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.rules[0].to[0].operation.ports[1]:"))
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.rules[0].when[0].key:")
                && p.contains("not a supported key"))
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.rules[0].when[1].key:")
                && p.contains("not a supported key"))
    );

    let valid = r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: ok, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/sleep], ipBlocks: [127.0.0.0/8]}}]
    to: [{operation: {methods: [POST], paths: [/admin*], ports: ["9080"]}}]
    when: [{key: "request.headers[x-user]", values: [bob]}]
"#;
    assert_eq!(problems(valid), Vec::<String>::new());
}

#[test]
fn authorization_policy_service_accounts_and_trust_domains() {
    let yaml = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: checks, namespace: shop}
spec:
  rules:
  - from: [{source: {serviceAccounts: ["*", a/b/c, /sa, frontend], principals: [x]}}]
  - from: [{source: {trustDomains: ["", a/b, "*a*", "a*b"], notServiceAccounts: [ns/]}}]
"#;
    let found = problems(yaml);
    for expected in [
        "spec.rules[0].from[0].source.serviceAccounts: cannot be set with principals or namespaces",
        "spec.rules[0].from[0].source.serviceAccounts[0]: \"*\": wildcards are not allowed",
        "spec.rules[0].from[0].source.serviceAccounts[1]: \"a/b/c\": expected SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT",
        "spec.rules[0].from[0].source.serviceAccounts[2]: \"/sa\": expected SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT",
        "spec.rules[1].from[0].source.trustDomains[0]: \"\": empty",
        "spec.rules[1].from[0].source.trustDomains[1]: \"a/b\": a trust domain has no '/'",
        "spec.rules[1].from[0].source.trustDomains[2]: \"*a*\": at most one '*'",
        "spec.rules[1].from[0].source.trustDomains[3]: \"a*b\": a '*' only at the start or the end",
        "spec.rules[1].from[0].source.notServiceAccounts[0]: \"ns/\": expected SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT",
    ] {
        assert_problem(&found, expected);
    }
    assert_eq!(found.len(), 9, "{found:#?}");
    let many: Vec<String> = (0..17).map(|i| format!("sa{i}")).collect();
    assert_problem(
        &problems(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: many}}\nspec:\n  rules: [{{from: [{{source: {{serviceAccounts: [{}]}}}}]}}]\n",
            many.join(", ")
        )),
        "spec.rules[0].from[0].source.serviceAccounts: at most 16 service accounts",
    );

    let valid = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ok, namespace: shop}
spec:
  rules:
  - from: [{source: {serviceAccounts: [frontend, other/backend], trustDomains: ["*", cluster.local, "*.example.com", "prod-*"]}}]
  - from: [{source: {notServiceAccounts: [frontend], notTrustDomains: [old.example]}}]
"#;
    assert_eq!(problems(valid), Vec::<String>::new());
}

/// Kubernetes stores map keys as strings; a port written `"9080"` is still port 9080.
#[test]
fn port_level_mtls_keys_may_be_quoted() {
    let yaml = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {'9080': {mode: DISABLE}}
"#;
    let loaded = load_documents(None, yaml).unwrap();
    let crate::Resource::PeerAuthentication(pa) = &loaded[0].resource else {
        panic!("a PeerAuthentication");
    };
    assert!(pa.spec.port_level_mtls.contains_key(&9080));
}

#[test]
fn request_authentication_rules() {
    let yaml = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules:
  - {issuer: a, jwksUri: "ftp://keys"}
  - {issuer: a, jwks: "{}", jwksUri: "https://keys"}
  - {issuer: ""}
"#;
    let found = problems(yaml);
    for expected in [
        "spec.jwtRules[0].jwksUri: \"ftp://keys\" is not an http(s) URL",
        "spec.jwtRules[1].issuer: issuer \"a\" has another rule already",
        "spec.jwtRules[1].jwks: give the keys inline (jwks) or by address (jwksUri), not both",
        "spec.jwtRules[2].issuer: an issuer is required",
    ] {
        assert_problem(&found, expected);
    }
}

#[test]
fn gateway_tls_rules() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com]}
  - port: {number: 8443, name: https-2, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: MUTUAL, serverCertificate: certs/tls.crt}
  - port: {number: 9443, name: https-3, protocol: HTTPS}
    hosts: [c.example.com]
    tls: {mode: PASSTHROUGH, credentialName: c-cert}
  - port: {number: 10443, name: https-4, protocol: HTTPS}
    hosts: [d.example.com]
    tls: {mode: SIMPLE, credentialName: Bad_Name}
  - port: {number: 11443, name: https-5, protocol: HTTPS}
    hosts: [e.example.com]
    tls: {mode: MUTUAL, credentialName: e-cert, serverCertificate: /etc/e.crt}
  - port: {number: 12443, name: https-6, protocol: HTTPS}
    hosts: [f.example.com]
    tls: {mode: MUTUAL, credentialName: "kubernetes://f-cert"}
  - port: {number: 13443, name: tls-7, protocol: TLS}
    hosts: [g.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 14443, name: tls-8, protocol: TLS}
    hosts: [h.example.com]
    tls: {mode: SIMPLE, serverCertificate: /etc/h.crt, privateKey: /etc/h.key}
  - port: {number: 15443, name: tls-9, protocol: TLS}
    hosts: [i.example.com]
  - port: {number: 16443, name: https-10, protocol: HTTPS}
    hosts: [j.example.com]
    tls: {mode: AUTO_PASSTHROUGH}
  - port: {number: 17000, name: tcp-11, protocol: TCP}
    hosts: ["*"]
    bind: 0.0.0.0
  - port: {number: 443, name: tcp-12, protocol: TCP}
    hosts: ["*"]
"#;
    let found = problems(yaml);
    for expected in [
        "spec.servers[0].tls: protocol HTTPS needs tls settings",
        "spec.servers[1].tls.privateKey: required for an HTTPS server",
        "spec.servers[1].tls.caCertificates: MUTUAL needs the CA that client certificates chain to",
        "spec.servers[2].tls.mode: PASSTHROUGH does not terminate TLS: give no credential or certificate files",
        "spec.servers[3].tls.credentialName: \"Bad_Name\" must name a Secret of the gateway's namespace (a DNS-1123 name)",
        "spec.servers[4].tls.credentialName: give either credentialName or certificate files, not both",
        "spec.servers[7].tls.mode: SIMPLE on a TLS server (terminated TCP) is not supported by this meshd yet: use protocol HTTPS, or mode PASSTHROUGH",
        "spec.servers[8].tls: protocol TLS needs tls settings",
        "spec.servers[9].tls.mode: AUTO_PASSTHROUGH is not supported by this meshd yet (supported: SIMPLE, MUTUAL, PASSTHROUGH)",
        "spec.servers[10].bind: not supported by this meshd yet (a gateway listens on its own address)",
        "spec.servers[11].port: port 443 also serves HTTP here: a TCP server needs a port of its own",
    ] {
        assert_problem(&found, expected);
    }
    for fine in ["spec.servers[5]", "spec.servers[6]"] {
        assert!(!found.iter().any(|p| p.starts_with(fine)), "{found:?}");
    }
}

#[test]
fn connection_pool_rules() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db.example.com
  trafficPolicy:
    connectionPool:
      tcp: {idleTimeout: 0s, maxConnectionDuration: 0s, tcpKeepalive: {time: 0.5ms}}
      http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true, http2KeepAlive: {interval: 10s}}
  subsets:
  - name: fine
    labels: {version: v1}
    trafficPolicy:
      connectionPool:
        tcp: {tcpKeepalive: {time: 60s, interval: 10s, probes: 3}, maxConnectionDuration: 1h}
        http: {h2UpgradePolicy: DO_NOT_UPGRADE, maxConcurrentStreams: 100, http2KeepAlive: {interval: 10s, timeout: 2s}}
"#;
    assert_eq!(
        problems(yaml),
        [
            "spec.trafficPolicy.connectionPool.http.useClientProtocol: cannot be true when h2UpgradePolicy is UPGRADE",
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout: required when http2KeepAlive is set",
            "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration: must be at least 1ms",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time: must be at least 1ms",
        ]
    );
}

#[test]
fn warmup_is_checked() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db.example.com
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST, warmup: {minimumPercent: 101, aggression: 0}, warmupDurationSecs: 0s}
  subsets:
  - name: short
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {warmup: {duration: 0.5ms}}
  - name: fine
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s, minimumPercent: 20, aggression: 1.5}}
"#;
    assert_eq!(
        problems(yaml),
        [
            "spec.trafficPolicy.loadBalancer.warmup.duration: required",
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent: percentage must be in 0..=100",
            "spec.trafficPolicy.loadBalancer.warmup.aggression: must be above 0",
            "spec.trafficPolicy.loadBalancer.warmupDurationSecs: must be at least 1ms",
            "spec.subsets[0].trafficPolicy.loadBalancer.warmup.duration: must be at least 1ms",
        ]
    );
}

#[test]
fn jwt_outputs_and_locations_are_checked() {
    let yaml = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules:
  - issuer: https://issuer.example.com
    jwks: '{"keys": []}'
    fromParams: [token, ""]
    fromCookies: [session]
    outputPayloadToHeader: X-Jwt-Payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}, {header: "bad header", claim: ""}]
"#;
    assert_eq!(
        problems(yaml),
        [
            "spec.jwtRules[0].outputClaimToHeaders[1].header: \"bad header\" is not a valid header name (lower-case letters, digits and -_.)",
            "spec.jwtRules[0].outputClaimToHeaders[1].claim: a claim name is required",
            "spec.jwtRules[0].fromParams[1]: a name is required",
        ]
    );
}

#[test]
fn gateway_tls_parameters_are_ones_envoy_takes() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls:
      mode: SIMPLE
      serverCertificate: /etc/a.crt
      privateKey: /etc/a.key
      minProtocolVersion: TLSV1_3
      maxProtocolVersion: TLSV1_2
      cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, "[AES128-SHA|AES256-SHA]", RC4-MD5, "-AES128-SHA"]
"#;
    let found = problems(yaml);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(
        found[0],
        "spec.servers[0].tls.maxProtocolVersion: is below minProtocolVersion"
    );
    assert!(
        found[1].starts_with(
            "spec.servers[0].tls.cipherSuites[2]: \"RC4-MD5\" is not a cipher suite Envoy supports"
        ),
        "{found:?}"
    );
    assert!(
        found[2].starts_with("spec.servers[0].tls.cipherSuites[3]: \"-AES128-SHA\""),
        "{found:?}"
    );
}

#[test]
fn fault_aborts_name_one_status() {
    let yaml = vs(concat!(
        "  - route: [{destination: {host: reviews}}]\n",
        "    fault: {abort: {grpcStatus: UNAVAILABLE}, delay: {fixedDelay: 1s, percent: 50}}\n",
        "  - route: [{destination: {host: reviews}}]\n",
        "    fault: {abort: {grpcStatus: SOMETIMES}}\n",
        "  - route: [{destination: {host: reviews}}]\n",
        "    fault: {abort: {grpcStatus: UNAVAILABLE, httpStatus: 503}}\n",
    ));
    assert_eq!(
        problems(&yaml),
        [
            "spec.http[1].fault.abort.grpcStatus: \"SOMETIMES\" is not a gRPC status (UNAVAILABLE, NOT_FOUND, ...)",
            "spec.http[2].fault.abort: give httpStatus or grpcStatus, not both",
        ]
    );
}

#[test]
fn rewrites_mirrors_and_hash_tables_are_checked() {
    let yaml = vs(concat!(
        "  - route: [{destination: {host: reviews}}]\n",
        "    rewrite: {uri: /x, uriRegexRewrite: {match: \"^/a(\", rewrite: /b}}\n",
        "    mirror: {host: ratings}\n",
        "    mirrors: [{destination: {host: ratings}, percentage: {value: 150}}]\n",
        "  - match: [{withoutHeaders: {\"bad header\": {exact: x}}}]\n",
        "    route: [{destination: {host: reviews}}]\n",
    ));
    let found = problems(&yaml);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert_problem(
        &found,
        "spec.http[0].mirrors: give mirror or mirrors, not both",
    );
    assert_problem(
        &found,
        "spec.http[0].mirrors[0].percentage.value: percentage must be in 0..=100",
    );
    assert_problem(
        &found,
        "spec.http[0].rewrite.uriRegexRewrite: give uri or uriRegexRewrite, not both",
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.http[0].rewrite.uriRegexRewrite.match: invalid regex")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.http[1].match[0].withoutHeaders.bad header: ")),
        "{found:#?}"
    );

    let rule = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 1024, maglev: {tableSize: 65536}}}
  subsets:
  - name: fine
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}
"#;
    assert_eq!(
        problems(rule),
        [
            "spec.trafficPolicy.loadBalancer.consistentHash: give one of minimumRingSize, ringHash and maglev",
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: must be a prime number below 5000011",
        ]
    );
}

#[test]
fn client_certificate_digests_are_ones_envoy_reads() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: /etc/a.crt
      privateKey: /etc/a.key
      caCertificates: /etc/ca.crt
      subjectAltNames: [spiffe://cluster.local/ns/a/sa/b, client.example.com]
      verifyCertificateHash:
      - DF6FF72FE9116521268F6F2DD4966F51DF479883FE7037B39F75916AC3049D1A
      - "df:6f:f7:2f:e9:11:65:21:26:8f:6f:2d:d4:96:6f:51:df:47:98:83:fe:70:37:b3:9f:75:91:6a:c3:04:9d:1a"
      - not-a-hash
      verifyCertificateSpki: [NvqYIYSbgK2vCJpQhObf77vv+bQWtc5ek5RIOwPiC9A=, c2hvcnQ=]
"#;
    assert_eq!(
        problems(yaml),
        [
            "spec.servers[0].tls.verifyCertificateHash[2]: must be a SHA-256 digest in hex (64 digits, colons allowed)",
            "spec.servers[0].tls.verifyCertificateSpki[1]: must be a SHA-256 digest in base64 (44 characters)",
        ]
    );
}

#[test]
fn revocation_lists_check_certificates_meshd_verifies() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/db/ca.crt, caCrl: /etc/db/ca.crl}
  subsets:
  - name: plain
    trafficPolicy: {tls: {mode: DISABLE, caCrl: /etc/db/ca.crl}}
  - name: tilde
    trafficPolicy: {tls: {mode: SIMPLE, caCrl: /etc/db/old~ca.crl}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, serverCertificate: /etc/tls.crt, privateKey: /etc/tls.key, caCrl: /etc/ca.crl}
  - port: {number: 8443, name: mutual, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: MUTUAL, serverCertificate: /etc/tls.crt, privateKey: /etc/tls.key, caCertificates: /etc/ca.crt, caCrl: /etc/ca.crl}
"#;
    assert_eq!(
        problems(yaml),
        [
            "spec.subsets[0].trafficPolicy.tls.caCrl: only used with mode SIMPLE or MUTUAL",
            "spec.subsets[1].trafficPolicy.tls.caCrl: \"/etc/db/old~ca.crl\": a certificate file's path cannot contain '~' (it separates the files the proxy's agent serves together); rename or link the file",
            "spec.servers[0].tls.caCrl: revocation lists check client certificates: only with MUTUAL",
        ]
    );
}
