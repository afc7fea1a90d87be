//! A real DokuWiki (Debian's `dokuwiki` package) for the end-to-end tests.
//!
//! [`DokuWiki::start`] installs the package when it is missing (`scripts/dokuwiki.sh`),
//! copies its code into a fresh temp folder (the system install is never modified),
//! writes a private configuration (plain-file auth with ACL, superuser group `@admin`,
//! one admin account with a random password, nothing that calls the network, mail
//! captured to a file) and serves it with PHP's built-in web server on a free loopback
//! port. Every instance has its own folder, port, session cookie and PHP session
//! store, so tests may run in parallel. [`DokuWiki::users`] is the ground truth: the
//! copy's `conf/users.auth.php`.
//!
//! Self-contained: uses only std, tokio, tempfile, anyhow, reqwest, sha2 and hex.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where Debian's package puts DokuWiki's code (`lib/plugins` and `lib/tpl` are
/// symlinks into /var/lib/dokuwiki/lib; the copy follows them).
pub const DOKUWIKI_SRC: &str = "/usr/share/dokuwiki";
/// Debian's configuration folder (DokuWiki's `conf/`).
pub const DOKUWIKI_CONF: &str = "/etc/dokuwiki";

/// One account of the wiki, as `conf/users.auth.php` stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WikiUser {
    pub login: String,
    pub name: String,
    pub mail: String,
    pub groups: Vec<String>,
}

