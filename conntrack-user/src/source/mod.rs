//! Event sources: everything that produces [`crate::event::Message`]s.
pub mod live;
pub mod replay;

#[cfg(test)]
mod replay_tests;
