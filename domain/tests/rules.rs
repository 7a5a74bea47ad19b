//! Proves the case rules of `tiaojie-domain`: every rule the `Case` aggregate enforces has a
//! given/when/then test named for it (cqrs-es `TestFramework`), every one of the 13 commands
//! records exactly its event on the happy path, the (status, step) → status matrix of API.md
//! ("Case lifecycle") is checked exhaustively against both `status::TRANSITIONS` and the
//! aggregate's behaviour, and `Case::apply` folds a whole case file correctly.
//!
//! Time is fixed (`Utc.with_ymd_and_hms`); no test reads the system clock.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::Aggregate;
use std::collections::HashSet;
use tiaojie_domain::aggregate::{JudicialConfirmation, CLOCK_SKEW_SECONDS};
use tiaojie_domain::status::{self, TRANSITIONS};
use tiaojie_domain::*;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const CREDIT_CODE: &str = "91350100M000100Y43";
const MEDIATOR: &str = "m-0001";
const OTHER_MEDIATOR: &str = "m-0002";

/// 2026-03-02 09:00 in Shenzhen.
fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap()
}

/// The `n`th hour after [`base`]: the time of the `n`th step in a built-up case.
fn hour(n: i64) -> DateTime<Utc> {
    base() + Duration::hours(n)
}

/// A step that happens at `at`, with the server's clock reading `at` too.
fn at(at: DateTime<Utc>) -> When {
    When::now(at)
}

fn case_id() -> Uuid {
    Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0001)
}

fn room(id: &str) -> RoomId {
    RoomId::new(id).unwrap()
}

fn case_no(room_id: &str, year: i32) -> CaseNo {
    CaseNo::new(room(room_id), year, 1).unwrap()
}

fn applicant() -> Party {
    Party::new(
        PartyRole::Applicant,
        PartyKind::Person,
        "张三",
        None,
        Some("440301199001011234"),
        Some("13812345678"),
        None,
    )
    .unwrap()
}

fn respondent() -> Party {
    Party::new(
        PartyRole::Respondent,
        PartyKind::Organization,
        "深圳市某某科技有限公司",
        Some(CREDIT_CODE),
        None,
        None,
        Some("李四"),
    )
    .unwrap()
}

/// A valid filing with room R01, numbered in 2026 (the fixtures' year).
fn filing() -> FileCase {
    FileCase {
        case_id: case_id(),
        case_no: case_no("R01", 2026),
        room_id: room("R01"),
        category: Category::Contract,
        source: Source::PartyApplication,
        summary: "货款纠纷".into(),
        claims: Some("支付货款 12500 元".into()),
        amount_in_dispute: Some(Money::from_fen(1_250_000).unwrap()),
        industry: Some("新一代电子信息".into()),
        parties: vec![applicant(), respondent()],
    }
}

fn file_command(f: FileCase, when: When) -> CaseCommand {
    CaseCommand::File {
        when,
        filing: Box::new(f),
    }
}

/// The event a valid filing records.
fn filed_event(f: FileCase, occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::CaseFiled {
        case_id: f.case_id,
        case_no: f.case_no,
        room_id: f.room_id,
        category: f.category,
        source: f.source,
        summary: f.summary,
        claims: f.claims,
        amount_in_dispute: f.amount_in_dispute,
        industry: f.industry,
        parties: f.parties,
        occurred_at,
    }
}

fn filed(occurred_at: DateTime<Utc>) -> CaseEvent {
    filed_event(filing(), occurred_at)
}

fn accepted(occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::CaseAccepted {
        note: None,
        occurred_at,
    }
}

fn declined(occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::CaseDeclined {
        reason: "不属于受理范围".into(),
        occurred_at,
    }
}

fn assigned(mediator_id: &str, lead: bool, occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::MediatorAssigned {
        mediator_id: mediator_id.into(),
        name: None,
        lead,
        occurred_at,
    }
}

fn recused(mediator_id: &str, occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::MediatorRecused {
        mediator_id: mediator_id.into(),
        reason: "与当事人有利害关系".into(),
        occurred_at,
    }
}

fn session(occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::SessionRecorded {
        summary: "第一次调解".into(),
        attendees: vec![],
        occurred_at,
    }
}

fn agreement(occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::AgreementReached {
        agreement: AgreementKind::Written,
        terms: "被申请人分两期支付货款".into(),
        agreed_amount: Some(Money::from_fen(1_000_000).unwrap()),
        performance_due: NaiveDate::from_ymd_opt(2026, 6, 30),
        occurred_at,
    }
}

fn terminated(reason: TerminationReason, occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::MediationTerminated {
        reason,
        referred_to: None,
        note: None,
        occurred_at,
    }
}

fn transferred(from: &str, to: &str, occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::CaseTransferred {
        from_room_id: room(from),
        to_room_id: room(to),
        reason: "属地管辖".into(),
        occurred_at,
    }
}

fn judicial(status: JudicialStatus, occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::JudicialConfirmationRecorded {
        status,
        court: None,
        occurred_at,
    }
}

fn follow_up(performance: Performance, occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::FollowUpRecorded {
        performance,
        satisfaction: None,
        note: None,
        occurred_at,
    }
}

fn closed(occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::CaseClosed {
        archive_no: None,
        occurred_at,
    }
}

fn note(occurred_at: DateTime<Utc>) -> CaseEvent {
    CaseEvent::NoteAdded {
        text: "当事人来电".into(),
        occurred_at,
    }
}

/// The events that bring a case to `status`, the `n`th event at [`hour`]`(n)`. Every case past
/// `accepted` on the mediation path has [`MEDIATOR`] assigned as lead.
fn case_in(status: CaseStatus) -> Vec<CaseEvent> {
    let path: &[fn(DateTime<Utc>) -> CaseEvent] = match status {
        CaseStatus::Filed => &[filed],
        CaseStatus::Accepted => &[filed, accepted],
        CaseStatus::Declined => &[filed, declined],
        CaseStatus::Assigned => &[filed, accepted, lead_assigned],
        CaseStatus::InMediation => &[filed, accepted, lead_assigned, session],
        CaseStatus::Resolved => &[filed, accepted, lead_assigned, session, agreement],
        CaseStatus::Terminated => &[filed, accepted, lead_assigned, session, no_agreement],
        CaseStatus::Closed => &[filed, accepted, lead_assigned, session, agreement, closed],
    };
    path.iter()
        .enumerate()
        .map(|(n, event)| event(hour(n as i64)))
        .collect()
}

fn lead_assigned(occurred_at: DateTime<Utc>) -> CaseEvent {
    assigned(MEDIATOR, true, occurred_at)
}

fn no_agreement(occurred_at: DateTime<Utc>) -> CaseEvent {
    terminated(TerminationReason::NoAgreement, occurred_at)
}

/// The time right after the last of `events`.
fn next(events: &[CaseEvent]) -> DateTime<Utc> {
    events.last().unwrap().occurred_at() + Duration::hours(1)
}

/// A case built up to `status`, and the time of the next step.
fn case_and_next(status: CaseStatus) -> (Vec<CaseEvent>, When) {
    let events = case_in(status);
    let when = at(next(&events));
    (events, when)
}

fn given(events: Vec<CaseEvent>) -> AggregateTestExecutor<Case> {
    TestFramework::<Case>::with(()).given(events)
}

