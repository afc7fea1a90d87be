-- SCIM resources: the desired state the IdP declared, one row per User or Group.
CREATE TABLE scim_resources (
    id             TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    name_key       TEXT NOT NULL,
    external_id    TEXT,
    display_name   TEXT,                   -- displayName, for look-ups and users' `groups`
    version        BIGINT NOT NULL,
    created_at     TEXT NOT NULL,
    modified_at    TEXT NOT NULL,
    data           TEXT NOT NULL,
    prov_state     TEXT NOT NULL DEFAULT 'pending',
    prov_reason    TEXT,
    app_account_id TEXT,
    last_synced_at TEXT
);
CREATE UNIQUE INDEX scim_users_user_name ON scim_resources (integration_id, name_key) WHERE resource_type = 'User';
CREATE INDEX scim_resources_by_type ON scim_resources (integration_id, resource_type, created_at);
CREATE INDEX scim_resources_display ON scim_resources (integration_id, resource_type, display_name);
CREATE INDEX scim_resources_external ON scim_resources (integration_id, resource_type, external_id);

CREATE TABLE scim_group_members (
    integration_id TEXT NOT NULL,
    group_id       TEXT NOT NULL,
    member_id      TEXT NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX scim_group_members_member ON scim_group_members (integration_id, member_id);

CREATE TABLE jobs (
    id             BIGSERIAL PRIMARY KEY,
    integration_id TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    operation      TEXT NOT NULL,
    resource_version BIGINT NOT NULL,
    status         TEXT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    run_after      TEXT NOT NULL,
    lease_owner    TEXT,
    lease_until    TEXT,
    last_error     TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX jobs_ready ON jobs (status, run_after);
CREATE INDEX jobs_resource ON jobs (integration_id, resource_id);

CREATE TABLE audit_events (
    seq            BIGSERIAL PRIMARY KEY,
    at             TEXT NOT NULL,
    actor          TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    target         TEXT,
    integration_id TEXT,
    detail         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX audit_events_integration ON audit_events (integration_id, seq);

CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'audit_events is append-only'; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
