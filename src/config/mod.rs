//! Usher's configuration file: listener, database and the integrations it serves.
//!
//! The file is YAML, parsed with serde-saphyr so that every mistake is reported as
//! `file:line:col: message`. String values may use `${VAR}` to read the environment;
//! expansion happens after parsing, on values only, so an environment variable can
//! never inject YAML structure.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

/// The only format version this build understands.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: {message}")]
    Invalid {
        file: String,
        line: u64,
        col: u64,
        message: String,
    },
    #[error("{file}: {message}")]
    Semantic { file: String, message: String },
    /// Several mistakes, one per line (every one is reported, not only the first).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// Each mistake on its own.
    pub fn into_list(self) -> Vec<ConfigError> {
        match self {
            ConfigError::Several(v) => v,
            e => vec![e],
        }
    }
}

/// What a command needs from the configuration. Only `usher serve` (and `config
/// check`, which checks what `serve` would) needs the SCIM tokens; commands that run
/// jobs need the webhook secrets (they sign deliveries); the other tools need neither,
/// so an operator can run `usher jobs list` without every `${VAR}` of the server set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Serve,
    RunJobs,
    Tool,
}

thread_local! {
    /// The purpose of the parse running on this thread (parsing is synchronous), read by
    /// the token deserializers: `(scim tokens needed, webhook secrets needed)`.
    static NEEDS: Cell<(bool, bool)> = const { Cell::new((true, true)) };
}

/// Line and column (1-based) of a value in the configuration file.
pub type Pos = (u64, u64);

/// Where values are in the file, for mistakes found after parsing.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    pub database: Option<Pos>,
    pub integrations: Option<Pos>,
    pub vault_key_file: Option<Pos>,
    /// One per integration, in file order.
    pub integration: Vec<IntegrationPositions>,
}

#[derive(Debug, Clone, Default)]
pub struct IntegrationPositions {
    pub item: Option<Pos>,
    pub id: Option<Pos>,
    pub playbook: Option<Pos>,
    pub base_url: Option<Pos>,
    pub concurrency: Option<Pos>,
}

/// The file read again for positions only (unknown keys were refused by the real parse).
#[derive(Default, Deserialize)]
#[serde(default)]
struct Shadow {
    database: Option<Spanned<IgnoredAny>>,
    integrations: Option<Spanned<Vec<Spanned<ShadowIntegration>>>>,
    vault: Option<ShadowVault>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ShadowIntegration {
    id: Option<Spanned<IgnoredAny>>,
    playbook: Option<Spanned<IgnoredAny>>,
    base_url: Option<Spanned<IgnoredAny>>,
    concurrency: Option<Spanned<IgnoredAny>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ShadowVault {
    key_file: Option<Spanned<IgnoredAny>>,
}

fn pos<T>(s: &Option<Spanned<T>>) -> Option<Pos> {
    s.as_ref()
        .map(|s| (s.referenced.line(), s.referenced.column()))
}

impl Positions {
    fn read(text: &str) -> Positions {
        let Ok(shadow) = serde_saphyr::from_str::<Shadow>(text) else {
            return Positions::default();
        };
        let integration = shadow
            .integrations
            .as_ref()
            .map(|list| {
                list.value
                    .iter()
                    .map(|i| IntegrationPositions {
                        item: Some((i.referenced.line(), i.referenced.column())),
                        id: pos(&i.value.id),
                        playbook: pos(&i.value.playbook),
                        base_url: pos(&i.value.base_url),
                        concurrency: pos(&i.value.concurrency),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Positions {
            database: pos(&shadow.database),
            integrations: pos(&shadow.integrations),
            vault_key_file: shadow.vault.as_ref().and_then(|v| pos(&v.key_file)),
            integration,
        }
    }

    /// The positions of the integration at `index`.
    pub fn of(&self, index: usize) -> IntegrationPositions {
        self.integration.get(index).cloned().unwrap_or_default()
    }
}

/// A mistake at `at` when its position is known, else one naming the file.
pub fn located(file: &str, at: Option<Pos>, message: String) -> ConfigError {
    match at {
        Some((line, col)) => ConfigError::Invalid {
            file: file.to_string(),
            line,
            col,
            message,
        },
        None => ConfigError::Semantic {
            file: file.to_string(),
            message,
        },
    }
}

/// Whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version; optional, defaults to the current one.
    #[serde(default = "default_version")]
    pub version: u32,
    #[serde(default = "default_listen", deserialize_with = "de_socket_addr")]
    pub listen: SocketAddr,
    #[serde(default = "default_database", deserialize_with = "de_expanded")]
    pub database: String,
    #[serde(default)]
    pub scim: ScimSettings,
    #[serde(default)]
    pub vault: VaultSettings,
    #[serde(default)]
    pub integrations: Vec<IntegrationConfig>,
    #[serde(default)]
    pub engine: EngineSettings,
    /// Signed checkpoints of the audit trail.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Where failed jobs and recoveries are sent.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// The URL people and IdPs reach Usher at: claim links (`invites: on_claim`) and
    /// SCIM `meta.location` are built on it. Default: the request's Host (claim links:
    /// `http(s)://{listen}`).
    #[serde(default, deserialize_with = "de_opt_expanded")]
    pub public_url: Option<String>,
    /// HTTPS on `listen` (rustls). Without it Usher speaks plain HTTP (behind a proxy
    /// that terminates TLS).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// A second listener that serves `/metrics` only (an admin port); without it
    /// `/metrics` is served on `listen`.
    #[serde(default, deserialize_with = "de_opt_socket_addr")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where values are in the file (not a key of the file).
    #[serde(skip)]
    pub positions: Positions,
    /// The admin console and its REST API (`docs/console.md`).
    #[serde(default)]
    pub console: ConsoleSettings,
}

/// The certificate and key of the HTTPS listener, PEM files; read again on SIGHUP and
/// when either file changes. Relative paths are relative to the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain, leaf first.
    #[serde(deserialize_with = "de_expanded_path")]
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "de_expanded_path")]
    pub key_file: PathBuf,
}

/// The admin console: who may sign in and how long a session lasts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Sign-in with the company's OpenID provider.
    pub oidc: Option<OidcSettings>,
    /// The break-glass local account `admin` (its password set by `usher admin
    /// set-password`) may sign in. Off unless set.
    pub break_glass: bool,
    /// A session with no request for this long is over.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// A session is over this long after sign-in, however busy.
    #[serde(deserialize_with = "de_duration")]
    pub absolute_timeout: Duration,
    /// Failed sign-ins allowed per client address (and per local account name) in
    /// `sign_in_window` before further attempts are refused with 429.
    pub sign_in_attempts: u32,
    #[serde(deserialize_with = "de_duration")]
    pub sign_in_window: Duration,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            oidc: None,
            break_glass: false,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            sign_in_attempts: 10,
            sign_in_window: Duration::from_secs(15 * 60),
        }
    }
}

