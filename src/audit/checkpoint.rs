//! Signed checkpoints of the audit trail: truncation becomes detectable.
//!
//! The hash chain shows that no event was edited, removed or reordered *between* two
//! events, but not that the newest events are still there: deleting the tail (or
//! rewriting the whole trail and recomputing every hash) leaves a consistent chain.
//! After appends, Usher signs the chain head — (sequence number, hash) — with
//! HMAC-SHA256 under a key that is not in the database (`USHER_AUDIT_KEY`,
//! `USHER_AUDIT_KEY_FILE` or `audit.checkpoint_key_file`), and writes it outside the
//! database (a file, the log, a webhook). `usher audit verify --checkpoint FILE` then
//! checks that the trail still reaches every checkpoint with the same hash.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::Event;

/// The checkpoint key itself, base64 of 32 bytes.
pub const ENV_AUDIT_KEY: &str = "USHER_AUDIT_KEY";
/// A file holding the checkpoint key (base64 of 32 bytes).
pub const ENV_AUDIT_KEY_FILE: &str = "USHER_AUDIT_KEY_FILE";

/// What a MAC covers is prefixed with this, so a checkpoint MAC is never valid as
/// anything else signed with the same key.
const DOMAIN: &str = "usher audit checkpoint v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("audit checkpoint key from {origin} {reason}")]
    BadKey { origin: String, reason: String },
    #[error("cannot read audit checkpoint key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "no audit checkpoint key: set {ENV_AUDIT_KEY} (base64 of 32 bytes) or {ENV_AUDIT_KEY_FILE}, or `audit.checkpoint_key_file` in the configuration"
    )]
    NoKey,
    #[error("{source_name}:{line}: not an audit checkpoint: {reason}")]
    Parse {
        source_name: String,
        line: usize,
        reason: String,
    },
    #[error("{0}: holds no audit checkpoint")]
    Empty(String),
    #[error(
        "checkpoint of audit event {seq} was signed with key {key_id}, not with the configured key {configured}"
    )]
    OtherKey {
        seq: i64,
        key_id: String,
        configured: String,
    },
    #[error("checkpoint of audit event {seq}: its signature does not verify (forged or altered)")]
    BadSignature { seq: i64 },
    #[error(
        "audit trail truncated: a checkpoint signed at {at} names event {seq}, but the trail ends at event {last}"
    )]
    Truncated { seq: i64, at: String, last: i64 },
    #[error(
        "audit event {seq} is not the event the checkpoint signed at {at} names (the trail was rewritten)"
    )]
    Rewritten { seq: i64, at: String },
}

/// A 256-bit checkpoint key. Zeroized on drop; Debug shows the id only.
pub struct CheckpointKey {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointKey({})", self.id)
    }
}

impl CheckpointKey {
    pub fn from_bytes(bytes: [u8; 32]) -> CheckpointKey {
        let bytes = Zeroizing::new(bytes);
        let mut h = Sha256::new();
        h.update(b"usher audit key id\0");
        h.update(bytes.as_slice());
        let id = hex::encode(&h.finalize()[..8]);
        CheckpointKey { id, bytes }
    }

    /// Base64 (padding optional, surrounding whitespace ignored) of 32 bytes; `origin`
    /// names where it came from, for errors.
    pub fn from_base64(text: &str, origin: &str) -> Result<CheckpointKey, CheckpointError> {
        let bad = |reason: String| CheckpointError::BadKey {
            origin: origin.to_owned(),
            reason,
        };
        let bytes = crate::keytext::key32_from_base64(text).map_err(|e| match e {
            crate::keytext::KeyTextError::NotBase64 => bad("is not base64".into()),
            crate::keytext::KeyTextError::WrongLength(n) => bad(format!(
                "is {n} bytes long; a checkpoint key is 32 bytes (make one with `usher audit keygen`)"
            )),
        })?;
        Ok(CheckpointKey::from_bytes(*bytes))
    }