fn fold(events: impl IntoIterator<Item = CaseEvent>) -> Case {
    let mut case = Case::default();
    for event in events {
        case.apply(event);
    }
    case
}

fn file_of(case: &Case) -> &CaseFile {
    case.file.as_ref().expect("the case is filed")
}

fn precondition(status: CaseStatus, step: Step, reason: &str) -> CaseError {
    CaseError::PreconditionUnmet {
        status,
        step,
        reason: reason.into(),
    }
}

/// A valid command for `step`: it succeeds whenever the transition table allows the step on a
/// case built by [`case_in`].
fn valid_command(step: Step, when: When) -> CaseCommand {
    match step {
        Step::Accept => CaseCommand::Accept {
            when,
            note: Some("材料齐全".into()),
        },
        Step::Decline => CaseCommand::Decline {
            when,
            reason: "不属于受理范围".into(),
        },
        Step::AssignMediator => CaseCommand::AssignMediator {
            when,
            mediator_id: OTHER_MEDIATOR.into(),
            name: Some("王调解员".into()),
            lead: None,
        },
        Step::RecuseMediator => CaseCommand::RecuseMediator {
            when,
            mediator_id: MEDIATOR.into(),
            reason: "与当事人有利害关系".into(),
        },
        Step::RecordSession => CaseCommand::RecordSession {
            when,
            summary: "双方到场陈述".into(),
            attendees: vec!["张三".into(), "李四".into()],
        },
        Step::Resolve => CaseCommand::Resolve {
            when,
            agreement: AgreementKind::Written,
            terms: "被申请人分两期支付货款".into(),
            agreed_amount: Some(Money::from_fen(1_000_000).unwrap()),
            performance_due: NaiveDate::from_ymd_opt(2026, 6, 30),
        },
        Step::Terminate => CaseCommand::Terminate {
            when,
            reason: TerminationReason::Withdrawn,
            referred_to: None,
            note: None,
        },
        Step::Transfer => CaseCommand::Transfer {
            when,
            to_room_id: room("R02"),
            reason: "属地管辖".into(),
        },
        Step::RecordJudicialConfirmation => CaseCommand::RecordJudicialConfirmation {
            when,
            status: JudicialStatus::Requested,
            court: Some("深圳市福田区人民法院".into()),
        },
        Step::RecordFollowUp => CaseCommand::RecordFollowUp {
            when,
            performance: Performance::Full,
            satisfaction: Some(5),
            note: None,
        },
        Step::Close => CaseCommand::Close {
            when,
            archive_no: Some("R01-2026-A-0001".into()),
        },
        Step::AddNote => CaseCommand::AddNote {
            when,
            text: "当事人来电".into(),
        },
    }
}

/// The event each step records.
fn event_type_of(step: Step) -> &'static str {
    match step {
        Step::Accept => "CaseAccepted",
        Step::Decline => "CaseDeclined",
        Step::AssignMediator => "MediatorAssigned",
        Step::RecuseMediator => "MediatorRecused",
        Step::RecordSession => "SessionRecorded",
        Step::Resolve => "AgreementReached",
        Step::Terminate => "MediationTerminated",
        Step::Transfer => "CaseTransferred",
        Step::RecordJudicialConfirmation => "JudicialConfirmationRecorded",
        Step::RecordFollowUp => "FollowUpRecorded",
        Step::Close => "CaseClosed",
        Step::AddNote => "NoteAdded",
    }
}

fn note_command(when: When, text: &str) -> CaseCommand {
    CaseCommand::AddNote {
        when,
        text: text.into(),
    }
}

fn assign_command(when: When, mediator_id: &str, lead: Option<bool>) -> CaseCommand {
    CaseCommand::AssignMediator {
        when,
        mediator_id: mediator_id.into(),
        name: None,
        lead,
    }
}

fn recuse_command(when: When, mediator_id: &str) -> CaseCommand {
    CaseCommand::RecuseMediator {
        when,
        mediator_id: mediator_id.into(),
        reason: "回避".into(),
    }
}

fn session_command(when: When) -> CaseCommand {
    CaseCommand::RecordSession {
        when,
        summary: "调解".into(),
        attendees: vec![],
    }
}

fn terminate_command(
    when: When,
    reason: TerminationReason,
    referred_to: Option<ReferralRoute>,
) -> CaseCommand {
    CaseCommand::Terminate {
        when,
        reason,
        referred_to,
        note: None,
    }
}

fn transfer_command(when: When, to: &str) -> CaseCommand {
    CaseCommand::Transfer {
        when,
        to_room_id: room(to),
        reason: "属地管辖".into(),
    }
}

fn judicial_command(when: When, status: JudicialStatus) -> CaseCommand {
    CaseCommand::RecordJudicialConfirmation {
        when,
        status,
        court: None,
    }
}

