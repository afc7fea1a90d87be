//! The playbook language on fixture pages, in real headless Chromium (issue 17):
//! multi-select with `options:`, the current row of `for_each` (`row`, rows re-found as
//! the same elements), the conditions `exists`/`not_exists`/`visible`/`hidden` on hidden
//! elements and comma lists, `generated_password` in create_user (fresh, redacted), the
//! `app_id` case pattern; and the load-time locator checks with `file:line:col`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::collections::BTreeMap;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};
use usher::browser::{Browser, BrowserConfig, Page};
use usher::playbook::{
    self, ActionName, ActionOutcome, IntegrationContext, Phase, Playbook, RunError, RunOptions,
    TemplateContext, TemplateEnv, UserContext,
};

fn page(body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>t</title></head><body>{body}</body></html>"
    ))
}

/// A `<select multiple>` with one option chosen already, and what it submits shown in
/// `#chosen`; a single select beside it.
const MULTI: &str = r##"
<select id=roles multiple size=4>
  <option value=viewer>Viewer</option><option value=editor>Editor</option>
  <option value=admin selected>Admin</option><option value=billing>Billing</option>
</select>
<select id=one><option>Red</option><option>Green</option></select>
<p id=chosen></p>
<script>
const show = () => { document.getElementById('chosen').textContent =
  Array.from(document.getElementById('roles').selectedOptions).map(o => o.value).join(',') || 'none'; };
document.getElementById('roles').addEventListener('change', show);
show();
</script>"##;

/// Widgets over a real select: a select2-like one (the real select clipped to 1 px, the
/// widget redrawn on `change`) and Django admin's two-list chooser (SelectFilter: the
/// form submits what is in the "chosen" list, `#id_groups_to`).
const WIDGETS: &str = r##"
<select id=id_roles multiple style="position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);border:0;padding:0;margin:-1px">
  <option>Viewer</option><option>Editor</option><option>Admin</option></select>
<span class=select2-selection id=s2view></span>
<select id=id_groups_from multiple><option value=1>staff</option><option value=2>ops</option><option value=3>billing</option></select>
<a id=id_groups_add_link href="#" onclick="move('from','to'); return false">Choose</a>
<a id=id_groups_remove_all_link href="#" onclick="moveAll('to','from'); return false">Remove all</a>
<select id=id_groups_to multiple><option value=4>legacy</option></select>
<p id=groups></p>
<script>
const r = document.getElementById('id_roles');
r.addEventListener('change', () => { document.getElementById('s2view').textContent =
  Array.from(r.selectedOptions).map(o => o.text).join('+'); });
const sel = (n) => document.getElementById('id_groups_' + n);
function show() { document.getElementById('groups').textContent =
  Array.from(sel('to').options).map(o => o.text).sort().join(',') || 'none'; }
function move(a, b) { Array.from(sel(a).selectedOptions).forEach(o => { o.selected = false; sel(b).appendChild(o); }); show(); }
function moveAll(a, b) { Array.from(sel(a).options).forEach(o => sel(b).appendChild(o)); show(); }
show();
</script>"##;

/// Rows chosen by a checkbox: unchecking one changes which rows `:checked` matches.
const ROWS: &str = r##"
<table style="border-collapse: collapse"><tbody>
<tr onclick="this.dataset.clicked='yes'"><td><input type=checkbox checked></td><td class=name>ann</td><td>ann@x</td></tr>
<tr onclick="this.dataset.clicked='yes'"><td><input type=checkbox checked></td><td class=name>bob</td><td>bob@x</td></tr>
<tr onclick="this.dataset.clicked='yes'"><td><input type=checkbox checked></td><td class=name>cy</td><td>cy@x</td></tr>
<tr><td><input type=checkbox></td><td class=name>dee</td><td>dee@x</td></tr>
</tbody></table>"##;

/// Rows that link to a page of their own.
const LINKS: &str = r##"
<ul><li><a href="/detail?u=ann">ann</a></li><li><a href="/detail?u=bob">bob</a></li></ul>"##;

