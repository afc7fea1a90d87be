//! One Chromium process: launch, handler polling, crash detection, close and relaunch.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser as CBrowser, BrowserConfig as CConfig};
use chromiumoxide::error::CdpError;
use futures::StreamExt;
use tokio::sync::{RwLock, watch};
use tokio::task::JoinHandle;

use super::context::BrowserContext;
use super::error::{BrowserError, fmt_duration};
use super::{BrowserConfig, Sandbox};

/// Switches for an offline, root, headless run (chromiumoxide adds the `--`; it already
/// passes disable-background-networking, disable-dev-shm-usage, disable-sync, no-first-run).
const BASE_ARGS: &[&str] = &[
    "disable-gpu",
    "disable-background-networking",
    "disable-component-update",
    "no-first-run",
    "disable-sync",
    "disable-quic",
    "disable-dev-shm-usage",
    "disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "no-default-browser-check",
    "password-store=basic",
    "window-size=1280,900",
];

static PROFILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Set once Chromium exited at start with its sandbox and then started without it;
/// later `Auto` launches go straight to `--no-sandbox`.
static SANDBOX_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Whether this launch asks for Chromium's sandbox.
fn wants_sandbox(setting: Sandbox, root: bool) -> bool {
    match setting {
        Sandbox::On => true,
        Sandbox::Off => false,
        // Chromium refuses its sandbox as root ("Running as root without --no-sandbox is
        // not supported"); root in a disposable VM or CI is the usual case for that.
        Sandbox::Auto => !root && !SANDBOX_UNAVAILABLE.load(Ordering::SeqCst),
    }
}

/// The effective user id is 0 (read from /proc: no libc call needed for one number).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_uid(&s))
        .is_some_and(|uid| uid == 0)
}

/// `Uid:\treal\teffective\tsaved\tfs` in /proc/PID/status.
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
}

/// A failed start: `exited_early` when Chromium itself exited before its DevTools
/// endpoint came up (then `said` is the first line it printed).
struct StartError {
    message: String,
    exited_early: bool,
    said: String,
}

impl StartError {
    fn other(message: String) -> StartError {
        StartError {
            message,
            exited_early: false,
            said: String::new(),
        }
    }
}

/// The first non-empty line of Chromium's stderr, without its `[pid:tid:time:LEVEL:file]`
/// prefix, at most 200 characters.
fn first_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
        Some((_, rest)) => rest,
        None => line,
    };
    line.chars().take(200).collect()
}

/// Starts the Chromium process and its DevTools connection.
async fn start(
    cfg: &BrowserConfig,
    profile: &Path,
    args: &[String],
    sandboxed: bool,
) -> Result<(CBrowser, chromiumoxide::Handler), StartError> {
    let mut builder = CConfig::builder()
        .chrome_executable(&cfg.executable)
        .user_data_dir(profile)
        .viewport(None)
        .request_timeout(cfg.cdp_timeout)
        .launch_timeout(Duration::from_secs(20))
        .args(args.iter().cloned());
    if !sandboxed {
        builder = builder.no_sandbox();
    }
    if !cfg.headless {
        builder = builder.with_head();
    }
    let ccfg = builder.build().map_err(StartError::other)?;
    CBrowser::launch(ccfg).await.map_err(|e| match &e {
        CdpError::LaunchExit(_, stderr) => StartError {
            said: first_line(stderr.as_slice()),
            exited_early: true,
            message: e.to_string(),
        },
        _ => StartError::other(e.to_string()),
    })
}

