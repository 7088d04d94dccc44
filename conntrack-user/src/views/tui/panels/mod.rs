//! One module per panel. Each draws `ui.view` (and the bucket walk from the
//! model) into its rectangle, showing as much as the rectangle holds.
pub mod advice;
pub mod buckets;
pub mod drops;
pub mod fill;
pub mod holders;
pub mod namespaces;
pub mod rates;

use ratatui::{
    Frame,
    layout::Rect,
    text::Line,
    widgets::{Block, Paragraph},
};

/// Renders `lines` in a block, cut to its height.
pub fn lines_in(frame: &mut Frame, area: Rect, block: Block<'_>, mut lines: Vec<Line<'_>>) {
    let inner = block.inner(area);
    lines.truncate(inner.height as usize);
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// First visible item of a list of `len` items in `rows` rows, scrolled to
/// `offset` but never past the end.
pub fn visible_from(offset: usize, len: usize, rows: usize) -> usize {
    offset.min(len.saturating_sub(rows))
}
