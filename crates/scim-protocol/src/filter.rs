//! SCIM filter parser and evaluator (RFC 7644 §3.4.2.2).

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};

use super::error::ScimError;
use super::path::AttrPath;
use super::schema::{self, AttrDef, AttrType, ResourceKind};
use super::util::{get_ci, is_unassigned, parse_datetime};

/// Longest filter accepted; bounds parse time and memory for hostile input.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses / `not` / value filters; bounds recursion.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn parse(w: &str) -> Option<CompareOp> {
        Some(match w.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }

    fn is_substring(self) -> bool {
        matches!(self, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
    }
}

/// Parsed filter. Attribute paths are canonical. Inside a value filter
/// (`emails[type eq "work"]`) the inner paths carry the parent attribute in
/// `attr` and the sub-attribute in `sub`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `value` is a JSON string, number, boolean or null, already coerced to
    /// the attribute's type.
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    Present {
        path: AttrPath,
    },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    /// A JSON string literal, decoded.
    Str(String),
    /// Anything else: attribute path, keyword, operator, number, bare value.
    Word(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// Byte offset in the input, reported in error messages.
    pub(super) pos: usize,
}

fn is_delim(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"')
}

pub(super) fn lex(input: &str) -> Result<Vec<Token>, ScimError> {
    let mut out = Vec::new();
    let mut it = input.char_indices().peekable();
    while let Some(&(pos, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        let simple = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            _ => None,
        };
        if let Some(tok) = simple {
            it.next();
            out.push(Token { tok, pos });
            continue;
        }
        if c == '"' {
            it.next();
            let mut escaped = false;
            let mut end = None;
            for (i, ch) in it.by_ref() {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == '"' {
                    end = Some(i);
                    break;
                }
            }
            let Some(end) = end else {
                return Err(ScimError::invalid_filter(format!(
                    "unterminated string starting at position {pos}"
                )));
            };
            let raw = input.get(pos..=end).unwrap_or_default();
            let s: String = serde_json::from_str(raw).map_err(|_| {
                ScimError::invalid_filter(format!("invalid string literal at position {pos}"))
            })?;
            out.push(Token {
                tok: Tok::Str(s),
                pos,
            });
            continue;
        }
        let mut end = input.len();
        while let Some(&(i, ch)) = it.peek() {
            if is_delim(ch) {
                end = i;
                break;
            }
            it.next();
        }
        out.push(Token {
            tok: Tok::Word(input.get(pos..end).unwrap_or_default().to_string()),
            pos,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------- parser

struct Scope<'a> {
    parent: &'a AttrPath,
    def: &'static AttrDef,
}

struct Parser<'a> {
    toks: &'a [Token],
    i: usize,
    kinds: &'a [ResourceKind],
    end_pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(self.end_pos, |t| t.pos)
    }

    fn err(&self, msg: &str) -> ScimError {
        ScimError::invalid_filter(format!("{msg} at position {}", self.pos()))
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn enter(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("filter nested too deeply"));
        }
        Ok(())
    }

    fn parse_or(&mut self, scope: Option<&Scope<'_>>) -> Result<Filter, ScimError> {
        let mut left = self.parse_and(scope)?;
        while self.peek_keyword("or") {
            self.i += 1;
            let right = self.parse_and(scope)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self, scope: Option<&Scope<'_>>) -> Result<Filter, ScimError> {
        let mut left = self.parse_unary(scope)?;
        while self.peek_keyword("and") {
            self.i += 1;
            let right = self.parse_unary(scope)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_unary(&mut self, scope: Option<&Scope<'_>>) -> Result<Filter, ScimError> {
        match self.peek() {
            Some(Tok::LParen) => {
                self.i += 1;
                self.enter()?;
                let f = self.parse_or(scope)?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(self.err("expected ')'"));
                }
                self.i += 1;
                self.depth -= 1;
                Ok(f)
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") => {
                self.i += 1;
                self.enter()?;
                let inner = self.parse_unary(scope)?;
                self.depth -= 1;
                Ok(Filter::Not(Box::new(inner)))
            }
            Some(Tok::Word(_)) => self.parse_attr_expr(scope),
            Some(_) => Err(self.err("unexpected token")),
            None => Err(self.err("unexpected end of filter")),
        }
    }

    /// Resolves the attribute word; returns (path, top-level def, leaf def).
    fn resolve(
        &self,
        word: &str,
        scope: Option<&Scope<'_>>,
    ) -> Result<(AttrPath, &'static AttrDef, &'static AttrDef), ScimError> {
        let unknown = || ScimError::invalid_filter(format!("unknown attribute '{word}'"));
        if let Some(sc) = scope {
            if let Some(sub) = sc.def.sub_attr(word) {
                let path = AttrPath {
                    sub: Some(sub.name.to_string()),
                    ..sc.parent.clone()
                };
                return Ok((path, sc.def, sub));
            }
            // Tolerate the fully qualified form inside brackets: emails[emails.type eq "x"].
            return match schema::resolve_any(self.kinds, word) {
                Some((_, p)) if p.same_attr(sc.parent) && p.sub.is_some() => {
                    let sub = p
                        .sub
                        .as_deref()
                        .and_then(|s| sc.def.sub_attr(s))
                        .ok_or_else(unknown)?;
                    Ok((p, sc.def, sub))
                }
                _ => Err(unknown()),
            };
        }
        let (kind, path) = schema::resolve_any(self.kinds, word).ok_or_else(unknown)?;
        let top = schema::top_attribute(kind, &path).ok_or_else(unknown)?;
        let leaf = schema::attribute(kind, &path).ok_or_else(unknown)?;
        Ok((path, top, leaf))
    }

    fn parse_attr_expr(&mut self, scope: Option<&Scope<'_>>) -> Result<Filter, ScimError> {
        let Some(Tok::Word(word)) = self.peek().cloned() else {
            return Err(self.err("expected attribute name"));
        };
        let (path, top, leaf) = self.resolve(&word, scope)?;
        self.i += 1;
        match self.peek().cloned() {
            Some(Tok::LBracket) => {
                if scope.is_some() {
                    return Err(self.err("nested value filter is not allowed"));
                }
                if path.sub.is_some() || !top.is_complex() {
                    return Err(self.err(&format!(
                        "value filter requires a complex attribute, got '{word}'"
                    )));
                }
                self.i += 1;
                self.enter()?;
                let inner = self.parse_or(Some(&Scope {
                    parent: &path,
                    def: top,
                }))?;
                if self.peek() != Some(&Tok::RBracket) {
                    return Err(self.err("expected ']'"));
                }
                self.i += 1;
                self.depth -= 1;
                // Entra writes `emails[type eq "work"].value eq "x"`, which RFC 7644
                // does not allow; it means `emails[type eq "work" and value eq "x"]`.
                let inner = match self.peek().cloned() {
                    Some(Tok::Word(w)) if w.starts_with('.') && w.len() > 1 => {
                        let scope = Scope {
                            parent: &path,
                            def: top,
                        };
                        let sub_word = w[1..].to_string();
                        let (sub_path, _, sub_leaf) = self.resolve(&sub_word, Some(&scope))?;
                        self.i += 1;
                        let cmp = self.parse_condition(sub_path, sub_leaf, &sub_word)?;
                        Filter::And(Box::new(inner), Box::new(cmp))
                    }
                    _ => inner,
                };
                Ok(Filter::ValuePath {
                    path,
                    filter: Box::new(inner),
                })
            }
            _ => self.parse_condition(path, leaf, &word),
        }
    }

    /// The operator and value after an attribute path (`pr`, or `op value`).
    fn parse_condition(
        &mut self,
        path: AttrPath,
        leaf: &'static AttrDef,
        word: &str,
    ) -> Result<Filter, ScimError> {
        match self.peek().cloned() {
            Some(Tok::Word(op)) if op.eq_ignore_ascii_case("pr") => {
                self.i += 1;
                Ok(Filter::Present { path })
            }
            Some(Tok::Word(op_word)) => {
                let Some(op) = CompareOp::parse(&op_word) else {
                    return Err(self.err(&format!("unknown operator '{op_word}'")));
                };
                self.i += 1;
                // A complex attribute compares through its `value` sub-attribute.
                let eff = if leaf.is_complex() {
                    match leaf.value_sub() {
                        Some(v) => v,
                        None => {
                            return Err(ScimError::invalid_filter(format!(
                                "cannot compare complex attribute '{word}'"
                            )));
                        }
                    }
                } else {
                    leaf
                };
                if (op.is_ordering() || op.is_substring())
                    && matches!(eff.ty, AttrType::Boolean | AttrType::Binary)
                {
                    return Err(ScimError::invalid_filter(format!(
                        "operator '{}' is not supported on {} attribute '{word}'",
                        op.as_str(),
                        eff.ty.as_str()
                    )));
                }
                let value = self.parse_value(eff, word)?;
                Ok(Filter::Compare { path, op, value })
            }
            Some(_) => Err(self.err(&format!("expected operator after '{word}'"))),
            None => Err(self.err(&format!("expected operator after '{word}'"))),
        }
    }

    /// Reads the comparison value and coerces it to the attribute type. Bare
    /// (unquoted) words are accepted as strings for Entra's filters.
    fn parse_value(&mut self, def: &AttrDef, word: &str) -> Result<Value, ScimError> {
        let tok = self.peek().cloned();
        let bad = |what: &str| {
            ScimError::invalid_filter(format!(
                "invalid {what} value for attribute '{word}' at position {}",
                self.pos()
            ))
        };
        let v = match tok {
            Some(Tok::Word(w)) if w == "null" => Value::Null,
            Some(Tok::Str(s)) | Some(Tok::Word(s)) => match def.ty {
                AttrType::Boolean => match s.trim().to_ascii_lowercase().as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => return Err(bad("boolean")),
                },
                AttrType::Integer | AttrType::Decimal => {
                    let n: Number = serde_json::from_str(s.trim()).map_err(|_| bad("numeric"))?;
                    if def.ty == AttrType::Integer && !(n.is_i64() || n.is_u64()) {
                        return Err(bad("integer"));
                    }
                    Value::Number(n)
                }
                _ => Value::String(s),
            },
            _ => return Err(self.err(&format!("expected a value after operator for '{word}'"))),
        };
        self.i += 1;
        Ok(v)
    }
}

fn parse_with(input: &str, kinds: &[ResourceKind]) -> Result<Filter, ScimError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(ScimError::invalid_filter(format!(
            "filter longer than {MAX_FILTER_LEN} characters"
        )));
    }
    let toks = lex(input)?;
    let mut p = Parser {
        toks: &toks,
        i: 0,
        kinds,
        end_pos: input.len(),
        depth: 0,
    };
    if toks.is_empty() {
        return Err(ScimError::invalid_filter("empty filter"));
    }
    let f = p.parse_or(None)?;
    if p.i < toks.len() {
        return Err(p.err("unexpected token"));
    }
    Ok(f)
}

