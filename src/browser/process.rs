//! The Chromium process: started so that it dies with Usher, reaped when it dies first,
//! and profile folders of dead Usher processes cleaned up.
//!
//! chromiumoxide can launch Chromium itself, but it offers no hook into the child's
//! set-up, and a Chromium it started outlives a `kill -9` of Usher (its DevTools socket
//! is TCP: nothing tells it that its master is gone). Usher therefore spawns Chromium
//! itself, with `PR_SET_PDEATHSIG` = SIGKILL on Linux, and connects to the DevTools URL
//! that Chromium prints. Chromium's helpers (zygote, renderers, GPU and utility
//! processes) exit on their own when the browser process is gone.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, not the
//! process, and tokio may run a task on a thread that ends later (blocking pool): every
//! Chromium is therefore forked from one launcher thread that lives as long as Usher.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

/// Prefix of every profile folder Usher creates in the temporary directory.
const PROFILE_PREFIX: &str = "usher-chromium-";

/// What Usher passes besides its own switches (chromiumoxide's defaults when it
/// launches, after puppeteer's), so that the browser behaves as it did when
/// chromiumoxide launched it.
const DEFAULT_ARGS: &[&str] = &[
    "disable-background-networking",
    "enable-features=NetworkService,NetworkServiceInProcess",
    "disable-background-timer-throttling",
    "disable-backgrounding-occluded-windows",
    "disable-breakpad",
    "disable-client-side-phishing-detection",
    "disable-component-extensions-with-background-pages",
    "disable-default-apps",
    "disable-dev-shm-usage",
    "disable-hang-monitor",
    "disable-ipc-flooding-protection",
    "disable-popup-blocking",
    "disable-prompt-on-repost",
    "disable-renderer-backgrounding",
    "disable-sync",
    "force-color-profile=srgb",
    "metrics-recording-only",
    "no-first-run",
    "enable-automation",
    "password-store=basic",
    "use-mock-keychain",
    "lang=en_US",
    "disable-extensions",
    "remote-debugging-port=0",
];

/// Switches of a run without Chromium's sandbox (see `Sandbox`).
const NO_SANDBOX_ARGS: &[&str] = &["no-sandbox", "disable-setuid-sandbox"];

/// Switches of a headless run.
const HEADLESS_ARGS: &[&str] = &["headless", "hide-scrollbars", "mute-audio"];

/// The command line of a Chromium: `--` is added to every switch given without it.
pub(super) fn command_line(
    headless: bool,
    sandboxed: bool,
    profile: &Path,
    own: &[&str],
    extra: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = DEFAULT_ARGS.iter().map(|a| format!("--{a}")).collect();
    if headless {
        args.extend(HEADLESS_ARGS.iter().map(|a| format!("--{a}")));
    }
    if !sandboxed {
        args.extend(NO_SANDBOX_ARGS.iter().map(|a| format!("--{a}")));
    }
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend(
        own.iter()
            .map(|a| format!("--{}", a.trim_start_matches('-'))),
    );
    args.extend(
        extra
            .iter()
            .map(|a| format!("--{}", a.trim_start_matches('-'))),
    );
    args.push("about:blank".to_owned());
    args
}

type LaunchJob = Box<dyn FnOnce() + Send>;

/// The thread every Chromium is forked from (see the module comment).
fn launcher() -> &'static Mutex<mpsc::Sender<LaunchJob>> {
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<LaunchJob>>> = OnceLock::new();
    LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<LaunchJob>();
        let spawned = std::thread::Builder::new()
            .name("usher-chromium-launcher".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the Chromium launcher thread");
        }
        Mutex::new(tx)
    })
}

/// A failed start: `exited_early` when Chromium itself exited before its DevTools
/// endpoint came up (then `said` is the first line it printed, without its
/// `[pid:tid:time:LEVEL:file]` prefix).
#[derive(Debug)]
pub(super) struct StartFailure {
    pub message: String,
    pub exited_early: bool,
    pub said: String,
}

impl StartFailure {
    fn other(message: impl Into<String>) -> StartFailure {
        StartFailure {
            message: message.into(),
            exited_early: false,
            said: String::new(),
        }
    }
}

