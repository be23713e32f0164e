//! The channel table meshd serves: the one this release carries, or with `--channels
//! FILE` some revisions' proxy versions overridden (operators pinning a version, tests
//! playing two releases). The file is YAML, revision to proxy version:
//!
//! ```yaml
//! asm-managed-rapid: 1.2.0
//! asm-managed: 1.1.3
//! ```

use fleetmesh_inject::versions::ChannelTable;
use std::collections::BTreeMap;
use std::path::Path;

/// The table of `file`, or the built-in one without it.
pub fn load(file: Option<&Path>) -> anyhow::Result<ChannelTable> {
    let Some(file) = file else {
        return Ok(ChannelTable::builtin());
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("--channels {}: {e}", file.display()))?;
    let overrides: BTreeMap<String, String> = serde_yaml_ng::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "--channels {}: {e} (expected `REVISION: PROXY_VERSION` lines)",
            file.display()
        )
    })?;
    ChannelTable::with(overrides).map_err(|e| anyhow::anyhow!("--channels {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_revisions_and_names_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("channels.yaml");
        std::fs::write(&file, "asm-managed-rapid: 2.0.0\n").unwrap();
        let table = load(Some(&file)).unwrap();
        assert_eq!(table.proxy_version("asm-managed-rapid"), Some("2.0.0"));
        assert_eq!(load(None).unwrap(), ChannelTable::builtin());
        for (text, says) in [
            ("asm-managed-beta: 1.0.0\n", "asm-managed-beta"),
            ("asm-managed: \"1 0\"\n", "image tag"),
            ("[not, a, map]\n", "REVISION: PROXY_VERSION"),
        ] {
            std::fs::write(&file, text).unwrap();
            let error = load(Some(&file)).unwrap_err().to_string();
            assert!(
                error.contains("channels.yaml") && error.contains(says),
                "{error}"
            );
        }
    }
}