fn follow_up_command(when: When, satisfaction: Option<u8>) -> CaseCommand {
    CaseCommand::RecordFollowUp {
        when,
        performance: Performance::Partial,
        satisfaction,
        note: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The transition table, exhaustively
// ---------------------------------------------------------------------------------------------

#[test]
fn every_status_step_pair_follows_the_transition_table() {
    use CaseStatus::*;
    const NO: Option<CaseStatus> = None;
    const fn to(status: CaseStatus) -> Option<CaseStatus> {
        Some(status)
    }
    // The columns of the matrix below, in this order.
    const STEPS: [Step; 12] = [
        Step::Accept,
        Step::Decline,
        Step::AssignMediator,
        Step::RecuseMediator,
        Step::RecordSession,
        Step::Resolve,
        Step::Terminate,
        Step::Transfer,
        Step::RecordJudicialConfirmation,
        Step::RecordFollowUp,
        Step::Close,
        Step::AddNote,
    ];
    // API.md "Case lifecycle" written out (the status paragraph, plus the endpoint notes:
    // judicial confirmation and follow-ups on resolved cases, notes on any status but closed):
    // the status a step leads to, NO where it is refused.
    #[rustfmt::skip]
    let matrix: [(CaseStatus, [Option<CaseStatus>; 12]); 8] = [
        //             accept        decline       assign            recuse            session           resolve       terminate         transfer       judicial      follow-up     close       note
        (Filed,       [to(Accepted), to(Declined), NO,               NO,               NO,               NO,           to(Terminated),   to(Filed),     NO,           NO,           NO,         to(Filed)]),
        (Accepted,    [NO,           NO,           to(Assigned),     NO,               NO,               NO,           to(Terminated),   to(Accepted),  NO,           NO,           NO,         to(Accepted)]),
        (Declined,    [NO,           NO,           NO,               NO,               NO,               NO,           NO,               NO,            NO,           NO,           to(Closed), to(Declined)]),
        (Assigned,    [NO,           NO,           to(Assigned),     to(Assigned),     to(InMediation),  NO,           to(Terminated),   to(Assigned),  NO,           NO,           NO,         to(Assigned)]),
        (InMediation, [NO,           NO,           to(InMediation),  to(InMediation),  to(InMediation),  to(Resolved), to(Terminated),   NO,            NO,           NO,           NO,         to(InMediation)]),
        (Resolved,    [NO,           NO,           NO,               NO,               NO,               NO,           NO,               NO,            to(Resolved), to(Resolved), to(Closed), to(Resolved)]),
        (Terminated,  [NO,           NO,           NO,               NO,               NO,               NO,           NO,               NO,            NO,           NO,           to(Closed), to(Terminated)]),
        (Closed,      [NO,           NO,           NO,               NO,               NO,               NO,           NO,               NO,            NO,           NO,           NO,         NO]),
    ];

    // The matrix covers every status and every step exactly once.
    let rows: Vec<CaseStatus> = matrix.iter().map(|(s, _)| *s).collect();
    assert_eq!(rows.len(), CaseStatus::ALL.len());
    assert_eq!(
        rows.iter().collect::<HashSet<_>>(),
        CaseStatus::ALL.iter().collect::<HashSet<_>>()
    );
    assert_eq!(STEPS.len(), Step::ALL.len());
    assert_eq!(
        STEPS.iter().collect::<HashSet<_>>(),
        Step::ALL.iter().collect::<HashSet<_>>()
    );

    // The table in `status.rs` says exactly what the matrix says: no pair missing, none extra,
    // none listed twice.
    let expected = |from: CaseStatus, step: Step| -> Option<CaseStatus> {
        let (_, row) = matrix.iter().find(|(s, _)| *s == from).unwrap();
        row[STEPS.iter().position(|s| *s == step).unwrap()]
    };
    for (from, row) in &matrix {
        for (step, cell) in STEPS.iter().zip(row) {
            assert_eq!(
                status::target(*from, *step),
                *cell,
                "status::target({from}, {step:?})"
            );
        }
    }
    let allowed_cells = matrix
        .iter()
        .flat_map(|(_, row)| row.iter())
        .filter(|c| c.is_some())
        .count();
    assert_eq!(
        TRANSITIONS.len(),
        allowed_cells,
        "TRANSITIONS lists extra or missing pairs"
    );
    let mut seen = HashSet::new();
    for (from, step, to) in TRANSITIONS {
        assert!(
            seen.insert((*from, *step)),
            "({from}, {step:?}) listed twice"
        );
        assert_eq!(
            expected(*from, *step),
            Some(*to),
            "TRANSITIONS entry ({from}, {step:?})"
        );
    }

    // The aggregate obeys the matrix: a valid command succeeds with the target status exactly
    // when the matrix allows the step, and is refused as an invalid transition otherwise.
    for (from, row) in &matrix {
        let (events, when) = case_and_next(*from);
        assert_eq!(
            fold(events.clone()).status(),
            Some(*from),
            "case_in({from}) builds a case in that status"
        );
        for (step, cell) in STEPS.iter().zip(row) {
            let result = given(events.clone())
                .when(valid_command(*step, when))
                .inspect_result();
            match (cell, result) {
                (Some(to), Ok(recorded)) => {
                    assert_eq!(recorded.len(), 1, "{from} + {step:?} records one event");
                    assert_eq!(recorded[0].type_name(), event_type_of(*step));
                    let after = fold(events.iter().cloned().chain(recorded));
                    assert_eq!(after.status(), Some(*to), "{from} + {step:?}");
                }
                (None, Err(err)) => assert_eq!(
                    err,
                    CaseError::InvalidTransition {
                        status: *from,
                        step: *step,
                    },
                    "{from} + {step:?}"
                ),
                (Some(to), Err(err)) => {
                    panic!("{from} + {step:?} should lead to {to}, was refused: {err:?}")
                }
                (None, Ok(recorded)) => {
                    panic!("{from} + {step:?} should be refused, recorded {recorded:?}")
                }
            }
        }

        // A second filing of an existing case is refused whatever its status.
        given(events.clone())
            .when(file_command(filing(), when))
            .then_expect_error(CaseError::AlreadyFiled);
    }

    // No step applies to a case that was never filed.
    for step in STEPS {
        given(vec![])
            .when(valid_command(step, at(base())))
            .then_expect_error(CaseError::NotFiled);
    }
}

#[test]
fn invalid_transition_names_the_status_and_the_step() {
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events)
        .when(valid_command(Step::Resolve, when))
        .then_expect_error_message("cannot resolve a case that is assigned");
}

// ---------------------------------------------------------------------------------------------
// Happy paths: each command records exactly its event
// ---------------------------------------------------------------------------------------------

#[test]
fn filing_records_case_filed() {
    given(vec![])
        .when(file_command(filing(), at(base())))
        .then_expect_events(vec![filed(base())]);
}

#[test]
fn accepting_records_case_accepted() {
    let (events, when) = case_and_next(CaseStatus::Filed);
    given(events)
        .when(valid_command(Step::Accept, when))
        .then_expect_events(vec![CaseEvent::CaseAccepted {
            note: Some("材料齐全".into()),
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn declining_records_case_declined() {
    let (events, when) = case_and_next(CaseStatus::Filed);
    given(events)
        .when(valid_command(Step::Decline, when))
        .then_expect_events(vec![CaseEvent::CaseDeclined {
            reason: "不属于受理范围".into(),
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn assigning_records_mediator_assigned() {
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events)
        .when(valid_command(Step::AssignMediator, when))
        .then_expect_events(vec![CaseEvent::MediatorAssigned {
            mediator_id: OTHER_MEDIATOR.into(),
            name: Some("王调解员".into()),
            lead: false,
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn recusing_records_mediator_recused() {
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events)
        .when(valid_command(Step::RecuseMediator, when))
        .then_expect_events(vec![CaseEvent::MediatorRecused {
            mediator_id: MEDIATOR.into(),
            reason: "与当事人有利害关系".into(),
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn recording_a_session_records_session_recorded() {
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events)
        .when(valid_command(Step::RecordSession, when))
        .then_expect_events(vec![CaseEvent::SessionRecorded {
            summary: "双方到场陈述".into(),
            attendees: vec!["张三".into(), "李四".into()],
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn resolving_records_agreement_reached() {
    let (events, when) = case_and_next(CaseStatus::InMediation);
    given(events)
        .when(valid_command(Step::Resolve, when))
        .then_expect_events(vec![agreement(when.occurred_at)]);
}

#[test]
fn terminating_records_mediation_terminated() {
    let (events, when) = case_and_next(CaseStatus::InMediation);
    given(events)
        .when(CaseCommand::Terminate {
            when,
            reason: TerminationReason::Referred,
            referred_to: Some(ReferralRoute::Arbitration),
            note: Some("引导仲裁".into()),
        })
        .then_expect_events(vec![CaseEvent::MediationTerminated {
            reason: TerminationReason::Referred,
            referred_to: Some(ReferralRoute::Arbitration),
            note: Some("引导仲裁".into()),
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn transferring_records_case_transferred() {
    let (events, when) = case_and_next(CaseStatus::Accepted);
    given(events)
        .when(valid_command(Step::Transfer, when))
        .then_expect_events(vec![CaseEvent::CaseTransferred {
            from_room_id: room("R01"),
            to_room_id: room("R02"),
            reason: "属地管辖".into(),
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn recording_a_judicial_confirmation_records_judicial_confirmation_recorded() {
    let (events, when) = case_and_next(CaseStatus::Resolved);
    given(events)
        .when(valid_command(Step::RecordJudicialConfirmation, when))
        .then_expect_events(vec![CaseEvent::JudicialConfirmationRecorded {
            status: JudicialStatus::Requested,
            court: Some("深圳市福田区人民法院".into()),
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn recording_a_follow_up_records_follow_up_recorded() {
    let (events, when) = case_and_next(CaseStatus::Resolved);
    given(events)
        .when(valid_command(Step::RecordFollowUp, when))
        .then_expect_events(vec![CaseEvent::FollowUpRecorded {
            performance: Performance::Full,
            satisfaction: Some(5),
            note: None,
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn closing_records_case_closed() {
    let (events, when) = case_and_next(CaseStatus::Terminated);
    given(events)
        .when(valid_command(Step::Close, when))
        .then_expect_events(vec![CaseEvent::CaseClosed {
            archive_no: Some("R01-2026-A-0001".into()),
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn adding_a_note_records_note_added() {
    let (events, when) = case_and_next(CaseStatus::Declined);
    given(events)
        .when(valid_command(Step::AddNote, when))
        .then_expect_events(vec![note(when.occurred_at)]);
}

// ---------------------------------------------------------------------------------------------
// Filing
// ---------------------------------------------------------------------------------------------

#[test]
fn filing_requires_an_applicant_and_a_respondent() {
    let mut no_applicant = filing();
    no_applicant.parties = vec![respondent()];
    given(vec![])
        .when(file_command(no_applicant, at(base())))
        .then_expect_error(CaseError::invalid(
            "parties",
            "must include at least one applicant",
        ));

    let mut no_respondent = filing();
    no_respondent.parties = vec![applicant(), applicant()];
    given(vec![])
        .when(file_command(no_respondent, at(base())))
        .then_expect_error(CaseError::invalid(
            "parties",
            "must include at least one respondent",
        ));

    let mut third_party_only = filing();
    third_party_only.parties = vec![Party::new(
        PartyRole::ThirdParty,
        PartyKind::Person,
        "王五",
        None,
        None,
        None,
        None,
    )
    .unwrap()];
    given(vec![])
        .when(file_command(third_party_only, at(base())))
        .then_expect_error(CaseError::invalid(
            "parties",
            "must include at least one applicant",
        ));
}

#[test]
fn filing_accepts_at_most_50_parties() {
    let mut fifty = filing();
    fifty.parties = std::iter::once(applicant())
        .chain(std::iter::repeat_n(respondent(), 49))
        .collect();
    given(vec![])
        .when(file_command(fifty.clone(), at(base())))
        .then_expect_events(vec![filed_event(fifty, base())]);

    let mut fifty_one = filing();
    fifty_one.parties = std::iter::once(applicant())
        .chain(std::iter::repeat_n(respondent(), 50))
        .collect();
    given(vec![])
        .when(file_command(fifty_one, at(base())))
        .then_expect_error(CaseError::invalid("parties", "at most 50 parties"));
}

#[test]
fn case_no_must_match_room_and_year() {
    let refused = CaseError::invalid("case_no", "must be numbered in the filing room and year");

    let mut other_room = filing();
    other_room.case_no = case_no("R02", 2026);
    given(vec![])
        .when(file_command(other_room, at(base())))
        .then_expect_error(refused.clone());

    let mut other_year = filing();
    other_year.case_no = case_no("R01", 2025);
    given(vec![])
        .when(file_command(other_year, at(base())))
        .then_expect_error(refused.clone());

    // The year is Shenzhen's (UTC+8): 17:00 UTC on 31 December is already 1 January there.
    let new_year_in_shenzhen = Utc.with_ymd_and_hms(2026, 12, 31, 17, 0, 0).unwrap();
    let mut numbered_2027 = filing();
    numbered_2027.case_no = case_no("R01", 2027);
    given(vec![])
        .when(file_command(
            numbered_2027.clone(),
            at(new_year_in_shenzhen),
        ))
        .then_expect_events(vec![filed_event(
            numbered_2027.clone(),
            new_year_in_shenzhen,
        )]);
    let numbered_2026 = filing(); // the UTC year
    given(vec![])
        .when(file_command(
            numbered_2026.clone(),
            at(new_year_in_shenzhen),
        ))
        .then_expect_error(refused.clone());

    // Midnight in Shenzhen is 16:00 UTC: one second before, it is still 2026 there.
    let last_second_of_2026 = Utc.with_ymd_and_hms(2026, 12, 31, 15, 59, 59).unwrap();
    given(vec![])
        .when(file_command(numbered_2026, at(last_second_of_2026)))
        .then_expect_events(vec![filed(last_second_of_2026)]);
    given(vec![])
        .when(file_command(numbered_2027, at(last_second_of_2026)))
        .then_expect_error(refused);
}

#[test]
fn empty_summary_is_refused() {
    for blank in ["", "   ", "\n\t "] {
        let mut f = filing();
        f.summary = blank.into();
        given(vec![])
            .when(file_command(f, at(base())))
            .then_expect_error(CaseError::invalid("summary", "must not be empty"));
    }
}

#[test]
fn optional_filing_texts_are_checked_when_given() {
    let mut empty_claims = filing();
    empty_claims.claims = Some(" ".into());
    given(vec![])
        .when(file_command(empty_claims, at(base())))
        .then_expect_error(CaseError::invalid("claims", "must not be empty"));

    let mut long_industry = filing();
    long_industry.industry = Some("业".repeat(101));
    given(vec![])
        .when(file_command(long_industry, at(base())))
        .then_expect_error(CaseError::invalid(
            "industry",
            "must be at most 100 characters",
        ));

    let mut none_given = filing();
    none_given.claims = None;
    none_given.industry = None;
    none_given.amount_in_dispute = None;
    given(vec![])
        .when(file_command(none_given.clone(), at(base())))
        .then_expect_events(vec![filed_event(none_given, base())]);
}

#[test]
fn free_text_is_trimmed() {
    let mut padded = filing();
    padded.summary = "  货款纠纷\n ".into();
    given(vec![])
        .when(file_command(padded, at(base())))
        .then_expect_events(vec![filed(base())]);

    let (events, when) = case_and_next(CaseStatus::Filed);
    given(events)
        .when(note_command(when, "\t当事人来电  "))
        .then_expect_events(vec![note(when.occurred_at)]);
}

#[test]
fn free_text_length_counts_characters_not_bytes() {
    // 2000 Chinese characters are 6000 bytes of UTF-8 and still a valid summary.
    let mut longest = filing();
    longest.summary = "调".repeat(2000);
    given(vec![])
        .when(file_command(longest.clone(), at(base())))
        .then_expect_events(vec![filed_event(longest, base())]);

    let mut too_long = filing();
    too_long.summary = "调".repeat(2001);
    given(vec![])
        .when(file_command(too_long, at(base())))
        .then_expect_error(CaseError::invalid(
            "summary",
            "must be at most 2000 characters",
        ));
}

#[test]
fn control_characters_are_refused_in_free_text() {
    let mut f = filing();
    f.summary = "货款\u{0}纠纷".into();
    given(vec![])
        .when(file_command(f, at(base())))
        .then_expect_error(CaseError::invalid(
            "summary",
            "must not contain control characters",
        ));

    // Line breaks and tabs are text, not control characters.
    let mut multiline = filing();
    multiline.summary = "第一行\r\n第二行\t完".into();
    given(vec![])
        .when(file_command(multiline.clone(), at(base())))
        .then_expect_events(vec![filed_event(multiline, base())]);
}

#[test]
fn a_case_is_filed_only_once() {
    given(vec![filed(base())])
        .when(file_command(filing(), at(hour(1))))
        .then_expect_error(CaseError::AlreadyFiled);
}

#[test]
fn steps_on_a_never_filed_case_are_refused() {
    given(vec![])
        .when(note_command(at(base()), "无此案"))
        .then_expect_error(CaseError::NotFiled);
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

#[test]
fn occurred_at_may_not_be_in_the_future() {
    let future = CaseError::invalid("occurred_at", "must not be in the future");
    let now = hour(5);
    let skew = Duration::seconds(CLOCK_SKEW_SECONDS);
    let step_at = |occurred_at| When { occurred_at, now };

    // A step: a caller's clock may run up to the allowed skew ahead of the server's.
    given(case_in(CaseStatus::Filed))
        .when(note_command(step_at(now + skew), "稍快的时钟"))
        .then_expect_events(vec![CaseEvent::NoteAdded {
            text: "稍快的时钟".into(),
            occurred_at: now + skew,
        }]);
    given(case_in(CaseStatus::Filed))
        .when(note_command(
            step_at(now + skew + Duration::seconds(1)),
            "未来",
        ))
        .then_expect_error(future.clone());

    // The filing too.
    given(vec![])
        .when(file_command(
            filing(),
            step_at(now + skew + Duration::seconds(1)),
        ))
        .then_expect_error(future.clone());
    given(vec![])
        .when(file_command(filing(), step_at(now + skew)))
        .then_expect_events(vec![filed(now + skew)]);

    // A step dated in the past is fine.
    given(case_in(CaseStatus::Filed))
        .when(note_command(step_at(hour(1)), "补记"))
        .then_expect_events(vec![CaseEvent::NoteAdded {
            text: "补记".into(),
            occurred_at: hour(1),
        }]);
}

#[test]
fn occurred_at_may_not_precede_the_previous_step() {
    let events = case_in(CaseStatus::Accepted);
    let previous = events.last().unwrap().occurred_at();
    let now = previous + Duration::days(1);

    given(events.clone())
        .when(note_command(
            When {
                occurred_at: previous - Duration::seconds(1),
                now,
            },
            "倒签",
        ))
        .then_expect_error(CaseError::invalid(
            "occurred_at",
            format!(
                "must not be before the case's previous step ({})",
                previous.to_rfc3339()
            ),
        ));

    // The same instant as the previous step is not before it.
    given(events)
        .when(note_command(
            When {
                occurred_at: previous,
                now,
            },
            "同时",
        ))
        .then_expect_events(vec![CaseEvent::NoteAdded {
            text: "同时".into(),
            occurred_at: previous,
        }]);
}

// ---------------------------------------------------------------------------------------------
// Accept, decline, notes, close
// ---------------------------------------------------------------------------------------------

#[test]
fn decline_needs_a_reason() {
    let (events, when) = case_and_next(CaseStatus::Filed);
    given(events)
        .when(CaseCommand::Decline {
            when,
            reason: " ".into(),
        })
        .then_expect_error(CaseError::invalid("reason", "must not be empty"));
}

#[test]
fn an_optional_text_given_must_not_be_empty() {
    let (events, when) = case_and_next(CaseStatus::Filed);
    given(events.clone())
        .when(CaseCommand::Accept {
            when,
            note: Some("  ".into()),
        })
        .then_expect_error(CaseError::invalid("note", "must not be empty"));
    given(events)
        .when(CaseCommand::Accept { when, note: None })
        .then_expect_events(vec![accepted(when.occurred_at)]);
}

#[test]
fn empty_note_is_refused() {
    let (events, when) = case_and_next(CaseStatus::InMediation);
    given(events)
        .when(note_command(when, ""))
        .then_expect_error(CaseError::invalid("text", "must not be empty"));
}

#[test]
fn closed_case_accepts_nothing() {
    let (events, when) = case_and_next(CaseStatus::Closed);
    for step in Step::ALL {
        given(events.clone())
            .when(valid_command(step, when))
            .then_expect_error(CaseError::InvalidTransition {
                status: CaseStatus::Closed,
                step,
            });
    }
    given(events)
        .when(file_command(filing(), when))
        .then_expect_error(CaseError::AlreadyFiled);
}

#[test]
fn archive_no_is_at_most_64_characters() {
    let (events, when) = case_and_next(CaseStatus::Declined);
    given(events.clone())
        .when(CaseCommand::Close {
            when,
            archive_no: Some("A".repeat(65)),
        })
        .then_expect_error(CaseError::invalid(
            "archive_no",
            "must be at most 64 characters",
        ));
    given(events)
        .when(CaseCommand::Close {
            when,
            archive_no: None,
        })
        .then_expect_events(vec![closed(when.occurred_at)]);
}

// ---------------------------------------------------------------------------------------------
// Mediators
// ---------------------------------------------------------------------------------------------

#[test]
fn first_mediator_leads_by_default() {
    let (events, when) = case_and_next(CaseStatus::Accepted);
    given(events.clone())
        .when(assign_command(when, MEDIATOR, None))
        .then_expect_events(vec![assigned(MEDIATOR, true, when.occurred_at)]);

    // The next one does not, unless told to.
    let mut with_lead = events.clone();
    with_lead.push(assigned(MEDIATOR, true, when.occurred_at));
    given(with_lead)
        .when(assign_command(when, OTHER_MEDIATOR, None))
        .then_expect_events(vec![assigned(OTHER_MEDIATOR, false, when.occurred_at)]);

    // The first may be told not to lead.
    given(events)
        .when(assign_command(when, MEDIATOR, Some(false)))
        .then_expect_events(vec![assigned(MEDIATOR, false, when.occurred_at)]);
}

#[test]
fn a_mediator_assigned_after_the_lead_left_leads_by_default() {
    let mut events = case_in(CaseStatus::Assigned);
    events.push(assigned(OTHER_MEDIATOR, false, next(&events)));
    events.push(recused(MEDIATOR, next(&events)));
    let when = at(next(&events));
    given(events)
        .when(assign_command(when, "m-0003", None))
        .then_expect_events(vec![assigned("m-0003", true, when.occurred_at)]);
}

#[test]
fn assigning_a_lead_moves_the_lead() {
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events.clone())
        .when(assign_command(when, OTHER_MEDIATOR, Some(true)))
        .then_expect_events(vec![assigned(OTHER_MEDIATOR, true, when.occurred_at)]);

    let case = fold(
        events
            .into_iter()
            .chain([assigned(OTHER_MEDIATOR, true, when.occurred_at)]),
    );
    let leads: Vec<(&str, bool)> = file_of(&case)
        .mediators
        .iter()
        .map(|m| (m.mediator_id.as_str(), m.lead))
        .collect();
    assert_eq!(leads, vec![(MEDIATOR, false), (OTHER_MEDIATOR, true)]);
}

#[test]
fn assigning_an_assigned_mediator_is_refused() {
    let (events, when) = case_and_next(CaseStatus::InMediation);
    given(events)
        .when(assign_command(when, MEDIATOR, None))
        .then_expect_error(precondition(
            CaseStatus::InMediation,
            Step::AssignMediator,
            "mediator m-0001 is already assigned",
        ));
}

#[test]
fn a_recused_mediator_may_be_assigned_again() {
    let mut events = case_in(CaseStatus::Assigned);
    events.push(recused(MEDIATOR, next(&events)));
    let when = at(next(&events));
    given(events)
        .when(assign_command(when, MEDIATOR, None))
        .then_expect_events(vec![assigned(MEDIATOR, true, when.occurred_at)]);
}

#[test]
fn mediator_id_is_1_to_64_characters_without_spaces() {
    let (events, when) = case_and_next(CaseStatus::Accepted);
    let refused = CaseError::invalid("mediator_id", "must be 1–64 characters without spaces");
    for bad in [
        String::new(),
        "m 0001".into(),
        "m-0001\n".into(),
        "m".repeat(65),
    ] {
        given(events.clone())
            .when(assign_command(when, &bad, None))
            .then_expect_error(refused.clone());
    }
    let longest = "m".repeat(64);
    given(events)
        .when(assign_command(when, &longest, None))
        .then_expect_events(vec![assigned(&longest, true, when.occurred_at)]);
}

#[test]
fn recusing_an_unassigned_mediator_is_refused() {
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events)
        .when(recuse_command(when, OTHER_MEDIATOR))
        .then_expect_error(precondition(
            CaseStatus::Assigned,
            Step::RecuseMediator,
            "mediator m-0002 is not assigned to the case",
        ));

    // Nor can a mediator step aside twice.
    let mut events = case_in(CaseStatus::InMediation);
    events.push(recused(MEDIATOR, next(&events)));
    let when = at(next(&events));
    given(events)
        .when(recuse_command(when, MEDIATOR))
        .then_expect_error(precondition(
            CaseStatus::InMediation,
            Step::RecuseMediator,
            "mediator m-0001 is not assigned to the case",
        ));
}

#[test]
fn recused_mediator_leaves_the_case() {
    let mut events = case_in(CaseStatus::Assigned);
    events.push(assigned(OTHER_MEDIATOR, false, next(&events)));
    let when = at(next(&events));
    given(events.clone())
        .when(recuse_command(when, MEDIATOR))
        .then_expect_events(vec![CaseEvent::MediatorRecused {
            mediator_id: MEDIATOR.into(),
            reason: "回避".into(),
            occurred_at: when.occurred_at,
        }]);

    let case = fold(
        events
            .into_iter()
            .chain([recused(MEDIATOR, when.occurred_at)]),
    );
    let file = file_of(&case);
    let ids: Vec<&str> = file
        .mediators
        .iter()
        .map(|m| m.mediator_id.as_str())
        .collect();
    assert_eq!(ids, vec![OTHER_MEDIATOR]);
    assert_eq!(
        file.status,
        CaseStatus::Assigned,
        "recusal keeps the status"
    );
}

#[test]
fn recusal_needs_a_reason() {
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events)
        .when(CaseCommand::RecuseMediator {
            when,
            mediator_id: MEDIATOR.into(),
            reason: String::new(),
        })
        .then_expect_error(CaseError::invalid("reason", "must not be empty"));
}

// ---------------------------------------------------------------------------------------------
// Sessions and agreement
// ---------------------------------------------------------------------------------------------

#[test]
fn session_requires_an_assigned_mediator() {
    // Before any mediator is assigned the step is not open at all.
    let (events, when) = case_and_next(CaseStatus::Accepted);
    given(events)
        .when(session_command(when))
        .then_expect_error(CaseError::InvalidTransition {
            status: CaseStatus::Accepted,
            step: Step::RecordSession,
        });

    // Once every assigned mediator stepped aside, none is left to hold a session.
    for status in [CaseStatus::Assigned, CaseStatus::InMediation] {
        let mut events = case_in(status);
        events.push(recused(MEDIATOR, next(&events)));
        let when = at(next(&events));
        given(events)
            .when(session_command(when))
            .then_expect_error(precondition(
                status,
                Step::RecordSession,
                "a session needs at least one assigned mediator",
            ));
    }
}

#[test]
fn session_attendees_are_at_most_50_named_people() {
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events.clone())
        .when(CaseCommand::RecordSession {
            when,
            summary: "调解".into(),
            attendees: vec!["张三".into(); 51],
        })
        .then_expect_error(CaseError::invalid("attendees", "at most 50 attendees"));
    given(events.clone())
        .when(CaseCommand::RecordSession {
            when,
            summary: "调解".into(),
            attendees: vec!["张三".into(), " ".into()],
        })
        .then_expect_error(CaseError::invalid("attendees[1]", "must not be empty"));
    given(events)
        .when(CaseCommand::RecordSession {
            when,
            summary: "调解".into(),
            attendees: vec![" 张三 ".into(); 50],
        })
        .then_expect_events(vec![CaseEvent::SessionRecorded {
            summary: "调解".into(),
            attendees: vec!["张三".into(); 50],
            occurred_at: when.occurred_at,
        }]);
}

#[test]
fn empty_session_summary_is_refused() {
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events)
        .when(CaseCommand::RecordSession {
            when,
            summary: "\n".into(),
            attendees: vec![],
        })
        .then_expect_error(CaseError::invalid("summary", "must not be empty"));
}

#[test]
fn resolve_requires_a_session() {
    // An assigned case has had no session: resolving it is refused.
    let (events, when) = case_and_next(CaseStatus::Assigned);
    given(events)
        .when(valid_command(Step::Resolve, when))
        .then_expect_error(CaseError::InvalidTransition {
            status: CaseStatus::Assigned,
            step: Step::Resolve,
        });
    // After one session it may be resolved.
    let (events, when) = case_and_next(CaseStatus::InMediation);
    given(events)
        .when(valid_command(Step::Resolve, when))
        .then_expect_events(vec![agreement(when.occurred_at)]);
}

#[test]
fn resolve_requires_an_assigned_mediator() {
    let mut events = case_in(CaseStatus::InMediation);
    events.push(recused(MEDIATOR, next(&events)));
    let when = at(next(&events));
    given(events)
        .when(valid_command(Step::Resolve, when))
        .then_expect_error(precondition(
            CaseStatus::InMediation,
            Step::Resolve,
            "an agreement needs at least one assigned mediator",
        ));
}

#[test]
fn agreement_needs_terms() {
    let (events, when) = case_and_next(CaseStatus::InMediation);
    given(events)
        .when(CaseCommand::Resolve {
            when,
            agreement: AgreementKind::Oral,
            terms: " ".into(),
            agreed_amount: None,
            performance_due: None,
        })
        .then_expect_error(CaseError::invalid("terms", "must not be empty"));
}

// ---------------------------------------------------------------------------------------------
// Termination
// ---------------------------------------------------------------------------------------------

#[test]
fn early_termination_only_when_withdrawn_or_party_refused() {
    use TerminationReason::*;
    for status in [CaseStatus::Filed, CaseStatus::Accepted] {
        let (events, when) = case_and_next(status);
        for reason in [Withdrawn, PartyRefused] {
            given(events.clone())
                .when(terminate_command(when, reason, None))
                .then_expect_events(vec![terminated(reason, when.occurred_at)]);
        }
        for (reason, referred_to) in [(NoAgreement, None), (Referred, Some(ReferralRoute::Court))] {
            given(events.clone())
                .when(terminate_command(when, reason, referred_to))
                .then_expect_error(precondition(
                    status,
                    Step::Terminate,
                    "before mediation starts a case ends only when withdrawn or a party refuses",
                ));
        }
    }
    // Once a mediator is on the case, mediation may end for any reason.
    for status in [CaseStatus::Assigned, CaseStatus::InMediation] {
        let (events, when) = case_and_next(status);
        given(events)
            .when(terminate_command(when, NoAgreement, None))
            .then_expect_events(vec![terminated(NoAgreement, when.occurred_at)]);
    }
}

#[test]
fn referred_termination_needs_referred_to() {
    let (events, when) = case_and_next(CaseStatus::InMediation);
    given(events.clone())
        .when(terminate_command(when, TerminationReason::Referred, None))
        .then_expect_error(CaseError::invalid(
            "referred_to",
            "is required when the reason is referred",
        ));
    for route in ReferralRoute::ALL {
        given(events.clone())
            .when(terminate_command(
                when,
                TerminationReason::Referred,
                Some(*route),
            ))
            .then_expect_events(vec![CaseEvent::MediationTerminated {
                reason: TerminationReason::Referred,
                referred_to: Some(*route),
                note: None,
                occurred_at: when.occurred_at,
            }]);
    }
}

#[test]
fn referred_to_only_with_the_reason_referred() {
    let (events, when) = case_and_next(CaseStatus::InMediation);
    for reason in [
        TerminationReason::NoAgreement,
        TerminationReason::PartyRefused,
        TerminationReason::Withdrawn,
    ] {
        given(events.clone())
            .when(terminate_command(when, reason, Some(ReferralRoute::Court)))
            .then_expect_error(CaseError::invalid(
                "referred_to",
                "is only allowed when the reason is referred",
            ));
    }
}

// ---------------------------------------------------------------------------------------------
// Transfer
// ---------------------------------------------------------------------------------------------

#[test]
fn transfer_keeps_status_and_changes_room() {
    for status in [
        CaseStatus::Filed,
        CaseStatus::Accepted,
        CaseStatus::Assigned,
    ] {
        let (events, when) = case_and_next(status);
        let expected = transferred("R01", "R02", when.occurred_at);
        given(events.clone())
            .when(transfer_command(when, "R02"))
            .then_expect_events(vec![expected.clone()]);

        let before = fold(events.clone());
        let after = fold(events.into_iter().chain([expected]));
        let (before, after) = (file_of(&before), file_of(&after));
        assert_eq!(after.status, status, "transfer keeps the status");
        assert_eq!(after.room_id, room("R02"), "transfer changes the room");
        assert_eq!(after.case_no, before.case_no, "the case keeps its number");
        assert_eq!(after.mediators, before.mediators);
    }
}

#[test]
fn transfer_names_the_room_the_case_is_in_now() {
    let mut events = case_in(CaseStatus::Accepted);
    events.push(transferred("R01", "R02", next(&events)));
    let when = at(next(&events));
    // Back to the first room is a real move; from_room_id is the current room.
    given(events.clone())
        .when(transfer_command(when, "R01"))
        .then_expect_events(vec![transferred("R02", "R01", when.occurred_at)]);
    given(events)
        .when(transfer_command(when, "R02"))
        .then_expect_error(CaseError::invalid(
            "to_room_id",
            "is the room the case is already in",
        ));
}

#[test]
fn transfer_to_the_same_room_is_refused() {
    let (events, when) = case_and_next(CaseStatus::Filed);
    given(events)
        .when(transfer_command(when, "R01"))
        .then_expect_error(CaseError::invalid(
            "to_room_id",
            "is the room the case is already in",
        ));
}

#[test]
fn transfer_needs_a_reason() {
    let (events, when) = case_and_next(CaseStatus::Filed);
    given(events)
        .when(CaseCommand::Transfer {
            when,
            to_room_id: room("R02"),
            reason: "".into(),
        })
        .then_expect_error(CaseError::invalid("reason", "must not be empty"));
}

// ---------------------------------------------------------------------------------------------
// Judicial confirmation and follow-ups
// ---------------------------------------------------------------------------------------------

#[test]
fn judicial_confirmation_within_30_days() {
    let events = case_in(CaseStatus::Resolved);
    let reached_at = events.last().unwrap().occurred_at();
    let deadline = reached_at + Duration::days(30);

    given(events.clone())
        .when(judicial_command(at(deadline), JudicialStatus::Requested))
        .then_expect_events(vec![judicial(JudicialStatus::Requested, deadline)]);

    given(events.clone())
        .when(judicial_command(
            at(deadline + Duration::seconds(1)),
            JudicialStatus::Requested,
        ))
        .then_expect_error(precondition(
            CaseStatus::Resolved,
            Step::RecordJudicialConfirmation,
            "judicial confirmation must be requested within 30 days of the agreement",
        ));

    // The window runs from the agreement, not from later steps such as a follow-up.
    let mut with_follow_up = events;
    with_follow_up.push(follow_up(Performance::Partial, deadline));
    given(with_follow_up)
        .when(judicial_command(
            at(deadline + Duration::hours(1)),
            JudicialStatus::Requested,
        ))
        .then_expect_error(precondition(
            CaseStatus::Resolved,
            Step::RecordJudicialConfirmation,
            "judicial confirmation must be requested within 30 days of the agreement",
        ));
}

#[test]
fn court_decides_only_on_a_pending_request() {
    let not_pending = precondition(
        CaseStatus::Resolved,
        Step::RecordJudicialConfirmation,
        "a court decides only on a pending request",
    );
    let resolved = case_in(CaseStatus::Resolved);
    let when = at(next(&resolved));

    for decision in [JudicialStatus::Confirmed, JudicialStatus::Rejected] {
        // No request yet.
        given(resolved.clone())
            .when(judicial_command(when, decision))
            .then_expect_error(not_pending.clone());

        // A pending request: the court decides, even after the 30-day request window.
        let mut requested = resolved.clone();
        requested.push(judicial(JudicialStatus::Requested, next(&requested)));
        let later = at(next(&requested) + Duration::days(60));
        given(requested.clone())
            .when(judicial_command(later, decision))
            .then_expect_events(vec![judicial(decision, later.occurred_at)]);

        // Already decided.
        let mut decided = requested;
        decided.push(judicial(decision, next(&decided)));
        let when = at(next(&decided));
        for again in [JudicialStatus::Confirmed, JudicialStatus::Rejected] {
            given(decided.clone())
                .when(judicial_command(when, again))
                .then_expect_error(not_pending.clone());
        }
    }
}

#[test]
fn judicial_confirmation_is_requested_only_once() {
    let already = precondition(
        CaseStatus::Resolved,
        Step::RecordJudicialConfirmation,
        "judicial confirmation was already requested",
    );
    let mut events = case_in(CaseStatus::Resolved);
    events.push(judicial(JudicialStatus::Requested, next(&events)));
    for history in [
        vec![],
        vec![JudicialStatus::Confirmed],
        vec![JudicialStatus::Rejected],
    ] {
        let mut events = events.clone();
        for status in history {
            events.push(judicial(status, next(&events)));
        }
        let when = at(next(&events));
        given(events)
            .when(judicial_command(when, JudicialStatus::Requested))
            .then_expect_error(already.clone());
    }
}

#[test]
fn satisfaction_is_1_to_5() {
    let (events, when) = case_and_next(CaseStatus::Resolved);
    for bad in [0, 6, u8::MAX] {
        given(events.clone())
            .when(follow_up_command(when, Some(bad)))
            .then_expect_error(CaseError::invalid("satisfaction", "must be 1 to 5"));
    }
    for good in [None, Some(1), Some(3), Some(5)] {
        given(events.clone())
            .when(follow_up_command(when, good))
            .then_expect_events(vec![CaseEvent::FollowUpRecorded {
                performance: Performance::Partial,
                satisfaction: good,
                note: None,
                occurred_at: when.occurred_at,
            }]);
    }
}

// ---------------------------------------------------------------------------------------------
// Values used by the filing
// ---------------------------------------------------------------------------------------------

#[test]
fn only_organisations_have_a_credit_code() {
    let person_with_code = Party::new(
        PartyRole::Applicant,
        PartyKind::Person,
        "张三",
        Some(CREDIT_CODE),
        None,
        None,
        None,
    );
    assert_eq!(
        person_with_code,
        Err(CaseError::invalid(
            "credit_code",
            "only organisations have a unified social credit code"
        ))
    );
    let lower_case = Party::new(
        PartyRole::Respondent,
        PartyKind::Organization,
        "某公司",
        Some(&CREDIT_CODE.to_lowercase()),
        None,
        None,
        None,
    )
    .unwrap();
    assert_eq!(lower_case.credit_code.unwrap().as_str(), CREDIT_CODE);

    let bad_check = Party::new(
        PartyRole::Respondent,
        PartyKind::Organization,
        "某公司",
        Some("91350100M000100Y44"),
        None,
        None,
        None,
    );
    assert!(
        matches!(bad_check, Err(CaseError::Invalid { ref field, .. }) if field == "credit_code"),
        "{bad_check:?}"
    );
}

#[test]
fn identity_number_is_15_or_18_characters() {
    let person = |id: &str| {
        Party::new(
            PartyRole::Applicant,
            PartyKind::Person,
            "张三",
            None,
            Some(id),
            None,
            None,
        )
    };
    let refused = Err(CaseError::invalid(
        "id_number",
        "must be a 15- or 18-character identity number",
    ));
    assert_eq!(
        person("44030119900101123x").unwrap().id_number.as_deref(),
        Some("44030119900101123X")
    );
    assert!(person("440301900101123").is_ok());
    assert_eq!(person("4403011990010112345"), refused);
    assert_eq!(person("44030119900101123Y"), refused);
    // 18 bytes whose 17th and 18th are one non-ASCII character: refused, not a panic.
    assert_eq!(person("4403011990010112é"), refused);
    assert_eq!(person("中403011990010112"), refused);
}

// ---------------------------------------------------------------------------------------------
// Folding
// ---------------------------------------------------------------------------------------------

#[test]
fn version_counts_events() {
    assert_eq!(Case::default().version, 0);
    assert_eq!(Case::default().file, None);
    for status in CaseStatus::ALL {
        let events = case_in(status);
        let count = events.len() as u64;
        let case = fold(events.clone());
        assert_eq!(case.version, count, "{status}");

        // A handled command adds exactly one to the version.
        let when = at(next(&events));
        let recorded = given(events.clone())
            .when(note_command(when, "版本"))
            .inspect_result();
        if let Ok(recorded) = recorded {
            assert_eq!(fold(events.into_iter().chain(recorded)).version, count + 1);
        } else {
            assert_eq!(status, CaseStatus::Closed);
        }
    }
}

#[test]
fn folding_a_whole_case_fills_the_case_file() {
    let t = hour;
    let events = vec![
        filed(t(0)),
        accepted(t(1)),
        assigned(MEDIATOR, true, t(2)),
        transferred("R01", "R02", t(3)),
        assigned(OTHER_MEDIATOR, true, t(4)),
        recused(MEDIATOR, t(5)),
        session(t(6)),
        session(t(7)),
        agreement(t(8)),
        judicial(JudicialStatus::Requested, t(9)),
        judicial(JudicialStatus::Confirmed, t(10)),
        follow_up(Performance::Partial, t(11)),
        follow_up(Performance::Full, t(12)),
        note(t(13)),
        CaseEvent::CaseClosed {
            archive_no: Some("R02-2026-A-0001".into()),
            occurred_at: t(14),
        },
    ];
    let case = fold(events);
    assert_eq!(case.version, 15);
    let file = file_of(&case);

    assert_eq!(file.case_id, case_id());
    assert_eq!(file.case_no, case_no("R01", 2026), "the number stays");
    assert_eq!(
        file.room_id,
        room("R02"),
        "the room is the one it was transferred to"
    );
    assert_eq!(file.status, CaseStatus::Closed);
    assert_eq!(file.category, Category::Contract);
    assert_eq!(file.source, Source::PartyApplication);
    assert_eq!(file.summary, "货款纠纷");
    assert_eq!(file.parties, vec![applicant(), respondent()]);
    assert_eq!(
        file.amount_in_dispute,
        Some(Money::from_fen(1_250_000).unwrap())
    );
    assert_eq!(file.filed_at, t(0));
    assert_eq!(file.accepted_at, Some(t(1)));
    assert_eq!(file.concluded_at, Some(t(8)));
    assert_eq!(file.closed_at, Some(t(14)));
    assert_eq!(file.last_occurred_at, t(14));
    assert_eq!(file.sessions, 2);
    assert_eq!(file.follow_ups, 2);
    assert_eq!(file.latest_performance, Some(Performance::Full));
    assert_eq!(file.notes, 1);
    assert_eq!(file.archive_no.as_deref(), Some("R02-2026-A-0001"));
    assert_eq!(
        file.mediators,
        vec![AssignedMediator {
            mediator_id: OTHER_MEDIATOR.into(),
            name: None,
            lead: true,
            assigned_at: t(4),
        }]
    );
    assert_eq!(
        file.outcome,
        Some(Outcome::Agreement {
            agreement: AgreementKind::Written,
            terms: "被申请人分两期支付货款".into(),
            agreed_amount: Some(Money::from_fen(1_000_000).unwrap()),
            performance_due: NaiveDate::from_ymd_opt(2026, 6, 30),
            reached_at: t(8),
        })
    );
    assert_eq!(
        file.judicial_confirmation,
        Some(JudicialConfirmation {
            status: JudicialStatus::Confirmed,
            court: None,
            recorded_at: t(10),
        })
    );
}

#[test]
fn folding_records_how_a_case_ended_without_agreement() {
    let terminated_case = fold(case_in(CaseStatus::Terminated));
    let file = file_of(&terminated_case);
    assert_eq!(file.status, CaseStatus::Terminated);
    assert_eq!(file.concluded_at, Some(hour(4)));
    assert_eq!(file.accepted_at, Some(hour(1)));
    assert_eq!(file.closed_at, None);
    assert_eq!(
        file.outcome,
        Some(Outcome::Termination {
            reason: TerminationReason::NoAgreement,
            referred_to: None,
            note: None,
            terminated_at: hour(4),
        })
    );

    let declined_case = fold(case_in(CaseStatus::Declined));
    let file = file_of(&declined_case);
    assert_eq!(file.status, CaseStatus::Declined);
    assert_eq!(file.accepted_at, None);
    assert_eq!(
        file.outcome,
        Some(Outcome::Declined {
            reason: "不属于受理范围".into(),
            declined_at: hour(1),
        })
    );
}
