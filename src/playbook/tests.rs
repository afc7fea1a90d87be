//! Loader, template, redaction and schema tests.

use std::time::Duration;

use super::*;

pub(super) const EXAMPLE: &str = r##"app: Acme Admin
version: 1
defaults: { timeout: 15s, screenshots: on_change }   # on_change | always | on_failure
login:                         # run when the session check fails
  - goto: "{{ base_url }}/login"
  - fill: { into: "label=Email", value: "{{ secret.username }}" }
  - fill: { into: "#password", value: "{{ secret.password }}" }
  - click: "role=button[name='Sign in']"
  - fill: { into: "#otp1", value: "{{ totp(secret.totp) }}" }
  - click: "text=Verify"
session_check:
  - goto: "{{ base_url }}/admin/users"
  - expect: { visible: "h1:has-text('Users')" }
subroutines:                    # reusable sub-sequences, used by `call`
  open_user:
    - goto: "{{ base_url }}/admin/users?q={{ user.email | urlencode }}"
    - click: "tr:has-text('{{ user.email }}') >> text=Edit"
actions:
  create_user:
    precondition:               # is the work already done? if these steps succeed, the action is skipped
      - goto: "{{ base_url }}/admin/users?q={{ user.email | urlencode }}"
      - expect: { visible: "tr:has-text('{{ user.email }}')", timeout: 2s }
    steps:
      - goto: "{{ base_url }}/admin/users/new"
      - fill: { into: "#email", value: "{{ user.email }}" }
      - select: { in: "#role", option: "{{ user.roles | first | default('Viewer') }}" }
      - click: "text=Send invite"
      - expect: { text: "Invitation sent" }
      - extract: { app_id: { from: url, pattern: "/users/(\\d+)" } }
    verify:
      - goto: "{{ base_url }}/admin/users/{{ outputs.app_id }}"
      - expect: { text: "{{ user.email }}" }
  delete_user:
    steps:
      - call: open_user
      - if: { exists: "text=Delete user" }
        then:
          - accept_dialog: {}
          - click: "text=Delete user"
        else:
          - fail: "no delete button"
  list_users:
    steps:
      - goto: "{{ base_url }}/admin/users"
      - paginate:
          next: "text=Next »"
          max_pages: 100
          steps:
            - for_each:
                rows: "table#users tbody tr"
                steps:
                  - extract:
                      email: { from: text, locator: "td.email" }
                      app_id: { from: attribute, locator: "a.edit", name: href, pattern: "/users/(\\d+)" }
                  - emit: user            # appends the current outputs as one record of the action's result
roles:                           # SCIM group or role → app role
  Engineering: Editor
  Finance: Viewer
"##;

/// Every step kind once, valid (list_users, so `emit` is allowed).
const ALL_STEPS: &str = r##"app: All
version: 1
login:
  - goto: "{{ base_url }}/login"
session_check:
  - goto: "{{ base_url }}"
subroutines:
  noop:
    - screenshot: {}
actions:
  list_users:
    steps:
      - goto: "{{ base_url }}"
        name: open
        timeout: 5s
        screenshot: false
      - fill: { into: "#q", value: "{{ new_password | default('x') }}", sensitive: true }
      - click: { on: "text=Go" }
      - click: "text=Go"
      - select: { in: "#roles", option: ["A", "{{ user.roles | join(',') }}"] }
      - check: "#active"
      - uncheck: "#active"
      - press: { key: Enter, on: "#q" }
      - press: { key: "Control+A" }
      - expect: { visible: "#a" }
      - expect: { hidden: "#b", timeout: 1s }
      - expect: { text: "ok", in: "#flash" }
      - expect: { url: "/users/\\d+$" }
      - wait_for: { attached: "#c" }
      - wait_for: { detached: "#c", timeout: 500ms }
      - extract: { id: { from: value, locator: "#id" } }
      - accept_dialog: { text: "yes" }
      - accept_dialog: {}
      - dismiss_dialog: {}
      - screenshot: { name: after }
      - screenshot: {}
      - if: { value: "{{ user.active }}" }
        then: [ { call: noop } ]
      - unless: { not_exists: "#x" }
        then: [ { fail: "gone" } ]
        else: [ { set: { seen: "yes" } } ]
      - for_each:
          rows: "tr"
          steps:
            - extract: { name: { from: text } }
            - emit: user
      - paginate: { next: "text=Next", max_pages: 2, steps: [ { screenshot: {} } ] }
      - call: noop
      - set: { a: "{{ outputs.id }}", b: "2" }
      - fail: "{{ user.user_name }} not found"
  enable_mfa:
    steps:
      - capture_totp: { text: "#key" }
      - capture_totp: { qr: "img.qr" }
      - fill: { into: "#code", value: "{{ totp(new_totp) }}" }
"##;

fn errors(src: &str) -> Vec<String> {
    match load_str("t.yaml", src) {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.iter()
                .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
                .collect()
        }
    }
}

