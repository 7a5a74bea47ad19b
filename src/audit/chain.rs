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
//! chain. Invariant: `hash_parts` (behind [`event_hash`] and [`event_hash_text`]) is the only
//! place the format is written down in code.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// The `prev_hash` of a case's first event.
pub const ZERO: Hash = [0u8; 32];

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex into a fixed buffer.
pub fn hex_into(hash: &Hash, out: &mut [u8; 64]) {
    for (i, b) in hash.iter().enumerate() {
        out[2 * i] = HEX_DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = HEX_DIGITS[(b & 0x0f) as usize];
    }
}

/// Lower-case hex.
pub fn hex(hash: &Hash) -> String {
    let mut buf = [0u8; 64];
    hex_into(hash, &mut buf);
    buf.iter().map(|&b| b as char).collect()
}

/// Whether `text` is exactly `hex(hash)` (lower-case), without allocating.
pub fn hex_eq(text: &str, hash: &Hash) -> bool {
    let mut buf = [0u8; 64];
    hex_into(hash, &mut buf);
    text.as_bytes() == buf
}

/// Parses lower- or upper-case hex of 32 bytes.
pub fn parse_hex(text: &str) -> Option<Hash> {
    parse_hex_with(text, true)
}

/// Parses a stored hash: lower-case hex of 32 bytes only, as [`hex`] writes it, so that a
/// stored value is accepted exactly when [`hex_eq`] would match it.
pub fn parse_stored_hex(text: &str) -> Option<Hash> {
    parse_hex_with(text, false)
}

fn parse_hex_with(text: &str, upper_too: bool) -> Option<Hash> {
    /// Each byte's value as a hex digit: 0–15, 16 for an upper-case digit, 255 otherwise.
    const NIBBLE: [u8; 256] = {
        let mut table = [255u8; 256];
        let mut c = 0;
        while c < 256 {
            table[c] = match c as u8 {
                b'0'..=b'9' => c as u8 - b'0',
                b'a'..=b'f' => c as u8 - b'a' + 10,
                b'A'..=b'F' => 16 + c as u8 - b'A' + 10,
                _ => 255,
            };
            c += 1;
        }
        table
    };
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut seen = 0u8;
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let (hi, lo) = (NIBBLE[pair[0] as usize], NIBBLE[pair[1] as usize]);
        seen |= hi | lo;
        out[i] = ((hi & 15) << 4) | (lo & 15);
    }
    // 255 marks a non-digit; 16 (or 31 for upper-case a–f) an upper-case digit.
    if seen == 255 || (seen & 16 != 0 && !upper_too) {
        return None;
    }
    Some(out)
}

/// A JSON string as serde_json writes it: `"` and `\` escaped, the control characters as `\b`,
/// `\t`, `\n`, `\f`, `\r` or `\u00xx`, everything else verbatim.
fn push_json_str(s: &str, out: &mut String) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x09 => "\\t",
            0x0a => "\\n",
            0x0c => "\\f",
            0x0d => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(HEX_DIGITS[(b >> 4) as usize] as char);
            out.push(HEX_DIGITS[(b & 0x0f) as usize] as char);
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Canonical JSON: keys sorted by code point, no insignificant white space, strings escaped as
/// serde_json (and Python's `json.dumps(..., ensure_ascii=False)`) escape them.
pub fn canonical_json(value: &Value, out: &mut String) {
    use std::fmt::Write;
    match value {
        Value::Object(map) => {
            out.push('{');
            // `serde_json::Map` iterates in key order unless `preserve_order` is on somewhere
            // in the build; sort only when it is not already sorted.
            let sorted = map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b);
            if sorted {
                for (i, (key, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json_str(key, out);
                    out.push(':');
                    canonical_json(v, out);
                }
            } else {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json_str(key, out);
                    out.push(':');
                    canonical_json(&map[key], out);
                }
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
        Value::String(s) => push_json_str(s, out),
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else {
                out.push_str(&serde_json::to_string(n).unwrap_or_default());
            }
        }
    }
}