/// Parses a filter against the union of the User and Group schemas (their
/// shared names agree in type and case rules), for callers without a kind.
pub fn parse_filter(input: &str) -> Result<Filter, ScimError> {
    parse_with(input, &[ResourceKind::User, ResourceKind::Group])
}

/// Parses a filter against one resource kind's schema (stricter; preferred).
pub fn parse_filter_for(input: &str, kind: ResourceKind) -> Result<Filter, ScimError> {
    parse_with(input, &[kind])
}

/// Parses the `valFilter` after a `[` at `start`; returns the filter and the
/// index just past `]`. Used by PATCH path parsing.
pub(super) fn parse_bracket(
    toks: &[Token],
    start: usize,
    kinds: &[ResourceKind],
    parent: &AttrPath,
    parent_def: &'static AttrDef,
    end_pos: usize,
) -> Result<(Filter, usize), ScimError> {
    let mut p = Parser {
        toks,
        i: start,
        kinds,
        end_pos,
        depth: 1,
    };
    let f = p.parse_or(Some(&Scope {
        parent,
        def: parent_def,
    }))?;
    if p.peek() != Some(&Tok::RBracket) {
        return Err(p.err("expected ']'"));
    }
    Ok((f, p.i + 1))
}

// ---------------------------------------------------------------- evaluation

