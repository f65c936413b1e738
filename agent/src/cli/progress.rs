//! Progress for one job on a terminal: a bar per lifetime on stderr, and one JSON line of metrics
//! per lifetime on stdout or in a file.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use ndhtl_agent::train::{LifetimeMetrics, RunSummary, TrainingObserver};
use serde::Serialize;

/// Where metric lines go.
pub enum MetricsSink {
    Stdout,
    File(File),
}

impl MetricsSink {
    /// `-` is stdout; anything else a file (created or truncated).
    pub fn open(target: &Path) -> io::Result<Self> {
        if target.as_os_str() == "-" {
            Ok(MetricsSink::Stdout)
        } else {
            Ok(MetricsSink::File(File::create(target)?))
        }
    }

    pub fn write_line<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let line = serde_json::to_string(value).expect("metrics serialise");
        match self {
            MetricsSink::Stdout => {
                let mut out = io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()
            }
            MetricsSink::File(file) => {
                writeln!(file, "{line}")?;
                file.flush()
            }
        }
    }
}

#[derive(Serialize)]
struct Event<'a, T: Serialize> {
    event: &'a str,
    job: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// The CLI's observer.
pub struct CliProgress {
    job: String,
    total_lifetimes: usize,
    bar: Option<ProgressBar>,
    sink: MetricsSink,
    pub write_error: Option<io::Error>,
}

impl CliProgress {
    pub fn new(job: String, total_lifetimes: usize, sink: MetricsSink) -> Self {
        CliProgress {
            job,
            total_lifetimes,
            bar: None,
            sink,
            write_error: None,
        }
    }

    pub fn write_lifetime(&mut self, metrics: &LifetimeMetrics) {
        let event = Event {
            event: "lifetime",
            job: &self.job,
            body: metrics,
        };
        if let Err(error) = self.sink.write_line(&event) {
            self.write_error.get_or_insert(error);
        }
    }

    pub fn write_summary(&mut self, summary: &RunSummary) -> io::Result<()> {
        self.sink.write_line(&Event {
            event: "summary",
            job: &self.job,
            body: summary,
        })
    }
}

impl TrainingObserver for CliProgress {
    fn on_step(&mut self, lifetime: usize, step: usize, steps: usize) {
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar
        });
        if step == 1 {
            bar.reset();
            bar.set_length(steps as u64);
            bar.set_prefix(format!(
                "{} lifetime {lifetime}/{}",
                self.job, self.total_lifetimes
            ));
        }
        bar.set_position(step as u64);
    }

    fn on_resume(&mut self, history: &[LifetimeMetrics]) {
        for metrics in history {
            self.write_lifetime(metrics);
        }
    }

    fn on_lifetime(&mut self, metrics: &LifetimeMetrics) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.bar = None;
        self.write_lifetime(metrics);
    }
}
