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
    check_case, digest_step, event_hash, event_hash_text, parse_stored_hex, CaseChecker,
    EventFields, Hash, StoredText, ZERO,
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

/// Verifies every case: one pass over the events table in whatever order the database returns
/// it (no index-ordered scan), plus the recorded heads (a case whose every event was deleted
/// still has a head, and is reported at sequence 1).
///
/// Each event is hashed on its own over its *stored* `prev_hash`, on as many threads as there
/// are cores, while the rows are still being read; each keeps only a small record (case,
/// sequence, stored hashes, whether it recomputed). The records are then sorted by case and
/// sequence and every case's links are checked with [`CaseChecker::step_linked`], which gives
/// exactly the verdict (and the first bad sequence) of checking the chain in order.
///
/// Each row is checked as stored, without copies: when its payload and metadata texts are
/// already canonical JSON (what the append writes) their bytes are hashed directly, otherwise
/// they are parsed and canonicalized first — the same hash either way
/// ([`chain::event_hash_text`]). A row whose texts are not JSON at all (possible on SQLite,
/// whose columns are plain text) is an altered event, reported like any other.
pub async fn verify_all(store: &Store) -> Result<LogVerification, StoreError> {
    let heads = store.heads().await?;
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let mut senders = Vec::with_capacity(threads);
    let mut workers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ChainRows>(4);
        senders.push(tx);
        workers.push(std::thread::spawn(move || -> Result<Hashed, StoreError> {
            let mut hashed = Hashed::default();
            while let Some(batch) = rx.blocking_recv() {
                batch.for_each(|row| {
                    hashed.row(&row);
                    Ok(())
                })?;
            }
            Ok(hashed)
        }));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ChainRows>(8);
    // Batches go round robin to the hashing threads; a thread that stopped drops its receiver,
    // which ends the dispatch and, through `tx`, the read.
    let dispatch = async move {
        let mut next = 0;
        while let Some(batch) = rx.recv().await {
            if senders[next % senders.len()].send(batch).await.is_err() {
                break;
            }
            next += 1;
        }
    };
    let (read, ()) = tokio::join!(store.chain_batches(tx), dispatch);
    let mut parts = Vec::with_capacity(workers.len());
    for worker in workers {
        parts.push(
            worker
                .join()
                .map_err(|_| StoreError::Database("a verification thread panicked".into()))??,
        );
    }
    read?;
    tokio::task::spawn_blocking(move || link(parts, heads))
        .await
        .map_err(|_| StoreError::Database("the verification thread panicked".into()))
}

/// A case as a sort key: a case id written as a lower-case hyphenated UUID (what the append
/// writes) is its 128 bits, no table lookup needed; any other id is interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CaseKey {
    Uuid(u128),
    /// Index into the thread's (then the merged) list of other ids.
    Other(u32),
}

/// What a hashing thread keeps of one event.
struct Record {
    case: CaseKey,
    sequence: u64,
    /// The event hashes to its stored `hash` over its stored `prev_hash`.
    intact: bool,
    prev: Option<Hash>,
    /// The stored hash (when intact, the recomputed one is the same; otherwise it no longer
    /// matters: the case already fails here).
    hash: Option<Hash>,
}

/// One hashing thread's records, with the case ids it met that are not UUIDs.
#[derive(Default)]
struct Hashed {
    index: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    records: Vec<Record>,
}

impl Hashed {
    fn key(&mut self, case_id: &str) -> CaseKey {
        if let Ok(id) = uuid::Uuid::try_parse(case_id) {
            let mut buf = uuid::Uuid::encode_buffer();
            if id.hyphenated().encode_lower(&mut buf) == case_id {
                return CaseKey::Uuid(id.as_u128());
            }
        }
        let i = match self.index.get(case_id) {
            Some(i) => *i,
            None => {
                let i = self.names.len() as u32;
                self.names.push(case_id.into());
                self.index.insert(case_id.into(), i);
                i
            }
        };
        CaseKey::Other(i)
    }

    fn row(&mut self, row: &ChainRow<'_>) {
        let case = self.key(row.case_id);
        let sequence = row.sequence.max(0) as u64;
        let prev = parse_stored_hex(row.prev_hash);
        let recomputed = prev.as_ref().and_then(|prev| {
            event_hash_text(
                prev,
                &StoredText {
                    case_id: row.case_id,
                    sequence,
                    event_type: row.event_type,
                    event_version: row.event_version,
                    payload: row.payload,
                    recorded_at: row.recorded_at,
                    metadata: row.metadata,
                },
            )
            .ok()
        });
        let (intact, hash) = match recomputed {
            Some(h) if chain::hex_eq(row.hash, &h) => (true, Some(h)),
            _ => (false, parse_stored_hex(row.hash)),
        };
        self.records.push(Record {
            case,
            sequence,
            intact,
            prev,
            hash,
        });
    }
}

/// Merges the threads' records, sorts them by case and sequence, and checks each case's links
/// and its recorded head.
fn link(parts: Vec<Hashed>, mut heads: HashMap<String, Head>) -> LogVerification {
    let mut names: Vec<Box<str>> = Vec::new();
    let mut global: HashMap<Box<str>, u32> = HashMap::new();
    let mut records: Vec<Record> = Vec::with_capacity(parts.iter().map(|p| p.records.len()).sum());
    for part in parts {
        let remap: Vec<u32> = part
            .names
            .into_iter()
            .map(|name| {
                *global.entry(name.clone()).or_insert_with(|| {
                    names.push(name);
                    (names.len() - 1) as u32
                })
            })
            .collect();
        records.extend(part.records.into_iter().map(|mut r| {
            if let CaseKey::Other(i) = r.case {
                r.case = CaseKey::Other(remap[i as usize]);
            }
            r
        }));
    }
    drop(global);
    records.sort_unstable_by_key(|r| (r.case, r.sequence));
    let mut report = LogVerification::default();
    for case_records in records.chunk_by(|a, b| a.case == b.case) {
        let case_id: String = match case_records[0].case {
            CaseKey::Uuid(id) => uuid::Uuid::from_u128(id).hyphenated().to_string(),
            CaseKey::Other(i) => names[i as usize].to_string(),
        };
        let mut checker = CaseChecker::new();
        for r in case_records {
            checker.step_linked(r.sequence, r.intact, r.prev.as_ref(), r.hash.as_ref());
        }
        let head = heads.remove(&case_id);
        let check = checker.finish(head.as_ref().map(|(s, h)| (*s, h.as_str())));
        report.cases_checked += 1;
        report.events_checked += check.events_checked;
        if let Some(seq) = check.first_invalid_sequence {
            report.invalid.push((case_id, seq));
        }
    }
    for (case_id, _) in heads {
        report.cases_checked += 1;
        report.invalid.push((case_id, 1));
    }
    report.invalid.sort();
    report
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
