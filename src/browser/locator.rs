//! Locator syntax (parsed here, resolved in the page by `inject.js`).
//!
//! ```text
//! locator   := part (" >> " part)*
//! part      := css | "css=" css | "text=" value | label=value | "role=" role attrs*
//!            | "xpath=" expr | "//…" | "nth=" integer | "\"exact text\""
//! value     := unquoted text (case-insensitive substring, whitespace normalised)
//!            | "quoted" / 'quoted' (exact match after whitespace normalisation)
//! attrs     := "[name=" value (" exact" | " s" | " i")? "]" | "[level=" N "]" | "[exact]"
//! css       := any CSS selector, optionally ending in :has-text("…") and/or :visible
//! ```
//! Each part after `>>` is resolved inside the FIRST match of the part before it; `nth=N`
//! picks the N-th (0-based, negative from the end) match of what precedes it.
//!
//! A comma inside a CSS part is a CSS selector list (every match, in document order); it
//! never separates chains, so a comma list in a part that scopes a later part
//! (`A >> b, A >> c`) is rejected: it almost always meant "either chain".
//!
//! `row` (a whole part, first in the chain) is the current row of a `for_each`: the
//! caller substitutes it with [`Locator::within`] and a row made by [`Locator::row`].

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::error::LocatorError;

/// One step of a locator chain, as sent to the page helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum Part {
    Css {
        selector: String,
        has_text: Vec<String>,
        visible: bool,
    },
    Text {
        text: String,
        exact: bool,
    },
    Label {
        text: String,
        exact: bool,
    },
    Role {
        role: String,
        name: Option<String>,
        exact: bool,
        level: Option<u32>,
    },
    Xpath {
        expr: String,
    },
    Nth {
        n: i64,
    },
    /// `row`: the current row of the caller's loop, replaced by [`Locator::within`].
    CurrentRow,
    /// The `n`-th element remembered under `key` by [`super::Page::remember_rows`]; when
    /// the page has navigated since (the remembered elements are gone with the
    /// document), the `n`-th match of `rows` on the new page.
    Row {
        key: String,
        n: usize,
        rows: Vec<Part>,
    },
}

/// A parsed locator. `Display` prints the source it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    source: String,
    pub(super) parts: Vec<Part>,
}

impl Locator {
    /// Parses a locator; errors carry a message and the byte offset of the problem.
    pub fn parse(source: &str) -> Result<Locator, LocatorError> {
        let mut parts = Vec::new();
        let chain = split_chain(source)?;
        let last = chain.len().saturating_sub(1);
        for (i, (start, text)) in chain.iter().enumerate() {
            let part = parse_part(text, *start)?;
            if part == Part::CurrentRow && i > 0 {
                return Err(err(
                    "`row` (the current row of for_each) can only start a locator",
                    *start + (text.len() - text.trim_start().len()),
                ));
            }
            if i < last
                && let Part::Css { selector, .. } = &part
                && let Some(comma) = top_level_comma(selector)
            {
                let t = text.trim();
                return Err(err(
                    format!(
                        "the comma in `{t}` makes one CSS selector list, which then scopes \
                         the next part; a comma never separates ` >> ` chains: write the \
                         shared scope once (`A >> b, c`: b or c inside A)"
                    ),
                    *start + (text.len() - text.trim_start().len()) + comma,
                ));
            }
            parts.push(part);
        }
        if matches!(parts.first(), Some(Part::Nth { .. })) {
            return Err(err("nth= needs a locator before it", 0));
        }
        Ok(Locator {
            source: source.to_string(),
            parts,
        })
    }

    /// The text this locator was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Starts with `row`, the current row of a loop.
    pub fn starts_with_row(&self) -> bool {
        self.parts.first() == Some(&Part::CurrentRow)
    }

    /// The `n`-th of the rows remembered under `key` by [`super::Page::remember_rows`]
    /// (which must have been called with `rows`). Shown as `ROWS >> nth=n`.
    pub fn row(rows: &Locator, key: &str, n: usize) -> Locator {
        Locator {
            source: format!("{} >> nth={n}", rows.source),
            parts: vec![Part::Row {
                key: key.to_owned(),
                n,
                rows: rows.parts.clone(),
            }],
        }
    }