fn ord_matches(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        _ => false,
    }
}

fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// Compares one stored value with the filter value (never `ne`, handled by the caller).
pub(super) fn compare_one(op: CompareOp, v: &Value, target: &Value, def: &AttrDef) -> bool {
    match (v, target) {
        (Value::String(a), Value::String(b)) => {
            if def.ty == AttrType::DateTime
                && !op.is_substring()
                && let (Some(x), Some(y)) = (parse_datetime(a), parse_datetime(b))
            {
                return ord_matches(op, x.cmp(&y));
            }
            let (a, b) = if def.case_exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                _ => ord_matches(op, a.cmp(&b)),
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            !op.is_substring() && cmp_numbers(a, b).is_some_and(|o| ord_matches(op, o))
        }
        (Value::Bool(a), Value::Bool(b)) => op == CompareOp::Eq && a == b,
        _ => false,
    }
}

fn compare_any(op: CompareOp, vals: &[&Value], target: &Value, def: &AttrDef) -> bool {
    if target.is_null() {
        // `eq null` ⇔ unassigned, `ne null` ⇔ assigned; ordering against null never matches.
        return match op {
            CompareOp::Eq => vals.iter().all(|v| is_unassigned(v)),
            CompareOp::Ne => vals.iter().any(|v| !is_unassigned(v)),
            _ => false,
        };
    }
    match op {
        // `ne` holds when no value equals (so an absent attribute matches `ne`).
        CompareOp::Ne => !vals
            .iter()
            .any(|v| compare_one(CompareOp::Eq, v, target, def)),
        _ => vals.iter().any(|v| compare_one(op, v, target, def)),
    }
}

