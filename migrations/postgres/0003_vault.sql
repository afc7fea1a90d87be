-- The vault: one encrypted entry per service account. Usher stores opaque rows only:
-- the plaintext never reaches the database. `fields` (names of the fields present, no
-- values) is bound into the ciphertext's associated data, so editing it is detected.
CREATE TABLE vault_entries (
    name       TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,          -- fingerprint of the key the entry is encrypted under
    fields     TEXT NOT NULL,          -- e.g. "username,password,totp,extra.api_token"
    nonce      BYTEA NOT NULL,         -- 24 random bytes, new at every write
    ciphertext BYTEA NOT NULL,         -- XChaCha20-Poly1305 of the entry's JSON, with its tag
    version    BIGINT NOT NULL,        -- bumped at every write (compare-and-swap)
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
