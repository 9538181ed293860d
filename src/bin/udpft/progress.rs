//! What a person watches while a command runs: a progress bar on a terminal, with
//! `--trace` one line per protocol event, timed as in PROTOCOL.md §9, and with
//! `--diagram` each transfer drawn as a time-sequence diagram when it ends.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use udpft::diagram::Diagram;
use udpft::engine::{Event, RtoConfig};
use udpft::net::client::Observer;
use udpft::text;
use udpft::wire::Op;

/// How `--diagram` draws a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagramFormat {
    /// Two columns of box-drawing characters, for a terminal.
    Terminal,
    /// A Mermaid sequenceDiagram, for documents.
    Mermaid,
}

/// The observer the client binary installs.
pub struct Terminal {
    /// Show a bar for get and put (only if stderr is a terminal).
    bar_wanted: bool,
    bar: Option<ProgressBar>,
    /// Print trace lines.
    trace: bool,
    /// Draw a diagram of each session, with the client's timer settings.
    diagram: Option<(DiagramFormat, RtoConfig)>,
    op: Op,
    events: Vec<(Duration, Event)>,
}

impl Terminal {
    pub fn new(quiet: bool, trace: bool, diagram: Option<(DiagramFormat, RtoConfig)>) -> Terminal {
        Terminal {
            bar_wanted: !quiet && io::stderr().is_terminal(),
            bar: None,
            trace,
            diagram,
            op: Op::Get,
            events: Vec::new(),
        }
    }
}

/// A session's diagram from the client's trace, every line escaped (an ERROR's message
/// is the server's text).
pub fn diagram_text(
    events: &[(Duration, Event)],
    op: Op,
    format: DiagramFormat,
    rto: RtoConfig,
) -> String {
    let d = Diagram::from_trace(events, op, rto);
    let text = match format {
        DiagramFormat::Terminal => d.terminal(),
        DiagramFormat::Mermaid => d.mermaid(),
    };
    text.lines()
        .map(|l| text::sanitize(l).into_owned() + "\n")
        .collect()
}

/// One trace line: the time since the session started, then the event, escaped (an
/// ERROR's message is the server's text).
pub fn trace_line(elapsed: Duration, event: &Event) -> String {
    format!(
        "{:>9.3} ms  client: {}",
        elapsed.as_secs_f64() * 1e3,
        text::sanitize(&event.to_string())
    )
}

impl Observer for Terminal {
    fn start(&mut self, op: Op, total: Option<u64>) {
        self.op = op;
        self.events.clear();
        if self.bar_wanted && matches!(op, Op::Get | Op::Put) {
            let b = ProgressBar::new(total.unwrap_or(0));
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.bar = Some(b);
        }
    }

    fn progress(&mut self, bytes: u64, total: Option<u64>) {
        if let Some(b) = &self.bar {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.set_position(bytes);
        }
    }

    fn event(&mut self, elapsed: Duration, event: &Event) {
        if self.diagram.is_some() {
            self.events.push((elapsed, event.clone()));
        }
        if !self.trace {
            return;
        }
        let line = trace_line(elapsed, event);
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => {
                let _ = writeln!(io::stderr().lock(), "{line}");
            }
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Some((format, rto)) = self.diagram {
            let text = diagram_text(&self.events, self.op, format, rto);
            self.events.clear();
            let mut out = io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        }
    }
}

/// A listing line made safe for a terminal: the tab between size and name is kept,
/// control characters anywhere else (a hostile server's) are escaped.
pub fn listing_line(line: &str) -> String {
    match line.split_once('\t') {
        Some((size, name)) => format!("{}\t{}", text::sanitize(size), text::sanitize(name)),
        None => text::sanitize(line).into_owned(),
    }
}

/// Prints a listing on stdout, line by line; a closed stdout (`udpft list | head -1`)
/// just ends it.
pub fn print_listing(listing: &str) {
    let mut out = io::stdout().lock();
    for line in listing.lines() {
        if writeln!(out, "{}", listing_line(line)).is_err() {
            return;
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines_keep_their_tab_and_lose_escapes() {
        assert_eq!(listing_line("12\ta.txt"), "12\ta.txt");
        assert_eq!(listing_line("1\tx\u{1b}[2J\ty\r"), "1\tx\\x1b[2J\\ty\\r");
        assert_eq!(listing_line("\u{1b}]0;t\u{7}"), "\\x1b]0;t\\x07");
    }

    #[test]
    fn trace_lines_are_timed_and_escaped() {
        let ev = Event::Failed(udpft::engine::TransferError::Remote {
            code: udpft::engine::ErrorCode::Io,
            message: "x\n\u{1b}[31m".into(),
        });
        assert_eq!(
            trace_line(Duration::from_micros(1500), &ev),
            "    1.500 ms  client: transfer failed: x\\n\\x1b[31m"
        );
    }
}
