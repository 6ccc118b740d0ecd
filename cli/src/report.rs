//! What a person sees on stderr: `tracing` log lines (text or JSON, `--log-format`)
//! and, when stderr is a terminal, live progress of a sync: a bar per target during
//! the full copy (keys and bytes of the total, rate, ETA), then a compact line in the
//! incremental phase (applied commands/s, lag in ms and bytes). When stderr is not a
//! terminal the same facts are logged every [`LOG_EVERY`] and at each phase change.
//!
//! Log lines and bars share stderr: while bars are drawn, each log line is written
//! through `MultiProgress::suspend`, so neither garbles the other.
//!
//! How it fits: `main` installs it once; `sync.rs` spawns the display over its
//! [`Task`]. It only reads the watches: it must never block the engine, and never
//! show a lag it did not measure ("unknown" when no heartbeat was seen).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lockstep_sync::engine::{Phase, Progress};

use crate::args::LogFormat;
use crate::status::{phase_name, Task, TaskView};

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often the bars and the live line are redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(250);

/// Where progress goes: bars on a terminal, log lines otherwise.
#[derive(Clone)]
pub struct Display {
    bars: Option<MultiProgress>,
}

/// Installs the global `tracing` subscriber (level from `RUST_LOG`, default
/// `lockstep=info,warn`) and returns where a sync's progress is to be shown.
pub fn init(format: LogFormat) -> Display {
    let terminal = std::io::stderr().is_terminal();
    let bars = terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    let writer_bars = bars.clone();
    let make_writer = move || LineWriter(writer_bars.clone());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "lockstep=info,warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make_writer);
    match format {
        LogFormat::Text => builder.with_ansi(terminal).init(),
        LogFormat::Json => builder.json().init(),
    }
    Display { bars }
}

/// stderr, around the bars when there are some.
struct LineWriter(Option<MultiProgress>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(bars) => bars.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// What one target showed last, to draw rates and notice phase changes.
struct Shown {
    view: TaskView,
    bar: Option<ProgressBar>,
    phase: Option<Phase>,
    /// (when, commands applied) of the last rate sample.
    sample: (Instant, u64),
    commands_per_second: f64,
}

impl Display {
    /// Shows the progress of every target until the task ends (abort the returned
    /// handle's task); bars are cleared by [`Display::finish`].
    pub fn spawn(&self, task: Arc<Task>) -> tokio::task::JoinHandle<()> {
        let bars = self.bars.clone();
        tokio::spawn(async move {
            let mut shown: Vec<Shown> = Vec::new();
            let mut last_log = Instant::now();
            loop {
                // Views added since (the shards of a resharded cluster source).
                for view in task.views().into_iter().skip(shown.len()) {
                    shown.push(Shown {
                        view,
                        bar: bars.as_ref().map(|b| b.add(ProgressBar::hidden())),
                        phase: None,
                        sample: (Instant::now(), 0),
                        commands_per_second: 0.0,
                    });
                }
                let log_now = last_log.elapsed() >= LOG_EVERY;
                if log_now {
                    last_log = Instant::now();
                }
                for target in &mut shown {
                    target.update(&task.name, log_now);
                }
                tokio::time::sleep(DRAW_EVERY).await;
            }
        })
    }

    /// Removes the bars (before the final lines are printed).
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
    }
}

/// A source silent this long (seconds) is named on the live line.
const SILENCE_SHOWN_SECS: u64 = 3;

/// The lag figures of one progress sample, as shown and logged.
struct Lag {
    /// Now minus the source time of the last heartbeat; None when unknown.
    ms: Option<i64>,
    /// Stream bytes received and not yet applied.
    bytes: i64,
    /// Seconds since the last byte from the source; None before the first.
    silent_s: Option<u64>,
}

