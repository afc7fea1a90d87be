//! Static schema definitions (RFC 7643 §4, §8.7.1), name resolution and the
//! discovery documents (/Schemas, /ResourceTypes, /ServiceProviderConfig).

use serde_json::{Map, Value, json};

use super::path::AttrPath;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PROVISIONING_SCHEMA: &str =
    "urn:usher:params:scim:schemas:extension:provisioning:2.0:User";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SERVICE_PROVIDER_CONFIG_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    pub fn core_schema(self) -> &'static str {
        match self {
            ResourceKind::User => USER_SCHEMA,
            ResourceKind::Group => GROUP_SCHEMA,
        }
    }

    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "/Users",
            ResourceKind::Group => "/Groups",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }

    /// Core schema first, then extensions, in the order `schemas` lists them.
    pub fn schemas(self) -> &'static [&'static SchemaDef] {
        match self {
            ResourceKind::User => &USER_SCHEMAS,
            ResourceKind::Group => &GROUP_SCHEMAS,
        }
    }

    pub fn core(self) -> &'static SchemaDef {
        match self {
            ResourceKind::User => &USER_CORE,
            ResourceKind::Group => &GROUP_CORE,
        }
    }

    pub fn extensions(self) -> &'static [&'static SchemaDef] {
        self.schemas().get(1..).unwrap_or(&[])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Reference,
    Binary,
    Complex,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Reference => "reference",
            AttrType::Binary => "binary",
            AttrType::Complex => "complex",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute definition (RFC 7643 §2.2 characteristics).
#[derive(Debug, Clone, PartialEq)]
pub struct AttrDef {
    pub name: &'static str,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub description: &'static str,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub_attributes: &'static [AttrDef],
    /// The attribute that names the resource (User `userName`, Group `displayName`):
    /// it becomes an account or group name in the app, so it must be real text (see
    /// `resource::check_name`); no other attribute is held to that.
    pub names_resource: bool,
}

impl AttrDef {
    const fn new(name: &'static str, ty: AttrType) -> AttrDef {
        AttrDef {
            name,
            ty,
            multi_valued: false,
            description: "",
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: &[],
            reference_types: &[],
            sub_attributes: &[],
            names_resource: false,
        }
    }
    const fn names(mut self) -> Self {
        self.names_resource = true;
        self
    }
    const fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    const fn req(mut self) -> Self {
        self.required = true;
        self
    }
    const fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    const fn ro(mut self) -> Self {
        self.mutability = Mutability::ReadOnly;
        self
    }
    const fn imm(mut self) -> Self {
        self.mutability = Mutability::Immutable;
        self
    }
    const fn wo(mut self) -> Self {
        self.mutability = Mutability::WriteOnly;
        self
    }
    const fn ret(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }
    const fn uniq(mut self, u: Uniqueness) -> Self {
        self.uniqueness = u;
        self
    }
    const fn canon(mut self, c: &'static [&'static str]) -> Self {
        self.canonical_values = c;
        self
    }
    const fn refs(mut self, r: &'static [&'static str]) -> Self {
        self.reference_types = r;
        self
    }
    const fn subs(mut self, s: &'static [AttrDef]) -> Self {
        self.sub_attributes = s;
        self
    }
    const fn desc(mut self, d: &'static str) -> Self {
        self.description = d;
        self
    }

    /// Sub-attribute by case-insensitive name.
    pub fn sub_attr(&self, name: &str) -> Option<&'static AttrDef> {
        self.sub_attributes
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// The `value` sub-attribute that stands for a complex attribute in
    /// filters and sorting (RFC 7644 §3.4.2.2, §3.4.2.3).
    pub fn value_sub(&self) -> Option<&'static AttrDef> {
        if self.ty == AttrType::Complex {
            self.sub_attr("value")
        } else {
            None
        }
    }

    pub fn is_complex(&self) -> bool {
        self.ty == AttrType::Complex
    }

    /// RFC 7643 §7 representation of this attribute.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.ty.as_str()));
        m.insert("multiValued".into(), json!(self.multi_valued));
        if !self.description.is_empty() {
            m.insert("description".into(), json!(self.description));
        }
        m.insert("required".into(), json!(self.required));
        if self.ty != AttrType::Complex {
            m.insert("caseExact".into(), json!(self.case_exact));
        }
        if !self.canonical_values.is_empty() {
            m.insert("canonicalValues".into(), json!(self.canonical_values));
        }
        if self.ty == AttrType::Reference {
            m.insert("referenceTypes".into(), json!(self.reference_types));
        }
        m.insert("mutability".into(), json!(self.mutability.as_str()));
        m.insert("returned".into(), json!(self.returned.as_str()));
        if self.ty != AttrType::Complex {
            m.insert("uniqueness".into(), json!(self.uniqueness.as_str()));
        }
        if self.ty == AttrType::Complex {
            let subs: Vec<Value> = self.sub_attributes.iter().map(AttrDef::to_json).collect();
            m.insert("subAttributes".into(), Value::Array(subs));
        }
        Value::Object(m)
    }
}

