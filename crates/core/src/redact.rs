//! Hiding secret values in output, on the stream rather than on pieces.
//!
//! Output is cut into lines and long lines into pieces; hiding secrets piece by piece would
//! show a secret that falls across a cut as two harmless-looking halves. [`RedactingLines`]
//! hides secrets in the byte stream first, holding back just enough bytes that a secret still
//! arriving is seen whole, and only then cuts. Overlapping secrets are hidden as one span, so
//! no part of either shows.

use crate::job::REDACTED;

/// The secret values to hide, longest first.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<Vec<u8>>,
}

impl Redactor {
    /// Empty values are ignored: they would match everywhere.
    pub fn new(secrets: &[String]) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The length of the longest secret, in bytes.
    fn longest(&self) -> usize {
        self.secrets.first().map_or(0, Vec::len)
    }

    fn any_spans_lines(&self) -> bool {
        self.secrets.iter().any(|s| s.contains(&b'\n'))
    }

    /// The spans of `bytes` that are secret, merged where they overlap.
    fn spans(&self, bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for secret in &self.secrets {
            if secret.len() > bytes.len() {
                continue;
            }
            for start in 0..=bytes.len() - secret.len() {
                if bytes[start..].starts_with(secret) {
                    spans.push((start, start + secret.len()));
                }
            }
        }
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    fn replace(bytes: &[u8], spans: &[(usize, usize)], out: &mut Vec<u8>) {
        let mut at = 0;
        for &(start, end) in spans {
            out.extend_from_slice(&bytes[at..start]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = end;
        }
        out.extend_from_slice(&bytes[at..]);
    }

    /// `text` with every secret replaced by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        let mut out = Vec::with_capacity(text.len());
        Self::replace(text.as_bytes(), &self.spans(text.as_bytes()), &mut out);
        // Whole secrets and whole marker are swapped: the text stays UTF-8.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// The first `limit` bytes of `bytes` as text, secrets hidden: `bytes` should hold a
    /// secret's length beyond `limit` so that one falling across the cut is seen whole.
    pub fn excerpt(&self, bytes: &[u8], limit: usize) -> String {
        let mut out = Vec::with_capacity(bytes.len());
        Self::replace(bytes, &self.spans(bytes), &mut out);
        out.truncate(limit);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// How many bytes past a cut must be read for [`Redactor::excerpt`] to see a secret
    /// falling across it.
    pub fn lookahead(&self) -> usize {
        self.longest().saturating_sub(1)
    }
}

/// Cuts a byte stream into lines of at most `max_line` bytes (longer lines in pieces),
/// with secrets hidden across line ends and cuts alike.
#[derive(Debug)]
pub struct RedactingLines {
    redactor: Redactor,
    max_line: usize,
    /// Bytes not yet redacted: held back while a secret could still be arriving.
    raw: Vec<u8>,
    /// Redacted bytes of the current line, not yet given out.
    line: Vec<u8>,
}

impl RedactingLines {
    pub fn new(redactor: Redactor, max_line: usize) -> Self {
        RedactingLines {
            redactor,
            max_line: max_line.max(1),
            raw: Vec::new(),
            line: Vec::new(),
        }
    }

    /// Takes more of the stream; returns the lines and pieces now complete (without their
    /// `\n`).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.raw.extend_from_slice(bytes);
        let spans = self.redactor.spans(&self.raw);
        // Past `safe`, a secret may be incomplete; before it, every one is whole.
        let mut release = self.raw.len().saturating_sub(self.redactor.lookahead());
        if !self.redactor.any_spans_lines()
            && let Some(newline) = self.raw.iter().rposition(|b| *b == b'\n')
        {
            // No secret holds a newline, so none falls across one: a finished line need
            // not wait for more output.
            release = release.max(newline + 1);
        }
        if let Some(&(start, _)) = spans.iter().find(|(s, e)| *s < release && release < *e) {
            release = start;
        }
        let inside: Vec<(usize, usize)> =
            spans.into_iter().filter(|(_, e)| *e <= release).collect();
        let ready: Vec<u8> = self.raw.drain(..release).collect();
        let mut redacted = Vec::with_capacity(ready.len());
        Redactor::replace(&ready, &inside, &mut redacted);
        self.cut(&redacted)
    }

    /// The end of the stream: everything left.
    pub fn finish(&mut self) -> Vec<Vec<u8>> {
        let raw = std::mem::take(&mut self.raw);
        let mut redacted = Vec::with_capacity(raw.len());
        Redactor::replace(&raw, &self.redactor.spans(&raw), &mut redacted);
        let mut lines = self.cut(&redacted);
        if !self.line.is_empty() {
            lines.push(std::mem::take(&mut self.line));
        }
        lines
    }

    fn cut(&mut self, redacted: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for &byte in redacted {
            if byte == b'\n' {
                lines.push(std::mem::take(&mut self.line));
                continue;
            }
            self.line.push(byte);
            if self.line.len() >= self.max_line {
                lines.push(std::mem::take(&mut self.line));
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(secrets: &[String], chunks: &[Vec<u8>], max_line: usize) -> Vec<Vec<u8>> {
        let mut lines = RedactingLines::new(Redactor::new(secrets), max_line);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(lines.push(chunk));
        }
        out.extend(lines.finish());
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn overlapping_secrets_are_hidden_as_one_span() {
        let redactor = Redactor::new(&["abcd".into(), "cdef".into()]);
        assert_eq!(redactor.redact("xxabcdefyy"), "xx[REDACTED]yy");
        assert_eq!(redactor.redact("no secret"), "no secret");
    }

    #[test]
    fn a_finished_line_is_given_out_before_more_output_arrives() {
        let mut lines = RedactingLines::new(Redactor::new(&["a-long-secret".into()]), 16);
        assert_eq!(lines.push(b"done\npart"), vec![b"done".to_vec()]);
        assert_eq!(lines.finish(), vec![b"part".to_vec()]);
    }

    #[test]
    fn an_excerpt_hides_a_secret_across_its_cut() {
        let redactor = Redactor::new(&["s3cr3t".into()]);
        let excerpt = redactor.excerpt(b"0123456789s3cr3t", 13);
        assert!(!excerpt.contains("s3c"), "{excerpt}");
        assert_eq!(excerpt, "0123456789[RE");
    }

    proptest! {
        /// Issue 16: secrets placed anywhere, across line ends, cuts and read boundaries,
        /// never show in any piece, and the pieces joined read as the whole text redacted
        /// at once: no part of a secret is left at a cut.
        #[test]
        fn issue_16_no_piece_shows_a_secret_wherever_it_falls(
            secret in "[a-z0-9]{4,40}(\n[a-z0-9]{1,8})?",
            filler in "[A-Z .\n]{0,200}",
            offsets in proptest::collection::vec(0usize..400, 1..4),
            max_line in 8usize..64,
            chunk in 1usize..50,
        ) {
            let mut text: Vec<u8> = filler.into_bytes();
            for offset in offsets {
                let at = offset.min(text.len());
                text.splice(at..at, secret.bytes());
            }
            let chunks: Vec<Vec<u8>> = text.chunks(chunk).map(<[u8]>::to_vec).collect();
            let secrets = [secret.clone()];
            let pieces = run(&secrets, &chunks, max_line);
            for piece in &pieces {
                prop_assert!(piece.len() <= max_line);
                prop_assert!(!contains(piece, secret.as_bytes()), "{:?}", String::from_utf8_lossy(piece));
            }
            let whole = Redactor::new(&secrets)
                .redact(std::str::from_utf8(&text).unwrap())
                .replace('\n', "");
            prop_assert_eq!(String::from_utf8(pieces.concat()).unwrap(), whole);
        }
    }
}
