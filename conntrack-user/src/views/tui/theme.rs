//! Styles, with or without colour. With NO_COLOR set (no-color.org) no
//! cell gets a colour; emphasis is carried by bold, reverse video, thick
//! borders and the text itself.

use ratatui::style::{Color, Modifier, Style};

use super::derive::Level;
use crate::model::{advice::Severity, drops::Cause};

#[derive(Clone, Copy, Debug)]
pub struct Theme {
    color: bool,
}

impl Theme {
    pub fn new(color: bool) -> Self {
        Self { color }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub fn plain(self) -> Style {
        Style::new()
    }

    pub fn dim(self) -> Style {
        self.fg(Color::DarkGray)
    }

    pub fn bold(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn title(self, focused: bool) -> Style {
        let s = self.bold();
        if focused {
            s.patch(self.fg(Color::Cyan))
        } else {
            s
        }
    }

    pub fn border(self, focused: bool) -> Style {
        if focused {
            self.fg(Color::Cyan)
        } else {
            self.dim()
        }
    }

    pub fn level(self, level: Level) -> Style {
        match level {
            Level::Ok => self.fg(Color::Green),
            Level::Warning => self.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            Level::Critical => self.fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }

    pub fn severity(self, s: Severity) -> Style {
        match s {
            Severity::Info => self.fg(Color::Blue).add_modifier(Modifier::BOLD),
            Severity::Warning => self.level(Level::Warning),
            Severity::Critical => self.level(Level::Critical),
        }
    }

    pub fn cause(self, c: Cause) -> Style {
        match c {
            Cause::TableFull => self.fg(Color::Red),
            Cause::Invalid => self.fg(Color::Magenta),
            Cause::InsertFailed | Cause::ChainTooLong => self.fg(Color::Yellow),
            Cause::Ruleset => self.dim(),
            Cause::Other => self.fg(Color::Cyan),
        }
    }

    /// Series colours in the rates panel.
    pub fn series(self, index: usize) -> Style {
        match index {
            0 => self.fg(Color::Green),
            1 => self.fg(Color::Blue),
            _ => self.fg(Color::Red),
        }
    }

    /// A heat-strip cell by the longest chain in its slice.
    pub fn heat(self, len: u32) -> Style {
        match len {
            0 => self.dim(),
            1..=2 => self.fg(Color::Green),
            3..=8 => self.fg(Color::Yellow),
            _ => self.fg(Color::Red),
        }
    }

    pub fn command(self) -> Style {
        self.fg(Color::Cyan)
    }

    pub fn key(self) -> Style {
        self.bold().patch(self.fg(Color::Cyan))
    }

    pub fn alert(self) -> Style {
        self.level(Level::Critical)
    }

    pub fn banner(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    }
}