/// A hidden logout link (the app renders it in a collapsed menu), and a comma list
/// whose first match is hidden and second visible.
const STATES: &str = r##"
<nav><a href="/logout/" style="display:none">Log out</a></nav>
<span class=first hidden>first</span><span class=second>second</span>
<div class=gone hidden>never shown</div>"##;

/// A create form that requires a password and its confirmation; echoes what it got.
const NEW_USER: &str = r##"
<form onsubmit="event.preventDefault();
  const a = document.getElementById('pw').value, b = document.getElementById('pw2').value;
  document.getElementById('echo').textContent = a === b ? a : 'mismatch';
  document.getElementById('msg').textContent = 'Saved';">
<input id=pw type=password><input id=pw2 type=password><button id=save>Save</button></form>
<p id=msg></p><p id=echo></p>"##;

/// A form that posts and is redirected to the page showing what it saved (`/doc`, whose
/// loads are counted).
const SAVE_FORM: &str = r##"
<form method=post action=/save><input id=v name=v><button id=go>Save</button></form>"##;
static DOC_LOADS: AtomicUsize = AtomicUsize::new(0);
static SAVED: Mutex<String> = Mutex::new(String::new());

async fn serve() -> String {
    let app = Router::new()
        .route("/form", get(|| async { page(SAVE_FORM) }))
        .route(
            "/save",
            post(|f: Form<BTreeMap<String, String>>| async move {
                *SAVED.lock().unwrap() = f.get("v").cloned().unwrap_or_default();
                Redirect::to("/doc")
            }),
        )
        .route(
            "/doc",
            get(|| async {
                DOC_LOADS.fetch_add(1, Ordering::SeqCst);
                let saved = SAVED.lock().unwrap().clone();
                page(&format!("<p id=shown>{saved}</p><input id=note>"))
            }),
        )
        .route("/multi", get(|| async { page(MULTI) }))
        .route("/rows", get(|| async { page(ROWS) }))
        .route("/widgets", get(|| async { page(WIDGETS) }))
        .route("/links", get(|| async { page(LINKS) }))
        .route(
            "/detail",
            get(
                |q: axum::extract::Query<BTreeMap<String, String>>| async move {
                    page(&format!(
                        "<h1>User {}</h1>",
                        q.get("u").cloned().unwrap_or_default()
                    ))
                },
            ),
        )
        .route("/states", get(|| async { page(STATES) }))
        .route("/new", get(|| async { page(NEW_USER) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

const HEAD: &str = r##"app: Fixture
version: 1
defaults: { timeout: 3s, screenshots: on_failure }
login:
  - goto: "{{ base_url }}/states"
session_check:
  - goto: "{{ base_url }}/states"
"##;

fn load(actions: &str) -> Playbook {
    let src = format!("{HEAD}{actions}");
    match playbook::load_str("fixture.yaml", &src) {
        Ok(pb) => pb,
        Err(e) => panic!("{e}\n{src}"),
    }
}

fn user(user_name: &str, roles: &[&str]) -> UserContext {
    UserContext {
        user_name: Some(user_name.into()),
        email: Some(format!("{user_name}@acme.test")),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        ..Default::default()
    }
}

async fn run(
    page: &Page,
    base: &str,
    pb: &Playbook,
    action: ActionName,
    user: UserContext,
) -> Result<ActionOutcome, RunError> {
    let env = TemplateEnv::new(pb, |_| Ok("000000".into())).expect("templates");
    let integration = IntegrationContext {
        id: "fx".into(),
        name: "Fixture".into(),
        base_url: base.into(),
    };
    let mut ctx = TemplateContext::new(user, integration);
    playbook::run_action(pb, &env, page, action, &mut ctx, &RunOptions::default()).await
}

fn out<'a>(o: &'a ActionOutcome, k: &str) -> &'a str {
    o.outputs
        .get(k)
        .unwrap_or_else(|| panic!("no output {k}: {:?}", o.outputs))
}

async fn multi_select_takes_a_list_and_clears_the_rest(page: &Page, base: &str) {
    let pb = load(
        r##"roles:
  Engineering: Editor
  Finance: Billing
actions:
  create_user:
    steps:
      - goto: "{{ base_url }}/multi"
      - select: { in: "#roles", options: "{{ user.app_roles }}" }
      - extract: { chosen: { from: text, locator: "#chosen" } }
  update_user:
    steps:
      - goto: "{{ base_url }}/multi"
      - select: { in: "#roles", options: [Viewer, "{{ user.app_roles }}"] }
      - extract: { chosen: { from: text, locator: "#chosen" } }
  set_roles:
    steps:
      - goto: "{{ base_url }}/multi"
      - select: { in: "#roles", options: "{{ user.app_roles }}" }
      - extract: { chosen: { from: text, locator: "#chosen" } }
  delete_user:
    steps:
      - goto: "{{ base_url }}/multi"
      - select: { in: "#one", options: "{{ user.app_roles }}" }
"##,
    );
    let both = user("ann", &["Engineering", "Finance"]);
    let o = run(page, base, &pb, ActionName::CreateUser, both.clone())
        .await
        .expect("create");
    // Exactly the mapped roles: the preselected Admin is cleared.
    assert_eq!(out(&o, "chosen"), "editor,billing");
    let o = run(page, base, &pb, ActionName::UpdateUser, both)
        .await
        .expect("update");
    assert_eq!(out(&o, "chosen"), "viewer,editor,billing");
    // No roles: every option cleared.
    let none = user("bob", &[]);
    let o = run(page, base, &pb, ActionName::SetRoles, none.clone())
        .await
        .expect("set_roles");
    assert_eq!(out(&o, "chosen"), "none");
    // An empty list cannot choose for a single select: a clear error, not a silent no-op.
    let e = run(page, base, &pb, ActionName::DeleteUser, none)
        .await
        .expect_err("single select without an option");
    assert!(
        e.reason.contains("no option given for a single <select>"),
        "{e}"
    );
}

async fn widget_patterns_of_the_docs_work(page: &Page, base: &str) {
    // Each list gets only its own options (the template filters the mapped roles): an
    // option a list lacks would make the step wait for it and fail.
    let pb = load(
        r##"roles:
  Engineering: [Editor, staff]
  Finance: [Admin, billing]
actions:
  set_roles:
    steps:
      - goto: "{{ base_url }}/widgets"
      - select: { in: "#id_roles", options: "{{ user.app_roles | select('in', ['Viewer', 'Editor', 'Admin']) | list }}" }
      - extract: { select2: { from: text, locator: "#s2view" } }
      - click: "#id_groups_remove_all_link"
      - select: { in: "#id_groups_from", options: "{{ user.app_roles | reject('in', ['Viewer', 'Editor', 'Admin']) | list }}" }
      - click: "#id_groups_add_link"
      - extract: { groups: { from: text, locator: "#groups" } }
"##,
    );
    let o = run(
        page,
        base,
        &pb,
        ActionName::SetRoles,
        user("ann", &["Engineering", "Finance"]),
    )
    .await
    .expect("set_roles");
    assert_eq!(out(&o, "select2"), "Editor+Admin");
    // The preselected `legacy` is removed; exactly the wanted groups are chosen.
    assert_eq!(out(&o, "groups"), "billing,staff");
}

async fn for_each_acts_on_each_row_itself(page: &Page, base: &str) {
    let pb = load(
        r##"actions:
  list_users:
    steps:
      - goto: "{{ base_url }}/rows"
      - for_each:
          rows: "tbody tr:has(input:checked)"
          steps:
            - click: row
            - uncheck: "row >> input"
            - extract:
                name: { from: text, locator: "td.name" }
                clicked: { from: attribute, locator: row, name: data-clicked }
            - if: { exists: "row >> input:checked" }
              then: [ { fail: "row {{ outputs.name }} still checked" } ]
            - emit: user
      - if: { exists: "tbody input:checked" }
        then: [ { fail: "a row is still checked" } ]
      - extract: { fourth: { from: text, locator: "tbody tr:nth-child(4) td.name" } }
"##,
    );
    let o = run(page, base, &pb, ActionName::ListUsers, user("x", &[]))
        .await
        .expect("list_users");
    let names: Vec<&str> = o.records.iter().map(|r| r["name"].as_str()).collect();
    // With rows re-found by position, unchecking the first would have made the second
    // `nth=0`: bob would be skipped and the third pass would find no row.
    assert_eq!(names, ["ann", "bob", "cy"]);
    assert!(o.records.iter().all(|r| r["clicked"] == "yes"), "{o:?}");
    assert_eq!(out(&o, "fourth"), "dee");
    let steps: Vec<&str> = o.steps.iter().map(|s| s.step.as_str()).collect();
    assert!(
        steps.contains(&"uncheck tbody tr:has(input:checked) >> nth=1 >> input"),
        "{steps:#?}"
    );
}

async fn for_each_rows_are_found_again_after_a_navigation(page: &Page, base: &str) {
    let pb = load(
        r##"actions:
  list_users:
    steps:
      - goto: "{{ base_url }}/links"
      - for_each:
          rows: "li"
          steps:
            - extract: { name: { from: text } }
            - click: "row >> a"
            - expect: { url: "/detail" }
            - extract: { shown: { from: url, pattern: "u=(\\w+)" } }
            - goto: "{{ base_url }}/links"
            - emit: user
"##,
    );
    let o = run(page, base, &pb, ActionName::ListUsers, user("x", &[]))
        .await
        .expect("list_users");
    let names: Vec<&str> = o.records.iter().map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["ann", "bob"]);
    let shown: Vec<&str> = o.records.iter().map(|r| r["shown"].as_str()).collect();
    assert_eq!(shown, ["ann", "bob"], "each row's own link was followed");
}

async fn conditions_say_what_they_mean_for_hidden_elements(page: &Page, base: &str) {
    let pb = load(
        r##"actions:
  update_user:
    steps:
      - goto: "{{ base_url }}/states"
      - wait_for: { attached: "a[href='/logout/']" }
      - set: { exists: "no", visible: "no", hidden: "no", list_visible: "no", list_hidden: "no", not_exists: "no" }
      - if: { exists: "a[href='/logout/']" }
        then: [ { set: { exists: "yes" } } ]
      - unless: { visible: "a[href='/logout/']" }
        then: [ { set: { visible: "not visible" } } ]
      - if: { hidden: "a[href='/logout/']" }
        then: [ { set: { hidden: "yes" } } ]
      - if: { visible: ".first, .second" }
        then: [ { set: { list_visible: "yes" } } ]
      - if: { hidden: ".first, .gone" }
        then: [ { set: { list_hidden: "yes" } } ]
      - if: { not_exists: ".nowhere, .neither" }
        then: [ { set: { not_exists: "yes" } } ]
      - set: { app_id: "{{ user.user_name[:1] | upper ~ user.user_name[1:] }}", wiki_id: "{{ user.user_name | lower }}" }
"##,
    );
    let o = run(page, base, &pb, ActionName::UpdateUser, user("alice", &[]))
        .await
        .expect("update");
    let got: BTreeMap<&str, &str> = [
        "exists",
        "visible",
        "hidden",
        "list_visible",
        "list_hidden",
        "not_exists",
    ]
    .into_iter()
    .map(|k| (k, out(&o, k)))
    .collect();
    assert_eq!(
        got,
        BTreeMap::from([
            ("exists", "yes"),
            ("visible", "not visible"),
            ("hidden", "yes"),
            ("list_visible", "yes"),
            ("list_hidden", "yes"),
            ("not_exists", "yes"),
        ])
    );
    // The app_id patterns of docs/playbooks.md (MediaWiki, DokuWiki).
    assert_eq!(out(&o, "app_id"), "Alice");
    assert_eq!(out(&o, "wiki_id"), "alice");
}

async fn create_user_gets_a_fresh_redacted_password(page: &Page, base: &str) {
    let pb = load(
        r##"actions:
  create_user:
    steps:
      - goto: "{{ base_url }}/new"
      - fill: { into: "#pw", value: "{{ generated_password }}" }
      - fill: { into: "#pw2", value: "{{ generated_password }}" }
      - click: "#save"
      - expect: { text: Saved, in: "#msg" }
      - extract: { echo: { from: text, locator: "#echo" } }
    verify:
      - if: { value: "{{ outputs.echo != generated_password }}" }
        then: [ { fail: "the app got {{ outputs.echo }}" } ]
  update_user:
    steps:
      - goto: "{{ base_url }}/new"
      - fill: { into: "#pw", value: "{{ generated_password }}" }
  delete_user:
    steps:
      - goto: "{{ base_url }}/new"
      - fill: { into: "#pw", value: "{{ generated_password }}" }
      - fail: "password was {{ generated_password }}"
"##,
    );
    let a = run(page, base, &pb, ActionName::CreateUser, user("ann", &[]))
        .await
        .expect("create");
    let b = run(page, base, &pb, ActionName::CreateUser, user("bob", &[]))
        .await
        .expect("create");
    let (pa, pb_) = (out(&a, "echo"), out(&b, "echo"));
    assert_eq!(pa.chars().count(), 32, "a strong password");
    assert_ne!(pa, pb_, "one password per create_user");
    let records = serde_json::to_string(&a.steps).unwrap();
    assert!(!records.contains(pa), "the password is in the step records");
    // Only create_user has one.
    let e = run(page, base, &pb, ActionName::UpdateUser, user("ann", &[]))
        .await
        .expect_err("no generated_password outside create_user");
    assert!(e.reason.contains("undefined"), "{e}");
    // A create_user that shows it: redacted in the error.
    let pb2 = load(
        r##"actions:
  create_user:
    steps:
      - goto: "{{ base_url }}/new"
      - fail: "password was {{ generated_password }}"
"##,
    );
    let e = run(page, base, &pb2, ActionName::CreateUser, user("cy", &[]))
        .await
        .expect_err("fail step");
    // The message is built from a secret: all of it is withheld.
    assert_eq!(e.reason, "[REDACTED]", "{e}");
}

/// A read-back `goto` to the page the steps' last input loaded uses that page (it shows
/// what the app served after the change); typed into since, or not loaded by these
/// steps, it is loaded again.
async fn read_back_uses_the_page_the_steps_loaded(page: &Page, base: &str) {
    let pb = load(
        r##"actions:
  create_user:
    steps:
      - goto: "{{ base_url }}/form"
      - fill: { into: "#v", value: "{{ user.user_name }}" }
      - click: "#go"
      - expect: { url: "/doc$" }
    verify:
      - goto: "{{ base_url }}/doc"
      - expect: { text: "{{ user.user_name }}", in: "#shown" }
  update_user:
    steps:
      - goto: "{{ base_url }}/form"
      - fill: { into: "#v", value: "{{ user.user_name }}" }
      - click: "#go"
      - expect: { url: "/doc$" }
      - fill: { into: "#note", value: "typed after the load" }
    verify:
      - goto: "{{ base_url }}/doc"
      - expect: { text: "{{ user.user_name }}", in: "#shown" }
  set_roles:
    steps:
      - set: { nothing: "done on the page" }
    verify:
      - goto: "{{ base_url }}/doc"
      - expect: { text: "bob", in: "#shown" }
"##,
    );
    let loads = || DOC_LOADS.load(Ordering::SeqCst);
    let n0 = loads();
    let a = run(page, base, &pb, ActionName::CreateUser, user("ann", &[]))
        .await
        .expect("create");
    assert_eq!(loads(), n0 + 1, "the read-back loaded /doc again");
    let goto = a
        .steps
        .iter()
        .find(|s| s.phase == Phase::Verify && s.step.starts_with("goto"))
        .expect("the verify goto is recorded");
    assert!(goto.step.contains("already there"), "{goto:?}");
    run(page, base, &pb, ActionName::UpdateUser, user("bob", &[]))
        .await
        .expect("update");
    assert_eq!(loads(), n0 + 3, "a page typed into was not loaded again");
    run(page, base, &pb, ActionName::SetRoles, user("bob", &[]))
        .await
        .expect("set_roles");
    assert_eq!(
        loads(),
        n0 + 4,
        "a page the steps did not load was used as the read-back"
    );
}

/// All cases share one browser; each gets its own context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_on_fixture_pages() {
    use futures::FutureExt;
    let base = serve().await;
    let b = Browser::launch(BrowserConfig::default())
        .await
        .expect("launch chromium");
    let mut failed = Vec::new();
    for name in [
        "multi-select",
        "widgets",
        "for_each row",
        "for_each navigation",
        "conditions",
        "password",
        "read-back",
    ] {
        let ctx = b.new_context().await.expect("context");
        let p = ctx.page();
        let case = match name {
            "multi-select" => multi_select_takes_a_list_and_clears_the_rest(p, &base).boxed(),
            "widgets" => widget_patterns_of_the_docs_work(p, &base).boxed(),
            "for_each row" => for_each_acts_on_each_row_itself(p, &base).boxed(),
            "for_each navigation" => {
                for_each_rows_are_found_again_after_a_navigation(p, &base).boxed()
            }
            "conditions" => conditions_say_what_they_mean_for_hidden_elements(p, &base).boxed(),
            "read-back" => read_back_uses_the_page_the_steps_loaded(p, &base).boxed(),
            _ => create_user_gets_a_fresh_redacted_password(p, &base).boxed(),
        };
        let ok = std::panic::AssertUnwindSafe(case)
            .catch_unwind()
            .await
            .is_ok();
        eprintln!("case {name}: {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(name);
        }
        ctx.close().await.expect("close context");
    }
    b.close().await.expect("close browser");
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}

