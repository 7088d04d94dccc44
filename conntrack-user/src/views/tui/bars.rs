//! The header, the footer and the help overlay: what the data is (live,
//! a replay, a demo), the recording indicator, key hints and messages.

use ratatui::{
    Frame,
    layout::{Constraint, Flex, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, BorderType, Clear, Paragraph},
};

use super::{
    feed::{self, DemoView, RecordingView, ReplayView},
    state::UiState,
    text,
    theme::Theme,
};
use crate::model::Model;

pub fn draw_header(model: &Model, ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let v = &ui.view;
    let sep = || Span::styled(" · ", theme.dim());
    let mut spans = vec![Span::styled(" ctscope ", theme.banner()), Span::raw(" ")];
    // A frozen screen says so before anything else, then what the data is:
    // at 80 columns the tail is cut.
    if ui.paused {
        spans.push(Span::styled(" PAUSED ", theme.banner()));
        spans.push(Span::raw(" "));
    }
    if let Some(r) = &ui.replay {
        spans.extend(replay_spans(model, r, theme));
        spans.push(sep());
    } else if let Some(d) = &ui.demo {
        spans.extend(demo_spans(d, theme));
        spans.push(sep());
    }
    spans.extend([
        Span::raw(format!("kernel {}", model.info.kernel)),
        sep(),
        Span::raw(model.info.backend.clone()),
        sep(),
    ]);
    if ui.replay.is_none() {
        spans.push(Span::raw(format!(
            "up {}",
            text::span(ui.env.uptime.as_secs_f64())
        )));
        spans.push(sep());
    }
    spans.push(Span::raw(format!(
        "every {}",
        text::duration(ui.env.interval)
    )));
    spans.push(sep());
    let lost = format!("lost {}", text::thousands(v.lost_events));
    spans.push(if v.lost_events > 0 {
        Span::styled(lost, theme.alert())
    } else {
        Span::raw(lost)
    });
    if v.probe_misses > 0 {
        spans.push(sep());
        spans.push(Span::styled(
            format!("probe misses {}", text::thousands(v.probe_misses)),
            theme.level(super::derive::Level::Warning),
        ));
    }
    frame.render_widget(Line::from(spans), area);
}

/// `REPLAY FILE · 0:12 / 1:30 ×1  PAUSED  · at 12:00:13`.
fn replay_spans<'a>(model: &Model, r: &ReplayView, theme: Theme) -> Vec<Span<'a>> {
    let sep = || Span::styled(" · ", theme.dim());
    let position = match r.length {
        Some(len) => format!(
            "{} / {}",
            feed::clock_span(r.position),
            feed::clock_span(len)
        ),
        None => feed::clock_span(r.position),
    };
    let mut spans = vec![
        Span::styled("REPLAY", theme.bold()),
        Span::raw(format!(" {}", r.file)),
        sep(),
        Span::styled(position, theme.bold()),
        Span::raw(format!(" {}", feed::speed_label(r.speed))),
    ];
    let state = if r.finished {
        Some(" END ")
    } else if r.paused {
        Some(" PAUSED ")
    } else {
        None
    };
    if let Some(state) = state {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(state, theme.banner()));
    }
    if r.damaged {
        spans.push(sep());
        spans.push(Span::styled("damaged records skipped", theme.alert()));
    }
    if let Some(latest) = &model.latest {
        spans.push(sep());
        spans.push(Span::raw(format!(
            "at {}",
            crate::views::stats::clock(latest.ts_ms)
        )));
    }
    spans
}

/// `DEMO udp 2,000/s → netns N · 12,345 sent · 3 refused · max 300 (squeezed)`.
fn demo_spans<'a>(d: &DemoView, theme: Theme) -> Vec<Span<'a>> {
    let sep = || Span::styled(" · ", theme.dim());
    let rate = d.rate.map_or_else(
        || "as fast as possible".to_owned(),
        |r| format!("{}/s", text::thousands(r)),
    );
    let mut spans = vec![
        Span::styled("DEMO", theme.bold()),
        Span::raw(format!(" {} {rate} → netns {}", d.kind, d.netns)),
        sep(),
        Span::raw(format!("{} sent", text::thousands(d.sent))),
    ];
    if d.refused > 0 {
        spans.push(sep());
        spans.push(Span::styled(
            format!("{} refused", text::thousands(d.refused)),
            theme.alert(),
        ));
    }
    if let Some(max) = d.squeezed {
        spans.push(sep());
        spans.push(Span::raw(format!(
            "max {} (squeezed)",
            text::thousands(max)
        )));
    }
    spans
}

