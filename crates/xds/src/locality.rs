//! Locality-aware load balancing, as Istio applies a DestinationRule's
//! `localityLbSetting` to a proxy's endpoints. With outlier detection (which tells Envoy
//! an endpoint is unhealthy), endpoints get priorities by how near they are to the proxy:
//! its region, zone and subzone first (0), then its zone (1), its region (2), a
//! `failover` region (3), anywhere else (4), renumbered without gaps; Envoy spills to the
//! next priority as one empties. `distribute` instead weighs each locality (the cluster
//! then balances by locality weight). `enabled: false` turns both off.

use crate::port_settings::PortSettings;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{CommonLbConfig, common_lb_config};
use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
use fleetmesh_api::networking::LocalityLbSetting;
use fleetmesh_model::Snapshot;
use std::collections::BTreeSet;

/// What a cluster's traffic policy says about localities, for one port.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalityPolicy<'a> {
    setting: Option<&'a LocalityLbSetting>,
    outlier_detection: bool,
}

impl<'a> LocalityPolicy<'a> {
    /// What a port's settings say about localities.
    pub fn of(settings: &PortSettings<'a>) -> LocalityPolicy<'a> {
        LocalityPolicy {
            setting: settings
                .load_balancer
                .and_then(|lb| lb.locality_lb_setting.as_ref()),
            outlier_detection: settings.outlier_detection.is_some(),
        }
    }

    fn enabled(&self) -> bool {
        self.setting.is_none_or(|s| s.enabled != Some(false))
    }

    /// Whether the cluster balances by locality weight (`distribute`).
    pub fn distributes(&self) -> bool {
        self.enabled() && self.setting.is_some_and(|s| !s.distribute.is_empty())
    }

    /// Whether endpoints differ by the proxy's locality at all.
    pub fn depends_on_proxy(&self) -> bool {
        self.enabled() && (self.outlier_detection || self.distributes())
    }

    /// Weighs or ranks `groups` (an assignment's endpoints by locality) for a proxy in
    /// `proxy_locality`; nothing changes for a proxy of unknown locality.
    pub fn apply(&self, groups: &mut Vec<LocalityLbEndpoints>, proxy_locality: Option<&str>) {
        let Some(proxy) = proxy_locality.map(parts) else {
            return;
        };
        if !self.depends_on_proxy() {
            return;
        }
        let setting = self.setting.cloned().unwrap_or_default();
        if self.distributes() {
            distribute(&setting, groups, &proxy);
        } else {
            prioritize(&setting, groups, &proxy);
        }
    }
}

/// Makes `cluster` balance by locality weight, as `distribute` needs.
pub fn weigh_by_locality(cluster: &mut Cluster) {
    let common = cluster
        .common_lb_config
        .get_or_insert_with(CommonLbConfig::default);
    common.locality_config_specifier = Some(
        common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
            common_lb_config::LocalityWeightedLbConfig {},
        ),
    );
}

/// Whether some DestinationRule of `snapshot` makes endpoints depend on where the proxy
/// runs (then proxies in different localities cannot share endpoints).
pub fn snapshot_uses_locality(snapshot: &Snapshot) -> bool {
    snapshot.destination_rules.iter().any(|rule| {
        let policies = rule.spec.traffic_policy.iter().chain(
            rule.spec
                .subsets
                .iter()
                .filter_map(|s| s.traffic_policy.as_ref()),
        );
        policies.into_iter().any(|policy| {
            let ports = std::iter::once(0).chain(
                policy
                    .port_level_settings
                    .iter()
                    .filter_map(|p| p.port.map(|n| n.number)),
            );
            ports.into_iter().any(|port| {
                LocalityPolicy::of(&PortSettings::of(Some(policy), port)).depends_on_proxy()
            })
        })
    })
}

/// `region/zone/subzone` as its three parts (missing ones empty).
fn parts(locality: &str) -> [String; 3] {
    let mut split = locality.splitn(3, '/');
    std::array::from_fn(|_| split.next().unwrap_or_default().to_string())
}

fn of(locality: Option<&Locality>) -> [&str; 3] {
    locality.map_or(["", "", ""], |l| [&l.region, &l.zone, &l.sub_zone])
}

/// Whether `pattern` (`region[/zone[/subzone]]`, `*` as the last part matching any)
/// covers `locality`.
fn matches(pattern: &str, locality: [&str; 3]) -> bool {
    pattern
        .split('/')
        .zip(locality)
        .all(|(part, actual)| part == "*" || part == actual)
}

