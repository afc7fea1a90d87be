-- Reconciliation (issue 15): accounts the app has that nobody provisioned, and the
-- schedules that run reconciliations once across every node.

-- Accounts a reconciliation found in the app and could match to no SCIM user of the
-- integration (orphans), with what the app showed of them.
CREATE TABLE discovered_accounts (
    integration_id TEXT NOT NULL,
    account_key    TEXT NOT NULL,        -- the app's id, else the lower-cased login or email
    app_account_id TEXT,
    user_name      TEXT,
    email          TEXT,
    display_name   TEXT,
    roles          TEXT NOT NULL,        -- JSON array, as the app shows them
    active         TEXT,                 -- 'true' | 'false' | NULL (the app shows no state)
    status         TEXT NOT NULL,        -- discovered | allowed | deactivating | deactivated | gone
    first_seen     TEXT NOT NULL,
    last_seen      TEXT NOT NULL,
    PRIMARY KEY (integration_id, account_key)
);

-- Periodic work per integration (`reconcile`): due at `next_due`; a node runs it while
-- it holds the lease, so a due run happens once across nodes.
CREATE TABLE schedules (
    integration_id TEXT NOT NULL,
    kind           TEXT NOT NULL,
    next_due       TEXT NOT NULL,
    lease_owner    TEXT,
    lease_until    TEXT,
    last_run       TEXT,
    last_result    TEXT,                 -- JSON: the run's counts, or its error
    PRIMARY KEY (integration_id, kind)
);

-- What the integration's own checks last found (the UI-change canary): `ok` or
-- `degraded`, with the finding, since when, and when it was last looked at.
CREATE TABLE integration_health (
    integration_id TEXT NOT NULL,
    check_name     TEXT NOT NULL,
    status         TEXT NOT NULL,        -- ok | degraded
    detail         TEXT NOT NULL,        -- JSON
    since          TEXT NOT NULL,        -- when the status last changed
    checked_at     TEXT NOT NULL,
    PRIMARY KEY (integration_id, check_name)
);

-- The last successful sign-in of each integration's service account, and whether the
-- app asked for its TOTP code (the posture report's MFA check).
ALTER TABLE integration_state ADD COLUMN last_login_at TEXT;
ALTER TABLE integration_state ADD COLUMN last_login_mfa TEXT;