pub fn draw_footer(ui: &UiState, frame: &mut Frame, area: Rect, theme: Theme) {
    let line = if let Some(edit) = &ui.editing {
        Line::from(vec![
            Span::styled("/", theme.key()),
            Span::raw(format!(" filter: {edit}")),
            Span::styled("█", theme.plain()),
            Span::styled(
                "  Enter apply · Esc cancel · e.g. port 443, host 10.0.0.2, netns 4026532000",
                theme.dim(),
            ),
        ])
    } else if let Some(rec) = &ui.recording {
        // The recording stays in view; messages go beside it.
        let mut spans = recording_spans(rec, theme);
        match &ui.status {
            Some(status) => spans.push(Span::styled(format!("  {}", status.text), theme.bold())),
            None if !rec.stopping => {
                spans.push(Span::styled("  r", theme.key()));
                spans.push(Span::raw(" stop"));
            }
            None => {}
        }
        Line::from(spans)
    } else if let Some(status) = &ui.status {
        Line::from(Span::styled(format!(" {}", status.text), theme.bold()))
    } else {
        // One space between hints when narrow, so all of them fit in 80.
        let gap = if area.width >= 100 { " " } else { "" };
        let hints: &[(&str, &str)] = if ui.replay.is_some() {
            &REPLAY_HINTS
        } else {
            &LIVE_HINTS
        };
        let mut spans = Vec::new();
        for (key, what) in hints {
            spans.push(Span::styled(format!(" {key}"), theme.key()));
            spans.push(Span::raw(format!(" {what}{gap}")));
        }
        if !ui.filter.is_empty() {
            spans.push(Span::styled(format!(" [{}]", ui.filter.text), theme.bold()));
        }
        Line::from(spans)
    };
    frame.render_widget(line, area);
}

const LIVE_HINTS: [(&str, &str); 9] = [
    ("q", "quit"),
    ("?", "help"),
    ("p", "pause"),
    ("Tab/1-7", "focus"),
    ("↑↓", "scroll"),
    ("z", "zoom"),
    ("s", "sort"),
    ("/", "filter"),
    ("r", "record"),
];

const REPLAY_HINTS: [(&str, &str); 8] = [
    ("q", "quit"),
    ("?", "help"),
    ("p", "pause"),
    ("n", "step"),
    ("←→", "seek 10s"),
    ("+-", "speed"),
    ("Tab/1-7", "focus"),
    ("/", "filter"),
];

/// ` ● REC FILE · 0:12 · 1,234 events · [lost N · ]56.0 KiB`.
fn recording_spans<'a>(rec: &RecordingView, theme: Theme) -> Vec<Span<'a>> {
    let sep = || Span::styled(" · ", theme.dim());
    // What state it is in comes first: at 80 columns the tail is cut.
    let state = if rec.stopping {
        " ■ SAVING "
    } else if rec.starting {
        " ● REC starting "
    } else {
        " ● REC "
    };
    let mut spans = vec![
        Span::styled(state, theme.alert()),
        Span::styled(rec.file.clone(), theme.bold()),
        sep(),
        Span::raw(feed::clock_span(rec.elapsed)),
        sep(),
        Span::raw(format!("{} events", text::thousands(rec.events))),
        sep(),
    ];
    if rec.lost > 0 {
        spans.push(Span::styled(
            format!("lost {}", text::thousands(rec.lost)),
            theme.alert(),
        ));
        spans.push(sep());
    }
    spans.push(Span::raw(text::bytes(rec.bytes)));
    spans
}

pub const HELP: &[(&str, &str)] = &[
    ("q, Esc, Ctrl-C", "quit (the probes detach)"),
    ("p, Space", "pause the display; counting goes on"),
    ("Tab, Shift-Tab", "focus the next or previous panel"),
    ("1-7", "focus a panel"),
    ("z, Enter", "zoom the focused panel; Esc returns"),
    ("↑ ↓ j k", "scroll the focused panel (PgUp PgDn g G)"),
    (
        "s",
        "sort namespaces or drops; holders: by dst/src/state/netns",
    ),
    (
        "/",
        "filter drops, namespaces, holders: netns N|NAME, port P,",
    ),
    ("", "host ADDR, proto udp, cause table_full, syn"),
    ("r", "record a trace (ctscope-DATE-TIME.ctrace); r stops"),
    ("?", "this help"),
];

/// In a replay, these replace the pause and record lines.
pub const REPLAY_HELP: &[(&str, &str)] = &[
    ("q, Esc, Ctrl-C", "quit"),
    ("p, Space", "pause or resume playback"),
    ("n", "play to the next snapshot, then pause"),
    ("← →", "seek 10 s back or forward"),
    ("+ -", "play faster or slower (past ×1000: max)"),
    ("Tab, Shift-Tab", "focus the next or previous panel"),
    ("1-7", "focus a panel"),
    ("z, Enter", "zoom the focused panel; Esc returns"),
    ("↑ ↓ j k", "scroll the focused panel (PgUp PgDn g G)"),
    (
        "s",
        "sort namespaces or drops; holders: by dst/src/state/netns",
    ),
    (
        "/",
        "filter drops, namespaces, holders: netns N|NAME, port P,",
    ),
    ("", "host ADDR, proto udp, cause table_full, syn"),
    ("?", "this help"),
];

const PANELS_HELP: &[&str] = &[
    "Fill: the fullest namespace against nf_conntrack_max (each",
    "namespace is held to it separately); 90% warns, 95% is critical.",
    "Rates: allocations, frees and drops per second; sparklines span",
    "the last minutes. Drops and namespaces count since ctscope started.",
    "Advice: the tuning guide's rules with the commands to run.",
];

pub fn draw_help(keys: &[(&str, &str)], frame: &mut Frame, area: Rect, theme: Theme) {
    let width = 72.min(area.width.saturating_sub(2));
    let height = (keys.len() + PANELS_HELP.len() + 4) as u16;
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [rect] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(row);
    let mut lines: Vec<Line> = keys
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!(" {keys:<16}"), theme.key()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.extend(
        PANELS_HELP
            .iter()
            .map(|l| Line::styled(format!(" {l}"), theme.dim())),
    );
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .title(Span::styled(" Help · any key closes ", theme.bold()));
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}
