//! Drops: exact counts per cause, the latest dropped packets and the
//! destinations dropped most.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph},
};

use super::visible_from;
use crate::{
    model::drops::Cause,
    views::tui::{
        derive::{DropLine, DropsView},
        render::frame_block,
        state::{Panel, UiState},
        text::{fit, short, thousands},
        theme::Theme,
    },
};

pub fn draw(ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let d = &ui.view.drops;
    let mut extra = ui.drop_sort.label().to_owned();
    if d.filtered {
        extra.push_str(&format!(" · [{}]", ui.filter.text));
    }
    let block = frame_block(Panel::Drops, ui, extra, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    if !ui.view.ready {
        frame.render_widget(
            Line::styled("waiting for the first interval…", theme.dim()),
            inner,
        );
        return;
    }
    let [counts, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    frame.render_widget(cause_line(d, inner.width as usize, theme), counts);
    let offset = ui.scroll[Panel::Drops.index()];
    // The list keeps its source and TCP-flag columns (a SYN must show as
    // one) before the top destinations get a column beside it: side by side
    // only when the list still has LIST_MIN columns, else stacked.
    if body.width >= LIST_MIN + TOP_MIN {
        let top_w = (body.width * 36 / 100)
            .min(body.width - LIST_MIN)
            .max(TOP_MIN);
        let [latest, top] =
            Layout::horizontal([Constraint::Min(0), Constraint::Length(top_w)]).areas(body);
        draw_latest(d, offset, ui, frame, latest, theme);
        draw_top(d, offset, frame, top, Borders::LEFT, theme);
    } else if body.height >= 9 {
        let [latest, top] =
            Layout::vertical([Constraint::Percentage(60), Constraint::Min(0)]).areas(body);
        draw_latest(d, offset, ui, frame, latest, theme);
        draw_top(d, offset, frame, top, Borders::TOP, theme);
    } else {
        draw_latest(d, offset, ui, frame, body, theme);
    }
}

fn short_cause(c: Cause) -> &'static str {
    match c {
        Cause::TableFull => "full",
        Cause::Invalid => "invalid",
        Cause::InsertFailed => "insert",
        Cause::ChainTooLong => "chain",
        Cause::Ruleset => "ruleset",
        Cause::Other => "other",
    }
}

fn cause_line(d: &DropsView, width: usize, theme: Theme) -> Line<'static> {
    let mut spans = Vec::new();
    for (cause, n) in &d.by_cause {
        let style = if *n > 0 {
            theme.cause(*cause).patch(theme.bold())
        } else {
            theme.dim()
        };
        spans.push(Span::styled(
            format!("{} {}", short_cause(*cause), short(*n)),
            style,
        ));
        spans.push(Span::styled(" · ", theme.dim()));
    }
    spans.push(Span::styled(
        format!("early {}", short(d.early_drop)),
        theme.dim(),
    ));
    let used: usize = spans.iter().map(|s| s.width()).sum();
    if used > width {
        // Narrow: only the causes that happened.
        spans = d
            .by_cause
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| {
                Span::styled(
                    format!("{} {} ", short_cause(*c), short(*n)),
                    theme.cause(*c),
                )
            })
            .collect();
        if spans.is_empty() {
            spans.push(Span::styled("no drops", theme.dim()));
        }
    }
    Line::from(spans)
}

/// Columns the drop list needs to show the source and the TCP flags
/// (`Columns::for_width`).
const LIST_MIN: u16 = 72;
/// The narrowest top-destinations column worth drawing beside the list.
const TOP_MIN: u16 = 30;

struct Columns {
    src: bool,
    flags: bool,
    ifname: bool,
    netns: bool,
}

impl Columns {
    fn for_width(w: usize) -> Self {
        // time, cause, proto and destination take 46 columns.
        Self {
            src: w >= 68,
            flags: w >= 72,
            ifname: w >= 81,
            netns: w >= 92,
        }
    }
}

