//! The `Case` aggregate. `handle` decides through one function per command and records exactly
//! one event; `apply` only assigns. The aggregate's `version` is its number of events.
//!
//! Invariants: a refused command records nothing; a closed case never changes; every event's
//! `occurred_at` is not before the previous event's and not later than the server's clock
//! (allowing [`CLOCK_SKEW_SECONDS`] for callers whose clocks run a little fast).

use crate::commands::{CaseCommand, FileCase, When};
use crate::error::CaseError;
use crate::events::CaseEvent;
use crate::status::{target, CaseStatus, Step};
use crate::values::*;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How far in the future of the server's clock an `occurred_at` may be, for callers whose clocks
/// run slightly fast.
pub const CLOCK_SKEW_SECONDS: i64 = 60;

/// How long after an agreement the parties may apply for judicial confirmation (30 days).
pub const JUDICIAL_CONFIRMATION_WINDOW_DAYS: i64 = 30;

/// A case: nothing before it is filed, then its file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The number of events applied (the sequence of the last one).
    pub version: u64,
    /// The case file, once filed.
    pub file: Option<CaseFile>,
}

/// A mediator currently on the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedMediator {
    /// The mediator's id.
    pub mediator_id: String,
    /// The mediator's name.
    pub name: Option<String>,
    /// Whether the mediator leads the case.
    pub lead: bool,
    /// When the mediator was assigned.
    pub assigned_at: DateTime<Utc>,
}

/// How a case concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// An agreement was reached.
    Agreement {
        /// Written or oral.
        agreement: AgreementKind,
        /// The terms.
        terms: String,
        /// The amount agreed.
        agreed_amount: Option<Money>,
        /// When performance is due.
        performance_due: Option<NaiveDate>,
        /// When it was reached.
        reached_at: DateTime<Utc>,
    },
    /// Mediation was terminated.
    Termination {
        /// Why.
        reason: TerminationReason,
        /// Where the parties were referred.
        referred_to: Option<ReferralRoute>,
        /// A note.
        note: Option<String>,
        /// When.
        terminated_at: DateTime<Utc>,
    },
    /// The room declined the case.
    Declined {
        /// Why.
        reason: String,
        /// When.
        declined_at: DateTime<Utc>,
    },
}

/// The latest judicial confirmation step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudicialConfirmation {
    /// Requested, confirmed or rejected.
    pub status: JudicialStatus,
    /// The court.
    pub court: Option<String>,
    /// When the step happened.
    pub recorded_at: DateTime<Utc>,
}

/// Everything the case's events say, folded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseFile {
    /// The case id.
    pub case_id: Uuid,
    /// The case number.
    pub case_no: CaseNo,
    /// The room the case is in now.
    pub room_id: RoomId,
    /// The status.
    pub status: CaseStatus,
    /// The category.
    pub category: Category,
    /// The source.
    pub source: Source,
    /// The summary.
    pub summary: String,
    /// The claims.
    pub claims: Option<String>,
    /// The industry cluster.
    pub industry: Option<String>,
    /// The parties.
    pub parties: Vec<Party>,
    /// The amount in dispute.
    pub amount_in_dispute: Option<Money>,
    /// Mediators on the case now (recused ones are removed).
    pub mediators: Vec<AssignedMediator>,
    /// Number of sessions.
    pub sessions: u32,
    /// How the case concluded.
    pub outcome: Option<Outcome>,
    /// The latest judicial confirmation step.
    pub judicial_confirmation: Option<JudicialConfirmation>,
    /// Number of return visits.
    pub follow_ups: u32,
    /// What the latest return visit found.
    pub latest_performance: Option<Performance>,
    /// Number of notes.
    pub notes: u32,
    /// The archive number.
    pub archive_no: Option<String>,
    /// When filed.
    pub filed_at: DateTime<Utc>,
    /// When accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// When resolved or terminated.
    pub concluded_at: Option<DateTime<Utc>>,
    /// When closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// The `occurred_at` of the latest event: no step may be dated before it.
    pub last_occurred_at: DateTime<Utc>,
}

