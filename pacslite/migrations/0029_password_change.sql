-- Accounts (issue 19): a password an administrator set must be changed by its user at the next
-- login; the user changes it on their own page.
ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
