-- Never twice, never locked out (issue 9).

-- The last TOTP time step used per service account, shared by every process on this
-- database: apps accept a code window once and count a replay as a failed sign-in.
CREATE TABLE totp_windows (
    account    TEXT PRIMARY KEY,       -- fingerprint of the TOTP seed (never the seed)
    last_step  INTEGER NOT NULL,       -- unix time / period of the last code handed out
    updated_at TEXT NOT NULL
);

-- Usher processes that run workers, each with a heartbeat: a running job whose process
-- stopped beating is taken over without waiting for its lease to run out.
CREATE TABLE usher_processes (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
ALTER TABLE jobs ADD COLUMN lease_process TEXT;    -- the process holding the lease
ALTER TABLE jobs ADD COLUMN taken_over_from TEXT;  -- previous holder, when the claim was a take-over
ALTER TABLE jobs ADD COLUMN taken_over_why TEXT;   -- 'process stopped' | 'lease expired'

-- Per-integration state every process obeys: a paused integration signs in nowhere.
CREATE TABLE integration_state (
    integration_id TEXT PRIMARY KEY,
    paused_at      TEXT,               -- NULL while running
    paused_reason  TEXT,
    paused_secret  TEXT,               -- the vault entry's version at the pause: a change resumes
    updated_at     TEXT NOT NULL
);

-- Sign-in attempts, for the budget of playbooks that cannot tell a refused sign-in.
CREATE TABLE login_attempts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    integration_id TEXT NOT NULL,
    at             TEXT NOT NULL,
    process        TEXT NOT NULL
);
CREATE INDEX login_attempts_recent ON login_attempts (integration_id, at);