fn draw_latest(
    d: &DropsView,
    offset: usize,
    ui: &UiState,
    frame: &mut Frame,
    area: Rect,
    theme: Theme,
) {
    let width = area.width as usize;
    let cols = Columns::for_width(width);
    let mut lines = Vec::new();
    if d.lines.is_empty() {
        let msg = if d.filtered {
            format!("No drops match [{}].", ui.filter.text)
        } else {
            "No dropped packets since start.".to_owned()
        };
        lines.push(Line::styled(msg, theme.dim()));
    } else {
        let mut header = format!("{:<8} {:<7} {:<5} ", "TIME", "CAUSE", "PROTO");
        if cols.src {
            header.push_str(&format!("{:>21} → ", "SOURCE"));
        }
        header.push_str(&format!("{:<21}", "DESTINATION"));
        if cols.flags {
            header.push_str(" FLG");
        }
        if cols.ifname {
            header.push_str(&format!(" {:<8}", "IF"));
        }
        if cols.netns {
            header.push_str(" NETNS");
        }
        lines.push(Line::styled(fit(&header, width), theme.dim()));
        let rows = (area.height as usize).saturating_sub(1);
        let from = visible_from(offset, d.lines.len(), rows);
        for l in d.lines.iter().skip(from).take(rows) {
            lines.push(drop_row(l, &cols, width, theme));
        }
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn drop_row(l: &DropLine, cols: &Columns, width: usize, theme: Theme) -> Line<'static> {
    let mut rest = String::new();
    if cols.src {
        rest.push_str(&format!("{:>21} → ", fit(&l.src, 21)));
    } else {
        rest.push_str("→ ");
    }
    // Time, cause and protocol take 23 columns, the arrow 2.
    let dst_w = width.saturating_sub(25).clamp(8, 21);
    rest.push_str(&format!("{:<dst_w$}", fit(&l.dst, dst_w)));
    if cols.flags {
        rest.push_str(&format!(" {:<3}", fit(&l.flags, 3)));
    }
    if cols.ifname {
        rest.push_str(&format!(" {:<8}", fit(&l.ifname, 8)));
    }
    if cols.netns {
        rest.push_str(&format!(" {}", l.netns));
    }
    let head = format!("{:<8} ", l.time);
    let cause = format!("{:<7} ", short_cause(l.cause));
    let proto = format!("{:<5} ", fit(&l.proto, 5));
    let used = head.len() + cause.len() + proto.len();
    Line::from(vec![
        Span::styled(head, theme.dim()),
        Span::styled(cause, theme.cause(l.cause)),
        Span::raw(proto),
        Span::raw(fit(&rest, width.saturating_sub(used))),
    ])
}

/// The top destinations in their own block: a rule (`side`) parts them
/// from the drop list, whose rows they would otherwise continue.
fn draw_top(
    d: &DropsView,
    offset: usize,
    frame: &mut Frame,
    area: Rect,
    side: Borders,
    theme: Theme,
) {
    let block = Block::new().borders(side).border_style(theme.dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let area = inner;
    let width = area.width as usize;
    let count_w = 8;
    let mut lines = vec![Line::styled(
        fit(&format!("TOP DESTINATIONS ({})", d.top_scope), width),
        theme.dim(),
    )];
    if d.top_dst.is_empty() {
        lines.push(Line::styled("none", theme.dim()));
    }
    let rows = (area.height as usize).saturating_sub(1);
    let from = visible_from(offset, d.top_dst.len(), rows);
    for (dst, n) in d.top_dst.iter().skip(from).take(rows) {
        let name_w = width.saturating_sub(count_w + 1);
        lines.push(Line::from(vec![
            Span::raw(format!("{:<name_w$} ", fit(dst, name_w))),
            Span::styled(format!("{:>count_w$}", n.text(thousands)), theme.bold()),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), area);
}
