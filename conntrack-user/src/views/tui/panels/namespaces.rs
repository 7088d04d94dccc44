//! Namespaces: entries, fill and drops per network namespace, sorted and
//! filtered, as many as fit (scroll for the rest).

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
};

use super::{lines_in, visible_from};
use crate::views::tui::{
    derive::{Level, NsLine},
    render::frame_block,
    state::{Panel, UiState},
    text::{fit, short},
    theme::Theme,
};

pub fn draw(ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let v = &ui.view;
    let mut extra = format!(
        "{} of {} · {}",
        v.namespaces.len(),
        v.namespaces_total,
        ui.ns_sort.label()
    );
    if !ui.filter.is_empty() {
        extra.push_str(&format!(" · [{}]", ui.filter.text));
    }
    let block = frame_block(Panel::Namespaces, ui, extra, theme);
    let inner = block.inner(area);
    let width = inner.width as usize;
    // NETNS(10) ENTRIES(7) FILL(4) ALLOC(6) DROPS(6) take 37 columns; the
    // name gets the rest.
    let name_w = width.saturating_sub(38);
    let mut lines = Vec::new();
    if !v.ready {
        lines.push(Line::styled("waiting for the first interval…", theme.dim()));
    } else if v.namespaces.is_empty() {
        lines.push(Line::styled(
            if ui.filter.is_empty() {
                "No namespace with conntrack activity."
            } else {
                "No namespace matches the filter."
            },
            theme.dim(),
        ));
    } else {
        let mut header = format!(
            "{:<10} {:>7} {:>4} {:>6} {:>6}",
            "NETNS", "ENTRIES", "FILL", "ALLOC", "DROPS"
        );
        if name_w >= 4 {
            header.push_str(&format!(" {}", "NAME"));
        }
        lines.push(Line::styled(fit(&header, width), theme.dim()));
        let rows = (inner.height as usize).saturating_sub(1);
        let from = visible_from(
            ui.scroll[Panel::Namespaces.index()],
            v.namespaces.len(),
            rows,
        );
        for ns in v.namespaces.iter().skip(from).take(rows) {
            lines.push(row(ns, name_w, theme));
        }
    }
    lines_in(frame, area, block, lines);
}

/// One namespace. A namespace that is gone keeps its counts until it is
/// retired: all grey, no fill, and said in the name column.
fn row(ns: &NsLine, name_w: usize, theme: Theme) -> Line<'static> {
    let gone = !ns.alive;
    let fill = match ns.fill_pct {
        Some(p) if !gone => format!("{p}%"),
        _ => "-".to_owned(),
    };
    let level = ns
        .fill_pct
        .map_or(Level::Ok, |p| Level::of_fill(p as f64 / 100.0));
    let style = |live| if gone { theme.dim() } else { live };
    let fill_style = style(if level == Level::Ok {
        theme.plain()
    } else {
        theme.level(level)
    });
    let drops_style = style(if ns.drops > 0 {
        theme.alert()
    } else {
        theme.plain()
    });
    let mut spans = vec![
        Span::styled(format!("{:<10} ", ns.inum), style(theme.plain())),
        Span::styled(
            format!("{:>7} ", ns.entries.map_or("-".to_owned(), short)),
            style(theme.bold()),
        ),
        Span::styled(format!("{fill:>4} "), fill_style),
        Span::styled(format!("{:>6} ", short(ns.alloc)), style(theme.plain())),
        Span::styled(format!("{:>6}", short(ns.drops)), drops_style),
    ];
    if name_w >= 4 {
        let name = ns.name.as_deref().unwrap_or("");
        let name = match (gone, name.is_empty()) {
            (false, _) => name.to_owned(),
            (true, true) => "(gone)".to_owned(),
            (true, false) => format!("{name} (gone)"),
        };
        spans.push(Span::styled(
            format!(" {}", fit(&name, name_w)),
            theme.dim(),
        ));
    }
    Line::from(spans)
}