/// A schema resource (RFC 7643 §7).
#[derive(Debug, PartialEq)]
pub struct SchemaDef {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [AttrDef],
    /// Extensions are stored under their URN key in the resource JSON.
    pub is_extension: bool,
}

impl SchemaDef {
    pub fn attr(&self, name: &str) -> Option<&'static AttrDef> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(AttrDef::to_json).collect::<Vec<_>>(),
            "meta": {"resourceType": "Schema", "location": format!("/Schemas/{}", self.id)},
        })
    }
}

const fn s(name: &'static str) -> AttrDef {
    AttrDef::new(name, AttrType::String)
}
const fn b(name: &'static str) -> AttrDef {
    AttrDef::new(name, AttrType::Boolean)
}
const fn r(name: &'static str, types: &'static [&'static str]) -> AttrDef {
    AttrDef::new(name, AttrType::Reference).refs(types)
}
const fn dt(name: &'static str) -> AttrDef {
    AttrDef::new(name, AttrType::DateTime)
}
const fn c(name: &'static str, subs: &'static [AttrDef]) -> AttrDef {
    AttrDef::new(name, AttrType::Complex).subs(subs)
}

// ---- common attributes (RFC 7643 §3.1) ----

static META_SUBS: [AttrDef; 5] = [
    s("resourceType").exact().ro(),
    dt("created").ro(),
    dt("lastModified").ro(),
    r("location", &["uri"]).exact().ro(),
    s("version").exact().ro(),
];

static COMMON_ATTRS: [AttrDef; 3] = [
    s("id")
        .exact()
        .ro()
        .ret(Returned::Always)
        .uniq(Uniqueness::Server)
        .desc("Unique identifier for the SCIM resource as defined by the service provider."),
    s("externalId")
        .exact()
        .desc("Identifier for the resource as defined by the provisioning client."),
    c("meta", &META_SUBS).ro().desc("Resource metadata."),
];

// ---- User core (RFC 7643 §4.1, §8.7.1) ----

static NAME_SUBS: [AttrDef; 6] = [
    s("formatted"),
    s("familyName"),
    s("givenName"),
    s("middleName"),
    s("honorificPrefix"),
    s("honorificSuffix"),
];

static EMAIL_SUBS: [AttrDef; 4] = [
    s("value"),
    s("display"),
    s("type").canon(&["work", "home", "other"]),
    b("primary"),
];

static PHONE_SUBS: [AttrDef; 4] = [
    s("value"),
    s("display"),
    s("type").canon(&["work", "home", "mobile", "fax", "pager", "other"]),
    b("primary"),
];

static IMS_SUBS: [AttrDef; 4] = [
    s("value"),
    s("display"),
    s("type").canon(&["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]),
    b("primary"),
];

static PHOTO_SUBS: [AttrDef; 4] = [
    r("value", &["external"]),
    s("display"),
    s("type").canon(&["photo", "thumbnail"]),
    b("primary"),
];

static ADDRESS_SUBS: [AttrDef; 8] = [
    s("formatted"),
    s("streetAddress"),
    s("locality"),
    s("region"),
    s("postalCode"),
    s("country"),
    s("type").canon(&["work", "home", "other"]),
    b("primary"),
];

static USER_GROUP_SUBS: [AttrDef; 4] = [
    s("value").ro(),
    r("$ref", &["User", "Group"]).ro(),
    s("display").ro(),
    s("type").canon(&["direct", "indirect"]).ro(),
];

static GENERIC_MV_SUBS: [AttrDef; 4] = [s("value"), s("display"), s("type"), b("primary")];

static X509_SUBS: [AttrDef; 4] = [
    AttrDef::new("value", AttrType::Binary).exact(),
    s("display"),
    s("type"),
    b("primary"),
];

static USER_ATTRS: [AttrDef; 21] = [
    s("userName")
        .req()
        .names()
        .uniq(Uniqueness::Server)
        .desc("Unique identifier for the User, typically used to authenticate."),
    c("name", &NAME_SUBS).desc("The components of the user's real name."),
    s("displayName").desc("The name of the User, suitable for display to end-users."),
    s("nickName").desc("The casual way to address the user."),
    r("profileUrl", &["external"]).desc("A fully qualified URL pointing to the User's profile."),
    s("title").desc("The user's title, such as \"Vice President\"."),
    s("userType").desc("Used to identify the relationship between the organization and the user."),
    s("preferredLanguage").desc("The User's preferred written or spoken language."),
    s("locale").desc("The User's default location for localization."),
    s("timezone").desc("The User's time zone in the 'Olson' time zone database format."),
    b("active").desc("A Boolean value indicating the User's administrative status."),
    s("password")
        .wo()
        .ret(Returned::Never)
        .desc("The User's cleartext password; never returned."),
    c("emails", &EMAIL_SUBS)
        .multi()
        .desc("Email addresses for the user."),
    c("phoneNumbers", &PHONE_SUBS)
        .multi()
        .desc("Phone numbers for the User."),
    c("ims", &IMS_SUBS)
        .multi()
        .desc("Instant messaging addresses for the User."),
    c("photos", &PHOTO_SUBS)
        .multi()
        .desc("URLs of photos of the User."),
    c("addresses", &ADDRESS_SUBS)
        .multi()
        .desc("A physical mailing address for this User."),
    c("groups", &USER_GROUP_SUBS)
        .multi()
        .ro()
        .desc("Groups to which the user belongs; computed by the service provider."),
    c("entitlements", &GENERIC_MV_SUBS)
        .multi()
        .desc("Entitlements the user has."),
    c("roles", &GENERIC_MV_SUBS)
        .multi()
        .desc("Roles for the User."),
    c("x509Certificates", &X509_SUBS)
        .multi()
        .desc("Certificates issued to the User."),
];

// ---- Enterprise User extension (RFC 7643 §4.3) ----

static MANAGER_SUBS: [AttrDef; 3] = [
    s("value").desc("The id of the SCIM resource representing the User's manager."),
    r("$ref", &["User"]),
    s("displayName").ro(),
];

static ENTERPRISE_ATTRS: [AttrDef; 6] = [
    s("employeeNumber"),
    s("costCenter"),
    s("organization"),
    s("division"),
    s("department"),
    c("manager", &MANAGER_SUBS).desc("The User's manager."),
];

// ---- Usher provisioning extension (server-maintained) ----

// Returned on request only (`attributes=urn:usher:…:User`): IdPs and strict SCIM
// clients that model every attribute they receive never see a server-owned extension
// they did not ask for. The dashboard reads the same state from the store.
static PROVISIONING_ATTRS: [AttrDef; 4] = [
    s("state")
        .ro()
        .ret(Returned::Request)
        .canon(&["pending", "staged", "provisioned", "failed"])
        .desc("Provisioning state of the account in the downstream application."),
    s("reason")
        .ro()
        .ret(Returned::Request)
        .desc("Why the last provisioning attempt failed, if it did."),
    s("appAccountId")
        .exact()
        .ro()
        .ret(Returned::Request)
        .desc("Identifier of the account in the downstream application."),
    dt("lastSyncedAt")
        .ro()
        .ret(Returned::Request)
        .desc("When the account was last synchronised."),
];

// ---- Group (RFC 7643 §4.2) ----

static MEMBER_SUBS: [AttrDef; 4] = [
    s("value").req().imm(),
    r("$ref", &["User", "Group"]).imm(),
    s("display"),
    s("type").canon(&["User", "Group"]).imm(),
];

static GROUP_ATTRS: [AttrDef; 2] = [
    s("displayName")
        .req()
        .names()
        .desc("A human-readable name for the Group."),
    c("members", &MEMBER_SUBS)
        .multi()
        .desc("A list of members of the Group."),
];

pub static USER_CORE: SchemaDef = SchemaDef {
    id: USER_SCHEMA,
    name: "User",
    description: "User Account",
    attributes: &USER_ATTRS,
    is_extension: false,
};

pub static ENTERPRISE_USER: SchemaDef = SchemaDef {
    id: ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: &ENTERPRISE_ATTRS,
    is_extension: true,
};

pub static PROVISIONING: SchemaDef = SchemaDef {
    id: PROVISIONING_SCHEMA,
    name: "Provisioning",
    description: "Usher provisioning status (read-only)",
    attributes: &PROVISIONING_ATTRS,
    is_extension: true,
};

pub static GROUP_CORE: SchemaDef = SchemaDef {
    id: GROUP_SCHEMA,
    name: "Group",
    description: "Group",
    attributes: &GROUP_ATTRS,
    is_extension: false,
};

static USER_SCHEMAS: [&SchemaDef; 3] = [&USER_CORE, &ENTERPRISE_USER, &PROVISIONING];
static GROUP_SCHEMAS: [&SchemaDef; 1] = [&GROUP_CORE];

/// id, externalId, meta.
pub fn common_attributes() -> &'static [AttrDef] {
    &COMMON_ATTRS
}

/// Extension schema of `kind` whose URN equals `key` (case-insensitive).
pub fn extension(kind: ResourceKind, key: &str) -> Option<&'static SchemaDef> {
    kind.extensions()
        .iter()
        .copied()
        .find(|s| s.id.eq_ignore_ascii_case(key))
}

/// Top-level attribute of the core schema or the common attributes.
pub fn core_attr(kind: ResourceKind, name: &str) -> Option<&'static AttrDef> {
    kind.core().attr(name).or_else(|| {
        COMMON_ATTRS
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    })
}

