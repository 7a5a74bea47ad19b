//! The indicators of API.md, for a window [from, to) of `occurred_at`.
//!
//! Statistics are accumulated per cell (room, category) in [`Cell`]; any grouping (room, cluster,
//! category, totals) merges cells, so percentiles are always computed from the raw durations of
//! the cells merged, never averaged. [`naive`] recomputes every cell straight from events, as the
//! definitions read; the projection must always agree with it.
//!
//! Definitions beyond API.md's words, used by both paths:
//! - `followed_up` / `performed_full`: over the agreements reached in the window (counted in the
//!   room where the agreement was reached), the latest return visit of that case before `to`.
//! - `open` / `overdue_open`: cases accepted before `to` and not concluded before `to`, counted in
//!   the room the case is in at `to`; overdue when accepted more than 30 days before `to`.

use crate::facts::{facts, Fact, FactKind};
use crate::summary::CaseSummary;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, HashMap};
use tiaojie_domain::CaseEvent;
use uuid::Uuid;

/// What accumulates in one cell (or in any merge of cells).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    /// Facts counted, by kind.
    pub counts: BTreeMap<FactKind, u64>,
    /// Sum of amounts in dispute of filings, in fen.
    pub amount_in_dispute_fen: u64,
    /// Sum of agreed amounts, in fen.
    pub amount_agreed_fen: u64,
    /// Microseconds from acceptance to conclusion, for accepted cases concluded in the window.
    pub durations_us: Vec<i64>,
    /// Agreements in the window with a return visit before `to`.
    pub followed_up: u64,
    /// Of those, the latest visit found the agreement fully performed.
    pub performed_full: u64,
    /// Open at `to`.
    pub open: u64,
    /// Open at `to` for more than 30 days since acceptance.
    pub overdue_open: u64,
}

impl Cell {
    /// Adds another cell into this one.
    pub fn merge(&mut self, other: &Cell) {
        for (k, v) in &other.counts {
            *self.counts.entry(*k).or_default() += v;
        }
        self.amount_in_dispute_fen += other.amount_in_dispute_fen;
        self.amount_agreed_fen += other.amount_agreed_fen;
        self.durations_us.extend_from_slice(&other.durations_us);
        self.followed_up += other.followed_up;
        self.performed_full += other.performed_full;
        self.open += other.open;
        self.overdue_open += other.overdue_open;
    }

    fn count(&self, kind: FactKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// The indicators this cell gives.
    pub fn indicators(&self) -> Indicators {
        let resolved = self.count(FactKind::Resolved);
        let terminated = self.count(FactKind::Terminated);
        let mut days: Vec<f64> = self
            .durations_us
            .iter()
            .map(|us| *us as f64 / 86_400_000_000.0)
            .collect();
        days.sort_by(|a, b| a.total_cmp(b));
        Indicators {
            filed: self.count(FactKind::Filed),
            accepted: self.count(FactKind::Accepted),
            declined: self.count(FactKind::Declined),
            transferred_in: self.count(FactKind::TransferredIn),
            transferred_out: self.count(FactKind::TransferredOut),
            resolved,
            terminated,
            withdrawn: self.count(FactKind::Withdrawn),
            referred: self.count(FactKind::Referred),
            closed: self.count(FactKind::Closed),
            judicial_confirmed: self.count(FactKind::JudicialConfirmed),
            success_rate: ratio(resolved, resolved + terminated),
            followed_up: self.followed_up,
            performed_full: self.performed_full,
            performance_rate: ratio(self.performed_full, self.followed_up),
            mean_days_to_conclude: if days.is_empty() {
                None
            } else {
                Some(days.iter().sum::<f64>() / days.len() as f64)
            },
            median_days_to_conclude: percentile_cont(&days, 0.5),
            p90_days_to_conclude: percentile_cont(&days, 0.9),
            amount_in_dispute_total_fen: self.amount_in_dispute_fen,
            amount_agreed_total_fen: self.amount_agreed_fen,
            open: self.open,
            overdue_open: self.overdue_open,
        }
    }
}

/// The indicators of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicators {
    /// Filings.
    pub filed: u64,
    /// Acceptances.
    pub accepted: u64,
    /// Declines.
    pub declined: u64,
    /// Cases received from other rooms.
    pub transferred_in: u64,
    /// Cases handed to other rooms.
    pub transferred_out: u64,
    /// Agreements.
    pub resolved: u64,
    /// Terminations of any reason.
    pub terminated: u64,
    /// Terminations by withdrawal.
    pub withdrawn: u64,
    /// Terminations by referral.
    pub referred: u64,
    /// Closings.
    pub closed: u64,
    /// Judicial confirmations granted.
    pub judicial_confirmed: u64,
    /// resolved / (resolved + terminated).
    pub success_rate: Option<f64>,
    /// Agreements with a return visit.
    pub followed_up: u64,
    /// Agreements fully performed at the latest visit.
    pub performed_full: u64,
    /// performed_full / followed_up.
    pub performance_rate: Option<f64>,
    /// Mean days from acceptance to conclusion.
    pub mean_days_to_conclude: Option<f64>,
    /// Median days (interpolated).
    pub median_days_to_conclude: Option<f64>,
    /// 90th percentile days (interpolated).
    pub p90_days_to_conclude: Option<f64>,
    /// Sum of amounts in dispute, fen.
    pub amount_in_dispute_total_fen: u64,
    /// Sum of agreed amounts, fen.
    pub amount_agreed_total_fen: u64,
    /// Open at the end of the window.
    pub open: u64,
    /// Open for more than 30 days at the end of the window.
    pub overdue_open: u64,
}