fn assert_error(src: &str, pos: &str, needle: &str) {
    let errs = errors(src);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{pos}: ")) && e.contains(needle)),
        "expected `{pos}: …{needle}…` in {errs:#?}"
    );
}

/// A valid playbook whose create_user steps are `steps` (indented 6 spaces);
/// the first of them is on line 10.
fn with_steps(steps: &str) -> String {
    format!(
        "app: T\nversion: 1\nlogin:\n  - goto: \"{{{{ base_url }}}}/login\"\nsession_check:\n  - goto: \"{{{{ base_url }}}}\"\nactions:\n  create_user:\n    steps:\n{steps}"
    )
}

fn loads(src: &str) -> Playbook {
    match load_str("t.yaml", src) {
        Ok(p) => p,
        Err(e) => panic!("should load:\n{e}"),
    }
}

// ---------------------------------------------------------------- loading

#[test]
fn the_example_loads_with_positions() {
    let pb = loads(EXAMPLE);
    assert_eq!(pb.app, "Acme Admin");
    assert_eq!(pb.version, 1);
    assert_eq!(pb.defaults.timeout, Duration::from_secs(15));
    assert_eq!(pb.defaults.screenshots, ScreenshotPolicy::OnChange);
    assert_eq!(pb.source_file, "t.yaml");
    assert_eq!(pb.login.len(), 6);
    assert_eq!((pb.login[0].line, pb.login[0].col), (5, 5));
    assert!(matches!(
        &pb.login[1].kind,
        StepKind::Fill {
            sensitive: true,
            ..
        }
    ));
    assert!(matches!(
        &pb.login[4].kind,
        StepKind::Fill {
            sensitive: true,
            ..
        }
    ));
    let create = pb.action(ActionName::CreateUser).expect("create_user");
    assert!(matches!(
        &create.steps[1].kind,
        StepKind::Fill {
            sensitive: false,
            ..
        }
    ));
    let pre = create.precondition.as_ref().expect("precondition");
    assert_eq!(pre[1].timeout, Some(Duration::from_secs(2)));
    assert_eq!(create.verify.as_ref().map(Vec::len), Some(2));
    match &create.steps[5].kind {
        StepKind::Extract(x) => {
            assert_eq!(x[0].name, "app_id");
            assert_eq!(x[0].from, ExtractFrom::Url);
            let p = x[0].pattern.as_ref().expect("pattern");
            assert_eq!(p.extract("https://a/admin/users/42/edit"), Some("42"));
        }
        other => panic!("{other:?}"),
    }
    let delete = pb.action(ActionName::DeleteUser).expect("delete_user");
    match &delete.steps[1].kind {
        StepKind::If {
            cond: Condition::Exists(l),
            then,
            else_,
        } => {
            assert_eq!(l.source(), "text=Delete user");
            assert_eq!(then.len(), 2);
            assert_eq!(else_.len(), 1);
            assert_eq!((then[0].line, then[0].col), (38, 13));
        }
        other => panic!("{other:?}"),
    }
    let list = pb.action(ActionName::ListUsers).expect("list_users");
    let StepKind::Paginate {
        max_pages, steps, ..
    } = &list.steps[1].kind
    else {
        panic!("paginate")
    };
    assert_eq!(*max_pages, 100);
    let StepKind::ForEach { steps: inner, .. } = &steps[0].kind else {
        panic!("for_each")
    };
    assert!(matches!(&inner[1].kind, StepKind::Emit { name } if name == "user"));
    assert_eq!(pb.subroutines["open_user"].len(), 2);
    assert_eq!(pb.roles["Engineering"], vec!["Editor".to_string()]);
    assert!(pb.all_steps().len() > 20);
}

#[test]
fn example_file_on_disk_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example.yaml");
    if path.exists()
        && let Err(e) = load_file(&path)
    {
        panic!("{e}");
    }
}

#[test]
fn every_step_kind_loads() {
    let pb = loads(ALL_STEPS);
    let kinds: std::collections::BTreeSet<&str> =
        pb.all_steps().iter().map(|s| s.kind.keyword()).collect();
    for name in STEP_NAMES {
        assert!(kinds.contains(name), "missing {name}");
    }
    let s = &pb.action(ActionName::ListUsers).expect("list").steps[0];
    assert_eq!(s.name.as_deref(), Some("open"));
    assert_eq!(s.timeout, Some(Duration::from_secs(5)));
    assert_eq!(s.screenshot, Some(false));
}

