//! The last events of a run, kept for the report of a broken invariant.

use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Trace {
    lines: VecDeque<String>,
    keep: usize,
    /// Keeps only lines containing this (`SIPLB_SIM_TRACE`, e.g. a Call-ID).
    filter: Option<String>,
}

impl Trace {
    pub(crate) fn new(keep: usize) -> Trace {
        Trace {
            lines: VecDeque::with_capacity(keep),
            keep,
            filter: std::env::var("SIPLB_SIM_TRACE").ok(),
        }
    }

    pub(crate) fn push(&mut self, at: Duration, what: String) {
        if let Some(f) = &self.filter
            && !what.contains(f.as_str())
            && !what.starts_with("VIOLATION")
        {
            return;
        }
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        self.lines
            .push_back(format!("{:>10.3} {what}", at.as_secs_f64()));
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}