impl Aggregate for Case {
    const TYPE: &'static str = "case";
    type Command = CaseCommand;
    type Event = CaseEvent;
    type Error = CaseError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CaseCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CaseError> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: CaseEvent) {
        self.version += 1;
        if let CaseEvent::CaseFiled {
            case_id,
            case_no,
            room_id,
            category,
            source,
            summary,
            claims,
            amount_in_dispute,
            industry,
            parties,
            occurred_at,
        } = event
        {
            self.file = Some(CaseFile {
                case_id,
                case_no,
                room_id,
                status: CaseStatus::Filed,
                category,
                source,
                summary,
                claims,
                industry,
                parties,
                amount_in_dispute,
                mediators: Vec::new(),
                sessions: 0,
                outcome: None,
                judicial_confirmation: None,
                follow_ups: 0,
                latest_performance: None,
                notes: 0,
                archive_no: None,
                filed_at: occurred_at,
                accepted_at: None,
                concluded_at: None,
                closed_at: None,
                last_occurred_at: occurred_at,
            });
            return;
        }
        let Some(file) = self.file.as_mut() else {
            // Only CaseFiled can start a case; `handle` never records anything else first.
            return;
        };
        let at = event.occurred_at();
        file.last_occurred_at = at;
        match event {
            CaseEvent::CaseFiled { .. } => {}
            CaseEvent::CaseAccepted { .. } => {
                file.status = CaseStatus::Accepted;
                file.accepted_at = Some(at);
            }
            CaseEvent::CaseDeclined { reason, .. } => {
                file.status = CaseStatus::Declined;
                file.outcome = Some(Outcome::Declined {
                    reason,
                    declined_at: at,
                });
            }
            CaseEvent::MediatorAssigned {
                mediator_id,
                name,
                lead,
                ..
            } => {
                if lead {
                    file.mediators.iter_mut().for_each(|m| m.lead = false);
                }
                file.mediators.push(AssignedMediator {
                    mediator_id,
                    name,
                    lead,
                    assigned_at: at,
                });
                if file.status == CaseStatus::Accepted {
                    file.status = CaseStatus::Assigned;
                }
            }
            CaseEvent::MediatorRecused { mediator_id, .. } => {
                file.mediators.retain(|m| m.mediator_id != mediator_id);
            }
            CaseEvent::SessionRecorded { .. } => {
                file.sessions += 1;
                file.status = CaseStatus::InMediation;
            }
            CaseEvent::AgreementReached {
                agreement,
                terms,
                agreed_amount,
                performance_due,
                ..
            } => {
                file.status = CaseStatus::Resolved;
                file.concluded_at = Some(at);
                file.outcome = Some(Outcome::Agreement {
                    agreement,
                    terms,
                    agreed_amount,
                    performance_due,
                    reached_at: at,
                });
            }
            CaseEvent::MediationTerminated {
                reason,
                referred_to,
                note,
                ..
            } => {
                file.status = CaseStatus::Terminated;
                file.concluded_at = Some(at);
                file.outcome = Some(Outcome::Termination {
                    reason,
                    referred_to,
                    note,
                    terminated_at: at,
                });
            }
            CaseEvent::CaseTransferred { to_room_id, .. } => {
                file.room_id = to_room_id;
            }
            CaseEvent::JudicialConfirmationRecorded { status, court, .. } => {
                file.judicial_confirmation = Some(JudicialConfirmation {
                    status,
                    court,
                    recorded_at: at,
                });
            }
            CaseEvent::FollowUpRecorded { performance, .. } => {
                file.follow_ups += 1;
                file.latest_performance = Some(performance);
            }
            CaseEvent::CaseClosed { archive_no, .. } => {
                file.status = CaseStatus::Closed;
                file.archive_no = archive_no;
                file.closed_at = Some(at);
            }
            CaseEvent::NoteAdded { .. } => {
                file.notes += 1;
            }
        }
    }
}

fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, CaseError> {
    value.map(|v| text(field, &v, max)).transpose()
}

fn mediator_id(field: &str, id: &str) -> Result<String, CaseError> {
    if id.is_empty() || id.len() > 64 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CaseError::invalid(
            field,
            "must be 1–64 characters without spaces",
        ));
    }
    Ok(id.to_string())
}