    pub fn from_file(path: &Path) -> Result<CheckpointKey, CheckpointError> {
        let shown = path.display().to_string();
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            CheckpointError::KeyFile {
                path: shown.clone(),
                reason: e.to_string(),
            }
        })?);
        CheckpointKey::from_base64(&text, &format!("key file {shown}"))
    }

    /// `USHER_AUDIT_KEY`, else the file `USHER_AUDIT_KEY_FILE` names, else `config_file`;
    /// `Ok(None)` when none is set.
    pub fn from_env_or_config(
        config_file: Option<&Path>,
    ) -> Result<Option<CheckpointKey>, CheckpointError> {
        Self::from_sources(|n| std::env::var(n).ok(), config_file)
    }

    pub fn from_sources(
        env: impl Fn(&str) -> Option<String>,
        config_file: Option<&Path>,
    ) -> Result<Option<CheckpointKey>, CheckpointError> {
        if let Some(text) = env(ENV_AUDIT_KEY).filter(|t| !t.trim().is_empty()) {
            let text = Zeroizing::new(text);
            return CheckpointKey::from_base64(&text, ENV_AUDIT_KEY).map(Some);
        }
        if let Some(path) = env(ENV_AUDIT_KEY_FILE).filter(|t| !t.trim().is_empty()) {
            return CheckpointKey::from_file(Path::new(path.trim())).map(Some);
        }
        config_file.map(CheckpointKey::from_file).transpose()
    }

    /// Fingerprint of the key (16 hex digits), recorded in each checkpoint.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// HMAC-SHA256 over the domain and the fields (HMAC takes keys of any length, so
    /// `None` does not happen).
    fn mac(&self, seq: i64, hash: &str, at: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes.as_slice()).ok()?;
        mac.update(format!("{DOMAIN}\n{seq}\n{hash}\n{at}").as_bytes());
        Some(mac)
    }
}

/// A signed statement "the trail had event `seq` with hash `hash` at `at`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    /// When it was signed (RFC 3339 UTC).
    pub at: String,
    pub key_id: String,
    /// Lower-case hex HMAC-SHA256.
    pub mac: String,
}

impl Checkpoint {
    pub fn sign(key: &CheckpointKey, seq: i64, hash: &str, at: &str) -> Checkpoint {
        let mac = key
            .mac(seq, hash, at)
            .map(|m| hex::encode(m.finalize().into_bytes()))
            .unwrap_or_default();
        Checkpoint {
            seq,
            hash: hash.to_owned(),
            at: at.to_owned(),
            key_id: key.id.clone(),
            mac,
        }
    }

    /// Checks the signature (in constant time).
    pub fn verify(&self, key: &CheckpointKey) -> Result<(), CheckpointError> {
        if self.key_id != key.id {
            return Err(CheckpointError::OtherKey {
                seq: self.seq,
                key_id: self.key_id.clone(),
                configured: key.id.clone(),
            });
        }
        let Ok(given) = hex::decode(&self.mac) else {
            return Err(CheckpointError::BadSignature { seq: self.seq });
        };
        match key
            .mac(self.seq, &self.hash, &self.at)
            .map(|m| m.verify_slice(&given))
        {
            Some(Ok(())) => Ok(()),
            _ => Err(CheckpointError::BadSignature { seq: self.seq }),
        }
    }

    /// One line of JSON (the form every sink writes).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every checkpoint in `text`: lines of JSON as the file sink writes them, or log
    /// lines that carry one (`… audit checkpoint … {"seq":…}`); other lines are skipped
    /// when they hold no `"mac"`, and are an error when they do but do not parse.
    pub fn parse_all(source_name: &str, text: &str) -> Result<Vec<Checkpoint>, CheckpointError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let Some(start) = line.find("{\"seq\"") else {
                if line.contains("\"mac\"") {
                    return Err(CheckpointError::Parse {
                        source_name: source_name.to_owned(),
                        line: i + 1,
                        reason: "expected a JSON object starting with \"seq\"".into(),
                    });
                }
                continue;
            };
            let json = &line[start..];
            let json = json.rfind('}').map(|e| &json[..=e]).unwrap_or(json);
            let json = json.replace("\\\"", "\"");
            let cp: Checkpoint =
                serde_json::from_str(&json).map_err(|e| CheckpointError::Parse {
                    source_name: source_name.to_owned(),
                    line: i + 1,
                    reason: e.to_string(),
                })?;
            out.push(cp);
        }
        if out.is_empty() {
            return Err(CheckpointError::Empty(source_name.to_owned()));
        }
        Ok(out)
    }
}

