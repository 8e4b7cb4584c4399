//! What a person sees of a run. `plain` prints one line per event that matters; the live
//! tree for terminals is still to come.

pub mod plain;