impl Case {
    /// Decides what a command records, without changing the case. This is `handle` without the
    /// sink: one function per command behind it.
    pub fn decide(&self, command: CaseCommand) -> Result<CaseEvent, CaseError> {
        let when = command.when();
        match command {
            CaseCommand::File { filing, .. } => self.file_case(when, *filing),
            CaseCommand::Accept { note, .. } => self.accept(when, note),
            CaseCommand::Decline { reason, .. } => self.decline(when, reason),
            CaseCommand::AssignMediator {
                mediator_id,
                name,
                lead,
                ..
            } => self.assign_mediator(when, mediator_id, name, lead),
            CaseCommand::RecuseMediator {
                mediator_id,
                reason,
                ..
            } => self.recuse_mediator(when, mediator_id, reason),
            CaseCommand::RecordSession {
                summary, attendees, ..
            } => self.record_session(when, summary, attendees),
            CaseCommand::Resolve {
                agreement,
                terms,
                agreed_amount,
                performance_due,
                ..
            } => self.resolve(when, agreement, terms, agreed_amount, performance_due),
            CaseCommand::Terminate {
                reason,
                referred_to,
                note,
                ..
            } => self.terminate(when, reason, referred_to, note),
            CaseCommand::Transfer {
                to_room_id, reason, ..
            } => self.transfer(when, to_room_id, reason),
            CaseCommand::RecordJudicialConfirmation { status, court, .. } => {
                self.record_judicial_confirmation(when, status, court)
            }
            CaseCommand::RecordFollowUp {
                performance,
                satisfaction,
                note,
                ..
            } => self.record_follow_up(when, performance, satisfaction, note),
            CaseCommand::Close { archive_no, .. } => self.close(when, archive_no),
            CaseCommand::AddNote { text, .. } => self.add_note(when, text),
        }
    }

    /// The case's status, if filed.
    pub fn status(&self) -> Option<CaseStatus> {
        self.file.as_ref().map(|f| f.status)
    }

    /// Checks the step against the transition table and the step's time against the clock and
    /// the previous step. Returns the file for further checks.
    fn begin(&self, step: Step, when: When) -> Result<&CaseFile, CaseError> {
        let file = self.file.as_ref().ok_or(CaseError::NotFiled)?;
        if target(file.status, step).is_none() {
            return Err(CaseError::InvalidTransition {
                status: file.status,
                step,
            });
        }
        check_time(when)?;
        if when.occurred_at < file.last_occurred_at {
            return Err(CaseError::invalid(
                "occurred_at",
                format!(
                    "must not be before the case's previous step ({})",
                    file.last_occurred_at.to_rfc3339()
                ),
            ));
        }
        Ok(file)
    }

    fn file_case(&self, when: When, f: FileCase) -> Result<CaseEvent, CaseError> {
        if self.file.is_some() {
            return Err(CaseError::AlreadyFiled);
        }
        check_time(when)?;
        let summary = text("summary", &f.summary, 2000)?;
        let claims = optional_text("claims", f.claims, 4000)?;
        let industry = optional_text("industry", f.industry, 100)?;
        check_parties(&f.parties)?;
        if f.case_no.room_id() != &f.room_id || f.case_no.year() != shenzhen_year(when.occurred_at)
        {
            return Err(CaseError::invalid(
                "case_no",
                "must be numbered in the filing room and year",
            ));
        }
        Ok(CaseEvent::CaseFiled {
            case_id: f.case_id,
            case_no: f.case_no,
            room_id: f.room_id,
            category: f.category,
            source: f.source,
            summary,
            claims,
            amount_in_dispute: f.amount_in_dispute,
            industry,
            parties: f.parties,
            occurred_at: when.occurred_at,
        })
    }

    fn accept(&self, when: When, note: Option<String>) -> Result<CaseEvent, CaseError> {
        self.begin(Step::Accept, when)?;
        Ok(CaseEvent::CaseAccepted {
            note: optional_text("note", note, 2000)?,
            occurred_at: when.occurred_at,
        })
    }