/// Checks a trail whose chain already verified against signed checkpoints: each
/// checkpoint's signature, and that the trail still holds the event it names with the
/// same hash. Returns the highest sequence number the checkpoints vouch for.
pub fn check_trail(
    events: &[Event],
    checkpoints: &[Checkpoint],
    key: &CheckpointKey,
) -> Result<i64, CheckpointError> {
    let last = events.last().map(|e| e.seq).unwrap_or(0);
    for cp in checkpoints {
        cp.verify(key)?;
    }
    // The newest checkpoint tells how much is missing.
    if let Some(top) = checkpoints.iter().max_by_key(|c| c.seq)
        && top.seq > last
    {
        return Err(CheckpointError::Truncated {
            seq: top.seq,
            at: top.at.clone(),
            last,
        });
    }
    let mut highest = 0;
    for cp in checkpoints {
        match events.binary_search_by_key(&cp.seq, |e| e.seq) {
            Ok(i) if events[i].hash == cp.hash => highest = highest.max(cp.seq),
            _ => {
                return Err(CheckpointError::Rewritten {
                    seq: cp.seq,
                    at: cp.at.clone(),
                });
            }
        }
    }
    Ok(highest)
}

/// Where checkpoints are written.
#[derive(Default)]
pub struct CheckpointSinks {
    /// Appended to as one JSON line per checkpoint (and flushed to disk).
    pub file: Option<std::path::PathBuf>,
    /// An `audit checkpoint` line in the log.
    pub log: bool,
    /// Gets each checkpoint's JSON line (webhooks).
    pub forward: Option<std::sync::Arc<dyn Fn(String) + Send + Sync>>,
}

/// Signs chain heads and writes them to the sinks.
pub struct CheckpointWriter {
    key: CheckpointKey,
    sinks: CheckpointSinks,
    last: Option<(i64, String)>,
}

impl fmt::Debug for CheckpointWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointWriter")
            .field("key", &self.key)
            .field("file", &self.sinks.file)
            .field("log", &self.sinks.log)
            .finish()
    }
}

impl CheckpointWriter {
    pub fn new(key: CheckpointKey, sinks: CheckpointSinks) -> CheckpointWriter {
        CheckpointWriter {
            key,
            sinks,
            last: None,
        }
    }

    /// Writes a checkpoint of the head `(seq, hash)` signed at `at`, unless the last one
    /// this writer wrote names the same head. Returns what it wrote.
    pub fn write(
        &mut self,
        seq: i64,
        hash: &str,
        at: &str,
    ) -> Result<Option<Checkpoint>, std::io::Error> {
        if self
            .last
            .as_ref()
            .is_some_and(|(s, h)| *s == seq && h == hash)
        {
            return Ok(None);
        }
        let cp = Checkpoint::sign(&self.key, seq, hash, at);
        let line = cp.to_line();
        if let Some(path) = &self.sinks.file {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            f.write_all(format!("{line}\n").as_bytes())?;
            f.sync_data()?;
        }
        if self.sinks.log {
            tracing::info!(checkpoint = %line, "audit checkpoint");
        }
        if let Some(forward) = &self.sinks.forward {
            forward(line);
        }
        self.last = Some((seq, hash.to_owned()));
        Ok(Some(cp))
    }
}

static APPENDED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Called by the store whenever it appends an event: wakes the checkpoint writer.
pub fn note_append() {
    APPENDED.notify_one();
}

