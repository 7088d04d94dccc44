//! Keys from the bytes a terminal sends in raw mode.
//!
//! The screen reads the terminal itself instead of through crossterm's
//! event reader: that reader loops without end when a read of a terminal
//! that went away returns end-of-file or EIO (it retries every error but
//! "would block"), and it reads the terminal edge-triggered beside its
//! SIGWINCH pipe, so a resize reported first left the key read with it
//! unreported until the next key (issue 18, item 5). Only what the screen
//! uses is decoded; anything else becomes no key.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const ESC: u8 = 0x1b;

/// Decodes everything in `bytes` (one read). A lone ESC at the end is the
/// Esc key: a terminal writes an escape sequence in one go.
pub fn decode(bytes: &[u8]) -> Vec<KeyEvent> {
    let mut keys = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (key, used) = next(rest);
        keys.extend(key);
        rest = &rest[used.clamp(1, rest.len())..];
    }
    keys
}

/// The first key in `b` (not empty) and how many bytes it took.
fn next(b: &[u8]) -> (Option<KeyEvent>, usize) {
    let plain = |code| Some(KeyEvent::new(code, KeyModifiers::NONE));
    match b[0] {
        ESC => match b.get(1) {
            None | Some(&ESC) => (plain(KeyCode::Esc), 1),
            Some(b'[') => csi(&b[2..]).map_or((None, b.len()), |(k, n)| (k, n + 2)),
            Some(b'O') => match b.get(2) {
                Some(&c) => (ss3(c).map(|c| KeyEvent::new(c, KeyModifiers::NONE)), 3),
                None => (None, 2),
            },
            Some(_) => {
                // Alt+key: ESC then the key.
                let (key, n) = next(&b[1..]);
                let key = key.map(|mut k| {
                    k.modifiers |= KeyModifiers::ALT;
                    k
                });
                (key, n + 1)
            }
        },
        b'\r' | b'\n' => (plain(KeyCode::Enter), 1),
        b'\t' => (plain(KeyCode::Tab), 1),
        0x7f | 0x08 => (plain(KeyCode::Backspace), 1),
        0 => (
            Some(KeyEvent::new(KeyCode::Char(' '), KeyModifiers::CONTROL)),
            1,
        ),
        c @ 0x01..=0x1a => (
            Some(KeyEvent::new(
                KeyCode::Char(char::from(c - 1 + b'a')),
                KeyModifiers::CONTROL,
            )),
            1,
        ),
        0x1c..=0x1f => (None, 1),
        _ => utf8(b),
    }
}

/// One UTF-8 character; an invalid byte is skipped.
fn utf8(b: &[u8]) -> (Option<KeyEvent>, usize) {
    let len = match b[0] {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return (None, 1),
    };
    let Some(bytes) = b.get(..len) else {
        return (None, b.len());
    };
    match std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.chars().next())
    {
        Some(c) => {
            let shift = if c.is_uppercase() {
                KeyModifiers::SHIFT
            } else {
                KeyModifiers::NONE
            };
            (Some(KeyEvent::new(KeyCode::Char(c), shift)), len)
        }
        None => (None, 1),
    }
}

/// `ESC O x`: the cursor keys in application mode, F1-F4.
fn ss3(c: u8) -> Option<KeyCode> {
    Some(match c {
        b'A' => KeyCode::Up,
        b'B' => KeyCode::Down,
        b'C' => KeyCode::Right,
        b'D' => KeyCode::Left,
        b'H' => KeyCode::Home,
        b'F' => KeyCode::End,
        b'P'..=b'S' => KeyCode::F(c - b'P' + 1),
        _ => return None,
    })
}

