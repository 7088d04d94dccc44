//! The frame: header, the seven panels, footer, help (`bars`). A pure
//! function of the model and the UI state; it lays out and styles, it
//! computes nothing the update step could (see `derive`).

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, BorderType, Paragraph},
};

use super::{
    bars, panels,
    state::{Panel, UiState},
    text,
    theme::Theme,
};
use crate::model::Model;

/// The smallest terminal the layout is made for.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub fn render(model: &Model, ui: &UiState, frame: &mut Frame) {
    let theme = Theme::new(ui.env.color);
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area, theme);
        return;
    }
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    bars::draw_header(model, ui, frame, header, theme);
    match (ui.zoom, ui.focus) {
        (true, Some(panel)) => draw_panel(panel, model, ui, frame, body, theme),
        _ => {
            for (panel, rect) in Panel::ALL.into_iter().zip(body_areas(body)) {
                draw_panel(panel, model, ui, frame, rect, theme);
            }
        }
    }
    bars::draw_footer(ui, frame, footer, theme);
    if ui.help {
        let keys = if ui.replay.is_some() {
            bars::REPLAY_HELP
        } else {
            bars::HELP
        };
        bars::draw_help(keys, frame, area, theme);
    }
}

/// Three rows of two panels: fill | rates, buckets | drops, namespaces
/// over holders | advice. The first row stays short (its content is a few
/// lines); the lists share what is left.
fn body_areas(body: Rect) -> [Rect; 7] {
    let first = (body.height / 4).clamp(5, 11);
    let rest = body.height.saturating_sub(first);
    let [a, b, c] = Layout::vertical([
        Constraint::Length(first),
        Constraint::Length(rest / 2),
        Constraint::Min(0),
    ])
    .areas(body);
    let split = |r: Rect, left: u16| -> [Rect; 2] {
        Layout::horizontal([Constraint::Percentage(left), Constraint::Min(0)]).areas(r)
    };
    let [fill, rates] = split(a, 42);
    let [buckets, drops] = split(b, 42);
    let [lists, advice] = split(c, 50);
    let [namespaces, holders] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Min(0)]).areas(lists);
    [fill, rates, buckets, drops, namespaces, advice, holders]
}

/// A panel's frame: its digit, title and a thick border when focused.
pub fn frame_block<'a>(panel: Panel, ui: &UiState, extra: String, theme: Theme) -> Block<'a> {
    let focused = ui.focus == Some(panel);
    let mut title = vec![Span::styled(
        format!(" {} {} ", panel.index() + 1, panel.title()),
        theme.title(focused),
    )];
    if !extra.is_empty() {
        title.push(Span::styled(format!("· {extra} "), theme.dim()));
    }
    Block::bordered()
        .border_type(if focused {
            BorderType::Thick
        } else {
            BorderType::Plain
        })
        .border_style(theme.border(focused))
        .title(Line::from(title))
}

fn draw_panel(
    panel: Panel,
    model: &Model,
    ui: &UiState,
    frame: &mut Frame,
    area: Rect,
    theme: Theme,
) {
    match panel {
        Panel::Fill => panels::fill::draw(ui, frame, area, theme),
        Panel::Rates => panels::rates::draw(ui, frame, area, theme),
        Panel::Buckets => panels::buckets::draw(model, ui, frame, area, theme),
        Panel::Drops => panels::drops::draw(ui, frame, area, theme),
        Panel::Namespaces => panels::namespaces::draw(ui, frame, area, theme),
        Panel::Advice => panels::advice::draw(ui, frame, area, theme),
        Panel::Holders => panels::holders::draw(ui, frame, area, theme),
    }
}

fn too_small(frame: &mut Frame, area: Rect, theme: Theme) {
    let msg = format!(
        "ctscope top needs {MIN_WIDTH}x{MIN_HEIGHT}; this terminal is {}x{}. q quits.",
        area.width, area.height
    );
    let lines: Vec<Line> = text::wrap(&msg, area.width.max(1) as usize, "")
        .into_iter()
        .map(|l| Line::styled(l, theme.bold()))
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}