/// Top-level definition for `path` (ignores `path.sub`).
pub fn top_attribute(kind: ResourceKind, path: &AttrPath) -> Option<&'static AttrDef> {
    match &path.schema_urn {
        Some(urn) => extension(kind, urn)?.attr(&path.attr),
        None => core_attr(kind, &path.attr),
    }
}

/// Leaf definition for `path`: the sub-attribute if one is named.
pub fn attribute(kind: ResourceKind, path: &AttrPath) -> Option<&'static AttrDef> {
    let top = top_attribute(kind, path)?;
    match &path.sub {
        Some(sub) => top.sub_attr(sub),
        None => Some(top),
    }
}

/// Resolves `attr` or `attr.sub` inside one schema to canonical names.
fn resolve_in_schema(
    kind: ResourceKind,
    schema: &'static SchemaDef,
    rest: &str,
) -> Option<AttrPath> {
    let (name, sub) = match rest.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    let def = if schema.is_extension {
        schema.attr(name)?
    } else {
        core_attr(kind, name)?
    };
    let sub = match sub {
        Some(s) => Some(def.sub_attr(s)?.name.to_string()),
        None => None,
    };
    Some(AttrPath {
        schema_urn: schema.is_extension.then(|| schema.id.to_string()),
        attr: def.name.to_string(),
        sub,
    })
}

