//! A position-marked YAML node tree, read with serde-saphyr.
//!
//! The playbook is first read into this untyped tree (every node knows its
//! line and column), then `validate` walks it and collects *all* mistakes,
//! instead of stopping at the first one as a typed `Deserialize` would.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML node with its 1-based position in the source.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub line: usize,
    pub col: usize,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float,
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What this node is, for messages: "a string", "a list", ...
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The raw deserialized shape; converted to [`Node`] right after reading.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float,
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Raw, D2::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Raw, E> {
                i64::try_from(v)
                    .map(Raw::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                let _ = v;
                Ok(Raw::Float)
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = a.next_element()? {
                    items.push(x);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(k) = a.next_key()? {
                    let v = a.next_value()?;
                    items.push((k, v));
                }
                Ok(Raw::Map(items))
            }
        }
        d.deserialize_any(V)
    }
}

fn convert(s: Spanned<Raw>) -> Node {
    let line = usize::try_from(s.referenced.line()).unwrap_or(0);
    let col = usize::try_from(s.referenced.column()).unwrap_or(0);
    let value = match s.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float => Value::Float,
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(convert).collect()),
        Raw::Map(items) => Value::Map(
            items
                .into_iter()
                .map(|(k, v)| (convert(k), convert(v)))
                .collect(),
        ),
    };
    Node { line, col, value }
}

/// A YAML syntax error (or duplicate key) with its position.
#[derive(Debug)]
pub(super) struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Read YAML text into a position-marked tree. YAML 1.2 booleans only
/// (`on`/`yes` stay strings); duplicate keys are an error.
pub(super) fn parse(src: &str) -> Result<Node, SyntaxError> {
    let mut opts = serde_saphyr::Options::default();
    opts.strict_booleans = true;
    opts.with_snippet = false;
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(src, opts) {
        Ok(n) => Ok(convert(n)),
        Err(e) => {
            let (line, col) = e
                .location()
                .map(|l| {
                    (
                        usize::try_from(l.line()).unwrap_or(1),
                        usize::try_from(l.column()).unwrap_or(1),
                    )
                })
                .unwrap_or((1, 1));
            Err(SyntaxError {
                line: line.max(1),
                col: col.max(1),
                message: clean_message(&e.without_snippet().to_string()),
            })
        }
    }
}

fn clean_message(msg: &str) -> String {
    let mut m = msg.trim().to_owned();
    if let Some(i) = m.rfind(" at line ") {
        m.truncate(i);
    }
    m = m.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    format!("YAML: {m}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_nodes() {
        let n = parse("a: 1\nb:\n  - x: \"q\"\n").expect("parses");
        let Value::Map(m) = &n.value else {
            panic!("map")
        };
        assert_eq!((m[1].0.line, m[1].0.col), (2, 1));
        let Value::Seq(s) = &m[1].1.value else {
            panic!("seq")
        };
        let Value::Map(inner) = &s[0].value else {
            panic!("map")
        };
        assert_eq!((inner[0].1.line, inner[0].1.col), (3, 8));
    }

    #[test]
    fn yaml11_booleans_stay_strings() {
        let n = parse("a: on\nb: yes\nc: true\n").expect("parses");
        let Value::Map(m) = &n.value else {
            panic!("map")
        };
        assert_eq!(m[0].1.as_str(), Some("on"));
        assert_eq!(m[1].1.as_str(), Some("yes"));
        assert!(matches!(m[2].1.value, Value::Bool(true)));
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_have_positions() {
        let e = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!((e.line, e.col), (3, 1));
        assert!(e.message.contains("duplicate mapping key"), "{}", e.message);
        let e = parse("a: [1, 2\nb: 2\n").expect_err("syntax");
        assert_eq!(e.line, 2);
    }
}
