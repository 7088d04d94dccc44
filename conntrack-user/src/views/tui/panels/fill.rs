//! Table fill: a gauge of the fullest namespace against nf_conntrack_max,
//! the memory the table takes, and when it fills at the current growth.

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
};

use super::lines_in;
use crate::model::advice::mib;
use crate::views::tui::{
    derive::{FillView, Level, TimeToFull},
    render::frame_block,
    state::{Panel, UiState},
    text::{fit, span, thousands},
    theme::Theme,
};

pub fn draw(ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let f = &ui.view.fill;
    let extra = if f.narrowed {
        format!("[{}]", ui.filter.text)
    } else {
        String::new()
    };
    let block = frame_block(Panel::Fill, ui, extra, theme);
    let width = block.inner(area).width as usize;
    let mut lines = Vec::new();
    match (f.ratio, f.max) {
        (Some(ratio), Some(max)) => {
            lines.push(gauge(ratio, f.level, width, theme));
            let (entries, who) = match &f.fullest {
                Some(n) => (
                    n.entries,
                    n.name
                        .clone()
                        .unwrap_or_else(|| format!("netns {}", n.inum)),
                ),
                None => (f.entries_total.unwrap_or(0), "all namespaces".to_owned()),
            };
            lines.push(Line::raw(fit(
                &format!("{} of {} · {who}", thousands(entries), thousands(max)),
                width,
            )));
        }
        (_, Some(max)) if ui.view.ready => {
            lines.push(Line::raw(format!("nf_conntrack_max {}", thousands(max))));
            lines.push(Line::styled("no namespace counts readable", theme.dim()));
        }
        _ => lines.push(Line::styled("waiting for the first interval…", theme.dim())),
    }
    lines.push(projection(f, theme));
    if let Some(now) = f.memory_now {
        let approx = if f.objsize_known { "" } else { "≤" };
        lines.push(Line::raw(fit(
            &format!(
                "all {} in {} netns · mem {approx}{}",
                thousands(f.entries_total.unwrap_or(0)),
                f.namespaces,
                mib(now)
            ),
            width,
        )));
    }
    if let Some(at_max) = f.memory_at_max {
        lines.push(Line::styled(
            fit(
                &format!("{} at max ({} B/entry, 8 B/bucket)", mib(at_max), f.objsize),
                width,
            ),
            theme.dim(),
        ));
    }
    if let Some(b) = f.buckets {
        let chain = match ui.view.chain {
            Some(c) if c.measured => format!(" · mean chain {:.2}", c.mean),
            Some(c) => format!(" · chains ~{:.2}", c.mean),
            None => String::new(),
        };
        lines.push(Line::styled(
            fit(&format!("buckets {}{chain}", thousands(b)), width),
            theme.dim(),
        ));
    }
    lines_in(frame, area, block, lines);
}

/// `█████░░░░  93%`: readable without colour.
fn gauge(ratio: f64, level: Level, width: usize, theme: Theme) -> Line<'static> {
    // A limit lowered below the count leaves the namespace over 100%.
    let label = if ratio < 10.0 {
        format!(" {:>3.0}%", ratio * 100.0)
    } else {
        " >999%".to_owned()
    };
    let bar = width.saturating_sub(label.len()).max(1);
    let filled = ((ratio.clamp(0.0, 1.0) * bar as f64).round() as usize).min(bar);
    Line::from(vec![
        Span::styled("█".repeat(filled), theme.level(level)),
        Span::styled("░".repeat(bar - filled), theme.dim()),
        Span::styled(label, theme.level(level)),
    ])
}

fn projection(f: &FillView, theme: Theme) -> Line<'static> {
    let growth = f.growth.map(|g| format!("{:+.1}/s", g)).unwrap_or_default();
    match &f.time_to_full {
        TimeToFull::Full => Line::styled("FULL: new connections drop", theme.alert()),
        TimeToFull::Seconds(s) => Line::styled(
            format!("full in {} at {growth}", span(*s)),
            if *s < 600.0 {
                theme.level(Level::Warning)
            } else {
                theme.plain()
            },
        ),
        TimeToFull::NotGrowing => Line::raw(format!("not growing ({growth})")),
        TimeToFull::Unknown => Line::styled("growth: measuring…", theme.dim()),
    }
}
