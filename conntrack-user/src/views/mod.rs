//! Views: pure functions from the model to text or frames.
pub mod buckets;
pub mod stats;