fn elem_values<'a>(elem: &'a Value, sub: Option<&str>) -> Vec<&'a Value> {
    let Some(v) = sub.and_then(|s| elem.as_object().and_then(|o| get_ci(o, s))) else {
        return Vec::new();
    };
    match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

impl Filter {
    /// Evaluates against a resource as the server renders it.
    pub fn matches(&self, resource: &Value, kind: ResourceKind) -> bool {
        self.eval(resource, kind, None)
    }

    /// Evaluates a value filter (from `emails[...]`) against one element.
    pub fn matches_element(&self, element: &Value, kind: ResourceKind) -> bool {
        self.eval(element, kind, Some(element))
    }

    fn eval(&self, root: &Value, kind: ResourceKind, elem: Option<&Value>) -> bool {
        match self {
            Filter::And(a, b) => a.eval(root, kind, elem) && b.eval(root, kind, elem),
            Filter::Or(a, b) => a.eval(root, kind, elem) || b.eval(root, kind, elem),
            Filter::Not(a) => !a.eval(root, kind, elem),
            Filter::Present { path } => match elem {
                Some(e) => elem_values(e, path.sub.as_deref())
                    .iter()
                    .any(|v| !is_unassigned(v)),
                None if path.sub.is_none() => {
                    path.top_value(root).is_some_and(|v| !is_unassigned(v))
                }
                None => path.values(root, kind).iter().any(|v| !is_unassigned(v)),
            },
            Filter::Compare { path, op, value } => {
                let Some(mut def) = schema::attribute(kind, path) else {
                    return false;
                };
                if let Some(vs) = def.value_sub() {
                    def = vs;
                }
                let vals = match elem {
                    Some(e) => elem_values(e, path.sub.as_deref()),
                    None => path.values(root, kind),
                };
                compare_any(*op, &vals, value, def)
            }
            Filter::ValuePath { path, filter } => match path.top_value(root) {
                Some(Value::Array(items)) => items
                    .iter()
                    .any(|it| it.is_object() && filter.eval(root, kind, Some(it))),
                Some(v @ Value::Object(_)) => filter.eval(root, kind, Some(v)),
                _ => false,
            },
        }
    }

