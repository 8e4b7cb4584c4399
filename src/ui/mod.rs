//! What a person sees of a run: on a terminal, `live` draws a tree of running builds
//! with their progress; elsewhere `plain` prints one line per event that matters. Both
//! render through pure functions of their state.

pub mod graph;
pub mod live;
pub mod plain;
pub mod tui;
