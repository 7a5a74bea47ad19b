//! The hash chain: the exact bytes each event's hash covers, and how a chain and the whole log
//! are checked. Pure functions; `docs/AUDIT.md` specifies the same format for re-implementers
//! and `tools/verify_export.py` is an independent implementation of it.
//!
//! ```text
//! hash(n)      = SHA-256( prev_hash(n) ‖ canonical(n) )      prev_hash(1) = 32 zero bytes
//! canonical(n) = field(case_id) ‖ field(decimal sequence) ‖ field(event_type)
//!              ‖ field(event_version) ‖ field(cjson(payload)) ‖ field(occurred_at)
//!              ‖ field(recorded_at) ‖ field(cjson(metadata))
//! field(s)     = 4-byte big-endian length of s in UTF-8 ‖ s in UTF-8
//! cjson(v)     = JSON with object keys sorted by code point, no white space
//! digest(0)    = 32 zero bytes;  digest(i) = SHA-256( digest(i-1) ‖ hash(i) ), in log order
//! ```
//!
//! `metadata` holds the actor (`sub`, `role`) and the request id, so a changed actor breaks the
//! chain. Invariant: [`event_hash`] is the only place the format is written down in code.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// The `prev_hash` of a case's first event.
pub const ZERO: Hash = [0u8; 32];

/// Lower-case hex.
pub fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex of 32 bytes.
pub fn parse_hex(text: &str) -> Option<Hash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Canonical JSON: keys sorted by code point, no insignificant white space, strings escaped as
/// serde_json (and Python's `json.dumps(..., ensure_ascii=False)`) escape them.
pub fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).unwrap_or_default());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// What an event's hash covers.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    /// The case id.
    pub case_id: &'a str,
    /// The event's sequence within its case.
    pub sequence: u64,
    /// The stable type name.
    pub event_type: &'a str,
    /// The payload version.
    pub event_version: &'a str,
    /// The payload as stored.
    pub payload: &'a Value,
    /// When the store recorded it, as stored (`YYYY-MM-DDTHH:MM:SS.ffffffZ`).
    pub recorded_at: &'a str,
    /// Actor and request, as stored.
    pub metadata: &'a Value,
}

/// The `occurred_at` a payload carries (`{"CaseFiled": {"occurred_at": …}}`), or "".
pub fn occurred_at(payload: &Value) -> &str {
    payload
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|inner| inner.get("occurred_at"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u32).to_be_bytes());
    hasher.update(bytes);
}

/// The hash of an event that follows `prev`.
pub fn event_hash(prev: &Hash, e: &EventFields<'_>) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    field(&mut hasher, e.case_id.as_bytes());
    field(&mut hasher, e.sequence.to_string().as_bytes());
    field(&mut hasher, e.event_type.as_bytes());
    field(&mut hasher, e.event_version.as_bytes());
    let mut json = String::with_capacity(512);
    canonical_json(e.payload, &mut json);
    field(&mut hasher, json.as_bytes());
    field(&mut hasher, occurred_at(e.payload).as_bytes());
    field(&mut hasher, e.recorded_at.as_bytes());
    json.clear();
    canonical_json(e.metadata, &mut json);
    field(&mut hasher, json.as_bytes());
    hasher.finalize().into()
}

/// The next step of the log digest.
pub fn digest_step(digest: &Hash, event_hash: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(digest);
    hasher.update(event_hash);
    hasher.finalize().into()
}

/// A stored event as the verifier reads it.
#[derive(Debug, Clone)]
pub struct ChainedEvent {
    /// The event's sequence within its case.
    pub sequence: u64,
    /// The stable type name.
    pub event_type: String,
    /// The payload version.
    pub event_version: String,
    /// The payload as stored.
    pub payload: Value,
    /// Actor and request, as stored.
    pub metadata: Value,
    /// When recorded, as stored.
    pub recorded_at: String,
    /// The stored `prev_hash` (hex).
    pub prev_hash: String,
    /// The stored `hash` (hex).
    pub hash: String,
}

/// The outcome of checking one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseCheck {
    /// Events looked at.
    pub events_checked: u64,
    /// The recomputed hash of the last event (the chain's head).
    pub head_hash: Hash,
    /// The first sequence at which the stored log differs from an intact chain.
    pub first_invalid_sequence: Option<u64>,
}

/// Checks one case's events (ordered by sequence) against its chain and its recorded head
/// (`last_sequence`, `head_hash`): sequences run 1, 2, 3… without gaps, each `prev_hash` is the
/// previous event's hash, each `hash` recomputes, and the log ends where the head says.
pub fn check_case(case_id: &str, events: &[ChainedEvent], head: Option<(u64, &str)>) -> CaseCheck {
    let mut prev = ZERO;
    let mut first_invalid = None;
    for (expected, e) in (1u64..).zip(events) {
        let fields = EventFields {
            case_id,
            sequence: e.sequence,
            event_type: &e.event_type,
            event_version: &e.event_version,
            payload: &e.payload,
            recorded_at: &e.recorded_at,
            metadata: &e.metadata,
        };
        let recomputed = event_hash(&prev, &fields);
        if first_invalid.is_none()
            && (e.sequence != expected || e.prev_hash != hex(&prev) || e.hash != hex(&recomputed))
        {
            first_invalid = Some(expected.min(e.sequence));
        }
        prev = recomputed;
    }
    let last = events.last().map(|e| e.sequence).unwrap_or(0);
    if first_invalid.is_none() {
        match head {
            Some((head_sequence, head_hash)) => {
                if head_sequence > last {
                    first_invalid = Some(last + 1);
                } else if head_sequence < last {
                    first_invalid = Some(head_sequence + 1);
                } else if head_hash != hex(&prev) {
                    first_invalid = Some(last.max(1));
                }
            }
            None => first_invalid = Some(1),
        }
    }
    CaseCheck {
        events_checked: events.len() as u64,
        head_hash: prev,
        first_invalid_sequence: first_invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_drops_white_space() {
        let mut out = String::new();
        canonical_json(
            &json!({"b": 1, "a": {"d": [1, "x\n\"y\""], "c": null}, "中": "文"}),
            &mut out,
        );
        assert_eq!(
            out,
            r#"{"a":{"c":null,"d":[1,"x\n\"y\""]},"b":1,"中":"文"}"#
        );
    }

    #[test]
    fn a_known_event_hashes_to_a_known_value() {
        // The same vector is checked by tools/verify_export.py's self-test.
        let payload =
            json!({"NoteAdded": {"text": "电话联系", "occurred_at": "2026-01-05T01:00:00Z"}});
        let metadata = json!({"sub": "m-1", "role": "mediator", "request_id": "r-1"});
        let fields = EventFields {
            case_id: "00000000-0000-0000-0000-000000000001",
            sequence: 1,
            event_type: "NoteAdded",
            event_version: "1",
            payload: &payload,
            recorded_at: "2026-01-05T01:00:01.000000Z",
            metadata: &metadata,
        };
        let h = hex(&event_hash(&ZERO, &fields));
        assert_eq!(h.len(), 64);
        assert_eq!(h, hex(&event_hash(&ZERO, &fields)));
        assert_ne!(h, hex(&event_hash(&parse_hex(&h).unwrap(), &fields)));
        assert_eq!(
            h,
            "d24e464a6ebb85b438d24c8855022d3bcd2fc0aadc6bdf05c9848e65525549e6"
        );
    }
}