/// Priorities by nearness to `proxy`, renumbered from 0 without gaps.
fn prioritize(
    setting: &LocalityLbSetting,
    groups: &mut [LocalityLbEndpoints],
    proxy: &[String; 3],
) {
    let failover_to: BTreeSet<&str> = setting
        .failover
        .iter()
        .filter(|f| f.from == proxy[0])
        .map(|f| f.to.as_str())
        .collect();
    let ranks: Vec<u32> = groups
        .iter()
        .map(|group| {
            let [region, zone, subzone] = of(group.locality.as_ref());
            match (region == proxy[0], zone == proxy[1], subzone == proxy[2]) {
                (true, true, true) => 0,
                (true, true, false) => 1,
                (true, false, _) => 2,
                (false, ..) if failover_to.contains(region) => 3,
                (false, ..) => 4,
            }
        })
        .collect();
    let used: BTreeSet<u32> = ranks.iter().copied().collect();
    for (group, rank) in groups.iter_mut().zip(ranks) {
        group.priority = used.iter().take_while(|r| **r < rank).count() as u32;
    }
}

/// Weights by the first `distribute` rule whose `from` covers `proxy`: each `to` weight is
/// shared by the localities it covers; localities no rule sends traffic to are dropped.
fn distribute(
    setting: &LocalityLbSetting,
    groups: &mut Vec<LocalityLbEndpoints>,
    proxy: &[String; 3],
) {
    let proxy = [proxy[0].as_str(), proxy[1].as_str(), proxy[2].as_str()];
    let Some(rule) = setting.distribute.iter().find(|r| matches(&r.from, proxy)) else {
        return;
    };
    let mut weights = vec![0u32; groups.len()];
    for (pattern, weight) in &rule.to {
        let covered: Vec<usize> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| matches(pattern, of(g.locality.as_ref())))
            .map(|(i, _)| i)
            .collect();
        for &i in &covered {
            // Whole shares (Envoy's weights are integers); every covered locality keeps at
            // least 1 so none is starved by rounding.
            weights[i] += (weight / covered.len() as u32).max(1);
        }
    }
    let mut index = 0;
    groups.retain_mut(|group| {
        let weight = weights[index];
        index += 1;
        group.load_balancing_weight = crate::common::u32_value(weight);
        weight > 0
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_api::networking::{LocalityDistribute, LocalityFailover, TrafficPolicy};

    fn groups(localities: &[&str]) -> Vec<LocalityLbEndpoints> {
        localities
            .iter()
            .map(|l| {
                let [region, zone, sub_zone] = parts(l);
                LocalityLbEndpoints {
                    locality: Some(Locality {
                        region,
                        zone,
                        sub_zone,
                    }),
                    ..LocalityLbEndpoints::default()
                }
            })
            .collect()
    }

    #[test]
    fn nearest_first_then_the_failover_region_then_the_rest() {
        let setting = LocalityLbSetting {
            failover: vec![LocalityFailover {
                from: "us-west".into(),
                to: "eu-west".into(),
            }],
            ..LocalityLbSetting::default()
        };
        let mut endpoints = groups(&["asia/a", "eu-west/a", "us-west/b", "us-west/a"]);
        prioritize(&setting, &mut endpoints, &parts("us-west/a"));
        let priorities: Vec<u32> = endpoints.iter().map(|g| g.priority).collect();
        // us-west/a: 0; us-west/b: same region (2 → 1); eu-west: failover (3 → 2); asia: 4 → 3.
        assert_eq!(priorities, [3, 2, 1, 0]);
    }

    #[test]
    fn distribute_weighs_the_localities_its_rule_names() {
        let setting = LocalityLbSetting {
            distribute: vec![LocalityDistribute {
                from: "us-west/*".into(),
                to: [("us-west/*".to_string(), 80), ("us-east/*".to_string(), 20)].into(),
            }],
            ..LocalityLbSetting::default()
        };
        let mut endpoints = groups(&["us-west/a", "us-west/b", "us-east/a", "asia/a"]);
        distribute(&setting, &mut endpoints, &parts("us-west/a"));
        let weights: Vec<(String, u32)> = endpoints
            .iter()
            .map(|g| {
                let l = g.locality.as_ref().unwrap();
                (
                    format!("{}/{}", l.region, l.zone),
                    g.load_balancing_weight.as_ref().unwrap().value,
                )
            })
            .collect();
        let expected = [("us-west/a", 40), ("us-west/b", 40), ("us-east/a", 20)];
        assert_eq!(weights, expected.map(|(l, w)| (l.to_string(), w)));
    }

    #[test]
    fn without_outlier_detection_or_when_disabled_nothing_changes() {
        let policy: TrafficPolicy = serde_yaml_ng::from_str(
            "loadBalancer: {localityLbSetting: {enabled: false}}\noutlierDetection: {consecutive5xxErrors: 1}",
        )
        .unwrap();
        assert!(!LocalityPolicy::of(&PortSettings::of(Some(&policy), 80)).depends_on_proxy());
        let plain: TrafficPolicy =
            serde_yaml_ng::from_str("loadBalancer: {simple: ROUND_ROBIN}").unwrap();
        assert!(!LocalityPolicy::of(&PortSettings::of(Some(&plain), 80)).depends_on_proxy());
        let failover: TrafficPolicy =
            serde_yaml_ng::from_str("outlierDetection: {consecutive5xxErrors: 1}").unwrap();
        assert!(LocalityPolicy::of(&PortSettings::of(Some(&failover), 80)).depends_on_proxy());
    }
}
