//! jobctl: a dependency-graph build orchestrator.
//!
//! ```text
//!   cli ──► config (render → parse → resolve) ──► graph ──► (exec, store, ui: to come)
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
pub mod outcome;
pub mod store;
pub mod ui;