/// State shared by the browser, its contexts and pages.
pub(super) struct Shared {
    pub(super) cb: RwLock<Option<CBrowser>>,
    dead: watch::Sender<bool>,
    closed: AtomicBool,
    reason: Mutex<String>,
    pub(super) cdp_timeout: Duration,
    pid: Option<u32>,
    profile: PathBuf,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    pub(super) fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }

    fn mark_dead(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_empty()
        {
            *r = reason.to_string();
        }
        self.dead.send_replace(true);
    }

    pub(super) fn dead_error(&self) -> BrowserError {
        if self.closed.load(Ordering::SeqCst) {
            return BrowserError::Closed;
        }
        let reason = self
            .reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "unknown".to_string());
        BrowserError::Crashed(reason)
    }

    /// Resolves when the browser is dead (crashed, disconnected or closed).
    pub(super) async fn died(&self) {
        let mut rx = self.dead.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Runs one DevTools call under `timeout`, failing fast with `Crashed` if the browser dies.
    pub(super) async fn guard<T, F>(
        &self,
        call: &str,
        timeout: Duration,
        fut: F,
    ) -> Result<T, BrowserError>
    where
        F: Future<Output = Result<T, CdpError>>,
    {
        if self.is_dead() {
            return Err(self.dead_error());
        }
        tokio::select! {
            biased;
            _ = self.died() => Err(self.dead_error()),
            r = tokio::time::timeout(timeout, fut) => match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(self.map_cdp(call, e)),
                Err(_) if self.is_dead() => Err(self.dead_error()),
                Err(_) => Err(BrowserError::Cdp {
                    call: call.to_string(),
                    message: format!("no answer within {}", fmt_duration(timeout)),
                }),
            }
        }
    }

    pub(super) fn map_cdp(&self, call: &str, e: CdpError) -> BrowserError {
        match e {
            CdpError::Ws(_) | CdpError::ChannelSendError(_) | CdpError::NoResponse => {
                if !self.is_dead() {
                    self.mark_dead(&format!("devtools connection lost during {call}"));
                }
                self.dead_error()
            }
            CdpError::Timeout => BrowserError::Cdp {
                call: call.to_string(),
                message: "request timed out".to_string(),
            },
            other => BrowserError::Cdp {
                call: call.to_string(),
                message: other.to_string(),
            },
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        // chromiumoxide kills the process on drop (kill_on_drop); then remove the profile.
        if let Some(mut cb) = self.cb.get_mut().take()
            && let Some(child) = cb.get_mut_child()
        {
            let _ = child.as_mut_inner().start_kill();
        }
        sweep_processes(&self.profile);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A running Chromium. Cheap to share by reference; contexts keep it alive internally.
pub struct Browser {
    pub(super) shared: Arc<Shared>,
    cfg: BrowserConfig,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("pid", &self.shared.pid)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Browser {
    /// Starts one Chromium process with a fresh temporary profile.
    pub async fn launch(cfg: BrowserConfig) -> Result<Browser, BrowserError> {
        let exe = cfg.executable.display().to_string();
        let launch_err = |reason: String| BrowserError::Launch {
            executable: exe.clone(),
            reason,
        };
        if !cfg.executable.exists() {
            return Err(launch_err("executable not found".to_string()));
        }
        let profile = std::env::temp_dir().join(format!(
            "usher-chromium-{}-{}",
            std::process::id(),
            PROFILE_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)
            .map_err(|e| launch_err(format!("cannot create profile dir: {e}")))?;

        let mut args: Vec<String> = BASE_ARGS.iter().map(|s| s.to_string()).collect();
        args.extend(
            cfg.extra_args
                .iter()
                .map(|a| a.trim_start_matches('-').to_string()),
        );
        let started = Instant::now();
        let sandboxed = wants_sandbox(cfg.sandbox, running_as_root());
        let launched = match start(&cfg, &profile, &args, sandboxed).await {
            // Chromium died at start with its sandbox: try once without. Only when that
            // works was the sandbox the cause (no user namespaces, or no chroot for want of
            // CAP_SYS_CHROOT, as in a container under a default seccomp profile).
            Err(e) if sandboxed && cfg.sandbox == Sandbox::Auto && e.exited_early => {
                let _ = std::fs::remove_dir_all(&profile);
                let _ = std::fs::create_dir_all(&profile);
                let unsandboxed = start(&cfg, &profile, &args, false).await;
                if unsandboxed.is_ok() && !SANDBOX_UNAVAILABLE.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        chromium = %e.said,
                        "chromium's sandbox cannot start here; chromium runs without it from \
                         now on (USHER_CHROME_SANDBOX=off says so explicitly; docs/operations.md)"
                    );
                }
                unsandboxed.map(|b| (b, false))
            }
            other => other.map(|b| (b, sandboxed)),
        };
        let ((mut cb, mut handler), sandboxed) = match launched {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(launch_err(e.message));
            }
        };
        let pid = cb.get_mut_child().and_then(|c| c.as_mut_inner().id());
        tracing::debug!(
            pid,
            sandboxed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "chromium launched"
        );

        let (dead_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            cb: RwLock::new(Some(cb)),
            dead: dead_tx,
            closed: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            cdp_timeout: cfg.cdp_timeout,
            pid,
            profile,
            tasks: Mutex::new(Vec::new()),
        });

        // Keep polling the handler: stopping it stops the browser. Errors are logged at
        // debug (Chromium 156 sends events chromiumoxide 0.9 cannot parse; harmless).
        let weak = Arc::downgrade(&shared);
        let handler_task = tokio::spawn(async move {
            while let Some(ev) = handler.next().await {
                if let Err(e) = ev {
                    match e {
                        CdpError::Ws(_) => {
                            tracing::debug!(error = %e, "devtools websocket error");
                            if let Some(s) = weak.upgrade() {
                                s.mark_dead("devtools websocket dropped");
                            }
                            return;
                        }
                        other => tracing::debug!(error = %other, "chromiumoxide handler error"),
                    }
                }
            }
            if let Some(s) = weak.upgrade() {
                s.mark_dead("devtools connection closed");
            }
        });

        // Watch the process itself: a SIGKILLed chromium becomes a zombie (we have not
        // reaped it yet) or disappears; either way report it within ~100 ms.
        let weak = Arc::downgrade(&shared);
        let watcher_task = tokio::spawn(async move {
            let Some(pid) = pid else { return };
            let stat = PathBuf::from(format!("/proc/{pid}/stat"));
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Some(s) = weak.upgrade() else { return };
                if s.is_dead() {
                    return;
                }
                if !process_running(&stat) {
                    s.mark_dead(&format!("chromium process {pid} exited"));
                    return;
                }
            }
        });
        if let Ok(mut t) = shared.tasks.lock() {
            t.push(handler_task);
            t.push(watcher_task);
        }
        Ok(Browser { shared, cfg })
    }

    /// False once the process died, the websocket dropped, or `close` was called.
    pub fn is_alive(&self) -> bool {
        !self.shared.is_dead()
    }

    /// Chromium's process id.
    pub fn pid(&self) -> Option<u32> {
        self.shared.pid
    }

    /// The temporary profile directory (removed on close/relaunch).
    pub fn profile_dir(&self) -> &Path {
        &self.shared.profile
    }

    /// The configuration this browser was launched with.
    pub fn config(&self) -> &BrowserConfig {
        &self.cfg
    }

    /// If the browser is dead, reaps it and launches a new one in its place (contexts of
    /// the old one keep failing with `Crashed`). Returns true when it relaunched.
    pub async fn relaunch_if_dead(&mut self) -> Result<bool, BrowserError> {
        if self.is_alive() {
            return Ok(false);
        }
        let fresh = Browser::launch(self.cfg.clone()).await?;
        let old = std::mem::replace(self, fresh);
        old.shutdown(true).await;
        Ok(true)
    }

    /// Opens an isolated browser context with one page.
    pub async fn new_context(&self) -> Result<BrowserContext, BrowserError> {
        BrowserContext::create(self.shared.clone()).await
    }

    /// Closes the browser, waits for the process and removes the profile directory.
    pub async fn close(self) -> Result<(), BrowserError> {
        self.shutdown(false).await;
        Ok(())
    }

    async fn shutdown(self, already_dead: bool) {
        let shared = self.shared;
        let timeout = shared.cdp_timeout;
        let was_dead = already_dead || shared.is_dead();
        shared.closed.store(true, Ordering::SeqCst);
        shared.mark_dead("closed");
        {
            let mut guard = shared.cb.write().await;
            if let Some(cb) = guard.as_mut() {
                if !was_dead {
                    let _ = tokio::time::timeout(timeout, cb.close()).await;
                }
                let waited = tokio::time::timeout(Duration::from_secs(5), cb.wait()).await;
                if !matches!(waited, Ok(Ok(_))) {
                    let _ = tokio::time::timeout(Duration::from_secs(5), cb.kill()).await;
                }
            }
            guard.take();
        }
        if let Ok(mut tasks) = shared.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        sweep_processes(&shared.profile);
        remove_profile(&shared.profile).await;
    }
}

