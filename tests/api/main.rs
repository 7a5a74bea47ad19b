//! The API integration tests: one binary, the real router, a real database per test — a fresh
//! SQLite file and a fresh PostgreSQL database — and every test on both stores (but those of
//! SQLite's group-commit writer, which PostgreSQL does not have).
//!
//! PostgreSQL tests run when `TIAOJIE_TEST_POSTGRES_URL` names a server (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`); each creates its own database there. Without
//! it they say plainly that they were skipped, and with `TIAOJIE_REQUIRE_POSTGRES=1` (CI) a skip
//! is a failure.

mod support;

mod audit;
mod auth_matrix;
mod cancellation;
mod concurrency;
mod export_script;
mod group_commit;
mod lifecycle;
mod pg_group_commit;
mod projector;
mod replicas;
mod restart;
mod serve;
mod statistics;
mod stats_mirror;
mod transitions;
mod validation;
