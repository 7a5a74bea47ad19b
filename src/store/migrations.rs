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
    (2, "read models", READ_MODELS_POSTGRES),
    (3, "statistics indexes", STATISTICS_INDEXES),
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
    (2, "read models", READ_MODELS_SQLITE),
    (3, "statistics indexes", STATISTICS_INDEXES),
];

/// The read-model tables, named with a `{s}` suffix so that a rebuild can build fresh copies
/// (`_new`) beside the live ones and swap them in. Times are microseconds since the Unix epoch
/// (UTC), so the same comparisons work on both stores.
pub fn read_model_tables(suffix: &str) -> String {
    READ_MODEL_TABLES.replace("{s}", suffix)
}

const READ_MODEL_TABLES: &str = r#"
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
"#;

const READ_MODELS_POSTGRES: &str = r#"
CREATE TABLE IF NOT EXISTS projector_checkpoint (name TEXT PRIMARY KEY, position BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS case_summaries (
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
CREATE INDEX IF NOT EXISTS case_summaries_filed ON case_summaries (filed_at DESC, case_id DESC);
CREATE TABLE IF NOT EXISTS stat_facts (
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
CREATE INDEX IF NOT EXISTS stat_facts_time ON stat_facts (occurred_at);
CREATE INDEX IF NOT EXISTS stat_facts_case ON stat_facts (case_id, kind, occurred_at);
"#;

const READ_MODELS_SQLITE: &str = READ_MODELS_POSTGRES;

/// Facts by kind and time, for windows and for ranking return visits; and by room, for a room's
/// detail. Rebuilt tables get the same indexes (`read_model_tables`).
const STATISTICS_INDEXES: &str = r#"
CREATE INDEX IF NOT EXISTS stat_facts_kind_time ON stat_facts (kind, occurred_at);
CREATE INDEX IF NOT EXISTS stat_facts_room ON stat_facts (room_id, kind, occurred_at);
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn the_migration_creates_the_same_tables_a_rebuild_does() {
        let migration = super::READ_MODELS_POSTGRES.replace(
            "CREATE TABLE IF NOT EXISTS projector_checkpoint (name TEXT PRIMARY KEY, position BIGINT NOT NULL);\n",
            "",
        );
        let indexes = super::STATISTICS_INDEXES.trim_start_matches('\n');
        assert_eq!(
            format!("{migration}{indexes}")
                .replace("\n\"#", "")
                .replace("\n\n", "\n"),
            super::read_model_tables("").replace("\n\n", "\n")
        );
    }
}