    /// This locator inside `scope`: a leading `row` is the scope itself (`row >> a` is
    /// `SCOPE >> a`), anything else is looked for inside it (`a` is `SCOPE >> a`).
    pub fn within(&self, scope: &Locator) -> Locator {
        let mut parts = scope.parts.clone();
        if self.starts_with_row() {
            parts.extend(self.parts.iter().skip(1).cloned());
            let rest = self.source.trim_start()["row".len()..].trim_start();
            let rest = rest.strip_prefix(">>").map(str::trim_start).unwrap_or(rest);
            let source = if rest.is_empty() {
                scope.source.clone()
            } else {
                format!("{} >> {rest}", scope.source)
            };
            return Locator { source, parts };
        }
        parts.extend(self.parts.iter().cloned());
        Locator {
            source: format!("{} >> {}", scope.source, self.source),
            parts,
        }
    }

    /// JSON description sent to `window.__usher`.
    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(&self.parts).unwrap_or_else(|_| "[]".to_string())
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Locator {
    type Err = LocatorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Locator::parse(s)
    }
}

impl TryFrom<&str> for Locator {
    type Error = LocatorError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Locator::parse(s)
    }
}

/// WAI-ARIA roles accepted by `role=` (a typo would otherwise never match anything).
pub const ARIA_ROLES: &[&str] = &[
    "alert",
    "alertdialog",
    "application",
    "article",
    "banner",
    "blockquote",
    "button",
    "caption",
    "cell",
    "checkbox",
    "code",
    "columnheader",
    "combobox",
    "complementary",
    "contentinfo",
    "definition",
    "deletion",
    "dialog",
    "directory",
    "document",
    "emphasis",
    "feed",
    "figure",
    "form",
    "generic",
    "grid",
    "gridcell",
    "group",
    "heading",
    "img",
    "insertion",
    "link",
    "list",
    "listbox",
    "listitem",
    "log",
    "main",
    "marquee",
    "math",
    "menu",
    "menubar",
    "menuitem",
    "menuitemcheckbox",
    "menuitemradio",
    "meter",
    "navigation",
    "none",
    "note",
    "option",
    "paragraph",
    "presentation",
    "progressbar",
    "radio",
    "radiogroup",
    "region",
    "row",
    "rowgroup",
    "rowheader",
    "scrollbar",
    "search",
    "searchbox",
    "separator",
    "slider",
    "spinbutton",
    "status",
    "strong",
    "subscript",
    "superscript",
    "switch",
    "tab",
    "table",
    "tablist",
    "tabpanel",
    "term",
    "textbox",
    "time",
    "timer",
    "toolbar",
    "tooltip",
    "tree",
    "treegrid",
    "treeitem",
];

fn err(message: impl Into<String>, offset: usize) -> LocatorError {
    LocatorError {
        message: message.into(),
        offset,
    }
}

/// Splits on ` >> ` outside quotes, brackets and parentheses. Returns (byte offset, text).
fn split_chain(src: &str) -> Result<Vec<(usize, &str)>, LocatorError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut depth: i32 = 0;
    // Open brackets, so that an unclosed one is reported where it was opened.
    let mut open: Vec<(u8, usize)> = Vec::new();
    let mut quote: Option<(u8, usize)> = None;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some((q, _)) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' => quote = Some((c, i)),
            b'[' | b'(' => {
                depth += 1;
                open.push((c, i));
            }
            b']' | b')' => {
                depth -= 1;
                let want = if c == b']' { b'[' } else { b'(' };
                match open.pop() {
                    Some((o, _)) if o == want => {}
                    _ => return Err(err(format!("unmatched `{}`", c as char), i)),
                }
            }
            b'>' if depth <= 0 && bytes.get(i + 1) == Some(&b'>') => {
                out.push((start, &src[start..i]));
                i += 2;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some((_, at)) = quote {
        return Err(err("unterminated quote", at));
    }
    if let Some((c, at)) = open.pop() {
        return Err(err(format!("unclosed `{}`", c as char), at));
    }
    out.push((start, &src[start..]));
    Ok(out)
}

/// Offset of the first non-space byte of `text` inside the source.
fn trim_with_offset(text: &str, base: usize) -> (&str, usize) {
    let lead = text.len() - text.trim_start().len();
    (text.trim(), base + lead)
}

