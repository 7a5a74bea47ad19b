//! Statistical facts: what one event adds to the statistics. Each fact carries the room the case
//! is in when the event occurs and the event's `occurred_at`, so that any window [from, to) and
//! any grouping is a selection over facts.

use crate::summary::CaseSummary;
use chrono::{DateTime, Utc};
use tiaojie_domain::{CaseEvent, JudicialStatus, Performance, TerminationReason};

/// What a fact counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactKind {
    /// A case filed (carries the amount in dispute, category and source).
    Filed,
    /// A case accepted.
    Accepted,
    /// A case declined.
    Declined,
    /// A case arrived from another room (counted in the receiving room).
    TransferredIn,
    /// A case left for another room (counted in the room it left).
    TransferredOut,
    /// An agreement (carries the agreed amount and, for accepted cases, the duration).
    Resolved,
    /// A termination of any reason (carries the duration for accepted cases).
    Terminated,
    /// A termination because the applicant withdrew.
    Withdrawn,
    /// A termination referring the parties elsewhere.
    Referred,
    /// A case closed.
    Closed,
    /// A court confirmed the agreement.
    JudicialConfirmed,
    /// A return visit (carries the performance found).
    FollowUp,
}

impl FactKind {
    /// Every kind.
    pub const ALL: [FactKind; 12] = [
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
        FactKind::FollowUp,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FactKind::Filed => "filed",
            FactKind::Accepted => "accepted",
            FactKind::Declined => "declined",
            FactKind::TransferredIn => "transferred_in",
            FactKind::TransferredOut => "transferred_out",
            FactKind::Resolved => "resolved",
            FactKind::Terminated => "terminated",
            FactKind::Withdrawn => "withdrawn",
            FactKind::Referred => "referred",
            FactKind::Closed => "closed",
            FactKind::JudicialConfirmed => "judicial_confirmed",
            FactKind::FollowUp => "follow_up",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<FactKind> {
        FactKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One fact.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    /// What it counts.
    pub kind: FactKind,
    /// The room it counts in.
    pub room_id: String,
    /// When the event occurred.
    pub occurred_at: DateTime<Utc>,
    /// An amount in fen (in dispute for `Filed`, agreed for `Resolved`).
    pub amount_fen: Option<u64>,
    /// For a conclusion of an accepted case: microseconds from acceptance.
    pub duration_us: Option<i64>,
    /// The case's category (every fact, so statistics can be grouped by it).
    pub category: String,
    /// For `Filed`: the source; for `FollowUp`: the performance found.
    pub label: Option<String>,
}

fn fact(kind: FactKind, room: &str, category: &str, at: DateTime<Utc>) -> Fact {
    Fact {
        kind,
        room_id: room.to_string(),
        occurred_at: at,
        amount_fen: None,
        duration_us: None,
        category: category.to_string(),
        label: None,
    }
}

/// The facts an event contributes, given the case's summary before it (`None` for the filing).
pub fn facts(before: Option<&CaseSummary>, event: &CaseEvent) -> Vec<Fact> {
    let at = event.occurred_at();
    match (before, event) {
        (
            None,
            CaseEvent::CaseFiled {
                room_id,
                category,
                source,
                amount_in_dispute,
                ..
            },
        ) => vec![Fact {
            amount_fen: amount_in_dispute.map(|m| m.fen()),
            label: Some(source.as_str().to_string()),
            ..fact(FactKind::Filed, room_id.as_str(), category.as_str(), at)
        }],
        (None, _) | (Some(_), CaseEvent::CaseFiled { .. }) => Vec::new(),
        (Some(s), e) => {
            let room = s.room_id.as_str();
            let category = s.category.as_str();
            // Whole microseconds of both instants, as the read models store them: a summary read
            // back from its table (accepted_at cut to microseconds) gives the same duration as
            // one folded in memory.
            let duration = s
                .accepted_at
                .map(|a| at.timestamp_micros().saturating_sub(a.timestamp_micros()));
            match e {
                CaseEvent::CaseAccepted { .. } => {
                    vec![fact(FactKind::Accepted, room, category, at)]
                }
                CaseEvent::CaseDeclined { .. } => {
                    vec![fact(FactKind::Declined, room, category, at)]
                }
                CaseEvent::CaseTransferred { to_room_id, .. } => vec![
                    fact(FactKind::TransferredOut, room, category, at),
                    fact(FactKind::TransferredIn, to_room_id.as_str(), category, at),
                ],
                CaseEvent::AgreementReached { agreed_amount, .. } => vec![Fact {
                    amount_fen: agreed_amount.map(|m| m.fen()),
                    duration_us: duration,
                    ..fact(FactKind::Resolved, room, category, at)
                }],
                CaseEvent::MediationTerminated { reason, .. } => {
                    let mut out = vec![Fact {
                        duration_us: duration,
                        ..fact(FactKind::Terminated, room, category, at)
                    }];
                    match reason {
                        TerminationReason::Withdrawn => {
                            out.push(fact(FactKind::Withdrawn, room, category, at))
                        }
                        TerminationReason::Referred => {
                            out.push(fact(FactKind::Referred, room, category, at))
                        }
                        _ => {}
                    }
                    out
                }
                CaseEvent::CaseClosed { .. } => vec![fact(FactKind::Closed, room, category, at)],
                CaseEvent::JudicialConfirmationRecorded {
                    status: JudicialStatus::Confirmed,
                    ..
                } => vec![fact(FactKind::JudicialConfirmed, room, category, at)],
                CaseEvent::FollowUpRecorded { performance, .. } => vec![Fact {
                    label: Some(
                        match performance {
                            Performance::Full => "full",
                            Performance::Partial => "partial",
                            Performance::None => "none",
                        }
                        .to_string(),
                    ),
                    ..fact(FactKind::FollowUp, room, category, at)
                }],
                _ => Vec::new(),
            }
        }
    }
}
