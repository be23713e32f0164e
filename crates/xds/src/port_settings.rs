//! A DestinationRule traffic policy as it applies to one port: the port's own
//! `portLevelSettings` entry wins, setting by setting, over the policy's.

use fleetmesh_api::networking::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
    PortTrafficPolicy, TrafficPolicy,
};

/// The settings in force for one port.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortSettings<'a> {
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a OutlierDetection>,
    pub tls: Option<&'a ClientTlsSettings>,
}

impl<'a> PortSettings<'a> {
    /// What `policy` (if any) sets for `port`.
    pub fn of(policy: Option<&'a TrafficPolicy>, port: u32) -> PortSettings<'a> {
        let Some(policy) = policy else {
            return PortSettings::default();
        };
        let own: Option<&PortTrafficPolicy> = policy
            .port_level_settings
            .iter()
            .find(|p| p.port.is_some_and(|n| n.number == port));
        PortSettings {
            load_balancer: own
                .and_then(|p| p.load_balancer.as_ref())
                .or(policy.load_balancer.as_ref()),
            connection_pool: own
                .and_then(|p| p.connection_pool.as_ref())
                .or(policy.connection_pool.as_ref()),
            outlier_detection: own
                .and_then(|p| p.outlier_detection.as_ref())
                .or(policy.outlier_detection.as_ref()),
            tls: own.and_then(|p| p.tls.as_ref()).or(policy.tls.as_ref()),
        }
    }
}
