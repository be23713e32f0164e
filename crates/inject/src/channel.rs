//! Release channels and the revisions they map to (as the managed Istio they replace
//! names them). One meshd serves every revision; a revision pins the proxy that pods
//! injected for it run.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Rapid,
    Regular,
    Stable,
}

/// One revision: what a namespace labelled `istio.io/rev=<name>` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub name: &'static str,
    pub channel: Channel,
    /// The control plane version serving it.
    pub control_plane_version: &'static str,
    /// The proxy (agent + Envoy) version its pods run.
    pub proxy_version: &'static str,
    /// The `istio-proxy` image, built by `scripts/build-images` at that version.
    pub proxy_image: &'static str,
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The channel table. Every channel is pinned to this build until releases exist to
/// spread across them (rapid gets a release first, stable last).
pub const REVISIONS: [Revision; 3] = [
    Revision {
        name: "asm-managed-rapid",
        channel: Channel::Rapid,
        control_plane_version: VERSION,
        proxy_version: VERSION,
        proxy_image: concat!("localhost/fleetmesh/proxyv2:", env!("CARGO_PKG_VERSION")),
    },
    Revision {
        name: "asm-managed",
        channel: Channel::Regular,
        control_plane_version: VERSION,
        proxy_version: VERSION,
        proxy_image: concat!("localhost/fleetmesh/proxyv2:", env!("CARGO_PKG_VERSION")),
    },
    Revision {
        name: "asm-managed-stable",
        channel: Channel::Stable,
        control_plane_version: VERSION,
        proxy_version: VERSION,
        proxy_image: concat!("localhost/fleetmesh/proxyv2:", env!("CARGO_PKG_VERSION")),
    },
];

/// Where the `istio-proxy` images live (`scripts/build-images` builds them).
pub const PROXY_REPOSITORY: &str = "localhost/fleetmesh/proxyv2";

/// The `istio-proxy` image of proxy `version`.
pub fn proxy_image(version: &str) -> String {
    format!("{PROXY_REPOSITORY}:{version}")
}

/// The revision tag install points at the chosen channel; the legacy
/// `istio-injection=enabled` label follows it.
pub const DEFAULT_TAG: &str = "default";

impl Revision {
    pub fn named(name: &str) -> Option<&'static Revision> {
        REVISIONS.iter().find(|r| r.name == name)
    }

    pub fn of(channel: Channel) -> &'static Revision {
        REVISIONS
            .iter()
            .find(|r| r.channel == channel)
            .expect("every channel has a revision")
    }
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Rapid, Channel::Regular, Channel::Stable];
}

impl FromStr for Channel {
    type Err = String;

    fn from_str(text: &str) -> Result<Channel, String> {
        match text.to_ascii_lowercase().as_str() {
            "rapid" => Ok(Channel::Rapid),
            "regular" => Ok(Channel::Regular),
            "stable" => Ok(Channel::Stable),
            _ => Err(format!(
                "unknown channel {text:?} (channels: rapid, regular, stable)"
            )),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Rapid => "rapid",
            Channel::Regular => "regular",
            Channel::Stable => "stable",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_maps_to_its_revision() {
        assert_eq!(Revision::of(Channel::Rapid).name, "asm-managed-rapid");
        assert_eq!(Revision::of(Channel::Regular).name, "asm-managed");
        assert_eq!(Revision::of(Channel::Stable).name, "asm-managed-stable");
        for channel in Channel::ALL {
            let parsed: Channel = channel.to_string().parse().unwrap();
            assert_eq!(parsed, channel);
            assert_eq!(
                Revision::named(Revision::of(channel).name).unwrap().channel,
                channel
            );
        }
        assert!(
            "beta"
                .parse::<Channel>()
                .unwrap_err()
                .contains("rapid, regular, stable")
        );
    }
}
