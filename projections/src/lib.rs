//! Pure read-model folds: from case events to the rows the read side stores and to the
//! statistics the bureau reads. No database types, no clock, no I/O: the projector in the server
//! feeds these functions and stores what they return.
//!
//! - [`summary`]: the case summary behind `GET /api/v1/cases` (one row per case).
//! - [`facts`]: the statistical facts one event contributes (counted by `occurred_at`, in the room
//!   the case is in when the event occurs).
//! - [`indicators`]: the indicators of API.md computed from facts, including interpolated
//!   percentiles, and a naive recomputation straight from events for checking the projection.
//! - [`index`]: the facts in memory, indexed by cell, kind and time, answering the statistics of
//!   any window (what the server answers statistics requests from).
//! - [`replay`]: a whole log folded for a rebuild, read in any order (each case in sequence order).
//!
//! Invariant: a fold over the same events in the same order always gives the same rows, so any
//! read model can be dropped and rebuilt from the log.

pub mod facts;
pub mod index;
pub mod indicators;
pub mod replay;
pub mod summary;
