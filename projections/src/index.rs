//! An in-memory index over the statistical facts: the statistics of any window, computed from
//! memory instead of by SQL aggregations over the `stat_facts` table.
//!
//! Role: the server keeps one [`StatsIndex`] per process (`tiaojie::stats`), fed the rows of
//! `stat_facts` as the projector commits them, and answers every statistics request from it. The
//! index is pure: no database types, no I/O, no clock; the window's `to` is the only "now".
//!
//! Invariants:
//! - The answer depends only on the set of facts fed, never on their order: each fact's effect is
//!   kept in structures sorted by time (and by sequence where the definitions break ties), so rows
//!   may arrive in any order and in any number of batches.
//! - Every (case, sequence, ordinal) is fed once (the table's unique key guarantees it; the index
//!   does not check it, and a fact fed twice counts twice).
//! - Everything comes from the facts alone. Per case, the filing room and category are those of
//!   its `Filed` fact, `accepted_at` is its `Accepted` fact's instant, `concluded_at` that of its
//!   latest (by sequence) `Resolved`/`Terminated` fact, and its room at an instant is that of its
//!   latest `TransferredIn` fact before it (by `occurred_at`, then sequence) or else the filing
//!   room: exactly the columns of `case_summaries` the SQL statistics used to read, since the
//!   summary fold sets each of them from the very event that yields that fact.
//! - Times are whole microseconds, compared exactly as the read models' SQL compared them:
//!   `from <= occurred_at < to` with both bounds cut to microseconds.
//!
//! Cost: counts and amounts of a window are at most two binary searches per (cell, kind) over
//! sorted times plus prefix sums, so they do not grow with the number of facts; so are the
//! agreements' return visits when the window ends after every visit of the cell's cases (else one
//! look-up per agreement in the window). What does grow: one pass over the conclusions that carry
//! a duration (kept sorted by duration, so every group's durations come out sorted and the
//! percentiles need no sort), and one over the accepted cases not concluded, plus the concluded
//! ones only for windows ending before the latest conclusion (open at `to`).

use crate::facts::{Fact, FactKind};
use crate::indicators::{overdue_after, Cell, CellKey, Indicators, Window};
use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// An absent id (no cell, no group, no row).
const NONE: u32 = u32::MAX;

/// One statistical fact, as the `stat_facts` read model stores it (times in microseconds since
/// the Unix epoch). The ordinal within the event is not needed: a fact is counted wherever it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FactRow<'a> {
    /// The case.
    pub case_id: Uuid,
    /// The sequence of the event that yielded the fact.
    pub seq: i64,
    /// What it counts.
    pub kind: FactKind,
    /// The room it counts in.
    pub room_id: &'a str,
    /// The case's category.
    pub category: &'a str,
    /// When the event occurred (µs).
    pub occurred_at: i64,
    /// An amount in fen (`Filed`: in dispute; `Resolved`: agreed).
    pub amount_fen: Option<i64>,
    /// For a conclusion of an accepted case: µs from acceptance.
    pub duration_us: Option<i64>,
    /// `Filed`: the source; `FollowUp`: the performance found.
    pub label: Option<&'a str>,
}

impl<'a> FactRow<'a> {
    /// The row the projector stores for `fact`, the fact of event `seq` of `case_id`.
    pub fn of(case_id: Uuid, seq: i64, fact: &'a Fact) -> FactRow<'a> {
        FactRow {
            case_id,
            seq,
            kind: fact.kind,
            room_id: &fact.room_id,
            category: &fact.category,
            occurred_at: fact.occurred_at.timestamp_micros(),
            amount_fen: fact.amount_fen.map(|a| a as i64),
            duration_us: fact.duration_us,
            label: fact.label.as_deref(),
        }
    }
}

/// The kinds a cell counts (every kind but `FollowUp`), in [`FactKind::ALL`] order; a kind's
/// position here is its slot in [`CellData::series`].
const COUNTED: [FactKind; 11] = [
    FactKind::Filed,
    FactKind::Accepted,
    FactKind::Declined,
    FactKind::TransferredIn,
    FactKind::TransferredOut,
    FactKind::Resolved,
    FactKind::Terminated,
    FactKind::Withdrawn,
    FactKind::Referred,
    FactKind::Closed,
    FactKind::JudicialConfirmed,
];
const FILED: usize = 0;
const RESOLVED: usize = 5;
const TERMINATED: usize = 6;

fn slot(kind: FactKind) -> Option<usize> {
    COUNTED.iter().position(|k| *k == kind)
}

/// The facts of one kind in one cell, sorted by time. Filings and agreements also keep an
/// auxiliary id (the source label of a filing, the case of an agreement) and prefix sums of
/// their amounts; agreements also prefix sums of their cases' latest return visits.
#[derive(Debug, Default, Clone)]
struct Series {
    /// `occurred_at`, ascending.
    at: Vec<i64>,
    /// Parallel to `at` for detailed series, else empty.
    aux: Vec<u32>,
    /// Detailed series: `sums[i]` is the sum of the first `i` amounts (`at.len() + 1` entries).
    sums: Vec<u64>,
    /// Agreements: of the first `i`, how many cases have a return visit, and how many a latest
    /// visit that found the agreement fully performed (`at.len() + 1` entries each). Valid for
    /// windows ending after `visited_until`.
    visited: Vec<u32>,
    full: Vec<u32>,
    /// The latest return visit of any case in the series (`i64::MIN`: none).
    visited_until: i64,
    /// Inserted but not yet merged in: (at, aux, amount).
    pending: Vec<(i64, u32, u64)>,
    /// The visit sums need recomputing (agreements added, or a visit to one of their cases).
    visits_stale: bool,
}

impl Series {
    /// Merges the pending entries in, keeping `at` sorted.
    fn seal(&mut self, detailed: bool) {
        if self.pending.is_empty() {
            return;
        }
        self.visits_stale = true;
        let mut new = std::mem::take(&mut self.pending);
        new.sort_by_key(|e| e.0);
        if self.at.last().is_some_and(|last| *last > new[0].0) {
            // Out of time order (a backdated step, or rows fed in any order): merge.
            let old = (0..self.at.len()).map(|i| {
                if detailed {
                    (self.at[i], self.aux[i], self.sums[i + 1] - self.sums[i])
                } else {
                    (self.at[i], 0, 0)
                }
            });
            let mut merged = Vec::with_capacity(self.at.len() + new.len());
            let mut new_iter = new.into_iter().peekable();
            for o in old {
                while new_iter.peek().is_some_and(|n| n.0 < o.0) {
                    merged.extend(new_iter.next());
                }
                merged.push(o);
            }
            merged.extend(new_iter);
            self.at.clear();
            self.aux.clear();
            self.sums.clear();
            new = merged;
        }
        if detailed && self.sums.is_empty() {
            self.sums.push(0);
        }
        self.at.reserve(new.len());
        for (at, aux, amount) in new {
            self.at.push(at);
            if detailed {
                let sum = self.sums.last().copied().unwrap_or(0);
                self.aux.push(aux);
                self.sums.push(sum.saturating_add(amount));
            }
        }
    }