fn errors_of(src: &str) -> Vec<String> {
    match playbook::load_str("pb.yaml", &format!("{HEAD}{src}")) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn locator_mistakes_are_reported_at_check_time_with_position() {
    let errs = errors_of(
        r##"actions:
  delete_user:
    steps:
      - click: "tr:has-text('{{ user.email }}') >> button.delete, tr:has-text('{{ user.email }}') >> a.delete"
      - click: row
      - select: { in: "#roles", option: Viewer, options: [Editor] }
      - click: "button[name=Save changes]"
"##,
    );
    let want = [
        "pb.yaml:11:16: `click` locator: bad locator: the comma in",
        "pb.yaml:12:16: `click` locator: `row` is the current row of `for_each`",
        "pb.yaml:13:49: `select` takes only one of: option, options",
        "pb.yaml:14:29: `click` locator: bad locator: attribute value `Save changes` must be one quoted string",
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for (e, w) in errs.iter().zip(want) {
        assert!(e.starts_with(w), "{e}\nwanted {w}");
    }
    assert!(
        errs[0].contains("a comma never separates ` >> ` chains"),
        "{}",
        errs[0]
    );
    // `row` is fine inside for_each and in subroutines (called from one).
    let ok = format!(
        "{HEAD}{}",
        r##"subroutines:
  tick:
    - check: "row >> input"
actions:
  list_users:
    steps:
      - for_each:
          rows: "tbody tr"
          steps:
            - click: row
            - call: tick
            - if: { visible: "row >> .badge" }
              then: [ { emit: user } ]
"##
    );
    if let Err(e) = playbook::load_str("ok.yaml", &ok) {
        panic!("{e}");
    }
}

#[test]
fn shipped_playbooks_still_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml")
            && let Err(e) = playbook::load_file(&p)
        {
            panic!("{e}");
        }
    }
}

/// The secrets file shown in docs/playbooks.md is one that `--secrets` reads, with its
/// extra fields; an extra written at the top level is refused.
#[test]
fn documented_secrets_file_is_what_the_loader_reads() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/playbooks.md"),
    )
    .unwrap();
    let after = doc
        .split_once("For `usher playbook run --secrets @secrets.yaml`")
        .expect("the secrets file section")
        .1;
    let block = after
        .split_once("```yaml\n")
        .unwrap()
        .1
        .split_once("```")
        .unwrap()
        .0;
    let s =
        usher::vault::SecretsFile::parse("secrets.yaml", block).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.field_names(),
        [
            "username",
            "password",
            "totp",
            "extra.api_key",
            "extra.domain"
        ]
    );
    let flat = "username: u\npassword: p\ndomain: CORP\n";
    let e = usher::vault::SecretsFile::parse("secrets.yaml", flat)
        .expect_err("an extra at the top level");
    assert!(e.to_string().contains("domain"), "{e}");
}
