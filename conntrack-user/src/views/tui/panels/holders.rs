//! Holders: who holds the table, from the latest walk. The groups of the
//! grouping chosen with `s` (destination, source, state, namespace),
//! largest first, narrowed by the filter, as many as fit (scroll or zoom
//! for the rest).

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
};

use super::{lines_in, visible_from};
use crate::views::{
    holders::{left_text, netns_text, state_text},
    tui::{
        render::frame_block,
        state::{Panel, UiState},
        text::{fit, short},
        theme::Theme,
    },
};

pub fn draw(ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let v = &ui.view.holders;
    let mut extra = format!("by {}", ui.holders_by.as_str());
    if v.walked {
        extra = format!("{} entries · {extra}", short(v.entries));
    }
    if !ui.filter.is_empty() {
        extra.push_str(&format!(" · [{}]", ui.filter.text));
    }
    let block = frame_block(Panel::Holders, ui, extra, theme);
    let inner = block.inner(area);
    let width = inner.width as usize;
    let mut lines = Vec::new();
    if !v.walked {
        lines.push(Line::styled(
            if ui.env.bucket_walker {
                "waiting for the first table walk…"
            } else {
                "No table walks here: holders come from the hash table walk."
            },
            theme.dim(),
        ));
    } else if v.rows.is_empty() {
        lines.push(Line::styled(
            if v.total == 0 {
                "The table is empty."
            } else {
                "No holder matches the filter."
            },
            theme.dim(),
        ));
    } else {
        // ENTRIES(7) SHR(4) STATE(12) LEFT(9) take 36 columns with their
        // gaps; what the group is comes first, the namespace gets the rest
        // (it is left out below 10 columns: zoom or filter to see it).
        let longest = v.rows.iter().map(|r| r.what().len()).max().unwrap_or(4);
        let what_w = longest.max(4).min(width.saturating_sub(36));
        let ns_w = width.saturating_sub(36 + what_w);
        let mut header = format!(
            "{:>7} {:>4} {:<what_w$} {:<12} {:<9}",
            "ENTRIES", "SHR", "WHAT", "STATE", "LEFT"
        );
        if ns_w >= 10 {
            header.push_str(" NETNS");
        }
        lines.push(Line::styled(fit(&header, width), theme.dim()));
        let rows = (inner.height as usize).saturating_sub(1);
        let from = visible_from(ui.scroll[Panel::Holders.index()], v.rows.len(), rows);
        for r in v.rows.iter().skip(from).take(rows) {
            let share = (r.count * 100).checked_div(v.entries).unwrap_or(0);
            let style = if share >= 50 {
                theme.alert()
            } else {
                theme.bold()
            };
            let mut spans = vec![
                Span::styled(format!("{:>7} ", short(r.count)), style),
                Span::raw(format!("{:>3}% ", share)),
                Span::styled(
                    format!("{:<what_w$} ", fit(&r.what(), what_w)),
                    theme.bold(),
                ),
                Span::raw(format!("{:<12} ", fit(&state_text(r), 12))),
                Span::styled(format!("{:<9}", fit(&left_text(r), 9)), theme.dim()),
            ];
            if ns_w >= 10 {
                spans.push(Span::raw(format!(" {}", fit(&netns_text(r), ns_w - 1))));
            }
            lines.push(Line::from(spans));
        }
    }
    if v.approximate && lines.len() < inner.height as usize {
        lines.push(Line::styled(
            fit("counts are upper bounds (many distinct keys)", width),
            theme.dim(),
        ));
    }
    lines_in(frame, area, block, lines);
}