    /// Recomputes the visit sums of an agreements series.
    fn count_visits(&mut self, latest: &[LatestVisit]) {
        self.visited.clear();
        self.full.clear();
        self.visited.push(0);
        self.full.push(0);
        self.visited_until = i64::MIN;
        let (mut visited, mut full) = (0, 0);
        for &case in &self.aux {
            let v = latest[case as usize];
            if v.state > 0 {
                visited += 1;
                full += u32::from(v.state == 2);
                self.visited_until = self.visited_until.max(v.at);
            }
            self.visited.push(visited);
            self.full.push(full);
        }
        self.visits_stale = false;
    }

    /// The index range of the entries with `from <= at < to`. The bounds are checked against
    /// the ends first: a window that ends now, or starts at the beginning, needs no search (a
    /// binary search over a cold array costs a cache miss a step).
    fn range(&self, from: i64, to: i64) -> std::ops::Range<usize> {
        let (Some(first), Some(last)) = (self.at.first(), self.at.last()) else {
            return 0..0;
        };
        let lo = if *first >= from {
            0
        } else {
            self.at.partition_point(|a| *a < from)
        };
        let hi = if *last < to {
            self.at.len()
        } else {
            self.at.partition_point(|a| *a < to)
        };
        lo..hi.max(lo)
    }

    fn sum(&self, r: &std::ops::Range<usize>) -> u64 {
        if r.is_empty() {
            0
        } else {
            self.sums[r.end] - self.sums[r.start]
        }
    }
}

/// One (room, category) cell.
#[derive(Debug, Clone)]
struct CellData {
    room: u32,
    category: u32,
    series: [Series; 11],
    /// Whether some series has pending entries.
    dirty: bool,
}

/// A conclusion with a duration.
#[derive(Debug, Clone, Copy)]
struct Conclusion {
    duration_us: i64,
    at: i64,
    cell: u32,
}

/// What the index knows of one case, from its facts (48 bytes: there is one per case).
#[derive(Debug, Clone)]
struct CaseInfo {
    /// `occurred_at` of its `Accepted` fact, the latest by sequence.
    accepted_at: i64,
    /// `occurred_at` of its latest `Resolved`/`Terminated` fact by sequence.
    concluded_at: i64,
    /// The sequences of those facts; 0 when there is none (sequences start at 1).
    accepted_seq: u32,
    concluded_seq: u32,
    /// The cell of its `Filed` fact: filing room and category (`NONE` until it is fed).
    filed_cell: u32,
    /// Its row in `open`: `index * 2 + list` (`NONE` until accepted).
    open_row: u32,
    /// The cell of its `Resolved` fact (`NONE`: none; `MANY`: several cells).
    resolved_cell: u32,
    /// Transfers and return visits, which most cases have none of.
    history: Option<Box<CaseHistory>>,
}

/// A case's transfers in and return visits.
#[derive(Debug, Default, Clone)]
struct CaseHistory {
    /// Its `TransferredIn` facts: (occurred_at, seq, cell), ascending.
    transfers: Vec<(i64, i64, u32)>,
    /// Its return visits: (occurred_at, seq, fully performed), ascending.
    follow_ups: Vec<(i64, i64, bool)>,
}

/// A sequence as the case table keeps it (events of a case number far below 2³²).
fn seq32(seq: i64) -> u32 {
    u32::try_from(seq).unwrap_or(u32::MAX)
}

/// Several cells.
const MANY: u32 = u32::MAX - 1;

const UNCONCLUDED: usize = 0;
const CONCLUDED: usize = 1;

/// An accepted case, as the open count scans it.
#[derive(Debug, Clone, Copy)]
struct OpenRow {
    accepted_at: i64,
    /// `i64::MAX` when not concluded.
    concluded_at: i64,
    /// The latest transfer's instant, `i64::MIN` without transfers.
    transfer_at: i64,
    /// The cell it is in after its latest transfer (its filing cell without transfers).
    cell: u32,
    case: u32,
}

/// A case's latest return visit overall: answers "the latest visit before `to`" without a search
/// whenever `to` is after it, which is every window that ends now.
#[derive(Debug, Clone, Copy, Default)]
struct LatestVisit {
    at: i64,
    /// 0: no visit; 1: the latest found the agreement not fully performed; 2: fully performed.
    state: u8,
}

/// Interned names.
#[derive(Debug, Default, Clone)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_string(), id);
        self.names.push(name.to_string());
        id
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// The statistical facts in memory, indexed for windows. See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct StatsIndex {
    rooms: Names,
    categories: Names,
    labels: Names,
    cells: Vec<CellData>,
    cell_ids: HashMap<(u32, u32), u32>,
    case_ids: HashMap<Uuid, u32>,
    cases: Vec<CaseInfo>,
    latest_visits: Vec<LatestVisit>,
    /// Accepted cases: `[UNCONCLUDED]` and `[CONCLUDED]`. Only a window ending before some
    /// conclusion (`to <= concluded_until`) can find a concluded case open, so windows that end
    /// now scan only the few cases still open.
    open: [Vec<OpenRow>; 2],
    /// No earlier than the latest conclusion of a case in `open[CONCLUDED]` (a running maximum,
    /// from 0).
    concluded_until: i64,
    /// Ascending by duration.
    conclusions: Vec<Conclusion>,
    pending_conclusions: Vec<Conclusion>,
    /// How many of `conclusions` each cell has, and the earliest and latest instant among them:
    /// a window that holds every conclusion (every all-time request) needs no counting pass.
    conclusions_per_cell: Vec<u64>,
    conclusions_span: Option<(i64, i64)>,
    /// The rankers of the last all-time ranking, by grouping; emptied whenever conclusions
    /// change.
    rank_cache: RankCache,
    facts: usize,
}

/// Feeds facts into an index; the facts count in answers once the loader is dropped (that is
/// when the batch is merged into the sorted structures). Holding it borrows the index, so no
/// answer can see a half-merged batch.
pub struct Loader<'i> {
    index: &'i mut StatsIndex,
}

impl Loader<'_> {
    /// Adds one fact.
    pub fn insert(&mut self, row: FactRow<'_>) {
        self.index.insert(row);
    }
}

impl Drop for Loader<'_> {
    fn drop(&mut self) {
        self.index.seal();
    }
}

/// Accumulates one group of a window's answer.
#[derive(Debug, Default, Clone)]
struct Acc {
    counts: [u64; 11],
    amount_in_dispute_fen: u64,
    amount_agreed_fen: u64,
    durations_us: Vec<i64>,
    followed_up: u64,
    performed_full: u64,
    open: u64,
    overdue_open: u64,
    /// Something in the window counted here (as the SQL's grouped rows would have had a row).
    present: bool,
}

/// A window's accumulators by group: the groups' keys and indices, each cell's group
/// (`NONE`: left out), the groups' accumulators and the totals'.
struct Grouped<K> {
    keys: BTreeMap<K, usize>,
    group_of: Vec<u32>,
    groups: Vec<Acc>,
    total: Acc,
}

/// The window's bounds in whole microseconds (as the SQL compared them): `[from, to)`.
fn bounds(window: Window) -> (i64, i64) {
    (
        window
            .from
            .map(|t| t.timestamp_micros())
            .unwrap_or(i64::MIN),
        window.to.timestamp_micros(),
    )
}

/// One group's durations taken in ascending order without keeping them: their count (known
/// before the values come), their sum in days, and the values at the ranks
/// [`crate::indicators::percentile_cont`] reads for the median and the 90th percentile.
#[derive(Debug, Clone, Default)]
struct Ranker {
    n: usize,
    seen: usize,
    sum: f64,
    /// Ranks (0-based) of the median's lower and upper neighbours, then the p90's.
    ranks: [usize; 4],
    values: [f64; 4],
}

