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
    (3, "read models with row ids", POSTGRES_READ_MODELS_3),
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
    (3, "read models with row ids", SQLITE_READ_MODELS_3),
];

/// The read-model tables, named with a `{s}` suffix so that a rebuild can build fresh copies
/// (`_rebuild_…`) beside the live ones and swap them in. Times are microseconds since the Unix
/// epoch (UTC), so the same comparisons work on both stores. Migration 3 is this same text with
/// an empty suffix: the migration runner replaces `{s}` by nothing.
pub fn read_model_tables(postgres: bool, suffix: &str) -> String {
    let tables = if postgres {
        POSTGRES_READ_MODEL_TABLES
    } else {
        SQLITE_READ_MODEL_TABLES
    };
    tables.replace("{s}", suffix)
}

/// The read-model DDL as a literal, so that it can be both a migration and the rebuild's tables;
/// `$row_id` is the store's column definition of `stat_facts.row_id`.
///
/// `row_id` numbers the facts in the order the projector inserted them, so that a server's
/// in-memory statistics (`crate::stats`) can read just the rows after the last one it has. That
/// no row can ever appear below a `row_id` already read holds because the projector's batches are
/// serialized by the checkpoint: a batch's transaction first moves the checkpoint row (holding
/// its lock until it commits), and only then takes ids for its facts. So the ids of one batch are
/// all taken after the previous batch committed, and a snapshot that sees a batch sees every
/// earlier one. On PostgreSQL the identity's sequence has the default `CACHE 1`, so ids are
/// handed out in time order across sessions; on SQLite an `INTEGER PRIMARY KEY` is one more than
/// the largest id, and facts are never deleted (the table is only ever dropped whole).
///
/// `(case_id, seq, ord)` stays unique, so even a replayed batch cannot count an event twice. No
/// other index: statistics are not computed by SQL any more, and every index slows the projector
/// and the rebuild.
///
/// `$key` is the type of the `case_id` key columns: on PostgreSQL `TEXT COLLATE "C"`, so that
/// its indexes compare bytes (as SQLite does) instead of going through the locale's collation,
/// which made building them the slowest part of a rebuild; case ids are ASCII, so nothing sorts
/// differently from what a reader would expect.
macro_rules! read_model_tables_sql {
    ($row_id:literal, $key:literal) => {
        concat!(
            r#"
CREATE TABLE IF NOT EXISTS case_summaries{s} (
    case_id       "#,
            $key,
            r#" NOT NULL PRIMARY KEY,
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
    row_id      "#,
            $row_id,
            r#",
    case_id     "#,
            $key,
            r#" NOT NULL,
    seq         BIGINT  NOT NULL,
    ord         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    room_id     TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    occurred_at BIGINT  NOT NULL,
    amount_fen  BIGINT,
    duration_us BIGINT,
    label       TEXT,
    UNIQUE (case_id, seq, ord)
);
"#
        )
    };
}

const POSTGRES_READ_MODEL_TABLES: &str = read_model_tables_sql!(
    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "TEXT COLLATE \"C\""
);
const SQLITE_READ_MODEL_TABLES: &str = read_model_tables_sql!("INTEGER PRIMARY KEY", "TEXT");

/// Migration 3's tail: the projector starts over from the beginning of the log, and the read
/// models' generation moves, as after a rebuild, so that no in-memory copy outlives the tables.
macro_rules! restart_projection_sql {
    () => {
        r#"
INSERT INTO projector_checkpoint (name, position) VALUES ('read_models', 0)
    ON CONFLICT (name) DO UPDATE SET position = 0;
INSERT INTO projector_checkpoint (name, position) VALUES ('read_models_generation', 1)
    ON CONFLICT (name) DO UPDATE SET position = projector_checkpoint.position + 1;
"#
    };
}

/// Migration 3: the read models in their current shape (`stat_facts.row_id`, no statistics
/// indexes). Read models hold nothing of their own: they are dropped, created empty and
/// projected again from the log, from position 0, by the projector of the server that starts.
/// Until it has caught up, the case list and the statistics trail the log, and say so in
/// `as_of_position`.
const POSTGRES_READ_MODELS_3: &str = concat!(
    "\nDROP TABLE IF EXISTS stat_facts{s};\nDROP TABLE IF EXISTS case_summaries{s};",
    read_model_tables_sql!(
        "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "TEXT COLLATE \"C\""
    ),
    restart_projection_sql!()
);
const SQLITE_READ_MODELS_3: &str = concat!(
    "\nDROP TABLE IF EXISTS stat_facts{s};\nDROP TABLE IF EXISTS case_summaries{s};",
    read_model_tables_sql!("INTEGER PRIMARY KEY", "TEXT"),
    restart_projection_sql!()
);

/// The read-model DDL of migration 2, as released (never edited: migration 3 replaces it).
macro_rules! read_model_tables_2_sql {
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

/// Migration 2, the same on both stores: the projector's checkpoint and the first read models.
const READ_MODELS: &str = concat!(
    "\nCREATE TABLE IF NOT EXISTS projector_checkpoint (name TEXT PRIMARY KEY, position BIGINT NOT NULL);",
    read_model_tables_2_sql!()
);

#[cfg(test)]
mod tests {
    #[test]
    fn the_latest_migration_creates_the_same_tables_a_rebuild_does() {
        for (postgres, list) in [(true, super::POSTGRES), (false, super::SQLITE)] {
            let (version, _, sql) = list.last().unwrap();
            assert_eq!(*version, 3);
            let migration = sql.replace("{s}", "");
            let tables = super::read_model_tables(postgres, "");
            assert!(migration.contains(&tables), "{migration}");
            assert!(!migration.contains("{s}"));
            assert!(super::read_model_tables(postgres, "_x").contains("stat_facts_x ("));
        }
    }
}
