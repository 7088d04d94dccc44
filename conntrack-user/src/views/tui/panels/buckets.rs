//! Buckets: the chain-length histogram of the latest walk of the hash
//! table, max / mean / p99, a heat strip of the bucket space and the
//! hottest chains. Without a walk it says why, and shows the mean the
//! counts imply.

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
};

use super::{lines_in, visible_from};
use crate::{
    model::{
        Model,
        buckets::{BucketWalk, HISTOGRAM_LABELS},
    },
    views::tui::{
        render::frame_block,
        state::{Panel, UiState},
        text::{fit, short, thousands},
        theme::Theme,
    },
};

pub fn draw(model: &Model, ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let Some(walk) = &model.buckets else {
        return absent(ui, frame, area, theme);
    };
    let block = frame_block(
        Panel::Buckets,
        ui,
        format!("{} buckets", short(walk.buckets)),
        theme,
    );
    let inner = block.inner(area);
    let width = inner.width as usize;
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("max {}", walk.max), theme.heat(walk.max)),
            Span::raw(format!(
                " · mean {:.2} · p99 {} · non-empty {:.2}",
                walk.mean, walk.p99, walk.mean_nonempty
            )),
        ]),
        heat_strip(walk, width, theme),
    ];
    let top = walk.histogram.iter().copied().max().unwrap_or(0).max(1);
    let last = walk.histogram.iter().rposition(|n| *n > 0).unwrap_or(0);
    let count_w = 9;
    let bar_w = width.saturating_sub(6 + count_w);
    let mut rows: Vec<Line> = walk.histogram[..=last]
        .iter()
        .zip(HISTOGRAM_LABELS)
        .map(|(n, label)| {
            let len = (*n as f64 / top as f64 * bar_w as f64).ceil() as usize;
            Line::from(vec![
                Span::styled(format!("{label:>5} "), theme.dim()),
                Span::styled("▇".repeat(len.min(bar_w)), theme.series(1)),
                Span::raw(format!(" {}", thousands(*n))),
            ])
        })
        .collect();
    for hot in &walk.hottest {
        let first = hot.entries.first().map_or(String::new(), |e| {
            format!(" {} {}:{} → {}:{}", e.proto, e.src, e.sport, e.dst, e.dport)
        });
        rows.push(Line::styled(
            fit(&format!("#{} len {}{first}", hot.index, hot.len), width),
            theme.heat(hot.len),
        ));
    }
    rows.push(Line::styled(
        fit(
            &format!(
                "walk {:.0} ms · {} restarts",
                walk.duration_ns as f64 / 1e6,
                walk.restarts
            ),
            width,
        ),
        theme.dim(),
    ));
    let room = (inner.height as usize).saturating_sub(lines.len());
    let from = visible_from(ui.scroll[Panel::Buckets.index()], rows.len(), room);
    lines.extend(rows.into_iter().skip(from));
    lines_in(frame, area, block, lines);
}

/// The longest chain in each slice of the bucket space, one cell per slice
/// (slices merged to fit the width).
fn heat_strip(walk: &BucketWalk, width: usize, theme: Theme) -> Line<'static> {
    if walk.heat.is_empty() || width == 0 {
        return Line::styled("(no heat data)", theme.dim());
    }
    let cells = width.min(walk.heat.len()).max(1);
    let per = walk.heat.len().div_ceil(cells);
    let spans: Vec<Span> = walk
        .heat
        .chunks(per)
        .map(|c| {
            let m = c.iter().copied().max().unwrap_or(0);
            let glyph = match m {
                0 => "·",
                1..=2 => "░",
                3..=4 => "▒",
                5..=8 => "▓",
                _ => "█",
            };
            Span::styled(glyph, theme.heat(m))
        })
        .collect();
    Line::from(spans)
}

fn absent(ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let block = frame_block(Panel::Buckets, ui, String::new(), theme);
    let width = block.inner(area).width as usize;
    let why = if ui.env.bucket_walker {
        "No walk of the hash table yet; the histogram appears after the first one."
    } else {
        "Chain lengths need a walk of the hash table, which this build does not do yet."
    };
    let mut lines: Vec<Line> = crate::views::tui::text::wrap(why, width, "")
        .into_iter()
        .map(|l| Line::styled(l, theme.bold()))
        .collect();
    if let Some(c) = ui.view.chain.filter(|c| !c.measured) {
        let estimate = format!("Estimate: 2 × entries / buckets = {:.2} per chain", c.mean);
        lines.extend(
            crate::views::tui::text::wrap(&estimate, width, "")
                .into_iter()
                .map(Line::raw),
        );
    }
    lines_in(frame, area, block, lines);
}