/// The first non-empty line of what Chromium printed, without its
/// `[pid:tid:time:LEVEL:file]` prefix, at most 200 characters.
pub(super) fn first_line(stderr: &str) -> String {
    let line = stderr
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

/// A started Chromium whose DevTools endpoint is known.
pub(super) struct Started {
    pub child: Child,
    pub ws_url: String,
}

/// Starts `exe` with `args` in its own process group, killed by the kernel when Usher
/// ends, and waits (at most `timeout`) for its DevTools URL. Standard error is drained
/// for the browser's whole life (a full pipe would block it).
/// Chromium's own temporary files go to `tmp` (inside its profile folder, so that they
/// go with it).
pub(super) async fn start(
    exe: &Path,
    args: Vec<String>,
    tmp: &Path,
    timeout: Duration,
) -> Result<Started, StartFailure> {
    let gone = || StartFailure::other("the launcher thread is gone");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let exe = exe.to_path_buf();
    let tmp = tmp.to_path_buf();
    let job: LaunchJob = Box::new(move || {
        let _ = tx.send(spawn_with_pdeathsig(&exe, &args, &tmp));
    });
    launcher()
        .lock()
        .map_err(|_| gone())?
        .send(job)
        .map_err(|_| gone())?;
    let mut child = rx
        .await
        .map_err(|_| gone())?
        .map_err(|e| StartFailure::other(e.to_string()))?;
    let Some(stderr) = child.stderr.take() else {
        kill_and_reap(&mut child);
        return Err(StartFailure::other(
            "no standard error to read the DevTools address from",
        ));
    };
    // Ok(DevTools URL), or Err(what Chromium printed before it exited).
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<Result<String, String>>();
    let pid = child.id();
    let reader = std::thread::Builder::new()
        .name(format!("chromium-{pid}-stderr"))
        .spawn(move || {
            let mut url_tx = Some(url_tx);
            let mut head = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = url_tx.take() {
                    match line.rsplit_once("listening on ") {
                        Some((_, ws))
                            if ws.starts_with("ws") && ws.contains("devtools/browser") =>
                        {
                            let _ = tx.send(Ok(ws.trim().to_owned()));
                            continue;
                        }
                        _ => {
                            if head.len() < 2000 {
                                head.push_str(line.trim());
                                head.push('\n');
                            }
                            url_tx = Some(tx);
                        }
                    }
                }
                tracing::trace!(pid, line = %line, "chromium stderr");
            }
            if let Some(tx) = url_tx {
                let _ = tx.send(Err(head));
            }
        });
    if let Err(e) = reader {
        kill_and_reap(&mut child);
        return Err(StartFailure::other(format!(
            "cannot read its standard error: {e}"
        )));
    }
    let exited = |printed: &str| {
        let lines: Vec<&str> = printed.lines().filter(|l| !l.is_empty()).collect();
        StartFailure {
            message: if lines.is_empty() {
                "exited before printing its DevTools address".to_owned()
            } else {
                format!(
                    "exited before printing its DevTools address: {}",
                    lines.join(" | ")
                )
            },
            exited_early: true,
            said: first_line(printed),
        }
    };
    match tokio::time::timeout(timeout, url_rx).await {
        Ok(Ok(Ok(ws_url))) => Ok(Started { child, ws_url }),
        Ok(Ok(Err(printed))) => {
            kill_and_reap(&mut child);
            Err(exited(&printed))
        }
        Ok(Err(_)) => {
            kill_and_reap(&mut child);
            Err(exited(""))
        }
        Err(_) => {
            kill_and_reap(&mut child);
            Err(StartFailure::other(format!(
                "no DevTools address within {}s",
                timeout.as_secs()
            )))
        }
    }
}

#[cfg(target_os = "linux")]
fn spawn_with_pdeathsig(exe: &Path, args: &[String], tmp: &Path) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches Usher only, which closes
        // the browser in order.
        .process_group(0);
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions
    // (prctl, getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Usher died between fork and prctl: the signal will never come.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("Usher exited during the launch"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[cfg(not(target_os = "linux"))]