/// An OpenID Connect client (authorization code flow with PKCE).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer URL; its discovery document is read at start.
    #[serde(deserialize_with = "de_expanded")]
    pub issuer: String,
    #[serde(deserialize_with = "de_expanded")]
    pub client_id: String,
    /// The environment variable holding the client secret (never the secret itself).
    pub client_secret_env: Option<String>,
    /// Scopes asked for (`openid` is always asked for).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID-token claim that carries the person's groups.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim value (a group) → Usher role: owner, super_admin, admin or auditor.
    #[serde(default)]
    pub role_map: std::collections::BTreeMap<String, ConsoleRole>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn default_roles_claim() -> String {
    "groups".into()
}

/// What a person may do in the console. The first three see and act on every page;
/// an auditor reads activity and evidence only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleRole {
    Auditor,
    Admin,
    SuperAdmin,
    Owner,
}

impl ConsoleRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleRole::Auditor => "auditor",
            ConsoleRole::Admin => "admin",
            ConsoleRole::SuperAdmin => "super_admin",
            ConsoleRole::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<ConsoleRole> {
        [
            ConsoleRole::Auditor,
            ConsoleRole::Admin,
            ConsoleRole::SuperAdmin,
            ConsoleRole::Owner,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// May act (retry, cancel, re-run) and open the Integrations page.
    pub fn may_act(self) -> bool {
        self != ConsoleRole::Auditor
    }
}

/// The provisioning engine: workers, leases, retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Jobs run at once by this process (each in its own browser context). 0 = no engine
    /// (a gateway-only process).
    pub workers: usize,
    /// How long a claimed job is held without a heartbeat before another worker may take it.
    #[serde(deserialize_with = "de_duration")]
    pub lease: Duration,
    /// Runs of a job before it is `failed` (transient errors only; others fail at once).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with ±25 % jitter, up to `backoff_max`.
    #[serde(deserialize_with = "de_duration")]
    pub backoff_base: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub backoff_max: Duration,
    /// How often an idle worker looks for jobs written by other processes.
    #[serde(deserialize_with = "de_duration")]
    pub poll: Duration,
    /// In `mode: sync`, how long a SCIM write waits for its job before answering.
    #[serde(deserialize_with = "de_duration")]
    pub sync_timeout: Duration,
    /// At shutdown, how long running jobs may take to finish before they are released
    /// (back to `pending`, the attempt not spent) for another worker. Default 5 s, so
    /// that a stop finishes within Docker's and Kubernetes' default 10 s.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
    /// How often this process writes its heartbeat.
    #[serde(deserialize_with = "de_duration")]
    pub heartbeat_every: Duration,
    /// A process whose heartbeat is older than this loses its running jobs to others.
    #[serde(deserialize_with = "de_duration")]
    pub heartbeat_timeout: Duration,
    /// Where screenshots (evidence) are kept. Default: `evidence/` beside the database
    /// for SQLite, else `./evidence`.
    #[serde(deserialize_with = "de_opt_expanded_path")]
    pub evidence_dir: Option<PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            workers: 4,
            lease: Duration::from_secs(60),
            max_attempts: 6,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(600),
            poll: Duration::from_millis(500),
            sync_timeout: Duration::from_secs(50),
            shutdown_grace: Duration::from_secs(5),
            heartbeat_every: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            evidence_dir: None,
        }
    }
}

/// A webhook: JSON POSTs signed with HMAC-SHA256 of the secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(deserialize_with = "de_expanded")]
    pub url: String,
    /// The signing secret; must come from the environment (`${VAR}`).
    #[serde(deserialize_with = "de_webhook_secret")]
    pub secret: TokenFromEnv,
    /// Event types sent (default: `job.failed`, `job.recovered`, `invite.staged`).
    #[serde(default)]
    pub events: Vec<String>,
}

/// Where the vault key comes from when neither `USHER_VAULT_KEY` nor
/// `USHER_VAULT_KEY_FILE` is set. The key itself is never written in this file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    /// A file holding the key: base64 of 32 bytes (`usher vault keygen --out FILE`).
    #[serde(default, deserialize_with = "de_opt_expanded_path")]
    pub key_file: Option<PathBuf>,
}

