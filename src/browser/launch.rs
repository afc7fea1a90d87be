//! One Chromium process: launch, handler polling, crash detection (and reaping), close
//! and relaunch.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::Browser as CBrowser;
use chromiumoxide::error::CdpError;
use chromiumoxide::handler::HandlerConfig;
use futures::StreamExt;
use tokio::sync::{RwLock, watch};
use tokio::task::JoinHandle;

use super::context::BrowserContext;
use super::error::{BrowserError, fmt_duration};
use super::process::{self, StartFailure, kill_and_reap, process_running, sweep_processes};
use super::{BrowserConfig, Sandbox};

/// Switches for an offline, root, headless run, besides the defaults of
/// `process::command_line` (`--` is added).
const BASE_ARGS: &[&str] = &[
    "disable-gpu",
    "disable-component-update",
    "disable-quic",
    "disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "no-default-browser-check",
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

/// Starts the Chromium process, with or without its sandbox, up to its DevTools URL.
async fn spawn(
    cfg: &BrowserConfig,
    profile: &Path,
    tmp: &Path,
    sandboxed: bool,
) -> Result<process::Started, StartFailure> {
    let args = process::command_line(cfg.headless, sandboxed, profile, BASE_ARGS, &cfg.extra_args);
    process::start(&cfg.executable, args, tmp, Duration::from_secs(20)).await
}

/// State shared by the browser, its contexts and pages.
pub(super) struct Shared {
    pub(super) cb: RwLock<Option<CBrowser>>,
    dead: watch::Sender<bool>,
    closed: AtomicBool,
    reason: Mutex<String>,
    pub(super) cdp_timeout: Duration,
    pid: Option<u32>,
    /// The Chromium process, reaped as soon as it dies (no zombie waits for Usher's exit).
    child: Mutex<Option<std::process::Child>>,
    profile: PathBuf,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    pub(super) fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }

    /// Collects the exit status of a Chromium that has exited (no-op while it runs).
    fn reap(&self) {
        if let Ok(mut child) = self.child.lock()
            && let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            tracing::debug!(pid = self.pid, %status, "chromium reaped");
            child.take();
        }
    }

    /// True once the Chromium process has exited and been reaped.
    fn exited(&self) -> bool {
        self.reap();
        self.child.lock().map(|c| c.is_none()).unwrap_or(true)
    }

    /// SIGKILL (if still running) and reap.
    fn kill(&self) {
        if let Ok(mut child) = self.child.lock()
            && let Some(mut c) = child.take()
        {
            kill_and_reap(&mut c);
        }
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
        self.cb.get_mut().take();
        if let Ok(child) = self.child.get_mut()
            && let Some(mut c) = child.take()
        {
            kill_and_reap(&mut c);
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
        // A restarted Usher first removes what a killed one left behind.
        process::clean_stale_profiles();
        let profile = process::profile_dir(PROFILE_SEQ.fetch_add(1, Ordering::SeqCst));
        let _ = std::fs::remove_dir_all(&profile);
        let tmp = profile.join("tmp");
        std::fs::create_dir_all(&tmp)
            .map_err(|e| launch_err(format!("cannot create profile dir: {e}")))?;

        let started = Instant::now();
        let sandboxed = wants_sandbox(cfg.sandbox, running_as_root());
        let spawned = match spawn(&cfg, &profile, &tmp, sandboxed).await {
            // Chromium died at start with its sandbox: try once without. Only when that
            // works was the sandbox the cause (no user namespaces, or no chroot for want of
            // CAP_SYS_CHROOT, as in a container under a default seccomp profile).
            Err(e) if sandboxed && cfg.sandbox == Sandbox::Auto && e.exited_early => {
                sweep_processes(&profile);
                let _ = std::fs::remove_dir_all(&profile);
                let _ = std::fs::create_dir_all(&tmp);
                let unsandboxed = spawn(&cfg, &profile, &tmp, false).await;
                if unsandboxed.is_ok() && !SANDBOX_UNAVAILABLE.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        chromium = %e.said,
                        "chromium's sandbox cannot start here; chromium runs without it from \
                         now on (USHER_CHROME_SANDBOX=off says so explicitly; docs/operations.md)"
                    );
                }
                unsandboxed.map(|s| (s, false))
            }
            other => other.map(|s| (s, sandboxed)),
        };
        let (spawned, sandboxed) = match spawned {
            Ok(v) => v,
            Err(e) => {
                sweep_processes(&profile);
                let _ = std::fs::remove_dir_all(&profile);
                return Err(launch_err(e.message));
            }
        };
        let mut child = spawned.child;
        let handler_cfg = HandlerConfig {
            ignore_https_errors: true,
            ignore_invalid_messages: true,
            viewport: None,
            context_ids: Vec::new(),
            request_timeout: cfg.cdp_timeout,
            request_intercept: false,
            cache_enabled: true,
        };
        let (cb, mut handler) =
            match CBrowser::connect_with_config(spawned.ws_url.clone(), handler_cfg).await {
                Ok(v) => v,
                Err(e) => {
                    kill_and_reap(&mut child);
                    sweep_processes(&profile);
                    let _ = std::fs::remove_dir_all(&profile);
                    return Err(launch_err(format!("cannot connect to DevTools: {e}")));
                }
            };
        let pid = Some(child.id());
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
            child: Mutex::new(Some(child)),
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

        // Watch the process itself: a SIGKILLed chromium becomes a zombie until it is
        // reaped; report it within ~100 ms and reap it then, so that no zombie waits
        // for Usher's own exit (or for a relaunch that may never come).
        let weak = Arc::downgrade(&shared);
        let watcher_task = tokio::spawn(async move {
            let Some(pid) = pid else { return };
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Some(s) = weak.upgrade() else { return };
                if !process_running(pid) {
                    s.mark_dead(&format!("chromium process {pid} exited"));
                    // A killed multi-threaded process shows as a zombie before its
                    // other threads are gone, and cannot be reaped until they are.
                    if s.exited() {
                        return;
                    }
                    continue;
                }
                if s.is_dead() && s.closed.load(Ordering::SeqCst) {
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
            if let Some(cb) = guard.as_mut()
                && !was_dead
            {
                let _ = tokio::time::timeout(timeout, cb.close()).await;
            }
            guard.take();
        }
        // Give Chromium a moment to exit by itself (it flushes its profile), then kill.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !shared.exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shared.kill();
        if let Ok(mut tasks) = shared.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        sweep_processes(&shared.profile);
        remove_profile(&shared.profile).await;
    }
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
        let stderr = "\nCheck failed: sys_chroot(\"/proc/self/fdinfo/\") == 0\n[16:16:1129/115847.202227:FATAL:zygote_host_impl_linux.cc:254] Failed to receive hello message from zygote\n";
        assert_eq!(
            process::first_line(stderr),
            "Check failed: sys_chroot(\"/proc/self/fdinfo/\") == 0"
        );
        assert_eq!(
            process::first_line(
                "[1:1:0101/000000.0:FATAL:zygote_host_impl_linux.cc(128)] No usable sandbox!\n"
            ),
            "No usable sandbox!"
        );
        assert_eq!(process::first_line(""), "");
    }
}
