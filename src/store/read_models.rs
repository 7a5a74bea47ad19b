//! The read-model tables: how the projector writes them and how the API reads them. The folds
//! themselves are pure code in `tiaojie-projections`; this module only moves rows.
//!
//! Invariants: a batch of events, its read-model rows and the checkpoint commit in one
//! transaction, so a crash loses nothing and counts nothing twice; facts are unique by (case,
//! sequence, ordinal), so even a replayed batch cannot double-count; facts get their `row_id`
//! in the order batches commit (see `migrations`), so a reader that has every row up to some id
//! only ever needs the rows above it; and the tables are only ever replaced whole, together with
//! a new generation number ([`GENERATION`]).

use super::{db_error, Backend, Store, StoreError, StoredEvent};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use tiaojie_domain::{CaseEvent, CaseStatus};
use tiaojie_projections::facts::{facts, FactKind};
use tiaojie_projections::index::FactRow;
use tiaojie_projections::summary::CaseSummary;
use uuid::Uuid;

/// The live projector's checkpoint name.
pub const CHECKPOINT: &str = "read_models";

/// The read models' generation, kept in `projector_checkpoint` beside the checkpoints: it moves
/// whenever the live tables are replaced (a rebuild's swap, migration 3), so that a copy of them
/// in memory knows its rows are gone and reads the new tables from the start.
pub const GENERATION: &str = "read_models_generation";

/// Fact rows per query of [`Store::read_stat_facts`].
const FACTS_PAGE: i64 = 20_000;

/// What one [`Store::read_stat_facts`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactsSeen {
    /// The live checkpoint in that snapshot: the facts read reflect the log up to it.
    pub position: i64,
    /// The read models' generation in that snapshot.
    pub generation: i64,
    /// Whether every fact was read (the caller's generation was not the current one).
    pub from_start: bool,
    /// The largest `row_id` read (the one asked to read after, when no row was new).
    pub last_row_id: i64,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// One row of the case list.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    /// The summary.
    pub summary: CaseSummary,
}

/// What the case list is filtered by.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    /// Rooms the caller may see (`None`: all).
    pub scope: Option<Vec<String>>,
    /// `room_id=`.
    pub room_id: Option<String>,
    /// `status=`.
    pub status: Option<String>,
    /// `category=`.
    pub category: Option<String>,
    /// `mediator_id=`.
    pub mediator_id: Option<String>,
    /// `filed_from=` (inclusive).
    pub filed_from: Option<DateTime<Utc>>,
    /// `filed_to=` (exclusive).
    pub filed_to: Option<DateTime<Utc>>,
    /// Continue after this (filed_at, case_id).
    pub after: Option<(i64, String)>,
    /// Page size.
    pub limit: i64,
}

type SummaryTuple = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    i64,
);

fn summary_from(row: SummaryTuple) -> Option<CaseSummary> {
    let (
        case_id,
        case_no,
        room_id,
        filed_room_id,
        status,
        category,
        source,
        filed_at,
        accepted_at,
        concluded_at,
        mediators,
        version,
    ) = row;
    Some(CaseSummary {
        case_id: Uuid::parse_str(&case_id).ok()?,
        case_no,
        room_id,
        filed_room_id,
        status: CaseStatus::parse(&status)?,
        category,
        source,
        filed_at: from_micros(filed_at),
        accepted_at: accepted_at.map(from_micros),
        concluded_at: concluded_at.map(from_micros),
        mediators: serde_json::from_str(&mediators).ok()?,
        version: version.max(0) as u64,
    })
}

/// The columns of a case summary row, in the order every writer and reader binds them.
pub(super) const SUMMARY_COLUMNS: &str = "case_id, case_no, room_id, filed_room_id, status, category, source, filed_at, accepted_at, concluded_at, mediators, version";
/// The columns of a fact row a writer supplies (`row_id` is the table's own), in binding order.
pub(super) const FACT_COLUMNS: &str =
    "case_id, seq, ord, kind, room_id, category, occurred_at, amount_fen, duration_us, label";

impl Store {
    /// `$n` placeholders as this store writes them.
    pub(super) fn sql(&self, text: &str) -> String {
        match &self.inner.backend {
            Backend::Postgres { .. } => text.to_string(),
            Backend::Sqlite { .. } => text.replace('$', "?"),
        }
    }

