//! The bulk fill of a rebuild on PostgreSQL: every final event read once, in table order, folded
//! by [`Replay`], and the read-model rows streamed into fresh tables with `COPY … FROM STDIN`.
//!
//! Why not the projector's batches: they walk the log index in log order, read each case's
//! summary back before a batch, and insert a few thousand rows per statement — about ten times
//! slower than reading the table. Here the table is read by a sequential scan and the rows are
//! written by one `COPY` per table, with the facts written while the scan still runs.
//!
//! Invariants:
//! - One snapshot: the events read are exactly those of transactions older than the snapshot's
//!   `xmin` (every one of them committed or rolled back before the snapshot, so all committed
//!   ones are visible), and the checkpoint set is the last of them in log order, `(txid,
//!   position)`. Every event before it in log order has a smaller `txid`, so was read; the
//!   projector's reader continues after it exactly as it would after a batch.
//! - The fill writes only the `suffix` tables and checkpoint `name`; the live read models are
//!   untouched until the swap.

use super::read_models::{FACT_COLUMNS, SUMMARY_COLUMNS};
use super::{db_error, Store, StoreError};
use futures_util::TryStreamExt;
use tiaojie_domain::CaseEvent;
use tiaojie_projections::replay::{EmittedFact, Replay};
use tiaojie_projections::summary::CaseSummary;
use uuid::Uuid;

/// Bytes of scanned rows per message from the scan to the fold (about a thousand events).
const SCAN_BATCH_BYTES: usize = 512 * 1024;
/// Bytes of COPY text per message to the writer.
const COPY_CHUNK: usize = 1 << 20;

/// What a fill did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filled {
    /// Events read and folded.
    pub events: u64,
    /// The position checkpoint `name` was set to (0: the log was empty).
    pub position: i64,
}

impl Store {
    /// Creates the `suffix` read-model tables empty and bare: without their secondary indexes
    /// and without their primary-key and unique constraints, which a bulk fill would otherwise
    /// maintain row by row (a B-tree descent per row, comparing text keys by collation). Returns
    /// the DDL that gives them back, for [`Store::complete_read_models`] to run after the fill,
    /// when each index is built in one sort. PostgreSQL only. Drops leftovers of the same name
    /// first.
    pub async fn create_bare_read_models(&self, suffix: &str) -> Result<String, StoreError> {
        let pool = self.bulk_pool()?;
        let (tables, indexes) = split_ddl(&super::migrations::read_model_tables(true, suffix));
        let drop = format!(
            "DROP TABLE IF EXISTS case_summaries{suffix}; DROP TABLE IF EXISTS stat_facts{suffix};"
        );
        sqlx::raw_sql(&drop).execute(pool).await.map_err(db_error)?;
        sqlx::raw_sql(&tables)
            .execute(pool)
            .await
            .map_err(db_error)?;
        // The constraints as the DDL made them, read back from the catalog rather than restated.
        let constraints: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid IN ($1::regclass, $2::regclass) AND contype IN ('p', 'u') ORDER BY conname",
        )
        .bind(format!("case_summaries{suffix}"))
        .bind(format!("stat_facts{suffix}"))
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
        let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        let mut strip = String::new();
        let mut complete = String::new();
        for (table, name, definition) in &constraints {
            strip.push_str(&format!(
                "ALTER TABLE {table} DROP CONSTRAINT {};\n",
                quote(name)
            ));
            complete.push_str(&format!(
                "ALTER TABLE {table} ADD CONSTRAINT {} {definition};\n",
                quote(name)
            ));
        }
        sqlx::raw_sql(&strip)
            .execute(pool)
            .await
            .map_err(db_error)?;
        complete.push_str(&indexes);
        Ok(complete)
    }

    /// Runs the DDL [`Store::create_bare_read_models`] returned: constraints and indexes back.
    pub async fn complete_read_models(&self, ddl: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(ddl)
            .execute(self.bulk_pool()?)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The pool the bulk path runs on: it is PostgreSQL's `COPY` throughout.
    fn bulk_pool(&self) -> Result<&sqlx::PgPool, StoreError> {
        self.postgres_pool()
            .ok_or_else(|| StoreError::Database("a bulk rebuild needs PostgreSQL".into()))
    }

    /// Fills the `suffix` read-model tables (created empty beforehand) from every final event
    /// and sets checkpoint `name` to the last of them in log order. PostgreSQL only (SQLite's
    /// rebuild uses the projector's batches).
    pub async fn bulk_fill(&self, suffix: &str, name: &str) -> Result<Filled, StoreError> {
        let pool = self.bulk_pool()?;
        let mut reader = pool.begin().await.map_err(db_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *reader)
            .await
            .map_err(db_error)?;
        let xmin: String =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                .fetch_one(&mut *reader)
                .await
                .map_err(db_error)?;

        // The fold runs on a thread of its own, between the scan (this task) and the COPY
        // writer (another task), so that reading, parsing and writing overlap.
        // `xmin` goes into the COPY statement as a literal (COPY takes no parameters): make sure
        // it is the number PostgreSQL printed.
        if xmin.is_empty() || !xmin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StoreError::Database(format!(
                "unexpected snapshot xmin {xmin:?}"
            )));
        }
        // The scan comes as binary COPY data cut into whole rows (see `pgcopy`): no driver row
        // per event.
        let (rows_tx, rows_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let (copy_tx, copy_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let fold = std::thread::spawn(move || fold_rows(rows_rx, copy_tx));
        let facts_sql = format!("COPY stat_facts{suffix} ({FACT_COLUMNS}) FROM STDIN");
        let writer = tokio::spawn(copy_in(pool.clone(), facts_sql, copy_rx));

        let scan = async {
            let mut chunks = reader
                .copy_out_raw(&format!(
                    "COPY (SELECT aggregate_id, sequence, payload::text FROM events WHERE txid < '{xmin}'::xid8) \
                     TO STDOUT WITH (FORMAT binary)"
                ))
                .await
                .map_err(db_error)?;
            let mut splitter = super::pgcopy::Splitter::default();
            while let Some(chunk) = chunks.try_next().await.map_err(db_error)? {
                if let Some(batch) = splitter.push(&chunk, SCAN_BATCH_BYTES)? {
                    // The fold thread only stops early on a failure it reports itself.
                    if rows_tx.send(batch).await.is_err() {
                        return Ok(());
                    }
                }
            }
            let _ = rows_tx.send(splitter.finish()?).await;
            drop(rows_tx);
            Ok::<(), StoreError>(())
        };
        let scanned = scan.await;
        let folded = tokio::task::spawn_blocking(move || fold.join())
            .await
            .map_err(|e| StoreError::Database(format!("rebuild fold task failed: {e}")))?
            .map_err(|_| StoreError::Database("the rebuild fold thread panicked".into()))?;
        let wrote = writer
            .await
            .map_err(|e| StoreError::Database(format!("rebuild writer task failed: {e}")))?;
        scanned?;
        wrote?;
        let (events, summaries) = folded?;

        let position: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM events WHERE txid < $1::xid8 ORDER BY txid DESC, position DESC LIMIT 1",
        )
        .bind(&xmin)
        .fetch_optional(&mut *reader)
        .await
        .map_err(db_error)?;
        reader.commit().await.map_err(db_error)?;

        write_summaries(pool, suffix, &summaries).await?;
        let position = position.unwrap_or(0);
        sqlx::query(
            "INSERT INTO projector_checkpoint (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .bind(name)
        .bind(position)
        .execute(pool)
        .await
        .map_err(db_error)?;
        Ok(Filled { events, position })
    }
}

