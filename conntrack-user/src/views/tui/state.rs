//! What the user did to the screen: focus, scroll, sort, filter, pause,
//! help. Kept apart from the model, which only knows what the kernel did.
//! Keys change this state and nothing else; [`UiState::on_key`] says what
//! the event loop must do besides redrawing.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::model::holders::By;

use super::{
    derive::Derived,
    feed::{DemoView, RecordingView, ReplayAction, ReplayView},
    filter::Filter,
};

/// The panels, in Tab order; digits 1-7 focus them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panel {
    Fill,
    Rates,
    Buckets,
    Drops,
    Namespaces,
    Advice,
    /// Who holds the table (the latest walk's holders).
    Holders,
}

impl Panel {
    pub const ALL: [Panel; 7] = [
        Panel::Fill,
        Panel::Rates,
        Panel::Buckets,
        Panel::Drops,
        Panel::Namespaces,
        Panel::Advice,
        Panel::Holders,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn title(self) -> &'static str {
        match self {
            Panel::Fill => "Table fill",
            Panel::Rates => "Rates",
            Panel::Buckets => "Buckets",
            Panel::Drops => "Drops",
            Panel::Namespaces => "Namespaces",
            Panel::Advice => "Advice",
            Panel::Holders => "Holders",
        }
    }

    fn step(self, by: isize) -> Panel {
        let n = Panel::ALL.len() as isize;
        Panel::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NsSort {
    #[default]
    Entries,
    Drops,
    Alloc,
    Netns,
}

impl NsSort {
    pub fn label(self) -> &'static str {
        match self {
            NsSort::Entries => "by entries",
            NsSort::Drops => "by drops",
            NsSort::Alloc => "by allocations",
            NsSort::Netns => "by netns",
        }
    }

    fn next(self) -> Self {
        match self {
            NsSort::Entries => NsSort::Drops,
            NsSort::Drops => NsSort::Alloc,
            NsSort::Alloc => NsSort::Netns,
            NsSort::Netns => NsSort::Entries,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DropSort {
    #[default]
    Newest,
    Cause,
    Destination,
}

impl DropSort {
    pub fn label(self) -> &'static str {
        match self {
            DropSort::Newest => "newest first",
            DropSort::Cause => "by cause",
            DropSort::Destination => "by destination",
        }
    }

    fn next(self) -> Self {
        match self {
            DropSort::Newest => DropSort::Cause,
            DropSort::Cause => DropSort::Destination,
            DropSort::Destination => DropSort::Newest,
        }
    }
}

/// Facts about the run that are not in the model: set by the command at
/// start (and the clock and uptime as time passes).
#[derive(Clone, Debug, PartialEq)]
pub struct Env {
    pub interval: Duration,
    /// Time since ctscope started, updated on every tick.
    pub uptime: Duration,
    /// Bytes per conntrack entry in its slab, read once at start.
    pub objsize: Option<u64>,
    /// Whether nf_conntrack is a loadable module; `None` when unknown.
    pub conntrack_module: Option<bool>,
    /// False when NO_COLOR is set: no colours at all.
    pub color: bool,
    /// Whether this build walks the hash table (the buckets panel says so
    /// when it does not).
    pub bucket_walker: bool,
}

impl Default for Env {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            uptime: Duration::ZERO,
            objsize: None,
            conntrack_module: None,
            color: true,
            bucket_walker: false,
        }
    }
}

/// A message in the footer that goes away after a few ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub until_tick: u64,
}

/// Ticks a status message stays.
const STATUS_TICKS: u64 = 12;

#[derive(Clone, Debug, Default)]
pub struct UiState {
    pub env: Env,
    pub focus: Option<Panel>,
    /// First visible line of each panel, by [`Panel::index`].
    pub scroll: [usize; 7],
    pub ns_sort: NsSort,
    /// How the holders panel groups the table's entries (`s` there).
    pub holders_by: By,
    pub drop_sort: DropSort,
    /// The applied filter.
    pub filter: Filter,
    /// The filter being typed after `/`.
    pub editing: Option<String>,
    pub paused: bool,
    pub help: bool,
    /// The focused panel fills the screen.
    pub zoom: bool,
    pub status: Option<Status>,
    pub ticks: u64,
    /// A recording started with `r`.
    pub recording: Option<RecordingView>,
    /// `ctscope demo`'s load.
    pub demo: Option<DemoView>,
    /// Set when the screen shows a recorded trace: the keys then control
    /// playback, and recording is off.
    pub replay: Option<ReplayView>,
    /// Values derived from the model and this state; recomputed in the
    /// update step, read by rendering.
    pub view: Derived,
}

