//! Replays recorded IdP request sequences (fixtures/scim/{okta,entra}/*.json)
//! against a SCIM root and checks the answers.
//!
//! File format (one scenario per file):
//!
//! ```json
//! {
//!   "source": "URL" | ["URL", ...],
//!   "description": "...",
//!   "vars": { "userName": "jdoe-${run}@example.com" },
//!   "steps": [
//!     { "name": "...",
//!       "request": { "method": "GET", "path": "/Users?...", "headers": {..}, "body": <json> },
//!       "expect": { "status": 200 | [200, 204],
//!                   "json": <subset>, "headers": {"Location": "*"},
//!                   "absent": ["/members"],
//!                   "without": {"/members": [{"value": "${userId}"}]} },
//!       "capture": { "userId": "/id" } }
//!   ]
//! }
//! ```
//!
//! * `${name}` is replaced in `path`, header values, `body` (keys and string
//!   values), and everything under `expect` and `capture`. `${run}` is the run id
//!   given by the caller; `vars` may refer to `${run}` and to each other;
//!   `capture` adds vars from response bodies. A string that is exactly
//!   `"${name}"` takes the var's JSON value as is (so a captured number stays a
//!   number); otherwise the var is spliced in as text. An unknown var is an error.
//! * `path` is appended to the SCIM root as written after substitution; spaces and
//!   `"` left in the query are percent-encoded by URL parsing, anything else must
//!   be encoded by the fixture.
//! * Every request carries `Authorization: Bearer <token>` and
//!   `Accept: application/scim+json`; requests with a body get
//!   `Content-Type: application/scim+json` unless the step sets its own.
//! * `expect.json` is a subset match: an object matches if every listed key is
//!   present (case-sensitive) and matches recursively; an array matches if every
//!   listed element matches some element of the actual array; `"*"` matches any
//!   present value; numbers compare numerically; anything else compares equal.
//! * `expect.headers`: names case-insensitive; `"*"` means present, otherwise the
//!   value must be equal.
//! * `expect.absent`: JSON pointers that must not resolve, or resolve to null or
//!   to an empty array (RFC 7643 §2.5: unassigned, null and [] are equivalent).
//! * `expect.without`: JSON pointer -> list of subsets; no element of the array
//!   at that pointer may match any of them (a missing/null array passes). This is
//!   how "the member is gone" is written.
//! * `capture`: var -> JSON pointer into the response body; a missing target fails
//!   the step.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use serde_json::{Map, Value};

pub struct ReplayOutcome {
    pub file: String,
    pub steps: usize,
}

/// Replays one fixture file; fails at the first mismatching step.
pub async fn replay_file(
    client: &reqwest::Client,
    scim_root: &str,
    token: &str,
    file: &Path,
    run_id: &str,
) -> anyhow::Result<ReplayOutcome> {
    let file_name = file.display().to_string();
    let text =
        std::fs::read_to_string(file).with_context(|| format!("{file_name}: cannot read"))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{file_name}: not valid JSON"))?;
    let steps = doc
        .get("steps")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{file_name}: no \"steps\" array"))?;

    let mut vars = Vars::new(run_id);
    if let Some(declared) = doc.get("vars") {
        let declared = declared
            .as_object()
            .ok_or_else(|| anyhow!("{file_name}: \"vars\" must be an object"))?;
        vars.declare(declared)
            .with_context(|| format!("{file_name}: vars"))?;
    }

    let root = scim_root.trim_end_matches('/');
    for (index, step) in steps.iter().enumerate() {
        let name = step
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("step {}", index + 1));
        let label = format!("{file_name}: step {} \"{name}\"", index + 1);
        run_step(client, root, token, step, &mut vars)
            .await
            .with_context(|| label.clone())?;
    }
    Ok(ReplayOutcome {
        file: file_name,
        steps: steps.len(),
    })
}