/// The last all-time ranking: the grouping it was for (each cell's group) and its rankers.
/// A clone of the index starts with an empty cache.
#[derive(Debug, Default)]
struct RankCache(std::sync::Mutex<Option<(Vec<u32>, Vec<Ranker>)>>);

impl Clone for RankCache {
    fn clone(&self) -> Self {
        RankCache::default()
    }
}

impl RankCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Vec<u32>, Vec<Ranker>)>> {
        // A panic while it was held leaves at worst a stale entry, which `clear` would have
        // removed; start empty.
        self.0.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = None;
            guard
        })
    }

    fn get(&self, group_of: &[u32]) -> Option<Vec<Ranker>> {
        match &*self.lock() {
            Some((grouping, rankers)) if grouping == group_of => Some(rankers.clone()),
            _ => None,
        }
    }

    fn put(&self, group_of: &[u32], rankers: &[Ranker]) {
        *self.lock() = Some((group_of.to_vec(), rankers.to_vec()));
    }

    fn clear(&self) {
        *self.lock() = None;
    }
}

impl Ranker {
    const QUANTILES: [f64; 2] = [0.5, 0.9];

    fn plan(&mut self) {
        for (i, p) in Self::QUANTILES.iter().enumerate() {
            let rank = p * (self.n.max(1) - 1) as f64;
            self.ranks[2 * i] = rank.floor() as usize;
            self.ranks[2 * i + 1] = rank.ceil() as usize;
        }
    }

    fn take(&mut self, days: f64) {
        self.sum += days;
        // Not in ascending order: of two values, the median's upper rank is the p90's lower.
        for (rank, value) in self.ranks.iter().zip(self.values.iter_mut()) {
            if *rank == self.seen {
                *value = days;
            }
        }
        self.seen += 1;
    }

    /// `indicators` (computed without durations) with the duration indicators filled in, as
    /// `Cell::indicators` computes them from the sorted days.
    fn complete(&self, mut indicators: Indicators) -> Indicators {
        if self.n == 0 {
            return indicators;
        }
        indicators.mean_days_to_conclude = Some(self.sum / self.n as f64);
        let quantile = |i: usize| {
            let rank = Self::QUANTILES[i] * (self.n - 1) as f64;
            let weight = rank - rank.floor();
            let (lower, upper) = (self.values[2 * i], self.values[2 * i + 1]);
            lower + (upper - lower) * weight
        };
        indicators.median_days_to_conclude = Some(quantile(0));
        indicators.p90_days_to_conclude = Some(quantile(1));
        indicators
    }
}

impl Acc {
    fn into_cell(self) -> Cell {
        Cell {
            counts: COUNTED
                .iter()
                .zip(self.counts)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (*k, n))
                .collect(),
            amount_in_dispute_fen: self.amount_in_dispute_fen,
            amount_agreed_fen: self.amount_agreed_fen,
            durations_us: self.durations_us,
            followed_up: self.followed_up,
            performed_full: self.performed_full,
            open: self.open,
            overdue_open: self.overdue_open,
        }
    }
}

/// The Shenzhen calendar month (year, month) of an instant (µs), and the instant it ends.
fn shenzhen_month(us: i64) -> ((i32, u32), i64) {
    let offset = tiaojie_domain::shenzhen_offset();
    let Some(at) = Utc.timestamp_micros(us).single() else {
        // Beyond chrono's calendar: the SQL path read such a time as the epoch. It ends at
        // once, so the next instant is asked again.
        return ((1970, 1), us.saturating_add(1));
    };
    let local = at.with_timezone(&offset);
    let (y, m) = (local.year(), local.month());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = offset
        .with_ymd_and_hms(ny, nm, 1, 0, 0, 0)
        .single()
        .map_or(us.saturating_add(1), |e| e.timestamp_micros());
    ((y, m), end)
}

impl StatsIndex {
    /// An empty index.
    pub fn new() -> StatsIndex {
        StatsIndex::default()
    }