/// After `ESC [`: parameters (digits and `;`), then the final byte. The
/// key, and the bytes taken; `None` when the sequence is cut off.
fn csi(b: &[u8]) -> Option<(Option<KeyEvent>, usize)> {
    let end = b.iter().position(|c| (0x40..=0x7e).contains(c))?;
    let params: Vec<u16> = std::str::from_utf8(&b[..end])
        .unwrap_or("")
        .split(';')
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    let first = params.first().copied().unwrap_or(0);
    let modifiers = params.get(1).map_or(KeyModifiers::NONE, |&m| modifiers(m));
    let code = match b[end] {
        b'Z' => Some(KeyCode::BackTab),
        b'~' => match first {
            1 | 7 => Some(KeyCode::Home),
            2 => Some(KeyCode::Insert),
            3 => Some(KeyCode::Delete),
            4 | 8 => Some(KeyCode::End),
            5 => Some(KeyCode::PageUp),
            6 => Some(KeyCode::PageDown),
            11..=15 => Some(KeyCode::F((first - 10) as u8)),
            17..=21 => Some(KeyCode::F((first - 11) as u8)),
            23 | 24 => Some(KeyCode::F((first - 12) as u8)),
            _ => None,
        },
        c => ss3(c),
    };
    let shift = if code == Some(KeyCode::BackTab) {
        KeyModifiers::SHIFT
    } else {
        KeyModifiers::NONE
    };
    Some((code.map(|c| KeyEvent::new(c, modifiers | shift)), end + 1))
}

/// xterm's modifier parameter: 1 + a bit mask.
fn modifiers(m: u16) -> KeyModifiers {
    let bits = m.saturating_sub(1);
    let mut out = KeyModifiers::NONE;
    if bits & 1 != 0 {
        out |= KeyModifiers::SHIFT;
    }
    if bits & 2 != 0 {
        out |= KeyModifiers::ALT;
    }
    if bits & 4 != 0 {
        out |= KeyModifiers::CONTROL;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(bytes: &[u8]) -> Vec<KeyCode> {
        decode(bytes).into_iter().map(|k| k.code).collect()
    }

    #[test]
    fn plain_keys_and_controls() {
        assert_eq!(
            codes(b"r?p\r\t\x7f"),
            [
                KeyCode::Char('r'),
                KeyCode::Char('?'),
                KeyCode::Char('p'),
                KeyCode::Enter,
                KeyCode::Tab,
                KeyCode::Backspace
            ]
        );
        let ctrl_c = decode(b"\x03");
        assert_eq!(ctrl_c[0].code, KeyCode::Char('c'));
        assert!(ctrl_c[0].modifiers.contains(KeyModifiers::CONTROL));
        assert_eq!(
            codes("é→".as_bytes()),
            [KeyCode::Char('é'), KeyCode::Char('→')]
        );
        assert_eq!(decode(b"G")[0].modifiers, KeyModifiers::SHIFT);
    }

    #[test]
    fn escape_sequences() {
        assert_eq!(
            codes(b"\x1b[A\x1bOB\x1b[5~\x1b[6~\x1b[H\x1b[4~\x1b[Z\x1bOP\x1b[15~"),
            [
                KeyCode::Up,
                KeyCode::Down,
                KeyCode::PageUp,
                KeyCode::PageDown,
                KeyCode::Home,
                KeyCode::End,
                KeyCode::BackTab,
                KeyCode::F(1),
                KeyCode::F(5)
            ]
        );
        let ctrl_up = decode(b"\x1b[1;5A");
        assert_eq!(ctrl_up[0].code, KeyCode::Up);
        assert!(ctrl_up[0].modifiers.contains(KeyModifiers::CONTROL));
    }

    #[test]
    fn escape_alone_alt_and_junk() {
        assert_eq!(codes(b"\x1b"), [KeyCode::Esc]);
        assert_eq!(codes(b"\x1b\x1b"), [KeyCode::Esc, KeyCode::Esc]);
        let alt = decode(b"\x1bx");
        assert_eq!(alt[0].code, KeyCode::Char('x'));
        assert!(alt[0].modifiers.contains(KeyModifiers::ALT));
        // Cut off or unknown: no key, and what follows still decodes.
        assert_eq!(codes(b"\x1b[99~q"), [KeyCode::Char('q')]);
        assert_eq!(codes(b"\x1b[1;5"), []);
        assert_eq!(codes(b"\xffq\xe2"), [KeyCode::Char('q')]);
    }
}
