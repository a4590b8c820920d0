-- 0003: plugins: installed plugins and their grants, per-plugin key-value storage,
-- non-secret config values, and the audit trail of permissioned operations.

CREATE TABLE plugins (
    id           TEXT PRIMARY KEY,
    version      TEXT NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 1,
    granted      TEXT NOT NULL DEFAULT '{}',   -- JSON Permissions the user granted
    trusted      INTEGER NOT NULL DEFAULT 0,   -- the user allowed it to run outside the sandbox
    source_path  TEXT,                         -- the folder it was installed from (watched)
    installed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE plugin_kv (
    plugin TEXT NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (plugin, key)
) STRICT, WITHOUT ROWID;

CREATE TABLE plugin_config (
    plugin TEXT NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (plugin, key)
) STRICT, WITHOUT ROWID;

-- kept after uninstall: the trail outlives the plugin
CREATE TABLE plugin_audit (
    id        INTEGER PRIMARY KEY,
    plugin    TEXT NOT NULL,
    operation TEXT NOT NULL,
    target    TEXT NOT NULL,
    allowed   INTEGER NOT NULL,
    at        TEXT NOT NULL
) STRICT;

CREATE INDEX plugin_audit_by_plugin ON plugin_audit (plugin, at);
CREATE INDEX plugin_audit_by_time ON plugin_audit (at);