/// Resolves a textual attribute path (RFC 7644 §3.10 `attrPath`) to canonical
/// names. Case-insensitive; accepts URN-prefixed forms. As a leniency, an
/// extension attribute named without its URN resolves when the core schema
/// has no attribute of that name. Returns `None` for unknown attributes.
pub fn resolve(kind: ResourceKind, raw: &str) -> Option<AttrPath> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    // Longest URN first so one URN being a prefix of another cannot misroute.
    let mut schemas: Vec<&'static SchemaDef> = kind.schemas().to_vec();
    schemas.sort_by_key(|s| std::cmp::Reverse(s.id.len()));
    for schema in &schemas {
        let n = schema.id.len();
        if let (Some(head), Some(b':')) = (raw.get(..n), raw.as_bytes().get(n).copied())
            && head.eq_ignore_ascii_case(schema.id)
        {
            return raw
                .get(n + 1..)
                .and_then(|rest| resolve_in_schema(kind, schema, rest));
        }
    }
    if raw.to_ascii_lowercase().starts_with("urn:") {
        return None;
    }
    kind.schemas()
        .iter()
        .find_map(|schema| resolve_in_schema(kind, schema, raw))
}

/// Resolves against several kinds, first match wins (used where the kind is not known).
pub fn resolve_any(kinds: &[ResourceKind], raw: &str) -> Option<(ResourceKind, AttrPath)> {
    kinds.iter().find_map(|k| resolve(*k, raw).map(|p| (*k, p)))
}

