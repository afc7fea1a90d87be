-- SCIM resources: the desired state the IdP declared, one row per User or Group.
CREATE TABLE scim_resources (
    id             TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL,
    resource_type  TEXT NOT NULL,          -- 'User' | 'Group'
    name_key       TEXT NOT NULL,          -- lower-cased userName (Users) or displayName (Groups)
    external_id    TEXT,
    display_name   TEXT,                   -- displayName, for look-ups and users' `groups`
    version        INTEGER NOT NULL,
    created_at     TEXT NOT NULL,          -- RFC 3339, UTC, fixed width: sorts as text
    modified_at    TEXT NOT NULL,
    data           TEXT NOT NULL,          -- JSON body without id and meta
    prov_state     TEXT NOT NULL DEFAULT 'pending',
    prov_reason    TEXT,
    app_account_id TEXT,
    last_synced_at TEXT
);
CREATE UNIQUE INDEX scim_users_user_name ON scim_resources (integration_id, name_key) WHERE resource_type = 'User';
CREATE INDEX scim_resources_by_type ON scim_resources (integration_id, resource_type, created_at);
CREATE INDEX scim_resources_display ON scim_resources (integration_id, resource_type, display_name);
CREATE INDEX scim_resources_external ON scim_resources (integration_id, resource_type, external_id);

-- Group membership, kept beside the group's JSON so that users' `groups` are one query.
CREATE TABLE scim_group_members (
    integration_id TEXT NOT NULL,
    group_id       TEXT NOT NULL,
    member_id      TEXT NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX scim_group_members_member ON scim_group_members (integration_id, member_id);

-- Jobs: one action for one resource, persisted before the IdP gets its answer.
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    integration_id TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    operation      TEXT NOT NULL,          -- SCIM operation that caused it: create | replace | patch | delete
    resource_version INTEGER NOT NULL,
    status         TEXT NOT NULL,          -- pending | running | succeeded | failed | cancelled
    attempts       INTEGER NOT NULL DEFAULT 0,
    run_after      TEXT NOT NULL,
    lease_owner    TEXT,
    lease_until    TEXT,
    last_error     TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX jobs_ready ON jobs (status, run_after);
CREATE INDEX jobs_resource ON jobs (integration_id, resource_id);

-- Audit trail: append-only, each row chained to the one before by its hash.
CREATE TABLE audit_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    at             TEXT NOT NULL,
    actor          TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    target         TEXT,
    integration_id TEXT,
    detail         TEXT NOT NULL,          -- JSON object, keys sorted
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX audit_events_integration ON audit_events (integration_id, seq);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
