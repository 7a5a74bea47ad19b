//! `tiaojie-bench`: the one-command benchmark of issue 5.
//!
//! `tiaojie-bench all` (or `quick`, 2 s per run) does, in one run:
//! 1. the baseline: pgbench inserting one event row per transaction (new case id each time,
//!    prepared statements, `synchronous_commit` as configured: on) at 1, 8 and 32 clients into a
//!    fresh database whose schema is made by `tiaojie migrate` itself (the real `events` table
//!    with all its indexes);
//! 2. tiaojie (release build, copied to a temp folder so a concurrent rebuild cannot swap it) on
//!    a fresh PostgreSQL database, then on a fresh SQLite file;
//! 3. the command mix (file → accept → assign → session → resolve → follow-up, over many cases
//!    and the 30 rooms) at 1, 8, 32 and 64 connections;
//! 4. `GET /api/v1/cases/{id}` and `/history` of a 20-event case at 8 connections;
//! 5. a table (throughput, p50/p99/p99.9, answers by status, peak RSS, CPU split, ratio to
//!    pgbench) printed and written into BENCHMARKS.md between markers.
//!
//! It builds nothing: run `cargo build --release` first (see BENCHMARKS.md).

mod http;
mod load;
mod log;
mod report;
mod seed;
mod sys;

use load::{Outcome, Workload};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JWT_SECRET: &str = "tiaojie-bench-secret-0123456789abcdef";
const COMMAND_CLIENTS: &[usize] = &[1, 8, 32, 64];
const PGBENCH_CLIENTS: &[usize] = &[1, 8, 32];
const READ_CLIENTS: usize = 8;

/// Settings from the command line.
#[derive(Clone)]
pub struct Opts {
    pub seconds: u64,
    pub warmup: Duration,
    pub tiaojie: PathBuf,
    pub out: PathBuf,
    pub write: bool,
    pub pg_host: String,
    pub pg_port: u16,
    pub pg_user: String,
    pub db_max_connections: Option<u32>,
    pub parts: Vec<String>,
    pub command_line: String,
    /// Before each run, wait at most this long for the machine to be quiet.
    pub quiet_wait: Duration,
    /// `log`: how many events to seed.
    pub events: usize,
    /// all, quick or log.
    pub mode: String,
    /// `log`: keep the seeded database (to look into it afterwards).
    pub keep_db: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: tiaojie-bench <all|quick|log> [--events N] [--keep-db] (log) [--seconds N] [--warmup-ms N] [--tiaojie PATH] [--out FILE] \
         [--no-write] [--pg-host H] [--pg-port P] [--pg-user U] [--db-max-connections N] \
         [--quiet-wait SECS] [--only pgbench,postgres,sqlite]"
    );
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ sits in the workspace")
        .to_path_buf();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = Opts {
        seconds: 10,
        warmup: Duration::from_secs(1),
        tiaojie: root.join("target/release/tiaojie"),
        out: root.join("BENCHMARKS.md"),
        write: true,
        pg_host: "127.0.0.1".into(),
        pg_port: 5432,
        pg_user: "postgres".into(),
        db_max_connections: None,
        parts: vec!["pgbench".into(), "postgres".into(), "sqlite".into()],
        command_line: String::new(),
        quiet_wait: Duration::from_secs(60),
        events: 1_000_000,
        mode: String::new(),
        keep_db: false,
    };
    let mut mode = None;
    let mut seconds_set = false;
    let mut warmup_set = false;
    let mut quiet_set = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "all" | "quick" | "log" => mode = Some(a.clone()),
            "--events" => opts.events = val().parse().unwrap_or_else(|_| usage()),
            "--keep-db" => opts.keep_db = true,
            "--seconds" => {
                opts.seconds = val().parse().unwrap_or_else(|_| usage());
                seconds_set = true;
            }
            "--warmup-ms" => {
                opts.warmup = Duration::from_millis(val().parse().unwrap_or_else(|_| usage()));
                warmup_set = true;
            }
            "--tiaojie" => opts.tiaojie = PathBuf::from(val()),
            "--out" => opts.out = PathBuf::from(val()),
            "--no-write" => opts.write = false,
            "--pg-host" => opts.pg_host = val(),
            "--pg-port" => opts.pg_port = val().parse().unwrap_or_else(|_| usage()),
            "--pg-user" => opts.pg_user = val(),
            "--db-max-connections" => {
                opts.db_max_connections = Some(val().parse().unwrap_or_else(|_| usage()))
            }
            "--quiet-wait" => {
                opts.quiet_wait = Duration::from_secs(val().parse().unwrap_or_else(|_| usage()));
                quiet_set = true;
            }
            "--only" => opts.parts = val().split(',').map(str::to_string).collect(),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    match mode.as_deref() {
        Some("quick") => {
            if !seconds_set {
                opts.seconds = 2;
            }
            if !warmup_set {
                opts.warmup = Duration::from_millis(300);
            }
            if !quiet_set {
                opts.quiet_wait = Duration::from_secs(5);
            }
        }
        Some(_) => {}
        None => usage(),
    }
    opts.mode = mode.unwrap_or_default();
    opts.command_line = format!("cargo run --release -p tiaojie-bench -- {}", args.join(" "));
    opts
}

