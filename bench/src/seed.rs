//! The seeded log of the `log` benchmark: `n` valid, chained case events over the rooms R01–R30,
//! generated from real `tiaojie_domain::CaseEvent` values and chained with
//! `tiaojie::audit::chain` exactly as the append path does (canonical JSON text stored, recorded
//! at microseconds, `prev_hash`/`hash` in hex), written as COPY text rows in log order (recorded
//! time), together with every case's head.
//!
//! Lifecycles: filed → accepted → mediator(s) → session(s) → resolved (judicial confirmation,
//! follow-ups) or terminated → closed, with declines, withdrawals before acceptance, transfers
//! between rooms, recusals and notes mixed in; filings spread over 2025 up to a month before the
//! horizon (the time the run starts), each step later than the one before, cases still open when
//! their next step would fall after the horizon. Every step is checked against the domain's
//! transition table while it is generated.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use tiaojie::audit::chain::{self, EventFields, Hash};
use tiaojie::store::bulk::copy_text;
use tiaojie_domain::status::{target, Step};
use tiaojie_domain::{
    AgreementKind, CaseEvent, CaseNo, CaseStatus, Category, JudicialStatus, Money, Party,
    PartyKind, PartyRole, Performance, ReferralRoute, RoomId, Source, TerminationReason,
};
use uuid::Uuid;

/// SplitMix64: deterministic, fast, good enough to vary cases.
#[derive(Clone)]
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `p` percent.
    pub fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(1) as u64) as i64
    }
}

const US: i64 = 1_000_000;
const MIN: i64 = 60 * US;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// What a step records (the parameters come from the case's own random stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Filed,
    Accepted,
    Declined,
    Assigned { lead: bool, mediator: u16 },
    Recused { mediator: u16 },
    Session { n: u8 },
    Agreement,
    Terminated { reason: u8 },
    Transferred { from: u8, to: u8 },
    Judicial { status: u8 },
    FollowUp { n: u8 },
    Closed,
    Note { n: u8 },
}

#[derive(Clone, Copy, Debug)]
struct Step1 {
    kind: Kind,
    occurred_us: i64,
    recorded_us: i64,
}

struct CasePlan {
    id: Uuid,
    room: u8,
    year: i32,
    number: u32,
    category: u8,
    source: u8,
    seed: u64,
    steps: Vec<Step1>,
}

fn step_of(kind: Kind) -> Option<Step> {
    Some(match kind {
        Kind::Filed => return None,
        Kind::Accepted => Step::Accept,
        Kind::Declined => Step::Decline,
        Kind::Assigned { .. } => Step::AssignMediator,
        Kind::Recused { .. } => Step::RecuseMediator,
        Kind::Session { .. } => Step::RecordSession,
        Kind::Agreement => Step::Resolve,
        Kind::Terminated { .. } => Step::Terminate,
        Kind::Transferred { .. } => Step::Transfer,
        Kind::Judicial { .. } => Step::RecordJudicialConfirmation,
        Kind::FollowUp { .. } => Step::RecordFollowUp,
        Kind::Closed => Step::Close,
        Kind::Note { .. } => Step::AddNote,
    })
}

fn push(kinds: &mut Vec<(Kind, i64)>, k: Kind, delay: i64) {
    kinds.push((k, delay));
}

