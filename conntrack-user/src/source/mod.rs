//! Event sources: everything that produces [`crate::event::Message`]s.
pub mod live;
pub mod netns;
pub mod replay;
pub mod resolve;

#[cfg(test)]
mod replay_tests;
