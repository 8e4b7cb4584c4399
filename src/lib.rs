//! jobctl: a dependency-graph build orchestrator.
//!
//! ```text
//!   cli ──► config (render → parse → resolve) ──► Config::graph() ──► exec::plan
//!            │                                                          │ enqueue, claim
//!            └──► store (SQLite, PostgreSQL: the queue) ◄── exec (runners) ──► ui
//!   vocab: the words they share (ids, statuses, outcomes, reasons, log levels, streams)
//!   host: what this machine says about a process (who is alive)
//! ```
//!
//! The library is what the `jobctl` binary is made of; a program that embeds jobctl uses
//! [`config::load`] and [`graph::JobGraph`] the same way the commands in [`cli`] do.

pub mod cli;
pub mod config;
pub mod error;
pub mod exec;
pub mod graph;
pub mod host;
pub mod limits;
pub mod store;
pub mod ui;
pub mod vocab;