/// Signed checkpoints of the audit trail (`docs/audit.md`). They are written when a
/// checkpoint key is set: `USHER_AUDIT_KEY` (base64 of 32 bytes), the file
/// `USHER_AUDIT_KEY_FILE` names, or `checkpoint_key_file`. The key is never written in
/// this file nor in the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// A file holding the checkpoint key: base64 of 32 bytes (`usher audit keygen`).
    #[serde(deserialize_with = "de_opt_expanded_path")]
    pub checkpoint_key_file: Option<PathBuf>,
    /// A file outside the database that every checkpoint is appended to (a JSON line).
    #[serde(deserialize_with = "de_opt_expanded_path")]
    pub checkpoint_file: Option<PathBuf>,
    /// Also write every checkpoint to the log (`audit checkpoint` lines).
    pub checkpoint_log: bool,
    /// Appends are checkpointed at most this often (a burst gets one checkpoint of its
    /// newest event).
    #[serde(deserialize_with = "de_duration")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            checkpoint_key_file: None,
            checkpoint_file: None,
            checkpoint_log: true,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Limits of the SCIM service shared by all gateways.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScimSettings {
    /// Largest request body accepted, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Largest page a list answer returns (`count` is clamped to it).
    pub max_results: usize,
    /// Requests served at once across all gateways before Usher answers 429.
    pub max_in_flight: usize,
}

impl Default for ScimSettings {
    fn default() -> Self {
        ScimSettings {
            max_body_bytes: 1024 * 1024,
            max_results: 1000,
            max_in_flight: 512,
        }
    }
}

/// One app instance connected to Usher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// The gateway id: `/scim/v2/{id}/…`.
    #[serde(deserialize_with = "de_gateway_id")]
    pub id: String,
    #[serde(deserialize_with = "de_expanded")]
    pub name: String,
    #[serde(deserialize_with = "de_expanded")]
    pub app: String,
    #[serde(deserialize_with = "de_expanded_path")]
    pub playbook: PathBuf,
    #[serde(deserialize_with = "de_expanded")]
    pub base_url: String,
    #[serde(deserialize_with = "de_expanded")]
    pub service_account: String,
    /// The bearer token, which must come from the environment (`${VAR}`).
    #[serde(default, deserialize_with = "de_token")]
    pub scim_token: Option<TokenFromEnv>,
    /// Hex SHA-256 of the bearer token, for files that must not depend on the environment.
    #[serde(default, deserialize_with = "de_token_hash")]
    pub scim_token_sha256: Option<[u8; 32]>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub invites: Invites,
    #[serde(default)]
    pub patch_response: PatchResponse,
    /// Jobs of this integration running at once, across every Usher process.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// What a SCIM DELETE does in the app.
    #[serde(default)]
    pub leavers: Leavers,
    /// Reconciliation: how often, and what a run may change (docs/reconcile.md).
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    /// The UI-change canary (docs/reconcile.md).
    #[serde(default)]
    pub canary: ScheduleSettings,
    /// The service account's password rotated on a schedule (docs/posture.md).
    #[serde(default)]
    pub rotate_password: ScheduleSettings,
    /// Whether the service account must sign in with a TOTP code (docs/posture.md).
    #[serde(default)]
    pub mfa: MfaPolicy,
    /// Single sign-on into the app through Usher (docs/sso.md).
    #[serde(default)]
    pub sso: Option<SsoSettings>,
}

/// `sso:` of an integration: people reach the app through Usher at `host`, signed in
/// by the company's OpenID provider (`console.oidc`), and Usher signs them in to the
/// app with the password it set for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoSettings {
    /// The host name (and port, if not the default) people open; requests are routed
    /// to the integration by their `Host` header.
    #[serde(deserialize_with = "de_expanded")]
    pub host: String,
    /// The ID token claim that names the person: `email` (default) or
    /// `preferred_username`, matched to the SCIM user's email or userName.
    #[serde(default)]
    pub claim: SsoClaim,
    /// How long an SSO session lasts without a request (default 8h).
    #[serde(default = "default_sso_idle", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Each person's own app password is rotated once it is this old (at least 1h;
    /// the playbook needs `set_user_password`); none: never.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub rotate_every: Option<Duration>,
}

fn default_sso_idle() -> Duration {
    Duration::from_secs(8 * 3600)
}

/// Which claim of the ID token names the person for SSO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SsoClaim {
    /// Matched (case-insensitively) to the SCIM user's emails.
    #[default]
    Email,
    /// Matched (case-insensitively) to the SCIM user's userName.
    PreferredUsername,
}

/// Whether an integration's service account must use MFA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaPolicy {
    /// Reported, not required.
    #[default]
    Optional,
    /// The posture report flags an account without a TOTP seed in the vault, or whose
    /// last sign-in was not asked for a code.
    Required,
}

/// How often a scheduled check runs for an integration (`canary`, `rotate_password`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Run on this schedule (`1h`, `30d`); none: only on demand.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub every: Option<Duration>,
}

/// How reconciliation runs for an integration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Run on this schedule (`6h`); none: only `usher reconcile`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub every: Option<Duration>,
    #[serde(default)]
    pub drift: DriftPolicy,
    #[serde(default)]
    pub orphans: OrphanPolicy,
    /// Accounts a run never touches (login, email or app id; case-insensitive), beside
    /// the service account.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// What a reconciliation does with an account that differs from the desired state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftPolicy {
    /// Record and report it.
    #[default]
    Report,
    /// Queue a job that puts it back.
    Repair,
}

/// What a reconciliation does with an account nobody provisioned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrphanPolicy {
    /// Record it as a discovered account and report it.
    #[default]
    Report,
    /// Also queue a job that deactivates it (never a delete).
    Deactivate,
}

fn default_concurrency() -> usize {
    2
}

