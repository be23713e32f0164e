//! The workload's token: a file the agent reads each time it proves itself to meshd. In a
//! pod it is the projected service-account token, which the kubelet replaces well before
//! it expires (12 h here), so reading it once would fail every renewal after that.

use std::path::PathBuf;

/// A file holding a bearer token; the token itself is never logged or shown by `Debug`.
#[derive(Clone, Debug)]
pub struct TokenFile(PathBuf);

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>) -> TokenFile {
        TokenFile(path.into())
    }

    /// The token as the file holds it now, without surrounding white space.
    pub fn read(&self) -> std::io::Result<String> {
        let text = std::fs::read_to_string(&self.0).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("reading the token file {}: {e}", self.0.display()),
            )
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the token file {} is empty", self.0.display()),
            ));
        }
        Ok(token.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::TokenFile;

    #[test]
    fn reads_the_file_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let file = TokenFile::new(&path);
        assert!(file.read().unwrap_err().to_string().contains("token"));
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(file.read().unwrap(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(file.read().unwrap(), "second");
        std::fs::write(&path, " \n").unwrap();
        assert!(file.read().unwrap_err().to_string().contains("empty"));
    }
}