/// Builds one case's steps from its filing time; stops at the horizon.
fn plan_steps(rng: &mut Rng, filed_us: i64, room: u8, horizon_us: i64) -> Vec<Step1> {
    let mut kinds: Vec<(Kind, i64)> = Vec::with_capacity(16); // (kind, delay after previous)
    push(&mut kinds, Kind::Filed, 0);
    let mut notes = 0u8;
    let r = rng.below(100);
    let work = |rng: &mut Rng, lo_days: i64, hi_days: i64| {
        rng.range(lo_days * DAY, hi_days * DAY) + rng.range(0, 8 * HOUR)
    };
    if r < 3 {
        // Declined, then archived.
        push(&mut kinds, Kind::Declined, work(rng, 0, 4));
        if rng.pct(80) {
            push(&mut kinds, Kind::Closed, work(rng, 2, 15));
        }
    } else if r < 6 {
        // Withdrawn before acceptance.
        push(&mut kinds, Kind::Terminated { reason: 2 }, work(rng, 0, 6));
        if rng.pct(80) {
            push(&mut kinds, Kind::Closed, work(rng, 2, 15));
        }
    } else {
        let transfer = rng.pct(5);
        let mut current_room = room;
        let mut transfer_now = |rng: &mut Rng, kinds: &mut Vec<(Kind, i64)>| {
            let to = ((current_room as u64 + 1 + rng.below(29)) % 30) as u8;
            push(
                kinds,
                Kind::Transferred {
                    from: current_room,
                    to,
                },
                work(rng, 0, 5),
            );
            current_room = to;
        };
        if transfer && rng.pct(50) {
            transfer_now(rng, &mut kinds);
        }
        push(&mut kinds, Kind::Accepted, work(rng, 0, 4));
        if rng.pct(15) {
            notes += 1;
            push(&mut kinds, Kind::Note { n: notes }, work(rng, 0, 2));
        }
        if transfer
            && !kinds
                .iter()
                .any(|(k, _)| matches!(k, Kind::Transferred { .. }))
        {
            transfer_now(rng, &mut kinds);
        }
        let mut mediator = rng.below(400) as u16;
        push(
            &mut kinds,
            Kind::Assigned {
                lead: true,
                mediator,
            },
            work(rng, 0, 3),
        );
        if rng.pct(25) {
            let second = (mediator + 1 + rng.below(398) as u16) % 400;
            push(
                &mut kinds,
                Kind::Assigned {
                    lead: false,
                    mediator: second,
                },
                work(rng, 0, 2),
            );
        }
        if rng.pct(3) {
            push(&mut kinds, Kind::Recused { mediator }, work(rng, 0, 4));
            mediator = (mediator + 7) % 400;
            push(
                &mut kinds,
                Kind::Assigned {
                    lead: true,
                    mediator,
                },
                work(rng, 0, 3),
            );
        }
        let sessions = 1 + rng.below(4) as u8;
        for n in 1..=sessions {
            push(&mut kinds, Kind::Session { n }, work(rng, 2, 12));
            if rng.pct(20) {
                notes += 1;
                push(&mut kinds, Kind::Note { n: notes }, work(rng, 0, 3));
            }
        }
        if rng.pct(72) {
            push(&mut kinds, Kind::Agreement, work(rng, 0, 4));
            if rng.pct(25) {
                push(&mut kinds, Kind::Judicial { status: 0 }, work(rng, 1, 20));
                let decided = if rng.pct(90) { 1 } else { 2 };
                push(
                    &mut kinds,
                    Kind::Judicial { status: decided },
                    work(rng, 5, 30),
                );
            }
            let follow_ups = 1 + rng.below(2) as u8;
            for n in 1..=follow_ups {
                push(&mut kinds, Kind::FollowUp { n }, work(rng, 15, 45));
            }
            if rng.pct(85) {
                push(&mut kinds, Kind::Closed, work(rng, 5, 20));
            }
        } else {
            let reason = [0u8, 0, 1, 3][rng.below(4) as usize];
            push(&mut kinds, Kind::Terminated { reason }, work(rng, 0, 5));
            if rng.pct(85) {
                push(&mut kinds, Kind::Closed, work(rng, 3, 20));
            }
        }
    }
    let mut out = Vec::with_capacity(kinds.len());
    let mut at = filed_us;
    let mut rec = 0i64;
    for (kind, delay) in kinds {
        at += delay;
        // Recorded a little after the step (typed in afterwards), always later than the last.
        let recorded = (at + rng.range(US, 15 * MIN)).max(rec + 1);
        if recorded > horizon_us {
            break;
        }
        rec = recorded;
        out.push(Step1 {
            kind,
            occurred_us: at,
            recorded_us: recorded,
        });
    }
    out
}