/// The read-model DDL split into its `CREATE TABLE` statements and its `CREATE INDEX` ones.
fn split_ddl(ddl: &str) -> (String, String) {
    let (mut tables, mut indexes) = (String::new(), String::new());
    for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let target = if statement.starts_with("CREATE INDEX")
            || statement.starts_with("CREATE UNIQUE INDEX")
        {
            &mut indexes
        } else {
            &mut tables
        };
        target.push_str(statement);
        target.push_str(";\n");
    }
    (tables, indexes)
}

/// Parses and folds the scanned rows, sending the facts as COPY text; returns the number of
/// events and the final summaries.
fn fold_rows(
    mut rows: tokio::sync::mpsc::Receiver<Vec<u8>>,
    copy: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(u64, Vec<CaseSummary>), StoreError> {
    let mut replay = Replay::new();
    let mut events = 0u64;
    let mut out: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
    let send = |out: &mut Vec<u8>| -> Result<(), StoreError> {
        let full = std::mem::replace(out, Vec::with_capacity(COPY_CHUNK + 4096));
        copy.blocking_send(full)
            .map_err(|_| StoreError::Database("the rebuild's COPY writer stopped".into()))
    };
    while let Some(batch) = rows.blocking_recv() {
        super::pgcopy::for_each_tuple::<3>(&batch, |f| {
            events += 1;
            let case_id = super::pgcopy::text(f[0])?;
            let sequence = super::pgcopy::int8(f[1])?;
            let Ok(id) = Uuid::parse_str(case_id) else {
                return Ok(());
            };
            // The same rule as the projector's: an unreadable payload adds nothing.
            let event = match serde_json::from_slice::<CaseEvent>(f[2].unwrap_or_default()) {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(case_id, sequence, %err, "event skipped by the rebuild: unreadable payload");
                    return Ok(());
                }
            };
            replay.push(id, sequence.max(0) as u64, event, &mut |f| {
                fact_line(&f, &mut out)
            });
            Ok(())
        })?;
        if out.len() >= COPY_CHUNK {
            send(&mut out)?;
        }
    }
    let summaries = replay.finish(&mut |f| fact_line(&f, &mut out));
    if !out.is_empty() {
        send(&mut out)?;
    }
    Ok((events, summaries))
}

