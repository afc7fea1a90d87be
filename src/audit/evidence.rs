//! Evidence files (screenshots), stored by content: `<sha256>.png`, written once.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence directory {dir}: {reason}")]
    Io { dir: String, reason: String },
    #[error("not a PNG image")]
    NotPng,
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A directory of content-addressed evidence files.
#[derive(Debug, Clone)]
pub struct EvidenceStore {
    dir: PathBuf,
}

impl EvidenceStore {
    /// Uses (and creates) `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Result<EvidenceStore, EvidenceError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| EvidenceError::Io {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(EvidenceStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a PNG and returns its lower-case hex SHA-256. Storing the same image
    /// again writes nothing (the name is the content).
    pub fn put_png(&self, png: &[u8]) -> Result<String, EvidenceError> {
        if !png.starts_with(PNG_MAGIC) {
            return Err(EvidenceError::NotPng);
        }
        let hash = crate::digest::sha256_hex(png);
        let path = self.path_of(&hash);
        if path.exists() {
            return Ok(hash);
        }
        let io = |e: std::io::Error| EvidenceError::Io {
            dir: self.dir.display().to_string(),
            reason: e.to_string(),
        };
        // Write to a temporary name and rename, so a reader never sees half a file.
        let tmp = self
            .dir
            .join(format!(".{hash}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(png).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(hash)
    }

    /// Where the PNG of `hash` is (or would be).
    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.png"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn content_addressed_and_written_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EvidenceStore::new(dir.path().join("ev")).expect("store");
        let png = [PNG_MAGIC, b"fake image body"].concat();
        let h1 = store.put_png(&png).expect("put");
        assert_eq!(h1, hex::encode(Sha256::digest(&png)));
        let path = store.path_of(&h1);
        assert_eq!(std::fs::read(&path).expect("read"), png);
        let before = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let h2 = store.put_png(&png).expect("put again");
        assert_eq!(h1, h2);
        assert_eq!(
            std::fs::metadata(&path).and_then(|m| m.modified()).ok(),
            before
        );
        assert_eq!(std::fs::read_dir(store.dir()).expect("ls").count(), 1);
        assert!(matches!(
            store.put_png(b"GIF89a"),
            Err(EvidenceError::NotPng)
        ));
    }
}
