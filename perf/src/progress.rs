//! The live view on stderr: an indicatif bar with the current rate and p99
//! while a terminal is attached, or a plain line every few seconds when
//! stderr is a file or a pipe (bench.sh logs).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{fmt_count, IntervalSample};

const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Bar positions are tenths of the phase's unit (seconds, or records).
const SCALE: f64 = 10.0;

pub struct Progress {
    enabled: bool,
    bar: Option<ProgressBar>,
    label: String,
    phase: String,
    last_plain: Option<Instant>,
}

impl Progress {
    pub fn new(enabled: bool, label: &str) -> Progress {
        let bar = (enabled && crate::runner::stderr_is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(4));
            let style = ProgressStyle::with_template(
                "{prefix:.bold} [{bar:24.cyan/blue}] {elapsed:>4} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b
        });
        Progress {
            enabled,
            bar,
            label: label.to_string(),
            phase: String::new(),
            last_plain: None,
        }
    }

    pub fn phase(&mut self, name: &str, len: f64) {
        self.phase = name.to_string();
        match &self.bar {
            Some(b) => {
                b.set_prefix(format!("{} {name}", self.label));
                b.set_length((len.max(0.0) * SCALE) as u64);
                b.set_position(0);
                b.reset_elapsed();
            }
            None if self.enabled => eprintln!("[{}] {name}", self.label),
            None => {}
        }
        self.last_plain = Some(Instant::now());
    }

    pub fn position(&self, x: f64) {
        if let Some(b) = &self.bar {
            b.set_position((x.max(0.0) * SCALE) as u64);
        }
    }

    pub fn interval(&mut self, s: &IntervalSample) {
        let msg = describe(s);
        match &self.bar {
            Some(b) => b.set_message(msg),
            None if self.enabled => {
                let due = self.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
                if due {
                    eprintln!("[{} {}] {msg}", self.label, self.phase);
                    self.last_plain = Some(Instant::now());
                }
            }
            None => {}
        }
    }

    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None if self.enabled => eprintln!("{text}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn describe(s: &IntervalSample) -> String {
    let mut out = format!(
        "prod {:.1} MB/s {} msg/s",
        s.produced_mb_per_s,
        fmt_count(s.produced_msgs_per_s)
    );
    if let Some(p) = &s.publish {
        out += &format!(" p99 {}", fmt_ms(p.p99_ms));
    }
    if s.consumed_msgs_per_s > 0.0 || s.e2e.is_some() {
        out += &format!(" | cons {:.1} MB/s", s.consumed_mb_per_s);
        if let Some(e) = &s.e2e {
            out += &format!(" e2e p99 {}", fmt_ms(e.p99_ms));
        }
    }
    if let Some(c) = s.broker_cpu_pct {
        out += &format!(" | broker {c:.0}% cpu");
    }
    if s.errors > 0 {
        out += &format!(" | {} errors", s.errors);
    }
    out
}

pub fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}
