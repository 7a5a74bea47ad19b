//! The test harness: starts the real router on a fresh store and speaks HTTP to it through
//! `tower::ServiceExt::oneshot`, with tokens signed by the app's own key.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Once};
use tiaojie::auth::{Claims, JwtKey, Role};
use tiaojie::http::{app, AppState};
use tiaojie::projector::ProjectorStatus;
use tiaojie::rooms::Rooms;
use tiaojie::stats::StatsMirror;
use tiaojie::store::{PoolSettings, Store};
use tower::ServiceExt;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite` and `postgres` tests from one `async fn(Backend)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::support::postgres_url().is_some() {
                        super::$name($crate::support::Backend::Postgres).await
                    }
                }
            }
        )+
    };
}

pub const SECRET: &str = "integration-test-secret-0123456789";

/// The PostgreSQL server for tests, or `None` (announced once on stderr, bypassing the test
/// harness's capture so that it is always seen). Panics when PostgreSQL is required.
pub fn postgres_url() -> Option<String> {
    static ANNOUNCE: Once = Once::new();
    match std::env::var("TIAOJIE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("TIAOJIE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("TIAOJIE_REQUIRE_POSTGRES=1 but TIAOJIE_TEST_POSTGRES_URL is not set");
            }
            ANNOUNCE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "\nSKIPPED: the PostgreSQL tests (TIAOJIE_TEST_POSTGRES_URL is not set)\n"
                );
            });
            None
        }
    }
}

/// A fresh database URL for one test.
pub async fn fresh_database(backend: Backend) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("tiaojie-test-{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}/tiaojie.db", dir.display())
        }
        Backend::Postgres => {
            let server = postgres_url().expect("PostgreSQL configured");
            let admin = sqlx::PgPool::connect(&server)
                .await
                .expect("connect to test PostgreSQL");
            drop_databases_of_finished_runs(&admin).await;
            // The creating process's id is in the name, so that a later run can tell which
            // databases belong to runs that have ended.
            let name = format!("tiaojie_test_{}_{id}", std::process::id());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .expect("create test database");
            admin.close().await;
            let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
            format!("{base}/{name}")
        }
    }
}

/// Drops, once per test process, the test databases left by test processes that are no longer
/// running (tests do not drop their own: a test may fail half-way, and a database in use by a
/// still-running server cannot be dropped). Databases of live processes — this one, or another
/// suite running at the same time — are left alone.
async fn drop_databases_of_finished_runs(admin: &sqlx::PgPool) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'tiaojie\\_test\\_%'",
    )
    .fetch_all(admin)
    .await
    .unwrap_or_default();
    for name in names {
        // Names without a process id come from older runs.
        let pid = name
            .strip_prefix("tiaojie_test_")
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .execute(admin)
                .await;
        }
    }
}

/// A running app on a fresh store.
pub struct TestApp {
    pub backend: Backend,
    pub url: String,
    pub state: AppState,
    pub router: Router,
    /// Dropping the app stops its projector.
    pub stop_projector: tokio::sync::watch::Sender<bool>,
}

pub async fn open(url: &str, max_connections: u32) -> Store {
    let store = Store::connect(
        url,
        PoolSettings {
            max_connections,
            acquire_timeout: std::time::Duration::from_secs(10),
        },
    )
    .await
    .expect("connect store");
    store.migrate().await.expect("migrate");
    store
}

impl TestApp {
    pub async fn start(backend: Backend) -> TestApp {
        let url = fresh_database(backend).await;
        TestApp::on(backend, url).await
    }