/// A running private DokuWiki. Dropping it kills the PHP server and removes the folder.
pub struct DokuWiki {
    /// `http://127.0.0.1:PORT` (DokuWiki itself is `{base_url}/doku.php`).
    pub base_url: String,
    /// Login of the superuser (`usher-admin`, member of the superuser group `admin`).
    pub admin_user: String,
    pub admin_password: String,
    /// The instance's DokuWiki tree (document root of the PHP server).
    pub root: PathBuf,
    /// Its configuration folder (`DOKU_CONF`).
    pub conf: PathBuf,
    /// Every mail DokuWiki sent (PHP's `sendmail_path` appends here), e.g. the
    /// password notification of a user created with "Notify user" ticked.
    pub mail_log: PathBuf,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

impl DokuWiki {
    /// Install if needed, set up a private copy and start it; returns once it answers.
    pub async fn start() -> anyhow::Result<DokuWiki> {
        ensure_installed().await?;
        let dir = tempfile::Builder::new()
            .prefix("usher-dokuwiki-")
            .tempdir()?;
        let base = dir.path().to_path_buf();
        // Not plain "admin": Usher redacts anything containing a secret, and every
        // admin URL of DokuWiki contains `do=admin`.
        let admin_user = "usher-admin".to_string();
        let admin_password = random_hex(12);
        let hash = bcrypt_hash(&admin_password).await?;
        let layout = tokio::task::spawn_blocking({
            let base = base.clone();
            move || prepare(&base)
        })
        .await??;
        write_users(
            &layout.conf,
            &[format!(
                "{admin_user}:{hash}:Wiki Admin:admin@usher.test:admin,user"
            )],
        )?;

        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            write_preload(&layout, port)?;
            let mut child = spawn_php(&layout, port)?;
            let base_url = format!("http://127.0.0.1:{port}");
            match wait_ready(&base_url, &mut child, &layout.server_log).await {
                Ok(()) => {
                    return Ok(DokuWiki {
                        base_url,
                        admin_user,
                        admin_password,
                        root: layout.root,
                        conf: layout.conf,
                        mail_log: layout.mail_log,
                        child: Some(child),
                        dir: Some(dir),
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("DokuWiki did not start")))
    }

    /// `{base_url}/doku.php`
    pub fn doku_url(&self) -> String {
        format!("{}/doku.php", self.base_url)
    }

    /// The accounts in the copy's `conf/users.auth.php` (ground truth), in file order.
    pub fn users(&self) -> anyhow::Result<Vec<WikiUser>> {
        let path = self.conf.join("users.auth.php");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        parse_users(&text)
    }

    /// Everything DokuWiki has mailed so far ("" when nothing).
    pub fn mails(&self) -> String {
        std::fs::read_to_string(&self.mail_log).unwrap_or_default()
    }

    /// What the PHP server printed (requests, PHP errors).
    pub fn server_log(&self) -> String {
        let p = self.conf.parent().map(|b| b.join("php-server.log"));
        p.and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Stop the server and remove the folder.
    pub async fn stop(mut self) {
        self.kill();
        if let Some(dir) = self.dir.take() {
            let _ = tokio::task::spawn_blocking(move || drop(dir)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DokuWiki {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parse `users.auth.php`: `login:passhash:name:mail:groups`, `:` escaped as `\:`
/// and `\` as `\\`; `#` lines and blank lines are comments.
pub fn parse_users(text: &str) -> anyhow::Result<Vec<WikiUser>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = vec![String::new()];
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e) => fields.last_mut().unwrap().push(e),
                    None => fields.last_mut().unwrap().push('\\'),
                },
                ':' if fields.len() < 5 => fields.push(String::new()),
                c => fields.last_mut().unwrap().push(c),
            }
        }
        if fields.len() != 5 {
            bail!("users.auth.php line {}: expected 5 fields: {line:?}", n + 1);
        }
        out.push(WikiUser {
            login: fields[0].clone(),
            name: fields[2].clone(),
            mail: fields[3].clone(),
            groups: fields[4]
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------

struct Layout {
    root: PathBuf,
    conf: PathBuf,
    data: PathBuf,
    sessions: PathBuf,
    mail_log: PathBuf,
    server_log: PathBuf,
}

fn setup_script() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("USHER_DOKUWIKI_SCRIPT") {
        candidates.push(PathBuf::from(p));
    }
    // tests/support/dokuwiki.rs -> ../../scripts/dokuwiki.sh (absolute when the module
    // is included with #[path = "/abs/…"], else relative to the workspace root).
    let here = Path::new(file!());
    if let Some(repo) = here.parent().and_then(Path::parent).and_then(Path::parent) {
        candidates.push(repo.join("scripts/dokuwiki.sh"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dokuwiki.sh"));
    candidates.into_iter().find(|p| p.is_file())
}

fn installed() -> bool {
    Path::new(DOKUWIKI_SRC).join("doku.php").is_file()
        && Command::new("php")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

/// Run scripts/dokuwiki.sh once per test binary when DokuWiki or PHP is missing.
async fn ensure_installed() -> anyhow::Result<()> {
    static ONCE: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        if installed() {
            return Ok(());
        }
        let script = setup_script().ok_or("scripts/dokuwiki.sh not found")?;
        let out = tokio::process::Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() || !installed() {
            return Err(format!(
                "{} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    })
    .await
    .clone()
    .map_err(anyhow::Error::msg)
}

fn random_hex(bytes: usize) -> String {
    let random: [u8; 32] = rand::random();
    hex::encode(&random[..bytes.min(32)])
}

/// A bcrypt hash (`$2y$10$…`) as authplain's `PassHash::verify_hash` accepts it
/// (DokuWiki's own `passcrypt` default on Debian is bcrypt too).
async fn bcrypt_hash(password: &str) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("php")
        .args([
            "-r",
            "echo password_hash($argv[1], PASSWORD_BCRYPT);",
            "--",
            password,
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running php for password_hash")?;
    let hash = String::from_utf8(out.stdout)?.trim().to_string();
    if !out.status.success() || !hash.starts_with("$2y$") {
        bail!(
            "php password_hash failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(hash)
}

/// Copy `src` to `dst`, following symlinks; skips what cannot be read (e.g. the
/// root-only `lib/plugins/testing` when not root) and server configs.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let Ok(meta) = std::fs::metadata(&from) else {
            continue;
        }; // dangling symlink
        if meta.is_dir() {
            if copy_tree(&from, &to).is_err() && !to.exists() {
                continue;
            }
        } else if meta.is_file()
            && let Err(e) = std::fs::copy(&from, &to)
            && e.kind() != std::io::ErrorKind::PermissionDenied
        {
            return Err(e);
        }
    }
    Ok(())
}

fn prepare(base: &Path) -> anyhow::Result<Layout> {
    let root = base.join("dokuwiki");
    let conf = base.join("conf");
    let data = base.join("data");
    let sessions = base.join("sessions");
    copy_tree(Path::new(DOKUWIKI_SRC), &root).context("copying /usr/share/dokuwiki")?;
    for junk in [
        ".htaccess",
        ".htaccess.dist",
        ".htaccess.dist.md5sum",
        "install.php",
    ] {
        let _ = std::fs::remove_file(root.join(junk));
    }
    // Debian's conf/, less the web-server snippets, the admin's local settings and the
    // ACL/user files (symlinks into /var/lib/dokuwiki/acl), which are written below.
    std::fs::create_dir_all(&conf)?;
    for entry in std::fs::read_dir(DOKUWIKI_CONF)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let skip = [
            "apache.conf",
            "lighttpd.conf",
            "htaccess",
            ".htaccess",
            "local.php",
            "local.protected.php",
            "acl.auth.php",
            "users.auth.php",
            "plugins.local.php",
            "preload.php",
        ];
        if skip.contains(&name.as_str()) || !entry.path().is_file() {
            continue;
        }
        std::fs::copy(entry.path(), conf.join(&name))?;
    }
    for sub in [
        "pages",
        "attic",
        "media",
        "media_attic",
        "media_meta",
        "meta",
        "cache",
        "index",
        "locks",
        "tmp",
        "log",
    ] {
        std::fs::create_dir_all(data.join(sub))?;
    }
    std::fs::create_dir_all(&sessions)?;
    let mail_log = base.join("mail.log");
    std::fs::write(&mail_log, "")?;
    let q = |p: &Path| php_str(&p.to_string_lossy());
    std::fs::write(
        conf.join("local.php"),
        format!(
            r#"<?php
// Written by Usher's tests (tests/support/dokuwiki.rs).
$conf['title'] = 'Usher test wiki';
$conf['lang'] = 'en';
$conf['savedir'] = {savedir};
$conf['useacl'] = 1;
$conf['authtype'] = 'authplain';
$conf['superuser'] = '@admin';
$conf['manager'] = '';
$conf['defaultgroup'] = 'user';
$conf['passcrypt'] = 'bcrypt';
$conf['autopasswd'] = 1;
$conf['disableactions'] = 'register';
$conf['userewrite'] = 0;
$conf['securecookie'] = 1;
$conf['mailfrom'] = 'wiki@usher.test';
// nothing that calls the network
$conf['updatecheck'] = 0;
$conf['jquerycdn'] = 0;
$conf['dnslookups'] = 0;
$conf['usewordblock'] = 0;
$conf['plugin']['popularity']['autosubmit'] = 0;
"#,
            savedir = q(&data)
        ),
    )?;
    // The extension manager talks to dokuwiki.org; popularity can submit data there.
    std::fs::write(
        conf.join("plugins.local.php"),
        "<?php\n$plugins['extension'] = 0;\n$plugins['popularity'] = 0;\n$plugins['testing'] = 0;\n",
    )?;
    std::fs::write(
        conf.join("acl.auth.php"),
        "# acl.auth.php\n# <?php exit()?>\n*\t@ALL\t1\n*\t@user\t8\n",
    )?;
    Ok(Layout {
        server_log: base.join("php-server.log"),
        root,
        conf,
        data,
        sessions,
        mail_log,
    })
}

fn write_users(conf: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut s = String::from(
        "# users.auth.php\n# <?php exit()?>\n# Don't modify the lines above\n#\n\
         # Userfile\n#\n# Format:\n#\n# login:passwordhash:Real Name:email:groups,comma,separated\n\n",
    );
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    std::fs::write(conf.join("users.auth.php"), s)?;
    Ok(())
}

/// Replaces Debian's inc/preload.php (which points DOKU_CONF at /etc/dokuwiki).
/// The session cookie name carries the port, so several instances can share one
/// browser without logging each other out.
fn write_preload(l: &Layout, port: u16) -> anyhow::Result<()> {
    let conf = format!("{}/", l.conf.display());
    std::fs::write(
        l.root.join("inc/preload.php"),
        format!(
            "<?php\n// Written by Usher's tests: this copy's own configuration.\n\
             if(!defined('DOKU_CONF')) define('DOKU_CONF', {});\n\
             if(!defined('DOKU_SESSION_NAME')) define('DOKU_SESSION_NAME', 'DokuWiki{port}');\n",
            php_str(&conf)
        ),
    )?;
    Ok(())
}

fn php_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn spawn_php(l: &Layout, port: u16) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.server_log)?;
    let child = Command::new("php")
        .arg("-d")
        .arg(format!(
            "sendmail_path=cat >> {}",
            sh_quote(&l.mail_log.to_string_lossy())
        ))
        .arg("-d")
        .arg(format!("session.save_path={}", l.sessions.display()))
        .args(["-d", "display_errors=stderr", "-d", "log_errors=0"])
        .arg("-S")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-t")
        .arg(&l.root)
        .current_dir(&l.root)
        .env_remove("PHP_CLI_SERVER_WORKERS")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting php -S")?;
    Ok(child)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

async fn wait_ready(base_url: &str, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = format!("{base_url}/doku.php?id=start");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "php -S exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(resp) = client.get(&url).send().await {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if status.is_success() && body.contains("dokuwiki") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "DokuWiki answered {status}: {}",
                    &body[..body.len().min(2000)]
                );
            }
        }
        if Instant::now() > deadline {
            bail!("DokuWiki at {base_url} did not answer within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
