//! Attribute paths (RFC 7644 §3.10) and PATCH paths (RFC 7644 §3.5.2).

use std::fmt;

use serde_json::Value;

use super::error::ScimError;
use super::filter::{self, Filter, Tok};
use super::schema::{self, AttrDef, ResourceKind};
use super::util::get_ci;

/// A resolved attribute path with canonical names. `schema_urn` is set only
/// for extension attributes (they live under the URN key in the resource);
/// core and common attributes have `None` even when written URN-prefixed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    pub schema_urn: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// Parses and resolves `name`, `name.sub` or a URN-prefixed form; 400 invalidPath if unknown.
    pub fn parse(s: &str, kind: ResourceKind) -> Result<AttrPath, ScimError> {
        schema::resolve(kind, s)
            .ok_or_else(|| ScimError::invalid_path(format!("unknown attribute '{}'", s.trim())))
    }

    /// Leaf definition (sub-attribute when named).
    pub fn def(&self, kind: ResourceKind) -> Option<&'static AttrDef> {
        schema::attribute(kind, self)
    }

    pub fn top_def(&self, kind: ResourceKind) -> Option<&'static AttrDef> {
        schema::top_attribute(kind, self)
    }

    /// Same top-level attribute (ignoring `sub`).
    pub fn same_attr(&self, other: &AttrPath) -> bool {
        self.attr.eq_ignore_ascii_case(&other.attr)
            && match (&self.schema_urn, &other.schema_urn) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
    }

    /// The raw top-level value in a resource (under the URN key for extensions).
    pub fn top_value<'a>(&self, resource: &'a Value) -> Option<&'a Value> {
        let obj = resource.as_object()?;
        let container = match &self.schema_urn {
            Some(urn) => get_ci(obj, urn)?.as_object()?,
            None => obj,
        };
        get_ci(container, &self.attr)
    }

    /// Every value this path denotes, flattened over multi-valued attributes.
    /// A complex attribute without a sub-attribute stands for its `value`
    /// sub-attribute when it has one (RFC 7644 §3.4.2.2 `emails co "x"`).
    pub fn values<'a>(&self, resource: &'a Value, kind: ResourceKind) -> Vec<&'a Value> {
        let Some(top) = self.top_value(resource) else {
            return Vec::new();
        };
        let sub = match &self.sub {
            Some(s) => Some(s.as_str()),
            None => self
                .top_def(kind)
                .and_then(|d| d.value_sub())
                .map(|_| "value"),
        };
        let items: Vec<&Value> = match top {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::new();
        for item in items {
            match sub {
                Some(s) => match item.as_object().and_then(|o| get_ci(o, s)) {
                    Some(Value::Array(a)) => out.extend(a.iter()),
                    Some(v) => out.push(v),
                    None => {}
                },
                None => out.push(item),
            }
        }
        out
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.schema_urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// A PATCH `path`: `attrPath [ "[" valFilter "]" ] [ "." subAttr ]`.
/// For `name.givenName` the sub-attribute is in `attr.sub`; for
/// `emails[type eq "work"].value` it is in `sub_attr`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub value_filter: Option<Filter>,
    pub sub_attr: Option<String>,
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(flt) = &self.value_filter {
            write!(f, "[{}]", flt.display_in_scope())?;
        }
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Parses a PATCH path for `kind`; 400 invalidPath for syntax errors and unknown attributes.
pub fn parse_patch_path(s: &str, kind: ResourceKind) -> Result<PatchPath, ScimError> {
    if s.len() > filter::MAX_FILTER_LEN {
        return Err(ScimError::invalid_path("path too long"));
    }
    let to_path_err = |e: ScimError| ScimError::invalid_path(e.detail);
    let toks = filter::lex(s).map_err(to_path_err)?;
    let Some(first) = toks.first() else {
        return Err(ScimError::invalid_path("empty path"));
    };
    let Tok::Word(head) = &first.tok else {
        return Err(ScimError::invalid_path(format!(
            "expected attribute name at position {}",
            first.pos
        )));
    };
    let attr = AttrPath::parse(head, kind)?;
    let mut i = 1;
    let mut value_filter = None;
    let mut sub_attr = None;
    if matches!(toks.get(i).map(|t| &t.tok), Some(Tok::LBracket)) {
        let top = attr
            .top_def(kind)
            .ok_or_else(|| ScimError::invalid_path(format!("unknown attribute '{head}'")))?;
        if attr.sub.is_some() || !top.is_complex() {
            return Err(ScimError::invalid_path(format!(
                "value filter requires a complex attribute, got '{head}'"
            )));
        }
        let (flt, next) = filter::parse_bracket(&toks, i + 1, &[kind], &attr, top, s.len())
            .map_err(to_path_err)?;
        value_filter = Some(flt);
        i = next;
        if let Some(t) = toks.get(i) {
            match &t.tok {
                Tok::Word(w) if w.starts_with('.') && w.len() > 1 => {
                    let name = w.get(1..).unwrap_or_default();
                    let sub = top.sub_attr(name).ok_or_else(|| {
                        ScimError::invalid_path(format!(
                            "unknown sub-attribute '{name}' of '{}'",
                            attr.attr
                        ))
                    })?;
                    sub_attr = Some(sub.name.to_string());
                    i += 1;
                }
                _ => {}
            }
        }
    }
    if let Some(t) = toks.get(i) {
        return Err(ScimError::invalid_path(format!(
            "unexpected token at position {} in path",
            t.pos
        )));
    }
    Ok(PatchPath {
        attr,
        value_filter,
        sub_attr,
    })
}

#[cfg(test)]
mod tests {
    use super::super::error::ScimType;
    use super::super::schema::ENTERPRISE_USER_SCHEMA;
    use super::*;
    use proptest::prelude::*;

    const U: ResourceKind = ResourceKind::User;

    fn ap(urn: Option<&str>, attr: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            schema_urn: urn.map(String::from),
            attr: attr.into(),
            sub: sub.map(String::from),
        }
    }

    #[test]
    fn simple_paths() {
        let p = parse_patch_path("userName", U).unwrap();
        assert_eq!(p.attr, ap(None, "userName", None));
        assert!(p.value_filter.is_none() && p.sub_attr.is_none());
        let p = parse_patch_path("name.givenName", U).unwrap();
        assert_eq!(p.attr, ap(None, "name", Some("givenName")));
        let p = parse_patch_path(
            "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName",
            U,
        )
        .unwrap();
        assert_eq!(p.attr, ap(None, "name", Some("familyName")));
    }

    #[test]
    fn extension_paths() {
        let p = parse_patch_path(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            U,
        )
        .unwrap();
        assert_eq!(p.attr, ap(Some(ENTERPRISE_USER_SCHEMA), "manager", None));
        let p = parse_patch_path(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            U,
        )
        .unwrap();
        assert_eq!(
            p.attr,
            ap(Some(ENTERPRISE_USER_SCHEMA), "employeeNumber", None)
        );
        assert_eq!(
            p.to_string(),
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"
        );
    }

    #[test]
    fn value_filter_paths() {
        let p = parse_patch_path("emails[type eq \"work\"].value", U).unwrap();
        assert_eq!(p.attr, ap(None, "emails", None));
        assert_eq!(p.sub_attr.as_deref(), Some("value"));
        assert_eq!(p.to_string(), "emails[type eq \"work\"].value");
        let p = parse_patch_path("members[value eq \"2819c223\"]", ResourceKind::Group).unwrap();
        assert_eq!(p.attr, ap(None, "members", None));
        assert!(p.sub_attr.is_none());
        assert!(p.value_filter.is_some());
        let p = parse_patch_path("Emails[Type EQ \"work\"].VALUE", U).unwrap();
        assert_eq!(p.sub_attr.as_deref(), Some("value"));
        let p = parse_patch_path(
            "addresses[type eq \"work\" and primary eq true].streetAddress",
            U,
        )
        .unwrap();
        assert_eq!(p.sub_attr.as_deref(), Some("streetAddress"));
    }

    #[test]
    fn bad_paths() {
        for bad in [
            "",
            "nope",
            "emails[type eq \"work\"",
            "emails[type eq \"work\"].nope",
            "emails[nope eq \"x\"]",
            "userName[value eq \"x\"]",
            "emails[type eq \"work\"] extra",
            "name.givenName[x eq 1]",
            "members",
            "[",
            "\"userName\"",
        ] {
            let e = parse_patch_path(bad, U).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{bad}");
            assert_eq!(e.status, 400);
        }
    }

    #[test]
    fn values_flatten_multi_valued() {
        let r = serde_json::json!({"emails":[{"value":"a@x"},{"value":"b@x"}],"name":{"givenName":"A"}});
        let p = ap(None, "emails", None);
        assert_eq!(p.values(&r, U).len(), 2);
        let p = ap(None, "name", Some("givenName"));
        assert_eq!(p.values(&r, U), vec![&serde_json::json!("A")]);
    }

    proptest! {
        #[test]
        fn patch_path_never_panics(s in "\\PC*") {
            let _ = parse_patch_path(&s, U);
            let _ = parse_patch_path(&s, ResourceKind::Group);
        }

        #[test]
        fn patch_path_token_soup_never_panics(toks in prop::collection::vec(prop::sample::select(vec![
            "emails", "[", "]", ".value", "type", "eq", "\"work\"", "and", "or", "not", "(", ")",
            "members", "value", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            "name.givenName", " ", ".", "pr", "\"", "\\", "é", "1", "true",
        ]), 0..24)) {
            let s: String = toks.concat();
            let _ = parse_patch_path(&s, U);
            let _ = parse_patch_path(&toks.join(" "), U);
        }
    }
}
