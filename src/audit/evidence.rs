//! Evidence files (screenshots), stored by content: `<sha256>.png`, written once, and
//! checked against the audit events that cite them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Event;

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

    /// Uses `dir` as it is, without creating it (verification).
    pub fn at(dir: impl Into<PathBuf>) -> EvidenceStore {
        EvidenceStore { dir: dir.into() }
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

    /// Checks every evidence file the events cite: it must exist and its SHA-256 must be
    /// its name. Files are read once each, however many events cite them.
    pub fn verify<'a>(&self, events: impl IntoIterator<Item = &'a Event>) -> EvidenceReport {
        let mut cited: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for e in events {
            for h in cited_hashes(&e.detail) {
                let seqs = cited.entry(h).or_default();
                if seqs.last() != Some(&e.seq) {
                    seqs.push(e.seq);
                }
            }
        }
        let mut report = EvidenceReport::default();
        for (hash, cited_by) in cited {
            let path = self.path_of(&hash);
            let problem = |p: PathBuf| EvidenceProblem {
                hash: hash.clone(),
                path: p,
                cited_by: cited_by.clone(),
            };
            match std::fs::read(&path) {
                Ok(bytes) if crate::digest::sha256_hex(&bytes) == hash => report.intact += 1,
                Ok(_) => report.altered.push(problem(path)),
                Err(_) => report.missing.push(problem(path)),
            }
        }
        report
    }
}

/// An evidence file that is not as the trail recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceProblem {
    /// The SHA-256 the events recorded.
    pub hash: String,
    pub path: PathBuf,
    /// Sequence numbers of the events that cite it.
    pub cited_by: Vec<i64>,
}

impl std::fmt::Display for EvidenceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = self.cited_by.iter().take(5).map(i64::to_string).collect();
        let more = if self.cited_by.len() > 5 { ", …" } else { "" };
        write!(
            f,
            "{} (cited by event{} {}{more})",
            self.path.display(),
            if self.cited_by.len() == 1 { "" } else { "s" },
            shown.join(", ")
        )
    }
}

/// What [`EvidenceStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceReport {
    /// Cited files present with the recorded content.
    pub intact: usize,
    /// Cited files that are gone.
    pub missing: Vec<EvidenceProblem>,
    /// Cited files whose content no longer has the recorded SHA-256.
    pub altered: Vec<EvidenceProblem>,
}

impl EvidenceReport {
    pub fn is_intact(&self) -> bool {
        self.missing.is_empty() && self.altered.is_empty()
    }
}

/// The evidence hashes an event's detail cites: every `screenshot` (a string) and
/// `screenshots` (a list) at any depth whose value is a SHA-256 in hex.
pub fn cited_hashes(detail: &Value) -> Vec<String> {
    fn is_sha256(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("screenshot", Value::String(s)) if is_sha256(s) => out.push(s.clone()),
                        ("screenshots", Value::Array(items)) => out.extend(
                            items
                                .iter()
                                .filter_map(Value::as_str)
                                .filter(|s| is_sha256(s))
                                .map(str::to_owned),
                        ),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(detail, &mut out);
    out
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

    #[test]
    fn verify_names_missing_and_altered_files_and_the_events_citing_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EvidenceStore::new(dir.path().join("ev")).expect("store");
        let a = store.put_png(&[PNG_MAGIC, b"first"].concat()).expect("put");
        let b = store
            .put_png(&[PNG_MAGIC, b"second"].concat())
            .expect("put");
        let c = store.put_png(&[PNG_MAGIC, b"third"].concat()).expect("put");
        let event = |seq: i64, detail: Value| Event {
            seq,
            at: String::new(),
            actor: "system".into(),
            event_type: "job.succeeded".into(),
            target: None,
            integration_id: None,
            detail,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let events = [
            event(
                1,
                serde_json::json!({"actions": [{"screenshots": [a, b]}], "note": "screenshot"}),
            ),
            event(
                2,
                serde_json::json!({"error": {"screenshot": c, "reason": "x"}, "screenshot": "not-a-hash"}),
            ),
            event(3, serde_json::json!({"actions": [{"screenshots": [a]}]})),
        ];
        let report = store.verify(&events);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.intact, 3);

        std::fs::remove_file(store.path_of(&b)).expect("rm");
        std::fs::write(store.path_of(&a), [PNG_MAGIC, b"edited"].concat()).expect("edit");
        let report = store.verify(&events);
        assert!(!report.is_intact());
        assert_eq!(report.intact, 1);
        assert_eq!(report.missing.len(), 1);
        assert_eq!(report.missing[0].hash, b);
        assert_eq!(report.missing[0].cited_by, vec![1]);
        assert_eq!(report.altered.len(), 1);
        assert_eq!(report.altered[0].cited_by, vec![1, 3]);
        assert_eq!(
            report.altered[0].to_string(),
            format!("{} (cited by events 1, 3)", store.path_of(&a).display())
        );
    }
}