#[test]
fn five_mistakes_five_errors_with_exact_positions() {
    let src = r##"app: Five
version: 1
login:
  - goto: "{{ base_url }}/login"
  - clik: "text=Sign in"
session_check:
  - expect: { url: "/admin/(users" }
subroutines:
  open:
    - goto: "{{ base_url }}/u/{{ user.email "
actions:
  delete_user:
    steps:
      - call: opne
    verfy:
      - goto: "{{ base_url }}"
"##;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("five.yaml");
    std::fs::write(&path, src).expect("write");
    let Err(errs) = load_file(&path) else {
        panic!("should fail")
    };
    let got: Vec<(usize, usize)> = errs.0.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(
        got,
        vec![(5, 5), (7, 20), (10, 13), (14, 15), (15, 5)],
        "{errs}"
    );
    let m: Vec<&str> = errs.0.iter().map(|e| e.message.as_str()).collect();
    assert!(
        m[0].starts_with("unknown step `clik` (did you mean `click`?)"),
        "{}",
        m[0]
    );
    assert!(
        m[1].contains("invalid regex") && m[1].contains("unclosed group"),
        "{}",
        m[1]
    );
    assert!(m[2].contains("template syntax error"), "{}", m[2]);
    assert_eq!(
        m[3],
        "unknown subroutine `opne` (did you mean `open`?); defined: open"
    );
    assert!(
        m[4].starts_with("unknown key `verfy` in action `delete_user` (did you mean `verify`?)"),
        "{}",
        m[4]
    );
    let text = errs.to_string();
    let first = format!("{}:5:5: unknown step `clik`", path.display());
    assert!(
        text.lines().next().is_some_and(|l| l.starts_with(&first)),
        "{text}"
    );
    assert_eq!(text.lines().count(), 5);
}

#[test]
fn yaml_syntax_and_duplicate_keys() {
    let errs = errors("app: x\nversion: [1\nlogin: 2\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("3:") && errs[0].contains("YAML"),
        "{errs:?}"
    );
    assert_error(
        "app: x\nversion: 1\napp: y\n",
        "3:1",
        "duplicate mapping key",
    );
    assert_error("", "1:1", "empty playbook");
}

#[test]
fn top_level_rules() {
    let src = "app: T\nversion: 2\ndefaults: { timeout: 15, screenshots: sometimes, retries: 3 }\nlogin: []\nsession_check: {}\naction: {}\n";
    let errs = errors(src);
    assert_error(src, "2:10", "unsupported playbook version 2");
    assert_error(src, "3:22", "bad duration `15`");
    assert_error(
        src,
        "3:39",
        "unknown screenshot policy `sometimes`; known: on_change, always, on_failure",
    );
    assert_error(
        src,
        "3:50",
        "unknown key `retries` in `defaults`; allowed: timeout, screenshots",
    );
    assert_error(src, "4:8", "`login` has no steps");
    assert_error(
        src,
        "5:16",
        "`session_check` must be a list of steps, found a map",
    );
    assert_error(
        src,
        "6:1",
        "unknown key `action` in the playbook (did you mean `actions`?)",
    );
    assert_error(src, "1:1", "missing required key `actions` in the playbook");
    assert_eq!(errs.len(), 8, "{errs:#?}");
}

#[test]
fn durations() {
    for (d, ok) in [
        ("500ms", true),
        ("15s", true),
        ("2m", true),
        ("0s", false),
        ("15sec", false),
        ("1.5s", false),
        ("61m", false),
    ] {
        let src = with_steps(&format!("      - goto: x\n        timeout: {d}\n"));
        assert_eq!(errors(&src).is_empty(), ok, "{d}: {:?}", errors(&src));
    }
}

#[test]
fn unknown_action_lists_known_ones() {
    let src = with_steps("      - goto: x\n  delete_usr:\n    steps: [ { goto: x } ]\n");
    assert_error(
        &src,
        "11:3",
        "unknown action `delete_usr` (did you mean `delete_user`?); known: create_user, update_user, deactivate_user, reactivate_user, delete_user, set_roles, list_users, rotate_password, enable_mfa, set_user_password",
    );
}

#[test]
fn action_without_steps() {
    let src = with_steps(
        "      - goto: x\n  delete_user:\n    verify: [ { goto: x } ]\n  update_user:\n    steps: []\n",
    );
    assert_error(&src, "12:5", "action `delete_user` has no steps");
    assert_error(&src, "14:12", "`update_user.steps` has no steps");
}

#[test]
fn unknown_steps_and_step_keys() {
    let src = with_steps(
        "      - clikc: x\n      - click: x\n        timout: 2s\n      - 42\n      - goto: x\n        click: y\n      - screenshot: true\n      - name: lonely\n",
    );
    assert_error(
        &src,
        "10:9",
        "unknown step `clikc` (did you mean `click`?); known steps: goto, fill",
    );
    assert_error(
        &src,
        "12:9",
        "unknown key `timout` in `click` step (did you mean `timeout`?); allowed: name, screenshot, timeout",
    );
    assert_error(&src, "13:9", "a step must be a map");
    assert_error(
        &src,
        "15:9",
        "exactly one step keyword; found `goto` and `click`",
    );
    assert_error(&src, "16:21", "to take one, write `screenshot: {}`");
    assert_error(&src, "17:9", "step has no step keyword");
    assert_eq!(errors(&src).len(), 6, "{:#?}", errors(&src));
    // `screenshot: true` beside another step keyword is the common flag.
    assert!(errors(&with_steps("      - click: x\n        screenshot: true\n")).is_empty());
}

