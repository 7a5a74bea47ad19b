//! Replay of a whole log for a rebuild, fed in whatever order the events table is read in.
//!
//! The read models depend on the log's order only within each case: an event's facts depend on
//! the case's summary before it, never on another case. So a rebuild may read the table in its
//! physical order (a sequential scan, several times faster than walking an index) as long as each
//! case's events are folded in sequence order. [`Replay`] does that: an event that arrives
//! before its predecessor waits until the predecessor has been folded (in an append-only table
//! that is rare, so little waits), and [`Replay::finish`] folds whatever still waits, case by case
//! in sequence order, so a log with a gap (a deleted event) gives exactly what folding it in log
//! order gives.
//!
//! Invariant: for any log, the facts emitted and the summaries returned are those of folding
//! each case's events in sequence order with [`facts`] and [`CaseSummary`], exactly as the
//! incremental projector does (checked in the tests below).

use crate::facts::{facts, Fact};
use crate::summary::CaseSummary;
use std::collections::{BTreeMap, HashMap};
use tiaojie_domain::CaseEvent;
use uuid::Uuid;

/// One fact, with the event it comes from (`sequence`) and its rank among that event's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct EmittedFact {
    /// The case.
    pub case_id: Uuid,
    /// The event's sequence within its case.
    pub sequence: u64,
    /// The fact's index among the event's facts.
    pub ord: usize,
    /// The fact.
    pub fact: Fact,
}

/// A case as far as it has been folded.
#[derive(Debug, Default)]
struct Folded {
    /// The sequence of the last event folded (0: none).
    last: u64,
    summary: Option<CaseSummary>,
    /// Events that arrived ahead of their predecessor, by sequence.
    waiting: BTreeMap<u64, CaseEvent>,
}

/// Folds a whole log, read in any order; see the module doc.
#[derive(Debug, Default)]
pub struct Replay {
    cases: HashMap<Uuid, Folded>,
    waiting: usize,
}

impl Replay {
    /// An empty replay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one event; the facts of every event that can now be folded go to `emit`.
    pub fn push(
        &mut self,
        case_id: Uuid,
        sequence: u64,
        event: CaseEvent,
        emit: &mut impl FnMut(EmittedFact),
    ) {
        let case = self.cases.entry(case_id).or_default();
        if sequence != case.last + 1 {
            if case.waiting.insert(sequence, event).is_none() {
                self.waiting += 1;
            }
            return;
        }
        fold(case_id, case, sequence, &event, emit);
        while let Some(next) = case.waiting.remove(&(case.last + 1)) {
            self.waiting -= 1;
            fold(case_id, case, case.last + 1, &next, emit);
        }
    }

