-- The admin console (issue 12).

-- Signed-in sessions, in the database so that every node on PostgreSQL shares them.
-- The cookie carries a random value; only its SHA-256 is stored, so a read of this
-- table does not hand out sessions.
CREATE TABLE console_sessions (
    id_hash       TEXT PRIMARY KEY,
    person        TEXT NOT NULL,       -- who, as the audit trail names them
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL,       -- owner | super_admin | admin | auditor
    csrf_token    TEXT NOT NULL,       -- carried by every state-changing request
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    ended_at      TEXT                 -- signed out (kept, so a replayed cookie is refused)
);

-- OpenID sign-ins under way: state -> PKCE verifier and nonce, so that any node can
-- finish what another began. Bound to the browser by a cookie holding `browser_hash`'s preimage.
CREATE TABLE console_logins (
    state         TEXT PRIMARY KEY,
    browser_hash  TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    next_path     TEXT NOT NULL,       -- the console page asked for before sign-in
    created_at    TEXT NOT NULL
);

-- Failed sign-ins, for the rate limit (per client address and per account name).
CREATE TABLE console_sign_in_failures (
    id     BIGSERIAL PRIMARY KEY,
    key    TEXT NOT NULL,
    at     TEXT NOT NULL
);
CREATE INDEX console_sign_in_failures_recent ON console_sign_in_failures (key, at);

-- The break-glass local account: an argon2 hash (`usher admin set-password`).
CREATE TABLE console_accounts (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
