//! Clients that go away mid-request: requests dropped by their client under load leave no
//! transaction open, no connection leaked, no gap in a case or a case-number series, and every
//! normal request after them succeeds — through the router and through a real TCP server.

use crate::both_stores;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const ROOMS: [&str; 5] = ["R01", "R02", "R03", "R04", "R05"];

/// Runs `requests` 50 at a time and returns the answers in order.
async fn in_batches_of_50<F, Fut>(app: &Arc<TestApp>, n: usize, request: F) -> Vec<Reply>
where
    F: Fn(Arc<TestApp>, usize) -> Fut,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    let mut replies = Vec::new();
    for start in (0..n).step_by(50) {
        let tasks: Vec<_> = (start..(start + 50).min(n))
            .map(|i| tokio::spawn(request(app.clone(), i)))
            .collect();
        for joined in futures::future::join_all(tasks).await {
            replies.push(joined.expect("request task"));
        }
    }
    replies
}

/// Every case's sequences run 1..=n, and every room's case numbers run 0001..=n.
async fn log_has_no_gaps(app: &TestApp) {
    let gaps = "SELECT COUNT(*) FROM (SELECT aggregate_id FROM events GROUP BY aggregate_id \
                HAVING MAX(sequence) <> COUNT(*) OR MIN(sequence) <> 1) t";
    let (gapped, numbers): (i64, Vec<String>) = if let Some(pool) = app.state.store.postgres_pool()
    {
        (
            sqlx::query_scalar(gaps).fetch_one(pool).await.unwrap(),
            sqlx::query_scalar(
                "SELECT payload->'CaseFiled'->>'case_no' FROM events WHERE event_type = 'CaseFiled'",
            )
            .fetch_all(pool)
            .await
            .unwrap(),
        )
    } else {
        let pool = app.state.store.sqlite_pool().unwrap();
        (
            sqlx::query_scalar(gaps).fetch_one(pool).await.unwrap(),
            sqlx::query_scalar(
                "SELECT json_extract(payload, '$.CaseFiled.case_no') FROM events WHERE event_type = 'CaseFiled'",
            )
            .fetch_all(pool)
            .await
            .unwrap(),
        )
    };
    assert_eq!(gapped, 0, "a case's sequences have a gap");
    let mut by_room: HashMap<String, Vec<u32>> = HashMap::new();
    for no in numbers {
        let mut parts = no.split('-');
        let room = parts.next().unwrap().to_string();
        let n: u32 = parts.nth(1).unwrap().parse().unwrap();
        by_room.entry(room).or_default().push(n);
    }
    for (room, mut ns) in by_room {
        ns.sort();
        let expected: Vec<u32> = (1..=ns.len() as u32).collect();
        assert_eq!(ns, expected, "case numbers of {room} are gapless");
    }
}

