//! Real-Chromium tests of the browser layer. One tokio runtime and one shared Browser for
//! all tests (the crash test launches its own), pages served by a local axum server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures::StreamExt;
use usher::browser::{
    Browser, BrowserConfig, BrowserError, DialogPolicy, Locator, Sandbox, SessionState, WaitState,
};
use usher::digest::sha256_hex;

const T: Duration = Duration::from_secs(5);

fn loc(s: &str) -> Locator {
    Locator::parse(s).expect("locator")
}

const OUT_JS: &str =
    "<p id=out></p><script>function out(s){document.getElementById('out').textContent=s}</script>";

fn page(body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>t</title></head><body>{body}{OUT_JS}</body></html>"
    ))
}

const LATE: &str = r#"<div id=root></div>
<script>setTimeout(() => { document.getElementById('root').innerHTML =
 '<input id=email><button id=go onclick="out(\'sent:\' + document.getElementById(\'email\').value)">Go</button>'; }, 800);</script>"#;

const STATES: &str = r#"
<style>#mover{position:absolute;top:200px;left:0;width:120px;height:40px;transition:left 0.7s linear}</style>
<button id=hid style="display:none" onclick="out('hid')">Hidden one</button>
<button id=dis disabled onclick="out('dis')">Disabled one</button>
<button id=mover onclick="out('mover')">Mover</button>
<script>
setTimeout(() => { document.getElementById('hid').style.display = 'inline'; }, 400);
setTimeout(() => { document.getElementById('dis').disabled = false; }, 400);
requestAnimationFrame(() => requestAnimationFrame(() => { document.getElementById('mover').style.left = '500px'; }));
</script>"#;

// The first time the mouse reaches #a, the page re-renders: #a moves down and another
// button takes its place, between Usher's probe of #a and its click.
const SWAP: &str = r#"
<style>button{position:absolute;left:20px;width:160px;height:40px}</style>
<button id=a style="top:100px" onclick="out('a clicked; decoy clicks: ' + window.decoys)">Save</button>
<script>
window.decoys = 0; let swapped = false;
document.getElementById('a').addEventListener('mousemove', () => {
  if (swapped) return; swapped = true;
  document.getElementById('a').style.top = '300px';
  const d = document.createElement('button'); d.id = 'decoy'; d.textContent = 'Delete';
  d.style.top = '100px'; d.onclick = () => { window.decoys++; out('decoy clicked'); };
  document.body.appendChild(d);
});
</script>"#;

const FORMS: &str = r#"
<style>tr .edit{visibility:hidden} tr:hover .edit{visibility:visible}</style>
<label for=e>Email address</label><input id=e>
<label>Full name <input id=n></label>
<span id=lbl>Department</span><input id=d aria-labelledby=lbl>
<input id=s aria-label="Search users" type=search>
<form id=f><div><button type=button id=signin onclick="out('signin')">Sign in</button></div></form>
<div role=dialog aria-labelledby=dt><h2 id=dt>Confirm removal</h2><button id=ok onclick="out('ok')">OK</button></div>
<select id=single><option value=a>Alpha</option><option value=b>Beta</option></select>
<select id=multi multiple><option value=r>Red</option><option value=g>Green</option><option value=b>Blue</option></select>
<input type=checkbox id=cb><label for=cb>Admin</label>
<div role=switch id=sw aria-checked=false tabindex=0 style="width:80px"
  onclick="this.setAttribute('aria-checked', String(this.getAttribute('aria-checked') !== 'true'))">Notify</div>
<div class=otp><span><input maxlength=1 id=d1></span><span><input maxlength=1></span><span><input maxlength=1></span>
<span><input maxlength=1></span><span><input maxlength=1></span><span><input maxlength=1></span></div>
<iframe style="width:300px;height:60px" srcdoc="<button id=fb onclick=&quot;parent.out('frame')&quot;>Frame button</button>"></iframe>
<table><tr><td>john@x</td><td><button class=edit onclick="out('edit john')">Edit</button></td></tr>
<tr><td>jane@x</td><td><button class=edit onclick="out('edit jane')">Edit</button></td></tr></table>
<script>
function otp(){ return Array.from(document.querySelectorAll('.otp input')).map(i => i.value).join(''); }
</script>"#;

