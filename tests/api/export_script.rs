//! The export and the independent verifier: the real binary's `tiaojie export` writes the log,
//! `tools/verify_export.py` recomputes every hash and the digest an auditor kept, accepts the
//! untouched export and finds each kind of tampering in a copy of it.

use crate::both_stores;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tiaojie::audit::chain::{self, EventFields};

/// A temporary folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("tiaojie-export-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Three cases with several steps each, interleaved in the log; returns their ids.
async fn build_cases(app: &TestApp) -> [String; 3] {
    let ra = room_admin("R01");
    let a = app.file(&ra, "R01").await;
    let b = app.file(&ra, "R01").await;
    let ok = |reply: Reply, what: &str| {
        assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.body);
    };
    let c = |id: &str, step: &str| format!("/api/v1/cases/{id}/{step}");
    ok(
        app.post(&c(&a, "accept"), &ra, json!({"note": "材料齐全"}))
            .await,
        "accept a",
    );
    ok(app.post(&c(&b, "accept"), &ra, json!({})).await, "accept b");
    // Quotes, a backslash, line breaks, a tab, an emoji and U+2028: canonical JSON escapes the
    // first five and leaves the rest as UTF-8.
    let awkward = "双方\"同意\"\\分期\n第二行\r\t制表 😀 </script>\u{2028}";
    ok(
        app.post(&c(&a, "notes"), &ra, json!({"text": awkward}))
            .await,
        "note a",
    );
    let keyed = app
        .send(
            Method::POST,
            &c(&b, "notes"),
            Some(&ra),
            json!({"text": "电话联系双方"}),
            &[("idempotency-key", "export-script-note-b")],
        )
        .await;
    ok(keyed, "note b (with an idempotency key)");
    ok(
        app.post(
            &c(&a, "mediators"),
            &ra,
            json!({"mediator_id": "m-0001", "name": "李调解"}),
        )
        .await,
        "mediator a",
    );
    let c3 = app.file(&ra, "R01").await;
    ok(
        app.post(&c(&a, "notes"), &ra, json!({"text": "第二次电话联系"}))
            .await,
        "note a again",
    );
    ok(
        app.post(&c(&b, "mediators"), &ra, json!({"mediator_id": "m-0002"}))
            .await,
        "mediator b",
    );
    ok(
        app.post(&c(&c3, "accept"), &ra, json!({"note": "受理"}))
            .await,
        "accept c",
    );
    ok(
        app.post(&c(&c3, "notes"), &ra, json!({"text": "最后一条"}))
            .await,
        "note c",
    );
    [a, b, c3]
}

