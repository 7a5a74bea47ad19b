//! Case statuses and the allowed-transition table.
//!
//! Invariant: [`TRANSITIONS`] is the only place that says which step may follow which status.
//! The aggregate asks [`target`]; the API documentation and the exhaustive test read the same
//! table. Preconditions that depend on more than the status (a mediator for a session, a session
//! for an agreement, the reason for an early termination) live in the aggregate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Filed with a room, not yet accepted (申请).
    Filed,
    /// Accepted by the room (受理).
    Accepted,
    /// Not accepted (不予受理).
    Declined,
    /// At least one mediator was assigned.
    Assigned,
    /// At least one session took place (调解中).
    InMediation,
    /// The parties reached an agreement (调解成功).
    Resolved,
    /// Mediation ended without agreement (终止调解).
    Terminated,
    /// Archived (结案归档); nothing changes a closed case.
    Closed,
}

impl CaseStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CaseStatus; 8] = [
        CaseStatus::Filed,
        CaseStatus::Accepted,
        CaseStatus::Declined,
        CaseStatus::Assigned,
        CaseStatus::InMediation,
        CaseStatus::Resolved,
        CaseStatus::Terminated,
        CaseStatus::Closed,
    ];

    /// The wire name, e.g. `in_mediation`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Filed => "filed",
            CaseStatus::Accepted => "accepted",
            CaseStatus::Declined => "declined",
            CaseStatus::Assigned => "assigned",
            CaseStatus::InMediation => "in_mediation",
            CaseStatus::Resolved => "resolved",
            CaseStatus::Terminated => "terminated",
            CaseStatus::Closed => "closed",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<CaseStatus> {
        CaseStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for CaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step a caller may ask for on an existing case (filing is not one: it creates the case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Accept the case (受理).
    Accept,
    /// Decline the case (不予受理).
    Decline,
    /// Assign a mediator.
    AssignMediator,
    /// A mediator steps aside (回避).
    RecuseMediator,
    /// Record a mediation session.
    RecordSession,
    /// Record the agreement.
    Resolve,
    /// End mediation without agreement.
    Terminate,
    /// Hand the case to another room.
    Transfer,
    /// Record a judicial confirmation step (司法确认).
    RecordJudicialConfirmation,
    /// Record a return visit (回访).
    RecordFollowUp,
    /// Archive the case.
    Close,
    /// Add a note.
    AddNote,
}

impl Step {
    /// Every step.
    pub const ALL: [Step; 12] = [
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

    /// The step's name in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Accept => "accept",
            Step::Decline => "decline",
            Step::AssignMediator => "assign a mediator to",
            Step::RecuseMediator => "recuse a mediator from",
            Step::RecordSession => "record a session on",
            Step::Resolve => "resolve",
            Step::Terminate => "terminate",
            Step::Transfer => "transfer",
            Step::RecordJudicialConfirmation => "record a judicial confirmation on",
            Step::RecordFollowUp => "record a follow-up on",
            Step::Close => "close",
            Step::AddNote => "add a note to",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use CaseStatus::*;

/// The allowed transitions: (from, step, to). A (status, step) pair not listed is refused with
/// `invalid_transition`. Termination from `filed`/`accepted` is listed but further limited to the
/// reasons `withdrawn` and `party_refused` by the aggregate.
pub const TRANSITIONS: &[(CaseStatus, Step, CaseStatus)] = &[
    (Filed, Step::Accept, Accepted),
    (Filed, Step::Decline, Declined),
    (Accepted, Step::AssignMediator, Assigned),
    (Assigned, Step::AssignMediator, Assigned),
    (InMediation, Step::AssignMediator, InMediation),
    (Assigned, Step::RecuseMediator, Assigned),
    (InMediation, Step::RecuseMediator, InMediation),
    (Assigned, Step::RecordSession, InMediation),
    (InMediation, Step::RecordSession, InMediation),
    (InMediation, Step::Resolve, Resolved),
    (Filed, Step::Terminate, Terminated),
    (Accepted, Step::Terminate, Terminated),
    (Assigned, Step::Terminate, Terminated),
    (InMediation, Step::Terminate, Terminated),
    (Filed, Step::Transfer, Filed),
    (Accepted, Step::Transfer, Accepted),
    (Assigned, Step::Transfer, Assigned),
    (Resolved, Step::RecordJudicialConfirmation, Resolved),
    (Resolved, Step::RecordFollowUp, Resolved),
    (Resolved, Step::Close, Closed),
    (Terminated, Step::Close, Closed),
    (Declined, Step::Close, Closed),
    (Filed, Step::AddNote, Filed),
    (Accepted, Step::AddNote, Accepted),
    (Declined, Step::AddNote, Declined),
    (Assigned, Step::AddNote, Assigned),
    (InMediation, Step::AddNote, InMediation),
    (Resolved, Step::AddNote, Resolved),
    (Terminated, Step::AddNote, Terminated),
];

/// The status a case in `from` moves to when `step` is taken, or `None` when the table does not
/// allow it.
pub fn target(from: CaseStatus, step: Step) -> Option<CaseStatus> {
    TRANSITIONS
        .iter()
        .find(|(f, s, _)| *f == from && *s == step)
        .map(|(_, _, to)| *to)
}
