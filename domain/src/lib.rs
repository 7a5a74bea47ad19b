//! The mediation case aggregate: what a dispute is, which steps it may take, and what each step
//! records. This crate is the only place where case rules live.
//!
//! Module map:
//! - [`values`]: validated value types (money in fen, room ids, parties, credit codes, case numbers).
//! - [`status`]: the case statuses and the one allowed-transition table.
//! - [`commands`]: what a caller asks for, with the time the step happened and the server's clock.
//! - [`events`]: what is recorded; their `event_type` names and versions are the storage format.
//! - [`aggregate`]: the [`Case`] aggregate: `handle` decides, `apply` only assigns.
//! - [`error`]: why a command was refused.
//!
//! Architecture invariant: no I/O, no clock, no HTTP or SQL types here. Time, ids and the actor
//! arrive in the command; the crate depends on cqrs-es, serde, thiserror, uuid and chrono only.

pub mod aggregate;
pub mod commands;
pub mod error;
pub mod events;
pub mod status;
pub mod values;

pub use aggregate::{AssignedMediator, Case, CaseFile, Outcome};
pub use commands::*;
pub use error::CaseError;
pub use events::CaseEvent;
pub use status::{CaseStatus, Step};
pub use values::*;
