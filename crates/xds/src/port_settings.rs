//! A DestinationRule's traffic policy as it applies to one port of one subset, merged as
//! istiod merges it: a `portLevelSettings` entry for the port replaces the policy (what it
//! omits is Envoy's default, not the policy's), and a subset's policy overrides the rule's
//! setting by setting (connection pool, load balancer, outlier detection, TLS), all four
//! when the subset has an entry for the port.

use fleetmesh_api::networking::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRuleSpec, LoadBalancerSettings,
    OutlierDetection, SimpleLb, TrafficPolicy,
};

/// The settings in force for one port.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PortSettings<'a> {
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a OutlierDetection>,
    pub tls: Option<&'a ClientTlsSettings>,
}

impl<'a> PortSettings<'a> {
    /// `PASSTHROUGH` balancing: to the address the client connected to, so the cluster is
    /// an original-destination one and has no endpoints to send.
    pub fn passthrough(&self) -> bool {
        self.load_balancer
            .is_some_and(|lb| lb.simple == Some(SimpleLb::Passthrough))
    }

    /// What `policy` (if any) sets for `port`.
    pub fn of(policy: Option<&'a TrafficPolicy>, port: u32) -> PortSettings<'a> {
        Self::with_port_level(policy, port).0
    }

    /// What `rule` sets for `port` of its subset `subset` (`None`: the whole host).
    pub fn of_subset(
        rule: Option<&'a DestinationRuleSpec>,
        subset: Option<&str>,
        port: u32,
    ) -> PortSettings<'a> {
        let rule_settings = Self::of(rule.and_then(|r| r.traffic_policy.as_ref()), port);
        let subset_policy = rule
            .into_iter()
            .flat_map(|r| &r.subsets)
            .find(|s| Some(s.name.as_str()) == subset)
            .and_then(|s| s.traffic_policy.as_ref());
        if subset_policy.is_none() {
            return rule_settings;
        }
        let (own, port_level) = Self::with_port_level(subset_policy, port);
        fn pick<T>(port_level: bool, own: Option<T>, inherited: Option<T>) -> Option<T> {
            if port_level { own } else { own.or(inherited) }
        }
        let rule = rule_settings;
        PortSettings {
            load_balancer: pick(port_level, own.load_balancer, rule.load_balancer),
            connection_pool: pick(port_level, own.connection_pool, rule.connection_pool),
            outlier_detection: pick(port_level, own.outlier_detection, rule.outlier_detection),
            tls: pick(port_level, own.tls, rule.tls),
        }
    }

    /// The settings, and whether they come from a `portLevelSettings` entry.
    fn with_port_level(policy: Option<&'a TrafficPolicy>, port: u32) -> (PortSettings<'a>, bool) {
        let Some(policy) = policy else {
            return (PortSettings::default(), false);
        };
        let own = policy
            .port_level_settings
            .iter()
            .find(|p| p.port.is_some_and(|n| n.number == port));
        match own {
            Some(own) => (
                PortSettings {
                    load_balancer: own.load_balancer.as_ref(),
                    connection_pool: own.connection_pool.as_ref(),
                    outlier_detection: own.outlier_detection.as_ref(),
                    tls: own.tls.as_ref(),
                },
                true,
            ),
            None => (
                PortSettings {
                    load_balancer: policy.load_balancer.as_ref(),
                    connection_pool: policy.connection_pool.as_ref(),
                    outlier_detection: policy.outlier_detection.as_ref(),
                    tls: policy.tls.as_ref(),
                },
                false,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> DestinationRuleSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    /// Istio's `destination-rule-all.yaml` pattern: subset v2 sets only its load
    /// balancer and keeps the rule's connection pool, outlier detection and TLS.
    #[test]
    fn a_subset_overrides_the_rule_setting_by_setting() {
        let rule = rule(
            "host: r\ntrafficPolicy:\n  connectionPool: {tcp: {maxConnections: 7}}\n  outlierDetection: {consecutive5xxErrors: 3}\n  tls: {mode: DISABLE}\n  loadBalancer: {simple: RANDOM}\nsubsets:\n- {name: v1, labels: {version: v1}}\n- name: v2\n  labels: {version: v2}\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n",
        );
        let v2 = PortSettings::of_subset(Some(&rule), Some("v2"), 9080);
        let top = PortSettings::of_subset(Some(&rule), None, 9080);
        assert_eq!(v2.connection_pool, top.connection_pool);
        assert_eq!(v2.outlier_detection, top.outlier_detection);
        assert_eq!(v2.tls, top.tls);
        assert_eq!(
            v2.load_balancer,
            rule.subsets[1]
                .traffic_policy
                .as_ref()
                .unwrap()
                .load_balancer
                .as_ref()
        );
        assert_eq!(PortSettings::of_subset(Some(&rule), Some("v1"), 9080), top);
    }

    /// A port-level entry is the whole policy of its port: nothing is inherited.
    #[test]
    fn a_port_level_entry_replaces_the_policy() {
        let rule = rule(
            "host: r\ntrafficPolicy:\n  connectionPool: {tcp: {maxConnections: 7}}\n  portLevelSettings:\n  - {port: {number: 80}, loadBalancer: {simple: RANDOM}}\nsubsets:\n- name: v2\n  labels: {version: v2}\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 3}\n    portLevelSettings: [{port: {number: 81}, tls: {mode: DISABLE}}]\n",
        );
        let port_80 = PortSettings::of_subset(Some(&rule), None, 80);
        assert!(port_80.connection_pool.is_none() && port_80.load_balancer.is_some());
        let v2_on_80 = PortSettings::of_subset(Some(&rule), Some("v2"), 80);
        assert!(v2_on_80.load_balancer.is_some() && v2_on_80.outlier_detection.is_some());
        let v2_on_81 = PortSettings::of_subset(Some(&rule), Some("v2"), 81);
        assert!(v2_on_81.tls.is_some());
        assert!(v2_on_81.connection_pool.is_none() && v2_on_81.outlier_detection.is_none());
    }
}
