-- Who may do what: accounts, what a token is worth, sign-in sessions, and the audit log.

-- People (kind `user`, signing in with a password or through OIDC) and service accounts
-- (kind `service`, tokens only). `role` is one of admin, operator, restorer, viewer, auditor.
-- `password_hash` is an argon2id PHC string; NULL: no password sign-in.
CREATE TABLE users (
    id {ID},
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT,
    failed_logins {INT} NOT NULL DEFAULT 0,
    locked_until {INT},
    created_at {INT} NOT NULL,
    disabled_at {INT}
);

-- A token is `api` (worth its role, never more than its owner's), `agent` (one agent's
-- credential: the agent API only, for its name and the labels it may serve) or `enrol`
-- (turns into an agent credential, `uses_left` times, before `expires_at`). Tokens from
-- before this migration have no owner and stay admin tokens; the first start after it
-- gives them to the `admin` account.
ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
ALTER TABLE tokens ADD COLUMN user_id {INT};
ALTER TABLE tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE tokens ADD COLUMN expires_at {INT};
ALTER TABLE tokens ADD COLUMN agent TEXT;
ALTER TABLE tokens ADD COLUMN labels TEXT;
ALTER TABLE tokens ADD COLUMN uses_left {INT};
CREATE INDEX tokens_agent ON tokens (agent);
-- One live credential per agent name: two enrolments racing for a name cannot both win.
CREATE UNIQUE INDEX tokens_live_agent ON tokens (agent) WHERE kind = 'agent' AND revoked_at IS NULL;

-- Web UI sessions: the cookie holds a random id, the store its hash. Signing out deletes
-- the row; a session also ends at `expires_at` or after a while without use. `role` is
-- what the sign-in granted (a token's role when signed in with a token, which must stay
-- live: `token_id`).
CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    user_id {INT} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    token_id {INT},
    csrf TEXT NOT NULL,
    created_at {INT} NOT NULL,
    expires_at {INT} NOT NULL,
    last_seen {INT} NOT NULL
);

-- Every change and every sensitive action: who, when, from where, what, and how it ended.
-- Rows are only ever inserted (and deleted when older than the retention).
CREATE TABLE audit (
    id {ID},
    at {INT} NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT,
    outcome TEXT NOT NULL,
    detail TEXT,
    remote TEXT
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_actor ON audit (actor, at);
CREATE INDEX audit_resource ON audit (resource, at);
