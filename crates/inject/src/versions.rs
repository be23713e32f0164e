//! Which proxy version each revision's pods run: the channel table this meshd release
//! carries ([`crate::channel::REVISIONS`]), possibly overridden per revision (meshd's
//! `--channels` file, for operators and tests), and the order of versions, so that a
//! newer meshd moves a revision forward and an older one never moves it back.

use crate::channel::{REVISIONS, Revision};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The proxy version of every revision this meshd knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTable {
    proxies: BTreeMap<String, String>,
}

/// Why a channel table override is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Not a revision of any channel.
    #[error(
        "{0:?} is not a revision (revisions: asm-managed-rapid, asm-managed, asm-managed-stable)"
    )]
    UnknownRevision(String),
    /// Not an image tag.
    #[error(
        "{revision}: {version:?} is not an image tag (letters, digits, '_', '.', '-'; at most 128)"
    )]
    InvalidVersion {
        /// The revision.
        revision: String,
        /// What was given.
        version: String,
    },
}

impl ChannelTable {
    /// The table this build carries.
    pub fn builtin() -> ChannelTable {
        ChannelTable {
            proxies: REVISIONS
                .iter()
                .map(|r| (r.name.to_string(), r.proxy_version.to_string()))
                .collect(),
        }
    }

    /// The built-in table with `overrides` (revision → proxy version) applied.
    pub fn with(overrides: BTreeMap<String, String>) -> Result<ChannelTable, TableError> {
        let mut table = ChannelTable::builtin();
        for (revision, version) in overrides {
            if Revision::named(&revision).is_none() {
                return Err(TableError::UnknownRevision(revision));
            }
            if !valid_tag(&version) {
                return Err(TableError::InvalidVersion { revision, version });
            }
            table.proxies.insert(revision, version);
        }
        Ok(table)
    }

    /// The proxy version of `revision`.
    pub fn proxy_version(&self, revision: &str) -> Option<&str> {
        self.proxies.get(revision).map(String::as_str)
    }

    /// Every revision's proxy version.
    pub fn proxy_versions(&self) -> BTreeMap<String, String> {
        self.proxies.clone()
    }
}

/// Whether `tag` can be an image tag (and so a proxy version).
fn valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Compares two versions as releases are ordered: `1.10.0` after `1.9.2`, a release
/// after its pre-releases (`1.2.0` after `1.2.0-rc.1`), numeric parts as numbers and
/// other parts as text; build metadata (`+...`) is ignored.
pub fn compare(a: &str, b: &str) -> Ordering {
    let split = |v: &str| -> (String, Option<String>) {
        let v = v.split('+').next().unwrap_or_default();
        match v.split_once('-') {
            Some((core, pre)) => (core.to_string(), Some(pre.to_string())),
            None => (v.to_string(), None),
        }
    };
    let ((core_a, pre_a), (core_b, pre_b)) = (split(a), split(b));
    compare_parts(&core_a, &core_b, "0").then_with(|| match (pre_a, pre_b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => compare_parts(&a, &b, ""),
    })
}

/// Dot-separated parts, pairwise; a missing part counts as `missing`.
fn compare_parts(a: &str, b: &str, missing: &str) -> Ordering {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(missing),
            b.get(i).copied().unwrap_or(missing),
        );
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_as_releases() {
        let ascending = [
            "1.2.0-alpha",
            "1.2.0-rc.1",
            "1.2.0-rc.2",
            "1.2.0",
            "1.2.1",
            "1.9.9",
            "1.10.0",
            "2",
        ];
        for pair in ascending.windows(2) {
            assert_eq!(compare(pair[0], pair[1]), Ordering::Less, "{pair:?}");
            assert_eq!(compare(pair[1], pair[0]), Ordering::Greater, "{pair:?}");
        }
        assert_eq!(compare("1.2", "1.2.0"), Ordering::Equal);
        assert_eq!(compare("1.2.0+build.5", "1.2.0"), Ordering::Equal);
    }

    #[test]
    fn overrides_name_known_revisions_and_tags() {
        let table =
            ChannelTable::with([("asm-managed-rapid".into(), "1.3.0".into())].into()).unwrap();
        assert_eq!(table.proxy_version("asm-managed-rapid"), Some("1.3.0"));
        let builtin = ChannelTable::builtin();
        assert_eq!(
            table.proxy_version("asm-managed"),
            builtin.proxy_version("asm-managed")
        );
        let unknown = ChannelTable::with([("beta".into(), "1".into())].into());
        assert_eq!(unknown, Err(TableError::UnknownRevision("beta".into())));
        for bad in ["", "1.0 ", "a/b", "-1", "x:y"] {
            let refused = ChannelTable::with([("asm-managed".into(), bad.into())].into());
            assert!(
                matches!(refused, Err(TableError::InvalidVersion { .. })),
                "{bad:?}"
            );
        }
    }
}
