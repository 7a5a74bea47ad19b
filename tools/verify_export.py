#!/usr/bin/env python3
"""Verify a tiaojie export independently of tiaojie.

    python3 tools/verify_export.py EXPORT.jsonl [--digest HEX --position N]
    python3 tools/verify_export.py --self-test

EXPORT.jsonl is the output of `tiaojie export --all` (or `--case ID`): one JSON object per
event, in log order. This script trusts nothing but that file and, when given, a digest the
auditor kept from `GET /api/v1/audit/digest`. Every hash is recomputed here from the events'
content with the format of docs/AUDIT.md; the stored hashes are only compared, never used.

It checks, for each case, in file order:
  - sequences run 1, 2, 3, ... without gaps;
  - each prev_hash is the recomputed hash of the case's previous event (zeros for the first);
  - each hash recomputes from the event's content.
With --digest and --position it recomputes the log digest over the lines in file order up to
and including the line with that position and compares it with the kept digest. Only that
catches a case rewritten and re-chained as a whole, or a case's last event removed.

Prints one line per problem and a summary. Exit 0 when everything is valid, 1 when anything
is not, 2 on usage or parse errors. Python 3 standard library only.
"""

import argparse
import hashlib
import json
import sys

ZERO = bytes(32)
KEYS = {
    "position": int, "case_id": str, "sequence": int, "event_type": str,
    "event_version": str, "payload": object, "metadata": object, "recorded_at": str,
    "prev_hash": str, "hash": str,
}


# --- Canonical JSON, byte for byte as chain.rs's canonical_json (serde_json) writes it -------

def _parse_int(text):
    # serde_json keeps integers that fit u64 / i64; larger ones, and -0, become floats.
    value = int(text)
    if value == 0 and text.startswith("-"):
        return -0.0
    if -(2**63) <= value < 2**64:
        return value
    return float(text)


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads(text):
    """Parses JSON as serde_json does (numbers included)."""
    return json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)


def _float(x):
    """An f64 as serde_json writes it: shortest round-trip digits, ryu's layout."""
    if x == 0:
        return "-0.0" if str(x).startswith("-") else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    exp = int(exp or 0) - len(frac)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    point = len(digits) + exp  # the value is 0.<digits> * 10^point
    if 0 <= exp and point <= 16:
        return f"{sign}{digits}{'0' * exp}.0"
    if 0 < point <= 16:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    if -5 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    e = point - 1
    e = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    if len(digits) == 1:
        return f"{sign}{digits}{e}"
    return f"{sign}{digits[0]}.{digits[1:]}{e}"


