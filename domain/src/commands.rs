//! What a caller asks the case to do. Commands carry already-typed values (money, room ids,
//! enumerations) and raw free text, which the aggregate checks. Every command carries [`When`]:
//! when the step happened and the server's clock, so the aggregate never reads a clock.

use crate::values::*;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// The time of a step and the server's clock when the command was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    /// When the step really happened (the caller's `occurred_at`, or `now`).
    pub occurred_at: DateTime<Utc>,
    /// The server's clock when the command arrived.
    pub now: DateTime<Utc>,
}

impl When {
    /// A step that happens now.
    pub fn now(now: DateTime<Utc>) -> When {
        When {
            occurred_at: now,
            now,
        }
    }
}

/// Filing a new case (`CaseFiled`).
#[derive(Debug, Clone, PartialEq)]
pub struct FileCase {
    /// The new case's id, chosen by the server.
    pub case_id: Uuid,
    /// The number the store reserved for it in its room and year.
    pub case_no: CaseNo,
    /// The room the case is filed with.
    pub room_id: RoomId,
    /// What the dispute is about.
    pub category: Category,
    /// How the case came to the room.
    pub source: Source,
    /// A short account of the dispute.
    pub summary: String,
    /// What the applicant asks for.
    pub claims: Option<String>,
    /// The amount in dispute.
    pub amount_in_dispute: Option<Money>,
    /// The "20+8" industry cluster the dispute belongs to.
    pub industry: Option<String>,
    /// The parties; at least one applicant and one respondent.
    pub parties: Vec<Party>,
}

/// A command on a case. Each variant is answered by exactly one event.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseCommand {
    /// File a new case → `CaseFiled`.
    File {
        /// When.
        when: When,
        /// The filing.
        filing: Box<FileCase>,
    },
    /// Accept the case → `CaseAccepted`.
    Accept {
        /// When.
        when: When,
        /// An optional note.
        note: Option<String>,
    },
    /// Decline the case → `CaseDeclined`.
    Decline {
        /// When.
        when: When,
        /// Why the room does not accept it.
        reason: String,
    },
    /// Assign a mediator → `MediatorAssigned`.
    AssignMediator {
        /// When.
        when: When,
        /// The mediator's id (a token `sub`).
        mediator_id: String,
        /// The mediator's name.
        name: Option<String>,
        /// Whether the mediator leads; the first mediator leads unless told otherwise.
        lead: Option<bool>,
    },
    /// A mediator steps aside → `MediatorRecused`.
    RecuseMediator {
        /// When.
        when: When,
        /// The mediator stepping aside.
        mediator_id: String,
        /// Why.
        reason: String,
    },
    /// Record a mediation session → `SessionRecorded`.
    RecordSession {
        /// When.
        when: When,
        /// What happened.
        summary: String,
        /// Who attended.
        attendees: Vec<String>,
    },
    /// Record the agreement → `AgreementReached`.
    Resolve {
        /// When.
        when: When,
        /// Written or oral.
        agreement: AgreementKind,
        /// The agreed terms.
        terms: String,
        /// The amount agreed.
        agreed_amount: Option<Money>,
        /// When performance is due.
        performance_due: Option<NaiveDate>,
    },
    /// End mediation without agreement → `MediationTerminated`.
    Terminate {
        /// When.
        when: When,
        /// Why.
        reason: TerminationReason,
        /// Where the parties were referred (only with `referred`).
        referred_to: Option<ReferralRoute>,
        /// A note.
        note: Option<String>,
    },
    /// Hand the case to another room → `CaseTransferred`.
    Transfer {
        /// When.
        when: When,
        /// The receiving room (the caller checked it exists).
        to_room_id: RoomId,
        /// Why.
        reason: String,
    },
    /// Record a judicial confirmation step → `JudicialConfirmationRecorded`.
    RecordJudicialConfirmation {
        /// When.
        when: When,
        /// Requested, confirmed or rejected.
        status: JudicialStatus,
        /// The court.
        court: Option<String>,
    },
    /// Record a return visit → `FollowUpRecorded`.
    RecordFollowUp {
        /// When.
        when: When,
        /// How far the agreement was performed.
        performance: Performance,
        /// The parties' satisfaction, 1 to 5.
        satisfaction: Option<u8>,
        /// A note.
        note: Option<String>,
    },
    /// Archive the case → `CaseClosed`.
    Close {
        /// When.
        when: When,
        /// The archive number (卷宗号).
        archive_no: Option<String>,
    },
    /// Add a note → `NoteAdded`.
    AddNote {
        /// When.
        when: When,
        /// The note.
        text: String,
    },
}

impl CaseCommand {
    /// The command's time.
    pub fn when(&self) -> When {
        match self {
            CaseCommand::File { when, .. }
            | CaseCommand::Accept { when, .. }
            | CaseCommand::Decline { when, .. }
            | CaseCommand::AssignMediator { when, .. }
            | CaseCommand::RecuseMediator { when, .. }
            | CaseCommand::RecordSession { when, .. }
            | CaseCommand::Resolve { when, .. }
            | CaseCommand::Terminate { when, .. }
            | CaseCommand::Transfer { when, .. }
            | CaseCommand::RecordJudicialConfirmation { when, .. }
            | CaseCommand::RecordFollowUp { when, .. }
            | CaseCommand::Close { when, .. }
            | CaseCommand::AddNote { when, .. } => *when,
        }
    }
}