/// Streams COPY text from `chunks` into one `COPY … FROM STDIN`.
async fn copy_in(
    pool: sqlx::PgPool,
    sql: String,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<u64, StoreError> {
    let mut conn = pool.acquire().await.map_err(db_error)?;
    let mut copy = conn.copy_in_raw(&sql).await.map_err(db_error)?;
    while let Some(chunk) = chunks.recv().await {
        if let Err(e) = copy.send(chunk).await {
            let _ = copy.abort("rebuild failed").await;
            return Err(db_error(e));
        }
    }
    copy.finish().await.map_err(db_error)
}

async fn write_summaries(
    pool: &sqlx::PgPool,
    suffix: &str,
    summaries: &[CaseSummary],
) -> Result<(), StoreError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let sql = format!("COPY case_summaries{suffix} ({SUMMARY_COLUMNS}) FROM STDIN");
    let writer = tokio::spawn(copy_in(pool.clone(), sql, rx));
    let mut out = Vec::with_capacity(COPY_CHUNK + 4096);
    let mut sent = Ok(());
    for s in summaries {
        summary_line(s, &mut out);
        if out.len() >= COPY_CHUNK {
            let full = std::mem::replace(&mut out, Vec::with_capacity(COPY_CHUNK + 4096));
            if tx.send(full).await.is_err() {
                sent = Err(StoreError::Database(
                    "the rebuild's COPY writer stopped".into(),
                ));
                break;
            }
        }
    }
    if sent.is_ok() && !out.is_empty() {
        let _ = tx.send(out).await;
    }
    drop(tx);
    writer
        .await
        .map_err(|e| StoreError::Database(format!("rebuild writer task failed: {e}")))??;
    sent
}

/// One text field of COPY's text format: backslash, tab, newline and carriage return escaped.
/// (The benchmark's seeding writes its COPY rows with it too.)
pub fn copy_text(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn int(out: &mut Vec<u8>, n: i64) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

fn opt_int(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        Some(n) => int(out, n),
        None => out.extend_from_slice(b"\\N"),
    }
}

fn fact_line(f: &EmittedFact, out: &mut Vec<u8>) {
    let fact = &f.fact;
    let mut id = Uuid::encode_buffer();
    copy_text(out, f.case_id.hyphenated().encode_lower(&mut id));
    out.push(b'\t');
    int(out, f.sequence as i64);
    out.push(b'\t');
    int(out, f.ord as i64);
    out.push(b'\t');
    copy_text(out, fact.kind.as_str());
    out.push(b'\t');
    copy_text(out, &fact.room_id);
    out.push(b'\t');
    copy_text(out, &fact.category);
    out.push(b'\t');
    int(out, fact.occurred_at.timestamp_micros());
    out.push(b'\t');
    opt_int(out, fact.amount_fen.map(|a| a as i64));
    out.push(b'\t');
    opt_int(out, fact.duration_us);
    out.push(b'\t');
    match &fact.label {
        Some(l) => copy_text(out, l),
        None => out.extend_from_slice(b"\\N"),
    }
    out.push(b'\n');
}

fn summary_line(s: &CaseSummary, out: &mut Vec<u8>) {
    copy_text(out, &s.case_id.to_string());
    out.push(b'\t');
    copy_text(out, &s.case_no);
    out.push(b'\t');
    copy_text(out, &s.room_id);
    out.push(b'\t');
    copy_text(out, &s.filed_room_id);
    out.push(b'\t');
    copy_text(out, s.status.as_str());
    out.push(b'\t');
    copy_text(out, &s.category);
    out.push(b'\t');
    copy_text(out, &s.source);
    out.push(b'\t');
    int(out, s.filed_at.timestamp_micros());
    out.push(b'\t');
    opt_int(out, s.accepted_at.map(|t| t.timestamp_micros()));
    out.push(b'\t');
    opt_int(out, s.concluded_at.map(|t| t.timestamp_micros()));
    out.push(b'\t');
    copy_text(
        out,
        &serde_json::to_string(&s.mediators).unwrap_or_else(|_| "[]".into()),
    );
    out.push(b'\t');
    int(out, s.version as i64);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ddl_splits_into_tables_and_indexes_and_loses_nothing() {
        let ddl = crate::store::migrations::read_model_tables(true, "_x");
        let (tables, indexes) = super::split_ddl(&ddl);
        assert!(tables.contains("CREATE TABLE IF NOT EXISTS case_summaries_x"));
        assert!(!tables.contains("INDEX"));
        assert!(indexes.lines().all(|l| l.contains("INDEX")));
        let words = |s: &str| {
            s.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let statements = |s: &str| {
            let mut v: Vec<String> = s.split(';').map(words).filter(|s| !s.is_empty()).collect();
            v.sort();
            v
        };
        assert_eq!(statements(&format!("{tables}{indexes}")), statements(&ddl));
    }
}