/// Resolves after the next [`note_append`] in this process (or at once if one came
/// since the last wait).
pub async fn appended() {
    APPENDED.notified().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{GENESIS_HASH, canonical_json, chain_hash};
    use serde_json::json;

    fn trail(n: i64) -> Vec<Event> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let at = format!("2026-01-01T00:00:{seq:02}.000Z");
                let detail = json!({ "n": seq });
                let hash = chain_hash(
                    &prev,
                    &at,
                    "system",
                    "t",
                    None,
                    None,
                    &canonical_json(&detail),
                );
                let e = Event {
                    seq,
                    at,
                    actor: "system".into(),
                    event_type: "t".into(),
                    target: None,
                    integration_id: None,
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    fn key(b: u8) -> CheckpointKey {
        CheckpointKey::from_bytes([b; 32])
    }

    #[test]
    fn signed_checkpoints_verify_and_forgeries_do_not() {
        let k = key(7);
        let cp = Checkpoint::sign(&k, 5, "ab", "2026-01-01T00:00:00.000Z");
        assert_eq!(cp.verify(&k), Ok(()));
        let mut forged = cp.clone();
        forged.seq = 4;
        assert_eq!(
            forged.verify(&k),
            Err(CheckpointError::BadSignature { seq: 4 })
        );
        let mut forged = cp.clone();
        forged.hash = "cd".into();
        assert!(forged.verify(&k).is_err());
        assert!(matches!(
            cp.verify(&key(8)),
            Err(CheckpointError::OtherKey { .. })
        ));
        // A forger who sets the key id still lacks the key.
        let mut forged = Checkpoint::sign(&key(8), 5, "ab", &cp.at);
        forged.key_id = k.id().to_owned();
        assert_eq!(
            forged.verify(&k),
            Err(CheckpointError::BadSignature { seq: 5 })
        );
    }

    #[test]
    fn a_trail_must_reach_its_checkpoints_with_the_same_hashes() {
        let k = key(1);
        let events = trail(6);
        let at = "2026-01-01T00:01:00.000Z";
        let cps = vec![
            Checkpoint::sign(&k, 3, &events[2].hash, at),
            Checkpoint::sign(&k, 6, &events[5].hash, at),
        ];
        assert_eq!(check_trail(&events, &cps, &k), Ok(6));
        // The newest two events deleted.
        assert_eq!(
            check_trail(&events[..4], &cps, &k),
            Err(CheckpointError::Truncated {
                seq: 6,
                at: at.into(),
                last: 4
            })
        );
        // The whole trail rewritten from event 2 on, with hashes recomputed.
        let mut other = trail(6);
        other[1].detail = json!({"n": 99});
        let mut prev = other[0].hash.clone();
        for e in other.iter_mut().skip(1) {
            e.prev_hash = prev.clone();
            e.hash = chain_hash(
                &prev,
                &e.at,
                &e.actor,
                &e.event_type,
                None,
                None,
                &canonical_json(&e.detail),
            );
            prev = e.hash.clone();
        }
        assert!(crate::audit::verify_chain(&other).is_ok());
        assert!(matches!(
            check_trail(&other, &cps, &k),
            Err(CheckpointError::Rewritten { seq: 3, .. })
        ));
    }

    #[test]
    fn checkpoints_parse_from_their_file_and_from_log_lines() {
        let k = key(2);
        let a = Checkpoint::sign(&k, 1, "aa", "2026-01-01T00:00:00.000Z");
        let b = Checkpoint::sign(&k, 2, "bb", "2026-01-01T00:00:01.000Z");
        let file = format!("{}\n{}\n", a.to_line(), b.to_line());
        assert_eq!(
            Checkpoint::parse_all("cp.jsonl", &file),
            Ok(vec![a.clone(), b.clone()])
        );
        let log = format!(
            "2026-01-01T00:00:00Z  INFO usher: starting\n2026-01-01T00:00:01Z  INFO usher::audit: audit checkpoint checkpoint={}\n",
            b.to_line()
        );
        assert_eq!(Checkpoint::parse_all("usher.log", &log), Ok(vec![b]));
        assert!(matches!(
            Checkpoint::parse_all("x", "nothing here\n"),
            Err(CheckpointError::Empty(_))
        ));
        assert!(matches!(
            Checkpoint::parse_all("x", "{\"seq\": 1, \"mac\": 3}\n"),
            Err(CheckpointError::Parse { line: 1, .. })
        ));
    }

    #[test]
    fn keys_come_from_the_environment_or_a_file_and_never_show() {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        let text = STANDARD.encode([9u8; 32]);
        let k = CheckpointKey::from_sources(|n| (n == ENV_AUDIT_KEY).then(|| text.clone()), None)
            .expect("key")
            .expect("some");
        assert_eq!(k.id(), key(9).id());
        assert!(!format!("{k:?}").contains(&text));
        assert!(
            CheckpointKey::from_sources(|_| None, None)
                .expect("no key is no error")
                .is_none()
        );
        let short = STANDARD.encode([1u8; 16]);
        assert!(matches!(
            CheckpointKey::from_sources(|n| (n == ENV_AUDIT_KEY).then(|| short.clone()), None),
            Err(CheckpointError::BadKey { .. })
        ));
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("audit.key");
        std::fs::write(&f, format!("{text}\n")).expect("write");
        let k2 = CheckpointKey::from_sources(|_| None, Some(&f))
            .expect("file key")
            .expect("some");
        assert_eq!(k2.id(), k.id());
    }
}
