//! Configuration, read once at start from flags and `TIAOJIE_*` environment variables into one
//! typed struct that is passed down. Nothing reads the environment anywhere else.

use clap::Args;
use secrecy::SecretString;
use std::path::PathBuf;

/// The server's settings. Every field is a flag and an environment variable.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// The event store: `sqlite://PATH` (embedded; the file and its folder are created) or
    /// `postgres://USER@HOST:PORT/DB`.
    #[arg(
        long,
        env = "TIAOJIE_DATABASE_URL",
        default_value = "sqlite://data/tiaojie.db",
        global = true
    )]
    pub database_url: String,

    /// Where the HTTP server listens.
    #[arg(
        long,
        env = "TIAOJIE_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: String,

    /// The rooms registry (TOML); the shipped `deploy/rooms.toml` when unset.
    #[arg(long, env = "TIAOJIE_ROOMS", global = true)]
    pub rooms: Option<PathBuf>,

    /// The HS256 signing secret for tokens (at least 16 characters). When unset, a random one is
    /// created in the data folder on first start and reused after.
    #[arg(
        long,
        env = "TIAOJIE_JWT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub jwt_secret: Option<SecretString>,

    /// The data folder: where the generated signing secret is kept.
    #[arg(long, env = "TIAOJIE_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,

    /// The largest number of database connections.
    #[arg(
        long,
        env = "TIAOJIE_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,

    /// Seconds a request waits for a database connection before it is answered 503.
    #[arg(
        long,
        env = "TIAOJIE_DB_ACQUIRE_TIMEOUT_SECS",
        default_value_t = 5,
        global = true
    )]
    pub db_acquire_timeout_secs: u64,
}