/// `a / b`, or `None` when `b` is 0.
pub fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The `p`-quantile of sorted values, interpolating linearly between ranks like PostgreSQL's
/// `percentile_cont`; `None` for no values.
pub fn percentile_cont(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = rank.ceil() as usize;
    let weight = rank - lower as f64;
    Some(sorted[lower] + (sorted[upper] - sorted[lower]) * weight)
}

/// A statistics window: `[from, to)` of `occurred_at`; `to` is also the "as of" instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start; `None` for the beginning of time.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive end, and the moment `open` is counted at.
    pub to: DateTime<Utc>,
}

impl Window {
    /// Whether an instant falls in the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| at >= f) && at < self.to
    }
}

/// How long a case may stay open before it is overdue.
pub fn overdue_after() -> Duration {
    Duration::days(30)
}

/// A (room, category) cell key.
pub type CellKey = (String, String);

/// Recomputes every (room, category) cell straight from events in log order, following the
/// definitions as written. The reference the projection is checked against.
pub fn naive(events: &[(Uuid, CaseEvent)], window: Window) -> BTreeMap<CellKey, Cell> {
    let mut cells: BTreeMap<CellKey, Cell> = BTreeMap::new();
    let mut summaries: HashMap<Uuid, CaseSummary> = HashMap::new();
    let mut all_facts: Vec<(Uuid, Fact)> = Vec::new();
    for (case_id, event) in events {
        let before = summaries.get(case_id);
        for f in facts(before, event) {
            all_facts.push((*case_id, f));
        }
        match summaries.get_mut(case_id) {
            Some(s) => s.apply(event),
            None => {
                if let Some(s) = CaseSummary::start(*case_id, event) {
                    summaries.insert(*case_id, s);
                }
            }
        }
    }
    for (case_id, f) in &all_facts {
        if !window.contains(f.occurred_at) {
            continue;
        }
        let cell = cells
            .entry((f.room_id.clone(), f.category.clone()))
            .or_default();
        if f.kind != FactKind::FollowUp {
            *cell.counts.entry(f.kind).or_default() += 1;
        }
        match f.kind {
            FactKind::Filed => cell.amount_in_dispute_fen += f.amount_fen.unwrap_or(0),
            FactKind::Resolved => {
                cell.amount_agreed_fen += f.amount_fen.unwrap_or(0);
                let latest = all_facts
                    .iter()
                    .filter(|(c, g)| {
                        c == case_id && g.kind == FactKind::FollowUp && g.occurred_at < window.to
                    })
                    .max_by_key(|(_, g)| g.occurred_at);
                if let Some((_, visit)) = latest {
                    cell.followed_up += 1;
                    if visit.label.as_deref() == Some("full") {
                        cell.performed_full += 1;
                    }
                }
            }
            _ => {}
        }
        if matches!(f.kind, FactKind::Resolved | FactKind::Terminated) {
            if let Some(d) = f.duration_us {
                cell.durations_us.push(d);
            }
        }
    }
    // Open cases at `to`, in the room they are in then.
    let mut case_ids: Vec<&Uuid> = summaries.keys().collect();
    case_ids.sort();
    for case_id in case_ids {
        let s = &summaries[case_id];
        let Some(accepted_at) = s.accepted_at else {
            continue;
        };
        if accepted_at >= window.to || s.concluded_at.is_some_and(|c| c < window.to) {
            continue;
        }
        let mut room = s.filed_room_id.clone();
        for (c, f) in &all_facts {
            if c == case_id && f.kind == FactKind::TransferredIn && f.occurred_at < window.to {
                room = f.room_id.clone();
            }
        }
        let cell = cells.entry((room, s.category.clone())).or_default();
        cell.open += 1;
        if window.to - accepted_at > overdue_after() {
            cell.overdue_open += 1;
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_percentile_cont() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_cont(&v, 0.5), Some(2.5));
        assert!((percentile_cont(&v, 0.9).unwrap() - 3.7).abs() < 1e-12);
        assert_eq!(percentile_cont(&[5.0], 0.9), Some(5.0));
        assert_eq!(percentile_cont(&[], 0.5), None);
    }

    #[test]
    fn rates_are_null_on_zero_denominators() {
        assert_eq!(ratio(0, 0), None);
        assert_eq!(ratio(1, 4), Some(0.25));
    }
}
