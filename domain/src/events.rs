//! What a case records. These are the storage format and the audit log: `event_type` names are
//! stable, and a change to a payload's shape bumps `event_version` and comes with an upcaster.
//! Every event carries `occurred_at`, when the step really happened; when it was recorded is the
//! store's business.

use crate::values::*;
use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The current version of every event payload.
pub const EVENT_VERSION: &str = "1";

/// A recorded step of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CaseEvent {
    /// The case was filed with a room.
    CaseFiled {
        /// The case's id.
        case_id: Uuid,
        /// Its number in the room and year.
        case_no: CaseNo,
        /// The room it was filed with.
        room_id: RoomId,
        /// What it is about.
        category: Category,
        /// How it came.
        source: Source,
        /// A short account.
        summary: String,
        /// What the applicant asks for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claims: Option<String>,
        /// The amount in dispute, in fen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount_in_dispute: Option<Money>,
        /// The industry cluster.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        industry: Option<String>,
        /// The parties.
        parties: Vec<Party>,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// The room accepted the case.
    CaseAccepted {
        /// A note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// The room declined the case.
    CaseDeclined {
        /// Why.
        reason: String,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// A mediator was assigned.
    MediatorAssigned {
        /// Who.
        mediator_id: String,
        /// Their name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Whether they lead (the previous lead, if any, no longer does).
        lead: bool,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// A mediator stepped aside.
    MediatorRecused {
        /// Who.
        mediator_id: String,
        /// Why.
        reason: String,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// A mediation session took place.
    SessionRecorded {
        /// What happened.
        summary: String,
        /// Who attended.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attendees: Vec<String>,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// The parties reached an agreement.
    AgreementReached {
        /// Written or oral.
        agreement: AgreementKind,
        /// The terms.
        terms: String,
        /// The amount agreed, in fen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agreed_amount: Option<Money>,
        /// When performance is due.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        performance_due: Option<NaiveDate>,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// Mediation ended without agreement.
    MediationTerminated {
        /// Why.
        reason: TerminationReason,
        /// Where the parties were referred.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        referred_to: Option<ReferralRoute>,
        /// A note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// The case moved to another room.
    CaseTransferred {
        /// The room it left.
        from_room_id: RoomId,
        /// The room it went to.
        to_room_id: RoomId,
        /// Why.
        reason: String,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// A judicial confirmation step.
    JudicialConfirmationRecorded {
        /// Requested, confirmed or rejected.
        status: JudicialStatus,
        /// The court.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        court: Option<String>,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// A return visit.
    FollowUpRecorded {
        /// How far the agreement was performed.
        performance: Performance,
        /// Satisfaction, 1 to 5.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        satisfaction: Option<u8>,
        /// A note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// The case was archived.
    CaseClosed {
        /// The archive number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        archive_no: Option<String>,
        /// When.
        occurred_at: DateTime<Utc>,
    },
    /// A note was added.
    NoteAdded {
        /// The note.
        text: String,
        /// When.
        occurred_at: DateTime<Utc>,
    },
}

impl CaseEvent {
    /// When the step happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            CaseEvent::CaseFiled { occurred_at, .. }
            | CaseEvent::CaseAccepted { occurred_at, .. }
            | CaseEvent::CaseDeclined { occurred_at, .. }
            | CaseEvent::MediatorAssigned { occurred_at, .. }
            | CaseEvent::MediatorRecused { occurred_at, .. }
            | CaseEvent::SessionRecorded { occurred_at, .. }
            | CaseEvent::AgreementReached { occurred_at, .. }
            | CaseEvent::MediationTerminated { occurred_at, .. }
            | CaseEvent::CaseTransferred { occurred_at, .. }
            | CaseEvent::JudicialConfirmationRecorded { occurred_at, .. }
            | CaseEvent::FollowUpRecorded { occurred_at, .. }
            | CaseEvent::CaseClosed { occurred_at, .. }
            | CaseEvent::NoteAdded { occurred_at, .. } => *occurred_at,
        }
    }

    /// The stable type name stored with the event.
    pub fn type_name(&self) -> &'static str {
        match self {
            CaseEvent::CaseFiled { .. } => "CaseFiled",
            CaseEvent::CaseAccepted { .. } => "CaseAccepted",
            CaseEvent::CaseDeclined { .. } => "CaseDeclined",
            CaseEvent::MediatorAssigned { .. } => "MediatorAssigned",
            CaseEvent::MediatorRecused { .. } => "MediatorRecused",
            CaseEvent::SessionRecorded { .. } => "SessionRecorded",
            CaseEvent::AgreementReached { .. } => "AgreementReached",
            CaseEvent::MediationTerminated { .. } => "MediationTerminated",
            CaseEvent::CaseTransferred { .. } => "CaseTransferred",
            CaseEvent::JudicialConfirmationRecorded { .. } => "JudicialConfirmationRecorded",
            CaseEvent::FollowUpRecorded { .. } => "FollowUpRecorded",
            CaseEvent::CaseClosed { .. } => "CaseClosed",
            CaseEvent::NoteAdded { .. } => "NoteAdded",
        }
    }
}

impl DomainEvent for CaseEvent {
    fn event_type(&self) -> String {
        self.type_name().to_string()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}
