use super::common::*;
use crate::networking::*;

pub fn validate(spec: &DestinationRuleSpec, errors: &mut Errors) {
    if spec.host.is_empty() {
        errors.push("spec.host", "host is required");
    } else {
        check_host("spec.host", &spec.host, false, errors);
    }
    if let Some(policy) = &spec.traffic_policy {
        validate_policy("spec.trafficPolicy", policy, errors);
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if !is_dns1123_label(&subset.name) {
            errors.push(
                format!("{at}.name"),
                format!("{:?} is not a valid subset name", subset.name),
            );
        }
        if !names.insert(&subset.name) {
            errors.push(
                format!("{at}.name"),
                format!("duplicate subset {:?}", subset.name),
            );
        }
        if let Some(policy) = &subset.traffic_policy {
            validate_policy(&format!("{at}.trafficPolicy"), policy, errors);
        }
    }
    check_export_to(&spec.export_to, errors);
}

fn validate_policy(at: &str, policy: &TrafficPolicy, errors: &mut Errors) {
    check_settings(
        at,
        &policy.load_balancer,
        &policy.outlier_detection,
        &policy.tls,
        &policy.connection_pool,
        errors,
    );
    for (i, port_policy) in policy.port_level_settings.iter().enumerate() {
        let p_at = format!("{at}.portLevelSettings[{i}]");
        match port_policy.port {
            Some(port) => check_port(&format!("{p_at}.port.number"), port.number, errors),
            None => errors.push(format!("{p_at}.port"), "port is required"),
        }
        check_settings(
            &p_at,
            &port_policy.load_balancer,
            &port_policy.outlier_detection,
            &port_policy.tls,
            &port_policy.connection_pool,
            errors,
        );
    }
}

fn check_settings(
    at: &str,
    lb: &Option<LoadBalancerSettings>,
    outlier: &Option<OutlierDetection>,
    tls: &Option<ClientTlsSettings>,
    pool: &Option<ConnectionPoolSettings>,
    errors: &mut Errors,
) {
    if let Some(pool) = pool {
        check_connection_pool(&format!("{at}.connectionPool"), pool, errors);
    }
    if let Some(lb) = lb {
        match (&lb.simple, &lb.consistent_hash) {
            (Some(_), Some(_)) => errors.push(
                format!("{at}.loadBalancer"),
                "simple and consistentHash are mutually exclusive",
            ),
            (None, Some(hash)) => {
                let keys = [
                    hash.http_header_name.is_some(),
                    hash.http_cookie.is_some(),
                    hash.use_source_ip == Some(true),
                    hash.http_query_parameter_name.is_some(),
                ];
                if keys.iter().filter(|k| **k).count() != 1 {
                    errors.push(
                        format!("{at}.loadBalancer.consistentHash"),
                        "exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required",
                    );
                }
                if let Some(name) = &hash.http_header_name {
                    check_header_name(
                        &format!("{at}.loadBalancer.consistentHash.httpHeaderName"),
                        name,
                        errors,
                    );
                }
                check_hash_table(&format!("{at}.loadBalancer.consistentHash"), hash, errors);
            }
            _ => {}
        }
        if let Some(warmup) = &lb.warmup {
            check_warmup(&format!("{at}.loadBalancer.warmup"), warmup, errors);
        }
        check_at_least_1ms(
            &format!("{at}.loadBalancer.warmupDurationSecs"),
            lb.warmup_duration_secs,
            errors,
        );
        if let Some(locality) = &lb.locality_lb_setting {
            check_locality_lb(
                &format!("{at}.loadBalancer.localityLbSetting"),
                locality,
                errors,
            );
        }
    }
    if let Some(outlier) = outlier {
        for (name, value) in [
            ("maxEjectionPercent", outlier.max_ejection_percent),
            ("minHealthPercent", outlier.min_health_percent),
        ] {
            if value.is_some_and(|v| v > 100) {
                errors.push(
                    format!("{at}.outlierDetection.{name}"),
                    "must be in 0..=100",
                );
            }
        }
    }
    if let Some(tls) = tls {
        validate_client_tls(&format!("{at}.tls"), tls, errors);
    }
}