/// No pooled connection is left checked out, and on PostgreSQL none sits idle in a transaction.
async fn no_connection_left_behind(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (size, idle) = match app.state.store.postgres_pool() {
            Some(pool) => (pool.size() as usize, pool.num_idle()),
            None => {
                let pool = app.state.store.sqlite_pool().unwrap();
                (pool.size() as usize, pool.num_idle())
            }
        };
        if size == idle {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {size} pooled connections still checked out",
            size - idle
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(pool) = app.state.store.postgres_pool() {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let stuck: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND state = 'idle in transaction'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if stuck == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{stuck} connections idle in transaction"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn requests_dropped_mid_flight_leave_the_server_whole(backend: Backend) {
    let app = Arc::new(TestApp::start(backend).await);
    let ra = room_admin("R01");
    let mut targets = Vec::new();
    for _ in 0..4 {
        targets.push(app.file(&ra, "R01").await);
    }
    let targets = Arc::new(targets);

    // 200 requests, each given 0–5 ms before its client gives up on it.
    let tasks: Vec<_> = (0..200usize)
        .map(|i| {
            let app = app.clone();
            let targets = targets.clone();
            tokio::spawn(async move {
                let budget = Duration::from_micros((i as u64 * 397) % 5_000);
                let request = async {
                    if i % 2 == 0 {
                        let room = ROOMS[i % 3];
                        app.post("/api/v1/cases", &room_admin(room), filing(room))
                            .await
                    } else {
                        let id = &targets[i % targets.len()];
                        app.post(
                            &format!("/api/v1/cases/{id}/notes"),
                            &room_admin("R01"),
                            json!({"text": format!("中途放弃 {i}")}),
                        )
                        .await
                    }
                };
                tokio::time::timeout(budget, request).await.ok()
            })
        })
        .collect();
    let mut dropped = 0;
    for joined in futures::future::join_all(tasks).await {
        match joined.expect("request task") {
            None => dropped += 1,
            Some(reply) => assert!(
                reply.status == StatusCode::CREATED
                    || reply.status == StatusCode::OK
                    || (reply.status == StatusCode::CONFLICT && reply.code() == "version_conflict"),
                "a request that finished in time: {} {}",
                reply.status,
                reply.body
            ),
        }
    }
    assert!(
        dropped >= 100,
        "only {dropped} of 200 were dropped mid-flight"
    );

    // Then 200 normal requests, 50 at a time: all succeed.
    let filed = in_batches_of_50(&app, 50, |app, i| async move {
        let room = ROOMS[i % ROOMS.len()];
        app.post("/api/v1/cases", &room_admin(room), filing(room))
            .await
    })
    .await;
    let mut cases = Vec::new();
    for (i, reply) in filed.iter().enumerate() {
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "filing {i}: {}",
            reply.body
        );
        cases.push((
            ROOMS[i % ROOMS.len()],
            reply.body["case_id"].as_str().unwrap().to_string(),
        ));
    }
    let cases = Arc::new(cases);
    let c = cases.clone();
    let noted = in_batches_of_50(&app, 50, move |app, i| {
        let (room, id) = c[i].clone();
        async move {
            app.post(
                &format!("/api/v1/cases/{id}/notes"),
                &room_admin(room),
                json!({"text": format!("正常备注 {i}")}),
            )
            .await
        }
    })
    .await;
    for (i, reply) in noted.iter().enumerate() {
        assert_eq!(reply.status, StatusCode::OK, "note {i}: {}", reply.body);
        assert_eq!(reply.body["version"], 2);
    }
    let c = cases.clone();
    let read = in_batches_of_50(&app, 50, move |app, i| {
        let (room, id) = c[i].clone();
        async move {
            app.get(&format!("/api/v1/cases/{id}"), &room_admin(room))
                .await
        }
    })
    .await;
    for (i, reply) in read.iter().enumerate() {
        assert_eq!(reply.status, StatusCode::OK, "read {i}: {}", reply.body);
        assert_eq!(reply.body["version"], 2);
        assert_eq!(reply.etag().as_deref(), Some("\"2\""));
    }
    let c = cases.clone();
    let mixed = in_batches_of_50(&app, 50, move |app, i| {
        let (room, id) = c[i].clone();
        async move {
            if i < 25 {
                app.post(
                    &format!("/api/v1/cases/{id}/accept"),
                    &room_admin(room),
                    json!({}),
                )
                .await
            } else {
                app.get(&format!("/api/v1/cases/{id}/history"), &room_admin(room))
                    .await
            }
        }
    })
    .await;
    for (i, reply) in mixed.iter().enumerate() {
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {}", reply.body);
        if i < 25 {
            assert_eq!(reply.body["status"], "accepted");
            assert_eq!(reply.body["version"], 3);
        } else {
            assert_eq!(reply.body["events"].as_array().unwrap().len(), 2);
        }
    }

    no_connection_left_behind(&app).await;
    log_has_no_gaps(&app).await;
    for id in targets.iter() {
        let n = app.event_count(id).await;
        assert!((1..=51).contains(&n), "{id} has {n} events");
    }
}

/// Sends one request over its own HTTP/1.1 connection and reads the whole answer; the server
/// must answer.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    raw_http(addr, method, path, token, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn abandoned_tcp_connections_do_not_hurt_a_real_server(backend: Backend) {
    let app = TestApp::start(backend).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tiaojie::run(listener, app.state.clone(), async {
        let _ = stopped.await;
    }));

    let ra = room_admin("R01");
    let target = {
        let (status, body) = http(
            addr,
            "POST",
            "/api/v1/cases",
            Some(&ra),
            Some(&filing("R01")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["case_id"].as_str().unwrap().to_string()
    };

    // 100 connections that go away: mid-headers, mid-body, or right after a whole request.
    let abandoned: Vec<_> = (0..100usize)
        .map(|i| {
            let ra = ra.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                let body = if i % 2 == 0 {
                    serde_json::to_vec(&filing("R01")).unwrap()
                } else {
                    serde_json::to_vec(&json!({"text": format!("断开 {i}")})).unwrap()
                };
                let path = if i % 2 == 0 {
                    "/api/v1/cases".to_string()
                } else {
                    format!("/api/v1/cases/{target}/notes")
                };
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ra}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                match i % 4 {
                    // Part of the headers.
                    0 => {
                        let _ = stream.write_all(&head.as_bytes()[..head.len() / 2]).await;
                    }
                    // The headers and part of the body.
                    1 => {
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(&body[..body.len() / 2]).await;
                    }
                    // The whole request, then gone before the answer.
                    _ => {
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(&body).await;
                    }
                }
                if i % 3 == 0 {
                    // Some leave with a reset rather than a close.
                    let _ = stream.set_zero_linger();
                }
                drop(stream);
            })
        })
        .collect();
    for joined in futures::future::join_all(abandoned).await {
        joined.expect("abandoning task");
    }

    // Normal requests over HTTP/1.1 by hand: all succeed.
    let (status, body) = http(addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{body}");
    let filings: Vec<_> = (0..10usize)
        .map(|i| {
            tokio::spawn(async move {
                let room = ROOMS[i % ROOMS.len()];
                let token = room_admin(room);
                let (status, body) = http(
                    addr,
                    "POST",
                    "/api/v1/cases",
                    Some(&token),
                    Some(&filing(room)),
                )
                .await;
                assert_eq!(status, 201, "filing {i}: {body}");
                (room, body["case_id"].as_str().unwrap().to_string())
            })
        })
        .collect();
    let mut filed = Vec::new();
    for joined in futures::future::join_all(filings).await {
        filed.push(joined.expect("filing task"));
    }
    for (room, id) in &filed {
        let token = room_admin(room);
        let (status, body) = http(
            addr,
            "POST",
            &format!("/api/v1/cases/{id}/notes"),
            Some(&token),
            Some(&json!({"text": "正常请求"})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"], 2);
        let (status, body) = http(
            addr,
            "GET",
            &format!("/api/v1/cases/{id}"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"], 2);
        assert_eq!(body["case_id"], id.as_str());
    }
    let (status, body) = http(
        addr,
        "GET",
        &format!("/api/v1/cases/{target}/history"),
        Some(&ra),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    no_connection_left_behind(&app).await;
    log_has_no_gaps(&app).await;

    stop.send(()).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server shuts down within 10 s")
        .expect("server task");
    assert!(finished.is_ok(), "{finished:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

both_stores!(
    requests_dropped_mid_flight_leave_the_server_whole,
    abandoned_tcp_connections_do_not_hurt_a_real_server
);