/// How deep the canonical-text scanner follows nesting before it leaves the text to the parser
/// (serde_json's own limit is 128).
const SCAN_DEPTH: u32 = 100;

/// A scanner that accepts a JSON text only when it is byte for byte the canonical JSON of the
/// value it parses to: keys strictly increasing (so no duplicates) and without escapes, no white
/// space, strings escaped exactly as [`push_json_str`] escapes them, numbers only as integers of
/// at most 18 digits without leading zeros (and not `-0`). Anything else — including texts that
/// are canonical but unusual, such as floats — is refused, and the caller parses instead.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

/// What an object scan found under the key `occurred_at`.
enum Found {
    /// No such key, or not a string.
    Nothing,
    /// A string without escapes: its byte range.
    Str(usize, usize),
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        let end = self.i.checked_add(lit.len())?;
        (self.b.get(self.i..end)? == lit).then(|| self.i = end)
    }

    /// A string; returns its content's byte range and whether it holds an escape.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            let c = self.peek()?;
            match c {
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return Some((start, end, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => self.i += 1,
                        b'u' => {
                            let digits = self.b.get(self.i + 1..self.i + 5)?;
                            if &digits[..2] != b"00" {
                                return None;
                            }
                            let hi = HEX_DIGITS[..2].iter().position(|&d| d == digits[2])?;
                            let lo = HEX_DIGITS.iter().position(|&d| d == digits[3])?;
                            let v = (hi << 4 | lo) as u8;
                            if matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    fn number(&mut self) -> Option<()> {
        let negative = self.peek()? == b'-';
        if negative {
            self.i += 1;
        }
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        let ok = match digits {
            [] => false,
            [b'0'] => !negative,
            [b'0', ..] => false,
            _ => digits.len() <= 18,
        };
        // A fraction or exponent: left to the parser.
        (ok && !matches!(self.peek(), Some(b'.' | b'e' | b'E'))).then_some(())
    }

    fn value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth + 1, false).map(|_| ()),
            b'[' => {
                if depth + 1 > SCAN_DEPTH {
                    return None;
                }
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object. With `find`, reports the `occurred_at` string among its members; with
    /// `first`, also scans the first member's value that way (the payload's top level).
    fn object_with(&mut self, depth: u32, find: bool, first: bool) -> Option<Found> {
        if depth > SCAN_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        let mut found = Found::Nothing;
        if self.eat(b'}').is_some() {
            return Some(found);
        }
        let mut prev_key: Option<&'a [u8]> = None;
        let mut member = 0usize;
        loop {
            let (ks, ke, escaped) = self.string()?;
            if escaped {
                return None;
            }
            let bytes = self.b;
            let key = &bytes[ks..ke];
            if prev_key.is_some_and(|p| p >= key) {
                return None;
            }
            prev_key = Some(key);
            self.eat(b':')?;
            if first && member == 0 {
                if self.peek()? == b'{' {
                    found = self.object_with(depth + 1, true, false)?;
                } else {
                    self.value(depth)?;
                }
            } else if find && key == b"occurred_at" && self.peek()? == b'"' {
                let (s, e, escaped) = self.string()?;
                if escaped {
                    return None;
                }
                found = Found::Str(s, e);
            } else {
                self.value(depth)?;
            }
            member += 1;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(found);
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: u32, find: bool) -> Option<Found> {
        self.object_with(depth, find, false)
    }
}

/// `Some(occurred_at)` when `payload` is byte for byte its own canonical JSON, `occurred_at`
/// being what [`occurred_at`] returns for the parsed payload; `None` when the text has to be
/// parsed to tell (it may still be valid, just not canonical or unusual).
pub fn canonical_payload_text(payload: &str) -> Option<&str> {
    let mut s = Scanner {
        b: payload.as_bytes(),
        i: 0,
    };
    let occurred = if s.peek()? == b'{' {
        match s.object_with(1, false, true)? {
            Found::Str(a, b) => &payload[a..b],
            Found::Nothing => "",
        }
    } else {
        s.value(0)?;
        ""
    };
    (s.i == s.b.len()).then_some(occurred)
}

/// Whether `text` is byte for byte its own canonical JSON (`false` when unsure: parse it).
pub fn is_canonical_text(text: &str) -> bool {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.value(0).is_some() && s.i == s.b.len()
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

/// The decimal digits of `n` in `buf`, as `n.to_string()` writes them.
fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The hash over the already canonical texts of an event's parts.
#[allow(clippy::too_many_arguments)]
fn hash_parts(
    prev: &Hash,
    case_id: &str,
    sequence: u64,
    event_type: &str,
    event_version: &str,
    payload: &str,
    occurred_at: &str,
    recorded_at: &str,
    metadata: &str,
) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    field(&mut hasher, case_id.as_bytes());
    let mut buf = [0u8; 20];
    field(&mut hasher, decimal(sequence, &mut buf));
    field(&mut hasher, event_type.as_bytes());
    field(&mut hasher, event_version.as_bytes());
    field(&mut hasher, payload.as_bytes());
    field(&mut hasher, occurred_at.as_bytes());
    field(&mut hasher, recorded_at.as_bytes());
    field(&mut hasher, metadata.as_bytes());
    hasher.finalize().into()
}

/// The hash of an event that follows `prev`.
pub fn event_hash(prev: &Hash, e: &EventFields<'_>) -> Hash {
    let mut payload = String::with_capacity(512);
    canonical_json(e.payload, &mut payload);
    let mut metadata = String::with_capacity(128);
    canonical_json(e.metadata, &mut metadata);
    hash_parts(
        prev,
        e.case_id,
        e.sequence,
        e.event_type,
        e.event_version,
        &payload,
        occurred_at(e.payload),
        e.recorded_at,
        &metadata,
    )
}

/// An event's parts as stored: payload and metadata as their stored JSON texts.
#[derive(Debug, Clone, Copy)]
pub struct StoredText<'a> {
    /// The case id.
    pub case_id: &'a str,
    /// The event's sequence within its case.
    pub sequence: u64,
    /// The stable type name.
    pub event_type: &'a str,
    /// The payload version.
    pub event_version: &'a str,
    /// The payload's stored JSON text.
    pub payload: &'a str,
    /// When the store recorded it, as stored.
    pub recorded_at: &'a str,
    /// The metadata's stored JSON text.
    pub metadata: &'a str,
}

/// The same hash as [`event_hash`] over the parsed texts: when both stored texts are already
/// canonical JSON (what the append path writes), their bytes are hashed as they are; otherwise
/// they are parsed and canonicalized. An error when a text is not JSON.
pub fn event_hash_text(prev: &Hash, e: &StoredText<'_>) -> Result<Hash, serde_json::Error> {
    if let Some(occurred) = canonical_payload_text(e.payload) {
        if is_canonical_text(e.metadata) {
            return Ok(hash_parts(
                prev,
                e.case_id,
                e.sequence,
                e.event_type,
                e.event_version,
                e.payload,
                occurred,
                e.recorded_at,
                e.metadata,
            ));
        }
    }
    let payload: Value = serde_json::from_str(e.payload)?;
    let metadata: Value = serde_json::from_str(e.metadata)?;
    Ok(event_hash(
        prev,
        &EventFields {
            case_id: e.case_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            payload: &payload,
            recorded_at: e.recorded_at,
            metadata: &metadata,
        },
    ))
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

/// One case's chain checked event by event, in sequence order, without holding the events:
/// what [`check_case`] does over a slice.
#[derive(Debug, Clone)]
pub struct CaseChecker {
    prev: Hash,
    expected: u64,
    last: u64,
    first_invalid: Option<u64>,
}

impl Default for CaseChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl CaseChecker {
    /// Before the case's first event.
    pub fn new() -> Self {
        Self {
            prev: ZERO,
            expected: 1,
            last: 0,
            first_invalid: None,
        }
    }

    /// The hash the next event must chain to (its `prev_hash`).
    pub fn prev(&self) -> &Hash {
        &self.prev
    }

    /// The next event: its stored `sequence`, its hash recomputed over `prev()`, and its stored
    /// `prev_hash` and `hash` (hex).
    pub fn step(&mut self, sequence: u64, recomputed: Hash, prev_hash: &str, hash: &str) {
        let expected = self.expected;
        if self.first_invalid.is_none()
            && (sequence != expected
                || !hex_eq(prev_hash, &self.prev)
                || !hex_eq(hash, &recomputed))
        {
            self.first_invalid = Some(expected.min(sequence));
        }
        self.prev = recomputed;
        self.last = sequence;
        self.expected += 1;
    }

    /// The next event when each event was hashed on its own over its *stored* `prev_hash`
    /// (so that events can be hashed in any order): `intact` says that hash equals the stored
    /// `hash`; `prev` and `hash` are the stored values, `None` when not valid hex.
    ///
    /// Gives the same verdict as [`CaseChecker::step`]: while every earlier event is intact and
    /// linked, the chain's recomputed hash of the previous event *is* its stored hash, so
    /// "`prev_hash` equals the previous stored hash and the event hashes to its stored hash over
    /// it" is exactly "`prev_hash` equals the recomputed previous hash and the event recomputes".
    /// After the first failure nothing more is decided.
    pub fn step_linked(
        &mut self,
        sequence: u64,
        intact: bool,
        prev: Option<&Hash>,
        hash: Option<&Hash>,
    ) {
        let expected = self.expected;
        if self.first_invalid.is_none()
            && (sequence != expected || !intact || prev != Some(&self.prev) || hash.is_none())
        {
            self.first_invalid = Some(expected.min(sequence));
        }
        self.prev = hash.copied().unwrap_or(ZERO);
        self.last = sequence;
        self.expected += 1;
    }

    /// The verdict against the case's recorded head (`last_sequence`, `head_hash`).
    pub fn finish(self, head: Option<(u64, &str)>) -> CaseCheck {
        let last = self.last;
        let mut first_invalid = self.first_invalid;
        if first_invalid.is_none() {
            match head {
                Some((head_sequence, head_hash)) => {
                    if head_sequence > last {
                        first_invalid = Some(last + 1);
                    } else if head_sequence < last {
                        first_invalid = Some(head_sequence + 1);
                    } else if !hex_eq(head_hash, &self.prev) {
                        first_invalid = Some(last.max(1));
                    }
                }
                None => first_invalid = Some(1),
            }
        }
        CaseCheck {
            events_checked: self.expected - 1,
            head_hash: self.prev,
            first_invalid_sequence: first_invalid,
        }
    }
}

/// Checks one case's events (ordered by sequence) against its chain and its recorded head
/// (`last_sequence`, `head_hash`): sequences run 1, 2, 3… without gaps, each `prev_hash` is the
/// previous event's hash, each `hash` recomputes, and the log ends where the head says.
pub fn check_case(case_id: &str, events: &[ChainedEvent], head: Option<(u64, &str)>) -> CaseCheck {
    let mut checker = CaseChecker::new();
    for e in events {
        let fields = EventFields {
            case_id,
            sequence: e.sequence,
            event_type: &e.event_type,
            event_version: &e.event_version,
            payload: &e.payload,
            recorded_at: &e.recorded_at,
            metadata: &e.metadata,
        };
        let recomputed = event_hash(checker.prev(), &fields);
        checker.step(e.sequence, recomputed, &e.prev_hash, &e.hash);
    }
    checker.finish(head)
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

    /// The canonical JSON as first written: a `String` per key and scalar from serde_json.
    fn reference_canonical(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    reference_canonical(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    reference_canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&serde_json::to_string(other).unwrap()),
        }
    }

    const TEXTS: &[&str] = &[
        r#"{"NoteAdded":{"occurred_at":"2026-01-05T01:00:00Z","text":"电话联系"}}"#,
        r#"{"NoteAdded":{"text":"电话联系","occurred_at":"2026-01-05T01:00:00Z"}}"#,
        r#"{ "NoteAdded": {"occurred_at": "2026-01-05T01:00:00Z"} }"#,
        r#"{"A":{"occurred_at":"x"},"B":{"occurred_at":"y"}}"#,
        r#"{"B":{"occurred_at":"y"},"A":{"occurred_at":"x"}}"#,
        r#"{"A":{"occurred_at":1}}"#,
        r#"{"A":{"occurred_at":"a\"b"}}"#,
        r#"{"A":{"occurred_at":"a\u0001b\n"}}"#,
        r#"{"A":{"occurred_at":"a\u000ab"}}"#,
        r#"{"A":{"occurred_at":"a\u0041b"}}"#,
        r#"{"A":{"occurred_at":"a\/b"}}"#,
        r#"{"A":{"occurred_at":"x"},"A":{"occurred_at":"y"}}"#,
        r#"{"A":{"occurred_at":"x","occurred_at":"y"}}"#,
        r#"{"A":[{"occurred_at":"x"}]}"#,
        r#"{"A":"x"}"#,
        r#"{}"#,
        r#"[]"#,
        r#""occurred_at""#,
        r#"{"a\"b":1,"a":2}"#,
        r#"{"k":[1,-2,0,-0,1.5,1e3,12345678901234567890,-9223372036854775808,true,false,null]}"#,
        r#"{"k":[1,-2,0]}"#,
        r#"{"k":-0}"#,
        r#"{"k":01}"#,
        r#"{"k":1.0}"#,
        r#"{"k":"\u007f"}"#,
        "{\"k\":\"\u{7f}\u{2028}\"}",
        r#"{"k":{"z":{},"y":[],"x":[[]]}}"#,
        r#"{"k":{"x":[[]],"y":[],"z":{}}}"#,
        r#"{"request_id":"r-1","role":"mediator","sub":"m-1"}"#,
        r#"{"sub":"m-1","role":"mediator","request_id":"r-1"}"#,
    ];

    #[test]
    fn canonical_json_matches_the_reference_writer() {
        let mut tricky = String::new();
        for c in (0u8..0x80)
            .map(char::from)
            .chain("中文\u{2028}\u{10ffff}".chars())
        {
            tricky.push(c);
        }
        let value = json!({tricky.clone(): [tricky.clone(), 1, -1, 1.5, 1e300, u64::MAX, i64::MIN, null, true, false, {}, []], "": {"b": 0, "a": 0}});
        let (mut ours, mut reference) = (String::new(), String::new());
        canonical_json(&value, &mut ours);
        reference_canonical(&value, &mut reference);
        assert_eq!(ours, reference);
        for text in TEXTS {
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                let (mut ours, mut reference) = (String::new(), String::new());
                canonical_json(&v, &mut ours);
                reference_canonical(&v, &mut reference);
                assert_eq!(ours, reference, "{text}");
            }
        }
    }

    #[test]
    fn a_text_taken_as_canonical_is_its_own_canonical_json() {
        let mut accepted = 0;
        for text in TEXTS {
            let parsed = serde_json::from_str::<Value>(text);
            let fast = canonical_payload_text(text);
            if let Some(occurred) = fast {
                accepted += 1;
                let v = parsed.as_ref().expect("accepted texts parse");
                let mut canonical = String::new();
                canonical_json(v, &mut canonical);
                assert_eq!(&canonical, text);
                assert_eq!(occurred, occurred_at(v), "{text}");
                assert!(is_canonical_text(text));
            }
            if let Ok(v) = &parsed {
                let mut canonical = String::new();
                canonical_json(v, &mut canonical);
                // Whatever the scanner says, the hash over the text is the hash over the value.
                let metadata = json!({"sub": "m-1"});
                let fields = EventFields {
                    case_id: "c",
                    sequence: 12,
                    event_type: "T",
                    event_version: "1",
                    payload: v,
                    recorded_at: "r",
                    metadata: &metadata,
                };
                let text_fields = StoredText {
                    case_id: "c",
                    sequence: 12,
                    event_type: "T",
                    event_version: "1",
                    payload: text,
                    recorded_at: "r",
                    metadata: r#"{"sub":"m-1"}"#,
                };
                assert_eq!(
                    event_hash_text(&ZERO, &text_fields).unwrap(),
                    event_hash(&ZERO, &fields),
                    "{text}"
                );
                if canonical == *text && !text.contains('\\') && !text.contains('.') {
                    assert!(
                        fast.is_some()
                            || text.contains("-0")
                            || text.contains("1234567890123456789"),
                        "{text}"
                    );
                }
            } else {
                assert!(fast.is_none(), "{text}");
            }
        }
        assert!(accepted >= 8, "{accepted}");
        assert!(!is_canonical_text(r#"{"sub":"m-1","role":"x"}"#));
        assert!(event_hash_text(
            &ZERO,
            &StoredText {
                case_id: "c",
                sequence: 1,
                event_type: "T",
                event_version: "1",
                payload: "{",
                recorded_at: "r",
                metadata: "{}",
            }
        )
        .is_err());
    }

    /// A case's chain of `n` intact events.
    fn chain(n: u64) -> Vec<ChainedEvent> {
        let mut prev = ZERO;
        (1..=n)
            .map(|sequence| {
                let payload = json!({"NoteAdded": {"text": format!("第{sequence}次"), "occurred_at": "2026-01-05T01:00:00Z"}});
                let metadata = json!({"sub": "m-1", "role": "mediator", "request_id": format!("r-{sequence}")});
                let hash = event_hash(
                    &prev,
                    &EventFields {
                        case_id: "c-1",
                        sequence,
                        event_type: "NoteAdded",
                        event_version: "1",
                        payload: &payload,
                        recorded_at: "2026-01-05T01:00:01.000000Z",
                        metadata: &metadata,
                    },
                );
                let e = ChainedEvent {
                    sequence,
                    event_type: "NoteAdded".into(),
                    event_version: "1".into(),
                    payload,
                    metadata,
                    recorded_at: "2026-01-05T01:00:01.000000Z".into(),
                    prev_hash: hex(&prev),
                    hash: hex(&hash),
                };
                prev = hash;
                e
            })
            .collect()
    }

    /// What the whole-log verifier does: each event hashed over its stored `prev_hash`, then
    /// the links checked in sequence order.
    fn check_linked(events: &[ChainedEvent], head: Option<(u64, &str)>) -> CaseCheck {
        let mut sorted: Vec<&ChainedEvent> = events.iter().collect();
        sorted.sort_by_key(|e| e.sequence);
        let mut checker = CaseChecker::new();
        for e in sorted {
            let prev = parse_stored_hex(&e.prev_hash);
            let hash = parse_stored_hex(&e.hash);
            let intact = match (&prev, &hash) {
                (Some(p), Some(h)) => {
                    let fields = EventFields {
                        case_id: "c-1",
                        sequence: e.sequence,
                        event_type: &e.event_type,
                        event_version: &e.event_version,
                        payload: &e.payload,
                        recorded_at: &e.recorded_at,
                        metadata: &e.metadata,
                    };
                    &event_hash(p, &fields) == h
                }
                _ => false,
            };
            checker.step_linked(e.sequence, intact, prev.as_ref(), hash.as_ref());
        }
        checker.finish(head)
    }

    /// Re-chains events from index `from` on (what a forger with write access would do).
    fn rechain(events: &mut [ChainedEvent], from: usize) {
        let mut prev = if from == 0 {
            ZERO
        } else {
            parse_hex(&events[from - 1].hash).unwrap()
        };
        for e in &mut events[from..] {
            let fields = EventFields {
                case_id: "c-1",
                sequence: e.sequence,
                event_type: &e.event_type,
                event_version: &e.event_version,
                payload: &e.payload,
                recorded_at: &e.recorded_at,
                metadata: &e.metadata,
            };
            let hash = event_hash(&prev, &fields);
            e.prev_hash = hex(&prev);
            e.hash = hex(&hash);
            prev = hash;
        }
    }

    #[test]
    fn checking_links_in_any_order_gives_the_verdict_of_checking_the_chain_in_order() {
        let intact = chain(6);
        let head_hash = intact[5].hash.clone();
        type Tampered = (&'static str, Vec<ChainedEvent>, Option<(u64, String)>);
        let mut cases: Vec<Tampered> =
            vec![("intact", intact.clone(), Some((6, head_hash.clone())))];
        for k in 0..6 {
            let mut e = intact.clone();
            e[k].payload =
                json!({"NoteAdded": {"text": "改", "occurred_at": "2026-01-05T01:00:00Z"}});
            cases.push(("payload", e.clone(), Some((6, head_hash.clone()))));
            rechain(&mut e, k);
            let new_head = e[5].hash.clone();
            cases.push(("payload, re-chained", e.clone(), Some((6, new_head))));
            cases.push((
                "payload, re-chained, old head",
                e,
                Some((6, head_hash.clone())),
            ));
            let mut e = intact.clone();
            e[k].metadata = json!({"sub": "m-2", "role": "mediator", "request_id": "r"});
            cases.push(("actor", e, Some((6, head_hash.clone()))));
            let mut e = intact.clone();
            e[k].hash = e[k].hash.to_uppercase();
            cases.push(("hash in upper case", e, Some((6, head_hash.clone()))));
            let mut e = intact.clone();
            e[k].prev_hash = "zz".repeat(32);
            cases.push(("prev_hash not hex", e, Some((6, head_hash.clone()))));
            let mut e = intact.clone();
            e.remove(k);
            cases.push(("deleted", e, Some((6, head_hash.clone()))));
            let mut e = intact.clone();
            e[k].sequence = 9;
            cases.push(("renumbered", e, Some((6, head_hash.clone()))));
            if k + 1 < 6 {
                let mut e = intact.clone();
                let (a, b) = (e[k].sequence, e[k + 1].sequence);
                e[k].sequence = b;
                e[k + 1].sequence = a;
                cases.push(("swapped", e, Some((6, head_hash.clone()))));
            }
        }
        let mut e = intact.clone();
        e.pop();
        cases.push(("last deleted", e.clone(), Some((6, head_hash.clone()))));
        let new_head = e[4].hash.clone();
        cases.push(("last deleted, head moved", e, Some((5, new_head))));
        cases.push(("no head", intact.clone(), None));
        cases.push(("head ahead", intact.clone(), Some((7, head_hash.clone()))));
        cases.push((
            "head behind",
            intact.clone(),
            Some((5, intact[4].hash.clone())),
        ));
        cases.push((
            "head hash wrong",
            intact.clone(),
            Some((6, intact[4].hash.clone())),
        ));
        let mut failures = 0;
        for (what, events, head) in &cases {
            let mut in_order = events.clone();
            in_order.sort_by_key(|e| e.sequence);
            let head = head.as_ref().map(|(s, h)| (*s, h.as_str()));
            let ordered = check_case("c-1", &in_order, head);
            let linked = check_linked(events, head);
            assert_eq!(
                (ordered.first_invalid_sequence, ordered.events_checked),
                (linked.first_invalid_sequence, linked.events_checked),
                "{what}"
            );
            failures += usize::from(linked.first_invalid_sequence.is_some());
        }
        // Every tampering but "intact" and the consistent re-chains is caught.
        assert_eq!(failures, cases.len() - 1 - 6 - 1);
    }

    #[test]
    fn hex_helpers_agree() {
        let h = event_hash(
            &ZERO,
            &EventFields {
                case_id: "c",
                sequence: 1234567890,
                event_type: "T",
                event_version: "1",
                payload: &json!({}),
                recorded_at: "r",
                metadata: &json!({}),
            },
        );
        let text = hex(&h);
        assert_eq!(
            text,
            h.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        assert!(hex_eq(&text, &h));
        assert!(!hex_eq(&text.to_uppercase(), &h));
        assert!(!hex_eq(&text[1..], &h));
        assert_eq!(parse_hex(&text), Some(h));
        assert_eq!(parse_hex(&text.to_uppercase()), Some(h));
        assert_eq!(parse_stored_hex(&text), Some(h));
        assert_eq!(parse_stored_hex(&text.to_uppercase()), None);
        assert_eq!(parse_hex(&text[1..]), None);
        assert_eq!(parse_hex(&format!("{}g", &text[1..])), None);
        let mut buf = [0u8; 20];
        for n in [0u64, 1, 9, 10, 99, 100, 1234567890, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
