//! The bounded output tail of one attempt: the last N bytes of output, and a count of what
//! was dropped from the front to stay within them.

use crate::executor::OutputLine;
use std::collections::VecDeque;

#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<(u64, OutputLine)>,
    bytes: usize,
    cap: usize,
    next_index: u64,
    dropped_bytes: u64,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Tail {
            lines: VecDeque::new(),
            bytes: 0,
            cap: cap.max(1),
            next_index: 0,
            dropped_bytes: 0,
        }
    }

    /// Adds a line, dropping the oldest ones beyond the cap. Returns the line's index.
    pub fn push(&mut self, line: OutputLine) -> u64 {
        let index = self.next_index;
        self.next_index += 1;
        self.bytes += line.line.len() + 1;
        self.lines.push_back((index, line));
        while self.bytes > self.cap && self.lines.len() > 1 {
            if let Some((_, old)) = self.lines.pop_front() {
                self.bytes -= old.line.len() + 1;
                self.dropped_bytes += old.line.len() as u64 + 1;
            }
        }
        index
    }

    /// The index of the oldest line kept.
    pub fn first_index(&self) -> u64 {
        self.lines.front().map_or(self.next_index, |(i, _)| *i)
    }

    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    /// The kept output as text, for classification.
    pub fn text(&self) -> String {
        let mut text = String::with_capacity(self.bytes);
        for (_, line) in &self.lines {
            text.push_str(&line.line);
            text.push('\n');
        }
        text
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl DoubleEndedIterator<Item = &OutputLine> + Clone {
        self.lines.iter().map(|(_, l)| l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retryd_core::job::Stream;

    fn line(text: &str) -> OutputLine {
        OutputLine {
            at: chrono::Utc::now(),
            stream: Stream::Stdout,
            line: text.to_owned(),
        }
    }

    #[test]
    fn keeps_the_last_bytes_and_counts_the_dropped() {
        let mut tail = Tail::new(20);
        for i in 0..10 {
            tail.push(line(&format!("line {i}")));
        }
        assert_eq!(tail.text(), "line 8\nline 9\n");
        assert_eq!(tail.dropped_bytes(), 8 * 7);
        assert_eq!(tail.first_index(), 8);
        assert_eq!(tail.next_index(), 10);
    }
}