fn spawn_with_pdeathsig(exe: &Path, args: &[String], tmp: &Path) -> std::io::Result<Child> {
    Command::new(exe)
        .args(args)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// SIGKILL and wait (a killed process exits at once): never leaves a zombie.
pub(super) fn kill_and_reap(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`): with the pid, it names one process even after pids wrap.
pub(super) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid …": comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The profile folder of this process's `seq`-th browser:
/// `usher-chromium-{pid}-{start ticks}-{seq}` in the temporary directory.
pub(super) fn profile_dir(seq: u64) -> PathBuf {
    let pid = std::process::id();
    let start = start_ticks(pid).unwrap_or(0);
    std::env::temp_dir().join(format!("{PROFILE_PREFIX}{pid}-{start}-{seq}"))
}

/// True when the Usher process that named profile folder `name` is gone.
fn owner_is_gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PROFILE_PREFIX) else {
        return false;
    };
    let parts: Vec<u64> = match rest.split('-').map(str::parse).collect() {
        Ok(p) => p,
        Err(_) => return false,
    };
    let Ok(pid) = u32::try_from(parts[0]) else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    match parts.len() {
        // pid-start-seq: gone unless a process with that pid and start time runs.
        3 => start_ticks(pid) != Some(parts[1]),
        // pid-seq (folders of older versions): gone when no process has the pid.
        2 => !Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

/// Removes profile folders left by Usher processes that died without closing their
/// browser (kill -9, power loss), and kills whatever still runs on them. Runs once per
/// process; returns the number of folders removed.
pub fn clean_stale_profiles() -> usize {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return 0;
    }
    clean_stale_profiles_in(&std::env::temp_dir())
}

fn clean_stale_profiles_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        // Only real folders (never a symlink planted in a shared /tmp).
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir || !owner_is_gone(&name) {
            continue;
        }
        let path = e.path();
        sweep_processes(&path);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(err) => {
                tracing::warn!(dir = %path.display(), error = %err, "cannot remove a stale Chromium profile folder")
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "removed Chromium profile folders of Usher processes that are gone"
        );
    }
    removed
}

/// Kills every process still using `profile` (helpers orphaned by a crashed browser,
/// or a browser that ignored `Browser.close`).
pub(super) fn sweep_processes(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut killed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd)
            .split('\0')
            .any(|a| a == needle)
        {
            // SAFETY: kill(2) with a positive pid and a valid signal has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    if killed > 0 {
        tracing::debug!(count = killed, "killed leftover chromium processes");
    }
}

/// False once the process has exited or is a zombie (killed, not yet reaped).
pub(super) fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
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
    fn own_start_time_is_readable_and_stable() {
        let me = std::process::id();
        let a = start_ticks(me).expect("start time of this process");
        assert_eq!(start_ticks(me), Some(a));
        assert!(!owner_is_gone(&format!("{PROFILE_PREFIX}{me}-{a}-7")));
    }

    #[test]
    fn stale_folders_are_those_of_gone_processes_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = std::process::id();
        let start = start_ticks(me).expect("start");
        // A pid that no process has: above the kernel's maximum.
        let gone = 4_194_305u64;
        let names = [
            (format!("{PROFILE_PREFIX}{me}-{start}-0"), true),
            (format!("{PROFILE_PREFIX}{gone}-5-0"), false),
            (format!("{PROFILE_PREFIX}{gone}-3"), false),
            // The same pid, another start time: a process that reused our pid is not us.
            (format!("{PROFILE_PREFIX}1-{}-0", u64::MAX), false),
            ("usher-chromium-notanumber".to_owned(), true),
            ("something-else".to_owned(), true),
        ];
        for (n, _) in &names {
            std::fs::create_dir(dir.path().join(n)).expect("mkdir");
            std::fs::write(dir.path().join(n).join("Local State"), "{}").expect("file");
        }
        let removed = clean_stale_profiles_in(dir.path());
        assert_eq!(removed, 3);
        for (n, kept) in &names {
            assert_eq!(dir.path().join(n).exists(), *kept, "{n}");
        }
    }
}