    /// An app on an existing database (for restarts).
    pub async fn on(backend: Backend, url: String) -> TestApp {
        let store = open(&url, 16).await;
        let projector = Arc::new(ProjectorStatus::default());
        let (stop_projector, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(tiaojie::projector::run(
            store.clone(),
            projector.clone(),
            shutdown,
        ));
        let state = AppState {
            stats: StatsMirror::new(store.clone()),
            store,
            rooms: Arc::new(Rooms::load(None).unwrap()),
            key: Arc::new(JwtKey::new(SecretString::from(SECRET.to_string()))),
            projector,
        };
        TestApp {
            backend,
            url,
            router: app(state.clone()),
            state,
            stop_projector,
        }
    }

    /// Sends a request; `token` may be `None`; `body` is JSON (or `Value::Null` for none).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Reply {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        self.send_raw(method, path, token, bytes, headers).await
    }

    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(token), body, &[]).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), Value::Null, &[])
            .await
    }

    /// Files a valid case in `room` and returns its id.
    pub async fn file(&self, token: &str, room: &str) -> String {
        let reply = self.post("/api/v1/cases", token, filing(room)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["case_id"].as_str().unwrap().to_string()
    }

    /// The number of events a case has, read from its history as an admin.
    pub async fn event_count(&self, case_id: &str) -> usize {
        let reply = self
            .get(&format!("/api/v1/cases/{case_id}/history"), &admin())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["events"].as_array().unwrap().len()
    }

    /// Waits (up to 10 s) until the projector has applied every event in the log.
    pub async fn projected(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            // On PostgreSQL the log is readable only below the oldest transaction still open on
            // the whole server (other tests' too): first wait until every committed event is
            // readable, then until the projector has applied them all.
            let last = self.state.store.read_log_last_position().await.unwrap();
            let max = self.max_position().await;
            let at = self
                .state
                .store
                .checkpoint(tiaojie::store::read_models::CHECKPOINT)
                .await
                .unwrap();
            if last == max && at == last {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "projector stuck at {at}, log at {last}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The largest position in the events table (0 when empty).
    pub async fn max_position(&self) -> i64 {
        let max: Option<i64> = if let Some(pool) = self.state.store.postgres_pool() {
            sqlx::query_scalar("SELECT MAX(position) FROM events")
                .fetch_one(pool)
                .await
                .unwrap()
        } else {
            let pool = self.state.store.sqlite_pool().unwrap();
            sqlx::query_scalar("SELECT MAX(position) FROM events")
                .fetch_one(pool)
                .await
                .unwrap()
        };
        max.unwrap_or(0)
    }

    /// The number of events in the whole log.
    pub async fn total_events(&self) -> i64 {
        if let Some(pool) = self.state.store.postgres_pool() {
            sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(pool)
                .await
                .unwrap()
        } else {
            let pool = self.state.store.sqlite_pool().unwrap();
            sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(pool)
                .await
                .unwrap()
        }
    }
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The problem code of an error answer.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn etag(&self) -> Option<String> {
        self.headers
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// A token for `role` with `rooms`, valid for an hour.
pub fn token(role: Role, sub: &str, rooms: &[&str]) -> String {
    JwtKey::new(SecretString::from(SECRET.to_string())).sign(&Claims {
        sub: sub.to_string(),
        role,
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        exp: chrono::Utc::now().timestamp() + 3600,
        iat: None,
        name: None,
    })
}

pub fn admin() -> String {
    token(Role::Admin, "admin-1", &[])
}

pub fn room_admin(room: &str) -> String {
    token(Role::RoomAdmin, "ra-1", &[room])
}

pub fn mediator(sub: &str, room: &str) -> String {
    token(Role::Mediator, sub, &[room])
}

/// A valid filing body.
pub fn filing(room: &str) -> Value {
    json!({
        "room_id": room,
        "category": "contract",
        "source": "party_application",
        "summary": "会员单位之间的货款纠纷",
        "claims": "支付货款",
        "amount_in_dispute": "12500.00",
        "industry": "新材料",
        "parties": [
            {"role": "applicant", "kind": "person", "name": "张三", "id_number": "440301199001011234", "phone": "13812345678"},
            {"role": "respondent", "kind": "organization", "name": "深圳某材料有限公司", "credit_code": "91350100M000100Y43"}
        ]
    })
}

/// One HTTP/1.1 exchange with a listening server (the real binary, or `tiaojie::run` on a
/// socket), on a connection of its own, with a 20-second limit. `Err` says why there was no
/// answer (the server may be SIGKILLed under it); a body that is not JSON comes back as a string.
pub async fn raw_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    raw_request(addr, method, path, token, &[], body).await
}

/// [`raw_http`] with more request headers.
pub async fn raw_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(&body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
        .await
        .map_err(|_| format!("{method} {path}: no answer within 20 s"))??;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    if parts.next() != Some("HTTP/1.1") {
        return Err(format!("{method} {path}: status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: status line {status_line:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::String(b.to_string())))
        .unwrap_or(Value::Null);
    Ok((status, body))
}
