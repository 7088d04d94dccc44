//! `ctscope top`: the live terminal view. [`render::render`] draws a frame
//! from the model and the [`state::UiState`]; the command
//! (`commands::top`) owns the event loop that feeds both.
pub mod bars;
pub mod derive;
pub mod feed;
pub mod filter;
pub mod keys;
pub mod panels;
pub mod render;
pub mod state;
pub mod text;
pub mod theme;

pub use render::render;
pub use state::UiState;

use crate::model::Model;

impl UiState {
    /// The update step's last part: recompute what the screen derives from
    /// the model (call after applying messages or changing this state).
    pub fn refresh(&mut self, model: &Model) {
        self.view = derive::derive(model, self);
    }
}

#[cfg(test)]
mod tests;
