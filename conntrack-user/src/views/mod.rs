//! Views: pure functions from the model to text or frames.
pub mod buckets;
pub mod drops;
pub mod holders;
pub mod metrics;
pub mod stats;
pub mod tui;