    /// `Some((canonical path, value))` for a lone `attr eq "string"`, which the
    /// store can push down into SQL. Extension paths are URN-prefixed.
    pub fn simple_eq(&self) -> Option<(String, String)> {
        match self {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value: Value::String(s),
            } => Some((path.to_string(), s.clone())),
            _ => None,
        }
    }

    /// Every attribute path the filter mentions, deduplicated, in order.
    pub fn attributes_referenced(&self) -> Vec<AttrPath> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths(&self, out: &mut Vec<AttrPath>) {
        let mut push = |p: &AttrPath| {
            if !out.contains(p) {
                out.push(p.clone());
            }
        };
        match self {
            Filter::Compare { path, .. } | Filter::Present { path } => push(path),
            Filter::ValuePath { path, filter } => {
                push(path);
                filter.collect_paths(out);
            }
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.collect_paths(out);
                b.collect_paths(out);
            }
            Filter::Not(a) => a.collect_paths(out),
        }
    }

    /// Renders as the inside of a value filter (sub-attribute names only).
    pub fn display_in_scope(&self) -> String {
        struct InScope<'a>(&'a Filter);
        impl fmt::Display for InScope<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write(f, true)
            }
        }
        InScope(self).to_string()
    }

    fn precedence(&self) -> u8 {
        match self {
            Filter::Or(..) => 1,
            Filter::And(..) => 2,
            _ => 3,
        }
    }

    fn write_child(
        &self,
        f: &mut fmt::Formatter<'_>,
        child: &Filter,
        right: bool,
        scope: bool,
    ) -> fmt::Result {
        // Parenthesise so left-associative re-parsing rebuilds the same tree.
        let paren = if right {
            child.precedence() <= self.precedence()
        } else {
            child.precedence() < self.precedence()
        };
        if paren {
            f.write_str("(")?;
            child.write(f, scope)?;
            f.write_str(")")
        } else {
            child.write(f, scope)
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, scope: bool) -> fmt::Result {
        let write_path = |f: &mut fmt::Formatter<'_>, p: &AttrPath| -> fmt::Result {
            match (&p.sub, scope) {
                (Some(sub), true) => f.write_str(sub),
                _ => write!(f, "{p}"),
            }
        };
        match self {
            Filter::Compare { path, op, value } => {
                write_path(f, path)?;
                write!(f, " {} ", op.as_str())?;
                match value {
                    Value::String(s) => {
                        f.write_str(&serde_json::to_string(s).map_err(|_| fmt::Error)?)
                    }
                    other => write!(f, "{other}"),
                }
            }
            Filter::Present { path } => {
                write_path(f, path)?;
                f.write_str(" pr")
            }
            Filter::And(a, b) => {
                self.write_child(f, a, false, scope)?;
                f.write_str(" and ")?;
                self.write_child(f, b, true, scope)
            }
            Filter::Or(a, b) => {
                self.write_child(f, a, false, scope)?;
                f.write_str(" or ")?;
                self.write_child(f, b, true, scope)
            }
            Filter::Not(a) => {
                f.write_str("not (")?;
                a.write(f, scope)?;
                f.write_str(")")
            }
            Filter::ValuePath { path, filter } => {
                write!(f, "{path}[")?;
                filter.write(f, true)?;
                f.write_str("]")
            }
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::ScimType;
    use super::super::schema::ENTERPRISE_USER_SCHEMA;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const U: ResourceKind = ResourceKind::User;
    const G: ResourceKind = ResourceKind::Group;

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_SCHEMA],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "bjensen",
            "userName": "Bjensen@Example.com",
            "name": {"familyName": "Jensen", "givenName": "Barbara"},
            "displayName": "Babs Jensen",
            "title": "Tour Guide",
            "userType": "Employee",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "groups": [{"value": "e9e30dba", "display": "Tour Guides"}],
            "meta": {
                "resourceType": "User",
                "created": "2010-01-23T04:56:22Z",
                "lastModified": "2011-05-13T04:42:34Z",
                "version": "W/\"a330bc54f0671c9\""
            },
            ENTERPRISE_USER_SCHEMA: {
                "employeeNumber": "701984",
                "department": "Tour Operations",
                "manager": {"value": "26118915", "displayName": "John Smith"}
            }
        })
    }

    fn m(f: &str) -> bool {
        parse_filter_for(f, U).unwrap().matches(&user(), U)
    }

    fn err(f: &str) -> ScimError {
        parse_filter(f).unwrap_err()
    }

    #[test]
    fn operators() {
        assert!(m("userName eq \"bjensen@example.com\""));
        assert!(m("userName ne \"other\""));
        assert!(!m("userName ne \"BJENSEN@example.com\""));
        assert!(m("name.familyName co \"ens\""));
        assert!(m("userName sw \"bjen\""));
        assert!(m("userName ew \"COM\""));
        assert!(m("title pr"));
        assert!(!m("nickName pr"));
        assert!(m("meta.lastModified gt \"2011-05-13T04:42:33Z\""));
        assert!(m("meta.lastModified ge \"2011-05-13T04:42:34Z\""));
        assert!(m("meta.lastModified lt \"2011-05-13T04:42:35Z\""));
        assert!(m("meta.lastModified le \"2011-05-13T04:42:34Z\""));
        assert!(!m("meta.lastModified gt \"2011-05-13T04:42:34Z\""));
        assert!(m("displayName gt \"A\"") && m("displayName lt \"c\""));
        assert!(m("active eq true") && !m("active eq false"));
        assert!(m("active ne false"));
    }

    #[test]
    fn keywords_and_operators_case_insensitive() {
        assert!(m("userName EQ \"bjensen@example.com\" AND title Pr"));
        assert!(m("NOT (userName Eq \"x\") oR title pr"));
    }

    #[test]
    fn case_rules() {
        // caseExact=false
        assert!(m("USERNAME eq \"BJENSEN@EXAMPLE.COM\""));
        assert!(m("emails.value eq \"BJENSEN@example.com\""));
        assert!(m("displayName eq \"babs jensen\""));
        // caseExact=true
        assert!(m("externalId eq \"bjensen\""));
        assert!(!m("externalId eq \"BJENSEN\""));
        assert!(!m("id eq \"2819C223-7F76-453A-919D-413861904646\""));
        assert!(m("meta.version eq \"W/\\\"a330bc54f0671c9\\\"\""));
        assert!(!m("meta.version eq \"w/\\\"A330bc54f0671c9\\\"\""));
    }

    #[test]
    fn multi_valued_any_semantics() {
        assert!(m("emails.value co \"jensen.org\""));
        assert!(m("emails co \"jensen.org\""));
        assert!(m("emails.type eq \"home\""));
        assert!(!m("emails.type eq \"other\""));
        assert!(m("emails pr"));
        assert!(m("groups.display eq \"tour guides\""));
        assert!(m("groups eq \"e9e30dba\""));
    }

    #[test]
    fn value_paths() {
        assert!(m("emails[type eq \"work\" and value co \"@example.com\"]"));
        assert!(!m("emails[type eq \"home\" and value co \"@example.com\"]"));
        assert!(m(
            "userType eq \"Employee\" and emails[type eq \"work\" and value co \"@example.com\"]"
        ));
        assert!(m("emails[not (type eq \"home\") and primary eq true]"));
        assert!(m("emails[primary pr]"));
        assert!(m("name[givenName eq \"barbara\"]"));
        // Entra's dotted value path is read as a conjunction inside the brackets.
        assert_eq!(
            parse_filter_for(
                "emails[type eq \"work\"].value eq \"bjensen@example.com\"",
                U
            )
            .ok(),
            parse_filter_for(
                "emails[type eq \"work\" and value eq \"bjensen@example.com\"]",
                U
            )
            .ok()
        );
        assert!(m(
            "emails[type eq \"work\"].value eq \"BJENSEN@example.com\""
        ));
        assert!(!m(
            "emails[type eq \"home\"].value eq \"bjensen@example.com\""
        ));
        assert_eq!(
            err("emails[type eq \"work\"].nope eq \"x\"").scim_type,
            Some(ScimType::InvalidFilter)
        );
        assert!(parse_filter("emails[type eq \"work\" and emails[value pr]]").is_err());
        assert!(parse_filter("userName[value eq \"x\"]").is_err());
    }

    #[test]
    fn precedence_and_binds_tighter() {
        let f = parse_filter("title pr or userName eq \"x\" and active eq false").unwrap();
        assert!(matches!(f, Filter::Or(..)));
        let f = parse_filter("(title pr or userName eq \"x\") and active eq false").unwrap();
        assert!(matches!(f, Filter::And(..)));
        assert!(m("title pr or userName eq \"x\" and active eq false"));
        assert!(!m("(title pr or userName eq \"x\") and active eq false"));
        assert!(!m("not (title pr)"));
    }

    #[test]
    fn urn_and_extension_paths() {
        assert!(m(
            "urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"bjensen\""
        ));
        assert!(m(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq \"701984\""
        ));
        assert!(m(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"26118915\""
        ));
        assert!(m(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager eq \"26118915\""
        ));
        assert!(m(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department co \"tour\""
        ));
    }

    #[test]
    fn entra_bare_values() {
        let f = parse_filter("name.familyName eq Employee").unwrap();
        assert_eq!(f, parse_filter("name.familyName eq \"Employee\"").unwrap());
        assert!(m("userName sw B"));
        assert!(m("meta.created gt 2009-10-10T14:38:21.8617979-07:00"));
        assert!(!m("meta.created gt 2010-01-23T04:56:22.1-00:00"));
        assert!(m("meta.created eq 2010-01-22T20:56:22-08:00"));
        assert!(m(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq 701984"
        ));
        assert!(m("active eq True"));
        assert!(m("active eq \"True\""));
    }

    #[test]
    fn values_and_escapes() {
        let f = parse_filter("displayName eq \"a\\\"b\\u00e9\\n\"").unwrap();
        assert_eq!(
            f.simple_eq(),
            Some(("displayName".into(), "a\"b\u{e9}\n".into()))
        );
        assert!(m("title ne null"));
        assert!(m("nickName eq null"));
        assert!(!m("title eq null"));
    }

    #[test]
    fn type_errors_at_parse_time() {
        for f in [
            "active gt true",
            "active co \"t\"",
            "active eq \"maybe\"",
            "name eq \"x\"",
            "meta gt \"x\"",
            "x509Certificates.value gt \"a\"",
        ] {
            let e = err(f);
            assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{f}");
            assert_eq!(e.status, 400);
        }
    }

    #[test]
    fn unknown_attribute_named() {
        let e = err("bogus eq \"x\"");
        assert_eq!(e.scim_type, Some(ScimType::InvalidFilter));
        assert!(e.detail.contains("bogus"));
        let e = parse_filter_for("members eq \"x\"", U).unwrap_err();
        assert!(e.detail.contains("members"));
        assert!(parse_filter_for("members eq \"x\"", G).is_ok());
        assert!(err("emails[bogus eq \"x\"]").detail.contains("bogus"));
    }

    #[test]
    fn syntax_errors_report_position() {
        for (f, pos) in [
            ("userName eq", "11"),
            ("userName xx \"a\"", "9"),
            ("(userName pr", "12"),
            ("userName pr )", "12"),
            ("userName eq \"a", "12"),
            ("userName pr and", "15"),
        ] {
            let e = err(f);
            assert_eq!(e.scim_type, Some(ScimType::InvalidFilter));
            assert!(
                e.detail.contains(&format!("position {pos}")),
                "{f}: {}",
                e.detail
            );
        }
        assert!(parse_filter("").is_err());
        assert!(parse_filter("   ").is_err());
        assert!(parse_filter("\"userName\" eq \"x\"").is_err());
    }

    #[test]
    fn limits() {
        let deep = format!("{}userName pr{}", "(".repeat(40), ")".repeat(40));
        assert!(err(&deep).detail.contains("deeply"));
        let ok = format!("{}userName pr{}", "(".repeat(30), ")".repeat(30));
        assert!(parse_filter(&ok).is_ok());
        let nots = format!("{}userName pr", "not ".repeat(100));
        assert!(parse_filter(&nots).is_err());
        let long = format!("userName eq \"{}\"", "a".repeat(5000));
        assert!(err(&long).detail.contains("longer"));
        // Long flat chains stay within the length limit and evaluate fine.
        let chain = vec!["title pr"; 300].join(" and ");
        assert!(parse_filter(&chain).unwrap().matches(&user(), U));
    }

    #[test]
    fn simple_eq_and_references() {
        let f = parse_filter("USERNAME eq \"bjensen\"").unwrap();
        assert_eq!(f.simple_eq(), Some(("userName".into(), "bjensen".into())));
        let f = parse_filter("externalId eq \"abc\"").unwrap();
        assert_eq!(f.simple_eq(), Some(("externalId".into(), "abc".into())));
        let f = parse_filter_for("displayName eq \"Ops\"", G).unwrap();
        assert_eq!(f.simple_eq(), Some(("displayName".into(), "Ops".into())));
        assert!(
            parse_filter("userName eq \"a\" and title pr")
                .unwrap()
                .simple_eq()
                .is_none()
        );
        assert!(
            parse_filter("userName ne \"a\"")
                .unwrap()
                .simple_eq()
                .is_none()
        );
        assert!(
            parse_filter("active eq true")
                .unwrap()
                .simple_eq()
                .is_none()
        );
        let f = parse_filter("userName pr and emails[type eq \"work\"]").unwrap();
        let refs: Vec<String> = f
            .attributes_referenced()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(refs, vec!["userName", "emails", "emails.type"]);
    }

    #[test]
    fn group_filters() {
        let g = json!({"id":"g1","displayName":"Tour Guides","members":[{"value":"u1"},{"value":"u2","display":"Bob"}]});
        assert!(
            parse_filter("members[value eq \"u2\"]")
                .unwrap()
                .matches(&g, G)
        );
        assert!(parse_filter("members eq \"u1\"").unwrap().matches(&g, G));
        assert!(
            parse_filter("displayName eq \"tour guides\"")
                .unwrap()
                .matches(&g, G)
        );
        assert!(
            !parse_filter("members.value eq \"u3\"")
                .unwrap()
                .matches(&g, G)
        );
    }

    #[test]
    fn display_examples() {
        for (input, out) in [
            ("userName Eq \"a\"", "userName eq \"a\""),
            ("a_b eq 1", ""),
            (
                "(title pr or nickName pr) and active eq true",
                "(title pr or nickName pr) and active eq true",
            ),
            (
                "title pr and (nickName pr and active eq true)",
                "title pr and (nickName pr and active eq true)",
            ),
            ("not(title pr)", "not (title pr)"),
            ("emails[type eq work]", "emails[type eq \"work\"]"),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.VALUE eq \"1\"",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"1\"",
            ),
        ] {
            match parse_filter(input) {
                Ok(f) => assert_eq!(f.to_string(), out),
                Err(_) => assert!(out.is_empty(), "{input}"),
            }
        }
    }

    fn leaf() -> impl Strategy<Value = String> {
        let string_attrs = prop::sample::select(vec![
            "userName",
            "displayName",
            "name.givenName",
            "emails.value",
            "emails",
            "title",
            "externalId",
            "id",
            "meta.version",
            "meta.created",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        ]);
        let ops = prop::sample::select(vec![
            "eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ",
        ]);
        let value = prop_oneof![
            "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
            "[a-zA-Z0-9@._:-]{1,10}",
            Just("null".to_string()),
        ];
        let string_cmp = (string_attrs, ops, value).prop_map(|(a, o, v)| format!("{a} {o} {v}"));
        let bools = (
            prop::sample::select(vec!["active", "emails.primary"]),
            prop::sample::select(vec!["eq", "ne"]),
            prop::sample::select(vec!["true", "false", "\"True\"", "null"]),
        )
            .prop_map(|(a, o, v)| format!("{a} {o} {v}"));
        let present = prop::sample::select(vec!["title pr", "emails pr", "name.familyName PR"])
            .prop_map(String::from);
        let sub = (
            prop::sample::select(vec!["type", "value", "display"]),
            prop::sample::select(vec!["eq", "co", "sw"]),
            "[a-z]{0,5}",
        )
            .prop_map(|(a, o, v)| format!("{a} {o} \"{v}\""));
        let vpath = (sub.clone(), sub, prop::sample::select(vec!["and", "or"]))
            .prop_map(|(a, b, j)| format!("emails[{a} {j} not ({b})]"));
        prop_oneof![string_cmp, bools, present, vpath]
    }

    fn filter_text() -> impl Strategy<Value = String> {
        leaf().prop_recursive(4, 32, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
                inner.clone().prop_map(|a| format!("not ({a})")),
                inner.prop_map(|a| format!("({a})")),
            ]
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = parse_filter(&s);
        }

        #[test]
        fn token_soup_never_panics(toks in prop::collection::vec(prop::sample::select(vec![
            "userName", "eq", "\"x\"", "(", ")", "[", "]", "and", "or", "not", "pr", "emails",
            "type", "value", ".", ".value", "name.givenName", "gt", "2015-10-10T14:38:21Z", "1",
            "true", "null", " ", "\\\"", "co", "active", "\"", "é",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        ]), 0..40)) {
            let _ = parse_filter(&toks.join(" "));
            let _ = parse_filter(&toks.concat());
        }

        #[test]
        fn display_reparses_to_equal(text in filter_text()) {
            let f = parse_filter(&text);
            prop_assert!(f.is_ok(), "grammar produced unparsable filter {text}: {f:?}");
            if let Ok(f) = f {
                let printed = f.to_string();
                let again = parse_filter(&printed);
                prop_assert_eq!(again.as_ref().ok(), Some(&f), "printed: {}", printed);
                let _ = f.matches(&user(), U);
            }
        }
    }
}