/// Istio's rules for the hash table: `minimumRingSize` (deprecated), `ringHash` or
/// `maglev`, one at most; Maglev's table size a prime below 5,000,011 (Envoy's rule).
fn check_hash_table(at: &str, hash: &ConsistentHashLb, errors: &mut Errors) {
    let given = [
        hash.minimum_ring_size.is_some(),
        hash.ring_hash.is_some(),
        hash.maglev.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        errors.push(
            at.to_string(),
            "give one of minimumRingSize, ringHash and maglev",
        );
    }
    if let Some(maglev) = &hash.maglev {
        let prime = |n: u64| {
            n >= 2
                && (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        };
        match maglev.table_size {
            Some(size) if size < 5_000_011 && prime(size) => {}
            Some(_) => errors.push(
                format!("{at}.maglev.tableSize"),
                "must be a prime number below 5000011",
            ),
            None => errors.push(format!("{at}.maglev.tableSize"), "required for maglev"),
        }
    }
}

/// Istio's rules: a duration of at least 1ms is required, the aggression is above 0; the
/// minimum share is a percentage (Envoy refuses one outside 0..=100).
fn check_warmup(at: &str, warmup: &Warmup, errors: &mut Errors) {
    if warmup.duration.is_none() {
        errors.push(format!("{at}.duration"), "required");
    }
    check_at_least_1ms(&format!("{at}.duration"), warmup.duration, errors);
    if let Some(percent) = warmup.minimum_percent {
        check_percent(&format!("{at}.minimumPercent"), percent, errors);
    }
    if warmup
        .aggression
        .is_some_and(|a| !(a > 0.0 && a.is_finite()))
    {
        errors.push(format!("{at}.aggression"), "must be above 0");
    }
}

/// Istio's rules: durations of at least 1ms (a TCP `idleTimeout` of 0 turns it off); an
/// HTTP/2 keepalive needs both its interval and timeout; the client's protocol cannot
/// also be upgraded.
fn check_connection_pool(at: &str, pool: &ConnectionPoolSettings, errors: &mut Errors) {
    let mut durations = Vec::new();
    if let Some(tcp) = &pool.tcp {
        let idle = tcp.idle_timeout.filter(|t| !t.as_std().is_zero());
        durations.extend([
            ("tcp.connectTimeout", tcp.connect_timeout),
            ("tcp.maxConnectionDuration", tcp.max_connection_duration),
            ("tcp.idleTimeout", idle),
        ]);
        if let Some(keepalive) = &tcp.tcp_keepalive {
            durations.extend([
                ("tcp.tcpKeepalive.time", keepalive.time),
                ("tcp.tcpKeepalive.interval", keepalive.interval),
            ]);
        }
    }
    if let Some(http) = &pool.http {
        durations.push(("http.idleTimeout", http.idle_timeout));
        if http.use_client_protocol == Some(true)
            && http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
        {
            errors.push(
                format!("{at}.http.useClientProtocol"),
                "cannot be true when h2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(keepalive) = &http.http2_keep_alive {
            let fields = [
                ("http.http2KeepAlive.interval", keepalive.interval),
                ("http.http2KeepAlive.timeout", keepalive.timeout),
            ];
            for (field, value) in fields {
                if value.is_none() {
                    errors.push(
                        format!("{at}.{field}"),
                        "required when http2KeepAlive is set",
                    );
                }
            }
            durations.extend(fields);
        }
    }
    for (field, value) in durations {
        check_at_least_1ms(&format!("{at}.{field}"), value, errors);
    }
}

/// Istio's rules: `distribute` or `failover`, not both; each `distribute` entry's weights
/// sum to 100; localities are `region/zone/subzone` with `*` only as a whole last part;
/// failover names two different regions.
fn check_locality_lb(at: &str, setting: &LocalityLbSetting, errors: &mut Errors) {
    if !setting.distribute.is_empty() && !setting.failover.is_empty() {
        errors.push(at, "distribute and failover are mutually exclusive");
    }
    if !setting.failover_priority.is_empty() {
        errors.push(
            format!("{at}.failoverPriority"),
            "not applied by fleetmesh yet (failover by region is: use failover)",
        );
    }
    for (i, rule) in setting.distribute.iter().enumerate() {
        let rule_at = format!("{at}.distribute[{i}]");
        check_locality(&format!("{rule_at}.from"), &rule.from, errors);
        for locality in rule.to.keys() {
            check_locality(&format!("{rule_at}.to"), locality, errors);
        }
        let total: u64 = rule.to.values().map(|w| u64::from(*w)).sum();
        if total != 100 {
            errors.push(
                format!("{rule_at}.to"),
                format!("the weights sum to {total}; they must sum to 100"),
            );
        }
    }
    for (i, rule) in setting.failover.iter().enumerate() {
        let rule_at = format!("{at}.failover[{i}]");
        for (field, region) in [("from", &rule.from), ("to", &rule.to)] {
            if region.is_empty() || region.contains('/') || region.contains('*') {
                errors.push(
                    format!("{rule_at}.{field}"),
                    format!("{region:?} is not a region (no zone, no wildcard)"),
                );
            }
        }
        if rule.from == rule.to {
            errors.push(&rule_at, "from and to must be different regions");
        }
    }
}

/// `region`, `region/zone` or `region/zone/subzone`, where a part may be `*` only as the
/// last one.
fn check_locality(at: &str, locality: &str, errors: &mut Errors) {
    let parts: Vec<&str> = locality.split('/').collect();
    let valid = parts.len() <= 3
        && parts.iter().enumerate().all(|(i, part)| {
            !part.is_empty() && (!part.contains('*') || (*part == "*" && i == parts.len() - 1))
        });
    if !valid {
        errors.push(
            at,
            format!(
                "{locality:?} is not a locality (region/zone/subzone, '*' only as the last part)"
            ),
        );
    }
}

/// TLS the proxy originates: SIMPLE checks the server against `caCertificates` (else
/// the system's roots); MUTUAL also presents the client certificate files. Files are
/// read by the proxy's agent on its host (a relative path from its working directory, as
/// Istio's agent reads it).
fn validate_client_tls(at: &str, tls: &ClientTlsSettings, errors: &mut Errors) {
    let originates = matches!(
        tls.mode,
        Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
    );
    let client = [
        ("clientCertificate", &tls.client_certificate),
        ("privateKey", &tls.private_key),
    ];
    let files = client.into_iter().chain([
        ("caCertificates", &tls.ca_certificates),
        ("caCrl", &tls.ca_crl),
    ]);
    for (field, value) in files {
        match value {
            Some(_) if !originates => errors.push(
                format!("{at}.{field}"),
                "only used with mode SIMPLE or MUTUAL",
            ),
            Some(path) => check_agent_file(&format!("{at}.{field}"), path, errors),
            None => {}
        }
    }
    if tls.credential_name.is_some() {
        errors.push(
            format!("{at}.credentialName"),
            "not supported by this meshd yet: give clientCertificate and privateKey files",
        );
    }
    match tls.mode {
        Some(ClientTlsMode::Mutual) => {
            for (field, value) in client {
                if value.is_none() && tls.credential_name.is_none() {
                    errors.push(format!("{at}.{field}"), "required for MUTUAL");
                }
            }
        }
        Some(ClientTlsMode::Simple) if client.iter().any(|(_, f)| f.is_some()) => errors.push(
            format!("{at}.mode"),
            "a client certificate is only presented with MUTUAL",
        ),
        _ => {}
    }
}
