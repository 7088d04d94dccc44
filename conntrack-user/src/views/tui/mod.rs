//! `ctscope top`: the live terminal view. [`render::render`] draws a frame
//! from the model and the [`state::UiState`]; the command
//! (`commands::top`) owns the event loop that feeds both.
pub mod derive;
pub mod filter;
pub mod panels;
pub mod render;
pub mod state;
pub mod text;
pub mod theme;

pub use render::render;
pub use state::UiState;

use crate::{event::Message, model::Model};

/// Folds a kernel message into the model, keeping the clock the screen
/// uses to put wall times on kernel timestamps. Returns true for a sample
/// or a walk, which are worth a frame at once.
pub fn apply_kernel(model: &mut Model, ui: &mut UiState, msg: Message) -> bool {
    let news = matches!(msg, Message::Sample(_) | Message::Buckets(_));
    if let Message::Sample(s) = &msg {
        ui.env.clock = Some((s.mono_ns, s.wall_ms));
    }
    model.apply(msg);
    news
}

impl UiState {
    /// The update step's last part: recompute what the screen derives from
    /// the model (call after applying messages or changing this state).
    pub fn refresh(&mut self, model: &Model) {
        self.view = derive::derive(model, self);
    }
}

#[cfg(test)]
mod tests;
