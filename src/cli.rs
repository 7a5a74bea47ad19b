//! The command line: `tiaojie` (or `tiaojie serve`) runs the server; `tiaojie migrate` applies
//! migrations; `tiaojie verify` checks every hash chain; `tiaojie export` writes histories as JSON
//! Lines; `tiaojie projections rebuild` rebuilds the read models; `tiaojie token` prints a token
//! signed with the server's secret.
//! Failures print one line on stderr and exit non-zero; nothing here panics on bad input.

use crate::auth::{self, Claims, JwtKey, Role};
use crate::config::Config;
use crate::http::AppState;
use crate::rooms::Rooms;
use crate::store::{PoolSettings, Store};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// tiaojie (调解): case management for Shenzhen's social-organization mediation rooms.
#[derive(Debug, Parser)]
#[command(name = "tiaojie", version, about)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub config: Config,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Verify every case's hash chain; exit 1 naming each bad case when anything is invalid.
    Verify,
    /// Write case histories with their hashes as JSON Lines on standard output, in log order.
    Export {
        /// Export one case.
        #[arg(long = "case", conflicts_with = "all", required_unless_present = "all")]
        case_id: Option<String>,
        /// Export the whole log.
        #[arg(long)]
        all: bool,
    },
    /// Work on the read models.
    Projections {
        /// What to do.
        #[command(subcommand)]
        action: ProjectionsAction,
    },
    /// Print a token signed with the configured (or generated) secret.
    Token {
        /// mediator, room_admin, auditor, dashboard or admin.
        #[arg(long)]
        role: String,
        /// The person's id, e.g. m-0001.
        #[arg(long)]
        sub: String,
        /// A room of a mediator or room admin (repeat for several).
        #[arg(long)]
        room: Vec<String>,
        /// How long the token is valid: 30m, 8h, 7d.
        #[arg(long, default_value = "8h")]
        ttl: String,
        /// The person's name.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Read-model commands.
#[derive(Debug, Subcommand)]
pub enum ProjectionsAction {
    /// Rebuild every read model from the log into fresh tables and swap them in; the server may
    /// keep running meanwhile.
    Rebuild,
}

/// Runs the parsed command line.
pub async fn main(cli: Cli) -> ExitCode {
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Migrate => migrate(cli.config).await,
        Command::Verify => verify(cli.config).await,
        Command::Projections {
            action: ProjectionsAction::Rebuild,
        } => rebuild(cli.config).await,
        Command::Export { case_id, .. } => export(cli.config, case_id).await,
        Command::Token {
            role,
            sub,
            room,
            ttl,
            name,
        } => token(&cli.config, &role, sub, room, &ttl, name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tiaojie: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to the configured store.
pub async fn connect(config: &Config) -> Result<Store, String> {
    Store::connect(
        &config.database_url,
        PoolSettings {
            max_connections: config.db_max_connections.max(1),
            acquire_timeout: Duration::from_secs(config.db_acquire_timeout_secs.max(1)),
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// The key tokens are signed and checked with.
pub fn key(config: &Config) -> Result<JwtKey, String> {
    auth::load_or_create_secret(config.jwt_secret.clone(), &config.data_dir).map(JwtKey::new)
}

async fn migrate(config: Config) -> Result<(), String> {
    let store = connect(&config).await?;
    store.migrate().await.map_err(|e| e.to_string())?;
    println!("migrations applied ({})", store.kind());
    Ok(())
}

async fn rebuild(config: Config) -> Result<(), String> {
    // Progress on stderr; stdout keeps the one result line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let store = connect(&config).await?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    let started = std::time::Instant::now();
    let position = crate::projector::rebuild(&store)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "read models rebuilt up to position {position} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn verify(config: Config) -> Result<(), String> {
    let store = connect(&config).await?;
    let report = crate::audit::verify_all(&store)
        .await
        .map_err(|e| e.to_string())?;
    for (case_id, sequence) in &report.invalid {
        println!("INVALID case {case_id}: first invalid sequence {sequence}");
    }
    println!(
        "{} cases, {} events checked, {} invalid",
        report.cases_checked,
        report.events_checked,
        report.invalid.len()
    );
    if report.invalid.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} case(s) failed verification",
            report.invalid.len()
        ))
    }
}

/// One exported event: everything its hash covers, and the hashes.
fn export_line(e: &crate::store::StoredEvent) -> String {
    serde_json::json!({
        "position": e.position,
        "case_id": e.case_id,
        "sequence": e.sequence,
        "event_type": e.event_type,
        "event_version": e.event_version,
        "payload": e.payload,
        "metadata": e.metadata,
        "recorded_at": e.recorded_at,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
    .to_string()
}

async fn export(config: Config, case_id: Option<String>) -> Result<(), String> {
    use std::io::Write;
    let store = connect(&config).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let write_err = |e: std::io::Error| format!("cannot write the export: {e}");
    match case_id {
        Some(id) => {
            let (events, _) = store.case_chain(&id).await.map_err(|e| e.to_string())?;
            if events.is_empty() {
                return Err(format!("no case {id}"));
            }
            for e in &events {
                writeln!(out, "{}", export_line(e)).map_err(write_err)?;
            }
        }
        None => {
            let mut after = None;
            loop {
                let page = store
                    .read_log(after, 5_000)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(last) = page.last() else { break };
                after = Some(last.position);
                for e in &page {
                    writeln!(out, "{}", export_line(e)).map_err(write_err)?;
                }
            }
        }
    }
    out.flush().map_err(write_err)
}

fn token(
    config: &Config,
    role: &str,
    sub: String,
    rooms: Vec<String>,
    ttl: &str,
    name: Option<String>,
) -> Result<(), String> {
    let role = Role::parse(role).ok_or_else(|| {
        format!("unknown role {role:?}; use mediator, room_admin, auditor, dashboard or admin")
    })?;
    if matches!(role, Role::Mediator | Role::RoomAdmin) && rooms.is_empty() {
        return Err("a mediator or room_admin token needs at least one --room".into());
    }
    if sub.trim().is_empty() {
        return Err("--sub must not be empty".into());
    }
    let registry = Rooms::load(config.rooms.as_deref())?;
    if let Some(unknown) = rooms.iter().find(|r| registry.get(r).is_none()) {
        return Err(format!("no room {unknown} in the registry"));
    }
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub,
        role,
        rooms,
        exp: now + auth::parse_ttl(ttl)?,
        iat: Some(now),
        name,
    };
    println!("{}", key(config)?.sign(&claims));
    Ok(())
}

async fn serve(config: Config) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rooms = Rooms::load(config.rooms.as_deref())?;
    let key = key(&config)?;
    let store = connect(&config).await?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!(
        "tiaojie listening on http://{addr} ({} store, {} rooms)",
        store.kind(),
        rooms.all().count()
    );
    println!("get a token: cargo run --release -- token --role admin --sub admin");
    let projector = Arc::new(crate::projector::ProjectorStatus::default());
    let (stop_projector, projector_shutdown) = tokio::sync::watch::channel(false);
    let projector_task = tokio::spawn(crate::projector::run(
        store.clone(),
        projector.clone(),
        projector_shutdown,
    ));
    let stats = crate::stats::StatsMirror::new(store.clone());
    // Load the statistics now rather than on the first request.
    let loading = stats.clone();
    tokio::spawn(async move {
        if let Err(e) = loading.catch_up().await {
            tracing::warn!(reason = %e, "statistics not loaded at start; the first request retries");
        }
    });
    let state = AppState {
        store: store.clone(),
        rooms: Arc::new(rooms),
        key: Arc::new(key),
        projector,
        stats,
    };
    let served = crate::run(listener, state, shutdown_signal()).await;
    let _ = stop_projector.send(true);
    let _ = projector_task.await;
    served.map_err(|e| format!("server failed: {e}"))?;
    store.close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
