//! The projector under crashes, replicas and rebuilds, through the real binary where it matters:
//! a server SIGKILLed while writers run resumes with read models equal to a fresh rebuild, row
//! for row, with nothing counted twice; of two servers on one PostgreSQL exactly one projects,
//! and the other takes over when it dies; a rebuild swaps fresh tables in while the API keeps
//! answering; and a new case shows up in the case list within a second.

use crate::both_stores;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tiaojie::store::read_models::CHECKPOINT;
use tiaojie::store::Store;

// ---------------------------------------------------------------------------------------------
// The real binary.

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tiaojie-projector-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The environment the binary runs with.
fn configure(command: &mut Command, url: &str, data_dir: &Path, listen: Option<SocketAddr>) {
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIAOJIE_DATABASE_URL", url)
        .env("TIAOJIE_JWT_SECRET", SECRET)
        .env("TIAOJIE_DATA_DIR", data_dir)
        .env("RUST_LOG", "info");
    if let Some(addr) = listen {
        command.env("TIAOJIE_LISTEN", addr.to_string());
    }
}

/// One server process; SIGKILLed when dropped.
struct Server {
    name: String,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts `tiaojie` on `url` and waits for `/healthz`.
    async fn start(name: &str, url: &str, data_dir: &Path) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = data_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tiaojie"));
        configure(&mut command, url, data_dir, Some(addr));
        let child = command
            .current_dir(data_dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start tiaojie");
        let mut server = Server {
            name: name.to_string(),
            child,
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = raw_http(addr, "GET", "/healthz", None, None).await {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("server {name} exited with {status}:\n{}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server {name} not healthy within 30 s:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `/readyz`'s projector report: (active, position), or `None` when it gives none.
    async fn projector(&self) -> Option<(bool, i64)> {
        match raw_http(self.addr, "GET", "/readyz", None, None).await {
            Ok((200, body)) => Some((
                body["projector"]["active"].as_bool()?,
                body["projector"]["position"].as_i64()?,
            )),
            _ => None,
        }
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until this server's projector is active and has applied the whole log.
    async fn caught_up(&self, store: &Store) -> i64 {
        settled(store).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = store.read_log_last_position().await.unwrap();
            let report = self.projector().await;
            if let Some((true, position)) = report {
                if position == last {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server {}'s projector did not catch up with the log at {last} within 30 s: \
                 /readyz says {report:?}\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tiaojie projections rebuild` on `url`; returns what it printed.
async fn cli_rebuild(url: &str, data_dir: &Path) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tiaojie"));
    configure(&mut command, url, data_dir, None);
    command
        .args(["projections", "rebuild"])
        .current_dir(data_dir);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run tiaojie projections rebuild");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "tiaojie projections rebuild failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("rebuilt up to position"), "{stdout}");
    stdout
}

// ---------------------------------------------------------------------------------------------
// Writers: each files cases and takes each through a script of steps, until told to stop or the
// server stops answering.

/// Where requests go: a real TCP server, or the in-process router.
#[derive(Clone)]
enum Target {
    Tcp(SocketAddr),
    App(Arc<TestApp>),
}

impl Target {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let token = admin();
        match self {
            Target::Tcp(addr) => raw_http(*addr, method, path, Some(&token), body).await,
            Target::App(app) => {
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                let reply = app
                    .send(
                        method,
                        path,
                        Some(&token),
                        body.cloned().unwrap_or(Value::Null),
                        &[],
                    )
                    .await;
                Ok((reply.status.as_u16(), reply.body))
            }
        }
    }
}

const ROOMS: [&str; 3] = ["R01", "R02", "R03"];

/// The steps case number `n` (with id `case`, filed in `room`) goes through after its filing.
fn script(n: usize, case: &str, room: &str) -> Vec<(String, Value)> {
    let c = |s: &str| format!("/api/v1/cases/{case}/{s}");
    let other = if room == "R01" { "R02" } else { "R01" };
    match n % 4 {
        0 => vec![
            (c("accept"), json!({"note": "受理"})),
            (
                c("mediators"),
                json!({"mediator_id": "m-0001", "name": "李调解", "lead": true}),
            ),
            (
                c("sessions"),
                json!({"summary": "第一次调解", "attendees": ["张三"]}),
            ),
            (
                c("resolve"),
                json!({"agreement": "written", "terms": "分期支付", "agreed_amount": "8000.00"}),
            ),
            (
                c("follow-ups"),
                json!({"performance": "full", "satisfaction": 5}),
            ),
            (
                c("judicial-confirmation"),
                json!({"status": "requested", "court": "福田区人民法院"}),
            ),
            (
                c("judicial-confirmation"),
                json!({"status": "confirmed", "court": "福田区人民法院"}),
            ),
            (c("close"), json!({})),
        ],
        1 => vec![
            (c("accept"), json!({})),
            (
                c("transfer"),
                json!({"to_room_id": other, "reason": "属地管辖"}),
            ),
            (
                c("mediators"),
                json!({"mediator_id": "m-0002", "lead": true}),
            ),
            (c("sessions"), json!({"summary": "调解"})),
            (
                c("terminate"),
                json!({"reason": "referred", "referred_to": "court"}),
            ),
            (c("close"), json!({})),
        ],
        2 => vec![
            (c("terminate"), json!({"reason": "withdrawn"})),
            (c("notes"), json!({"text": "电话联系"})),
        ],
        _ => vec![
            (c("decline"), json!({"reason": "不属于受理范围"})),
            (c("close"), json!({})),
        ],
    }
}

/// What a writer did: successful writes, and why it stopped early (if it did).
#[derive(Debug, Default)]
struct Written {
    writes: usize,
    failure: Option<String>,
    /// The failure was the connection's (no HTTP answer), not a refusal.
    cut_off: bool,
}

async fn writer(
    target: Target,
    id: usize,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
) -> Written {
    let done = write_cases(target, id, stop, writes).await;
    if let Some(f) = &done.failure {
        failures.lock().unwrap().push(format!("writer {id}: {f}"));
    }
    done
}

async fn write_cases(
    target: Target,
    id: usize,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicUsize>,
) -> Written {
    let mut done = Written::default();
    let mut n = id;
    while !stop.load(Ordering::SeqCst) {
        let room = ROOMS[n % ROOMS.len()];
        let case = match target
            .call("POST", "/api/v1/cases", Some(&filing(room)))
            .await
        {
            Ok((201, body)) => body["case_id"].as_str().unwrap().to_string(),
            Ok((status, body)) => {
                done.failure = Some(format!("filing: {status} {body}"));
                return done;
            }
            Err(e) => {
                done.failure = Some(e);
                done.cut_off = true;
                return done;
            }
        };
        done.writes += 1;
        writes.fetch_add(1, Ordering::SeqCst);
        for (path, body) in script(n, &case, room) {
            match target.call("POST", &path, Some(&body)).await {
                Ok((200, _)) => {
                    done.writes += 1;
                    writes.fetch_add(1, Ordering::SeqCst);
                }
                Ok((status, body)) => {
                    done.failure = Some(format!("{path}: {status} {body}"));
                    return done;
                }
                Err(e) => {
                    done.failure = Some(e);
                    done.cut_off = true;
                    return done;
                }
            }
        }
        n += 7;
    }
    done
}

struct Writers {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<Written>>,
}

impl Writers {
    fn start(targets: &[(Target, usize)]) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let mut id = 0;
        for (target, count) in targets {
            for _ in 0..*count {
                tasks.push(tokio::spawn(writer(
                    target.clone(),
                    id,
                    stop.clone(),
                    writes.clone(),
                    failures.clone(),
                )));
                id += 1;
            }
        }
        Writers {
            stop,
            writes,
            failures,
            tasks,
        }
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` writes succeeded (at most 30 s).
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.writes() < n {
            assert!(
                Instant::now() < deadline,
                "only {} writes within 30 s; writers failed: {:?}",
                self.writes(),
                self.failures.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Vec<Written> {
        self.stop.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        for task in self.tasks {
            out.push(task.await.expect("writer task"));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The read models, row for row.

type SummaryRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    i64,
);
type FactRow = (
    String,
    i64,
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

#[derive(Debug, PartialEq)]
struct Dump {
    summaries: Vec<SummaryRow>,
    facts: Vec<FactRow>,
}

macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        if let Some($pool) = $store.postgres_pool() {
            $body
        } else {
            let $pool = $store.sqlite_pool().unwrap();
            $body
        }
    };
}

async fn dump(store: &Store) -> Dump {
    const SUMMARIES: &str = "SELECT case_id, case_no, room_id, filed_room_id, status, category, source, \
        filed_at, accepted_at, concluded_at, mediators, version FROM case_summaries ORDER BY case_id";
    const FACTS: &str =
        "SELECT case_id, seq, CAST(ord AS BIGINT), kind, room_id, category, occurred_at, \
        amount_fen, duration_us, label FROM stat_facts ORDER BY case_id, seq, ord";
    on_pool!(store, pool => Dump {
        summaries: sqlx::query_as(SUMMARIES).fetch_all(pool).await.unwrap(),
        facts: sqlx::query_as(FACTS).fetch_all(pool).await.unwrap(),
    })
}

async fn count(store: &Store, sql: &str) -> i64 {
    on_pool!(store, pool => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap())
}

/// The live tables equal the rebuilt ones, row for row (naming the first difference).
fn same_rows(live: &Dump, rebuilt: &Dump) {
    fn first_difference<T: PartialEq + std::fmt::Debug>(what: &str, live: &[T], rebuilt: &[T]) {
        if let Some(i) = (0..live.len().max(rebuilt.len())).find(|&i| live.get(i) != rebuilt.get(i))
        {
            panic!(
                "{what}: live has {} rows, a rebuild {}; first difference at row {i}:\n  live:    {:?}\n  rebuilt: {:?}",
                live.len(),
                rebuilt.len(),
                live.get(i),
                rebuilt.get(i)
            );
        }
    }
    first_difference("case_summaries", &live.summaries, &rebuilt.summaries);
    first_difference("stat_facts", &live.facts, &rebuilt.facts);
    assert_eq!(live, rebuilt);
}

/// Every case has a summary, and every filing was counted exactly once.
async fn counted_once(store: &Store, dump: &Dump) {
    let filed_events = count(
        store,
        "SELECT COUNT(*) FROM events WHERE event_type = 'CaseFiled'",
    )
    .await;
    let filed_facts = count(
        store,
        "SELECT COUNT(*) FROM stat_facts WHERE kind = 'filed'",
    )
    .await;
    let cases = count(store, "SELECT COUNT(DISTINCT aggregate_id) FROM events").await;
    assert!(filed_events > 0, "nothing was filed");
    if filed_facts != filed_events {
        let unmatched: Vec<(String, i64, i64)> = on_pool!(store, pool => sqlx::query_as(
            "SELECT e.aggregate_id, e.sequence, e.position FROM events e WHERE e.event_type = 'CaseFiled' \
             AND NOT EXISTS (SELECT 1 FROM stat_facts f WHERE f.case_id = e.aggregate_id AND f.kind = 'filed') \
             ORDER BY e.position",
        )
        .fetch_all(pool)
        .await
        .unwrap());
        let checkpoint = store.checkpoint(CHECKPOINT).await.unwrap();
        panic!(
            "{filed_facts} 'filed' facts for {filed_events} CaseFiled events (checkpoint {checkpoint}); \
             filings without a fact (case, sequence, position): {unmatched:?}"
        );
    }
    assert_eq!(
        dump.summaries.len() as i64,
        cases,
        "case summaries vs cases"
    );
    // Every fact's event exists, and no event has more facts than its (case, sequence) allows.
    let dangling = count(
        store,
        "SELECT COUNT(*) FROM stat_facts f WHERE NOT EXISTS \
         (SELECT 1 FROM events e WHERE e.aggregate_id = f.case_id AND e.sequence = f.seq)",
    )
    .await;
    assert_eq!(dangling, 0, "facts without an event");
}

/// Waits (at most 30 s) until every committed event is readable in log order. On PostgreSQL the
/// log reader stops short of transactions still in flight anywhere in the cluster (another test's
/// database included), so with the writers stopped this only waits for those to end.
async fn settled(store: &Store) {
    let Some(pool) = store.postgres_pool() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hidden: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE txid >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if hidden == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{hidden} committed events still behind a transaction in flight after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. SIGKILL while writers run, restart: the read models equal a fresh rebuild.

async fn sigkill_while_writing_then_restart_equals_a_rebuild(backend: Backend) {
    let url = fresh_database(backend).await;
    let dir = temp_dir("kill");
    let mut server = Server::start("first", &url, &dir).await;
    let writers = Writers::start(&[(Target::Tcp(server.addr), 6)]);
    writers.wait_for(30).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before_kill = writers.writes();
    server.kill();
    let outcomes = writers.stop().await;
    // The kill cut writers off mid-request, and no write was refused before it.
    assert!(
        outcomes.iter().all(|w| w.failure.is_none() || w.cut_off)
            && outcomes.iter().any(|w| w.cut_off),
        "writers not cut off by the kill: {outcomes:?}"
    );
    drop(server);

    let server = Server::start("second", &url, &dir).await;
    let store = open(&url, 4).await;
    let at = server.caught_up(&store).await;
    assert!(at > 0);
    assert!(
        store.checkpoint(CHECKPOINT).await.unwrap() == at,
        "the checkpoint is not where /readyz says"
    );
    let events = count(&store, "SELECT COUNT(*) FROM events").await;
    assert!(
        events as usize >= before_kill,
        "{events} events in the log, {before_kill} writes were acknowledged"
    );
    let live = dump(&store).await;
    cli_rebuild(&url, &dir).await;
    let rebuilt = dump(&store).await;
    same_rows(&live, &rebuilt);
    counted_once(&store, &live).await;
    assert_eq!(store.checkpoint(CHECKPOINT).await.unwrap(), at);
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Two servers on one PostgreSQL: one projects; kill it, the other takes over.

async fn actives(servers: &[&Server]) -> Vec<bool> {
    let mut out = Vec::new();
    for s in servers {
        out.push(matches!(s.projector().await, Some((true, _))));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_postgres_one_projects_and_the_other_takes_over() {
    if postgres_url().is_none() {
        return;
    }
    let url = fresh_database(Backend::Postgres).await;
    let dir = temp_dir("pair");
    let a = Server::start("a", &url, &dir).await;
    let b = Server::start("b", &url, &dir).await;

    // Exactly one reports an active projector, and it stays that way.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = actives(&[&a, &b]).await;
        if now.iter().any(|x| *x) {
            break;
        }
        assert!(Instant::now() < deadline, "no projector active within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..15 {
        let now = actives(&[&a, &b]).await;
        assert_eq!(
            now.iter().filter(|x| **x).count(),
            1,
            "projector active on [a, b]: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a_active = actives(&[&a, &b]).await[0];
    let (mut active, standby) = if a_active { (a, b) } else { (b, a) };

    let writers = Writers::start(&[
        (Target::Tcp(active.addr), 3),
        (Target::Tcp(standby.addr), 3),
    ]);
    writers.wait_for(40).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    active.kill();
    let killed_at = Instant::now();
    loop {
        if let Some((true, _)) = standby.projector().await {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "server {} did not take over within 5 s of {}'s death:\n{}",
            standby.name,
            active.name,
            standby.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Write more through the survivor, then stop.
    let after_takeover = writers.writes();
    writers.wait_for(after_takeover + 30).await;
    let outcomes = writers.stop().await;
    let survivors_failures: Vec<_> = outcomes[3..]
        .iter()
        .filter_map(|w| w.failure.as_ref())
        .collect();
    assert!(
        survivors_failures.is_empty(),
        "writers of the survivor failed: {survivors_failures:?}"
    );
    assert!(
        outcomes[..3]
            .iter()
            .all(|w| w.failure.is_none() || w.cut_off)
            && outcomes[..3].iter().any(|w| w.cut_off),
        "the killed server's writers were not cut off by the kill: {outcomes:?}"
    );

    let store = open(&url, 4).await;
    let at = standby.caught_up(&store).await;
    assert_eq!(store.checkpoint(CHECKPOINT).await.unwrap(), at);
    let live = dump(&store).await;
    cli_rebuild(&url, &dir).await;
    let rebuilt = dump(&store).await;
    same_rows(&live, &rebuilt);
    counted_once(&store, &live).await;
    drop(active);
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 3. A rebuild while the API serves and writers append.

async fn rebuild_while_serving_and_writing(backend: Backend) {
    let app = Arc::new(TestApp::start(backend).await);
    let writers = Writers::start(&[(Target::App(app.clone()), 4)]);
    writers.wait_for(40).await;

    // Readers: the case list and the statistics, all the time.
    let stop_readers = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for path in ["/api/v1/statistics", "/api/v1/cases?limit=50"] {
        let app = app.clone();
        let stop = stop_readers.clone();
        readers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let reply = app.get(path, &admin()).await;
                if reply.status == StatusCode::OK {
                    ok += 1;
                } else {
                    failed.push(format!("{path}: {} {}", reply.status, reply.body));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        }));
    }

    let mut positions = Vec::new();
    for round in 0..3 {
        let position = tiaojie::projector::rebuild(&app.state.store)
            .await
            .unwrap_or_else(|e| panic!("rebuild {round} while serving: {e}"));
        positions.push(position);
        // Writers keep appending between (and during) the rebuilds.
        writers.wait_for(writers.writes() + 10).await;
    }
    let outcomes = writers.stop().await;
    stop_readers.store(true, Ordering::SeqCst);
    for reader in readers {
        let (ok, failed) = reader.await.unwrap();
        assert!(failed.is_empty(), "answers during rebuilds: {failed:?}");
        assert!(ok > 0, "a reader got no answer at all");
    }
    let failures: Vec<_> = outcomes.iter().filter_map(|w| w.failure.as_ref()).collect();
    assert!(
        failures.is_empty(),
        "writes during rebuilds failed: {failures:?}"
    );
    // Each rebuild reflects a later point of the log than the one before. Log order is position
    // order on SQLite, and (writing transaction, position) order on PostgreSQL, where a later
    // event can carry a smaller position.
    let mut order = Vec::new();
    for p in &positions {
        let txid: i64 = match app.state.store.postgres_pool() {
            Some(pool) => {
                sqlx::query_scalar("SELECT txid::text::bigint FROM events WHERE position = $1")
                    .bind(p)
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
            None => 0,
        };
        order.push((txid, *p));
    }
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "rebuilds must reflect ever later points of the log: {order:?}"
    );

    let store = &app.state.store;
    settled(store).await;
    app.projected().await;
    let last = store.read_log_last_position().await.unwrap();
    assert_eq!(store.checkpoint(CHECKPOINT).await.unwrap(), last);
    let live = dump(store).await;
    counted_once(store, &live).await;
    let position = tiaojie::projector::rebuild(store).await.unwrap();
    assert_eq!(position, last);
    let rebuilt = dump(store).await;
    same_rows(&live, &rebuilt);
    assert_eq!(store.checkpoint(CHECKPOINT).await.unwrap(), last);

    // The statistics this process kept in memory through the rebuilds and the writes (read all
    // the while) equal a fresh load of the final tables.
    let window = tiaojie_projections::indicators::Window {
        from: None,
        to: chrono::Utc::now() + chrono::Duration::days(1),
    };
    let kept = app
        .state
        .stats
        .read(|index| index.cells(window))
        .await
        .unwrap();
    let fresh = tiaojie::stats::StatsMirror::new(store.clone())
        .read(|index| index.cells(window))
        .await
        .unwrap();
    assert_eq!(kept, fresh);
    assert_eq!(kept.1, last);
    let filed: u64 = kept.0.values().map(|c| c.indicators().filed).sum();
    assert_eq!(
        filed as i64,
        count(
            store,
            "SELECT COUNT(*) FROM events WHERE event_type = 'CaseFiled'"
        )
        .await
    );
    // At least the first load and one after the last rebuild.
    assert!(
        app.state.stats.loads() >= 2,
        "{} loads",
        app.state.stats.loads()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A new case is in the list within a second: written by this process, and by another writer
// on the same database (which the projector only learns about by looking).

async fn listed_within_a_second(app: &TestApp, case: &str) -> Duration {
    let started = Instant::now();
    loop {
        let reply = app.get("/api/v1/cases?limit=100", &admin()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let listed = reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["case_id"] == case);
        if listed {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "case {case} not listed within 1 s of its filing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_new_case_is_listed_within_a_second(backend: Backend) {
    let app = TestApp::start(backend).await;
    // Another writer on the same database, without a projector of its own.
    let other = {
        let state = tiaojie::http::AppState {
            store: open(&app.url, 4).await,
            projector: Arc::new(tiaojie::projector::ProjectorStatus::default()),
            ..app.state.clone()
        };
        tiaojie::http::app(state)
    };
    for round in 0..3 {
        let id = app.file(&admin(), "R01").await;
        listed_within_a_second(&app, &id).await;

        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/api/v1/cases")
            .header("authorization", format!("Bearer {}", admin()))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                serde_json::to_vec(&filing("R02")).unwrap(),
            ))
            .unwrap();
        let response = tower::ServiceExt::oneshot(other.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "round {round}");
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let id = body["case_id"].as_str().unwrap();
        listed_within_a_second(&app, id).await;
    }
}

both_stores!(
    sigkill_while_writing_then_restart_equals_a_rebuild,
    rebuild_while_serving_and_writing,
    a_new_case_is_listed_within_a_second,
);

// ---------------------------------------------------------------------------------------------
// The log read after a position is bounded by the index, also under a generic plan.

/// Every plan node of an `EXPLAIN (FORMAT JSON)` answer.
fn plan_nodes(node: &Value, out: &mut Vec<Value>) {
    out.push(node.clone());
    if let Some(children) = node.get("Plans").and_then(Value::as_array) {
        for child in children {
            plan_nodes(child, out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_page_after_a_position_reads_only_that_page_under_a_generic_plan() {
    if postgres_url().is_none() {
        return;
    }
    let url = fresh_database(Backend::Postgres).await;
    // A store without a projector: the rows below are not real events.
    let store = open(&url, 2).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, prev_hash, hash) \
         SELECT 'Case', g::text, 1, 'CaseFiled', '1', '{}', '{}', '', '' FROM generate_series(1, 3000) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE events")
        .execute(&mut conn)
        .await
        .unwrap();
    let after: i64 = sqlx::query_scalar("SELECT position FROM events WHERE aggregate_id = '2990'")
        .fetch_one(&mut conn)
        .await
        .unwrap();

    // The store's own read returns exactly the next events, once every transaction older than
    // the insert has ended (log order waits for the server-wide xmin; another test may hold a
    // transaction open for a moment). Only then can the plan below show what the page reads.
    let start = Instant::now();
    loop {
        let page = store.read_log(Some(after), 5).await.unwrap();
        let ids: Vec<&str> = page.iter().map(|e| e.case_id.as_str()).collect();
        if !ids.is_empty() {
            assert_eq!(ids, ["2991", "2992", "2993", "2994", "2995"]);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the inserted events never became final in log order"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What the projector gets after a few runs of its prepared statement: the generic plan.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .unwrap();
    let sql = tiaojie::store::log_page_sql(true);
    sqlx::raw_sql(&format!("PREPARE page(bigint, bigint) AS {sql}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let explained: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page({after}, 5)"
    ))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let mut nodes = Vec::new();
    plan_nodes(&explained[0]["Plan"], &mut nodes);
    let log_scan = nodes
        .iter()
        .find(|n| n["Index Name"] == "events_log_order")
        .unwrap_or_else(|| panic!("the page is not read by events_log_order: {explained}"));
    let removed = log_scan["Rows Removed by Filter"].as_u64().unwrap_or(0);
    let rows = log_scan["Actual Rows"].as_u64().unwrap_or(u64::MAX);
    assert!(
        removed == 0 && rows == 5,
        "the page scanned {rows} rows and filtered out {removed}: {explained}"
    );
}