/// What a SCIM DELETE of a user does in the app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leavers {
    /// `delete_user`.
    #[default]
    Delete,
    /// `deactivate_user`: the account stays, without access (apps that keep history).
    Deactivate,
}

/// When the IdP gets its answer for a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// At once, after the write is committed; the job runs afterwards.
    #[default]
    Async,
    /// Only when the job has finished (up to a time limit).
    Sync,
}

/// When a joiner's account is created in the app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invites {
    #[default]
    Immediate,
    OnClaim,
}

/// What a successful PATCH answers. Both are RFC 7644 §3.5.2 conforming.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchResponse {
    /// 204 No Content, as Microsoft's reference server does; Okta and Entra accept it.
    #[default]
    NoContent,
    /// 200 with the whole resource.
    Resource,
}

/// A token read from the environment; its value is only ever hashed (or, for a webhook
/// secret, used as an HMAC key). `None` when its variable is not set and the command
/// does not need it ([`Purpose`]).
#[derive(Clone)]
pub struct TokenFromEnv(Option<String>);

impl TokenFromEnv {
    /// The value, for keyed hashing only; `None` when it was not read ([`Purpose`]).
    pub fn expose_for_signing(&self) -> Option<&[u8]> {
        self.0.as_deref().map(str::as_bytes)
    }
}

impl std::fmt::Debug for TokenFromEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenFromEnv([REDACTED])")
    }
}

impl IntegrationConfig {
    /// SHA-256 of the bearer token this integration accepts.
    pub fn token_hash(&self) -> Option<[u8; 32]> {
        match (&self.scim_token, &self.scim_token_sha256) {
            (Some(TokenFromEnv(Some(t))), _) => Some(hash_token(t)),
            (Some(TokenFromEnv(None)), _) => None,
            (None, Some(h)) => Some(*h),
            (None, None) => None,
        }
    }
}

/// Tokens are long random strings, so one SHA-256 is enough to store them safely.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn default_version() -> u32 {
    CONFIG_VERSION
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_database() -> String {
    "sqlite://usher.db".to_string()
}

#[expect(
    clippy::expect_used,
    reason = "a constant pattern, compiled by the unit tests"
)]
fn var_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("static regex"))
}

/// Replaces `${VAR}` with the variable's value; `$${` escapes a literal `${`.
pub fn expand_env(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let escaped = raw.replace("$${", "\u{0}");
    let mut missing = None;
    let out = var_pattern().replace_all(&escaped, |caps: &regex::Captures<'_>| {
        let name = &caps[1];
        match lookup(name) {
            Some(v) => v,
            None => {
                missing.get_or_insert_with(|| name.to_string());
                String::new()
            }
        }
    });
    if let Some(name) = missing {
        return Err(format!("environment variable {name} is not set"));
    }
    Ok(out.replace('\u{0}', "${"))
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn de_expanded<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    expand_env(&raw, env_lookup).map_err(serde::de::Error::custom)
}

fn de_opt_expanded<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_expanded(d).map(Some)
}

fn de_opt_expanded_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    de_expanded(d).map(|s| Some(PathBuf::from(s)))
}

/// `500ms`, `30s`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.saturating_mul(60))),
        "h" => Some(Duration::from_secs(n.saturating_mul(3600))),
        "d" => Some(Duration::from_secs(n.saturating_mul(86_400))),
        _ => None,
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = de_expanded(d)?;
    parse_duration(&s).ok_or_else(|| {
        serde::de::Error::custom(format!("`{s}` is not a duration like 500ms, 30s, 10m"))
    })
}

/// Expands a secret's `${VAR}`; `Ok(None)` when a variable is unset and `needed` is false.
fn expand_secret(raw: &str, needed: bool) -> Result<Option<String>, String> {
    match expand_env(raw, env_lookup) {
        Ok(v) => Ok(Some(v)),
        Err(_) if !needed => Ok(None),
        Err(e) => Err(e),
    }
}

fn de_webhook_secret<'de, D: Deserializer<'de>>(d: D) -> Result<TokenFromEnv, D::Error> {
    let raw = String::deserialize(d)?;
    if !var_pattern().is_match(&raw) {
        return Err(serde::de::Error::custom(
            "webhook secret must not be written in the file: use ${VARIABLE}",
        ));
    }
    let needed = NEEDS.with(|n| n.get().1);
    let Some(value) = expand_secret(&raw, needed).map_err(serde::de::Error::custom)? else {
        return Ok(TokenFromEnv(None));
    };
    if value.len() < 16 {
        return Err(serde::de::Error::custom(
            "webhook secret is shorter than 16 characters",
        ));
    }
    Ok(TokenFromEnv(Some(value)))
}

fn de_expanded_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    de_expanded(d).map(PathBuf::from)
}

fn de_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = de_expanded(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!("`{s}` is not an address like 127.0.0.1:8080"))
    })
}

fn de_opt_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    de_socket_addr(d).map(Some)
}

fn de_gateway_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!(
            "integration id `{s}` must be 1-64 characters of letters, digits, `-` or `_` (it is part of the SCIM URL)"
        )))
    }
}

fn de_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TokenFromEnv>, D::Error> {
    let raw = String::deserialize(d)?;
    if !var_pattern().is_match(&raw) {
        return Err(serde::de::Error::custom(
            "scim_token must not be written in the file: use ${VARIABLE} or scim_token_sha256",
        ));
    }
    let needed = NEEDS.with(|n| n.get().0);
    let Some(value) = expand_secret(&raw, needed).map_err(serde::de::Error::custom)? else {
        return Ok(Some(TokenFromEnv(None)));
    };
    if value.len() < 16 {
        return Err(serde::de::Error::custom(
            "scim_token is shorter than 16 characters; generate one with `usher token generate`",
        ));
    }
    Ok(Some(TokenFromEnv(Some(value))))
}

