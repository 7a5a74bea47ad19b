//! The case summary: what the case list shows and filters on, plus the few timestamps the
//! statistics need per case (acceptance, conclusion, the filing room).

use chrono::{DateTime, Utc};
use tiaojie_domain::{CaseEvent, CaseStatus};
use uuid::Uuid;

/// One case, as the list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseSummary {
    /// The case.
    pub case_id: Uuid,
    /// Its number.
    pub case_no: String,
    /// The room it is in now.
    pub room_id: String,
    /// The room it was filed with.
    pub filed_room_id: String,
    /// Its status.
    pub status: CaseStatus,
    /// Category (wire name).
    pub category: String,
    /// Source (wire name).
    pub source: String,
    /// When filed.
    pub filed_at: DateTime<Utc>,
    /// When accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// When resolved or terminated.
    pub concluded_at: Option<DateTime<Utc>>,
    /// Ids of the mediators on the case now.
    pub mediators: Vec<String>,
    /// Number of events.
    pub version: u64,
}

impl CaseSummary {
    /// Starts a summary from the case's first event; `None` for any other event.
    pub fn start(case_id: Uuid, event: &CaseEvent) -> Option<CaseSummary> {
        match event {
            CaseEvent::CaseFiled {
                case_no,
                room_id,
                category,
                source,
                occurred_at,
                ..
            } => Some(CaseSummary {
                case_id,
                case_no: case_no.to_string(),
                room_id: room_id.to_string(),
                filed_room_id: room_id.to_string(),
                status: CaseStatus::Filed,
                category: category.as_str().to_string(),
                source: source.as_str().to_string(),
                filed_at: *occurred_at,
                accepted_at: None,
                concluded_at: None,
                mediators: Vec::new(),
                version: 1,
            }),
            _ => None,
        }
    }

    /// Folds one later event into the summary.
    pub fn apply(&mut self, event: &CaseEvent) {
        self.version += 1;
        let at = event.occurred_at();
        match event {
            CaseEvent::CaseFiled { .. } => {}
            CaseEvent::CaseAccepted { .. } => {
                self.status = CaseStatus::Accepted;
                self.accepted_at = Some(at);
            }
            CaseEvent::CaseDeclined { .. } => self.status = CaseStatus::Declined,
            CaseEvent::MediatorAssigned { mediator_id, .. } => {
                self.mediators.push(mediator_id.clone());
                if self.status == CaseStatus::Accepted {
                    self.status = CaseStatus::Assigned;
                }
            }
            CaseEvent::MediatorRecused { mediator_id, .. } => {
                self.mediators.retain(|m| m != mediator_id);
            }
            CaseEvent::SessionRecorded { .. } => self.status = CaseStatus::InMediation,
            CaseEvent::AgreementReached { .. } => {
                self.status = CaseStatus::Resolved;
                self.concluded_at = Some(at);
            }
            CaseEvent::MediationTerminated { .. } => {
                self.status = CaseStatus::Terminated;
                self.concluded_at = Some(at);
            }
            CaseEvent::CaseTransferred { to_room_id, .. } => self.room_id = to_room_id.to_string(),
            CaseEvent::CaseClosed { .. } => self.status = CaseStatus::Closed,
            CaseEvent::JudicialConfirmationRecorded { .. }
            | CaseEvent::FollowUpRecorded { .. }
            | CaseEvent::NoteAdded { .. } => {}
        }
    }
}
