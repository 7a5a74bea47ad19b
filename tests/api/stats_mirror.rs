//! The statistics' in-memory copy of the facts (`tiaojie::stats`): concurrent first requests
//! share one load, later requests read only new rows, a rebuild's swapped-in tables are loaded
//! afresh, and a server that does not project sees what another one projected.

use crate::both_stores;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use tiaojie::http::AppState;
use tiaojie::projector::ProjectorStatus;
use tiaojie::stats::StatsMirror;

const STATS: &str = "/api/v1/statistics?to=2100-01-01T00:00:00Z";

/// Waits until every event is projected; returns the last position.
async fn projected(app: &TestApp) -> i64 {
    app.projected().await;
    app.state.store.read_log_last_position().await.unwrap()
}

async fn statistics(app: &TestApp) -> Value {
    let reply = app.get(STATS, &admin()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

fn filed(body: &Value) -> u64 {
    body["totals"]["filed"].as_u64().unwrap()
}

async fn one_load_then_new_rows_then_a_reload_after_a_rebuild(backend: Backend) {
    let app = Arc::new(TestApp::start(backend).await);
    for room in ["R01", "R02", "R01"] {
        let id = app.file(&admin(), room).await;
        app.post(
            &format!("/api/v1/cases/{id}/accept"),
            &admin(),
            serde_json::json!({}),
        )
        .await;
    }
    let last = projected(&app).await;
    assert_eq!(app.state.stats.loads(), 0, "loaded before anyone asked");

    // Sixteen first requests at once: one load serves them all.
    let answers = futures::future::join_all((0..16).map(|_| {
        let app = app.clone();
        async move { statistics(&app).await }
    }))
    .await;
    assert_eq!(
        app.state.stats.loads(),
        1,
        "concurrent first requests each loaded"
    );
    for a in &answers {
        assert_eq!(a["as_of_position"], last);
        assert_eq!(filed(a), 3);
        assert_eq!(a["totals"]["open"], 3);
        assert_eq!(a["totals"], answers[0]["totals"]);
    }

    // A new case: read as a new row, not by loading again.
    app.file(&admin(), "R21").await;
    let last = projected(&app).await;
    let after_write = statistics(&app).await;
    assert_eq!(after_write["as_of_position"], last);
    assert_eq!(filed(&after_write), 4);
    assert_eq!(app.state.stats.loads(), 1);

    // A rebuild swaps new tables in (new row ids): the next request loads them.
    let position = tiaojie::projector::rebuild(&app.state.store).await.unwrap();
    assert_eq!(position, last);
    let after_rebuild = statistics(&app).await;
    assert_eq!(
        app.state.stats.loads(),
        2,
        "the rebuilt tables were not loaded afresh"
    );
    assert_eq!(after_rebuild["totals"], after_write["totals"]);
    assert_eq!(after_rebuild["groups"], after_write["groups"]);

    // And rows projected into the rebuilt tables count once.
    app.file(&admin(), "R25").await;
    let last = projected(&app).await;
    let later = statistics(&app).await;
    assert_eq!(later["as_of_position"], last);
    assert_eq!(filed(&later), 5);
    assert_eq!(app.state.stats.loads(), 2);
    let room = app
        .get(
            "/api/v1/rooms/R25/statistics?to=2100-01-01T00:00:00Z",
            &admin(),
        )
        .await;
    assert_eq!(room.status, StatusCode::OK, "{}", room.body);
    assert_eq!(room.body["indicators"]["filed"], 1);
    assert_eq!(room.body["by_source"]["party_application"], 1);
}

async fn a_server_that_does_not_project_sees_the_projectors_writes(backend: Backend) {
    let app = TestApp::start(backend).await;
    // Another server process on the same database, without a projector of its own.
    let store = open(&app.url, 4).await;
    let (stop_projector, _) = tokio::sync::watch::channel(false);
    let state = AppState {
        stats: StatsMirror::new(store.clone()),
        store,
        projector: Arc::new(ProjectorStatus::default()),
        ..app.state.clone()
    };
    let other = TestApp {
        backend,
        url: app.url.clone(),
        router: tiaojie::http::app(state.clone()),
        state,
        stop_projector,
    };
    let before = statistics(&other).await;
    assert_eq!(filed(&before), 0);
    for n in 1..=3u64 {
        app.file(&admin(), "R07").await;
        let last = projected(&app).await;
        let seen = statistics(&other).await;
        assert_eq!(seen["as_of_position"], last);
        assert_eq!(filed(&seen), n);
        assert_eq!(seen, statistics(&app).await);
    }
}

/// Runs SQL (several statements) on the test's database.
async fn execute(app: &TestApp, sql: &str) {
    match app.state.store.postgres_pool() {
        Some(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        None => sqlx::raw_sql(sql)
            .execute(app.state.store.sqlite_pool().unwrap())
            .await
            .map(drop),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn a_database_at_migration_2_is_upgraded_and_projected_again(backend: Backend) {
    let app = TestApp::start(backend).await;
    for room in ["R01", "R02"] {
        let id = app.file(&admin(), room).await;
        app.post(
            &format!("/api/v1/cases/{id}/accept"),
            &admin(),
            serde_json::json!({}),
        )
        .await;
    }
    let last = projected(&app).await;
    let before = statistics(&app).await;
    // Put the database back as migration 2 left it, fully projected: the old tables with the
    // same rows, the checkpoint at the end of the log, no generation, no migration 3.
    let migration_2 = match backend {
        Backend::Postgres => tiaojie::store::migrations::POSTGRES[1].2,
        Backend::Sqlite => tiaojie::store::migrations::SQLITE[1].2,
    }
    .replace("{s}", "");
    execute(
        &app,
        "CREATE TABLE old_facts AS SELECT case_id, seq, ord, kind, room_id, category, occurred_at, \
         amount_fen, duration_us, label FROM stat_facts; \
         CREATE TABLE old_summaries AS SELECT * FROM case_summaries; \
         DROP TABLE stat_facts; DROP TABLE case_summaries;",
    )
    .await;
    execute(&app, &migration_2).await;
    execute(
        &app,
        "INSERT INTO stat_facts SELECT * FROM old_facts; \
         INSERT INTO case_summaries SELECT * FROM old_summaries; \
         DROP TABLE old_facts; DROP TABLE old_summaries; \
         DELETE FROM projector_checkpoint WHERE name = 'read_models_generation'; \
         DELETE FROM tiaojie_migrations WHERE version = 3;",
    )
    .await;
    let url = app.url.clone();
    drop(app);

    // A new server migrates (3) and projects the log again from its start.
    let app = TestApp::on(backend, url).await;
    assert_eq!(projected(&app).await, last);
    let after = statistics(&app).await;
    assert_eq!(after["as_of_position"], last);
    assert_eq!(after["totals"], before["totals"]);
    assert_eq!(after["groups"], before["groups"]);
    assert_eq!(filed(&after), 2);
    execute(&app, "SELECT row_id FROM stat_facts").await;
}

both_stores!(
    one_load_then_new_rows_then_a_reload_after_a_rebuild,
    a_server_that_does_not_project_sees_the_projectors_writes,
    a_database_at_migration_2_is_upgraded_and_projected_again,
);