const CATEGORIES: &[Category] = &[
    Category::Membership,
    Category::Governance,
    Category::Contract,
    Category::Labor,
    Category::IntellectualProperty,
    Category::Fees,
    Category::Commercial,
    Category::Tort,
    Category::Other,
];
const SOURCES: &[Source] = &[
    Source::PartyApplication,
    Source::OwnInitiative,
    Source::CourtReferral,
    Source::GovernmentReferral,
    Source::PoliceReferral,
    Source::OtherReferral,
];
const SURNAMES: &[&str] = &[
    "张", "李", "王", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "强", "磊", "洋", "艳", "勇", "军", "杰",
];
const FIRMS: &[&str] = &[
    "材料",
    "电子",
    "科技",
    "物流",
    "贸易",
    "建筑",
    "医疗器械",
    "食品",
];

fn person(rng: &mut Rng) -> String {
    format!(
        "{}{}{}",
        SURNAMES[rng.below(SURNAMES.len() as u64) as usize],
        GIVEN[rng.below(GIVEN.len() as u64) as usize],
        GIVEN[rng.below(GIVEN.len() as u64) as usize]
    )
}

/// A unified social credit code with a correct check character.
fn credit_code(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    const WEIGHTS: [u64; 17] = [
        1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
    ];
    let mut v: Vec<u64> = vec![9, 1, 4, 4, 0, 3, 0, 0];
    for _ in 0..9 {
        v.push(rng.below(31));
    }
    let sum: u64 = v.iter().zip(WEIGHTS).map(|(a, w)| a * w).sum();
    v.push((31 - sum % 31) % 31);
    v.iter().map(|i| ALPHABET[*i as usize] as char).collect()
}

fn dt(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).expect("a time in range")
}

fn room_id(i: u8) -> RoomId {
    RoomId::new(&format!("R{:02}", i + 1)).expect("a room id")
}

fn mediator_id(m: u16) -> String {
    format!("m-{:04}", m + 1)
}