/// All Schema resources: User, EnterpriseUser, Group, Provisioning.
pub fn schemas_json() -> Value {
    Value::Array(
        [&USER_CORE, &ENTERPRISE_USER, &GROUP_CORE, &PROVISIONING]
            .iter()
            .map(|s| s.to_json())
            .collect(),
    )
}

/// One Schema resource by URN (case-insensitive).
pub fn schema_json(id: &str) -> Option<Value> {
    [&USER_CORE, &ENTERPRISE_USER, &GROUP_CORE, &PROVISIONING]
        .iter()
        .find(|s| s.id.eq_ignore_ascii_case(id))
        .map(|s| s.to_json())
}

fn resource_type_json(kind: ResourceKind) -> Value {
    let (description, extensions) = match kind {
        ResourceKind::User => (
            "User Account",
            // The provisioning extension is server-owned, read-only and returned on
            // request: /Schemas describes it, but it is not offered as an extension a
            // client writes (schemaExtensions is OPTIONAL, RFC 7643 §6), so clients that
            // PATCH every declared extension leave it alone.
            json!([
                {"schema": ENTERPRISE_USER_SCHEMA, "required": false},
            ]),
        ),
        ResourceKind::Group => ("Group", json!([])),
    };
    let mut v = json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": kind.name(),
        "name": kind.name(),
        "endpoint": kind.endpoint(),
        "description": description,
        "schema": kind.core_schema(),
    });
    if let Some(obj) = v.as_object_mut() {
        if extensions.as_array().is_some_and(|a| !a.is_empty()) {
            obj.insert("schemaExtensions".into(), extensions);
        }
        obj.insert(
            "meta".into(),
            json!({"resourceType": "ResourceType", "location": format!("/ResourceTypes/{}", kind.name())}),
        );
    }
    v
}

/// All ResourceType resources (User, Group) with relative `meta.location`.
pub fn resource_types_json() -> Value {
    json!([
        resource_type_json(ResourceKind::User),
        resource_type_json(ResourceKind::Group)
    ])
}

/// One ResourceType resource by name (case-insensitive).
pub fn resource_type_json_by_name(name: &str) -> Option<Value> {
    [ResourceKind::User, ResourceKind::Group]
        .into_iter()
        .find(|k| k.name().eq_ignore_ascii_case(name))
        .map(resource_type_json)
}

/// Knobs the HTTP layer owns, advertised in /ServiceProviderConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpcOptions {
    pub max_results: usize,
    pub max_operations: usize,
    pub max_payload_size: usize,
    pub documentation_uri: Option<String>,
}

/// RFC 7643 §5 ServiceProviderConfig.
pub fn service_provider_config_json(opts: &SpcOptions) -> Value {
    let mut v = json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(doc) = &opts.documentation_uri {
            obj.insert("documentationUri".into(), json!(doc));
        }
        obj.insert("patch".into(), json!({"supported": true}));
        obj.insert(
            "bulk".into(),
            json!({"supported": false, "maxOperations": opts.max_operations, "maxPayloadSize": opts.max_payload_size}),
        );
        obj.insert(
            "filter".into(),
            json!({"supported": true, "maxResults": opts.max_results}),
        );
        obj.insert("changePassword".into(), json!({"supported": false}));
        obj.insert("sort".into(), json!({"supported": true}));
        obj.insert("etag".into(), json!({"supported": true}));
        obj.insert(
            "authenticationSchemes".into(),
            json!([{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "Authentication scheme using the OAuth Bearer Token Standard",
                "specUri": "https://www.rfc-editor.org/info/rfc6750",
                "primary": true,
            }]),
        );
        obj.insert(
            "meta".into(),
            json!({"resourceType": "ServiceProviderConfig", "location": "/ServiceProviderConfig"}),
        );
    }
    v
}