/// Replays every `*.json` file directly in `dir`, in file-name order. All files
/// are run; if any failed, the error lists every failure.
pub async fn replay_dir(
    client: &reqwest::Client,
    scim_root: &str,
    token: &str,
    dir: &Path,
    run_id: &str,
) -> anyhow::Result<Vec<ReplayOutcome>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        bail!("no *.json fixtures in {}", dir.display());
    }
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for file in &files {
        match replay_file(client, scim_root, token, file, run_id).await {
            Ok(o) => outcomes.push(o),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if failures.is_empty() {
        Ok(outcomes)
    } else {
        bail!(
            "{} of {} fixture files failed:\n\n{}",
            failures.len(),
            files.len(),
            failures.join("\n\n")
        )
    }
}

async fn run_step(
    client: &reqwest::Client,
    root: &str,
    token: &str,
    step: &Value,
    vars: &mut Vars,
) -> anyhow::Result<()> {
    let request = step
        .get("request")
        .ok_or_else(|| anyhow!("no \"request\""))?;
    let request = vars.subst_value(request)?;
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("request has no \"method\""))?;
    let path = request
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("request has no \"path\""))?;
    let url = format!("{root}{path}");
    let body = request.get("body").filter(|b| !b.is_null());
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("bad method {method}"))?;

    let mut builder = client
        .request(method.clone(), &url)
        .bearer_auth(token)
        .header(reqwest::header::ACCEPT, "application/scim+json");
    let mut has_content_type = false;
    if let Some(headers) = request.get("headers").and_then(Value::as_object) {
        for (k, v) in headers {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            has_content_type |= k.eq_ignore_ascii_case("content-type");
            builder = builder.header(k.as_str(), v);
        }
    }
    if let Some(body) = body {
        if !has_content_type {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/scim+json");
        }
        builder = builder.body(serde_json::to_vec(body)?);
    }
    let request_text = match body {
        Some(b) => format!("{method} {url}\n{}", serde_json::to_string_pretty(b)?),
        None => format!("{method} {url}"),
    };

    let response = builder
        .send()
        .await
        .with_context(|| format!("request failed: {request_text}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let raw = response.text().await.unwrap_or_default();
    let actual: Value = if raw.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&raw).unwrap_or(Value::String(raw.clone()))
    };
    let actual_text = match &actual {
        Value::Null => "<empty body>".to_owned(),
        Value::String(s) if s == &raw => format!("<not JSON> {raw}"),
        v => serde_json::to_string_pretty(v)?,
    };
    let fail = |what: String| {
        anyhow!("{what}\n--- request\n{request_text}\n--- actual: status {status}\n{actual_text}")
    };

    let expect = match step.get("expect") {
        Some(e) => vars.subst_value(e)?,
        None => Value::Null,
    };
    if let Some(want) = expect.get("status") {
        let allowed: Vec<u64> = match want {
            Value::Array(a) => a.iter().filter_map(Value::as_u64).collect(),
            v => v.as_u64().into_iter().collect(),
        };
        if allowed.is_empty() {
            bail!("expect.status must be a number or an array of numbers");
        }
        if !allowed.contains(&u64::from(status)) {
            return Err(fail(format!(
                "status mismatch: expected {want}, got {status}\n--- expected json subset\n{}",
                expect
                    .get("json")
                    .map(|j| serde_json::to_string_pretty(j).unwrap_or_default())
                    .unwrap_or_else(|| "<none>".into())
            )));
        }
    }
    if let Some(want) = expect.get("headers").and_then(Value::as_object) {
        for (name, value) in want {
            let got = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
            let ok = match (value.as_str(), got) {
                (_, None) => false,
                (Some("*"), Some(_)) => true,
                (Some(w), Some(g)) => w == g,
                (None, Some(g)) => *value == *g,
            };
            if !ok {
                return Err(fail(format!(
                    "header mismatch: expected {name}: {value}, got {got:?}"
                )));
            }
        }
    }
    if let Some(want) = expect.get("json")
        && let Err(at) = subset_match(want, &actual, "")
    {
        return Err(fail(format!(
            "body mismatch at {at}\n--- expected json subset\n{}",
            serde_json::to_string_pretty(want)?
        )));
    }
    if let Some(absent) = expect.get("absent").and_then(Value::as_array) {
        for pointer in absent.iter().filter_map(Value::as_str) {
            if !is_unassigned(actual.pointer(pointer)) {
                return Err(fail(format!("{pointer} should be absent but is present")));
            }
        }
    }
    if let Some(without) = expect.get("without").and_then(Value::as_object) {
        for (pointer, forbidden) in without {
            let forbidden: Vec<&Value> = match forbidden {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            match actual.pointer(pointer) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for f in &forbidden {
                        if let Some(hit) = items.iter().find(|i| subset_match(f, i, "").is_ok()) {
                            return Err(fail(format!(
                                "{pointer} must not contain an element matching {f}, found {hit}"
                            )));
                        }
                    }
                }
                Some(other) => {
                    return Err(fail(format!("{pointer} should be an array, found {other}")));
                }
            }
        }
    }
    if let Some(capture) = step.get("capture").and_then(Value::as_object) {
        for (var, pointer) in capture {
            let pointer = pointer
                .as_str()
                .ok_or_else(|| anyhow!("capture {var}: pointer must be a string"))?;
            let pointer = vars.subst_str(pointer)?;
            match actual.pointer(&pointer) {
                Some(v) if !v.is_null() => vars.set(var, v.clone()),
                _ => return Err(fail(format!("capture {var}: nothing at {pointer}"))),
            }
        }
    }
    Ok(())
}

