//! Number and time formatting for narrow columns, and word wrapping.

use std::time::Duration;

/// 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count in at most 6 characters: 999999, 1.2M, 34.5G.
pub fn short(n: u64) -> String {
    match n {
        0..=999_999 => n.to_string(),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// A rate per second in at most 6 characters.
pub fn rate(v: f64) -> String {
    match v {
        v if v <= 0.0 => "0".to_owned(),
        v if v < 10.0 => format!("{v:.1}"),
        v if v < 100_000.0 => format!("{v:.0}"),
        v if v < 1e7 => format!("{:.0}k", v / 1e3),
        v => format!("{:.1}M", v / 1e6),
    }
}

/// 83 s -> "1m23s"; 7384 s -> "2h03m"; 190000 s -> "2d04h".
pub fn span(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        span(d.as_secs_f64())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// 1536 -> "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Cuts `s` to `width` characters, marking the cut with `…`.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Word-wraps `text` to `width` columns; words longer than a line are
/// broken. `indent` starts every line after the first.
pub fn wrap(text: &str, width: usize, indent: &str) -> Vec<String> {
    let width = width.max(indent.len() + 8);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        loop {
            let used = line.chars().count();
            let need = word.chars().count() + usize::from(used > 0 && !line.ends_with(' '));
            if used + need <= width {
                if used > 0 && !line.ends_with(' ') {
                    line.push(' ');
                }
                line.push_str(word);
                break;
            }
            let fresh = line.trim().is_empty();
            if !fresh {
                lines.push(std::mem::replace(&mut line, indent.to_owned()));
                continue;
            }
            // The word alone is wider than a line: break it.
            let room = width.saturating_sub(used).max(1);
            let cut = word.char_indices().nth(room).map_or(word.len(), |(i, _)| i);
            line.push_str(&word[..cut]);
            word = &word[cut..];
            lines.push(std::mem::replace(&mut line, indent.to_owned()));
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.trim().is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(262_144), "262,144");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(short(1_500_000), "1.5M");
        assert_eq!(rate(0.26), "0.3");
        assert_eq!(rate(135_000.0), "135k");
        assert_eq!(span(83.0), "1m23s");
        assert_eq!(span(7384.0), "2h03m");
        assert_eq!(duration(Duration::from_millis(500)), "0.5s");
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn wrapping_keeps_words_and_breaks_long_ones() {
        assert_eq!(wrap("aa bb cc dd", 8, "  "), ["aa bb cc", "  dd"]);
        let long = wrap("x 0123456789abcdef", 10, "");
        assert_eq!(long, ["x", "0123456789", "abcdef"]);
        for line in wrap(&"word ".repeat(40), 23, "    ") {
            assert!(line.chars().count() <= 23, "{line}");
        }
    }
}