/// One row of the results.
pub struct Row {
    pub store: &'static str,
    pub what: String,
    pub clients: usize,
    pub outcome: Outcome,
    pub rss_peak_kb: Option<u64>,
    pub cpu: sys::CpuSplit,
    pub ratio: Option<f64>,
    /// Machine busy share in the second before the run (after waiting for quiet).
    pub busy_before: f64,
    /// PostgreSQL only: (transactions, WAL flushes, WAL records) per answer, from pg_stat_*.
    pub pg_cost: Option<(f64, f64, f64)>,
}

/// One pgbench result.
pub struct PgbenchRow {
    pub clients: usize,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub failed: u64,
    pub cpu: sys::CpuSplit,
    pub busy_before: f64,
    pub pg_cost: Option<(f64, f64, f64)>,
}

fn main() {
    let opts = parse_args();
    if !opts.tiaojie.is_file() {
        eprintln!(
            "tiaojie-bench: {} not found; build it first: cargo build --release",
            opts.tiaojie.display()
        );
        std::process::exit(2);
    }
    let tmp = std::env::temp_dir().join(format!(
        "tiaojie-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&tmp).expect("create the temp folder");
    // A private copy: a rebuild of target/release while we run cannot change what we measure.
    let bin = tmp.join("tiaojie");
    std::fs::copy(&opts.tiaojie, &bin).expect("copy the tiaojie binary");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    if opts.mode == "log" {
        log::run(&opts, &bin, &tmp, &rt);
        let _ = std::fs::remove_dir_all(&tmp);
        return;
    }

    let started = sys::now_utc_text();
    let mut pgbench_rows: Vec<PgbenchRow> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let tag = format!("{}", std::process::id());

    if opts.parts.iter().any(|p| p == "pgbench") {
        let db = format!("tiaojie_bench_pgbench_{tag}");
        match pgbench_all(&opts, &bin, &tmp, &db) {
            Ok(r) => pgbench_rows = r,
            Err(e) => {
                eprintln!("pgbench failed: {e}");
                notes.push(format!("pgbench failed: {e}"));
            }
        }
        let _ = drop_db(&opts, &db);
    }

    for store in ["postgres", "sqlite"] {
        if !opts.parts.iter().any(|p| p == store) {
            continue;
        }
        let db = format!("tiaojie_bench_{tag}");
        let url = if store == "postgres" {
            if let Err(e) = create_db(&opts, &db) {
                eprintln!("cannot create {db}: {e}");
                notes.push(format!("{store}: cannot create the database: {e}"));
                continue;
            }
            format!(
                "postgres://{}@{}:{}/{}",
                opts.pg_user, opts.pg_host, opts.pg_port, db
            )
        } else {
            format!("sqlite://{}", tmp.join("bench.db").display())
        };
        let label: &'static str = if store == "postgres" {
            "PostgreSQL"
        } else {
            "SQLite"
        };
        match rt.block_on(server_runs(
            &opts,
            &bin,
            &tmp,
            &url,
            label,
            &pgbench_rows,
            (store == "postgres").then_some(db.as_str()),
        )) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => {
                eprintln!("{label}: {e}");
                notes.push(format!("{label}: {e}"));
            }
        }
        if store == "postgres" {
            let _ = drop_db(&opts, &db);
        }
    }

    let md = report::markdown(&opts, &started, &pgbench_rows, &rows, &notes);
    println!("{md}");
    if opts.write {
        match report::write_into(&opts.out, &md) {
            Ok(()) => eprintln!("written into {}", opts.out.display()),
            Err(e) => eprintln!("cannot write {}: {e}", opts.out.display()),
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

// ---------------------------------------------------------------- PostgreSQL helpers

fn psql(opts: &Opts, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", &opts.pg_host, "-p", &opts.pg_port.to_string()])
        .args(["-U", &opts.pg_user, "-d", "postgres", "-c", sql])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn create_db(opts: &Opts, db: &str) -> Result<(), String> {
    drop_db(opts, db)?;
    psql(opts, &format!("CREATE DATABASE {db}")).map(|_| ())
}

fn drop_db(opts: &Opts, db: &str) -> Result<(), String> {
    psql(opts, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).map(|_| ())
}

/// (transactions committed in `db`, WAL flushes, WAL records) so far.
fn pg_stats(opts: &Opts, db: &str) -> Option<(f64, f64, f64)> {
    let text = psql(
        opts,
        &format!(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = '{db}') || ' ' || wal_sync || ' ' || wal_records FROM pg_stat_wal"
        ),
    )
    .ok()?;
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.len() == 3).then(|| (v[0], v[1], v[2]))
}

fn cost(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>, n: f64) -> Option<(f64, f64, f64)> {
    let (a, b) = (a?, b?);
    (n > 0.0).then(|| ((b.0 - a.0) / n, (b.1 - a.1) / n, (b.2 - a.2) / n))
}

fn tiaojie_cmd(bin: &Path, tmp: &Path, url: &str, listen: &str, opts: &Opts) -> Command {
    let mut c = Command::new(bin);
    c.env("TIAOJIE_DATABASE_URL", url)
        .env("TIAOJIE_LISTEN", listen)
        .env("TIAOJIE_JWT_SECRET", JWT_SECRET)
        .env("TIAOJIE_DATA_DIR", tmp.join("data"))
        .env_remove("TIAOJIE_ROOMS");
    if let Some(n) = opts.db_max_connections {
        c.env("TIAOJIE_DB_MAX_CONNECTIONS", n.to_string());
    }
    c
}

/// The pgbench script: one event row per transaction, shaped like a `SessionRecorded` append
/// (payload and metadata of the size tiaojie writes, two 64-hex hashes, a new case id).
const PGBENCH_SCRIPT: &str = r#"INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash) VALUES ('case', gen_random_uuid()::text, 1, 'SessionRecorded', '1', '{"SessionRecorded":{"attendees":["张三","李四","王调解"],"occurred_at":"2026-07-01T09:30:00.000000Z","summary":"第一次调解会议：双方陈述意见，核对货款金额。"}}'::json, '{"request_id":"0f6d3c1e-9a57-4c1b-8f0e-2b7f6c9d4a11","role":"admin","sub":"admin"}'::json, clock_timestamp(), '9b1c6f0e5d4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c', md5(random()::text) || md5(random()::text));
"#;

fn pgbench_all(opts: &Opts, bin: &Path, tmp: &Path, db: &str) -> Result<Vec<PgbenchRow>, String> {
    create_db(opts, db)?;
    let url = format!(
        "postgres://{}@{}:{}/{}",
        opts.pg_user, opts.pg_host, opts.pg_port, db
    );
    // The real schema, made by the real migration.
    let out = tiaojie_cmd(bin, tmp, &url, "127.0.0.1:0", opts)
        .arg("migrate")
        .output()
        .map_err(|e| format!("cannot run tiaojie migrate: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tiaojie migrate failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let script = tmp.join("insert_event.sql");
    std::fs::write(&script, PGBENCH_SCRIPT).map_err(|e| e.to_string())?;
    let sc = psql(opts, "SHOW synchronous_commit")?;
    if sc != "on" {
        return Err(format!("synchronous_commit is {sc}, not on"));
    }
    let mut rows = Vec::new();
    for &clients in PGBENCH_CLIENTS {
        let logdir = tmp.join(format!("pgbench-{clients}"));
        std::fs::create_dir_all(&logdir).map_err(|e| e.to_string())?;
        let prefix = logdir.join("log");
        eprintln!("pgbench: {clients} client(s), {} s", opts.seconds);
        let threads = clients.min(2);
        let busy_before = sys::wait_quiet(opts.quiet_wait);
        let stats_before = pg_stats(opts, db);
        let child = Command::new("pgbench")
            .args(["-n", "-M", "prepared", "-f"])
            .arg(&script)
            .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
            .args(["-T", &opts.seconds.to_string()])
            .args([
                "-h",
                &opts.pg_host,
                "-p",
                &opts.pg_port.to_string(),
                "-U",
                &opts.pg_user,
            ])
            .arg("-l")
            .arg("--log-prefix")
            .arg(&prefix)
            .arg(db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run pgbench: {e}"))?;
        let pid = child.id();
        let cpu_before = sys::CpuSample::take(pid);
        // Sample pgbench's own CPU until just before it ends (its /proc entry goes with it).
        let mut cpu_last = sys::CpuSample::take(pid);
        let end = Instant::now() + Duration::from_secs(opts.seconds);
        while Instant::now() + Duration::from_millis(300) < end {
            std::thread::sleep(Duration::from_millis(200));
            cpu_last = sys::CpuSample::take(pid);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("pgbench failed: {e}"))?;
        let cpu = sys::CpuSplit::between(&cpu_before, &cpu_last);
        std::thread::sleep(Duration::from_millis(1500));
        let stats_after = pg_stats(opts, db);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "pgbench exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let tps = stdout
            .lines()
            .find(|l| l.starts_with("tps = ") && l.contains("without initial connection"))
            .or_else(|| stdout.lines().find(|l| l.starts_with("tps = ")))
            .and_then(|l| l[6..].split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no tps in pgbench output:\n{stdout}"))?;
        let failed = stdout
            .lines()
            .find(|l| l.starts_with("number of failed transactions"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Per-transaction latencies from the logs: "client_id tx_no time_us script_no epoch us".
        let mut lat: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(&logdir).map_err(|e| e.to_string())? {
            let text = std::fs::read_to_string(entry.map_err(|e| e.to_string())?.path())
                .map_err(|e| e.to_string())?;
            for line in text.lines() {
                if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
                    lat.push(us);
                }
            }
        }
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
            lat[rank.clamp(1, lat.len()) - 1] as f64 / 1000.0
        };
        let txs = lat.len() as f64;
        let pg_cost = cost(stats_before, stats_after, txs);
        rows.push(PgbenchRow {
            cpu,
            busy_before,
            pg_cost,
            clients,
            tps,
            p50_ms: pct(50.0),
            p99_ms: pct(99.0),
            p999_ms: pct(99.9),
            failed,
        });
        let _ = std::fs::remove_dir_all(&logdir);
    }
    Ok(rows)
}

// ---------------------------------------------------------------- the server runs

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_server(
    opts: &Opts,
    bin: &Path,
    tmp: &Path,
    url: &str,
    log: &str,
) -> Result<Server, String> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let logfile = std::fs::File::create(tmp.join(log)).map_err(|e| e.to_string())?;
    let child = tiaojie_cmd(bin, tmp, url, &listen, opts)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().map_err(|e| e.to_string())?)
        .stderr(logfile)
        .spawn()
        .map_err(|e| format!("cannot start tiaojie: {e}"))?;
    let addr: SocketAddr = listen.parse().expect("an address");
    let mut server = Server { child, addr };
    let until = Instant::now() + Duration::from_secs(60);
    let mut conn = http::Conn::new(addr, None);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            let text = std::fs::read_to_string(tmp.join(log)).unwrap_or_default();
            return Err(format!(
                "tiaojie exited ({status}) before it was ready: {text}"
            ));
        }
        if let Ok(r) = conn.request("GET", "/readyz", None).await {
            if r.status == 200 {
                return Ok(server);
            }
        }
        if Instant::now() > until {
            server.stop();
            return Err("tiaojie was not ready within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn admin_token(opts: &Opts, bin: &Path, tmp: &Path, url: &str) -> Result<String, String> {
    let out = tiaojie_cmd(bin, tmp, url, "127.0.0.1:0", opts)
        .args(["token", "--role", "admin", "--sub", "admin", "--ttl", "7d"])
        .output()
        .map_err(|e| format!("cannot run tiaojie token: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tiaojie token failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds a case of exactly 20 events: filed, accepted, assigned, three sessions, resolved, a
/// follow-up, twelve notes. Returns its path.
async fn build_20_event_case(addr: SocketAddr, token: &str) -> Result<String, String> {
    let mut c = http::Conn::new(addr, Some(token));
    let mut steps: Vec<(String, String)> = Vec::new();
    let file = load::file_body(42, 7);
    let r = c
        .request("POST", "/api/v1/cases", Some(&file))
        .await
        .map_err(|e| e.to_string())?;
    if r.status != 201 {
        return Err(format!("filing answered {}", r.status));
    }
    let case = r.location.ok_or("filing answered without Location")?;
    use serde_json::json;
    steps.push((
        format!("{case}/accept"),
        json!({"note": "受理"}).to_string(),
    ));
    steps.push((
        format!("{case}/mediators"),
        json!({"mediator_id": "m-0001", "name": "王调解", "lead": true}).to_string(),
    ));
    for i in 1..=3 {
        steps.push(
            (format!("{case}/sessions"), json!({"summary": format!("第{i}次调解会议：双方陈述意见。"), "attendees": ["张三", "李四"]}).to_string()),
        );
    }
    steps.push((
        format!("{case}/resolve"),
        json!({"agreement": "written", "terms": "分两期支付货款。", "agreed_amount": "8000.00"})
            .to_string(),
    ));
    steps.push((
        format!("{case}/follow-ups"),
        json!({"performance": "partial", "satisfaction": 4, "note": "第一期已付"}).to_string(),
    ));
    for i in 1..=12 {
        steps.push((
            format!("{case}/notes"),
            json!({"text": format!("第{i}条备注：电话联系当事人，确认履行进度。")}).to_string(),
        ));
    }
    for (path, body) in steps {
        let r = c
            .request("POST", &path, Some(body.as_bytes()))
            .await
            .map_err(|e| e.to_string())?;
        if !(200..300).contains(&r.status) {
            return Err(format!(
                "{path} answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    let r = c
        .request("GET", &case, None)
        .await
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    if v.get("version").and_then(|v| v.as_u64()) != Some(20) {
        return Err(format!("the read case is not at version 20: {}", v));
    }
    Ok(case)
}

struct Measured {
    outcome: Outcome,
    cpu: sys::CpuSplit,
    rss: Option<u64>,
    busy_before: f64,
    pg_cost: Option<(f64, f64, f64)>,
}

async fn measure(
    opts: &Opts,
    server: &Server,
    token: &str,
    workload: &Workload,
    clients: usize,
    pg_db: Option<&str>,
) -> Measured {
    let pid = server.child.id();
    let busy_before = sys::wait_quiet(opts.quiet_wait);
    let stats_before = pg_db.and_then(|db| pg_stats(opts, db));
    let before = sys::CpuSample::take(pid);
    let outcome = load::run(
        server.addr,
        token,
        workload,
        clients,
        opts.warmup,
        Duration::from_secs(opts.seconds),
    )
    .await;
    let after = sys::CpuSample::take(pid);
    let cpu = sys::CpuSplit::between(&before, &after);
    let pg_cost = match pg_db {
        Some(db) => {
            // Idle backends report their counters within about a second.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            cost(stats_before, pg_stats(opts, db), outcome.all_answers as f64)
        }
        None => None,
    };
    Measured {
        rss: sys::vm_hwm_kb(pid),
        outcome,
        cpu,
        busy_before,
        pg_cost,
    }
}

async fn server_runs(
    opts: &Opts,
    bin: &Path,
    tmp: &Path,
    url: &str,
    store: &'static str,
    pgbench: &[PgbenchRow],
    pg_db: Option<&str>,
) -> Result<Vec<Row>, String> {
    let log = format!("server-{store}.log");
    let server = start_server(opts, bin, tmp, url, &log).await?;
    let result = async {
        let token = admin_token(opts, bin, tmp, url)?;
        let mut rows = Vec::new();
        for &clients in COMMAND_CLIENTS {
            eprintln!(
                "{store}: commands, {clients} connection(s), {} s",
                opts.seconds
            );
            let m = measure(opts, &server, &token, &Workload::Commands, clients, pg_db).await;
            let outcome = m.outcome;
            let ratio = if store == "PostgreSQL" {
                let base = clients.min(32);
                pgbench
                    .iter()
                    .find(|p| p.clients == base)
                    .map(|p| outcome.rate() / p.tps)
            } else {
                None
            };
            rows.push(Row {
                store,
                what: "commands (mix)".into(),
                clients,
                outcome,
                rss_peak_kb: m.rss,
                cpu: m.cpu,
                ratio,
                busy_before: m.busy_before,
                pg_cost: m.pg_cost,
            });
        }
        let case = build_20_event_case(server.addr, &token).await?;
        for (what, path) in [
            ("GET case (20 events)", case.clone()),
            ("GET history (20 events)", format!("{case}/history")),
        ] {
            eprintln!(
                "{store}: {what}, {READ_CLIENTS} connections, {} s",
                opts.seconds
            );
            let m = measure(
                opts,
                &server,
                &token,
                &Workload::Get(path),
                READ_CLIENTS,
                pg_db,
            )
            .await;
            rows.push(Row {
                store,
                what: what.into(),
                clients: READ_CLIENTS,
                outcome: m.outcome,
                rss_peak_kb: m.rss,
                cpu: m.cpu,
                ratio: None,
                busy_before: m.busy_before,
                pg_cost: m.pg_cost,
            });
        }
        Ok::<_, String>(rows)
    }
    .await;
    server.stop();
    if result.is_err() {
        let text = std::fs::read_to_string(tmp.join(&log)).unwrap_or_default();
        eprintln!("server log ({store}):\n{text}");
    }
    result
}