/// The event of step `seq` (1-based) of a case.
fn event(case: &CasePlan, seq: usize) -> CaseEvent {
    let s = case.steps[seq - 1];
    let mut rng = Rng::new(case.seed ^ (seq as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let occurred_at = dt(s.occurred_us);
    match s.kind {
        Kind::Filed => {
            let n = rng.range(10_000_000, 99_999_999);
            let applicant = person(&mut rng);
            let mut parties = vec![Party::new(
                PartyRole::Applicant,
                PartyKind::Person,
                &applicant,
                None,
                Some(&format!("4403051990{n:08}")),
                Some(&format!("138{n:08}")),
                None,
            )
            .expect("a valid applicant")];
            let firm = format!(
                "深圳市{}{}有限公司",
                SURNAMES[rng.below(SURNAMES.len() as u64) as usize],
                FIRMS[rng.below(FIRMS.len() as u64) as usize]
            );
            let rep = person(&mut rng);
            parties.push(
                Party::new(
                    PartyRole::Respondent,
                    PartyKind::Organization,
                    &firm,
                    Some(&credit_code(&mut rng)),
                    None,
                    None,
                    Some(&rep),
                )
                .expect("a valid respondent"),
            );
            if rng.pct(10) {
                let third = person(&mut rng);
                parties.push(
                    Party::new(
                        PartyRole::ThirdParty,
                        PartyKind::Person,
                        &third,
                        None,
                        None,
                        None,
                        None,
                    )
                    .expect("a valid third party"),
                );
            }
            CaseEvent::CaseFiled {
                case_id: case.id,
                case_no: CaseNo::new(room_id(case.room), case.year, case.number)
                    .expect("a valid case number"),
                room_id: room_id(case.room),
                category: CATEGORIES[case.category as usize],
                source: SOURCES[case.source as usize],
                summary: format!(
                    "会员单位之间的{}纠纷：申请人{}称被申请人{}拖欠款项，经多次催告仍未支付。",
                    ["货款", "服务费", "租金", "工资", "会费"][rng.below(5) as usize],
                    applicant,
                    firm
                ),
                claims: rng
                    .pct(80)
                    .then(|| "请求被申请人支付拖欠款项及逾期利息。".to_string()),
                amount_in_dispute: rng.pct(85).then(|| {
                    Money::from_fen(rng.below(50_000_000) * 100 + rng.below(100))
                        .expect("an amount")
                }),
                industry: rng.pct(60).then(|| {
                    ["制造业", "电子信息", "物流", "建筑业", "商贸"][rng.below(5) as usize]
                        .to_string()
                }),
                parties,
                occurred_at,
            }
        }
        Kind::Accepted => CaseEvent::CaseAccepted {
            note: rng.pct(60).then(|| "材料齐全，予以受理".to_string()),
            occurred_at,
        },
        Kind::Declined => CaseEvent::CaseDeclined {
            reason: "不属于本调解室受理范围，已告知当事人向有关部门申请。".into(),
            occurred_at,
        },
        Kind::Assigned { lead, mediator } => CaseEvent::MediatorAssigned {
            mediator_id: mediator_id(mediator),
            name: Some(format!(
                "{}调解",
                SURNAMES[(mediator as usize) % SURNAMES.len()]
            )),
            lead,
            occurred_at,
        },
        Kind::Recused { mediator } => CaseEvent::MediatorRecused {
            mediator_id: mediator_id(mediator),
            reason: "与一方当事人存在利害关系，申请回避。".into(),
            occurred_at,
        },
        Kind::Session { n } => CaseEvent::SessionRecorded {
            summary: format!("第{n}次调解会议：双方陈述意见，核对金额，调解员提出方案。"),
            attendees: vec![person(&mut rng), person(&mut rng), "调解员".to_string()],
            occurred_at,
        },
        Kind::Agreement => CaseEvent::AgreementReached {
            agreement: if rng.pct(90) {
                AgreementKind::Written
            } else {
                AgreementKind::Oral
            },
            terms: "被申请人于三十日内分两期支付款项，申请人放弃利息请求。".into(),
            agreed_amount: rng
                .pct(80)
                .then(|| Money::from_fen(rng.below(30_000_000) * 100).expect("an amount")),
            performance_due: rng.pct(60).then(|| {
                let d = occurred_at.date_naive() + chrono::Duration::days(30);
                NaiveDate::from_ymd_opt(d.year(), d.month(), d.day()).expect("a date")
            }),
            occurred_at,
        },
        Kind::Terminated { reason } => {
            let reason = [
                TerminationReason::NoAgreement,
                TerminationReason::PartyRefused,
                TerminationReason::Withdrawn,
                TerminationReason::Referred,
            ][reason as usize];
            CaseEvent::MediationTerminated {
                reason,
                referred_to: (reason == TerminationReason::Referred).then(|| {
                    [
                        ReferralRoute::Court,
                        ReferralRoute::Arbitration,
                        ReferralRoute::Administrative,
                    ][rng.below(3) as usize]
                }),
                note: rng
                    .pct(50)
                    .then(|| "双方分歧较大，无法达成一致。".to_string()),
                occurred_at,
            }
        }
        Kind::Transferred { from, to } => CaseEvent::CaseTransferred {
            from_room_id: room_id(from),
            to_room_id: room_id(to),
            reason: "按属地管辖移交。".into(),
            occurred_at,
        },
        Kind::Judicial { status } => CaseEvent::JudicialConfirmationRecorded {
            status: [
                JudicialStatus::Requested,
                JudicialStatus::Confirmed,
                JudicialStatus::Rejected,
            ][status as usize],
            court: Some("深圳市福田区人民法院".into()),
            occurred_at,
        },
        Kind::FollowUp { n } => {
            let p = rng.below(100);
            CaseEvent::FollowUpRecorded {
                performance: if p < 75 {
                    Performance::Full
                } else if p < 95 {
                    Performance::Partial
                } else {
                    Performance::None
                },
                satisfaction: Some(3 + rng.below(3) as u8),
                note: Some(format!("第{n}次回访：电话联系当事人，确认履行情况。")),
                occurred_at,
            }
        }
        Kind::Closed => CaseEvent::CaseClosed {
            archive_no: rng
                .pct(90)
                .then(|| format!("归档-{}-{:05}", case.year, case.number)),
            occurred_at,
        },
        Kind::Note { n } => CaseEvent::NoteAdded {
            text: format!("第{n}条备注：电话联系当事人，确认进度。"),
            occurred_at,
        },
    }
}

fn metadata(case: &CasePlan, seq: usize) -> Value {
    let s = case.steps[seq - 1];
    let mut rng = Rng::new(case.seed ^ 0x5555 ^ (seq as u64) << 20);
    let (sub, role) = match s.kind {
        Kind::Filed | Kind::Accepted | Kind::Declined | Kind::Closed | Kind::Transferred { .. } => {
            (format!("ra-R{:02}", case.room + 1), "room_admin")
        }
        _ => (format!("m-{:04}", 1 + rng.below(400)), "mediator"),
    };
    let request_id = uuid::Builder::from_random_bytes(rng.next_u128().to_le_bytes()).into_uuid();
    serde_json::json!({"sub": sub, "role": role, "request_id": request_id.to_string()})
}

impl Rng {
    fn next_u128(&mut self) -> u128 {
        ((self.next() as u128) << 64) | self.next() as u128
    }
}

/// The plan of the whole log: the cases and the log order (recorded time).
pub struct Plan {
    cases: Vec<CasePlan>,
    order: Vec<(i64, u32, u16)>,
}

impl Plan {
    pub fn events(&self) -> usize {
        self.order.len()
    }
    pub fn cases(&self) -> usize {
        self.cases.len()
    }
    /// Cases per final status (for the report).
    pub fn status_counts(&self) -> Vec<(String, usize)> {
        let mut m: HashMap<&'static str, usize> = HashMap::new();
        for c in &self.cases {
            let mut s = CaseStatus::Filed;
            for st in &c.steps {
                if let Some(step) = step_of(st.kind) {
                    s = target(s, step).expect("checked when planned");
                }
            }
            *m.entry(s.as_str()).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }
}

/// Plans exactly `n` events (the last case may stop early), filings from 2025-01-01 (Shenzhen)
/// until a month before `horizon_us`.
pub fn plan(n: usize, horizon_us: i64) -> Plan {
    let start = DateTime::parse_from_rfc3339("2025-01-01T00:00:00+08:00")
        .expect("a date")
        .timestamp_micros();
    let last_filing = horizon_us - 30 * DAY;
    let mut rng = Rng::new(0x7469_616F_6A69_6521);
    let mut cases: Vec<CasePlan> = Vec::with_capacity(n / 9);
    let mut total = 0usize;
    while total < n {
        // A working day's hours in Shenzhen (01:00–10:00 UTC).
        let day = rng.range(0, (last_filing - start) / DAY);
        let filed = start + day * DAY + HOUR + rng.range(0, 9 * HOUR);
        let room = rng.below(30) as u8;
        let seed = rng.next();
        let mut case_rng = Rng::new(seed);
        let mut steps = plan_steps(&mut case_rng, filed, room, horizon_us);
        steps.truncate(n - total);
        // The plan must walk the domain's transition table.
        let mut status = CaseStatus::Filed;
        for s in &steps {
            if let Some(step) = step_of(s.kind) {
                status = target(status, step).unwrap_or_else(|| {
                    panic!("generated an invalid step {:?} from {status:?}", s.kind)
                });
            }
        }
        total += steps.len();
        cases.push(CasePlan {
            id: uuid::Builder::from_random_bytes(rng.next_u128().to_le_bytes()).into_uuid(),
            room,
            year: 0,
            number: 0,
            category: rng.below(CATEGORIES.len() as u64) as u8,
            source: rng.below(SOURCES.len() as u64) as u8,
            seed,
            steps,
        });
    }
    // Case numbers: per room and Shenzhen year, in filing order.
    let mut by_filing: Vec<usize> = (0..cases.len()).collect();
    by_filing.sort_by_key(|&i| (cases[i].steps[0].recorded_us, i));
    let mut series: HashMap<(u8, i32), u32> = HashMap::new();
    for i in by_filing {
        let c = &mut cases[i];
        let year = tiaojie_domain::shenzhen_year(dt(c.steps[0].occurred_us));
        let next = series.entry((c.room, year)).or_default();
        *next += 1;
        c.year = year;
        c.number = *next;
    }
    let mut order: Vec<(i64, u32, u16)> = Vec::with_capacity(n);
    for (i, c) in cases.iter().enumerate() {
        for (j, s) in c.steps.iter().enumerate() {
            order.push((s.recorded_us, i as u32, (j + 1) as u16));
        }
    }
    order.sort_unstable();
    Plan { cases, order }
}

/// The columns the events rows are written in.
pub const EVENT_COLUMNS: &str =
    "aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash";

/// One event, ready to chain: what the append path has in hand.
pub struct Ready {
    pub case_id: String,
    pub sequence: u64,
    pub event_type: &'static str,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: String,
}

impl Plan {
    /// The event at log index `i`, as the append path would have it.
    pub fn ready(&self, i: usize) -> Ready {
        let (rec, case, seq) = self.order[i];
        let c = &self.cases[case as usize];
        let ev = event(c, seq as usize);
        Ready {
            case_id: c.id.to_string(),
            sequence: seq as u64,
            event_type: ev.type_name(),
            payload: serde_json::to_value(&ev).expect("an event serializes"),
            metadata: metadata(c, seq as usize),
            recorded_at: tiaojie::store::repository::recorded_at_text(dt(rec)),
        }
    }

    /// Writes every event as COPY text rows (in log order) to `events`, then every case's head
    /// to `heads`. Returns the events written.
    pub fn write_copy(
        &self,
        events: &mut dyn Write,
        heads: &mut dyn Write,
    ) -> std::io::Result<usize> {
        let mut prev: Vec<Hash> = vec![chain::ZERO; self.cases.len()];
        let mut row: Vec<u8> = Vec::with_capacity(4096);
        let mut json = String::with_capacity(2048);
        for i in 0..self.order.len() {
            let case = self.order[i].1 as usize;
            let r = self.ready(i);
            let p = prev[case];
            // As chain_events in src/store/repository.rs: the hash, then the canonical texts.
            let hash = chain::event_hash(
                &p,
                &EventFields {
                    case_id: &r.case_id,
                    sequence: r.sequence,
                    event_type: r.event_type,
                    event_version: tiaojie_domain::events::EVENT_VERSION,
                    payload: &r.payload,
                    recorded_at: &r.recorded_at,
                    metadata: &r.metadata,
                },
            );
            row.clear();
            row.extend_from_slice(b"case\t");
            row.extend_from_slice(r.case_id.as_bytes());
            row.push(b'\t');
            row.extend_from_slice(r.sequence.to_string().as_bytes());
            row.push(b'\t');
            row.extend_from_slice(r.event_type.as_bytes());
            row.push(b'\t');
            row.extend_from_slice(tiaojie_domain::events::EVENT_VERSION.as_bytes());
            row.push(b'\t');
            json.clear();
            chain::canonical_json(&r.payload, &mut json);
            copy_text(&mut row, &json);
            row.push(b'\t');
            json.clear();
            chain::canonical_json(&r.metadata, &mut json);
            copy_text(&mut row, &json);
            row.push(b'\t');
            row.extend_from_slice(r.recorded_at.as_bytes());
            row.push(b'\t');
            row.extend_from_slice(chain::hex(&p).as_bytes());
            row.push(b'\t');
            row.extend_from_slice(chain::hex(&hash).as_bytes());
            row.push(b'\n');
            events.write_all(&row)?;
            prev[case] = hash;
        }
        events.flush()?;
        for (i, c) in self.cases.iter().enumerate() {
            writeln!(
                heads,
                "case\t{}\t{}\t{}",
                c.id,
                c.steps.len(),
                chain::hex(&prev[i])
            )?;
        }
        heads.flush()?;
        Ok(self.order.len())
    }
}