/// Kills every process still using our profile directory (renderers or zygotes orphaned
/// by a crashed browser, or a browser that ignored `Browser.close`).
fn sweep_processes(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let pids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.split('\0').any(|a| a == needle).then_some(name)
        })
        .collect();
    if pids.is_empty() {
        return;
    }
    tracing::debug!(count = pids.len(), "killing leftover chromium processes");
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .args(&pids)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Chromium's helpers may still be writing for a moment after exit: retry a few times.
async fn remove_profile(dir: &Path) {
    for _ in 0..10 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    tracing::warn!(dir = %dir.display(), "could not remove chromium profile directory");
}

fn process_running(stat: &Path) -> bool {
    match std::fs::read_to_string(stat) {
        // "pid (comm) S ..." — comm may contain spaces/parens, so look after the last ')'.
        Ok(s) => match s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
        {
            Some(state) => state != "Z" && state != "X",
            None => true,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        let status =
            "Name:\tusher\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn the_sandbox_is_asked_for_unless_root_or_off() {
        assert!(wants_sandbox(Sandbox::On, true));
        assert!(!wants_sandbox(Sandbox::Off, false));
        assert!(!wants_sandbox(Sandbox::Auto, true));
        // (Auto as non-root also depends on what earlier launches found: not asserted
        // here, since tests share the process.)
    }

    #[test]
    fn chromiums_first_words_are_kept_without_their_prefix() {
        let stderr = b"\nCheck failed: sys_chroot(\"/proc/self/fdinfo/\") == 0\n[16:16:1129/115847.202227:FATAL:zygote_host_impl_linux.cc:254] Failed to receive hello message from zygote\n";
        assert_eq!(
            first_line(stderr),
            "Check failed: sys_chroot(\"/proc/self/fdinfo/\") == 0"
        );
        assert_eq!(
            first_line(
                b"[1:1:0101/000000.0:FATAL:zygote_host_impl_linux.cc(128)] No usable sandbox!\n"
            ),
            "No usable sandbox!"
        );
        assert_eq!(first_line(b""), "");
    }
}
