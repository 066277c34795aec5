//! Terminal output: colours that respect `NO_COLOR` and non-terminals, aligned tables,
//! times, and a status line for long waits.

use chrono::{DateTime, Local, Utc};
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

static COLOR: OnceLock<bool> = OnceLock::new();

/// Colour only on a terminal, and never when `NO_COLOR` is set (https://no-color.org).
pub fn init_color(disabled: bool) {
    let enabled = !disabled
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal();
    let _ = COLOR.set(enabled);
}

fn color_on() -> bool {
    *COLOR.get().unwrap_or(&false)
}

pub fn paint(code: &str, text: &str) -> String {
    if color_on() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

pub fn bold(text: &str) -> String {
    paint("1", text)
}

pub fn dim(text: &str) -> String {
    paint("2", text)
}

pub fn red(text: &str) -> String {
    paint("31", text)
}

pub fn green(text: &str) -> String {
    paint("32", text)
}

pub fn yellow(text: &str) -> String {
    paint("33", text)
}

/// Text from a job or a server with its control characters made visible (`\x1b`, `\u{9b}`):
/// ESC, OSC, CSI and every other C0/C1 control but tab and newline could retitle the
/// terminal, write its clipboard (OSC 52) or clear the screen. retryd's own colours are added
/// after, so they survive.
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\t' && c != '\n';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A field label padded to `width` columns before it is painted, so that escape codes do not
/// eat the padding (issue 15: with colours on, `show` printed `queuedefault`).
pub fn label(name: &str, width: usize) -> String {
    dim(&format!("{name:<width$}"))
}

/// A state name in its colour. The words carry the meaning; colour only helps.
pub fn state(state: &str) -> String {
    let code = match state {
        "succeeded" => "32",
        "failed" => "1;31",
        "retrying" => "33",
        "running" => "36",
        "pending" => "34",
        "cancelled" | "expired" => "35",
        _ => "0",
    };
    paint(code, state)
}

/// Local wall-clock time, to the millisecond.
pub fn time(at: DateTime<Utc>) -> String {
    at.with_timezone(&Local).format("%H:%M:%S%.3f").to_string()
}

pub fn datetime(at: DateTime<Utc>) -> String {
    at.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// "3s ago", "in 2m".
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (at - now).num_seconds();
    let span = |s: i64| match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    };
    match secs {
        0 => "just now".to_owned(),
        1.. => format!("in {}", span(secs)),
        _ => format!("{} ago", span(-secs)),
    }
}

fn visible_width(text: &str) -> usize {
    // Skip ANSI escape sequences when measuring.
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

/// Prints rows as aligned columns under a bold header; the last column is not padded.
pub fn table(indent: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(visible_width(cell));
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = indent.to_owned();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(&cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - visible_width(&cell) + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", line(header.iter().map(|h| bold(h)).collect()));
    for row in rows {
        let _ = writeln!(stdout, "{}", line(row.clone()));
    }
}

/// Cuts text to `max` characters with an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Cuts text to about `max` characters at a word boundary, with an ellipsis, so that a
/// title never ends mid-word.
pub fn cut_at_word(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(1);
    let cut: String = text.chars().take(keep).collect();
    let ends_a_word = text.chars().nth(keep).is_some_and(char::is_whitespace);
    let at_word = match cut.rfind(char::is_whitespace) {
        _ if ends_a_word => &cut[..],
        // A word longer than half the room is cut anyway rather than leave a stub.
        Some(space) if space >= cut.len() / 2 => &cut[..space],
        _ => &cut[..],
    };
    format!(
        "{}…",
        at_word.trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':')
    )
}

/// A one-line status on stderr that rewrites itself, shown only on a terminal.
pub struct StatusLine {
    enabled: bool,
    frame: usize,
    shown: bool,
}

impl StatusLine {
    pub fn new() -> Self {
        StatusLine {
            enabled: std::io::stderr().is_terminal(),
            frame: 0,
            shown: false,
        }
    }

    pub fn update(&mut self, text: &str) {
        if !self.enabled {
            return;
        }
        const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
        self.frame = (self.frame + 1) % FRAMES.len();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{} {}",
            FRAMES[self.frame],
            truncate(text, 110)
        );
        let _ = err.flush();
        self.shown = true;
    }

    /// Clears the line so that ordinary output can follow.
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_made_visible_but_tabs_and_newlines_stay() {
        assert_eq!(
            clean("a\x1b]52;c;aGk=\x07b\x1b[2J\u{9b}c\td\ne\r\x7f"),
            "a\\x1b]52;c;aGk=\\x07b\\x1b[2J\\u{9b}c\td\ne\\x0d\\x7f"
        );
        assert!(matches!(clean("plain text"), std::borrow::Cow::Borrowed(_)));
    }

    /// Issue 15: with colours on, `show`'s labels ran into their values.
    #[test]
    fn issue_15_labels_keep_their_padding_with_colours_on() {
        let _ = COLOR.set(true);
        let queue = label("queue", 10);
        assert!(queue.starts_with("\x1b[2m"), "{queue:?}");
        assert_eq!(visible_width(&queue), 10);
        assert_eq!(visible_width(&format!("{queue}default")), 17);
    }

    /// Issue 15: `dlq list` cut titles mid-word.
    #[test]
    fn issue_15_titles_are_cut_at_a_word_boundary_with_an_ellipsis() {
        let title = "Error: insufficient funds for gas * price + value: have 10 want 20";
        assert_eq!(cut_at_word(title, 30), "Error: insufficient funds for…");
        assert_eq!(cut_at_word(title, 200), title);
        assert_eq!(
            cut_at_word("0x52908400098527886e0f7030069857d2e4169ee7", 10),
            "0x5290840…"
        );
    }
}
