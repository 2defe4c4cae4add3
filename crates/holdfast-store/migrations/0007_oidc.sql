-- Accounts made by an OpenID Connect sign-in: `oidc_subject` is the provider's issuer and the
-- user's `sub` (`ISSUER#SUB`), which stays the same when the user's name or e-mail changes.
-- NULL for local accounts; never two accounts for one subject.
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
CREATE UNIQUE INDEX users_oidc_subject ON users (oidc_subject);
