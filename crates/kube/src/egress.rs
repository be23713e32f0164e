//! Where meshd may connect on a tenant's behalf. meshd is hosted for many tenants, and
//! some addresses it dials are tenant-written (a remote secret's API server): none may
//! point meshd at the provider's own network (a metadata service, meshd's host, an
//! internal API). Host names are resolved once and the connection pinned to the checked
//! address, so a DNS answer cannot change between the check and the connect.

use fleetmesh_api::validate::security::parse_cidr;
use std::net::{IpAddr, SocketAddr};

/// Networks meshd never dials for a tenant, whatever the flags: link-local (cloud
/// metadata services live there), "this network", and multicast/broadcast.
const ALWAYS_DENIED: [&str; 6] = [
    "169.254.0.0/16",
    "fe80::/10",
    "0.0.0.0/8",
    "224.0.0.0/3",
    "ff00::/8",
    "::/128",
];

/// The networks tenant-written addresses may not reach.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    denied: Vec<(IpAddr, u32)>,
}

/// Why a tenant-written address is refused.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A denied network.
    #[error("{address} is in {network}, which tenants may not reach")]
    Denied {
        /// The address refused.
        address: IpAddr,
        /// The denied network it is in.
        network: String,
    },
    /// The host name does not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Unresolved {
        /// The host name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// A network given to [`EgressPolicy::denying`] is not a CIDR.
    #[error("{0:?} is not a network (CIDR such as 10.0.0.0/8)")]
    NotANetwork(String),
}

impl EgressPolicy {
    /// Denies `networks` (CIDRs: the provider's networks, loopback for a hosted meshd)
    /// besides those always denied.
    pub fn denying(networks: &[String]) -> Result<EgressPolicy, EgressError> {
        let always = ALWAYS_DENIED.map(str::to_string);
        EgressPolicy { denied: Vec::new() }
            .also_denying(&always)?
            .also_denying(networks)
    }

    /// This policy, denying `networks` too (a stricter one for some use).
    pub fn also_denying(&self, networks: &[String]) -> Result<EgressPolicy, EgressError> {
        let mut stricter = self.clone();
        for network in networks.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let parsed =
                parse_cidr(network).ok_or_else(|| EgressError::NotANetwork(network.into()))?;
            stricter.denied.push(parsed);
        }
        Ok(stricter)
    }

    /// Whether `address` may be dialled for a tenant.
    pub fn check(&self, address: IpAddr) -> Result<(), EgressError> {
        let address = canonical(address);
        match self
            .denied
            .iter()
            .find(|(network, prefix)| contains(*network, *prefix, address))
        {
            Some((network, prefix)) => Err(EgressError::Denied {
                address,
                network: format!("{network}/{prefix}"),
            }),
            None => Ok(()),
        }
    }

    /// Resolves `host` and checks every address it has (one denied address refuses the
    /// host: which one a client picks is not ours to know); the first, to pin to.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, EgressError> {
        let unresolved = |reason: String| EgressError::Unresolved {
            host: host.into(),
            reason,
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| unresolved(e.to_string()))?
                .collect(),
        };
        for address in &addresses {
            self.check(address.ip())?;
        }
        addresses
            .first()
            .copied()
            .ok_or_else(|| unresolved("no addresses".into()))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn contains(network: IpAddr, prefix: u32, address: IpAddr) -> bool {
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_given_networks_are_refused() {
        let policy = EgressPolicy::denying(&["10.0.0.0/8".into(), "127.0.0.0/8".into()]).unwrap();
        for refused in [
            "169.254.169.254",
            "10.1.2.3",
            "127.0.0.1",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(policy.check(refused.parse().unwrap()).is_err(), "{refused}");
        }
        for allowed in ["192.0.2.10", "2001:db8::1", "11.0.0.1"] {
            assert!(policy.check(allowed.parse().unwrap()).is_ok(), "{allowed}");
        }
        assert!(matches!(
            EgressPolicy::denying(&["ten".into()]),
            Err(EgressError::NotANetwork(_))
        ));
    }

    #[tokio::test]
    async fn host_names_are_checked_after_resolving() {
        let policy = EgressPolicy::denying(&["127.0.0.0/8".into(), "::1/128".into()]).unwrap();
        let error = policy.resolve("localhost", 6443).await.unwrap_err();
        assert!(matches!(error, EgressError::Denied { .. }), "{error}");
        let open = EgressPolicy::denying(&[]).unwrap();
        assert!(
            open.resolve("localhost", 6443)
                .await
                .unwrap()
                .ip()
                .is_loopback()
        );
    }
}