/// The digest of the whole log as an auditor keeps it: `(position, digest)`. Waits until it
/// covers every event (on PostgreSQL a transaction elsewhere on the server can hold the final
/// log back for a moment).
async fn kept_digest(app: &TestApp) -> (i64, String) {
    let total = app.total_events().await;
    for _ in 0..100 {
        let reply = app.get("/api/v1/audit/digest", &admin()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        if reply.body["events"].as_i64() == Some(total) {
            return (
                reply.body["position"].as_i64().unwrap(),
                reply.body["digest"].as_str().unwrap().to_string(),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the digest never covered all {total} events");
}

/// Runs the real binary's `export ARGS` against the app's database into `out`; returns its lines.
async fn export(app: &TestApp, scratch: &Scratch, args: &[&str], out: &Path) -> Vec<Value> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tiaojie"));
    command
        .arg("export")
        .args(args)
        .env("TIAOJIE_DATABASE_URL", &app.url)
        .env("TIAOJIE_DATA_DIR", scratch.file("data"))
        .env("TIAOJIE_JWT_SECRET", SECRET)
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "tiaojie export {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Runs `python3 tools/verify_export.py ARGS`; returns the exit code and standard output.
fn verify(args: &[&str]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/verify_export.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3 (the verifier needs Python 3)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (
        output.status.code().expect("the verifier exited"),
        format!("{stdout}{stderr}"),
    )
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The index in `lines` of the `n`-th (from 0) event of `case_id`.
fn nth_of(lines: &[Value], case_id: &str, n: usize) -> usize {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["case_id"] == case_id)
        .nth(n)
        .map(|(i, _)| i)
        .unwrap()
}

/// The index in `lines` of the last event of `case_id`.
fn last_of(lines: &[Value], case_id: &str) -> usize {
    lines.iter().rposition(|l| l["case_id"] == case_id).unwrap()
}

/// Recomputes every `prev_hash` and `hash` of one case, as an attacker with the format would.
fn rechain(lines: &mut [Value], case_id: &str) {
    let mut prev = chain::ZERO;
    for line in lines.iter_mut().filter(|l| l["case_id"] == case_id) {
        let hash = chain::event_hash(
            &prev,
            &EventFields {
                case_id,
                sequence: line["sequence"].as_u64().unwrap(),
                event_type: line["event_type"].as_str().unwrap(),
                event_version: line["event_version"].as_str().unwrap(),
                payload: &line["payload"],
                recorded_at: line["recorded_at"].as_str().unwrap(),
                metadata: &line["metadata"],
            },
        );
        line["prev_hash"] = json!(chain::hex(&prev));
        line["hash"] = json!(chain::hex(&hash));
        prev = hash;
    }
}

async fn an_export_verifies_against_the_kept_digest(backend: Backend) {
    let app = TestApp::start(backend).await;
    let scratch = Scratch::new();
    let [a, b, _] = build_cases(&app).await;
    let (position, digest) = kept_digest(&app).await;
    let file = scratch.file("log.jsonl");
    let lines = export(&app, &scratch, &["--all"], &file).await;
    assert_eq!(lines.len() as i64, app.total_events().await);
    assert_eq!(lines.last().unwrap()["position"], position);
    let b_note = &lines[nth_of(&lines, &b, 2)];
    assert_eq!(b_note["event_type"], "NoteAdded");
    assert!(b_note["metadata"]["idempotency_key"].is_string());
    let path = file.to_str().unwrap();

    let (code, out) = verify(&[
        path,
        "--digest",
        &digest,
        "--position",
        &position.to_string(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("digest at position {position} over")),
        "{out}"
    );
    let (code, out) = verify(&[path]);
    assert_eq!(code, 0, "{out}");

    // A digest kept earlier, at a position in the middle of the log, still checks.
    let middle = lines[lines.len() / 2]["position"].as_i64().unwrap();
    let reply = app
        .get(&format!("/api/v1/audit/digest?position={middle}"), &admin())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let earlier = reply.body["digest"].as_str().unwrap();
    let (code, out) = verify(&[path, "--digest", earlier, "--position", &middle.to_string()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&[
        path,
        "--digest",
        earlier,
        "--position",
        &position.to_string(),
    ]);
    assert_eq!(code, 1, "another position's digest does not match: {out}");
    assert!(
        out.contains(&format!("digest mismatch at position {position}")),
        "{out}"
    );

    // One case exported alone verifies alone.
    let one = scratch.file("case.jsonl");
    let case_lines = export(&app, &scratch, &["--case", &a], &one).await;
    assert_eq!(case_lines.len(), app.event_count(&a).await);
    assert!(case_lines.iter().all(|l| l["case_id"] == a.as_str()));
    let (code, out) = verify(&[one.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    let (code, out) = verify(&["--self-test"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&[path, "--digest", &digest]);
    assert_eq!(
        code, 2,
        "--digest without --position is a usage error: {out}"
    );
}

async fn every_kind_of_tampering_is_found(backend: Backend) {
    let app = TestApp::start(backend).await;
    let scratch = Scratch::new();
    let [a, b, c] = build_cases(&app).await;
    let (position, digest) = kept_digest(&app).await;
    let original = export(&app, &scratch, &["--all"], &scratch.file("log.jsonl")).await;
    let position = position.to_string();
    // Each tampered copy: its name, the lines, the problem line expected (None: the chains
    // still verify, and only the kept digest catches it).
    let mut copies: Vec<(&str, Vec<Value>, Option<String>)> = Vec::new();

    let mut lines = original.clone();
    let i = nth_of(&lines, &a, 2);
    assert_eq!(lines[i]["event_type"], "NoteAdded");
    lines[i]["payload"]["NoteAdded"]["text"] = json!("双方不同意");
    copies.push((
        "changed payload",
        lines,
        Some(format!("case {a}: first invalid sequence 3: ")),
    ));

    let mut lines = original.clone();
    lines.remove(nth_of(&lines, &a, 1));
    copies.push((
        "removed middle event",
        lines,
        Some(format!("case {a}: first invalid sequence 2: ")),
    ));

    let mut lines = original.clone();
    let (i, j) = (nth_of(&lines, &b, 1), nth_of(&lines, &b, 2));
    let (si, sj) = (lines[i]["sequence"].clone(), lines[j]["sequence"].clone());
    lines[i]["sequence"] = sj;
    lines[j]["sequence"] = si;
    copies.push((
        "swapped sequences",
        lines,
        Some(format!("case {b}: first invalid sequence 2: ")),
    ));

    let mut lines = original.clone();
    let i = nth_of(&lines, &c, 1);
    lines[i]["metadata"]["sub"] = json!("someone-else");
    copies.push((
        "changed actor",
        lines,
        Some(format!("case {c}: first invalid sequence 2: ")),
    ));

    let mut lines = original.clone();
    let i = last_of(&lines, &a);
    assert!(
        i + 1 < lines.len(),
        "case a's last event is not the log's last"
    );
    lines.remove(i);
    copies.push(("removed a case's last event", lines, None));

    let mut lines = original.clone();
    let i = nth_of(&lines, &b, 2);
    lines[i]["payload"]["NoteAdded"]["text"] = json!("从未联系");
    rechain(&mut lines, &b);
    assert_ne!(lines[i]["hash"], original[i]["hash"]);
    copies.push(("re-chained edit", lines, None));

    for (n, (name, lines, expected)) in copies.iter().enumerate() {
        let file = scratch.file(&format!("tampered-{n}.jsonl"));
        write_lines(&file, lines);
        let path = file.to_str().unwrap();
        let (code, out) = verify(&[path]);
        match expected {
            Some(line) => {
                assert_eq!(code, 1, "{name}: {out}");
                assert!(
                    out.contains(line.as_str()),
                    "{name}: wanted {line:?} in {out}"
                );
            }
            None => assert_eq!(code, 0, "{name}: the chains alone pass: {out}"),
        }
        let (code, out) = verify(&[path, "--digest", &digest, "--position", &position]);
        assert_eq!(code, 1, "{name} with the kept digest: {out}");
        assert!(
            out.contains(&format!("digest mismatch at position {position}")),
            "{name}: {out}"
        );
    }

    // The untouched export, rewritten the same way, still verifies: the copies differ only in
    // what was tampered with.
    let file = scratch.file("untouched.jsonl");
    write_lines(&file, &original);
    let (code, out) = verify(&[
        file.to_str().unwrap(),
        "--digest",
        &digest,
        "--position",
        &position,
    ]);
    assert_eq!(code, 0, "{out}");

    let file = scratch.file("broken.jsonl");
    std::fs::write(&file, "{\"position\": 1,\n").unwrap();
    let (code, out) = verify(&[file.to_str().unwrap()]);
    assert_eq!(code, 2, "an unreadable line is a parse error: {out}");
}

both_stores!(
    an_export_verifies_against_the_kept_digest,
    every_kind_of_tampering_is_found,
);
