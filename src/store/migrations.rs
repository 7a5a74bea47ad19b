//! Schema migrations for both stores, applied in order at start and by `tiaojie migrate`.
//!
//! Invariants: a migration is never edited once released (add a new one); each runs in one
//! transaction together with its row in `tiaojie_migrations`; on PostgreSQL an advisory lock keeps
//! two replicas from migrating at once.
//!
//! The `events` table keeps the columns postgres-es / sqlite-es insert by name and adds what
//! reading the whole log needs: `position` (the commit order on SQLite, where writes are
//! serialized; on PostgreSQL an insertion number paired with `txid`, the writing transaction, so a
//! reader can stop below the oldest transaction still in flight), `recorded_at`, and the hash
//! chain (`prev_hash`, `hash`); `case_heads` records each case's last sequence and hash, so that
//! a deleted last event is detected too. Two unique indexes make the append itself enforce that a
//! case number and an idempotency key are used once.

/// PostgreSQL migrations: (version, description, SQL).
pub const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "events",
        r#"
CREATE TABLE IF NOT EXISTS events (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence > 0),
    event_type     text   NOT NULL,
    event_version  text   NOT NULL,
    payload        json   NOT NULL,
    metadata       json   NOT NULL,
    position       bigserial   NOT NULL UNIQUE,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX IF NOT EXISTS events_log_order ON events (txid, position);
CREATE TABLE IF NOT EXISTS case_heads (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    last_sequence  bigint NOT NULL,
    head_hash      text   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_case_no ON events (
    (split_part(payload->'CaseFiled'->>'case_no', '-', 1) || '-' || split_part(payload->'CaseFiled'->>'case_no', '-', 2)),
    (split_part(payload->'CaseFiled'->>'case_no', '-', 3)::int)
) WHERE event_type = 'CaseFiled';
CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key ON events ((metadata->>'idempotency_key'))
    WHERE metadata->>'idempotency_key' IS NOT NULL;
"#,
    ),
    (2, "read models", READ_MODELS),
];

/// SQLite migrations: (version, description, SQL).
pub const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "events",
        r#"
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    sequence       INTEGER NOT NULL CHECK (sequence > 0),
    event_type     TEXT    NOT NULL,
    event_version  TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
);
CREATE TABLE IF NOT EXISTS case_heads (
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    last_sequence  INTEGER NOT NULL,
    head_hash      TEXT    NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_case_no
    ON events (json_extract(payload, '$.CaseFiled.case_no')) WHERE event_type = 'CaseFiled';
CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key
    ON events (json_extract(metadata, '$.idempotency_key'))
    WHERE json_extract(metadata, '$.idempotency_key') IS NOT NULL;
"#,
    ),
    (2, "read models", READ_MODELS),
];

/// The read-model tables, named with a `{s}` suffix so that a rebuild can build fresh copies
/// (`_rebuild_…`) beside the live ones and swap them in. Times are microseconds since the Unix
/// epoch (UTC), so the same comparisons work on both stores. Migration 2 is this same text with
/// an empty suffix: the migration runner replaces `{s}` by nothing.
pub fn read_model_tables(suffix: &str) -> String {
    READ_MODEL_TABLES.replace("{s}", suffix)
}

/// The read-model DDL as a literal, so that it can be both a migration and the rebuild's tables.
macro_rules! read_model_tables_sql {
    () => {
        r#"
CREATE TABLE IF NOT EXISTS case_summaries{s} (
    case_id       TEXT   NOT NULL PRIMARY KEY,
    case_no       TEXT   NOT NULL,
    room_id       TEXT   NOT NULL,
    filed_room_id TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    category      TEXT   NOT NULL,
    source        TEXT   NOT NULL,
    filed_at      BIGINT NOT NULL,
    accepted_at   BIGINT,
    concluded_at  BIGINT,
    mediators     TEXT   NOT NULL,
    version       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS case_summaries{s}_filed ON case_summaries{s} (filed_at DESC, case_id DESC);
CREATE TABLE IF NOT EXISTS stat_facts{s} (
    case_id     TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,
    ord         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    room_id     TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    occurred_at BIGINT  NOT NULL,
    amount_fen  BIGINT,
    duration_us BIGINT,
    label       TEXT,
    PRIMARY KEY (case_id, seq, ord)
);
CREATE INDEX IF NOT EXISTS stat_facts{s}_time ON stat_facts{s} (occurred_at);
CREATE INDEX IF NOT EXISTS stat_facts{s}_case ON stat_facts{s} (case_id, kind, occurred_at);
CREATE INDEX IF NOT EXISTS stat_facts{s}_kind_time ON stat_facts{s} (kind, occurred_at);
CREATE INDEX IF NOT EXISTS stat_facts{s}_room ON stat_facts{s} (room_id, kind, occurred_at);
"#
    };
}

const READ_MODEL_TABLES: &str = read_model_tables_sql!();

/// Migration 2, the same on both stores: the projector's checkpoint and the live read models.
const READ_MODELS: &str = concat!(
    "\nCREATE TABLE IF NOT EXISTS projector_checkpoint (name TEXT PRIMARY KEY, position BIGINT NOT NULL);",
    read_model_tables_sql!()
);

#[cfg(test)]
mod tests {
    #[test]
    fn the_migration_creates_the_same_tables_a_rebuild_does() {
        let migration = super::READ_MODELS.replace("{s}", "");
        assert!(migration.ends_with(&super::read_model_tables("")));
        assert!(migration.contains("projector_checkpoint"));
        assert!(!migration.contains("{s}"));
    }
}