fn de_token_hash<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
    let raw = de_expanded(d)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(raw.trim(), &mut out).map_err(|_| {
        serde::de::Error::custom("scim_token_sha256 must be 64 hexadecimal characters")
    })?;
    Ok(Some(out))
}

#[expect(
    clippy::expect_used,
    reason = "a constant pattern, compiled by the unit tests"
)]
fn strip_position(message: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re =
        RE.get_or_init(|| Regex::new(r"\s*at line \d+, column \d+\s*$").expect("static regex"));
    re.replace(message, "").into_owned()
}

impl Config {
    /// Reads and validates a configuration file for `usher serve`: every relative path
    /// in it (the SQLite database, playbooks, key files, evidence) is resolved against
    /// the file's folder, whatever the current folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_for(path, Purpose::Serve)
    }

    /// [`Config::load`] for a command that needs only part of the environment.
    pub fn load_for(path: &Path, purpose: Purpose) -> Result<Config, ConfigError> {
        let (config, mut problems) = Config::load_with_problems(path, purpose)?;
        match problems.len() {
            0 => Ok(config),
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Several(problems)),
        }
    }

    /// Reads a configuration file that parses, with the mistakes found after parsing
    /// (`usher config check` goes on to check the rest); an unreadable file or a YAML
    /// syntax or type error is the error.
    pub fn load_with_problems(
        path: &Path,
        purpose: Purpose,
    ) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let (mut config, problems) = Config::parse_with_problems(&file, &text, purpose)?;
        // `usher.yaml` has the parent "": the current folder, made absolute so that
        // errors name the full path.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        config.resolve_paths(&dir);
        Ok((config, problems))
    }

    /// Makes every relative path absolute against `dir` (the configuration's folder).
    pub fn resolve_paths(&mut self, dir: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        self.database = resolve_sqlite_url(&self.database, dir);
        for i in &mut self.integrations {
            join(&mut i.playbook);
        }
        for p in [
            &mut self.vault.key_file,
            &mut self.audit.checkpoint_key_file,
            &mut self.audit.checkpoint_file,
            &mut self.engine.evidence_dir,
        ]
        .into_iter()
        .flatten()
        {
            join(p);
        }
        if let Some(tls) = &mut self.tls {
            join(&mut tls.cert_file);
            join(&mut tls.key_file);
        }
    }

    /// Parses configuration text for `usher serve`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        Config::parse_for(file, text, Purpose::Serve)
    }

    /// Parses configuration text for a command with this purpose.
    pub fn parse_for(file: &str, text: &str, purpose: Purpose) -> Result<Config, ConfigError> {
        let (config, mut problems) = Config::parse_with_problems(file, text, purpose)?;
        match problems.len() {
            0 => Ok(config),
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Several(problems)),
        }
    }

    fn parse_with_problems(
        file: &str,
        text: &str,
        purpose: Purpose,
    ) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let needs = match purpose {
            Purpose::Serve => (true, true),
            Purpose::RunJobs => (false, true),
            Purpose::Tool => (false, false),
        };
        let before = NEEDS.with(|n| n.replace(needs));
        let parsed = serde_saphyr::from_str::<Config>(text);
        NEEDS.with(|n| n.set(before));
        let mut config: Config = parsed.map_err(|e| {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            ConfigError::Invalid {
                file: file.to_string(),
                line,
                col,
                message: strip_position(&e.without_snippet().to_string()),
            }
        })?;
        config.positions = Positions::read(text);
        let problems = config.problems(file);
        Ok((config, problems))
    }

    /// Every mistake the parse cannot see (types and unknown keys it can), each with
    /// its position when it is known.
    fn problems(&self, file: &str) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let semantic = |message: String| ConfigError::Semantic {
            file: file.to_string(),
            message,
        };
        if self.version != CONFIG_VERSION {
            out.push(semantic(format!(
                "version {} is not supported (this Usher reads version {CONFIG_VERSION})",
                self.version
            )));
        }
        if !(self.database.starts_with("sqlite:")
            || self.database.starts_with("postgres://")
            || self.database.starts_with("postgresql://"))
        {
            out.push(located(
                file,
                self.positions.database,
                format!(
                    "database must be sqlite://PATH or postgres://…, not `{}`",
                    redact_url(&self.database)
                ),
            ));
        } else if self.database.starts_with("postgres")
            && let Err(e) = reqwest::Url::parse(&self.database)
        {
            out.push(located(
                file,
                self.positions.database,
                format!(
                    "database URL `{}` does not parse: {e}",
                    redact_url(&self.database)
                ),
            ));
        }
        let mut seen = std::collections::BTreeMap::new();
        let mut sso_hosts = std::collections::BTreeMap::new();
        for (n, i) in self.integrations.iter().enumerate() {
            let at = self.positions.of(n);
            if let Some(first) = seen.insert(i.id.as_str(), at.id) {
                let first = first
                    .map(|(l, c)| format!(" (first at line {l}, column {c})"))
                    .unwrap_or_default();
                out.push(located(
                    file,
                    at.id,
                    format!("integration id `{}` is used twice{first}", i.id),
                ));
            }
            if i.scim_token.is_none() && i.scim_token_sha256.is_none() {
                out.push(located(
                    file,
                    at.item,
                    format!(
                        "integration `{}` has neither scim_token nor scim_token_sha256",
                        i.id
                    ),
                ));
            }
            if i.concurrency == 0 {
                out.push(located(
                    file,
                    at.concurrency,
                    format!("integration `{}`: concurrency must be at least 1", i.id),
                ));
            }
            // Schedules: each run signs in and reads the app; rotations change it.
            for (key, every, least, why) in [
                ("rotate_password.every", i.rotate_password.every, 3600, "1h"),
                (
                    "sso.rotate_every",
                    i.sso.as_ref().and_then(|s| s.rotate_every),
                    3600,
                    "1h",
                ),
                ("canary.every", i.canary.every, 60, "1m"),
                (
                    "reconcile.every",
                    i.reconcile.every,
                    60,
                    "1m (each run lists every account of the app)",
                ),
            ] {
                if every.is_some_and(|e| e < Duration::from_secs(least)) {
                    out.push(located(
                        file,
                        at.item,
                        format!("integration `{}`: {key} must be at least {why}", i.id),
                    ));
                }
            }
            if let Some(sso) = &i.sso {
                let host = sso.host.trim().to_ascii_lowercase();
                if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
                    out.push(located(
                        file,
                        at.item,
                        format!(
                            "integration `{}`: sso.host must be a host name (and port), like acme.sso.example.com",
                            i.id
                        ),
                    ));
                }
                if self.console.oidc.is_none() {
                    out.push(located(
                        file,
                        at.item,
                        format!(
                            "integration `{}`: sso needs console.oidc, the OpenID provider people sign in with",
                            i.id
                        ),
                    ));
                }
                if let Some(first) = sso_hosts.insert(host.clone(), i.id.as_str()) {
                    out.push(located(
                        file,
                        at.item,
                        format!(
                            "integration `{}`: sso.host `{host}` is also integration `{first}`'s",
                            i.id
                        ),
                    ));
                }
            }
            if let Err(why) = check_base_url(&i.base_url) {
                out.push(located(
                    file,
                    at.base_url,
                    format!("integration `{}`: base_url {why}", i.id),
                ));
            }
        }
        if self.engine.max_attempts == 0 || self.engine.lease < Duration::from_secs(2) {
            out.push(semantic(
                "engine.max_attempts must be at least 1 and engine.lease at least 2s".into(),
            ));
        }
        // A timeout of a few beats: one late beat must not hand a live process's jobs over.
        if self.engine.heartbeat_every.is_zero()
            || self.engine.heartbeat_timeout < self.engine.heartbeat_every * 3
        {
            out.push(semantic(
                "engine.heartbeat_timeout must be at least three times engine.heartbeat_every (above 0)"
                    .into(),
            ));
        }
        if self.console.idle_timeout.is_zero()
            || self.console.absolute_timeout < self.console.idle_timeout
        {
            out.push(semantic(
                "console.absolute_timeout must be at least console.idle_timeout (above 0)".into(),
            ));
        }
        if let Some(oidc) = &self.console.oidc {
            if !(oidc.issuer.starts_with("https://") || oidc.issuer.starts_with("http://")) {
                out.push(semantic(format!(
                    "console.oidc.issuer must be an http(s) URL, not `{}`",
                    oidc.issuer
                )));
            }
            if oidc.role_map.is_empty() {
                out.push(semantic(
                    "console.oidc.role_map is empty: nobody could sign in".into(),
                ));
            }
        }
        if self.scim.max_body_bytes < 1024 {
            out.push(semantic("scim.max_body_bytes must be at least 1024".into()));
        }
        if self.scim.max_results == 0 || self.scim.max_in_flight == 0 {
            out.push(semantic(
                "scim.max_results and scim.max_in_flight must be above 0".into(),
            ));
        }
        out
    }
}