#[test]
fn wrong_types_and_missing_keys() {
    let src = with_steps(
        "      - click: 42\n      - fill: \"#a\"\n      - fill: { into: \"#a\" }\n      - select: { in: \"#r\", option: [] }\n      - paginate: { next: x, max_pages: 0, steps: [ { goto: x } ] }\n      - press: { key: \"Control+\" }\n",
    );
    assert_error(
        &src,
        "10:16",
        "`click` locator must be a string, found a number",
    );
    assert_error(&src, "11:15", "`fill` must be a map, found a string");
    assert_error(&src, "12:15", "missing required key `value` in `fill`");
    assert_error(&src, "13:37", "`select.option` is an empty list");
    assert_error(
        &src,
        "14:41",
        "`paginate.max_pages` must be a whole number from 1 to 10000",
    );
    assert_error(&src, "15:23", "bad key `Control+`");
}

#[test]
fn expect_and_wait_for_rules() {
    let src = with_steps(
        "      - expect: { visible: a, hidden: b }\n      - expect: { visible: a, in: b }\n      - expect: {}\n      - expect: { url: x, timeout: 1s }\n        timeout: 2s\n      - wait_for: { gone: a }\n",
    );
    assert_error(
        &src,
        "10:31",
        "`expect` takes only one of: visible, hidden, text, url",
    );
    assert_error(
        &src,
        "11:31",
        "`in` is only allowed with `expect: {text: …}`",
    );
    assert_error(
        &src,
        "12:17",
        "`expect` needs one of: visible, hidden, text, url",
    );
    assert_error(&src, "13:9", "`timeout` given twice");
    assert_error(&src, "15:21", "unknown key `gone` in `wait_for`");
}

#[test]
fn extract_rules() {
    let src = with_steps(concat!(
        "      - extract:\n",
        "          a: { from: attribute, locator: x }\n",
        "          b: { from: url, locator: x }\n",
        "          c: { from: text }\n",
        "          d: { from: html, locator: x }\n",
        "          e: { from: text, locator: x, pattern: \"([a-z\" }\n",
        "          f: { from: text, locator: x, name: y }\n",
        "          9x: { from: url }\n",
    ));
    assert_error(&src, "11:14", "`from: attribute` needs `name:`");
    assert_error(&src, "12:27", "`from: url` takes no `locator`");
    assert_error(&src, "13:14", "`from: text` needs `locator:`");
    assert_error(&src, "14:22", "unknown `from: html`");
    assert_error(&src, "15:49", "`extract.e.pattern`: invalid regex");
    assert_error(&src, "16:40", "`name` is only for `from: attribute`");
    assert_error(&src, "17:11", "output name `9x` must be a name");
    assert_eq!(errors(&src).len(), 7, "{:#?}", errors(&src));
}

#[test]
fn if_and_unless_rules() {
    let src = with_steps(
        "      - if: { exists: a }\n      - unless: { exists: a, value: b }\n        then: [ { goto: x } ]\n      - click: x\n        then: [ { goto: x } ]\n      - if: { value: \"{{ user.active }}\" }\n        then: []\n",
    );
    assert_error(&src, "10:9", "`if` step needs `then:` steps");
    assert_error(
        &src,
        "11:30",
        "`unless` condition takes only one of: exists, not_exists, visible, hidden, value",
    );
    assert_error(&src, "14:9", "unknown key `then` in `click` step");
    assert_error(&src, "16:15", "`if.then` has no steps");
}

#[test]
fn calls_cycles_and_emit() {
    let src = r##"app: T
version: 1
login:
  - call: a
session_check:
  - call: lister
subroutines:
  a:
    - call: b
  b:
    - call: a
  me:
    - call: me
  lister:
    - emit: user
actions:
  create_user:
    steps:
      - emit: user
      - call: nope
  list_users:
    steps:
      - call: lister
"##;
    assert_error(src, "11:13", "subroutine cycle: a → b → a");
    assert_error(src, "13:13", "subroutine cycle: me → me");
    assert_error(
        src,
        "6:11",
        "subroutine `lister` uses `emit`, which is only allowed in the list_users action",
    );
    assert_error(
        src,
        "19:9",
        "`emit` is only allowed in the list_users action",
    );
    assert_error(
        src,
        "20:15",
        "unknown subroutine `nope`; defined: a, b, me, lister",
    );
    assert_eq!(errors(src).len(), 5, "{:#?}", errors(src));
}