    /// An index of `rows`.
    pub fn of<'a>(rows: impl IntoIterator<Item = FactRow<'a>>) -> StatsIndex {
        let mut index = StatsIndex::new();
        let mut loader = index.loader();
        for row in rows {
            loader.insert(row);
        }
        drop(loader);
        index
    }

    /// A loader to feed facts (in any order); they count once it is dropped.
    pub fn loader(&mut self) -> Loader<'_> {
        Loader { index: self }
    }

    /// The number of facts fed.
    pub fn len(&self) -> usize {
        self.facts
    }

    /// Whether no fact was fed.
    pub fn is_empty(&self) -> bool {
        self.facts == 0
    }

    /// The number of cases seen.
    pub fn case_count(&self) -> usize {
        self.cases.len()
    }

    /// About how many bytes of heap the index holds (vectors by capacity, hash maps by
    /// capacity with one control byte per slot).
    pub fn heap_bytes(&self) -> usize {
        fn vec<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        fn map<K, V>(m: &HashMap<K, V>) -> usize {
            m.capacity() * (std::mem::size_of::<(K, V)>() + 1)
        }
        let names = |n: &Names| {
            map(&n.ids) + vec(&n.names) + 2 * n.names.iter().map(|s| s.capacity()).sum::<usize>()
        };
        let series: usize = self
            .cells
            .iter()
            .flat_map(|c| c.series.iter())
            .map(|s| {
                vec(&s.at)
                    + vec(&s.aux)
                    + vec(&s.sums)
                    + vec(&s.visited)
                    + vec(&s.full)
                    + vec(&s.pending)
            })
            .sum();
        let cases: usize = self
            .cases
            .iter()
            .filter_map(|c| c.history.as_ref())
            .map(|h| std::mem::size_of::<CaseHistory>() + vec(&h.transfers) + vec(&h.follow_ups))
            .sum();
        names(&self.rooms)
            + names(&self.categories)
            + names(&self.labels)
            + vec(&self.cells)
            + map(&self.cell_ids)
            + series
            + map(&self.case_ids)
            + vec(&self.cases)
            + cases
            + vec(&self.latest_visits)
            + vec(&self.open[UNCONCLUDED])
            + vec(&self.open[CONCLUDED])
            + vec(&self.conclusions)
            + vec(&self.pending_conclusions)
            + vec(&self.conclusions_per_cell)
    }

    fn cell_id(&mut self, room: &str, category: &str) -> u32 {
        let key = (self.rooms.id(room), self.categories.id(category));
        if let Some(id) = self.cell_ids.get(&key) {
            return *id;
        }
        let id = self.cells.len() as u32;
        self.cells.push(CellData {
            room: key.0,
            category: key.1,
            series: Default::default(),
            dirty: false,
        });
        self.cell_ids.insert(key, id);
        id
    }

    fn case_index(&mut self, case_id: Uuid) -> u32 {
        if let Some(id) = self.case_ids.get(&case_id) {
            return *id;
        }
        let id = self.cases.len() as u32;
        self.cases.push(CaseInfo {
            accepted_at: 0,
            concluded_at: 0,
            accepted_seq: 0,
            concluded_seq: 0,
            filed_cell: NONE,
            open_row: NONE,
            resolved_cell: NONE,
            history: None,
        });
        self.latest_visits.push(LatestVisit::default());
        self.case_ids.insert(case_id, id);
        id
    }

    fn insert(&mut self, row: FactRow<'_>) {
        self.facts += 1;
        let cell = self.cell_id(row.room_id, row.category);
        let case = self.case_index(row.case_id);
        let at = row.occurred_at;
        if let Some(s) = slot(row.kind) {
            let aux = match s {
                FILED => self.labels.id(row.label.unwrap_or_default()),
                RESOLVED => case,
                _ => 0,
            };
            let amount = row.amount_fen.unwrap_or(0).max(0) as u64;
            let data = &mut self.cells[cell as usize];
            data.series[s].pending.push((at, aux, amount));
            data.dirty = true;
        }
        let info = &mut self.cases[case as usize];
        let seq = seq32(row.seq);
        match row.kind {
            FactKind::Filed => info.filed_cell = cell,
            FactKind::Accepted => {
                if seq >= info.accepted_seq {
                    (info.accepted_at, info.accepted_seq) = (at, seq);
                }
            }
            FactKind::Resolved | FactKind::Terminated => {
                if seq >= info.concluded_seq {
                    (info.concluded_at, info.concluded_seq) = (at, seq);
                }
                if row.kind == FactKind::Resolved {
                    info.resolved_cell = match info.resolved_cell {
                        NONE => cell,
                        c if c == cell => c,
                        _ => MANY,
                    };
                }
                if let Some(d) = row.duration_us {
                    self.pending_conclusions.push(Conclusion {
                        duration_us: d,
                        at,
                        cell,
                    });
                }
            }
            FactKind::TransferredIn => {
                let transfers = &mut info.history.get_or_insert_with(Default::default).transfers;
                let entry = (at, row.seq, cell);
                let i = transfers.partition_point(|t| (t.0, t.1) < (entry.0, entry.1));
                transfers.insert(i, entry);
            }
            FactKind::FollowUp => {
                let visits = &mut info.history.get_or_insert_with(Default::default).follow_ups;
                let entry = (at, row.seq, row.label == Some("full"));
                let i = visits.partition_point(|f| (f.0, f.1) < (entry.0, entry.1));
                visits.insert(i, entry);
                if let Some(last) = visits.last() {
                    self.latest_visits[case as usize] = LatestVisit {
                        at: last.0,
                        state: if last.2 { 2 } else { 1 },
                    };
                }
                // The agreements' visit sums that count this case are stale now.
                let stale: Vec<u32> = match info.resolved_cell {
                    NONE => Vec::new(),
                    MANY => (0..self.cells.len() as u32).collect(),
                    c => vec![c],
                };
                for c in stale {
                    let data = &mut self.cells[c as usize];
                    data.series[RESOLVED].visits_stale = true;
                    data.dirty = true;
                }
                return;
            }
            _ => return,
        }
        self.refresh_open(case);
    }

    /// Rewrites the case's row of accepted cases from what is known of it.
    fn refresh_open(&mut self, case: u32) {
        let info = &self.cases[case as usize];
        if info.accepted_seq == 0 {
            return;
        }
        let latest_transfer = info.history.as_ref().and_then(|h| h.transfers.last());
        let (transfer_at, cell) = match latest_transfer {
            Some(t) => (t.0, t.2),
            None => (i64::MIN, info.filed_cell),
        };
        let row = OpenRow {
            accepted_at: info.accepted_at,
            concluded_at: match info.concluded_seq {
                0 => i64::MAX,
                _ => info.concluded_at,
            },
            transfer_at,
            cell,
            case,
        };
        let list = if row.concluded_at == i64::MAX {
            UNCONCLUDED
        } else {
            self.concluded_until = self.concluded_until.max(row.concluded_at);
            CONCLUDED
        };
        match info.open_row {
            NONE => {}
            at if at as usize % 2 == list => {
                self.open[list][at as usize / 2] = row;
                return;
            }
            at => {
                // Concluded now (or, were a conclusion ever undone, no longer): move lists.
                let (old, i) = (at as usize % 2, at as usize / 2);
                self.open[old].swap_remove(i);
                if let Some(moved) = self.open[old].get(i) {
                    self.cases[moved.case as usize].open_row = (i * 2 + old) as u32;
                }
            }
        }
        self.cases[case as usize].open_row = (self.open[list].len() * 2 + list) as u32;
        self.open[list].push(row);
    }

    fn seal(&mut self) {
        for cell in self.cells.iter_mut().filter(|c| c.dirty) {
            for (s, series) in cell.series.iter_mut().enumerate() {
                series.seal(s == FILED || s == RESOLVED);
            }
            let agreements = &mut cell.series[RESOLVED];
            if agreements.visits_stale {
                agreements.count_visits(&self.latest_visits);
            }
            cell.dirty = false;
        }
        if !self.pending_conclusions.is_empty() {
            self.rank_cache.clear();
            let mut new = std::mem::take(&mut self.pending_conclusions);
            for c in &new {
                let cell = c.cell as usize;
                if self.conclusions_per_cell.len() <= cell {
                    self.conclusions_per_cell.resize(cell + 1, 0);
                }
                self.conclusions_per_cell[cell] += 1;
                self.conclusions_span = Some(match self.conclusions_span {
                    None => (c.at, c.at),
                    Some((lo, hi)) => (lo.min(c.at), hi.max(c.at)),
                });
            }
            new.sort_by_key(|c| c.duration_us);
            // A stable sort of the old (sorted) run followed by the new one is a merge.
            self.conclusions.extend(new);
            self.conclusions.sort_by_key(|c| c.duration_us);
        }
    }

    /// The cell a case is in at `to`: that of its latest transfer before `to`, else its filing's.
    fn cell_at(&self, case: u32, to: i64) -> u32 {
        let info = &self.cases[case as usize];
        let transfers = info.history.as_ref().map_or(&[][..], |h| &h.transfers[..]);
        match transfers.partition_point(|t| t.0 < to) {
            0 => info.filed_cell,
            n => transfers[n - 1].2,
        }
    }

    /// Whether a case's latest return visit before `to` found the agreement fully performed;
    /// `None` without a visit before `to`.
    fn visit_before(&self, case: u32, to: i64) -> Option<bool> {
        let latest = self.latest_visits[case as usize];
        match latest.state {
            0 => None,
            s if latest.at < to => Some(s == 2),
            _ => {
                let history = self.cases[case as usize].history.as_ref();
                let visits = history.map_or(&[][..], |h| &h.follow_ups[..]);
                let before = visits.partition_point(|v| v.0 < to);
                (before > 0).then(|| visits[before - 1].2)
            }
        }
    }

    /// The (room, category) cells of a window, as [`crate::indicators::naive`] defines them
    /// (durations ascending). A cell is present when something in the window counts in it.
    pub fn cells(&self, window: Window) -> BTreeMap<CellKey, Cell> {
        self.aggregate(window, |room, category| {
            Some((room.to_string(), category.to_string()))
        })
        .0
    }

    /// The window's cells merged into groups: `key(room, category)` names a cell's group, `None`
    /// leaves the cell out. Returns the groups in which something counts, and the merge of every
    /// cell not left out. Each cell's durations are ascending, so [`Cell::indicators`] finds them
    /// sorted.
    pub fn aggregate<K: Ord>(
        &self,
        window: Window,
        key: impl Fn(&str, &str) -> Option<K>,
    ) -> (BTreeMap<K, Cell>, Cell) {
        let grouped = self.grouped(window, key, true);
        let mut groups = grouped.groups;
        let mut out = BTreeMap::new();
        for (k, g) in grouped.keys {
            let acc = std::mem::take(&mut groups[g]);
            if acc.present {
                out.insert(k, acc.into_cell());
            }
        }
        (out, grouped.total.into_cell())
    }

    /// What [`StatsIndex::aggregate`] gives, as indicators: `aggregate(window, key)` with
    /// [`Cell::indicators`] applied to every group and to the totals, exactly (the tests compare
    /// the two bit for bit). It builds no list of durations: the conclusions are kept sorted by
    /// duration, so one pass counts each group's conclusions in the window and a second adds
    /// their days in ascending order (the order `Cell::indicators` sums them in) and picks the
    /// values at the ranks the median and the 90th percentile interpolate between. What the
    /// statistics endpoints call.
    pub fn aggregate_indicators<K: Ord>(
        &self,
        window: Window,
        key: impl Fn(&str, &str) -> Option<K>,
    ) -> (BTreeMap<K, Indicators>, Indicators) {
        let grouped = self.grouped(window, key, false);
        let (from, to) = bounds(window);
        let group_of = &grouped.group_of;
        let holds_all = self
            .conclusions_span
            .is_some_and(|(first, last)| from <= first && last < to);
        // A window holding every conclusion ranks them all, whatever its bounds: the result
        // depends only on the grouping and the conclusions, so it is kept until either changes
        // (every all-time request of a dashboard asks the same).
        let cached = holds_all.then(|| self.rank_cache.get(group_of)).flatten();
        let rankers = match cached {
            Some(rankers) => rankers,
            None => {
                let rankers = self.rank(group_of, grouped.groups.len(), from, to, holds_all);
                if holds_all {
                    self.rank_cache.put(group_of, &rankers);
                }
                rankers
            }
        };
        let totals = rankers.len() - 1;
        let mut groups = grouped.groups;
        let mut out = BTreeMap::new();
        for (k, g) in grouped.keys {
            let acc = std::mem::take(&mut groups[g]);
            if acc.present {
                out.insert(k, rankers[g].complete(acc.into_cell().indicators()));
            }
        }
        let total = rankers[totals].complete(grouped.total.into_cell().indicators());
        (out, total)
    }

    /// One ranker per group (`group_of` maps cells to groups), the last for the totals, fed the
    /// window's conclusions in ascending order of duration.
    fn rank(
        &self,
        group_of: &[u32],
        groups: usize,
        from: i64,
        to: i64,
        holds_all: bool,
    ) -> Vec<Ranker> {
        let in_window =
            |c: &&Conclusion| c.at >= from && c.at < to && group_of[c.cell as usize] != NONE;
        let mut rankers = vec![Ranker::default(); groups + 1];
        let totals = rankers.len() - 1;
        if holds_all {
            for (cell, n) in self.conclusions_per_cell.iter().enumerate() {
                let g = group_of[cell];
                if g != NONE {
                    rankers[g as usize].n += *n as usize;
                    rankers[totals].n += *n as usize;
                }
            }
        } else {
            for c in self.conclusions.iter().filter(in_window) {
                rankers[group_of[c.cell as usize] as usize].n += 1;
                rankers[totals].n += 1;
            }
        }
        rankers.iter_mut().for_each(Ranker::plan);
        let mut take = |c: &Conclusion| {
            let g = group_of[c.cell as usize];
            if g != NONE {
                let days = c.duration_us as f64 / 86_400_000_000.0;
                rankers[g as usize].take(days);
                rankers[totals].take(days);
            }
        };
        if holds_all {
            self.conclusions.iter().for_each(&mut take);
        } else {
            self.conclusions.iter().filter(in_window).for_each(take);
        }
        rankers
    }

    /// The window's groups accumulated, with or without each group's list of durations.
    fn grouped<K: Ord>(
        &self,
        window: Window,
        key: impl Fn(&str, &str) -> Option<K>,
        durations: bool,
    ) -> Grouped<K> {
        // The bounds as the SQL compared them: whole microseconds.
        let from = window
            .from
            .map(|t| t.timestamp_micros())
            .unwrap_or(i64::MIN);
        let to = window.to.timestamp_micros();
        let overdue_before = (window.to - overdue_after()).timestamp_micros();

        let mut keys: BTreeMap<K, usize> = BTreeMap::new();
        let mut group_of = vec![NONE; self.cells.len()];
        for (i, c) in self.cells.iter().enumerate() {
            if let Some(k) = key(self.rooms.name(c.room), self.categories.name(c.category)) {
                let next = keys.len();
                group_of[i] = *keys.entry(k).or_insert(next) as u32;
            }
        }
        let mut groups = vec![Acc::default(); keys.len()];
        let mut total = Acc::default();

        for (cell, data) in self.cells.iter().enumerate() {
            let g = group_of[cell];
            if g == NONE {
                continue;
            }
            let acc = &mut groups[g as usize];
            for (s, series) in data.series.iter().enumerate() {
                let r = series.range(from, to);
                if r.is_empty() {
                    continue;
                }
                acc.present = true;
                acc.counts[s] += r.len() as u64;
                total.counts[s] += r.len() as u64;
                match s {
                    FILED => {
                        let sum = series.sum(&r);
                        acc.amount_in_dispute_fen += sum;
                        total.amount_in_dispute_fen += sum;
                    }
                    RESOLVED => {
                        let sum = series.sum(&r);
                        acc.amount_agreed_fen += sum;
                        total.amount_agreed_fen += sum;
                        let (visited, full) = if series.visited_until < to {
                            // Every visit of these cases is before `to`: the latest overall is
                            // the latest before `to`.
                            (
                                u64::from(series.visited[r.end] - series.visited[r.start]),
                                u64::from(series.full[r.end] - series.full[r.start]),
                            )
                        } else {
                            let mut n = (0, 0);
                            for &case in &series.aux[r] {
                                if let Some(full) = self.visit_before(case, to) {
                                    n.0 += 1;
                                    n.1 += u64::from(full);
                                }
                            }
                            n
                        };
                        acc.followed_up += visited;
                        total.followed_up += visited;
                        acc.performed_full += full;
                        total.performed_full += full;
                    }
                    _ => {}
                }
            }
        }

        // Without `durations`, the caller takes the durations by rank instead.
        if durations {
            for c in &self.conclusions {
                if c.at < from || c.at >= to {
                    continue;
                }
                let g = group_of[c.cell as usize];
                if g != NONE {
                    groups[g as usize].durations_us.push(c.duration_us);
                    total.durations_us.push(c.duration_us);
                }
            }
        }

        let lists = if self.concluded_until < to {
            &self.open[..=UNCONCLUDED]
        } else {
            &self.open[..]
        };
        for row in lists.iter().flatten() {
            if row.accepted_at >= to || row.concluded_at < to {
                continue;
            }
            let cell = if row.transfer_at < to {
                row.cell
            } else {
                self.cell_at(row.case, to)
            };
            let Some(&g) = group_of.get(cell as usize) else {
                continue; // not filed (as far as the facts fed tell)
            };
            if g == NONE {
                continue;
            }
            let overdue = u64::from(row.accepted_at < overdue_before);
            for acc in [&mut groups[g as usize], &mut total] {
                acc.present = true;
                acc.open += 1;
                acc.overdue_open += overdue;
            }
        }

        Grouped {
            keys,
            group_of,
            groups,
            total,
        }
    }

    /// For one room and window: filings by source label, and filings, agreements and
    /// terminations by Shenzhen month (`YYYY-MM`).
    pub fn room_breakdown(
        &self,
        room_id: &str,
        window: Window,
    ) -> (BTreeMap<String, u64>, BTreeMap<String, [u64; 3]>) {
        let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
        let mut monthly: BTreeMap<(i32, u32), [u64; 3]> = BTreeMap::new();
        let Some(room) = self.rooms.get(room_id) else {
            return (by_source, BTreeMap::new());
        };
        let from = window
            .from
            .map(|t| t.timestamp_micros())
            .unwrap_or(i64::MIN);
        let to = window.to.timestamp_micros();
        let mut labels = vec![0u64; self.labels.names.len()];
        for data in self.cells.iter().filter(|c| c.room == room) {
            for (column, s) in [FILED, RESOLVED, TERMINATED].into_iter().enumerate() {
                let series = &data.series[s];
                let r = series.range(from, to);
                if s == FILED {
                    for &label in &series.aux[r.clone()] {
                        labels[label as usize] += 1;
                    }
                }
                // Times ascend: count month by month, finding where each month ends.
                let mut i = r.start;
                while i < r.end {
                    let (month, end) = shenzhen_month(series.at[i]);
                    let j = (i + series.at[i..r.end].partition_point(|a| *a < end)).max(i + 1);
                    monthly.entry(month).or_default()[column] += (j - i) as u64;
                    i = j;
                }
            }
        }
        for (id, n) in labels.into_iter().enumerate() {
            if n > 0 {
                by_source.insert(self.labels.name(id as u32).to_string(), n);
            }
        }
        let monthly = monthly
            .into_iter()
            .map(|((y, m), v)| {
                // Formatted as chrono formats the instant itself (`%Y` pads and signs years).
                let name = NaiveDate::from_ymd_opt(y, m, 1)
                    .map(|d| d.format("%Y-%m").to_string())
                    .unwrap_or_else(|| format!("{y}-{m:02}"));
                (name, v)
            })
            .collect();
        (by_source, monthly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::facts;
    use crate::indicators::naive;
    use crate::summary::CaseSummary;
    use chrono::{DateTime, Duration};
    use tiaojie_domain::*;

    /// xorshift64*: seeded, so a failure names the seed that reproduces it.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len() as u64) as usize]
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    const ROOMS: [&str; 4] = ["R01", "R02", "R21", "R25"];

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn money(rng: &mut Rng) -> Option<Money> {
        rng.chance(75)
            .then(|| Money::from_fen(rng.below(10_000_000)).unwrap())
    }

    /// One case's events: a random walk through valid steps, each at or after the previous one
    /// (often at the very same instant, to exercise the tie-breaks), in whole microseconds.
    fn case_history(rng: &mut Rng, number: u32) -> (Uuid, Vec<CaseEvent>) {
        let id = Uuid::from_u128(u128::from(rng.next()) << 64 | u128::from(rng.next()));
        let mut room = rng.pick(&ROOMS);
        let mut at = ts("2026-01-01T00:00:00Z")
            + Duration::microseconds(rng.below(150 * 86_400 * 1_000_000) as i64);
        let mut events = vec![CaseEvent::CaseFiled {
            case_id: id,
            case_no: CaseNo::new(RoomId::new(room).unwrap(), 2026, number).unwrap(),
            room_id: RoomId::new(room).unwrap(),
            category: rng.pick(Category::ALL),
            source: rng.pick(Source::ALL),
            summary: "纠纷".into(),
            claims: None,
            amount_in_dispute: money(rng),
            industry: None,
            parties: Vec::new(),
            occurred_at: at,
        }];
        let mut status = "filed";
        let mut judicial: Option<JudicialStatus> = None;
        for _ in 0..rng.below(14) {
            if !rng.chance(15) {
                at += Duration::microseconds(rng.below(25 * 86_400 * 1_000_000) as i64);
            }
            let options: &[&str] = match status {
                "filed" => &[
                    "accept",
                    "accept",
                    "accept",
                    "decline",
                    "early_end",
                    "transfer",
                ],
                "accepted" => &["assign", "assign", "early_end", "transfer", "note"],
                "assigned" => &["session", "session", "end", "transfer", "assign"],
                "in_mediation" => &["session", "resolve", "resolve", "resolve", "end"],
                "resolved" => &["follow_up", "follow_up", "follow_up", "judicial", "close"],
                "terminated" | "declined" => &["close", "note"],
                _ => break,
            };
            let event = match rng.pick(options) {
                "accept" => {
                    status = "accepted";
                    CaseEvent::CaseAccepted {
                        note: None,
                        occurred_at: at,
                    }
                }
                "decline" => {
                    status = "declined";
                    CaseEvent::CaseDeclined {
                        reason: "不予受理".into(),
                        occurred_at: at,
                    }
                }
                "early_end" | "end" => {
                    status = "terminated";
                    let reason = rng.pick(TerminationReason::ALL);
                    CaseEvent::MediationTerminated {
                        reason,
                        referred_to: (reason == TerminationReason::Referred)
                            .then(|| rng.pick(ReferralRoute::ALL)),
                        note: None,
                        occurred_at: at,
                    }
                }
                "transfer" => {
                    let from = room;
                    while room == from {
                        room = rng.pick(&ROOMS);
                    }
                    CaseEvent::CaseTransferred {
                        from_room_id: RoomId::new(from).unwrap(),
                        to_room_id: RoomId::new(room).unwrap(),
                        reason: "移送".into(),
                        occurred_at: at,
                    }
                }
                "assign" => {
                    if status == "accepted" {
                        status = "assigned";
                    }
                    CaseEvent::MediatorAssigned {
                        mediator_id: format!("m-{}", rng.below(5)),
                        name: None,
                        lead: false,
                        occurred_at: at,
                    }
                }
                "session" => {
                    status = "in_mediation";
                    CaseEvent::SessionRecorded {
                        summary: "调解".into(),
                        attendees: Vec::new(),
                        occurred_at: at,
                    }
                }
                "resolve" => {
                    status = "resolved";
                    CaseEvent::AgreementReached {
                        agreement: AgreementKind::Written,
                        terms: "协议".into(),
                        agreed_amount: money(rng),
                        performance_due: None,
                        occurred_at: at,
                    }
                }
                "follow_up" => CaseEvent::FollowUpRecorded {
                    performance: rng.pick(Performance::ALL),
                    satisfaction: None,
                    note: None,
                    occurred_at: at,
                },
                "judicial" => {
                    let next = match judicial {
                        None => JudicialStatus::Requested,
                        Some(JudicialStatus::Requested) => {
                            rng.pick(&[JudicialStatus::Confirmed, JudicialStatus::Rejected])
                        }
                        Some(_) => continue,
                    };
                    judicial = Some(next);
                    CaseEvent::JudicialConfirmationRecorded {
                        status: next,
                        court: None,
                        occurred_at: at,
                    }
                }
                "close" => {
                    status = "closed";
                    CaseEvent::CaseClosed {
                        archive_no: None,
                        occurred_at: at,
                    }
                }
                _ => CaseEvent::NoteAdded {
                    text: "备注".into(),
                    occurred_at: at,
                },
            };
            events.push(event);
        }
        (id, events)
    }

    /// A log: the cases' histories interleaved at random, each case's events in order.
    fn log(rng: &mut Rng, cases: u32) -> Vec<(Uuid, CaseEvent)> {
        let mut queues: Vec<(Uuid, std::collections::VecDeque<CaseEvent>)> = (1..=cases)
            .map(|n| {
                let (id, events) = case_history(rng, n);
                (id, events.into())
            })
            .collect();
        let mut out = Vec::new();
        while !queues.is_empty() {
            let i = rng.below(queues.len() as u64) as usize;
            let (id, queue) = &mut queues[i];
            out.extend(queue.pop_front().map(|e| (*id, e)));
            if queue.is_empty() {
                queues.swap_remove(i);
            }
        }
        out
    }

    /// The facts the projector stores for a log: (case, sequence, fact), in log order.
    fn stored_facts(log: &[(Uuid, CaseEvent)]) -> Vec<(Uuid, i64, Fact)> {
        let mut summaries: HashMap<Uuid, CaseSummary> = HashMap::new();
        let mut out = Vec::new();
        for (id, event) in log {
            let seq = summaries.get(id).map(|s| s.version as i64 + 1).unwrap_or(1);
            for f in facts(summaries.get(id), event) {
                out.push((*id, seq, f));
            }
            match summaries.get_mut(id) {
                Some(s) => s.apply(event),
                None => {
                    summaries.extend(CaseSummary::start(*id, event).map(|s| (*id, s)));
                }
            }
        }
        out
    }

    /// The index of `facts`, fed in a random order and in random batches.
    fn shuffled_index(rng: &mut Rng, facts: &[(Uuid, i64, Fact)]) -> StatsIndex {
        let mut order: Vec<usize> = (0..facts.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut index = StatsIndex::new();
        let mut rest = &order[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(rest.len() as u64 / 2 + 1) as usize).min(rest.len());
            let mut loader = index.loader();
            for &i in &rest[..n] {
                let (id, seq, f) = &facts[i];
                loader.insert(FactRow::of(*id, *seq, f));
            }
            drop(loader);
            rest = &rest[n..];
        }
        index
    }

    /// Cells as the SQL read them: only cells where something counts, durations sorted.
    fn comparable(cells: BTreeMap<CellKey, Cell>) -> BTreeMap<CellKey, Cell> {
        cells
            .into_iter()
            .filter(|(_, c)| *c != Cell::default())
            .map(|(k, mut c)| {
                c.durations_us.sort_unstable();
                (k, c)
            })
            .collect()
    }

    fn merged(
        cells: &BTreeMap<CellKey, Cell>,
        key: impl Fn(&CellKey) -> String,
    ) -> BTreeMap<String, Cell> {
        let mut out: BTreeMap<String, Cell> = BTreeMap::new();
        for (k, c) in cells {
            out.entry(key(k)).or_default().merge(c);
        }
        for c in out.values_mut() {
            c.durations_us.sort_unstable();
        }
        out
    }

    /// The room breakdown straight from the facts, as the SQL of the read models computed it.
    fn breakdown_reference(
        facts: &[(Uuid, i64, Fact)],
        room: &str,
        window: Window,
    ) -> (BTreeMap<String, u64>, BTreeMap<String, [u64; 3]>) {
        let from = window
            .from
            .map(|t| t.timestamp_micros())
            .unwrap_or(i64::MIN);
        let to = window.to.timestamp_micros();
        let mut by_source = BTreeMap::new();
        let mut monthly: BTreeMap<String, [u64; 3]> = BTreeMap::new();
        for (_, _, f) in facts {
            let at = f.occurred_at.timestamp_micros();
            if f.room_id != room || at < from || at >= to {
                continue;
            }
            let column = match f.kind {
                FactKind::Filed => 0,
                FactKind::Resolved => 1,
                FactKind::Terminated => 2,
                _ => continue,
            };
            let month = f
                .occurred_at
                .with_timezone(&shenzhen_offset())
                .format("%Y-%m")
                .to_string();
            monthly.entry(month).or_default()[column] += 1;
            if column == 0 {
                *by_source
                    .entry(f.label.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
        (by_source, monthly)
    }

    fn windows(rng: &mut Rng, log: &[(Uuid, CaseEvent)]) -> Vec<Window> {
        let start = ts("2026-01-01T00:00:00Z");
        let mut out = vec![
            Window {
                from: None,
                to: ts("2027-06-01T00:00:00Z"),
            },
            Window {
                from: None,
                to: start + Duration::seconds(rng.below(250 * 86_400) as i64),
            },
        ];
        for _ in 0..6 {
            let from = start - Duration::days(10)
                + Duration::microseconds(rng.below(300 * 86_400 * 1_000_000) as i64);
            let to = from + Duration::microseconds(1 + rng.below(120 * 86_400 * 1_000_000) as i64);
            out.push(Window {
                from: Some(from),
                to,
            });
        }
        // Bounds at events' own instants: `from` includes them, `to` excludes them.
        for _ in 0..4 {
            let a = log[rng.below(log.len() as u64) as usize].1.occurred_at();
            let b = log[rng.below(log.len() as u64) as usize].1.occurred_at();
            if a != b {
                out.push(Window {
                    from: Some(a.min(b)),
                    to: a.max(b),
                });
            }
            out.push(Window { from: None, to: b });
        }
        out
    }

    #[test]
    fn random_histories_agree_with_the_naive_recomputation() {
        let mut seen = Cell::default();
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let log = log(&mut rng, 40);
            let facts = stored_facts(&log);
            let in_order =
                StatsIndex::of(facts.iter().map(|(id, seq, f)| FactRow::of(*id, *seq, f)));
            let shuffled = shuffled_index(&mut rng, &facts);
            assert_eq!(in_order.len(), facts.len());
            for window in windows(&mut rng, &log) {
                let ctx = format!("seed {seed}, window {:?}..{:?}", window.from, window.to);
                let expected = comparable(naive(&log, window));
                expected.values().for_each(|c| seen.merge(c));
                for (how, index) in [("in log order", &in_order), ("shuffled", &shuffled)] {
                    assert_eq!(index.cells(window), expected, "{ctx}, {how}");
                }
                let by_room = merged(&expected, |k| k.0.clone());
                same_indicators(&shuffled, window, |room, _| Some(room.to_string()), &ctx);
                same_indicators(&shuffled, window, |_, c| Some(c.to_string()), &ctx);
                same_indicators(&shuffled, window, |r, _| (r == "R02").then_some(()), &ctx);
                let (groups, total) = shuffled.aggregate(window, |room, _| Some(room.to_string()));
                assert_eq!(groups, by_room, "{ctx}: by room");
                let mut all = Cell::default();
                expected.values().for_each(|c| all.merge(c));
                all.durations_us.sort_unstable();
                assert_eq!(total, all, "{ctx}: totals");
                let (groups, _) =
                    shuffled.aggregate(window, |_, category| Some(category.to_string()));
                assert_eq!(
                    groups,
                    merged(&expected, |k| k.1.clone()),
                    "{ctx}: by category"
                );
                for room in ROOMS {
                    let (groups, total) =
                        shuffled.aggregate(window, |r, c| (r == room).then(|| c.to_string()));
                    let mine: BTreeMap<CellKey, Cell> = expected
                        .iter()
                        .filter(|(k, _)| k.0 == room)
                        .map(|(k, c)| (k.clone(), c.clone()))
                        .collect();
                    assert_eq!(
                        groups,
                        merged(&mine, |k| k.1.clone()),
                        "{ctx}: {room} by category"
                    );
                    let one = merged(&mine, |_| String::new())
                        .remove("")
                        .unwrap_or_default();
                    assert_eq!(total, one, "{ctx}: {room}");
                    assert_eq!(
                        shuffled.room_breakdown(room, window),
                        breakdown_reference(&facts, room, window),
                        "{ctx}: {room} breakdown"
                    );
                }
            }
        }
        // The histories reach every indicator the definitions single out.
        let i = seen.indicators();
        for (what, n) in [
            ("transferred", i.transferred_in),
            ("withdrawn", i.withdrawn),
            ("referred", i.referred),
            ("judicial_confirmed", i.judicial_confirmed),
            ("followed_up", i.followed_up),
            ("performed_full", i.performed_full),
            ("open", i.open),
            ("overdue_open", i.overdue_open),
        ] {
            assert!(n > 0, "no {what} in the generated histories: {i:?}");
        }
        assert!(!seen.durations_us.is_empty());
    }

    #[test]
    fn an_all_time_ranking_is_not_reused_once_new_facts_are_in() {
        let mut rng = Rng(0x5EED_0001);
        let log = log(&mut rng, 40);
        let facts = stored_facts(&log);
        // Hold back the conclusions of about half the cases: every cell already exists when
        // they come (their grouping is the same), so only the clearing of the cache can keep
        // the first answer from being reused.
        let (rest, first): (Vec<_>, Vec<_>) = facts
            .iter()
            .cloned()
            .partition(|(id, _, f)| f.duration_us.is_some() && id.as_u128() % 2 == 1);
        assert!(first.iter().any(|(_, _, f)| f.duration_us.is_some()));
        let mut index = StatsIndex::of(first.iter().map(|(id, seq, f)| FactRow::of(*id, *seq, f)));
        let window = Window {
            from: None,
            to: ts("2027-06-01T00:00:00Z"),
        };
        let by_room = |room: &str, _: &str| Some(room.to_string());
        same_indicators(&index, window, by_room, "half the facts");
        let before = index.aggregate_indicators(window, by_room).1;
        {
            let mut loader = index.loader();
            for (id, seq, f) in &rest {
                loader.insert(FactRow::of(*id, *seq, f));
            }
        }
        same_indicators(&index, window, by_room, "all the facts");
        let after = index.aggregate_indicators(window, by_room).1;
        assert_ne!(
            before.mean_days_to_conclude, after.mean_days_to_conclude,
            "the second half must bring conclusions, or this test shows nothing"
        );
    }

    /// `aggregate_indicators` equals `aggregate` followed by `Cell::indicators`, bit for bit.
    fn same_indicators<K: Ord + std::fmt::Debug>(
        index: &StatsIndex,
        window: Window,
        key: impl Fn(&str, &str) -> Option<K> + Copy,
        ctx: &str,
    ) {
        let (cells, total) = index.aggregate(window, key);
        // Twice: the second may come from the cache of an all-time ranking.
        let first = index.aggregate_indicators(window, key);
        let (indicators, total_indicators) = index.aggregate_indicators(window, key);
        assert_eq!(first.0, indicators, "{ctx}: a second asking");
        let expected: BTreeMap<K, Indicators> = cells
            .into_iter()
            .map(|(k, c)| (k, c.indicators()))
            .collect();
        // Compare the floats' bits, so that a sum taken in another order would show.
        let bits = |i: &Indicators| {
            [
                i.mean_days_to_conclude,
                i.median_days_to_conclude,
                i.p90_days_to_conclude,
            ]
            .map(|v| v.map(f64::to_bits))
        };
        assert_eq!(indicators, expected, "{ctx}: indicators by group");
        for (k, i) in &indicators {
            assert_eq!(bits(i), bits(&expected[k]), "{ctx}: {k:?}");
        }
        assert_eq!(
            total_indicators,
            total.indicators(),
            "{ctx}: total indicators"
        );
        assert_eq!(
            bits(&total_indicators),
            bits(&total.indicators()),
            "{ctx}: totals"
        );
    }

    fn row<'a>(case: u128, seq: i64, kind: FactKind, room: &'a str, at: &str) -> FactRow<'a> {
        FactRow {
            case_id: Uuid::from_u128(case),
            seq,
            kind,
            room_id: room,
            category: "contract",
            occurred_at: ts(at).timestamp_micros(),
            amount_fen: None,
            duration_us: None,
            label: None,
        }
    }

    #[test]
    fn a_case_costs_48_bytes_in_the_case_table() {
        assert_eq!(std::mem::size_of::<CaseInfo>(), 48);
    }

    #[test]
    fn ties_and_bounds_follow_the_definitions() {
        use FactKind::*;
        let index = StatsIndex::of([
            row(1, 1, Filed, "R01", "2026-03-01T00:00:00Z"),
            row(1, 2, Accepted, "R01", "2026-03-01T00:00:00Z"),
            // Two transfers at one instant: the later sequence decides where the case is.
            row(1, 3, TransferredOut, "R01", "2026-03-10T00:00:00Z"),
            row(1, 3, TransferredIn, "R02", "2026-03-10T00:00:00Z"),
            row(1, 4, TransferredOut, "R02", "2026-03-10T00:00:00Z"),
            row(1, 4, TransferredIn, "R21", "2026-03-10T00:00:00Z"),
            row(2, 1, Filed, "R01", "2026-03-01T00:00:00Z"),
            row(2, 2, Accepted, "R01", "2026-03-02T00:00:00Z"),
            row(2, 3, Resolved, "R01", "2026-03-05T00:00:00Z"),
            // Two visits at one instant: the later sequence is the latest visit.
            FactRow {
                label: Some("none"),
                ..row(2, 4, FollowUp, "R01", "2026-03-20T00:00:00Z")
            },
            FactRow {
                label: Some("full"),
                ..row(2, 5, FollowUp, "R01", "2026-03-20T00:00:00Z")
            },
        ]);
        let at = |to: &str| {
            let (groups, total) = index.aggregate(
                Window {
                    from: None,
                    to: ts(to),
                },
                |room, _| Some(room.to_string()),
            );
            let open: Vec<(String, u64, u64)> = groups
                .iter()
                .filter(|(_, c)| c.open > 0)
                .map(|(r, c)| (r.clone(), c.open, c.overdue_open))
                .collect();
            (open, total.followed_up, total.performed_full)
        };
        let open = |v: &[(&str, u64, u64)]| -> Vec<(String, u64, u64)> {
            v.iter().map(|(r, o, d)| (r.to_string(), *o, *d)).collect()
        };
        // A transfer at `to` has not happened yet; a visit at `to` has not either.
        assert_eq!(at("2026-03-10T00:00:00Z"), (open(&[("R01", 1, 0)]), 0, 0));
        assert_eq!(at("2026-03-20T00:00:00Z"), (open(&[("R21", 1, 0)]), 0, 0));
        assert_eq!(
            at("2026-03-20T00:00:00.000001Z"),
            (open(&[("R21", 1, 0)]), 1, 1)
        );
        // Exactly 30 days after acceptance is not yet overdue; a microsecond later it is.
        assert_eq!(at("2026-03-31T00:00:00Z"), (open(&[("R21", 1, 0)]), 1, 1));
        assert_eq!(
            at("2026-03-31T00:00:00.000001Z"),
            (open(&[("R21", 1, 1)]), 1, 1)
        );
    }
}