/// Rewrites every relative `meta.location` ("/Users/1") into `base` + path.
pub fn with_base(mut value: Value, base: &str) -> Value {
    rewrite_locations(&mut value, base.trim_end_matches('/'), 0);
    value
}

fn rewrite_locations(v: &mut Value, base: &str, depth: usize) {
    // Depth bound: discovery/list documents are shallow; never recurse unboundedly.
    if depth > 64 {
        return;
    }
    match v {
        Value::Array(items) => {
            for item in items {
                rewrite_locations(item, base, depth + 1);
            }
        }
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "meta"
                    && let Some(Value::String(loc)) =
                        child.as_object_mut().and_then(|m| m.get_mut("location"))
                    && loc.starts_with('/')
                {
                    *loc = format!("{base}{loc}");
                }
                rewrite_locations(child, base, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(urn: Option<&str>, attr: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            schema_urn: urn.map(String::from),
            attr: attr.into(),
            sub: sub.map(String::from),
        }
    }

    #[test]
    fn resolves_case_insensitively() {
        let u = ResourceKind::User;
        assert_eq!(resolve(u, "USERNAME"), Some(p(None, "userName", None)));
        assert_eq!(
            resolve(u, "name.FamilyName"),
            Some(p(None, "name", Some("familyName")))
        );
        assert_eq!(
            resolve(u, "emails.Value"),
            Some(p(None, "emails", Some("value")))
        );
        assert_eq!(resolve(u, "Emails"), Some(p(None, "emails", None)));
        assert_eq!(
            resolve(u, "META.created"),
            Some(p(None, "meta", Some("created")))
        );
        assert_eq!(resolve(u, "id"), Some(p(None, "id", None)));
        assert_eq!(resolve(u, "nope"), None);
        assert_eq!(resolve(u, "name.nope"), None);
        assert_eq!(resolve(u, "userName.x"), None);
        assert_eq!(resolve(u, ""), None);
    }

    #[test]
    fn resolves_urn_prefixed() {
        let u = ResourceKind::User;
        assert_eq!(
            resolve(u, "urn:ietf:params:scim:schemas:core:2.0:User:userName"),
            Some(p(None, "userName", None))
        );
        assert_eq!(
            resolve(
                u,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"
            ),
            Some(p(Some(ENTERPRISE_USER_SCHEMA), "manager", Some("value")))
        );
        assert_eq!(
            resolve(
                u,
                "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:Department"
            ),
            Some(p(Some(ENTERPRISE_USER_SCHEMA), "department", None))
        );
        assert_eq!(
            resolve(
                u,
                "urn:usher:params:scim:schemas:extension:provisioning:2.0:User:state"
            ),
            Some(p(Some(PROVISIONING_SCHEMA), "state", None))
        );
        // Wrong schema for the attribute.
        assert_eq!(
            resolve(
                u,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:userName"
            ),
            None
        );
        assert_eq!(resolve(u, "urn:x:y:userName"), None);
        // Bare extension attribute is accepted leniently.
        assert_eq!(
            resolve(u, "employeeNumber"),
            Some(p(Some(ENTERPRISE_USER_SCHEMA), "employeeNumber", None))
        );
        // Group resolves its own attributes only.
        let g = ResourceKind::Group;
        assert_eq!(
            resolve(g, "members.VALUE"),
            Some(p(None, "members", Some("value")))
        );
        assert_eq!(resolve(g, "userName"), None);
        assert_eq!(
            resolve(g, "urn:ietf:params:scim:schemas:core:2.0:Group:displayName"),
            Some(p(None, "displayName", None))
        );
    }

    #[test]
    fn multibyte_input_does_not_panic() {
        assert_eq!(resolve(ResourceKind::User, "é:ü"), None);
        assert_eq!(
            resolve(
                ResourceKind::User,
                "urn:ietf:params:scim:schemas:core:2.0:Useré"
            ),
            None
        );
    }

    #[test]
    fn attribute_lookup() {
        let u = ResourceKind::User;
        let d = attribute(u, &p(None, "meta", Some("created"))).map(|d| d.ty);
        assert_eq!(d, Some(AttrType::DateTime));
        let pw = attribute(u, &p(None, "password", None));
        assert_eq!(pw.map(|d| d.returned), Some(Returned::Never));
        assert_eq!(pw.map(|d| d.mutability), Some(Mutability::WriteOnly));
        let groups = attribute(u, &p(None, "groups", None));
        assert_eq!(groups.map(|d| d.mutability), Some(Mutability::ReadOnly));
        let state = attribute(u, &p(Some(PROVISIONING_SCHEMA), "state", None));
        assert_eq!(state.map(|d| d.mutability), Some(Mutability::ReadOnly));
    }

    #[test]
    fn schemas_document() {
        let all = schemas_json();
        let arr = all.as_array().cloned().unwrap_or_default();
        assert_eq!(arr.len(), 4);
        let user = schema_json(USER_SCHEMA).unwrap_or_default();
        assert_eq!(user["schemas"], json!([SCHEMA_SCHEMA]));
        assert_eq!(user["meta"]["resourceType"], "Schema");
        assert_eq!(user["meta"]["location"], format!("/Schemas/{USER_SCHEMA}"));
        let attrs = user["attributes"].as_array().cloned().unwrap_or_default();
        let emails = attrs
            .iter()
            .find(|a| a["name"] == "emails")
            .cloned()
            .unwrap_or_default();
        assert_eq!(emails["multiValued"], true);
        assert_eq!(
            emails["subAttributes"][2]["canonicalValues"],
            json!(["work", "home", "other"])
        );
        let password = attrs
            .iter()
            .find(|a| a["name"] == "password")
            .cloned()
            .unwrap_or_default();
        assert_eq!(password["returned"], "never");
        assert_eq!(password["mutability"], "writeOnly");
        let ent = schema_json(ENTERPRISE_USER_SCHEMA).unwrap_or_default();
        let manager = ent["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "manager").cloned())
            .unwrap_or_default();
        let subs: Vec<&str> = manager["subAttributes"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(subs, vec!["value", "$ref", "displayName"]);
        let prov = schema_json(PROVISIONING_SCHEMA).unwrap_or_default();
        for a in prov["attributes"].as_array().cloned().unwrap_or_default() {
            assert_eq!(a["mutability"], "readOnly");
        }
        let group = schema_json(GROUP_SCHEMA).unwrap_or_default();
        assert_eq!(group["attributes"][0]["required"], true);
        assert!(schema_json("urn:nope").is_none());
    }

    #[test]
    fn resource_types_and_base() {
        let rts = with_base(resource_types_json(), "https://scim.example.com/scim/v2/");
        assert_eq!(rts[0]["id"], "User");
        assert_eq!(rts[0]["endpoint"], "/Users");
        assert_eq!(
            rts[0]["schemaExtensions"],
            json!([{"schema": ENTERPRISE_USER_SCHEMA, "required": false}])
        );
        assert_eq!(
            rts[0]["meta"]["location"],
            "https://scim.example.com/scim/v2/ResourceTypes/User"
        );
        assert_eq!(rts[1]["schema"], GROUP_SCHEMA);
        // Absolute locations are left alone.
        let v = with_base(json!({"meta":{"location":"https://x/y"}}), "https://b");
        assert_eq!(v["meta"]["location"], "https://x/y");
    }

    #[test]
    fn service_provider_config() {
        let spc = service_provider_config_json(&SpcOptions {
            max_results: 200,
            max_operations: 0,
            max_payload_size: 1_048_576,
            documentation_uri: Some("https://docs.example.com".into()),
        });
        assert_eq!(spc["patch"]["supported"], true);
        assert_eq!(spc["bulk"]["supported"], false);
        assert_eq!(spc["filter"], json!({"supported": true, "maxResults": 200}));
        assert_eq!(spc["changePassword"]["supported"], false);
        assert_eq!(spc["sort"]["supported"], true);
        assert_eq!(spc["etag"]["supported"], true);
        assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");
        assert_eq!(spc["authenticationSchemes"][0]["primary"], true);
        assert_eq!(spc["documentationUri"], "https://docs.example.com");
    }
}