#[test]
fn template_checks_at_load() {
    let src = with_steps(concat!(
        "      - goto: \"{{ usr.email }}\"\n",
        "      - goto: \"{{ user.email | shout }}\"\n",
        "      - goto: \"{% if %}\"\n",
        "      - fill:\n",
        "          into: \"#a\"\n",
        "          value: |\n",
        "            line one\n",
        "            {{ user.email \n",
        "      - goto: \"{{ totp(secret.totp) }}{{ range(3) | join }}{{ 'a|b' | lower }}\"\n",
    ));
    assert_error(
        &src,
        "10:15",
        "`goto` URL: unknown variable `usr` (did you mean `user`?); known: user, integration, base_url, secret, outputs, new_password",
    );
    assert_error(&src, "11:15", "unknown filter `shout`");
    assert_error(&src, "12:15", "template syntax error");
    assert_error(&src, "17:1", "`fill.value`: template syntax error");
    assert_eq!(errors(&src).len(), 4, "{:#?}", errors(&src));
}

#[test]
fn locator_checks_at_load() {
    let src = with_steps(concat!(
        "      - click: \"tr:has-text('{{ user.email }}') >> text=Edit\"\n",
        "      - click: \"role=buton[name='{{ user.email }}']\"\n",
        "      - check: \"div[\"\n",
        "      - click: \"a >> \"\n",
    ));
    let errs = errors(&src);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    // The column is the offending character of the locator (after the opening quote).
    assert_error(
        &src,
        "11:22",
        "unknown ARIA role `buton` (did you mean `button`?)",
    );
    assert_error(&src, "12:20", "bad locator: unclosed `[`");
    assert_error(&src, "13:21", "empty locator part");
}

#[test]
fn roles_and_mapping() {
    let src = with_steps(
        "      - goto: x\nroles:\n  Engineering: Editor\n  Admins: [Admin, Billing]\n  engineering: X\n  Empty: []\n  Bad: 3\n",
    );
    assert_error(&src, "14:3", "role `engineering` is listed twice");
    assert_error(&src, "15:10", "maps to an empty list");
    assert_error(&src, "16:8", "must map to an app role or a list of them");
    let pb = loads(&with_steps(
        "      - goto: x\nroles:\n  Engineering: Editor\n  Admins: [Admin, Editor]\n",
    ));
    let input = [
        "engineering".to_string(),
        "Admins".into(),
        "Unknown".into(),
        "Engineering".into(),
    ];
    assert_eq!(
        pb.map_roles(&input),
        vec!["Editor".to_string(), "Admin".into()]
    );
    let d = pb.map_roles_detailed(&input);
    assert_eq!(d.unmapped, vec!["Unknown".to_string()]);
}

#[test]
fn errors_display_one_per_line() {
    let e = PlaybookErrors(vec![
        PlaybookError {
            file: "a.yaml".into(),
            line: 1,
            col: 2,
            message: "x".into(),
        },
        PlaybookError {
            file: "a.yaml".into(),
            line: 3,
            col: 4,
            message: "y".into(),
        },
    ]);
    assert_eq!(e.to_string(), "a.yaml:1:2: x\na.yaml:3:4: y");
    let Err(missing) = load_file(std::path::Path::new("/nonexistent/pb.yaml")) else {
        panic!("missing file")
    };
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/pb.yaml:1:1: cannot read playbook")
    );
}

// ---------------------------------------------------------------- templates

fn ctx() -> TemplateContext {
    let user = UserContext {
        user_name: Some("ada".into()),
        email: Some("ada+x@acme.test".into()),
        emails: [("home", "ada@home.test"), ("work", "ada+x@acme.test")]
            .into_iter()
            .map(|(t, v)| (t.to_owned(), v.to_owned()))
            .collect(),
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        active: Some(true),
        roles: vec!["Engineering".into()],
        groups: vec!["Finance".into()],
        department: Some("R&D".into()),
        ..Default::default()
    };
    TemplateContext::new(
        user,
        IntegrationContext {
            id: "i1".into(),
            name: "Acme".into(),
            base_url: "https://acme.test".into(),
        },
    )
    .with_secret("username", "svc@acme.test")
    .with_secret("password", "hunter2-Secret!")
    .with_secret("totp", "JBSWY3DPEHPK3PXP")
}

fn env(pb: &Playbook) -> TemplateEnv {
    match TemplateEnv::new(pb, |seed: &str| {
        if seed == "JBSWY3DPEHPK3PXP" {
            Ok("123456".into())
        } else {
            Err(format!("bad seed {seed}"))
        }
    }) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    }
}

fn tpl(src: &str, sensitive: bool) -> Template {
    Template {
        source: src.into(),
        sensitive,
        line: 7,
        col: 9,
    }
}