def canonical_json(value):
    """Keys sorted by code point, no white space, strings escaped as serde_json escapes them."""
    if isinstance(value, dict):
        items = (f"{canonical_json(k)}:{canonical_json(value[k])}" for k in sorted(value))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if value is None or isinstance(value, (bool, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    raise TypeError(f"not a JSON value: {value!r}")


# --- The event hash and the digest -----------------------------------------------------------

def occurred_at(payload):
    """The payload's inner object's occurred_at ({"CaseFiled": {"occurred_at": ...}}), or ""."""
    if not isinstance(payload, dict) or not payload:
        return ""
    inner = payload[min(payload)]
    value = inner.get("occurred_at") if isinstance(inner, dict) else None
    return value if isinstance(value, str) else ""


def event_hash(prev, e):
    """SHA-256(prev || field(case_id) || field(sequence) || ... || field(cjson(metadata)))."""
    h = hashlib.sha256(prev)
    for text in (
        e["case_id"], str(max(e["sequence"], 0)), e["event_type"], e["event_version"],
        canonical_json(e["payload"]), occurred_at(e["payload"]), e["recorded_at"],
        canonical_json(e["metadata"]),
    ):
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(4, "big") + data)
    return h.digest()


def check_case(events):
    """(first invalid sequence, why) for one case's events in file order, or None."""
    prev = ZERO
    for expected, e in enumerate(events, 1):
        recomputed = event_hash(prev, e)
        why = None
        if e["sequence"] != expected:
            why = f"sequence {e['sequence']} where {expected} was expected (removed or reordered)"
        elif e["prev_hash"] != prev.hex():
            why = "prev_hash is not the previous event's hash"
        elif e["hash"] != recomputed.hex():
            why = "hash does not match the content (changed)"
        if why:
            return min(expected, e["sequence"]), why
        prev = recomputed
    return None


def digest(events, position):
    """(digest hex, events covered) up to and including `position`, or None if absent."""
    d, heads = ZERO, {}
    for count, e in enumerate(events, 1):
        prev = ZERO if e["sequence"] <= 1 else heads.get(e["case_id"], ZERO)
        heads[e["case_id"]] = h = event_hash(prev, e)
        d = hashlib.sha256(d + h).digest()
        if e["position"] == position:
            return d.hex(), count
    return None


# --- Reading the export and reporting ---------------------------------------------------------

class Unreadable(Exception):
    """The export cannot be read as tiaojie events."""


def read_export(path):
    events = []
    with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                e = loads(line)
                if not isinstance(e, dict):
                    raise ValueError("not a JSON object")
                for key, kind in KEYS.items():
                    if key not in e:
                        raise ValueError(f"no {key}")
                    if not isinstance(e[key], kind) or (kind is int and isinstance(e[key], bool)):
                        raise ValueError(f"{key} is not a {kind.__name__}")
                canonical_json(e).encode("utf-8")  # lone surrogates: serde_json refuses them
            except (ValueError, UnicodeError) as err:
                raise Unreadable(f"{path}:{number}: cannot read the event: {err}") from err
            events.append(e)
    return events


def self_test():
    cj = canonical_json(loads('{"b": 1, "a": {"d": [1, "x\\n\\"y\\""], "c": null}, "中": "文"}'))
    assert cj == '{"a":{"c":null,"d":[1,"x\\n\\"y\\""]},"b":1,"中":"文"}', cj
    for text, want in [("1e20", "1e+20"), ("1e-7", "1e-7"), ("0.00001", "0.00001"), ("-0", "-0.0"),
                       ("1e15", "1000000000000000.0"), ("12.5", "12.5"), ("7", "7"),
                       ('"\\u0001\\t\\u007f"', '"\\u0001\\t\x7f"')]:
        assert canonical_json(loads(text)) == want, (text, canonical_json(loads(text)))
    vector = {
        "case_id": "00000000-0000-0000-0000-000000000001", "sequence": 1,
        "event_type": "NoteAdded", "event_version": "1",
        "payload": {"NoteAdded": {"text": "电话联系", "occurred_at": "2026-01-05T01:00:00Z"}},
        "metadata": {"sub": "m-1", "role": "mediator", "request_id": "r-1"},
        "recorded_at": "2026-01-05T01:00:01.000000Z",
    }
    got = event_hash(ZERO, vector).hex()
    assert got == "d24e464a6ebb85b438d24c8855022d3bcd2fc0aadc6bdf05c9848e65525549e6", got
    print("self-test passed")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Verify a tiaojie export (JSON Lines).")
    parser.add_argument("export", nargs="?", help="the file `tiaojie export` wrote ('-': stdin)")
    parser.add_argument("--digest", help="a digest kept from GET /api/v1/audit/digest (hex)")
    parser.add_argument("--position", type=int, help="the position that digest was given for")
    parser.add_argument("--self-test", action="store_true", help="check the fixed test vectors")
    args = parser.parse_args(argv)
    if args.self_test:
        try:
            self_test()
        except AssertionError as err:
            print(f"self-test FAILED: {err}")
            return 1
        return 0
    if args.export is None:
        parser.error("give the export file (or --self-test)")
    if (args.digest is None) != (args.position is None):
        parser.error("--digest and --position go together")
    if args.digest is not None:
        try:
            if len(bytes.fromhex(args.digest)) != 32:
                raise ValueError
        except ValueError:
            parser.error("--digest must be 64 hex digits")
    try:
        events = read_export(args.export)
    except (OSError, UnicodeError, Unreadable) as err:
        print(f"verify_export: {err}", file=sys.stderr)
        return 2

    cases = {}
    for e in events:
        cases.setdefault(e["case_id"], []).append(e)
    problems = 0
    for case_id in sorted(cases):
        bad = check_case(cases[case_id])
        if bad:
            problems += 1
            print(f"case {case_id}: first invalid sequence {bad[0]}: {bad[1]}")
    print(f"{len(events)} events in {len(cases)} cases checked, {problems} invalid")

    if args.digest is not None:
        found = digest(events, args.position)
        if found is None:
            problems += 1
            print(f"digest mismatch at position {args.position}: no such position in the export")
        elif found[0] != args.digest.lower():
            problems += 1
            print(f"digest mismatch at position {args.position}")
        else:
            print(f"digest at position {args.position} over {found[1]} events matches")
    print("VALID" if problems == 0 else "INVALID")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