    fn decline(&self, when: When, reason: String) -> Result<CaseEvent, CaseError> {
        self.begin(Step::Decline, when)?;
        Ok(CaseEvent::CaseDeclined {
            reason: text("reason", &reason, 2000)?,
            occurred_at: when.occurred_at,
        })
    }

    fn assign_mediator(
        &self,
        when: When,
        id: String,
        name: Option<String>,
        lead: Option<bool>,
    ) -> Result<CaseEvent, CaseError> {
        let file = self.begin(Step::AssignMediator, when)?;
        let id = mediator_id("mediator_id", &id)?;
        let name = optional_text("name", name, 100)?;
        if file.mediators.iter().any(|m| m.mediator_id == id) {
            return Err(precondition(
                file,
                Step::AssignMediator,
                format!("mediator {id} is already assigned"),
            ));
        }
        Ok(CaseEvent::MediatorAssigned {
            mediator_id: id,
            name,
            lead: lead.unwrap_or(!file.mediators.iter().any(|m| m.lead)),
            occurred_at: when.occurred_at,
        })
    }

    fn recuse_mediator(
        &self,
        when: When,
        id: String,
        reason: String,
    ) -> Result<CaseEvent, CaseError> {
        let file = self.begin(Step::RecuseMediator, when)?;
        let reason = text("reason", &reason, 2000)?;
        if !file.mediators.iter().any(|m| m.mediator_id == id) {
            return Err(precondition(
                file,
                Step::RecuseMediator,
                format!("mediator {id} is not assigned to the case"),
            ));
        }
        Ok(CaseEvent::MediatorRecused {
            mediator_id: id,
            reason,
            occurred_at: when.occurred_at,
        })
    }

    fn record_session(
        &self,
        when: When,
        summary: String,
        attendees: Vec<String>,
    ) -> Result<CaseEvent, CaseError> {
        let file = self.begin(Step::RecordSession, when)?;
        let summary = text("summary", &summary, 4000)?;
        if attendees.len() > 50 {
            return Err(CaseError::invalid("attendees", "at most 50 attendees"));
        }
        let attendees = attendees
            .iter()
            .enumerate()
            .map(|(i, a)| text(&format!("attendees[{i}]"), a, 100))
            .collect::<Result<Vec<_>, _>>()?;
        if file.mediators.is_empty() {
            return Err(precondition(
                file,
                Step::RecordSession,
                "a session needs at least one assigned mediator".into(),
            ));
        }
        Ok(CaseEvent::SessionRecorded {
            summary,
            attendees,
            occurred_at: when.occurred_at,
        })
    }

    fn resolve(
        &self,
        when: When,
        agreement: AgreementKind,
        terms: String,
        agreed_amount: Option<Money>,
        performance_due: Option<NaiveDate>,
    ) -> Result<CaseEvent, CaseError> {
        let file = self.begin(Step::Resolve, when)?;
        let terms = text("terms", &terms, 8000)?;
        if file.sessions == 0 {
            return Err(precondition(
                file,
                Step::Resolve,
                "an agreement needs at least one session".into(),
            ));
        }
        if file.mediators.is_empty() {
            return Err(precondition(
                file,
                Step::Resolve,
                "an agreement needs at least one assigned mediator".into(),
            ));
        }
        Ok(CaseEvent::AgreementReached {
            agreement,
            terms,
            agreed_amount,
            performance_due,
            occurred_at: when.occurred_at,
        })
    }

    fn terminate(
        &self,
        when: When,
        reason: TerminationReason,
        referred_to: Option<ReferralRoute>,
        note: Option<String>,
    ) -> Result<CaseEvent, CaseError> {
        let file = self.begin(Step::Terminate, when)?;
        let note = optional_text("note", note, 2000)?;
        match (reason, referred_to) {
            (TerminationReason::Referred, None) => {
                return Err(CaseError::invalid(
                    "referred_to",
                    "is required when the reason is referred",
                ))
            }
            (r, Some(_)) if r != TerminationReason::Referred => {
                return Err(CaseError::invalid(
                    "referred_to",
                    "is only allowed when the reason is referred",
                ))
            }
            _ => {}
        }
        if matches!(file.status, CaseStatus::Filed | CaseStatus::Accepted)
            && !matches!(
                reason,
                TerminationReason::Withdrawn | TerminationReason::PartyRefused
            )
        {
            return Err(precondition(
                file,
                Step::Terminate,
                "before mediation starts a case ends only when withdrawn or a party refuses".into(),
            ));
        }
        Ok(CaseEvent::MediationTerminated {
            reason,
            referred_to,
            note,
            occurred_at: when.occurred_at,
        })
    }

