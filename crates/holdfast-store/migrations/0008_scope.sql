-- Scopes: a JSON object of plan labels ({"team":"payments"}). A user with a scope sees and
-- acts on the plans that carry all of its labels, and nothing server-wide; a token's scope
-- adds labels to its owner's (it can only narrow). NULL: every plan.
ALTER TABLE users ADD COLUMN scope TEXT;
ALTER TABLE tokens ADD COLUMN scope TEXT;
