-- Single sign-on through Usher (issue 16): a person's SSO session for one integration,
-- named by the SHA-256 of its cookie, with the app's cookies Usher keeps for them.
CREATE TABLE sso_sessions (
    id_hash        TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL,
    user_id        TEXT NOT NULL,      -- the SCIM user
    subject        TEXT NOT NULL,      -- who the OpenID provider said (the claim's value)
    jar            TEXT,               -- the app's cookies, sealed with the vault key; NULL before the app sign-in
    created_at     TEXT NOT NULL,
    last_seen      TEXT NOT NULL
);
CREATE INDEX sso_sessions_user ON sso_sessions (integration_id, user_id);
