//! tiaojie (调解): the case-management backend of Shenzhen's 30 social-organization mediation
//! rooms. Each dispute is an event-sourced aggregate (`tiaojie-domain`); its events are the case
//! file that auditors replay and verify.
//!
//! Module map:
//! - [`config`]: settings from flags and `TIAOJIE_*` variables, read once.
//! - [`store`]: the event store on PostgreSQL or SQLite, migrations, the command path.
//! - [`http`]: the axum router, one module per resource, the one error type.
//! - [`audit`]: the hash chain, verification of cases and of the log, the log digest.
//! - [`projector`]: the one checkpointed writer of the read models; `rebuild`.
//! - [`stats`]: this process's statistics, an in-memory copy of the facts read model.
//! - [`auth`]: tokens, roles, room scoping, masking rules.
//! - [`rooms`]: the rooms registry.
//! - [`cli`]: `tiaojie serve | migrate | verify | export | projections rebuild | token`.
//!
//! The server is [`run`]`(listener, state, shutdown)`, so tests start it on `127.0.0.1:0`, and
//! [`http::app`] is the router alone, for `oneshot` tests.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod projector;
pub mod rooms;
pub mod stats;
pub mod store;

use std::future::Future;
use tokio::net::TcpListener;

/// Serves the API on `listener` until `shutdown` completes, then finishes requests in flight.
pub async fn run(
    listener: TcpListener,
    state: http::AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, http::app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