fn parse_part(raw: &str, base: usize) -> Result<Part, LocatorError> {
    let (text, at) = trim_with_offset(raw, base);
    if text.is_empty() {
        return Err(err("empty locator part", base));
    }
    // engine=… prefix
    let engine_len = text
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        .count();
    if engine_len > 0 && text.as_bytes().get(engine_len) == Some(&b'=') {
        let engine = &text[..engine_len];
        let (body, body_at) = trim_with_offset(&text[engine_len + 1..], at + engine_len + 1);
        return match engine {
            "css" => parse_css(body, body_at),
            "text" => {
                let (t, exact) = parse_value(body, body_at)?;
                Ok(Part::Text { text: t, exact })
            }
            "label" => {
                let (t, exact) = parse_value(body, body_at)?;
                Ok(Part::Label { text: t, exact })
            }
            "role" => parse_role(body, body_at),
            "xpath" => {
                if body.is_empty() {
                    Err(err("empty xpath", body_at))
                } else {
                    Ok(Part::Xpath {
                        expr: body.to_string(),
                    })
                }
            }
            "nth" => body
                .parse::<i64>()
                .map(|n| Part::Nth { n })
                .map_err(|_| err("nth= needs an integer", body_at)),
            other => Err(err(format!("unknown selector engine '{other}'"), at)),
        };
    }
    if text == "row" {
        return Ok(Part::CurrentRow);
    }
    if text.starts_with("//") || text.starts_with("(//") || text.starts_with("..") {
        return Ok(Part::Xpath {
            expr: text.to_string(),
        });
    }
    if text.starts_with('"') || text.starts_with('\'') {
        let (t, exact) = parse_value(text, at)?;
        return Ok(Part::Text { text: t, exact });
    }
    parse_css(text, at)
}

