//! The structure the code promises, checked: no import cycle between the top-level
//! modules of the library, a protocol crate with no I/O dependencies, and a published
//! playbook schema that is what the binary prints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `scim/http/write.rs` → [scim, http, write].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and string literals, so that neither can name
/// a module.
fn code_only(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Top-level modules a file refers to: `crate::x`, `crate::{x, y::z}`, and `super::`
/// chains that climb out of the file's own top-level module.
fn references(code: &str, path: &[String], modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // A use group: every top-level segment inside the outermost braces.
            let mut depth = 0usize;
            let mut segment_start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => segment_start = true,
                    c if c.is_whitespace() => {}
                    _ if segment_start && depth == 0 => {
                        found.insert(ident(&group[k..]));
                        segment_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(after));
        }
        rest = after;
    }
    // `super::super::x` from depth d reaches the crate root when it climbs d levels.
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let mut after = &rest[at..];
        let mut climbs = 0;
        while let Some(a) = after.strip_prefix("super::") {
            climbs += 1;
            after = a;
        }
        if climbs >= path.len() {
            found.insert(ident(after));
        }
        rest = &rest[at + "super::".len() * climbs..];
    }
    found.retain(|m| modules.contains(m) && Some(m) != path.first());
    found
}

/// The edges `a → b` between top-level modules of the library (`src/lib.rs`'s tree;
/// `main.rs` and `cli/` are the binary, which sits above everything).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .chain(lib.lines().filter_map(|l| l.trim().strip_prefix("mod ")))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    assert!(modules.len() >= 8, "modules of lib.rs: {modules:?}");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src").to_path_buf();
        let path = module_path(&rel);
        let Some(top) = path.first() else { continue };
        if !modules.contains(top) {
            continue; // main.rs, cli/
        }
        let code = code_only(&std::fs::read_to_string(&file).expect("read"));
        graph
            .entry(top.clone())
            .or_default()
            .extend(references(&code, &path, &modules));
    }
    graph
}

/// One cycle of the graph, if there is any (depth-first search with colours).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_import_no_cycle() {
    let graph = module_graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules: {}\nthe graph: {graph:#?}",
            cycle.join(" → ")
        );
    }
    // The design's layering, as far as the code reaches today.
    let uses = |a: &str, b: &str| graph.get(a).is_some_and(|s| s.contains(b));
    // The reader sees the real imports (else the checks below would prove nothing).
    for (a, b) in [
        ("engine", "playbook"),
        ("engine", "store"),
        ("playbook", "browser"),
        ("scim", "store"),
    ] {
        assert!(uses(a, b), "expected {a} → {b} in {graph:#?}");
    }
    for side in ["browser", "playbook", "vault"] {
        assert!(!uses(side, "scim"), "{side} must not know SCIM");
        assert!(!uses(side, "engine"), "{side} must not use the engine");
    }
    assert!(
        !uses("scim", "browser"),
        "the SCIM side never touches a browser"
    );
    assert!(
        !uses("scim", "playbook"),
        "the SCIM side never touches playbooks"
    );
    assert!(!uses("scim", "engine"), "the SCIM side only queues jobs");
    assert!(!uses("scim", "web"), "the SCIM side knows no console");
    assert!(
        !uses("web", "scim") && !uses("web", "browser") && !uses("web", "playbook"),
        "the console reads through the store and engine faces only"
    );
    assert!(
        !uses("browser", "playbook"),
        "the browser knows no playbooks"
    );
}

#[test]
fn the_checker_sees_cycles_and_use_groups() {
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let code = code_only(
        "use crate::{b::X, c};\n// crate::a in a comment\nlet s = \"crate::a\";\nfn f() { super::super::a::g() }",
    );
    let refs = references(&code, &["b".to_string(), "inner".to_string()], &modules);
    assert_eq!(refs, ["a", "c"].iter().map(|s| s.to_string()).collect());
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn the_protocol_crate_depends_on_no_io() {
    let manifest =
        std::fs::read_to_string(root().join("crates/scim-protocol/Cargo.toml")).expect("manifest");
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[dependencies]"
            && let Some((name, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            deps.push(name.trim().to_string());
        }
    }
    let allowed = ["chrono", "serde", "serde_json", "thiserror"];
    assert!(!deps.is_empty(), "no dependencies read from the manifest");
    for d in &deps {
        assert!(
            allowed.contains(&d.as_str()),
            "the protocol crate depends on `{d}`: it must stay free of I/O (allowed: {allowed:?})"
        );
    }
    assert!(!manifest.contains("default-features = true"));
    assert!(
        manifest.contains("chrono = { version = \"0.4\", default-features = false"),
        "chrono without its clock feature: the core reads no time"
    );
}

#[test]
fn published_playbook_schema_is_what_the_binary_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["playbook", "schema"])
        .output()
        .expect("run usher playbook schema");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let published =
        std::fs::read_to_string(root().join("docs/playbook.schema.json")).expect("schema file");
    assert!(
        printed == published,
        "docs/playbook.schema.json differs from `usher playbook schema`; regenerate it with \
         `usher playbook schema > docs/playbook.schema.json`"
    );
}