/// Missing, null, or an empty array (RFC 7643 §2.5).
pub fn is_unassigned(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// `Ok(())` if `actual` contains everything in `expected`; otherwise the JSON
/// pointer-like location of the first difference.
pub fn subset_match(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    let here = || {
        if at.is_empty() {
            "/".to_owned()
        } else {
            at.to_owned()
        }
    };
    match (expected, actual) {
        (Value::String(s), _) if s == "*" => Ok(()),
        (Value::Object(want), Value::Object(got)) => {
            for (k, w) in want {
                let child = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match got.get(k) {
                    Some(g) => subset_match(w, g, &child)?,
                    None => return Err(format!("{child} (missing)")),
                }
            }
            Ok(())
        }
        (Value::Array(want), Value::Array(got)) => {
            for (i, w) in want.iter().enumerate() {
                if !got.iter().any(|g| subset_match(w, g, "").is_ok()) {
                    return Err(format!("{at}/[{i}] (no matching element)"));
                }
            }
            Ok(())
        }
        (Value::Number(w), Value::Number(g)) => {
            if w == g || (w.as_f64().is_some() && w.as_f64() == g.as_f64()) {
                Ok(())
            } else {
                Err(here())
            }
        }
        (w, g) if w == g => Ok(()),
        _ => Err(here()),
    }
}

/// Variables: `run` plus declared and captured ones.
pub struct Vars {
    values: BTreeMap<String, Value>,
}

impl Vars {
    pub fn new(run_id: &str) -> Self {
        let mut values = BTreeMap::new();
        values.insert("run".to_owned(), Value::String(run_id.to_owned()));
        Vars { values }
    }

    pub fn set(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_owned(), value);
    }

    /// Declared vars may refer to `run` and to each other, in any order.
    pub fn declare(&mut self, declared: &Map<String, Value>) -> anyhow::Result<()> {
        let mut pending: Vec<(&String, &Value)> = declared.iter().collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut last_err = None;
            pending.retain(|(name, value)| match self.subst_value(value) {
                Ok(v) => {
                    self.values.insert((*name).clone(), v);
                    false
                }
                Err(e) => {
                    last_err = Some(e);
                    true
                }
            });
            if pending.len() == before {
                return Err(last_err.unwrap_or_else(|| anyhow!("cyclic vars")));
            }
        }
        Ok(())
    }

    pub fn subst_value(&self, value: &Value) -> anyhow::Result<Value> {
        Ok(match value {
            Value::String(s) => {
                if let Some(name) = whole_var(s) {
                    self.lookup(name)?.clone()
                } else {
                    Value::String(self.subst_str(s)?)
                }
            }
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|v| self.subst_value(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => {
                let mut out = Map::new();
                for (k, v) in o {
                    out.insert(self.subst_str(k)?, self.subst_value(v)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    pub fn subst_str(&self, s: &str) -> anyhow::Result<String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unterminated ${{ in {s:?}"))?;
            match self.lookup(&after[..end])? {
                Value::String(v) => out.push_str(v),
                v => out.push_str(&v.to_string()),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str) -> anyhow::Result<&Value> {
        self.values
            .get(name)
            .ok_or_else(|| anyhow!("unknown var ${{{name}}}"))
    }
}

fn whole_var(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    (!inner.is_empty() && !inner.contains('}') && !inner.contains("${")).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_objects_are_recursive_and_case_sensitive() {
        let actual =
            json!({"userName": "a", "name": {"givenName": "G", "familyName": "F"}, "active": true});
        assert!(subset_match(&json!({"name": {"givenName": "G"}}), &actual, "").is_ok());
        assert!(subset_match(&json!({}), &actual, "").is_ok());
        assert_eq!(
            subset_match(&json!({"username": "a"}), &actual, ""),
            Err("/username (missing)".into())
        );
        assert_eq!(
            subset_match(&json!({"name": {"givenName": "X"}}), &actual, ""),
            Err("/name/givenName".into())
        );
        // "False" is not false
        assert!(subset_match(&json!({"active": "True"}), &actual, "").is_err());
    }

    #[test]
    fn subset_arrays_match_any_element() {
        let actual = json!({"members": [{"value": "1", "display": "x"}, {"value": "2"}]});
        assert!(
            subset_match(
                &json!({"members": [{"value": "2"}, {"value": "1"}]}),
                &actual,
                ""
            )
            .is_ok()
        );
        assert!(subset_match(&json!({"members": []}), &actual, "").is_ok());
        assert!(subset_match(&json!({"members": [{"value": "3"}]}), &actual, "").is_err());
        assert!(subset_match(&json!({"members": {"value": "1"}}), &actual, "").is_err());
    }

    #[test]
    fn subset_star_numbers_and_scalars() {
        let actual = json!({"id": "abc", "totalResults": 1, "n": null});
        assert!(subset_match(&json!({"id": "*"}), &actual, "").is_ok());
        assert!(subset_match(&json!({"n": "*"}), &actual, "").is_ok());
        assert!(subset_match(&json!({"missing": "*"}), &actual, "").is_err());
        assert!(subset_match(&json!({"totalResults": 1.0}), &actual, "").is_ok());
        assert!(subset_match(&json!({"totalResults": "1"}), &actual, "").is_err());
        assert!(subset_match(&json!("*"), &Value::Null, "").is_ok());
        assert!(subset_match(&json!({"a": 1}), &json!([1]), "").is_err());
    }

    #[test]
    fn substitution_in_strings_keys_and_whole_values() {
        let mut vars = Vars::new("r1");
        vars.declare(
            json!({"user": "u-${run}@x", "both": "${user}/${run}"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        vars.set("n", json!(7));
        assert_eq!(
            vars.subst_str("/Users?f=${user}").unwrap(),
            "/Users?f=u-r1@x"
        );
        assert_eq!(vars.subst_str("${both}").unwrap(), "u-r1@x/r1");
        let v = vars
            .subst_value(&json!({"k-${run}": ["${n}", "n=${n}", {"x": "${user}"}], "b": true}))
            .unwrap();
        assert_eq!(v, json!({"k-r1": [7, "n=7", {"x": "u-r1@x"}], "b": true}));
        assert_eq!(
            vars.subst_str("no vars $ {x} $").unwrap(),
            "no vars $ {x} $"
        );
    }

    #[test]
    fn unassigned_values() {
        let v = json!({"a": null, "b": [], "c": [1], "d": ""});
        assert!(is_unassigned(v.pointer("/a")));
        assert!(is_unassigned(v.pointer("/b")));
        assert!(is_unassigned(v.pointer("/zz")));
        assert!(!is_unassigned(v.pointer("/c")));
        assert!(!is_unassigned(v.pointer("/d")));
    }

    #[test]
    fn substitution_errors() {
        let mut vars = Vars::new("r");
        assert!(vars.subst_str("${nope}").is_err());
        assert!(vars.subst_str("${run").is_err());
        assert!(
            vars.declare(json!({"a": "${b}", "b": "${a}"}).as_object().unwrap())
                .is_err()
        );
    }
}