#[test]
fn renders_the_example() {
    let pb = loads(EXAMPLE);
    let env = env(&pb);
    let c = ctx();
    let mut r = c.redactor();
    let pre = pb
        .action(ActionName::CreateUser)
        .and_then(|a| a.precondition.as_ref())
        .expect("pre");
    let StepKind::Goto { url, .. } = &pre[0].kind else {
        panic!("goto")
    };
    let out = env.render(url, &c, &mut r).expect("render");
    assert_eq!(
        out.text,
        "https://acme.test/admin/users?q=ada%2Bx%40acme.test"
    );
    assert!(!out.sensitive);
    let steps = &pb.action(ActionName::CreateUser).expect("create").steps;
    let StepKind::Select { options, .. } = &steps[2].kind else {
        panic!("select")
    };
    assert_eq!(
        env.render(&options[0], &c, &mut r).expect("select").text,
        "Engineering"
    );
    let mut c2 = ctx();
    c2.user.roles.clear();
    assert_eq!(
        env.render(&options[0], &c2, &mut r).expect("default").text,
        "Viewer"
    );
    let StepKind::Fill { value, .. } = &pb.login[3 + 1].kind else {
        panic!("fill")
    };
    let code = env.render(value, &c, &mut r).expect("totp");
    assert_eq!(code.text, "123456");
    assert!(code.sensitive);
    assert_eq!(r.redact("typed 123456"), "typed [REDACTED]");
    let StepKind::Click { on } = &pb.subroutines["open_user"][1].kind else {
        panic!("click")
    };
    assert_eq!(
        env.render_locator(on, &c, &mut r).expect("loc").text,
        "tr:has-text('ada+x@acme.test') >> text=Edit"
    );
}

#[test]
fn filters_work() {
    let pb = loads(EXAMPLE);
    let env = env(&pb);
    let c = ctx();
    let mut r = c.redactor();
    let t = tpl(
        "{{ user.given_name | lower }}|{{ user.groups | join(',') }}|{{ user.emails.work }}|{{ integration.name }}",
        false,
    );
    assert_eq!(
        env.render(&t, &c, &mut r).expect("r").text,
        "ada|Finance|ada+x@acme.test|Acme"
    );
}

#[test]
fn undefined_variables_are_errors_at_render() {
    let pb = loads(EXAMPLE);
    let env = env(&pb);
    let c = ctx();
    let mut r = c.redactor();
    for src in [
        "{{ user.manager }}",
        "{{ outputs.app_id }}",
        "{{ user.emails.other }}",
        "{{ new_password }}",
    ] {
        let e = env.render(&tpl(src, false), &c, &mut r).expect_err(src);
        let s = e.to_string();
        assert!(
            s.starts_with("t.yaml:7:9: template: undefined value"),
            "{src}: {s}"
        );
    }
    let ok = env
        .render(
            &tpl("{{ user.manager | default('nobody') }}", false),
            &c,
            &mut r,
        )
        .expect("default");
    assert_eq!(ok.text, "nobody");
}

