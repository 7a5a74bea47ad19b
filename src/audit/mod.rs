//! Audit: checking case chains and digesting the whole log. Reads the store, decides nothing
//! about cases.
//!
//! Invariants: verification and the digest recompute every hash from the events' own content;
//! a stored hash is only ever compared, never trusted. The digest at a position covers the log
//! in log order up to and including that event and is the same however often, and however much
//! later, it is computed — unless history was altered.

pub mod chain;

use crate::store::{ChainRow, ChainRows, Head, Store, StoreError};
use chain::{
    check_case, digest_step, event_hash, event_hash_text, CaseChecker, EventFields, Hash,
    StoredText, ZERO,
};
use std::collections::HashMap;

/// One case's verification.
#[derive(Debug, Clone)]
pub struct CaseVerification {
    /// Events checked.
    pub events_checked: u64,
    /// The recomputed head hash (hex).
    pub head_hash: String,
    /// The first bad sequence, if any.
    pub first_invalid_sequence: Option<u64>,
}

/// Verifies one case's chain against its recorded head. `None` when the store knows nothing of
/// the case.
pub async fn verify_case(
    store: &Store,
    case_id: &str,
) -> Result<Option<CaseVerification>, StoreError> {
    let (events, head) = store.case_chain(case_id).await?;
    if events.is_empty() && head.is_none() {
        return Ok(None);
    }
    let chained: Vec<_> = events.iter().map(|e| e.chained()).collect();
    let check = check_case(
        case_id,
        &chained,
        head.as_ref().map(|(s, h)| (*s, h.as_str())),
    );
    Ok(Some(CaseVerification {
        events_checked: check.events_checked,
        head_hash: chain::hex(&check.head_hash),
        first_invalid_sequence: check.first_invalid_sequence,
    }))
}

/// The whole log's verification.
#[derive(Debug, Clone, Default)]
pub struct LogVerification {
    /// Cases looked at (with events or a recorded head).
    pub cases_checked: u64,
    /// Events looked at.
    pub events_checked: u64,
    /// Each bad case and its first bad sequence, ordered by case id.
    pub invalid: Vec<(String, u64)>,
}

/// Verifies every case: one pass over the log ordered by case, plus the recorded heads (a case
/// whose every event was deleted still has a head, and is reported at sequence 1).
///
/// The rows are read on this task and checked on a thread of their own, so reading and hashing
/// overlap. Each row is checked as stored, without copies: when its payload and metadata texts
/// are already canonical JSON (what the append writes) their bytes are hashed directly, otherwise
/// they are parsed and canonicalized first — the same hash either way ([`chain::event_hash_text`]).
pub async fn verify_all(store: &Store) -> Result<LogVerification, StoreError> {
    let heads = store.heads().await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ChainRows>(16);
    let worker = std::thread::spawn(move || -> Result<LogVerification, StoreError> {
        let mut verifier = LogVerifier {
            heads,
            report: LogVerification::default(),
            current: None,
        };
        while let Some(batch) = rx.blocking_recv() {
            batch.for_each(|row| verifier.row(&row))?;
        }
        Ok(verifier.finish())
    });
    let read = store.chain_batches(tx).await;
    let checked = worker
        .join()
        .map_err(|_| StoreError::Database("the verification thread panicked".into()))?;
    read?;
    checked
}

/// The checking side of [`verify_all`]: one case at a time, row by row.
struct LogVerifier {
    heads: HashMap<String, Head>,
    report: LogVerification,
    current: Option<(String, CaseChecker)>,
}

impl LogVerifier {
    fn row(&mut self, row: &ChainRow<'_>) -> Result<(), StoreError> {
        if self.current.as_ref().map(|(id, _)| id.as_str()) != Some(row.case_id) {
            self.finish_case();
            self.current = Some((row.case_id.to_string(), CaseChecker::new()));
        }
        let (case_id, checker) = self.current.as_mut().expect("a current case");
        let sequence = row.sequence.max(0) as u64;
        let recomputed = event_hash_text(
            checker.prev(),
            &StoredText {
                case_id,
                sequence,
                event_type: row.event_type,
                event_version: row.event_version,
                payload: row.payload,
                recorded_at: row.recorded_at,
                metadata: row.metadata,
            },
        )
        .map_err(|e| StoreError::Database(format!("stored event is not JSON: {e}")))?;
        checker.step(sequence, recomputed, row.prev_hash, row.hash);
        Ok(())
    }

    fn finish_case(&mut self) {
        let Some((case_id, checker)) = self.current.take() else {
            return;
        };
        let head = self.heads.remove(&case_id);
        let check = checker.finish(head.as_ref().map(|(s, h)| (*s, h.as_str())));
        self.report.cases_checked += 1;
        self.report.events_checked += check.events_checked;
        if let Some(seq) = check.first_invalid_sequence {
            self.report.invalid.push((case_id, seq));
        }
    }

    fn finish(mut self) -> LogVerification {
        self.finish_case();
        for (case_id, _) in self.heads {
            self.report.cases_checked += 1;
            self.report.invalid.push((case_id, 1));
        }
        self.report.invalid.sort();
        self.report
    }
}

/// A digest of the log up to a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The position of the last event covered.
    pub position: i64,
    /// `digest(n)` over the events in log order (hex).
    pub digest: String,
    /// How many events it covers.
    pub events: u64,
}

/// The digest of the log up to and including the event at `position` (the last final event
/// when `None`). `None` when that position is not (yet) in the final log, or the log is empty.
pub async fn digest(store: &Store, position: Option<i64>) -> Result<Option<Digest>, StoreError> {
    const PAGE: i64 = 5_000;
    let mut digest: Hash = ZERO;
    let mut count = 0u64;
    let mut last_position = None;
    let mut case_heads: HashMap<String, Hash> = HashMap::new();
    let mut after = None;
    loop {
        let page = store.read_log(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        for e in &page {
            let prev = if e.sequence <= 1 {
                ZERO
            } else {
                case_heads.get(&e.case_id).copied().unwrap_or(ZERO)
            };
            let hash = event_hash(
                &prev,
                &EventFields {
                    case_id: &e.case_id,
                    sequence: e.sequence.max(0) as u64,
                    event_type: &e.event_type,
                    event_version: &e.event_version,
                    payload: &e.payload,
                    recorded_at: &e.recorded_at,
                    metadata: &e.metadata,
                },
            );
            case_heads.insert(e.case_id.clone(), hash);
            digest = digest_step(&digest, &hash);
            count += 1;
            last_position = Some(e.position);
            if Some(e.position) == position {
                return Ok(Some(Digest {
                    position: e.position,
                    digest: chain::hex(&digest),
                    events: count,
                }));
            }
        }
    }
    match (position, last_position) {
        (None, Some(p)) => Ok(Some(Digest {
            position: p,
            digest: chain::hex(&digest),
            events: count,
        })),
        _ => Ok(None),
    }
}
