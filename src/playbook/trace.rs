//! A run's trace for authors: one self-contained HTML file (CSS inline, screenshots
//! as `data:` URIs, a Content-Security-Policy that forbids any fetch) listing every
//! step in order with its `file:line`, redacted text, timing, URL, outcome and
//! screenshots, the failing step opened. A static page: nothing runs in it.

use std::fmt::Write as _;

use base64::Engine as _;

use super::run::{StepOutcome, StepRecord};

/// One run of steps in a trace: an action of a job attempt, or the CLI's run.
#[derive(Debug, Clone, Default)]
pub struct TraceSection {
    /// `attempt 1 · create_user`.
    pub heading: String,
    pub steps: Vec<StepRecord>,
    /// Why the run failed, when it did (redacted, like every text of a run).
    pub error: Option<String>,
}

/// Everything a trace shows.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub title: String,
    /// Label and value lines shown under the title (playbook, app, user, job).
    pub facts: Vec<(String, String)>,
    pub sections: Vec<TraceSection>,
}

impl Trace {
    /// Whether any section failed.
    pub fn failed(&self) -> bool {
        self.sections.iter().any(|s| s.error.is_some())
    }
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:12px 20px}
header h1{font-size:18px;margin:0 0 6px}
header dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
header dt{opacity:.7}header dd{margin:0;font-family:ui-monospace,monospace}
main{padding:12px 20px}
h2{font-size:16px;margin:18px 0 6px}
.error{background:#ffebe9;border:1px solid #cf222e;padding:8px;border-radius:6px;white-space:pre-wrap;font-family:ui-monospace,monospace}
details.step{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:4px 0}
details.step>summary{cursor:pointer;padding:6px 8px;display:flex;gap:10px;align-items:baseline}
details.step .n{color:#57606a;min-width:2.5em;text-align:right}
details.step .res{font-weight:600;min-width:4.5em}
details.ok .res{color:#1a7f37}details.not_met .res{color:#9a6700}details.failed .res{color:#cf222e}
details.failed{border-color:#cf222e;border-width:2px}
details.step .where,details.step .text{font-family:ui-monospace,monospace}
details.step .where{color:#0969da}
details.step .ms{margin-left:auto;color:#57606a}
details.step .body{padding:0 8px 8px 3.5em}
.shots{display:flex;gap:12px;flex-wrap:wrap}
.shots figure{margin:0}.shots img{max-width:560px;border:1px solid #d0d7de}
.shots figcaption{color:#57606a;font-size:12px;font-family:ui-monospace,monospace}
"#;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the trace. `screenshot` gives the PNG of an evidence hash (a missing one is
/// named, not fatal: a trace of an old job may outlive its evidence).
pub fn render_html(trace: &Trace, screenshot: &dyn Fn(&str) -> Option<Vec<u8>>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<header><h1>{}</h1><dl>",
        esc(&trace.title),
        esc(&trace.title)
    );
    let status = if trace.failed() { "failed" } else { "passed" };
    let _ = write!(h, "<dt>result</dt><dd class=\"status\">{status}</dd>");
    for (k, v) in &trace.facts {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    h.push_str("</dl></header>\n<main>\n");
    let mut n = 0usize;
    for section in &trace.sections {
        let _ = writeln!(h, "<section><h2>{}</h2>", esc(&section.heading));
        if let Some(e) = &section.error {
            let _ = writeln!(h, "<div class=\"error\">{}</div>", esc(e));
        }
        if section.steps.is_empty() {
            h.push_str("<p>No step ran.</p>\n");
        }
        // A run that failed on an answer (a sign-in still not logged in) has no failed
        // step: its last step is the one that ended it.
        let marked = section.error.is_some()
            && !section
                .steps
                .iter()
                .any(|s| matches!(s.outcome, StepOutcome::Failed { .. }));
        for (i, s) in section.steps.iter().enumerate() {
            n += 1;
            let ended = marked && i + 1 == section.steps.len();
            step_html(&mut h, n, s, ended, screenshot);
        }
        h.push_str("</section>\n");
    }
    h.push_str("</main></body></html>\n");
    h
}

fn step_html(
    h: &mut String,
    n: usize,
    s: &StepRecord,
    ended_run: bool,
    screenshot: &dyn Fn(&str) -> Option<Vec<u8>>,
) {
    let (class, result, reason) = match &s.outcome {
        StepOutcome::Ok => ("ok", "ok", None),
        StepOutcome::NotMet { reason } if ended_run => ("failed", "not met", Some(reason)),
        StepOutcome::NotMet { reason } => ("not_met", "not met", Some(reason)),
        StepOutcome::Failed { reason } => ("failed", "FAILED", Some(reason)),
    };
    let open = if class == "failed" { " open" } else { "" };
    let _ = write!(
        h,
        "<details class=\"step {class}\" data-line=\"{}\"{open}><summary><span class=\"n\">{n}</span>\
         <span class=\"res\">{result}</span><span class=\"where\">{}:{}</span>\
         <span class=\"text\">{}</span><span class=\"ms\">{} ms</span></summary><div class=\"body\">",
        s.line,
        esc(&s.file),
        s.line,
        esc(&s.step),
        s.duration_ms
    );
    let _ = write!(
        h,
        "<p>{} · {} · {}</p>",
        esc(&format!("{:?}", s.phase).to_lowercase()),
        esc(&s.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        match &s.url {
            Some(u) => format!("<span class=\"url\">{}</span>", esc(u)),
            None => "no URL".into(),
        }
    );
    if let Some(r) = reason {
        let _ = write!(h, "<div class=\"error\">{}</div>", esc(r));
    }
    let shots: Vec<(&str, &str)> = [
        ("before", s.screenshot_before.as_deref()),
        ("after", s.screenshot.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    if !shots.is_empty() {
        h.push_str("<div class=\"shots\">");
        for (label, hash) in shots {
            match screenshot(hash) {
                Some(png) => {
                    let _ = write!(
                        h,
                        "<figure><img class=\"{label}\" alt=\"{label}\" src=\"data:image/png;base64,{}\">\
                         <figcaption>{label} · sha256 {}</figcaption></figure>",
                        base64::engine::general_purpose::STANDARD.encode(png),
                        esc(hash)
                    );
                }
                None => {
                    let _ = write!(
                        h,
                        "<figure><figcaption>{label} · sha256 {} (not in the evidence store)</figcaption></figure>",
                        esc(hash)
                    );
                }
            }
        }
        h.push_str("</div>");
    }
    h.push_str("</div></details>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::Phase;

    fn rec(line: usize, outcome: StepOutcome, shot: Option<&str>) -> StepRecord {
        StepRecord {
            at: chrono::DateTime::UNIX_EPOCH,
            phase: Phase::Steps,
            step: "fill label=<Password>".into(),
            file: "playbooks/a.yaml".into(),
            line,
            url: Some("http://x/?a=1&b=2".into()),
            duration_ms: 12,
            screenshot: shot.map(str::to_owned),
            screenshot_before: None,
            outcome,
        }
    }

    #[test]
    fn every_step_is_listed_escaped_with_the_failure_opened() {
        let trace = Trace {
            title: "create_user".into(),
            facts: vec![("playbook".into(), "playbooks/a.yaml".into())],
            sections: vec![TraceSection {
                heading: "create_user".into(),
                steps: vec![
                    rec(3, StepOutcome::Ok, Some("aa")),
                    rec(
                        4,
                        StepOutcome::Failed {
                            reason: "timed out".into(),
                        },
                        Some("gone"),
                    ),
                ],
                error: Some("playbooks/a.yaml:4: boom".into()),
            }],
        };
        let html = render_html(&trace, &|h| (h == "aa").then(|| b"\x89PNG".to_vec()));
        assert!(html.contains("playbooks/a.yaml:3"), "{html}");
        assert!(html.contains("fill label=&lt;Password&gt;"));
        assert!(html.contains("http://x/?a=1&amp;b=2"));
        assert!(html.contains("data:image/png;base64,iVBORw=="));
        assert!(html.contains("sha256 gone (not in the evidence store)"));
        assert_eq!(html.matches("class=\"step failed\"").count(), 1);
        assert!(html.contains("data-line=\"4\" open>"));
        assert!(html.contains("<dd class=\"status\">failed</dd>"));
        assert!(!html.contains("http://x\"") && !html.contains("src=\"http"));
    }
}