#[test]
fn secrets_never_appear_in_errors() {
    let pb = loads(EXAMPLE);
    let env = env(&pb);
    let mut c = ctx();
    c.secret
        .insert("totp".into(), "hunter2-Secret!".to_string().into());
    let mut r = c.redactor();
    // The totp closure puts the seed (here the password) into its error message.
    let e = env
        .render(&tpl("{{ totp(secret.totp) }}", true), &c, &mut r)
        .expect_err("bad seed");
    let s = e.to_string();
    assert!(!s.contains("hunter2-Secret!"), "{s}");
    assert!(s.contains("[REDACTED]"), "{s}");
    // A value built from a secret is sensitive and is redacted afterwards.
    let v = env
        .render(&tpl("pw={{ secret.password }}", true), &c, &mut r)
        .expect("render");
    assert!(v.sensitive);
    assert!(!format!("{v:?}").contains("hunter2"));
    assert_eq!(
        r.redact("step failed after typing pw=hunter2-Secret!"),
        "step failed after typing [REDACTED]"
    );
    // A value that only smuggles a secret through outputs is caught too.
    c.outputs.insert("copied".into(), "hunter2-Secret!".into());
    let v = env
        .render(&tpl("{{ outputs.copied }}", false), &c, &mut r)
        .expect("render");
    assert!(v.sensitive);
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn rendered_locator_is_checked() {
    let pb = loads(EXAMPLE);
    let env = env(&pb);
    let mut c = ctx();
    c.user.email = Some("o'brien@acme.test".into());
    let mut r = c.redactor();
    let loc = LocatorTpl(tpl("tr:has-text('{{ user.email }}')", false));
    let e = env
        .render_locator(&loc, &c, &mut r)
        .expect_err("broken quote");
    assert!(e.to_string().contains("locator"), "{e}");
}

#[test]
fn truthiness() {
    for (t, want) in [
        ("", false),
        ("false", false),
        ("0", false),
        ("None", false),
        (" no ", false),
        ("true", true),
        ("x", true),
    ] {
        assert_eq!(
            Rendered {
                text: t.into(),
                sensitive: false
            }
            .is_truthy(),
            want,
            "{t}"
        );
    }
}

// ---------------------------------------------------------------- schema

fn yaml_to_json(src: &str) -> serde_json::Value {
    match serde_saphyr::from_str::<serde_json::Value>(src) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

fn schema_errors(src: &str) -> Vec<String> {
    let schema = json_schema();
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => panic!("schema does not compile: {e}"),
    };
    let instance = yaml_to_json(src);
    validator
        .iter_errors(&instance)
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn schema_accepts_the_example_and_every_step() {
    let schema = json_schema();
    assert_eq!(schema["title"], "Usher playbook");
    assert!(
        schema["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("2020-12"))
    );
    assert_eq!(schema_errors(EXAMPLE), Vec::<String>::new());
    assert_eq!(schema_errors(ALL_STEPS), Vec::<String>::new());
    // The bundled playbooks (probes, accounts, sessions…) too.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    for name in ["classic.yaml", "spa.yaml", "dokuwiki.yaml"] {
        let src = std::fs::read_to_string(dir.join(name)).expect("bundled playbook");
        assert_eq!(schema_errors(&src), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn schema_rejects_what_the_loader_rejects() {
    for bad in [
        EXAMPLE.replace("app: Acme Admin", "app: Acme Admin\nextra: 1"),
        EXAMPLE.replace("version: 1", "version: 2"),
        EXAMPLE.replace("- click: \"text=Verify\"", "- clik: \"text=Verify\""),
        EXAMPLE.replace(
            "- click: \"text=Verify\"",
            "- click: \"text=Verify\"\n    timout: 2s",
        ),
        EXAMPLE.replace("timeout: 15s", "timeout: 15"),
        EXAMPLE.replace("delete_user:", "delete_usr:"),
        EXAMPLE.replace("{ from: url,", "{ from: html,"),
    ] {
        assert!(load_str("t.yaml", &bad).is_err());
        assert!(!schema_errors(&bad).is_empty(), "schema accepted:\n{bad}");
    }
}

#[test]
fn goto_takes_allowed_http_statuses() {
    let pb = loads(&with_steps(
        "      - goto: { url: \"{{ base_url }}/status\", allow_status: [503, 500] }\n      - goto: { url: \"{{ base_url }}/x\", allow_status: 502 }\n",
    ));
    let steps = &pb.action(ActionName::CreateUser).expect("create").steps;
    let allowed: Vec<Vec<u16>> = steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::Goto { allow_status, .. } => allow_status.clone(),
            _ => panic!("goto"),
        })
        .collect();
    assert_eq!(allowed, vec![vec![503, 500], vec![502]]);
    assert_error(
        &with_steps("      - goto: { url: \"{{ base_url }}\", allow_status: [404] }\n"),
        "10:55",
        "takes HTTP statuses from 500 to 599",
    );
    assert_error(
        &with_steps("      - goto: { allow_status: 500 }\n"),
        "10:15",
        "url",
    );
}

#[test]
fn sessions_policy_loads_with_defaults_and_rejects_bad_values() {
    let base = with_steps("      - goto: x\n");
    let pb = loads(&base);
    assert_eq!(pb.sessions.max, None);
    assert_eq!(pb.sessions.trust, std::time::Duration::from_secs(60));
    let pb = loads(&base.replace(
        "version: 1\n",
        "version: 1\nsessions: { max: 1, trust: 0s }\n",
    ));
    assert_eq!(pb.sessions.max, Some(1));
    assert_eq!(pb.sessions.trust, std::time::Duration::ZERO);
    let pb = loads(&base.replace("version: 1\n", "version: 1\nsessions: { trust: 2m }\n"));
    assert_eq!(pb.sessions.trust, std::time::Duration::from_secs(120));
    for (bad, pos, needle) in [
        (
            "sessions: { max: 0 }",
            "3:18",
            "`sessions.max` must be a whole number from 1 to 64",
        ),
        (
            "sessions: { max: 65 }",
            "3:18",
            "`sessions.max` must be a whole number from 1 to 64",
        ),
        ("sessions: { trust: 60 }", "3:20", "bad duration `60`"),
        ("sessions: { maxx: 2 }", "3:13", "unknown key `maxx`"),
    ] {
        let src = base.replace("version: 1\n", &format!("version: 1\n{bad}\n"));
        assert_error(&src, pos, needle);
        assert!(!schema_errors(&src).is_empty(), "schema accepted: {bad}");
    }
    assert!(
        schema_errors(&base.replace(
            "version: 1\n",
            "version: 1\nsessions: { max: 2, trust: 0s }\n"
        ))
        .is_empty()
    );
}

#[test]
fn the_next_input_or_navigation_is_seen_ahead_through_sets_branches_and_calls() {
    let pb = loads(&with_steps(concat!(
        "      - goto: x\n",                          // 0: followed by a set, then a fill
        "      - set: { a: b }\n",                    // 1
        "      - fill: { into: \"#a\", value: v }\n", // 2: followed by an if on both sides
        "      - if: { exists: \"#b\" }\n",           // 3
        "        then: [ { check: \"#b\" } ]\n",
        "        else: [ { uncheck: \"#b\" } ]\n",
        "      - if: { exists: \"#c\" }\n", // 4: one branch empty: not sure
        "        then: [ { check: \"#c\" } ]\n",
        "      - call: roles\n",    // 5
        "      - click: \"#go\"\n", // 6
        "subroutines:\n",
        "  roles:\n",
        "    - select: { in: \"#r\", option: x }\n",
    )));
    let steps = &pb.actions[&ActionName::CreateUser].steps;
    use super::run::Next;
    let next = |from| super::run::next_step(&pb, steps, from, Next::Other, 0);
    assert_eq!(next(1), Next::Input, "past a set, a fill");
    assert_eq!(
        next(3),
        Next::Input,
        "an if whose branches both start with an input"
    );
    assert_eq!(next(4), Next::Other, "an if with an empty branch");
    assert_eq!(
        next(5),
        Next::Input,
        "a call whose subroutine starts with an input"
    );
    assert_eq!(next(6), Next::Navigation, "a click");
    assert_eq!(next(7), Next::Other, "the end, with nothing known after it");
    assert_eq!(
        super::run::next_step(&pb, steps, 7, Next::Input, 0),
        Next::Input,
        "the end, an input after it"
    );
}

#[test]
fn probes_load_and_may_only_look() {
    // Line 10 is the action's step; the probe's steps start on line 12.
    let base = with_steps("      - goto: x\n");
    let pb = loads(&format!(
        "{base}    probe:\n      - goto: \"{{{{ base_url }}}}/new\"\n      - expect: {{ visible: \"#email\" }}\n"
    ));
    let probe = pb
        .actions
        .get(&ActionName::CreateUser)
        .and_then(|a| a.probe.as_ref())
        .expect("probe");
    assert_eq!(probe.len(), 2);
    assert_eq!(probe[1].line, 13);
    assert_error(
        &format!("{base}    probe:\n      - goto: x\n      - click: \"#save\"\n"),
        "13:9",
        "`click` is not allowed in `create_user.probe`",
    );
    // Through a subroutine that writes, and inside an `if`.
    let with_sub = base.replace(
        "actions:\n",
        "subroutines:\n  save:\n    - fill: { into: \"#a\", value: b }\nactions:\n",
    );
    assert_error(
        &format!("{with_sub}    probe:\n      - call: save\n"),
        "15:9",
        "subroutine `save` changes the app",
    );
    assert_error(
        &format!(
            "{base}    probe:\n      - if: {{ exists: \"#x\" }}\n        then: [ {{ press: {{ key: Enter }} }} ]\n"
        ),
        "13:17",
        "`press` is not allowed",
    );
}

#[test]
fn user_login_needs_steps_and_signed_out_and_takes_a_logout_pattern() {
    let base = with_steps("      - goto: x\n");
    let pb = loads(&format!(
        "{base}user_login:\n  signed_out: \"/login\"\n  logout: \"^/logout$\"\n  steps:\n    - goto: \"{{{{ base_url }}}}/login\"\n    - fill: {{ into: \"#p\", value: \"{{{{ secret.password }}}}\" }}\n"
    ));
    let ul = pb.user_login.expect("user_login");
    assert_eq!(ul.steps.len(), 2);
    assert!(ul.signed_out.regex.is_match("http://app/login?next=%2F"));
    assert!(ul.logout.expect("logout").regex.is_match("/logout"));
    assert_error(
        &format!("{base}user_login:\n  steps: [ {{ goto: x }} ]\n"),
        "12:3",
        "`signed_out`",
    );
    assert_error(
        &format!("{base}user_login:\n  signed_out: \"(\"\n  steps: [ {{ goto: x }} ]\n"),
        "12:15",
        "`user_login.signed_out`",
    );
}

#[test]
fn action_uses_finds_a_variable_in_steps_branches_and_called_subroutines() {
    let pb = loads(EXAMPLE);
    assert!(!pb.action_uses(ActionName::CreateUser, "generated_password"));
    assert!(pb.action_uses(ActionName::CreateUser, "user.email"));
    let direct = loads(&with_steps(
        "      - fill: { into: \"#pw\", value: \"{{ generated_password }}\" }\n",
    ));
    assert!(direct.action_uses(ActionName::CreateUser, "generated_password"));
    assert!(!direct.action_uses(ActionName::DeleteUser, "generated_password"));
    let called = loads(&format!(
        "{}subroutines:\n  pw:\n    - if: {{ value: \"{{{{ user.active }}}}\" }}\n      then: [ {{ fill: {{ into: \"#pw\", value: \"{{{{ generated_password }}}}\" }} }} ]\n",
        with_steps("      - call: pw\n")
    ));
    assert!(called.action_uses(ActionName::CreateUser, "generated_password"));
}