/// An app's base URL: absolute http(s) with a host.
fn check_base_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "`{url}` is not an http:// or https:// URL with a host (scheme `{}`)",
            u.scheme()
        )),
        Err(e) => Err(format!("`{url}` is not a URL: {e}")),
    }
}

/// A `sqlite:` URL with a relative path made absolute against `dir`; other URLs as they are.
pub fn resolve_sqlite_url(url: &str, dir: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_string();
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" || Path::new(path).is_absolute() {
        return url.to_string();
    }
    let abs = dir.join(path);
    match query {
        Some(q) => format!("sqlite://{}?{q}", abs.display()),
        None => format!("sqlite://{}", abs.display()),
    }
}

/// Hides the password of a database URL before it is shown anywhere.
#[expect(
    clippy::expect_used,
    reason = "a constant pattern, compiled by the unit tests"
)]
pub fn redact_url(url: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(://[^:/@]*:)[^@]*@").expect("static regex"));
    re.replace(url, "${1}[REDACTED]@").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "listen: 127.0.0.1:8080
database: sqlite://usher.db
integrations:
  - id: acme
    name: Acme Admin (production)
    app: Acme Admin
    playbook: playbooks/acme.yaml
    base_url: https://admin.acme.example
    service_account: acme-admin
    scim_token: ${USHER_TEST_TOKEN_EXAMPLE}
";

    #[test]
    fn readme_example_loads_with_token_from_env() {
        // SAFETY of set_var: this variable name is used by this test only.
        unsafe { std::env::set_var("USHER_TEST_TOKEN_EXAMPLE", "0123456789abcdef0123") };
        let c = Config::parse("usher.yaml", EXAMPLE).expect("loads");
        assert_eq!(c.listen.port(), 8080);
        let i = &c.integrations[0];
        assert_eq!(i.id, "acme");
        assert_eq!(i.mode, Mode::Async);
        assert_eq!(i.invites, Invites::Immediate);
        assert_eq!(i.token_hash(), Some(hash_token("0123456789abcdef0123")));
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
    }

    #[test]
    fn missing_variable_is_reported_with_position() {
        let text = EXAMPLE.replace("USHER_TEST_TOKEN_EXAMPLE", "USHER_TEST_NOT_SET_ANYWHERE");
        let e = Config::parse("usher.yaml", &text).unwrap_err().to_string();
        assert_eq!(
            e,
            "usher.yaml:10:17: environment variable USHER_TEST_NOT_SET_ANYWHERE is not set"
        );
    }

    #[test]
    fn plain_token_in_file_is_refused() {
        let text = EXAMPLE.replace("${USHER_TEST_TOKEN_EXAMPLE}", "supersecretsupersecret");
        let e = Config::parse("usher.yaml", &text).unwrap_err().to_string();
        assert!(
            e.starts_with("usher.yaml:10:17: scim_token must not be written"),
            "{e}"
        );
        assert!(!e.contains("supersecret"));
    }

    #[test]
    fn unknown_field_and_wrong_type_give_file_line_col() {
        let e = Config::parse("c.yaml", "listen: 127.0.0.1:1\nlisten_port: 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.yaml:2:1: unknown field `listen_port`"),
            "{e}"
        );
        let e = Config::parse("c.yaml", "scim:\n  max_results: many\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yaml:2:16: "), "{e}");
        let e = Config::parse("c.yaml", "integrations:\n  - id: a/b\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yaml:2:9: integration id `a/b`"), "{e}");
    }

    #[test]
    fn token_hash_form_and_escapes() {
        let h = hex::encode(hash_token("abcdefghijklmnopqrstu"));
        let text = format!(
            "integrations:\n  - {{id: a, name: A, app: A, playbook: p.yaml, base_url: 'http://x', service_account: s, scim_token_sha256: '{h}', mode: sync, invites: on_claim}}\n"
        );
        let c = Config::parse("c.yaml", &text).expect("loads");
        assert_eq!(
            c.integrations[0].token_hash(),
            Some(hash_token("abcdefghijklmnopqrstu"))
        );
        assert_eq!(c.integrations[0].mode, Mode::Sync);
        assert_eq!(expand_env("a$${B}c", |_| None).as_deref(), Ok("a${B}c"));
        assert_eq!(
            expand_env("${X}-${X}", |_| Some("v".into())).as_deref(),
            Ok("v-v")
        );
    }

    #[test]
    fn vault_key_file_setting() {
        let c =
            Config::parse("c.yaml", "vault:\n  key_file: /etc/usher/vault.key\n").expect("loads");
        assert_eq!(
            c.vault.key_file.as_deref(),
            Some(Path::new("/etc/usher/vault.key"))
        );
        assert!(
            Config::parse("c.yaml", "")
                .expect("loads")
                .vault
                .key_file
                .is_none()
        );
        let e = Config::parse("c.yaml", "vault:\n  key: abc\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yaml:2:3: unknown field `key`"), "{e}");
    }

    #[test]
    fn duplicate_ids_and_bad_database_are_refused() {
        let one = "  - {id: a, name: A, app: A, playbook: p, base_url: 'http://x', service_account: s, scim_token_sha256: '0000000000000000000000000000000000000000000000000000000000000000'}\n";
        let e = Config::parse("c.yaml", &format!("integrations:\n{one}{one}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml:3:10: integration id `a` is used twice (first at line 2, column 10)"
        );
        let e = Config::parse("c.yaml", "database: mysql://u:pw@h/db\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml:1:11: database must be sqlite://PATH or postgres://…, not `mysql://u:[REDACTED]@h/db`"
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_position() {
        let text = "database: 'postgres://u:pw@[bad/db'\nintegrations:\n  - id: a\n    name: A\n    app: A\n    playbook: p.yaml\n    base_url: admin.example\n    service_account: s\n    concurrency: 0\n    scim_token_sha256: '0000000000000000000000000000000000000000000000000000000000000000'\n";
        let e = Config::parse("c.yaml", text).unwrap_err();
        let lines: Vec<String> = e.into_list().iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("c.yaml:1:11: database URL"),
            "{lines:?}"
        );
        assert!(!lines[0].contains("pw"), "{lines:?}");
        assert!(
            lines[1].starts_with("c.yaml:9:18: integration `a`: concurrency"),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("c.yaml:7:15: integration `a`: base_url `admin.example`"),
            "{lines:?}"
        );
    }

    #[test]
    fn schedules_have_a_least_period_and_policies_parse() {
        let base = "integrations:\n  - id: a\n    name: A\n    app: A\n    playbook: p.yaml\n    base_url: https://admin.example\n    service_account: s\n    scim_token_sha256: '0000000000000000000000000000000000000000000000000000000000000000'\n";
        let text = format!(
            "{base}    reconcile: {{ every: 30s, drift: repair, orphans: deactivate, allow: [x] }}\n    canary: {{ every: 10s }}\n    rotate_password: {{ every: 30m }}\n"
        );
        let e = Config::parse("c.yaml", &text).unwrap_err();
        let lines: Vec<String> = e.into_list().iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for key in ["rotate_password.every", "canary.every", "reconcile.every"] {
            assert!(lines.iter().any(|l| l.contains(key)), "{key}: {lines:?}");
        }
        let ok = format!(
            "{base}    reconcile: {{ every: 6h, drift: repair, orphans: deactivate, allow: [x] }}\n    canary: {{ every: 1h }}\n    rotate_password: {{ every: 30d }}\n    mfa: required\n"
        );
        let c = Config::parse("c.yaml", &ok).expect("loads");
        let i = &c.integrations[0];
        assert_eq!(i.reconcile.drift, DriftPolicy::Repair);
        assert_eq!(i.reconcile.orphans, OrphanPolicy::Deactivate);
        assert_eq!(
            i.rotate_password.every,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(i.mfa, MfaPolicy::Required);
        // Unknown keys and values are errors, not silently ignored.
        let bad = format!("{base}    reconcile: {{ drift: fix }}\n");
        assert!(Config::parse("c.yaml", &bad).is_err());
    }

    #[test]
    fn sso_needs_the_console_provider_and_a_host_of_its_own() {
        let integ = |id: &str, host: &str| {
            format!(
                "  - id: {id}\n    name: A\n    app: A\n    playbook: p.yaml\n    base_url: https://admin.example\n    service_account: s\n    scim_token_sha256: '0000000000000000000000000000000000000000000000000000000000000000'\n    sso: {{ host: {host} }}\n"
            )
        };
        let two = format!(
            "integrations:\n{}{}",
            integ("a", "Acme.SSO.example"),
            integ("b", "acme.sso.example")
        );
        let e = Config::parse("c.yaml", &two).unwrap_err();
        let lines: Vec<String> = e.into_list().iter().map(ToString::to_string).collect();
        assert!(
            lines
                .iter()
                .filter(|l| l.contains("sso needs console.oidc"))
                .count()
                == 2,
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains(
                "integration `b`: sso.host `acme.sso.example` is also integration `a`'s"
            )),
            "{lines:?}"
        );
        let console = "console:\n  oidc: { issuer: https://idp.example, client_id: usher, role_map: { admins: admin } }\n";
        let ok = format!(
            "{console}integrations:\n{}",
            integ("a", "acme.sso.example:8443")
        );
        let c = Config::parse("c.yaml", &ok).expect("loads");
        let sso = c.integrations[0].sso.as_ref().expect("sso");
        assert_eq!(sso.host, "acme.sso.example:8443");
        assert_eq!(sso.claim, SsoClaim::Email);
        assert_eq!(sso.idle_timeout, Duration::from_secs(8 * 3600));
        let fast = ok.replace(
            "acme.sso.example:8443 }",
            "acme.sso.example:8443, rotate_every: 10m }",
        );
        let e = Config::parse("c.yaml", &fast).unwrap_err().to_string();
        assert!(
            e.contains("integration `a`: sso.rotate_every must be at least 1h"),
            "{e}"
        );
        let bad = format!("{console}integrations:\n{}", integ("a", "'https://acme/x'"));
        let e = Config::parse("c.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("sso.host must be a host name"), "{e}");
    }

    #[test]
    fn relative_paths_are_resolved_against_the_config_folder() {
        let dir = Path::new("/etc/usher");
        assert_eq!(
            resolve_sqlite_url("sqlite://usher.db", dir),
            "sqlite:///etc/usher/usher.db"
        );
        assert_eq!(
            resolve_sqlite_url("sqlite:data/u.db?mode=rwc", dir),
            "sqlite:///etc/usher/data/u.db?mode=rwc"
        );
        assert_eq!(
            resolve_sqlite_url("sqlite:///var/u.db", dir),
            "sqlite:///var/u.db"
        );
        assert_eq!(
            resolve_sqlite_url("sqlite::memory:", dir),
            "sqlite::memory:"
        );
        assert_eq!(
            resolve_sqlite_url("postgres://h/db", dir),
            "postgres://h/db"
        );
        let tmp = tempfile::tempdir().expect("dir");
        let text = "database: sqlite://u.db\nvault: {key_file: keys/vault.key}\nengine: {evidence_dir: ev}\nintegrations:\n  - {id: a, name: A, app: A, playbook: p.yaml, base_url: 'http://x', service_account: s, scim_token_sha256: '0000000000000000000000000000000000000000000000000000000000000000'}\n";
        let path = tmp.path().join("usher.yaml");
        std::fs::write(&path, text).expect("write");
        let c = Config::load(&path).expect("loads");
        let d = tmp.path();
        assert_eq!(c.database, format!("sqlite://{}", d.join("u.db").display()));
        assert_eq!(c.integrations[0].playbook, d.join("p.yaml"));
        assert_eq!(c.vault.key_file, Some(d.join("keys/vault.key")));
        assert_eq!(c.engine.evidence_dir, Some(d.join("ev")));
    }

    #[test]
    fn tools_do_not_need_the_servers_secrets() {
        let text = "integrations:\n  - {id: a, name: A, app: A, playbook: p.yaml, base_url: 'http://x', service_account: s, scim_token: '${USHER_TEST_UNSET_TOKEN_X}'}\nwebhooks:\n  - {url: 'http://h', secret: '${USHER_TEST_UNSET_SECRET_X}'}\n";
        let e = Config::parse_for("c.yaml", text, Purpose::Serve).unwrap_err();
        assert!(
            e.to_string()
                .contains("USHER_TEST_UNSET_TOKEN_X is not set"),
            "{e}"
        );
        let e = Config::parse_for("c.yaml", text, Purpose::RunJobs).unwrap_err();
        assert!(
            e.to_string()
                .contains("USHER_TEST_UNSET_SECRET_X is not set"),
            "{e}"
        );
        let c = Config::parse_for("c.yaml", text, Purpose::Tool).expect("a tool loads it");
        assert_eq!(c.integrations[0].token_hash(), None);
        assert!(c.webhooks[0].secret.expose_for_signing().is_none());
        // A token written in the file is still refused.
        let plain = text.replace("'${USHER_TEST_UNSET_TOKEN_X}'", "plainplainplainplain");
        assert!(Config::parse_for("c.yaml", &plain, Purpose::Tool).is_err());
    }
}