    fn transfer(
        &self,
        when: When,
        to_room_id: RoomId,
        reason: String,
    ) -> Result<CaseEvent, CaseError> {
        let file = self.begin(Step::Transfer, when)?;
        let reason = text("reason", &reason, 2000)?;
        if to_room_id == file.room_id {
            return Err(CaseError::invalid(
                "to_room_id",
                "is the room the case is already in",
            ));
        }
        Ok(CaseEvent::CaseTransferred {
            from_room_id: file.room_id.clone(),
            to_room_id,
            reason,
            occurred_at: when.occurred_at,
        })
    }

    fn record_judicial_confirmation(
        &self,
        when: When,
        status: JudicialStatus,
        court: Option<String>,
    ) -> Result<CaseEvent, CaseError> {
        let file = self.begin(Step::RecordJudicialConfirmation, when)?;
        let court = optional_text("court", court, 200)?;
        let step = Step::RecordJudicialConfirmation;
        let current = file.judicial_confirmation.as_ref().map(|j| j.status);
        match (status, current) {
            (JudicialStatus::Requested, None) => {
                if let Some(Outcome::Agreement { reached_at, .. }) = &file.outcome {
                    if when.occurred_at
                        > *reached_at + Duration::days(JUDICIAL_CONFIRMATION_WINDOW_DAYS)
                    {
                        return Err(precondition(
                            file,
                            step,
                            "judicial confirmation must be requested within 30 days of the agreement".into(),
                        ));
                    }
                }
            }
            (JudicialStatus::Requested, Some(_)) => {
                return Err(precondition(
                    file,
                    step,
                    "judicial confirmation was already requested".into(),
                ))
            }
            (_, Some(JudicialStatus::Requested)) => {}
            (_, _) => {
                return Err(precondition(
                    file,
                    step,
                    "a court decides only on a pending request".into(),
                ))
            }
        }
        Ok(CaseEvent::JudicialConfirmationRecorded {
            status,
            court,
            occurred_at: when.occurred_at,
        })
    }

    fn record_follow_up(
        &self,
        when: When,
        performance: Performance,
        satisfaction: Option<u8>,
        note: Option<String>,
    ) -> Result<CaseEvent, CaseError> {
        self.begin(Step::RecordFollowUp, when)?;
        if let Some(s) = satisfaction {
            if !(1..=5).contains(&s) {
                return Err(CaseError::invalid("satisfaction", "must be 1 to 5"));
            }
        }
        Ok(CaseEvent::FollowUpRecorded {
            performance,
            satisfaction,
            note: optional_text("note", note, 2000)?,
            occurred_at: when.occurred_at,
        })
    }

    fn close(&self, when: When, archive_no: Option<String>) -> Result<CaseEvent, CaseError> {
        self.begin(Step::Close, when)?;
        Ok(CaseEvent::CaseClosed {
            archive_no: optional_text("archive_no", archive_no, 64)?,
            occurred_at: when.occurred_at,
        })
    }

    fn add_note(&self, when: When, note: String) -> Result<CaseEvent, CaseError> {
        self.begin(Step::AddNote, when)?;
        Ok(CaseEvent::NoteAdded {
            text: text("text", &note, 8000)?,
            occurred_at: when.occurred_at,
        })
    }
}

fn check_time(when: When) -> Result<(), CaseError> {
    if when.occurred_at > when.now + Duration::seconds(CLOCK_SKEW_SECONDS) {
        return Err(CaseError::invalid(
            "occurred_at",
            "must not be in the future",
        ));
    }
    Ok(())
}

fn precondition(file: &CaseFile, step: Step, reason: String) -> CaseError {
    CaseError::PreconditionUnmet {
        status: file.status,
        step,
        reason,
    }
}
