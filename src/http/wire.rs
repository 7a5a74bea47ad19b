//! The case as the API shows it: money as yuan strings, times as RFC 3339, personal fields masked
//! for everyone but the case's own room staff and admins.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tiaojie_domain::{mask, CaseFile, Money, Outcome, Party};

/// An instant on the wire.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn opt_time(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::String(time(t))).unwrap_or(Value::Null)
}

fn money(m: Option<Money>) -> Value {
    m.map(|m| Value::String(m.to_yuan_string()))
        .unwrap_or(Value::Null)
}

fn party(p: &Party, unmasked: bool) -> Value {
    let personal = |v: &Option<String>, start: usize, end: usize| match v {
        None => Value::Null,
        Some(v) if unmasked => Value::String(v.clone()),
        Some(v) => Value::String(mask(v, start, end)),
    };
    json!({
        "role": p.role,
        "kind": p.kind,
        "name": p.name,
        "credit_code": p.credit_code.as_ref().map(|c| c.as_str()),
        "id_number": personal(&p.id_number, 4, 4),
        "phone": personal(&p.phone, 3, 4),
        "representative": p.representative,
    })
}

fn outcome(o: &Outcome) -> Value {
    match o {
        Outcome::Agreement {
            agreement,
            terms,
            agreed_amount,
            performance_due,
            reached_at,
        } => json!({
            "kind": "agreement",
            "agreement": agreement,
            "terms": terms,
            "agreed_amount": money(*agreed_amount),
            "performance_due": performance_due.map(|d| d.to_string()),
            "reached_at": time(*reached_at),
        }),
        Outcome::Termination {
            reason,
            referred_to,
            note,
            terminated_at,
        } => json!({
            "kind": "termination",
            "reason": reason,
            "referred_to": referred_to,
            "note": note,
            "terminated_at": time(*terminated_at),
        }),
        Outcome::Declined {
            reason,
            declined_at,
        } => json!({
            "kind": "declined",
            "reason": reason,
            "declined_at": time(*declined_at),
        }),
    }
}

/// The case object of API.md.
pub fn case(file: &CaseFile, version: u64, unmasked: bool) -> Value {
    json!({
        "case_id": file.case_id,
        "case_no": file.case_no.to_string(),
        "room_id": file.room_id.as_str(),
        "status": file.status,
        "category": file.category,
        "source": file.source,
        "summary": file.summary,
        "claims": file.claims,
        "industry": file.industry,
        "parties": file.parties.iter().map(|p| party(p, unmasked)).collect::<Vec<_>>(),
        "amount_in_dispute": money(file.amount_in_dispute),
        "mediators": file.mediators.iter().map(|m| json!({
            "mediator_id": m.mediator_id,
            "name": m.name,
            "lead": m.lead,
            "assigned_at": time(m.assigned_at),
        })).collect::<Vec<_>>(),
        "sessions": file.sessions,
        "outcome": file.outcome.as_ref().map(outcome),
        "judicial_confirmation": file.judicial_confirmation.as_ref().map(|j| json!({
            "status": j.status,
            "court": j.court,
            "recorded_at": time(j.recorded_at),
        })),
        "follow_ups": file.follow_ups,
        "latest_performance": file.latest_performance,
        "notes": file.notes,
        "archive_no": file.archive_no,
        "filed_at": time(file.filed_at),
        "accepted_at": opt_time(file.accepted_at),
        "concluded_at": opt_time(file.concluded_at),
        "closed_at": opt_time(file.closed_at),
        "version": version,
    })
}
