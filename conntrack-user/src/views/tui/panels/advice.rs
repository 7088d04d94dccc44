//! Advice: the tuning guide's findings, most severe first, each with the
//! commands to run. Scrolls one finding at a time.

use ratatui::{Frame, layout::Rect, text::Line};

use super::{lines_in, visible_from};
use crate::views::tui::{
    render::frame_block,
    state::{Panel, UiState},
    text::wrap,
    theme::Theme,
};

pub fn draw(ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let findings = &ui.view.advice;
    let extra = match findings.len() {
        0 => String::new(),
        1 => "1 finding".to_owned(),
        n => format!("{n} findings"),
    };
    let block = frame_block(Panel::Advice, ui, extra, theme);
    let width = block.inner(area).width as usize;
    let mut lines = Vec::new();
    if findings.is_empty() {
        let msg = if ui.view.ready {
            "Nothing to change: the table has room and the settings follow the tuning guide."
        } else {
            "waiting for the first interval…"
        };
        lines.extend(
            wrap(msg, width, "")
                .into_iter()
                .map(|l| Line::styled(l, theme.dim())),
        );
    }
    let from = visible_from(ui.scroll[Panel::Advice.index()], findings.len(), 1);
    for f in findings.iter().skip(from) {
        let tag = format!("{} ", f.severity.as_str().to_uppercase());
        let text = format!("{tag}{}", f.message);
        for (i, l) in wrap(&text, width, "  ").into_iter().enumerate() {
            if i == 0 {
                let (head, rest) = l.split_at(tag.len().min(l.len()));
                lines.push(Line::from(vec![
                    ratatui::text::Span::styled(head.to_owned(), theme.severity(f.severity)),
                    ratatui::text::Span::raw(rest.to_owned()),
                ]));
            } else {
                lines.push(Line::raw(l));
            }
        }
        for c in &f.commands {
            // A small indent keeps long sysctl names on one line more often.
            for l in wrap(&format!("$ {c}"), width, "  ") {
                lines.push(Line::styled(l, theme.command()));
            }
        }
    }
    lines_in(frame, area, block, lines);
}
