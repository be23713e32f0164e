//! Release channels and the revisions they map to (as the managed Istio they replace
//! names them). One meshd serves every revision; a revision pins the proxy that pods
//! injected for it run.

use std::fmt;
use std::str::FromStr;

/// A release channel, as `install --channel` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Newest versions first.
    Rapid,
    /// The default.
    Regular,
    /// Versions proven longest.
    Stable,
}

/// One revision: what a namespace labelled `istio.io/rev=<name>` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    /// `asm-managed-rapid`, `asm-managed`, `asm-managed-stable`.
    pub name: &'static str,
    /// The channel it follows.
    pub channel: Channel,
    /// The control plane version serving it.
    pub control_plane_version: &'static str,
    /// The proxy (agent + Envoy) version its pods run: the tag of the `istio-proxy`
    /// image ([`proxy_image`]).
    pub proxy_version: &'static str,
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
    },
    Revision {
        name: "asm-managed",
        channel: Channel::Regular,
        control_plane_version: VERSION,
        proxy_version: VERSION,
    },
    Revision {
        name: "asm-managed-stable",
        channel: Channel::Stable,
        control_plane_version: VERSION,
        proxy_version: VERSION,
    },
];

/// Where the images live unless install says otherwise (`fleetmesh install --hub`):
/// `scripts/build-images` builds them under this name, and a registry-less cluster (the
/// local real node) has them imported as such.
pub const DEFAULT_HUB: &str = "localhost/fleetmesh";

/// The `istio-proxy` image of proxy `version` in `hub`, as Istio names it
/// (`HUB/proxyv2:TAG`): the tag is the proxy version, so a new version is a new image.
pub fn proxy_image(hub: &str, version: &str) -> String {
    image(hub, "proxyv2", version)
}

/// Image `name` of fleetmesh release `version` in `hub` (`HUB/NAME:VERSION`), as
/// `scripts/build-images` names them: `proxyv2` and `sample`.
pub fn image(hub: &str, name: &str, version: &str) -> String {
    format!("{hub}/{name}:{version}")
}

/// Whether `hub` is an image repository prefix a pod spec may carry: path components of
/// lower-case letters, digits and `._-` (and `:` for a registry's port); nothing that
/// could be read as more than a name (no tag, digest, query or empty component).
pub fn valid_hub(hub: &str) -> bool {
    !hub.is_empty()
        && hub.len() <= 200
        && hub.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-:".contains(c))
        })
}

/// The revision tag install points at the chosen channel; the legacy
/// `istio-injection=enabled` label follows it.
pub const DEFAULT_TAG: &str = "default";

impl Revision {
    /// The revision called `name`.
    pub fn named(name: &str) -> Option<&'static Revision> {
        REVISIONS.iter().find(|r| r.name == name)
    }

    /// The revision of `channel`.
    pub fn of(channel: Channel) -> &'static Revision {
        REVISIONS
            .iter()
            .find(|r| r.channel == channel)
            .expect("every channel has a revision")
    }
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 3] = [Channel::Rapid, Channel::Regular, Channel::Stable];
}

/// A name that is not a release channel's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel {0:?} (channels: rapid, regular, stable)")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(text: &str) -> Result<Channel, UnknownChannel> {
        match text.to_ascii_lowercase().as_str() {
            "rapid" => Ok(Channel::Rapid),
            "regular" => Ok(Channel::Regular),
            "stable" => Ok(Channel::Stable),
            _ => Err(UnknownChannel(text.to_string())),
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
mod hub_tests {
    use super::*;

    #[test]
    fn hubs_are_repository_prefixes() {
        for good in [
            DEFAULT_HUB,
            "registry.example.com:5000/team/fleetmesh",
            "gcr.io/p",
        ] {
            assert!(valid_hub(good), "{good}");
        }
        for bad in [
            "",
            "Upper/case",
            "a//b",
            "../x",
            "a/ b",
            "a@sha256",
            "x/y?z",
        ] {
            assert!(!valid_hub(bad), "{bad}");
        }
        assert_eq!(proxy_image("h/r", "1.2"), "h/r/proxyv2:1.2");
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
        assert_eq!(
            "beta".parse::<Channel>().unwrap_err().to_string(),
            "unknown channel \"beta\" (channels: rapid, regular, stable)"
        );
    }
}