const CONFIRM: &str = r#"<button id=del onclick="document.getElementById('r').textContent = confirm('Delete jane?') ? 'deleted' : 'kept'">Delete</button>
<button id=al onclick="alert('hello'); document.getElementById('r').textContent='after alert'">Alert</button>
<button id=pr onclick="document.getElementById('r').textContent = 'name:' + prompt('Name?')">Prompt</button>
<p id=r></p>"#;

const NAV: &str = r#"<a id=next href="/slow-next">Next page</a>
<form action="/slow-next" method=get><input name=q id=q><button id=sub>Search</button></form>"#;

async fn serve() -> String {
    {
        let app = Router::new()
            .route("/late", get(|| async { page(LATE) }))
            .route("/states", get(|| async { page(STATES) }))
            .route("/forms", get(|| async { page(FORMS) }))
            .route("/swap", get(|| async { page(SWAP) }))
            .route("/confirm", get(|| async { page(CONFIRM) }))
            .route("/nav", get(|| async { page(NAV) }))
            .route(
                "/slow-next",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    page("<h1>Welcome to page two</h1>")
                }),
            )
            .route(
                "/boom",
                get(|| async {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        page("<h1>Internal error</h1>"),
                    )
                }),
            )
            .route(
                "/login",
                get(|| async {
                    (
                        [(
                            header::SET_COOKIE,
                            "sid=s3cr3t; Path=/; HttpOnly; Max-Age=3600",
                        )],
                        page("<h1>logged in</h1>"),
                    )
                }),
            )
            .route(
                "/whoami",
                get(|headers: HeaderMap| async move {
                    let cookie = headers
                        .get(header::COOKIE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let who = if cookie.contains("sid=s3cr3t") {
                        "user jane"
                    } else {
                        "anonymous"
                    };
                    page(&format!("<h1 id=who>{who}</h1>")).into_response()
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}

async fn waits_for_late_hidden_disabled_and_moving_elements(b: &Browser, base: &str) {
    {
        let t0 = Instant::now();
        let ctx = b.new_context().await.expect("context");
        eprintln!("timing: new context {:?}", t0.elapsed());
        let p = ctx.page();

        let t0 = Instant::now();
        p.goto(&format!("{base}/late"), T).await.expect("goto");
        eprintln!("timing: goto {:?}", t0.elapsed());
        p.fill(&loc("#email"), "a@b.c", T).await.expect("fill late");
        // `#email` is added by a timer 600 ms after the page loads: a fill that did not wait
        // for it would have failed above with "not found".
        let t1 = Instant::now();
        p.fill(&loc("#email"), "jane@example.com", T)
            .await
            .expect("refill");
        p.click(&loc("text=Go"), T).await.expect("click");
        eprintln!("timing: fill+click {:?}", t1.elapsed());
        p.expect_text(Some(&loc("#out")), "sent:jane@example.com", T)
            .await
            .expect("filled value replaced the old one");

        p.goto(&format!("{base}/states"), T)
            .await
            .expect("goto states");
        p.click(&loc("#hid"), T).await.expect("hidden then visible");
        p.expect_text(Some(&loc("#out")), "hid", T)
            .await
            .expect("hid");
        p.click(&loc("role=button[name='Disabled one']"), T)
            .await
            .expect("disabled then enabled");
        p.expect_text(Some(&loc("#out")), "dis", T)
            .await
            .expect("dis");
        p.goto(&format!("{base}/states"), T).await.expect("reload");
        let t0 = Instant::now();
        p.click(&loc("#mover"), T).await.expect("moving");
        p.expect_text(Some(&loc("#out")), "mover", T)
            .await
            .expect("mover clicked");
        eprintln!("moving click took {:?}", t0.elapsed());
        // a click that did not wait for the transition would have missed the moving button

        // A re-render between the probe and the click: the click that would land on the
        // other button is swallowed, and #a is found and clicked where it now is.
        p.goto(&format!("{base}/swap"), T).await.expect("goto swap");
        p.click(&loc("#a"), T).await.expect("click after re-render");
        p.expect_text(Some(&loc("#out")), "a clicked; decoy clicks: 0", T)
            .await
            .expect("the click reached #a and never the button that took its place");
        ctx.close().await.expect("close ctx");
    }
}

async fn resolves_label_role_text_chains_and_form_controls(b: &Browser, base: &str) {
    {
        let ctx = b.new_context().await.expect("context");
        let p = ctx.page();
        p.goto(&format!("{base}/forms"), T).await.expect("goto");

        // label= via for=, wrapping label, aria-labelledby, aria-label
        for (l, id) in [
            ("label=Email address", "e"),
            ("label=full name", "n"),
            ("label=Department", "d"),
            ("label=\"Search users\"", "s"),
            ("role=textbox[name='department']", "d"),
            ("role=textbox[name=\"Search users\" exact]", "s"),
            ("role=dialog[name='confirm removal']", ""),
            ("role=heading[level=2]", "dt"),
            ("text=Sign in", "signin"),
            ("role=button[name='Sign in']", "signin"),
            ("role=checkbox[name=Admin]", "cb"),
            ("role=switch", "sw"),
            ("role=combobox", "single"),
            ("role=listbox", "multi"),
            ("role=dialog >> role=button", "ok"),
            ("button.edit >> nth=1", ""),
            ("//input[@id='n']", "n"),
        ] {
            assert_eq!(p.count(&loc(l)).await.expect("count"), 1, "{l}");
            let got = p.attribute(&loc(l), "id", T).await.expect("attr");
            if !id.is_empty() {
                assert_eq!(got.as_deref(), Some(id), "{l}");
            }
        }
        assert_eq!(
            p.count(&loc("text=\"sign in\"")).await.expect("count"),
            0,
            "exact is case-sensitive"
        );
        p.fill(&loc("label=Email address"), "x@y.z", T)
            .await
            .expect("fill label");
        assert_eq!(p.text(&loc("#e"), T).await.expect("text"), "x@y.z");

        // text= prefers the innermost element: the button, not the form or its div
        p.click(&loc("text=Sign in"), T).await.expect("click text");
        p.expect_text(Some(&loc("#out")), "signin", T)
            .await
            .expect("signin");

        // chain scoped to a row, Edit buttons only visible on hover
        let t = Instant::now();
        p.click(&loc("tr:has-text('jane@x') >> text=Edit"), T)
            .await
            .expect("row edit");
        p.expect_text(Some(&loc("#out")), "edit jane", T)
            .await
            .expect("edit jane");
        eprintln!("hover-revealed row click {:?}", t.elapsed());
        assert_eq!(
            p.all_texts(&loc("tr >> nth=0")).await.expect("texts").len(),
            1
        );
        // rendered text: the hovered row shows its Edit button, the other row does not
        assert_eq!(
            p.all_texts(&loc("tr")).await.expect("texts"),
            vec!["john@x", "jane@x Edit"]
        );

        // same-origin iframe: matched when the main document has no match
        p.click(&loc("text=Frame button"), T)
            .await
            .expect("iframe click");
        p.expect_text(Some(&loc("#out")), "frame", T)
            .await
            .expect("frame clicked");

        // select single / multiple
        p.select(&loc("#single"), &["Beta"], T)
            .await
            .expect("select");
        assert_eq!(p.text(&loc("#single"), T).await.expect("v"), "b");
        p.select(
            &loc("label=nothing >> nth=0"),
            &["x"],
            Duration::from_millis(200),
        )
        .await
        .expect_err("missing select");
        p.select(&loc("#multi"), &["r", "Blue"], T)
            .await
            .expect("multi");
        let sel = p
            .all_texts(&loc("#multi option:checked"))
            .await
            .expect("selected");
        assert_eq!(sel, vec!["Red", "Blue"]);
        let e = p
            .select(&loc("#single"), &["Gamma"], Duration::from_millis(300))
            .await
            .expect_err("no such option");
        assert!(e.to_string().contains("no option \"Gamma\""), "{e}");

        // checkbox and ARIA switch
        p.check(&loc("label=Admin"), T).await.expect("check");
        p.check(&loc("label=Admin"), T)
            .await
            .expect("check again is a no-op");
        assert!(p.exists_now(&loc("#cb:checked")).await.expect("checked"));
        p.uncheck(&loc("#cb"), T).await.expect("uncheck");
        assert!(!p.exists_now(&loc("#cb:checked")).await.expect("unchecked"));
        p.check(&loc("role=switch[name=Notify]"), T)
            .await
            .expect("switch");
        assert_eq!(
            p.attribute(&loc("#sw"), "aria-checked", T)
                .await
                .expect("attr")
                .as_deref(),
            Some("true")
        );

        // six one-digit TOTP boxes
        p.fill(&loc("#d1"), "123456", T).await.expect("totp");
        let expr_loc = loc(".otp input >> nth=5");
        assert_eq!(p.text(&expr_loc, T).await.expect("last box"), "6");
        assert_eq!(
            p.all_texts(&loc(".otp input"))
                .await
                .expect("boxes")
                .concat(),
            "123456"
        );

        // keyboard
        p.fill(&loc("#n"), "Jane", T).await.expect("fill");
        p.press(Some(&loc("#n")), "Tab", T).await.expect("tab");
        p.press(None, "Escape", T).await.expect("escape");
        ctx.close().await.expect("close");
    }
}

async fn dialogs_are_handled_and_never_block(b: &Browser, base: &str) {
    {
        let ctx = b.new_context().await.expect("context");
        let p = ctx.page();
        p.goto(&format!("{base}/confirm"), T).await.expect("goto");
        p.arm_dialog(DialogPolicy::Accept);
        p.click(&loc("#del"), T).await.expect("click accept");
        p.expect_text(Some(&loc("#r")), "deleted", T)
            .await
            .expect("accepted");
        assert_eq!(p.last_dialog_message().as_deref(), Some("Delete jane?"));
        p.arm_dialog(DialogPolicy::Dismiss);
        p.click(&loc("#del"), T).await.expect("click dismiss");
        p.expect_text(Some(&loc("#r")), "kept", T)
            .await
            .expect("dismissed");
        // nothing armed: dismissed by default, never hangs
        p.click(&loc("#del"), T).await.expect("unarmed confirm");
        p.expect_text(Some(&loc("#r")), "kept", T)
            .await
            .expect("default dismiss");
        p.click(&loc("#al"), T).await.expect("alert");
        p.expect_text(Some(&loc("#r")), "after alert", T)
            .await
            .expect("alert closed");
        assert_eq!(p.last_dialog_message().as_deref(), Some("hello"));
        p.arm_dialog(DialogPolicy::AcceptWithText("Jane".into()));
        p.click(&loc("#pr"), T).await.expect("prompt");
        p.expect_text(Some(&loc("#r")), "name:Jane", T)
            .await
            .expect("prompt text");
        ctx.close().await.expect("close");
    }
}

async fn navigation_waits_and_errors(b: &Browser, base: &str) {
    {
        let ctx = b.new_context().await.expect("context");
        let p = ctx.page();
        p.goto(&format!("{base}/nav"), T).await.expect("goto");
        let t0 = Instant::now();
        p.click(&loc("text=Next page"), T)
            .await
            .expect("click link");
        eprintln!("click + navigation to a 300 ms page {:?}", t0.elapsed());
        assert!(
            p.url().await.expect("url").ends_with("/slow-next"),
            "click waited for the new page"
        );
        p.expect_text(None, "welcome to page two", Duration::from_millis(200))
            .await
            .expect("new page text right away");
        p.expect_url("/slow-next$", T).await.expect("url");

        p.goto(&format!("{base}/nav"), T).await.expect("goto again");
        p.fill(&loc("#q"), "abc", T).await.expect("fill");
        p.press(Some(&loc("#q")), "Enter", T)
            .await
            .expect("submit by Enter");
        assert!(p.url().await.expect("url").contains("/slow-next?q=abc"));

        match p.goto(&format!("{base}/boom"), T).await {
            Err(BrowserError::Navigation {
                status: Some(500), ..
            }) => {}
            other => panic!("expected HTTP 500 navigation error, got {other:?}"),
        }
        // `goto: {url, allow_status: [500]}`: that status loads like a page.
        p.goto_allowing(&format!("{base}/boom"), T, &[500])
            .await
            .expect("an allowed status loads");
        assert!(p.url().await.expect("url").ends_with("/boom"));
        match p.goto("http://127.0.0.1:9/", T).await {
            Err(BrowserError::Navigation {
                status: None,
                reason,
                ..
            }) => {
                assert!(reason.starts_with("net::ERR_"), "{reason}")
            }
            other => panic!("expected net error, got {other:?}"),
        }
        ctx.close().await.expect("close");
    }
}

async fn timeout_errors_name_locator_and_what_was_seen(b: &Browser, base: &str) {
    {
        let ctx = b.new_context().await.expect("context");
        let p = ctx.page();
        p.goto(&format!("{base}/forms"), T).await.expect("goto");
        let short = Duration::from_millis(300);
        let e = p
            .click(&loc("text=Send invite"), short)
            .await
            .expect_err("missing");
        let msg = e.to_string();
        eprintln!("{msg}");
        assert!(
            msg.starts_with("timed out after 300ms waiting for text=Send invite to be visible"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("at {base}/forms: 0 matches")),
            "{msg}"
        );
        let e = p.click(&loc("button.edit"), short).await.expect_err("two");
        assert!(e.to_string().ends_with(": 2 matches"), "{e}");
        let e = p
            .fill(&loc("#e"), "hunter2-secret", Duration::from_millis(1))
            .await;
        if let Err(e) = e {
            assert!(!e.to_string().contains("hunter2"), "value leaked: {e}");
        }
        p.goto(&format!("{base}/states"), T).await.expect("goto");
        let e = p
            .fill(&loc("#dis"), "pw-secret-value", short)
            .await
            .expect_err("not editable");
        let m = e.to_string();
        assert!(m.contains("#dis") && !m.contains("pw-secret-value"), "{m}");
        let e = p
            .wait_for(&loc("#nothing"), WaitState::Visible, short)
            .await
            .expect_err("none");
        assert!(e.to_string().ends_with("0 matches"));
        p.expect_hidden(&loc("#nothing"), short)
            .await
            .expect("hidden");
        // Unbalanced brackets are caught by the parser; other bad CSS by the page.
        let parse = Locator::parse("div[[").expect_err("unbalanced");
        assert_eq!(parse.message, "unclosed `[`");
        let e = p
            .click(&loc("div:no-such-pseudo"), short)
            .await
            .expect_err("bad css");
        assert!(matches!(e, BrowserError::InvalidSelector { .. }), "{e}");
        ctx.close().await.expect("close");
    }
}

async fn contexts_isolate_cookies_and_sessions_restore(b: &Browser, base: &str) {
    {
        let a = b.new_context().await.expect("a");
        let other = b.new_context().await.expect("b");
        a.page()
            .goto(&format!("{base}/login"), T)
            .await
            .expect("login");
        a.page()
            .goto(&format!("{base}/whoami"), T)
            .await
            .expect("whoami");
        a.page()
            .expect_text(Some(&loc("#who")), "user jane", T)
            .await
            .expect("a logged in");
        other
            .page()
            .goto(&format!("{base}/whoami"), T)
            .await
            .expect("whoami b");
        other
            .page()
            .expect_text(Some(&loc("#who")), "anonymous", T)
            .await
            .expect("b not");

        let saved = a.cookies().await.expect("cookies");
        assert_eq!(saved.cookies.len(), 1);
        assert!(
            !format!("{saved:?}").contains("s3cr3t"),
            "Debug redacts values"
        );
        let json = serde_json::to_string(&saved).expect("json");
        let restored: SessionState = serde_json::from_str(&json).expect("parse");
        let c = b.new_context().await.expect("c");
        c.set_cookies(&restored).await.expect("set");
        c.page()
            .goto(&format!("{base}/whoami"), T)
            .await
            .expect("whoami c");
        c.page()
            .expect_text(Some(&loc("#who")), "user jane", T)
            .await
            .expect("restored");
        for ctx in [a, other, c] {
            ctx.close().await.expect("close");
        }
    }
}

async fn screenshot_is_png(b: &Browser, base: &str) {
    {
        let ctx = b.new_context().await.expect("context");
        let p = ctx.page();
        p.goto(&format!("{base}/forms"), T).await.expect("goto");
        let t0 = Instant::now();
        let png = p.screenshot().await.expect("screenshot");
        eprintln!(
            "timing: screenshot {:?} ({} bytes)",
            t0.elapsed(),
            png.len()
        );
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 2000);
        assert_eq!(sha256_hex(&png).len(), 64);
        ctx.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_is_detected_fast_and_relaunch_works() {
    {
        let base = serve().await;
        let mut b = Browser::launch(BrowserConfig::default())
            .await
            .expect("launch");
        let ctx = b.new_context().await.expect("context");
        ctx.page()
            .goto(&format!("{base}/forms"), T)
            .await
            .expect("goto");
        let pid = b.pid().expect("pid");
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let t0 = Instant::now();
        let e = ctx
            .page()
            .click(&loc("#signin"), Duration::from_secs(20))
            .await
            .expect_err("dead");
        eprintln!("crash detected after {:?}: {e}", t0.elapsed());
        assert!(e.is_crash(), "{e}");
        // Found by the dead connection, not by running out the click's 20 s timeout (a wide
        // margin: this is not a speed measurement).
        assert!(t0.elapsed() < Duration::from_secs(15));
        assert!(!b.is_alive());
        // Reaped at once, not left a zombie until a relaunch or Usher's exit.
        let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        for _ in 0..50 {
            if !proc_dir.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !proc_dir.exists(),
            "killed chromium {pid} is still in the process table: {:?}",
            std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default()
        );
        let e = b.new_context().await.expect_err("dead browser");
        assert!(e.is_crash());
        let old_profile = b.profile_dir().to_path_buf();
        assert!(b.relaunch_if_dead().await.expect("relaunch"));
        assert!(!old_profile.exists(), "old profile removed");
        assert!(!b.relaunch_if_dead().await.expect("alive"));
        let ctx2 = b.new_context().await.expect("context after relaunch");
        ctx2.page()
            .goto(&format!("{base}/forms"), T)
            .await
            .expect("goto");
        ctx2.page().click(&loc("#signin"), T).await.expect("works");
        ctx2.close().await.expect("close ctx");
        drop(ctx);
        let profile = b.profile_dir().to_path_buf();
        b.close().await.expect("close");
        assert!(!profile.exists(), "profile removed on close");
    }
}

/// `Sandbox::On` really asks Chromium for its sandbox (no `--no-sandbox` slipped in):
/// as root, where Chromium refuses it, the launch fails with Chromium's own reason;
/// `Sandbox::Off` launches there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_setting_reaches_chromium() {
    let root = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .expect("uid");
    let on = BrowserConfig {
        sandbox: Sandbox::On,
        ..BrowserConfig::default()
    };
    match Browser::launch(on).await {
        Err(BrowserError::Launch { reason, .. }) => {
            assert!(
                reason.contains("--no-sandbox") || reason.contains("sandbox"),
                "{reason}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(b) => {
            // Only a non-root user on a kernel with user namespaces gets here.
            assert!(!root, "chromium ran sandboxed as root?");
            b.close().await.expect("close");
        }
    }
    if root {
        let off = BrowserConfig {
            sandbox: Sandbox::Off,
            ..BrowserConfig::default()
        };
        let b = Browser::launch(off).await.expect("launch without sandbox");
        b.close().await.expect("close");
    }
}

/// All cases that share one browser: run two at a time, then close the browser whatever
/// happened (so no chromium is left behind), then report failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_browser_cases() {
    use futures::FutureExt;
    use futures::future::BoxFuture;
    let base = serve().await;
    let t0 = Instant::now();
    let b = Browser::launch(BrowserConfig::default())
        .await
        .expect("launch chromium");
    eprintln!("timing: launch {:?}", t0.elapsed());
    let profile = b.profile_dir().to_path_buf();
    let cases: Vec<(&str, BoxFuture<'_, ()>)> = vec![
        (
            "waiting",
            waits_for_late_hidden_disabled_and_moving_elements(&b, &base).boxed(),
        ),
        (
            "locators",
            resolves_label_role_text_chains_and_form_controls(&b, &base).boxed(),
        ),
        (
            "dialogs",
            dialogs_are_handled_and_never_block(&b, &base).boxed(),
        ),
        ("navigation", navigation_waits_and_errors(&b, &base).boxed()),
        (
            "timeouts",
            timeout_errors_name_locator_and_what_was_seen(&b, &base).boxed(),
        ),
        (
            "cookies",
            contexts_isolate_cookies_and_sessions_restore(&b, &base).boxed(),
        ),
        ("screenshot", screenshot_is_png(&b, &base).boxed()),
    ];
    let results: Vec<(&str, bool)> =
        futures::stream::iter(cases.into_iter().map(|(name, f)| async move {
            let ok = std::panic::AssertUnwindSafe(f).catch_unwind().await.is_ok();
            eprintln!("case {name}: {}", if ok { "ok" } else { "FAILED" });
            (name, ok)
        }))
        .buffer_unordered(2)
        .collect()
        .await;
    b.close().await.expect("close browser");
    assert!(!profile.exists(), "profile removed on close");
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}
