//! Executors run one attempt of an action and report how it ended. They know nothing of
//! stores or policies: the engine classifies what they report.

pub mod command;

use chrono::{DateTime, Utc};
use retryd_core::job::Stream;

/// One line of captured output, already redacted.
#[derive(Debug, Clone)]
pub struct OutputLine {
    pub at: DateTime<Utc>,
    pub stream: Stream,
    pub line: String,
}
