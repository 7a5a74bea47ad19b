//! Two servers on one database: a case read on one server shows every write the other has
//! acknowledged before the read began, although the reading server keeps the case folded in its
//! cache. Reads of many cases at once on PostgreSQL share their head lookups (one statement for
//! all that arrive together); each must still come out exact.

use crate::both_stores;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;
use std::sync::Arc;

async fn reads_on_one_server_show_writes_acknowledged_by_another(backend: Backend) {
    let writer = TestApp::start(backend).await;
    let reader = Arc::new(TestApp::on(backend, writer.url.clone()).await);
    let ra = room_admin("R01");

    // Several cases, each read once on the reading server so that its fold is cached there.
    let mut cases = Vec::new();
    for _ in 0..6 {
        let id = writer.file(&ra, "R01").await;
        let first = reader.get(&format!("/api/v1/cases/{id}"), &ra).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        assert_eq!(first.body["version"], 1);
        cases.push((id, 1u64));
    }

    for round in 0..8 {
        // The writing server moves one case on and acknowledges it.
        let (id, version) = &mut cases[round % 6];
        let reply = writer
            .post(
                &format!("/api/v1/cases/{id}/notes"),
                &ra,
                json!({ "text": format!("第{round}轮备注") }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        *version = reply.body["version"].as_u64().expect("version");

        // Every read begun after that acknowledgement, all at once and several per case, shows
        // each case at its acknowledged version.
        let reads: Vec<_> = cases
            .iter()
            .flat_map(|(id, version)| std::iter::repeat_n((id.clone(), *version), 3))
            .map(|(id, version)| {
                let reader = reader.clone();
                let ra = ra.clone();
                tokio::spawn(async move {
                    let reply = reader.get(&format!("/api/v1/cases/{id}"), &ra).await;
                    (id, version, reply)
                })
            })
            .collect();
        for read in futures::future::join_all(reads).await {
            let (id, version, reply) = read.expect("read task");
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert_eq!(
                reply.body["version"].as_u64(),
                Some(version),
                "round {round}: case {id} read at an older version than acknowledged"
            );
            assert_eq!(
                reply.etag().as_deref(),
                Some(format!("\"{version}\"").as_str())
            );
        }
    }

    // A case that does not exist is still 404 when looked up among existing ones.
    let missing = uuid::Uuid::new_v4();
    let (missing_path, known_path) = (
        format!("/api/v1/cases/{missing}"),
        format!("/api/v1/cases/{}", cases[0].0),
    );
    let (a, b) = tokio::join!(reader.get(&missing_path, &ra), reader.get(&known_path, &ra));
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
}

both_stores!(reads_on_one_server_show_writes_acknowledged_by_another);
