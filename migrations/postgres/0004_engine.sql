-- The provisioning engine.
-- A job reconciles one resource: the worker reads the newest desired state when it
-- starts, so one run covers every job of the resource queued before it (`covers_job`),
-- and those are marked `superseded` with `superseded_by` when it ends.
ALTER TABLE jobs ADD COLUMN superseded_by BIGINT;
ALTER TABLE jobs ADD COLUMN claim_token TEXT;       -- invites: on_claim (status 'staged')
ALTER TABLE jobs ADD COLUMN covers_job BIGINT;     -- newest job id of the resource at claim time
ALTER TABLE jobs ADD COLUMN outcome TEXT;           -- JSON: actions run, evidence, error
CREATE INDEX jobs_resource_status ON jobs (resource_id, status, id);
CREATE UNIQUE INDEX jobs_claim_token ON jobs (claim_token);

-- What the app is known to have for each SCIM user: the state last confirmed by a
-- read-back. The engine compares the desired state with this to choose actions.
CREATE TABLE app_accounts (
    integration_id TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    app_account_id TEXT,
    state          TEXT NOT NULL,        -- JSON
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (integration_id, resource_id)
);

-- Members of each group as last turned into users' role changes.
CREATE TABLE group_sync (
    integration_id TEXT NOT NULL,
    group_id       TEXT NOT NULL,
    members        TEXT NOT NULL,        -- JSON array of user ids
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (integration_id, group_id)
);

-- Webhook notifications, delivered (and retried) from this outbox.
CREATE TABLE webhook_deliveries (
    id             BIGSERIAL PRIMARY KEY,
    url            TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    body           TEXT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    status         TEXT NOT NULL,        -- pending | delivered | failed
    run_after      TEXT NOT NULL,
    last_error     TEXT,
    created_at     TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_ready ON webhook_deliveries (status, run_after);

-- "Did this user's last job fail?" (recoveries) without walking the whole trail.
CREATE INDEX audit_events_target ON audit_events (target, seq);