    /// The position the read models have applied up to (0: nothing yet).
    pub async fn checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        let sql = self.sql("SELECT position FROM projector_checkpoint WHERE name = $1");
        let found: Option<i64> = with_pool!(self, pool => sqlx::query_scalar(&sql).bind(name).fetch_optional(pool).await)
            .map_err(db_error)?;
        Ok(found.unwrap_or(0))
    }

    /// Applies a batch of events (in log order) to the read-model tables named with `suffix`,
    /// and moves checkpoint `name` to the batch's last position, all in one transaction.
    /// `known` caches case summaries across batches; summaries not in it are read first.
    ///
    /// The checkpoint moves only from `expected`: when another projector (or a rebuild) moved it
    /// meanwhile, nothing is written and the answer is `Ok(false)`; the caller re-reads it.
    ///
    /// Its multi-row statements have one text per row count, so they are not kept prepared in
    /// the connections' statement caches: on SQLite each cached one held its compiled program,
    /// up to a hundred per connection, megabytes in all.
    pub async fn apply_batch(
        &self,
        events: &[StoredEvent],
        suffix: &str,
        name: &str,
        expected: i64,
        known: &mut HashMap<Uuid, CaseSummary>,
    ) -> Result<bool, StoreError> {
        let Some(last) = events.last() else {
            return Ok(true);
        };
        let parsed: Vec<(Uuid, i64, CaseEvent)> = events
            .iter()
            .filter_map(|e| {
                let id = Uuid::parse_str(&e.case_id).ok()?;
                match serde_json::from_value::<CaseEvent>(e.payload.clone()) {
                    Ok(ev) => Some((id, e.sequence, ev)),
                    Err(err) => {
                        tracing::warn!(position = e.position, %err, "event skipped by the projector: unreadable payload");
                        None
                    }
                }
            })
            .collect();
        let missing: Vec<String> = parsed
            .iter()
            .map(|(id, _, _)| *id)
            .filter(|id| !known.contains_key(id))
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        for chunk in missing.chunks(500) {
            let rows: Vec<SummaryTuple> = with_pool!(self, pool => {
                let mut qb = sqlx::QueryBuilder::new(format!("SELECT {SUMMARY_COLUMNS} FROM case_summaries{suffix} WHERE case_id IN ("));
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(id.clone());
                }
                qb.push(")");
                // One statement text per batch size: not kept prepared (see `apply_batch`).
                qb.build_query_as().persistent(false).fetch_all(pool).await
            })
            .map_err(db_error)?;
            for row in rows {
                if let Some(s) = summary_from(row) {
                    known.insert(s.case_id, s);
                }
            }
        }
        struct FactRow {
            case_id: String,
            seq: i64,
            ord: i32,
            kind: FactKind,
            room_id: String,
            category: String,
            occurred_at: i64,
            amount_fen: Option<i64>,
            duration_us: Option<i64>,
            label: Option<String>,
        }
        let mut fact_rows = Vec::new();
        let mut touched: Vec<Uuid> = Vec::new();
        for (id, seq, event) in &parsed {
            for (ord, f) in facts(known.get(id), event).into_iter().enumerate() {
                fact_rows.push(FactRow {
                    case_id: id.to_string(),
                    seq: *seq,
                    ord: ord as i32,
                    kind: f.kind,
                    room_id: f.room_id,
                    category: f.category,
                    occurred_at: micros(f.occurred_at),
                    amount_fen: f.amount_fen.map(|a| a as i64),
                    duration_us: f.duration_us,
                    label: f.label,
                });
            }
            match known.get_mut(id) {
                Some(s) => s.apply(event),
                None => {
                    if let Some(s) = CaseSummary::start(*id, event) {
                        known.insert(*id, s);
                    }
                }
            }
            if !touched.contains(id) {
                touched.push(*id);
            }
        }
        let checkpoint_sql = self.sql(
            "INSERT INTO projector_checkpoint (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position WHERE projector_checkpoint.position = $3",
        );
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db_error)?;
            // The checkpoint first: a rebuild's swap locks projector_checkpoint before it drops
            // the live tables, so taking the same order here cannot deadlock with it.
            let moved = sqlx::query(&checkpoint_sql)
                .bind(name)
                .bind(last.position)
                .bind(expected)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            if moved.rows_affected() != 1 {
                tx.rollback().await.map_err(db_error)?;
                return Ok(false);
            }
            for chunk in touched.chunks(1000) {
                let mut qb = sqlx::QueryBuilder::new(format!("INSERT INTO case_summaries{suffix} ({SUMMARY_COLUMNS}) "));
                qb.push_values(chunk.iter().filter_map(|id| known.get(id)), |mut b, s| {
                    b.push_bind(s.case_id.to_string())
                        .push_bind(s.case_no.clone())
                        .push_bind(s.room_id.clone())
                        .push_bind(s.filed_room_id.clone())
                        .push_bind(s.status.as_str())
                        .push_bind(s.category.clone())
                        .push_bind(s.source.clone())
                        .push_bind(micros(s.filed_at))
                        .push_bind(s.accepted_at.map(micros))
                        .push_bind(s.concluded_at.map(micros))
                        .push_bind(serde_json::to_string(&s.mediators).unwrap_or_else(|_| "[]".into()))
                        .push_bind(s.version as i64);
                });
                qb.push(
                    " ON CONFLICT (case_id) DO UPDATE SET case_no = excluded.case_no, room_id = excluded.room_id, \
                     filed_room_id = excluded.filed_room_id, status = excluded.status, category = excluded.category, \
                     source = excluded.source, filed_at = excluded.filed_at, accepted_at = excluded.accepted_at, \
                     concluded_at = excluded.concluded_at, mediators = excluded.mediators, version = excluded.version",
                );
                qb.build().persistent(false).execute(&mut *tx).await.map_err(db_error)?;
            }
            for chunk in fact_rows.chunks(1000) {
                let mut qb = sqlx::QueryBuilder::new(format!(
                    "INSERT INTO stat_facts{suffix} ({FACT_COLUMNS}) "
                ));
                qb.push_values(chunk, |mut b, f| {
                    b.push_bind(f.case_id.clone())
                        .push_bind(f.seq)
                        .push_bind(f.ord)
                        .push_bind(f.kind.as_str())
                        .push_bind(f.room_id.clone())
                        .push_bind(f.category.clone())
                        .push_bind(f.occurred_at)
                        .push_bind(f.amount_fen)
                        .push_bind(f.duration_us)
                        .push_bind(f.label.clone());
                });
                qb.push(" ON CONFLICT (case_id, seq, ord) DO NOTHING");
                qb.build().persistent(false).execute(&mut *tx).await.map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)?;
        });
        Ok(true)
    }

    /// A page of the case list, newest filed first, and the checkpoint it reflects.
    pub async fn list_cases(&self, f: &CaseFilter) -> Result<(Vec<CaseSummary>, i64), StoreError> {
        let position = self.checkpoint(CHECKPOINT).await?;
        if f.scope.as_ref().is_some_and(|s| s.is_empty()) {
            return Ok((Vec::new(), position));
        }
        macro_rules! list_query {
            () => {{
                let mut qb = sqlx::QueryBuilder::new(format!(
                    "SELECT {SUMMARY_COLUMNS} FROM case_summaries WHERE 1 = 1"
                ));
                if let Some(scope) = &f.scope {
                    qb.push(" AND room_id IN (");
                    let mut sep = qb.separated(", ");
                    for r in scope {
                        sep.push_bind(r.clone());
                    }
                    qb.push(")");
                }
                if let Some(v) = &f.room_id {
                    qb.push(" AND room_id = ").push_bind(v.clone());
                }
                if let Some(v) = &f.status {
                    qb.push(" AND status = ").push_bind(v.clone());
                }
                if let Some(v) = &f.category {
                    qb.push(" AND category = ").push_bind(v.clone());
                }
                if let Some(v) = &f.mediator_id {
                    // The JSON-quoted id as an exact, case-sensitive substring of the stored
                    // JSON array (SQLite's LIKE ignores ASCII case).
                    let quoted = serde_json::to_string(v).unwrap_or_default();
                    let contains = match self.kind() {
                        "postgres" => " AND strpos(mediators, ",
                        _ => " AND instr(mediators, ",
                    };
                    qb.push(contains).push_bind(quoted).push(") > 0");
                }
                if let Some(v) = f.filed_from {
                    qb.push(" AND filed_at >= ").push_bind(micros(v));
                }
                if let Some(v) = f.filed_to {
                    qb.push(" AND filed_at < ").push_bind(micros(v));
                }
                if let Some((at, id)) = &f.after {
                    qb.push(" AND (filed_at < ").push_bind(*at);
                    qb.push(" OR (filed_at = ").push_bind(*at);
                    qb.push(" AND case_id < ").push_bind(id.clone());
                    qb.push("))");
                }
                qb.push(" ORDER BY filed_at DESC, case_id DESC LIMIT ")
                    .push_bind(f.limit);
                qb
            }};
        }
        let rows: Vec<SummaryTuple> = with_pool!(self, pool => {
            let mut qb = list_query!();
            qb.build_query_as().fetch_all(pool).await
        })
        .map_err(db_error)?;
        Ok((
            rows.into_iter().filter_map(summary_from).collect(),
            position,
        ))
    }

    /// In one read-only snapshot: the live checkpoint, the read models' generation, and the
    /// statistical facts after row `after.1`, in `row_id` order; every fact when `after` is `None`
    /// or names another generation than the current one (the tables were swapped since). Each
    /// fact goes to `on_row(from_start, fact)` as it is read, a page at a time, so a full read is
    /// never held in memory as rows. A row whose case id or kind cannot be read is skipped with a
    /// warning.
    ///
    /// On PostgreSQL the snapshot is `REPEATABLE READ READ ONLY`, and it first takes
    /// `ACCESS SHARE` on `projector_checkpoint`, before the snapshot exists (`LOCK TABLE` takes
    /// none): a rebuild's swap locks that table exclusively before it drops and renames tables,
    /// so the snapshot is either wholly before the swap or wholly after it. Without the lock, a
    /// snapshot taken before the swap committed could still find `stat_facts` naming the new
    /// table (table names resolve to the latest catalog, not the snapshot's) and read its rows
    /// under the old generation. On SQLite a read transaction sees one state of the file,
    /// schema included.
    pub async fn read_stat_facts(
        &self,
        after: Option<(i64, i64)>,
        on_row: &mut (dyn FnMut(bool, FactRow<'_>) + Send),
    ) -> Result<FactsSeen, StoreError> {
        let marks_sql =
            self.sql("SELECT name, position FROM projector_checkpoint WHERE name IN ($1, $2)");
        let facts_sql = self.sql(
            "SELECT row_id, case_id, seq, kind, room_id, category, occurred_at, amount_fen, duration_us, label \
             FROM stat_facts WHERE row_id > $1 ORDER BY row_id LIMIT $2",
        );
        let begin = match self.kind() {
            // One round trip, as one simple query: the lock is taken before the snapshot.
            "postgres" => {
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                 LOCK TABLE projector_checkpoint IN ACCESS SHARE MODE"
            }
            _ => "BEGIN",
        };
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(begin).await.map_err(db_error)?;
            let marks: Vec<(String, i64)> = sqlx::query_as(&marks_sql)
                .bind(CHECKPOINT)
                .bind(GENERATION)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            let mark = |name: &str| marks.iter().find(|m| m.0 == name).map(|m| m.1).unwrap_or(0);
            let (position, generation) = (mark(CHECKPOINT), mark(GENERATION));
            let (from_start, mut last_row_id) = match after {
                Some((g, last)) if g == generation => (false, last),
                _ => (true, 0),
            };
            // Pages within the one snapshot: a full read never holds every row at once.
            loop {
                let rows = sqlx::query(&facts_sql)
                    .bind(last_row_id)
                    .bind(FACTS_PAGE)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                for row in &rows {
                    last_row_id = row.try_get(0).map_err(db_error)?;
                    let case_id: &str = row.try_get(1).map_err(db_error)?;
                    let kind: &str = row.try_get(3).map_err(db_error)?;
                    let (Ok(case_id), Some(kind)) = (Uuid::parse_str(case_id), FactKind::parse(kind)) else {
                        tracing::warn!(row_id = last_row_id, "statistical fact skipped: unreadable case id or kind");
                        continue;
                    };
                    on_row(
                        from_start,
                        FactRow {
                            case_id,
                            seq: row.try_get(2).map_err(db_error)?,
                            kind,
                            room_id: row.try_get(4).map_err(db_error)?,
                            category: row.try_get(5).map_err(db_error)?,
                            occurred_at: row.try_get(6).map_err(db_error)?,
                            amount_fen: row.try_get(7).map_err(db_error)?,
                            duration_us: row.try_get(8).map_err(db_error)?,
                            label: row.try_get(9).map_err(db_error)?,
                        },
                    );
                }
                if (rows.len() as i64) < FACTS_PAGE {
                    break;
                }
            }
            tx.commit().await.map_err(db_error)?;
            Ok(FactsSeen {
                position,
                generation,
                from_start,
                last_row_id,
            })
        })
    }

    /// Sets checkpoint `name` back to the start of the log.
    pub async fn reset_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO projector_checkpoint (name, position) VALUES ($1, 0) \
             ON CONFLICT (name) DO UPDATE SET position = 0",
        );
        with_pool!(self, pool => sqlx::query(&sql).bind(name).execute(pool).await.map(drop))
            .map_err(db_error)?;
        Ok(())
    }

    /// Empties the `_new` read-model tables and builds them afresh (for a rebuild).
    pub async fn create_fresh_read_models(&self, suffix: &str) -> Result<(), StoreError> {
        let drop = format!(
            "DROP TABLE IF EXISTS case_summaries{suffix}; DROP TABLE IF EXISTS stat_facts{suffix};"
        );
        let create = super::migrations::read_model_tables(self.kind() == "postgres", suffix);
        with_pool!(self, pool => {
            sqlx::raw_sql(&drop).execute(pool).await.map_err(db_error)?;
            sqlx::raw_sql(&create).execute(pool).await.map_err(db_error)?;
        });
        Ok(())
    }

    /// Catches the `suffix` tables up with the log under checkpoint `from_name`, then, in one
    /// transaction, swaps them in for the live ones and gives the live checkpoint their position.
    /// Events committed after the catch-up are not in the new tables; the live projector finds
    /// its checkpoint moved and applies them from there.
    pub async fn swap_read_models(
        &self,
        suffix: &str,
        from_name: &str,
        known: &mut HashMap<Uuid, CaseSummary>,
    ) -> Result<i64, StoreError> {
        // Lock out the live projector (it writes the checkpoint row in every batch), catch the
        // new tables up to the log's end, then rename them into place.
        let lock = match self.kind() {
            "postgres" => "LOCK TABLE projector_checkpoint IN ACCESS EXCLUSIVE MODE",
            // SQLite: a write first, so the transaction takes the write lock at once (waiting
            // its turn); a read first would make the later rename an upgrade, which fails with
            // "database is locked" as soon as anyone else has written meanwhile.
            _ => "UPDATE projector_checkpoint SET position = position",
        };
        loop {
            let after = self.checkpoint(from_name).await?;
            let page = self.read_log(Some(after).filter(|a| *a > 0), 5_000).await?;
            if page.is_empty() {
                break;
            }
            if !self
                .apply_batch(&page, suffix, from_name, after, known)
                .await?
            {
                return Err(StoreError::Database("another rebuild is running".into()));
            }
        }
        let rename = format!(
            "DROP TABLE case_summaries; DROP TABLE stat_facts; \
             ALTER TABLE case_summaries{suffix} RENAME TO case_summaries; ALTER TABLE stat_facts{suffix} RENAME TO stat_facts;"
        );
        let move_checkpoint = self.sql(
            "INSERT INTO projector_checkpoint (name, position) SELECT $1, position FROM projector_checkpoint WHERE name = $2 \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        );
        let read_new = self.sql("SELECT position FROM projector_checkpoint WHERE name = $1");
        let next_generation = self.sql(
            "INSERT INTO projector_checkpoint (name, position) VALUES ($1, 1) \
             ON CONFLICT (name) DO UPDATE SET position = projector_checkpoint.position + 1",
        );
        let position = with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db_error)?;
            sqlx::query(lock).execute(&mut *tx).await.map_err(db_error)?;
            let position: Option<i64> = sqlx::query_scalar(&read_new).bind(from_name).fetch_optional(&mut *tx).await.map_err(db_error)?;
            sqlx::raw_sql(&rename).execute(&mut *tx).await.map_err(db_error)?;
            sqlx::query(&move_checkpoint).bind(CHECKPOINT).bind(from_name).execute(&mut *tx).await.map_err(db_error)?;
            // New tables, new row ids: copies in memory must start over.
            sqlx::query(&next_generation).bind(GENERATION).execute(&mut *tx).await.map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            position.unwrap_or(0)
        });
        Ok(position)
    }
}