    /// Events received but not yet folded (waiting for a predecessor).
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Folds what still waits (each case's events in sequence order, over any gap) and returns
    /// every case's summary (cases whose first event is not a filing have none).
    pub fn finish(mut self, emit: &mut impl FnMut(EmittedFact)) -> Vec<CaseSummary> {
        let mut ids: Vec<Uuid> = self
            .cases
            .iter()
            .filter(|(_, c)| !c.waiting.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        for id in ids {
            let case = self.cases.get_mut(&id).expect("a case just listed");
            for (sequence, event) in std::mem::take(&mut case.waiting) {
                fold(id, case, sequence, &event, emit);
            }
        }
        self.cases.into_values().filter_map(|c| c.summary).collect()
    }
}

fn fold(
    case_id: Uuid,
    case: &mut Folded,
    sequence: u64,
    event: &CaseEvent,
    emit: &mut impl FnMut(EmittedFact),
) {
    for (ord, fact) in facts(case.summary.as_ref(), event).into_iter().enumerate() {
        emit(EmittedFact {
            case_id,
            sequence,
            ord,
            fact,
        });
    }
    match &mut case.summary {
        Some(s) => s.apply(event),
        None => case.summary = CaseSummary::start(case_id, event),
    }
    case.last = sequence;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use tiaojie_domain::{CaseNo, Category, Money, RoomId, Source, TerminationReason};

    /// What the incremental projector does: fold in log order.
    fn in_log_order(log: &[(Uuid, u64, CaseEvent)]) -> (Vec<EmittedFact>, Vec<CaseSummary>) {
        let mut summaries: HashMap<Uuid, CaseSummary> = HashMap::new();
        let mut out = Vec::new();
        for (id, seq, event) in log {
            for (ord, fact) in facts(summaries.get(id), event).into_iter().enumerate() {
                out.push(EmittedFact {
                    case_id: *id,
                    sequence: *seq,
                    ord,
                    fact,
                });
            }
            match summaries.get_mut(id) {
                Some(s) => s.apply(event),
                None => {
                    if let Some(s) = CaseSummary::start(*id, event) {
                        summaries.insert(*id, s);
                    }
                }
            }
        }
        (out, summaries.into_values().collect())
    }

    fn sorted(
        mut facts: Vec<EmittedFact>,
        mut summaries: Vec<CaseSummary>,
    ) -> (Vec<String>, Vec<String>) {
        facts.sort_by_key(|f| (f.case_id, f.sequence, f.ord));
        summaries.sort_by_key(|s| s.case_id);
        (
            facts.iter().map(|f| format!("{f:?}")).collect(),
            summaries.iter().map(|s| format!("{s:?}")).collect(),
        )
    }

    fn history(n: u128, room: &str, to_room: &str) -> Vec<(Uuid, u64, CaseEvent)> {
        let id = Uuid::from_u128(n);
        let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap() + Duration::hours(n as i64);
        let at = |h: i64| t0 + Duration::hours(h);
        let room_id = |r: &str| RoomId::new(r).unwrap();
        let events = vec![
            CaseEvent::CaseFiled {
                case_id: id,
                case_no: CaseNo::new(room_id(room), 2026, n as u32).unwrap(),
                room_id: room_id(room),
                category: Category::Labor,
                source: Source::PartyApplication,
                summary: "欠薪".into(),
                claims: None,
                amount_in_dispute: Some(Money::from_fen(120_000).unwrap()),
                industry: None,
                parties: vec![],
                occurred_at: at(0),
            },
            CaseEvent::CaseAccepted {
                note: None,
                occurred_at: at(1),
            },
            CaseEvent::CaseTransferred {
                from_room_id: room_id(room),
                to_room_id: room_id(to_room),
                reason: "就近".into(),
                occurred_at: at(2),
            },
            CaseEvent::MediationTerminated {
                reason: TerminationReason::Withdrawn,
                referred_to: None,
                note: None,
                occurred_at: at(30),
            },
        ];
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| (id, i as u64 + 1, e))
            .collect()
    }

    #[test]
    fn any_read_order_gives_what_log_order_gives() {
        let mut log = Vec::new();
        for n in 1..=5u128 {
            log.extend(history(n, "R01", "R02"));
        }
        // Interleave the cases as writers would.
        log.sort_by_key(|(id, seq, _)| (*seq, *id));
        let expected = in_log_order(&log);
        let expected = sorted(expected.0, expected.1);
        assert!(!expected.0.is_empty());
        // Several read orders: as written, reversed, and shuffled by a fixed permutation.
        let mut orders = vec![log.clone(), log.iter().rev().cloned().collect()];
        let mut shuffled = log.clone();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        orders.push(shuffled);
        for order in orders {
            let mut replay = Replay::new();
            let mut out = Vec::new();
            for (id, seq, event) in order {
                replay.push(id, seq, event, &mut |f| out.push(f));
            }
            assert_eq!(replay.waiting(), 0);
            let summaries = replay.finish(&mut |f| out.push(f));
            assert_eq!(sorted(out, summaries), expected);
        }
    }

    #[test]
    fn a_gap_in_a_case_folds_the_rest_in_sequence_order() {
        let mut log = history(7, "R03", "R04");
        log.remove(1); // the acceptance was deleted
        let expected = in_log_order(&log);
        let expected = sorted(expected.0, expected.1);
        let mut replay = Replay::new();
        let mut out = Vec::new();
        for (id, seq, event) in log.into_iter().rev() {
            replay.push(id, seq, event, &mut |f| out.push(f));
        }
        assert_eq!(replay.waiting(), 2, "the events after the gap wait");
        let summaries = replay.finish(&mut |f| out.push(f));
        assert_eq!(sorted(out, summaries), expected);
    }
}
