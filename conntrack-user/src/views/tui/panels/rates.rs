//! Rates: allocations, frees and drops per second (in total and per cause),
//! each a sparkline over as much history as the panel is wide.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Paragraph, Sparkline},
};

use crate::views::tui::{
    derive::Series,
    render::frame_block,
    state::{Panel, UiState},
    text::{rate, span},
    theme::Theme,
};

const LABEL: usize = 15;
const VALUE: usize = 7;

pub fn draw(ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let r = &ui.view.rates;
    let spark_width = area.width.saturating_sub(2 + (LABEL + VALUE + 1) as u16) as usize;
    let points = r.series.first().map_or(0, |s| s.points.len());
    let shown = points.min(spark_width);
    let secs = ui.env.interval.as_secs_f64() * shown as f64;
    let extra = if shown > 0 {
        format!("per second · last {}", span(secs))
    } else {
        "per second".to_owned()
    };
    let block = frame_block(Panel::Rates, ui, extra, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if r.series.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled("waiting for the first interval…", theme.dim())),
            inner,
        );
        return;
    }
    let rows = inner.height as usize;
    for (row, (index, series)) in pick(&r.series, rows).into_iter().enumerate() {
        let line_area = Rect {
            y: inner.y + row as u16,
            height: 1,
            ..inner
        };
        let [label, spark] = Layout::horizontal([
            Constraint::Length((LABEL + VALUE + 1) as u16),
            Constraint::Min(0),
        ])
        .areas(line_area);
        let style = theme.series(index);
        frame.render_widget(
            Line::from(vec![
                Span::styled(format!("{:<LABEL$}", series.label), style),
                Span::styled(format!("{:>VALUE$} ", rate(series.now)), theme.bold()),
            ]),
            label,
        );
        let data = &series.points[series.points.len().saturating_sub(spark.width as usize)..];
        frame.render_widget(
            Sparkline::default().data(data.iter().copied()).style(style),
            spark,
        );
    }
}

/// The rows to show: alloc, free and all drops first, then the drop causes
/// that happened, then the rest, as many as fit.
fn pick(series: &[Series], rows: usize) -> Vec<(usize, &Series)> {
    let (head, tail) = series.split_at(3.min(series.len()));
    let mut out: Vec<(usize, &Series)> = head.iter().enumerate().collect();
    let tail: Vec<(usize, &Series)> = tail.iter().enumerate().map(|(i, s)| (i + 3, s)).collect();
    out.extend(tail.iter().filter(|(_, s)| s.peak > 0.0));
    out.extend(tail.iter().filter(|(_, s)| s.peak <= 0.0));
    out.truncate(rows);
    out
}