/// What the event loop does after a key, besides redrawing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    None,
    Quit,
    /// Freeze (true) or thaw (false) the displayed model.
    Pause(bool),
    /// Start a recording, or stop the one running.
    Record,
    /// Control the replay.
    Replay(ReplayAction),
}

impl UiState {
    pub fn new(env: Env) -> Self {
        Self {
            env,
            ..Self::default()
        }
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
        if self
            .status
            .as_ref()
            .is_some_and(|s| s.until_tick <= self.ticks)
        {
            self.status = None;
        }
    }

    pub fn say(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            until_tick: self.ticks + STATUS_TICKS,
        });
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            return Action::Quit;
        }
        if self.editing.is_some() {
            self.edit_filter(key);
            return Action::None;
        }
        if self.help {
            return match key.code {
                KeyCode::Char('q') => Action::Quit,
                _ => {
                    self.help = false;
                    Action::None
                }
            };
        }
        if let Some(act) = self.replay.as_ref().and_then(|r| r.on_key(key)) {
            return Action::Replay(act);
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.zoom => self.zoom = false,
            KeyCode::Esc => return Action::Quit,
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                self.say(if self.paused {
                    "paused: capture goes on; p resumes at the present"
                } else {
                    "resumed"
                });
                return Action::Pause(self.paused);
            }
            KeyCode::Tab => self.focus = Some(self.focus.map_or(Panel::Fill, |p| p.step(1))),
            KeyCode::BackTab => {
                self.focus = Some(self.focus.map_or(Panel::Holders, |p| p.step(-1)));
            }
            KeyCode::Char(c @ '1'..='7') => {
                self.focus = Some(Panel::ALL[(c as u8 - b'1') as usize]);
            }
            KeyCode::Enter | KeyCode::Char('z') => {
                if self.focus.is_some() {
                    self.zoom = !self.zoom;
                } else {
                    self.say("focus a panel first (Tab or 1-7)");
                }
            }
            KeyCode::Down | KeyCode::Char('j') => self.scroll_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll_by(-1),
            KeyCode::PageDown => self.scroll_by(10),
            KeyCode::PageUp => self.scroll_by(-10),
            KeyCode::Home | KeyCode::Char('g') => self.scroll_by(isize::MIN),
            KeyCode::End | KeyCode::Char('G') => self.scroll_by(isize::MAX),
            KeyCode::Char('s') => self.cycle_sort(),
            // The prompt opens with the current filter and a space after
            // it, so what is typed is a further term (issue 18 item 8: typed
            // straight after `netns:N`, `cause table_full` became part of
            // the namespace's number).
            KeyCode::Char('/') => {
                let mut text = self.filter.text.clone();
                if !text.is_empty() {
                    text.push(' ');
                }
                self.editing = Some(text);
            }
            KeyCode::Char('r') if self.replay.is_some() => {
                self.say("this is a recording already: r records live capture (ctscope top)");
            }
            KeyCode::Char('r') => return Action::Record,
            _ => {}
        }
        Action::None
    }

    /// The panel arrows and `s` act on: the focused one, else the one that
    /// lists the most (namespaces).
    pub fn target(&self) -> Panel {
        self.focus.unwrap_or(Panel::Namespaces)
    }

    fn scroll_by(&mut self, by: isize) {
        let panel = self.target();
        let len = self.view.lines(panel);
        let slot = &mut self.scroll[panel.index()];
        *slot = slot.saturating_add_signed(by).min(len.saturating_sub(1));
    }

    fn cycle_sort(&mut self) {
        match self.target() {
            Panel::Drops => {
                self.drop_sort = self.drop_sort.next();
                self.say(format!("drops: {}", self.drop_sort.label()));
            }
            Panel::Holders => {
                self.holders_by = match self.holders_by {
                    By::Dst => By::Src,
                    By::Src => By::State,
                    By::State => By::Netns,
                    By::Netns => By::Dst,
                };
                self.say(format!("holders: by {}", self.holders_by.as_str()));
                self.scroll[Panel::Holders.index()] = 0;
            }
            _ => {
                self.ns_sort = self.ns_sort.next();
                self.say(format!("namespaces: {}", self.ns_sort.label()));
            }
        }
        self.scroll[Panel::Drops.index()] = 0;
        self.scroll[Panel::Namespaces.index()] = 0;
    }

    fn edit_filter(&mut self, key: KeyEvent) {
        let Some(text) = self.editing.as_mut() else {
            return;
        };
        match key.code {
            KeyCode::Esc => self.editing = None,
            KeyCode::Enter => {
                let text = text.trim().to_owned();
                match Filter::parse(&text) {
                    Ok(filter) => {
                        self.say(if filter.is_empty() {
                            "filter cleared".to_owned()
                        } else {
                            format!("filter: {}", filter.text)
                        });
                        self.filter = filter;
                        self.editing = None;
                        self.scroll[Panel::Drops.index()] = 0;
                        self.scroll[Panel::Namespaces.index()] = 0;
                        self.scroll[Panel::Holders.index()] = 0;
                    }
                    Err(e) => self.say(e),
                }
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
            KeyCode::Char(c) if text.chars().count() < 80 => text.push(c),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::drops::Cause;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn typed(ui: &mut UiState, text: &str) {
        for c in text.chars() {
            assert_eq!(ui.on_key(key(KeyCode::Char(c))), Action::None);
        }
    }

    #[test]
    fn quit_keys() {
        let mut ui = UiState::default();
        assert_eq!(ui.on_key(key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(ui.on_key(key(KeyCode::Esc)), Action::Quit);
        assert_eq!(
            ui.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }

    #[test]
    fn focus_cycles_and_digits_jump() {
        let mut ui = UiState::default();
        ui.on_key(key(KeyCode::Tab));
        assert_eq!(ui.focus, Some(Panel::Fill));
        ui.on_key(key(KeyCode::Tab));
        assert_eq!(ui.focus, Some(Panel::Rates));
        ui.on_key(key(KeyCode::BackTab));
        ui.on_key(key(KeyCode::BackTab));
        assert_eq!(ui.focus, Some(Panel::Holders), "wraps around");
        ui.on_key(key(KeyCode::Char('4')));
        assert_eq!(ui.focus, Some(Panel::Drops));
    }

    #[test]
    fn help_opens_and_any_key_closes_it_but_q_still_quits() {
        let mut ui = UiState::default();
        ui.on_key(key(KeyCode::Char('?')));
        assert!(ui.help);
        assert_eq!(ui.on_key(key(KeyCode::Esc)), Action::None);
        assert!(!ui.help);
        ui.on_key(key(KeyCode::Char('?')));
        assert_eq!(ui.on_key(key(KeyCode::Char('q'))), Action::Quit);
    }

    #[test]
    fn pause_toggles() {
        let mut ui = UiState::default();
        assert_eq!(ui.on_key(key(KeyCode::Char('p'))), Action::Pause(true));
        assert!(ui.paused);
        assert_eq!(ui.on_key(key(KeyCode::Char('p'))), Action::Pause(false));
    }

    #[test]
    fn filter_is_typed_then_applied_or_cancelled() {
        let mut ui = UiState::default();
        ui.on_key(key(KeyCode::Char('/')));
        typed(&mut ui, "port 443 q");
        assert_eq!(ui.editing.as_deref(), Some("port 443 q"), "q is text here");
        ui.on_key(key(KeyCode::Backspace));
        ui.on_key(key(KeyCode::Backspace));
        ui.on_key(key(KeyCode::Enter));
        assert_eq!(ui.editing, None);
        assert_eq!(ui.filter.drops.port, Some(443));

        ui.on_key(key(KeyCode::Char('/')));
        assert_eq!(
            ui.editing.as_deref(),
            Some("port:443 "),
            "the current filter, then room for another term"
        );
        typed(&mut ui, "cause table_full");
        ui.on_key(key(KeyCode::Enter));
        assert_eq!(ui.editing, None);
        assert_eq!(ui.filter.drops.port, Some(443), "{:?}", ui.filter);
        assert_eq!(ui.filter.drops.causes, [Cause::TableFull]);

        ui.on_key(key(KeyCode::Char('/')));
        typed(&mut ui, "host nope");
        ui.on_key(key(KeyCode::Enter));
        assert!(ui.editing.is_some(), "a bad filter stays open");
        assert!(ui.status.as_ref().is_some_and(|s| s.text.contains("nope")));
        ui.on_key(key(KeyCode::Esc));
        assert_eq!(ui.editing, None);
        assert_eq!(ui.filter.drops.port, Some(443), "cancel keeps the old one");
    }

    #[test]
    fn s_in_the_holders_panel_changes_the_grouping() {
        let mut ui = UiState::default();
        ui.on_key(key(KeyCode::Char('7')));
        assert_eq!(ui.focus, Some(Panel::Holders));
        assert_eq!(ui.holders_by, By::Dst);
        ui.on_key(key(KeyCode::Char('s')));
        assert_eq!(ui.holders_by, By::Src);
        ui.on_key(key(KeyCode::Char('s')));
        ui.on_key(key(KeyCode::Char('s')));
        ui.on_key(key(KeyCode::Char('s')));
        assert_eq!(ui.holders_by, By::Dst);
        assert_eq!(ui.ns_sort, NsSort::Entries, "namespaces untouched");
    }

    #[test]
    fn sort_follows_the_focused_panel() {
        let mut ui = UiState::default();
        ui.on_key(key(KeyCode::Char('s')));
        assert_eq!(ui.ns_sort, NsSort::Drops);
        ui.on_key(key(KeyCode::Char('4')));
        ui.on_key(key(KeyCode::Char('s')));
        assert_eq!(ui.drop_sort, DropSort::Cause);
        assert_eq!(ui.ns_sort, NsSort::Drops);
    }

    #[test]
    fn scrolling_stays_within_the_list() {
        let mut ui = UiState::default();
        ui.view.namespaces = vec![Default::default(); 3];
        for _ in 0..5 {
            ui.on_key(key(KeyCode::Char('j')));
        }
        assert_eq!(ui.scroll[Panel::Namespaces.index()], 2);
        ui.on_key(key(KeyCode::Up));
        assert_eq!(ui.scroll[Panel::Namespaces.index()], 1);
        ui.on_key(key(KeyCode::Home));
        assert_eq!(ui.scroll[Panel::Namespaces.index()], 0);
    }

    #[test]
    fn r_records_live_but_not_in_a_replay_and_status_expires() {
        let mut ui = UiState::default();
        assert_eq!(ui.on_key(key(KeyCode::Char('r'))), Action::Record);
        ui.replay = Some(ReplayView::default());
        assert_eq!(ui.on_key(key(KeyCode::Char('r'))), Action::None);
        assert!(
            ui.status
                .as_ref()
                .is_some_and(|s| s.text.contains("recording already"))
        );
        for _ in 0..STATUS_TICKS {
            ui.tick();
        }
        assert_eq!(ui.status, None);
    }

    #[test]
    fn in_a_replay_p_controls_playback_instead_of_freezing() {
        let mut ui = UiState {
            replay: Some(ReplayView::default()),
            ..UiState::default()
        };
        assert_eq!(
            ui.on_key(key(KeyCode::Char('p'))),
            Action::Replay(ReplayAction::TogglePause)
        );
        assert!(!ui.paused);
        assert_eq!(
            ui.on_key(key(KeyCode::Char('n'))),
            Action::Replay(ReplayAction::Step)
        );
        // The rest of the keys work as live.
        ui.on_key(key(KeyCode::Tab));
        assert_eq!(ui.focus, Some(Panel::Fill));
        // Typing a filter is not playback control.
        ui.on_key(key(KeyCode::Char('/')));
        assert_eq!(ui.on_key(key(KeyCode::Char('n'))), Action::None);
        assert_eq!(ui.editing.as_deref(), Some("n"));
    }

    #[test]
    fn zoom_needs_a_focus_and_esc_leaves_it() {
        let mut ui = UiState::default();
        ui.on_key(key(KeyCode::Enter));
        assert!(!ui.zoom);
        ui.on_key(key(KeyCode::Char('6')));
        ui.on_key(key(KeyCode::Char('z')));
        assert!(ui.zoom);
        assert_eq!(ui.on_key(key(KeyCode::Esc)), Action::None);
        assert!(!ui.zoom);
    }
}