impl Lag {
    fn of(p: &Progress) -> Lag {
        Lag {
            // Honest lag: it grows while nothing arrives; unknown without a heartbeat.
            ms: p.lag_ms(lockstep_sync::engine::unix_ms()),
            bytes: (p.received_offset - p.applied_offset).max(0),
            silent_s: p.source_byte_at.map(|at| at.elapsed().as_secs()),
        }
    }
}

impl Shown {
    fn update(&mut self, task: &str, log_now: bool) {
        let p: Progress = self.view.progress.borrow().clone();
        self.sample_rate(&p);
        let changed = self.phase != Some(p.phase);
        self.phase = Some(p.phase);
        let lag = Lag::of(&p);
        if changed || log_now {
            self.log(task, &p, &lag);
        }
        let Some(bar) = &self.bar else { return };
        let prefix = format!("{task}[{}]", self.view.index);
        match p.phase {
            Phase::FullCopy => draw_full_copy(bar, &p, changed),
            phase => {
                if changed {
                    if let Ok(style) = ProgressStyle::with_template("{prefix} {msg}") {
                        bar.set_style(style);
                    }
                }
                bar.set_message(self.live_line(phase, &lag));
                bar.tick();
            }
        }
        bar.set_prefix(prefix);
    }

    /// Refreshes the applied commands per second, at most once a second.
    fn sample_rate(&mut self, p: &Progress) {
        let elapsed = self.sample.0.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let done = p.commands_applied.saturating_sub(self.sample.1);
            self.commands_per_second = done as f64 / elapsed.as_secs_f64();
            self.sample = (Instant::now(), p.commands_applied);
        }
    }

    /// One log line of the target's progress.
    fn log(&self, task: &str, p: &Progress, lag: &Lag) {
        let index = self.view.index;
        match p.phase {
            Phase::FullCopy => tracing::info!(
                task,
                target = index,
                phase = phase_name(p.phase),
                keys = p.keys_copied,
                keys_total = p.keys_total,
                bytes = p.bytes_copied,
                bytes_total = p.bytes_total,
                "full copy"
            ),
            Phase::Incremental => tracing::info!(
                task,
                target = index,
                phase = phase_name(p.phase),
                commands_per_second = self.commands_per_second.round() as u64,
                lag_ms = lag.ms,
                lag_bytes = lag.bytes,
                source_silent_s = lag.silent_s,
                applied_offset = p.applied_offset,
                "incremental"
            ),
            other => tracing::info!(task, target = index, phase = phase_name(other)),
        }
    }

    /// The live line's text outside the full copy.
    fn live_line(&self, phase: Phase, lag: &Lag) -> String {
        match phase {
            Phase::Incremental => {
                let lag_ms = lag
                    .ms
                    .map(|ms| format!("{ms} ms"))
                    .unwrap_or_else(|| "unknown (no heartbeat seen)".to_owned());
                format!(
                    "incremental: {:.0} cmd/s, lag {lag_ms}, {} bytes{}",
                    self.commands_per_second,
                    lag.bytes,
                    lag.silent_s
                        .filter(|s| *s >= SILENCE_SHOWN_SECS)
                        .map(|s| format!(", nothing from the source for {s} s"))
                        .unwrap_or_default()
                )
            }
            other => phase_name(other).to_owned(),
        }
    }
}

/// The full copy's bar: bytes of the total (when announced), keys, rate, ETA.
fn draw_full_copy(bar: &ProgressBar, p: &Progress, changed: bool) {
    let of = p.keys_total.map(|t| format!("/{t}")).unwrap_or_default();
    bar.set_message(format!("{}{of} keys", p.keys_copied));
    if changed {
        let template = match p.bytes_total {
            Some(_) => "{prefix} full copy [{bar:30}] {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} eta {eta}",
            None => "{prefix} full copy {bytes} {msg} {binary_bytes_per_sec}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.reset();
    }
    if let Some(total) = p.bytes_total {
        bar.set_length(total);
    }
    bar.set_position(p.bytes_copied);
}