/// Parses a quoted string starting at `s[0]`; returns (content, bytes consumed).
fn parse_quoted(s: &str, at: usize) -> Result<(String, usize), LocatorError> {
    let mut chars = s.char_indices();
    let q = match chars.next() {
        Some((_, c)) if c == '"' || c == '\'' => c,
        _ => return Err(err("expected a quoted string", at)),
    };
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == q {
            return Ok((out, i + c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    Err(err("unterminated quote", at))
}

/// `value` or `"value"`; quoted means exact.
fn parse_value(body: &str, at: usize) -> Result<(String, bool), LocatorError> {
    if body.is_empty() {
        return Err(err("empty value", at));
    }
    if body.starts_with('"') || body.starts_with('\'') {
        let (v, used) = parse_quoted(body, at)?;
        if used != body.len() {
            return Err(err("unexpected text after closing quote", at + used));
        }
        if v.trim().is_empty() {
            return Err(err("empty value", at));
        }
        return Ok((v, true));
    }
    Ok((body.to_string(), false))
}

fn parse_role(body: &str, at: usize) -> Result<Part, LocatorError> {
    let role_len = body
        .bytes()
        .take_while(|b| b.is_ascii_alphabetic() || *b == b'-')
        .count();
    if role_len == 0 {
        return Err(err("role= needs a role name", at));
    }
    let role = body[..role_len].to_ascii_lowercase();
    if !ARIA_ROLES.contains(&role.as_str()) {
        return Err(err(format!("unknown ARIA role `{role}`"), at));
    }
    let mut name = None;
    let mut exact = false;
    let mut level = None;
    let mut rest = &body[role_len..];
    let mut pos = at + role_len;
    loop {
        let trimmed = rest.trim_start();
        pos += rest.len() - trimmed.len();
        rest = trimmed;
        if rest.is_empty() {
            break;
        }
        if !rest.starts_with('[') {
            return Err(err("expected [attribute] after role name", pos));
        }
        let inner_start = pos + 1;
        let inner = &rest[1..];
        let key_len = inner
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-')
            .count();
        let key = &inner[..key_len];
        let mut cur = &inner[key_len..];
        let mut cur_at = inner_start + key_len;
        let mut value: Option<String> = None;
        if let Some(after_eq) = cur.strip_prefix('=') {
            cur_at += 1;
            if after_eq.starts_with('"') || after_eq.starts_with('\'') {
                let (v, used) = parse_quoted(after_eq, cur_at)?;
                value = Some(v);
                cur = &after_eq[used..];
                cur_at += used;
            } else {
                let len = after_eq
                    .find(|c: char| c == ']' || c.is_whitespace())
                    .unwrap_or(after_eq.len());
                value = Some(after_eq[..len].to_string());
                cur = &after_eq[len..];
                cur_at += len;
            }
        }
        // optional flag word, then ']'
        let t = cur.trim_start();
        cur_at += cur.len() - t.len();
        cur = t;
        let flag_len = cur.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let flag = &cur[..flag_len];
        let flag_at = cur_at;
        cur = cur[flag_len..].trim_start();
        let close = rest.len() - cur.len();
        if !cur.starts_with(']') {
            return Err(err("expected ]", pos + close));
        }
        match (key, value) {
            ("name", Some(v)) => {
                if v.trim().is_empty() {
                    return Err(err("empty name", inner_start));
                }
                name = Some(v)
            }
            ("level", Some(v)) => {
                level = Some(
                    v.parse::<u32>()
                        .map_err(|_| err("level needs a number", inner_start))?,
                )
            }
            ("exact", None) => exact = true,
            ("", _) => return Err(err("expected an attribute name", inner_start)),
            (k, _) => {
                return Err(err(
                    format!("unsupported role attribute '{k}' (name, level, exact)"),
                    inner_start,
                ));
            }
        }
        match flag {
            "" | "i" => {}
            "exact" | "s" => exact = true,
            other => return Err(err(format!("unknown flag '{other}'"), flag_at)),
        }
        rest = &cur[1..];
        pos += close + 1;
    }
    Ok(Part::Role {
        role,
        name,
        exact,
        level,
    })
}

/// CSS with optional trailing `:has-text("…")` / `:visible` pseudos.
fn parse_css(body: &str, at: usize) -> Result<Part, LocatorError> {
    if body.is_empty() {
        return Err(err("empty CSS selector", at));
    }
    let bytes = body.as_bytes();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut first_pseudo: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
        } else {
            match c {
                b'"' | b'\'' => quote = Some(c),
                b'[' | b'(' => depth += 1,
                b']' | b')' => depth -= 1,
                b':' if depth == 0
                    && (body[i..].starts_with(":has-text(") || is_visible_pseudo(&body[i..])) =>
                {
                    first_pseudo = Some(i);
                    break;
                }
                _ => {}
            }
        }
        i += 1;
    }
    check_attribute_selectors(&body[..first_pseudo.unwrap_or(body.len())], at)?;
    let Some(p) = first_pseudo else {
        return Ok(Part::Css {
            selector: body.to_string(),
            has_text: Vec::new(),
            visible: false,
        });
    };
    let selector = if p == 0 {
        "*".to_string()
    } else {
        body[..p].to_string()
    };
    let mut has_text = Vec::new();
    let mut visible = false;
    let mut rest = &body[p..];
    let mut pos = at + p;
    while !rest.is_empty() {
        if let Some(arg) = rest.strip_prefix(":has-text(") {
            let arg_at = pos + ":has-text(".len();
            let (v, used) = parse_quoted(arg, arg_at)
                .map_err(|_| err(":has-text() needs a quoted string", arg_at))?;
            let after = &arg[used..];
            let Some(after_close) = after.strip_prefix(')') else {
                return Err(err("expected ) after :has-text string", arg_at + used));
            };
            has_text.push(v);
            pos = arg_at + used + 1;
            rest = after_close;
        } else if is_visible_pseudo(rest) {
            visible = true;
            rest = &rest[":visible".len()..];
            pos += ":visible".len();
        } else {
            return Err(err(
                ":has-text()/:visible must end the CSS part (use >> to go deeper)",
                pos,
            ));
        }
    }
    Ok(Part::Css {
        selector,
        has_text,
        visible,
    })
}

/// Checks the attribute selectors (`[name='x']`) of a CSS selector, the part of CSS
/// authors most often get wrong (`[name=Save changes]`, `[tabindex=1]`): the browser
/// would reject the whole selector only when the step runs.
fn check_attribute_selectors(css: &str, at: usize) -> Result<(), LocatorError> {
    const OPS: [&str; 6] = ["~=", "|=", "^=", "$=", "*=", "="];
    let bytes = css.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'\\' => {
                i += 2;
                continue;
            }
            b'"' | b'\'' => quote = Some(c),
            b'[' => {
                let open = i;
                let mut j = i + 1;
                let skip_ws = |j: &mut usize| {
                    while *j < bytes.len() && bytes[*j].is_ascii_whitespace() {
                        *j += 1;
                    }
                };
                skip_ws(&mut j);
                let name_start = j;
                while j < bytes.len()
                    && (bytes[j].is_ascii_alphanumeric()
                        || matches!(bytes[j], b'-' | b'_' | b'\\' | b'*')
                        || (bytes[j] == b'|' && bytes.get(j + 1) != Some(&b'='))
                        || bytes[j] >= 0x80)
                {
                    j += 1;
                }
                if j == name_start {
                    return Err(err("expected an attribute name after `[`", at + name_start));
                }
                skip_ws(&mut j);
                let rest = &css[j..];
                if let Some(r) = rest.strip_prefix(']') {
                    let _ = r;
                    i = j + 1;
                    continue;
                }
                let Some(op) = OPS.iter().find(|o| rest.starts_with(**o)) else {
                    return Err(err(
                        "expected `]` or `=` (or ~= |= ^= $= *=) after the attribute name",
                        at + j,
                    ));
                };
                j += op.len();
                skip_ws(&mut j);
                let value_start = j;
                match bytes.get(j) {
                    Some(q @ (b'"' | b'\'')) => {
                        j += 1;
                        while j < bytes.len() && bytes[j] != *q {
                            j += if bytes[j] == b'\\' { 2 } else { 1 };
                        }
                        j += 1; // the closing quote (split_chain saw it balanced)
                    }
                    _ => {
                        while j < bytes.len() && !bytes[j].is_ascii_whitespace() && bytes[j] != b']'
                        {
                            j += 1;
                        }
                        let v = &css[value_start..j.min(css.len())];
                        if !is_css_ident(v) {
                            return Err(err(
                                format!(
                                    "attribute value `{v}` must be quoted (`[…='{v}']`): unquoted, \
                                     only a CSS identifier is allowed"
                                ),
                                at + value_start,
                            ));
                        }
                    }
                }
                skip_ws(&mut j);
                // An optional case flag, then `]`.
                if j < bytes.len() && matches!(bytes[j], b'i' | b'I' | b's' | b'S') {
                    j += 1;
                    skip_ws(&mut j);
                }
                if bytes.get(j) != Some(&b']') {
                    let shown = css[value_start..].split(']').next().unwrap_or("");
                    return Err(err(
                        format!(
                            "attribute value `{}` must be one quoted string or identifier \
                             (quote values with spaces)",
                            shown.trim()
                        ),
                        at + value_start,
                    ));
                }
                let _ = open;
                i = j + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A CSS identifier (what an unquoted attribute value may be); escapes are left to the
/// browser.
fn is_css_ident(v: &str) -> bool {
    if v.contains('\\') {
        return true;
    }
    let rest = v
        .strip_prefix("--")
        .or_else(|| v.strip_prefix('-'))
        .unwrap_or(v);
    let starts_with_dashes = rest.len() != v.len();
    let mut chars = rest.chars();
    let first_ok = match chars.next() {
        Some(c) => c.is_ascii_alphabetic() || c == '_' || !c.is_ascii(),
        None => v == "--" || (starts_with_dashes && v.len() == 2),
    };
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || !c.is_ascii())
}

/// Byte offset of the first comma of `css` outside quotes, brackets and parentheses.
fn top_level_comma(css: &str) -> Option<usize> {
    let bytes = css.as_bytes();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
        } else {
            match c {
                b'"' | b'\'' => quote = Some(c),
                b'[' | b'(' => depth += 1,
                b']' | b')' => depth -= 1,
                b',' if depth == 0 => return Some(i),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn is_visible_pseudo(s: &str) -> bool {
    s.starts_with(":visible")
        && !s[":visible".len()..]
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engines_and_chains() {
        let l = Locator::parse("tr:has-text('jane@x') >> text=Edit").expect("parse");
        assert_eq!(
            l.parts,
            vec![
                Part::Css {
                    selector: "tr".into(),
                    has_text: vec!["jane@x".into()],
                    visible: false
                },
                Part::Text {
                    text: "Edit".into(),
                    exact: false
                }
            ]
        );
        assert_eq!(l.to_string(), "tr:has-text('jane@x') >> text=Edit");
        let l = Locator::parse("role=button[name=\"Sign in\" exact]").expect("parse");
        assert_eq!(
            l.parts,
            vec![Part::Role {
                role: "button".into(),
                name: Some("Sign in".into()),
                exact: true,
                level: None
            }]
        );
        let l = Locator::parse("role=heading[level=2][name='Users']").expect("parse");
        assert!(matches!(
            &l.parts[0],
            Part::Role {
                level: Some(2),
                exact: false,
                ..
            }
        ));
        let l = Locator::parse("input[name=q] >> nth=-1").expect("parse");
        assert_eq!(l.parts[1], Part::Nth { n: -1 });
        let l = Locator::parse("text=\"Exact\"").expect("parse");
        assert_eq!(
            l.parts[0],
            Part::Text {
                text: "Exact".into(),
                exact: true
            }
        );
        let l = Locator::parse("label=Email address").expect("parse");
        assert!(matches!(&l.parts[0], Part::Label { exact: false, .. }));
        let l = Locator::parse("div[data-x='a >> b']").expect("parse");
        assert_eq!(l.parts.len(), 1);
        let l = Locator::parse("//button[1]").expect("parse");
        assert!(matches!(&l.parts[0], Part::Xpath { .. }));
        // Attribute selectors: quoted or identifier values, case flags, all operators.
        for ok in [
            "input[name=email]",
            "a[href*='/logout/']",
            "input[type=checkbox i]",
            "[data-x=\"a b\"] >> [aria-busy]",
            "div[ data-role ~= item ]",
            "option[value=-x]",
            "td:not([hidden])",
        ] {
            assert!(Locator::parse(ok).is_ok(), "{ok}");
        }
        // A comma list is fine where it scopes nothing, and inside :is()/brackets anywhere.
        assert!(Locator::parse("form >> button.save, a.save").is_ok());
        assert!(Locator::parse(":is(form, div.box) >> button").is_ok());
        assert!(Locator::parse("div[title='a, b'] >> button").is_ok());
    }

    #[test]
    fn row_is_replaced_by_the_scope() {
        let rows = Locator::parse("table tr").expect("rows");
        let row = Locator::row(&rows, "r1", 2);
        assert_eq!(row.to_string(), "table tr >> nth=2");
        let l = Locator::parse("row").expect("row").within(&row);
        assert_eq!(l.to_string(), "table tr >> nth=2");
        assert_eq!(l.parts.len(), 1);
        let l = Locator::parse("row >> a.edit").expect("row").within(&row);
        assert_eq!(l.to_string(), "table tr >> nth=2 >> a.edit");
        assert_eq!(l.parts.len(), 2);
        let l = Locator::parse("a.edit").expect("plain").within(&row);
        assert_eq!(l.to_string(), "table tr >> nth=2 >> a.edit");
        assert!(matches!(&l.parts[0], Part::Row { n: 2, .. }));
        assert!(Locator::parse("css=row").is_ok_and(|l| !l.starts_with_row()));
    }

    #[test]
    fn reports_offsets() {
        let e = Locator::parse("#a >>  ").expect_err("empty part");
        assert_eq!(e.offset, 5);
        let e = Locator::parse("text=\"abc").expect_err("quote");
        assert_eq!(e.offset, 5);
        let e = Locator::parse("#a >> foo=bar").expect_err("engine");
        assert_eq!(e.offset, 6);
        assert!(e.to_string().contains("unknown selector engine 'foo'"));
        let e = Locator::parse("role=button[nam='x']").expect_err("attr");
        assert_eq!(e.offset, 12);
        let e = Locator::parse("tr:has-text('x') td").expect_err("pseudo");
        assert_eq!(e.offset, 16);
        let e = Locator::parse("nth=1").expect_err("nth first");
        assert_eq!(e.offset, 0);
        let e = Locator::parse("a >> nth=x").expect_err("nth int");
        assert_eq!(e.offset, 9);
        let e = Locator::parse("div[a='x' >> b").expect_err("unclosed");
        assert_eq!((e.offset, e.message.as_str()), (3, "unclosed `[`"));
        let e = Locator::parse("div] >> b").expect_err("unmatched");
        assert_eq!((e.offset, e.message.as_str()), (3, "unmatched `]`"));
        let e = Locator::parse("tr:has-text('x') >> button.del, tr:has-text('x') >> a.del")
            .expect_err("comma across chains");
        assert_eq!(e.offset, 30);
        assert!(e.message.contains("a comma never separates"), "{e}");
        let e = Locator::parse("a, b >> c").expect_err("comma list as a scope");
        assert_eq!(e.offset, 1);
        let e = Locator::parse("button[name=Save changes]").expect_err("unquoted spaces");
        assert_eq!(e.offset, 12);
        assert!(e.message.contains("quote values with spaces"), "{e}");
        let e = Locator::parse("a >> [tabindex=1]").expect_err("number");
        assert_eq!(e.offset, 15);
        assert!(e.message.contains("must be quoted"), "{e}");
        let e = Locator::parse("input[name!='x']").expect_err("operator");
        assert_eq!(e.offset, 10);
        let e = Locator::parse("table >> row").expect_err("row not first");
        assert_eq!(e.offset, 9);
        let e = Locator::parse("role=buton[name='x']").expect_err("role");
        assert_eq!(
            (e.offset, e.message.as_str()),
            (5, "unknown ARIA role `buton`")
        );
    }
}
