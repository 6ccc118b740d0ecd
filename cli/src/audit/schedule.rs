//! When a pair's next audit is due: an interval or a cron expression, plus a jitter so
//! that pairs sharing a schedule do not all hit their servers at the same second.
//!
//! Pure: the clock is an argument (UTC) and the jitter is drawn from a seed (the
//! pair's name and its run number), so the same inputs give the same time and the
//! tests use a fake clock. Cron expressions are parsed by `croner` (5 fields, or 6
//! with seconds first; `@hourly` and the like), evaluated in UTC.
//!
//! The rules: an interval counts from the start of the last run (kept in the history,
//! so a restarted daemon keeps its rhythm); the first run of a pair is due at once.
//! A cron expression is due at its first occurrence after the last run (or after
//! now, for a pair never run). A due time already past is now: one catch-up run,
//! never a burst.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How often.
#[derive(Clone, Debug)]
pub enum Every {
    Interval(Duration),
    Cron(Box<croner::Cron>),
}

impl Every {
    /// A cron expression, or why it is not one (croner's message: it quotes the
    /// expression, which is no secret).
    pub fn cron(expression: &str) -> Result<Every, String> {
        croner::Cron::from_str(expression)
            .map(|cron| Every::Cron(Box::new(cron)))
            .map_err(|e| e.to_string())
    }
}

/// A schedule: how often, and at most how much later, at random.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub every: Every,
    pub jitter: Duration,
}

impl Schedule {
    pub fn new(every: Every, jitter: Duration) -> Schedule {
        Schedule { every, jitter }
    }

    /// When the next run is due, given the start of the last one, the current time
    /// and a seed for the jitter; never before `now`. None: a cron expression with
    /// no occurrence left.
    pub fn next_due(
        &self,
        last_start: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        seed: u64,
    ) -> Option<DateTime<Utc>> {
        let base = match (&self.every, last_start) {
            (Every::Interval(_), None) => return Some(now),
            (Every::Interval(interval), Some(last)) => last + *interval,
            (Every::Cron(cron), last) => cron
                .find_next_occurrence(&last.unwrap_or(now), false)
                .ok()?,
        };
        Some((base + self.jitter_for(seed)).max(now))
    }

    /// A deterministic delay in `[0, jitter]` drawn from `seed`.
    fn jitter_for(&self, seed: u64) -> Duration {
        let millis = self.jitter.as_millis() as u64;
        if millis == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(splitmix64(seed) % (millis + 1))
    }
}

/// The jitter's seed for run `run` of the pair named `name`.
pub fn seed(name: &str, run: u64) -> u64 {
    name.bytes().fold(run, |h, b| splitmix64(h ^ u64::from(b)))
}

/// SplitMix64's output function: a well-mixed 64-bit value from any input.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a time")
            .with_timezone(&Utc)
    }

    fn every(secs: u64) -> Schedule {
        Schedule::new(Every::Interval(Duration::from_secs(secs)), Duration::ZERO)
    }

    #[test]
    fn an_interval_counts_from_the_last_start_and_the_first_run_is_now() {
        let now = at("2026-12-02T10:00:00Z");
        let s = every(3600);
        assert_eq!(s.next_due(None, now, 1), Some(now));
        let last = at("2026-12-02T09:30:00Z");
        assert_eq!(
            s.next_due(Some(last), now, 1),
            Some(at("2026-12-02T10:30:00Z"))
        );
        let long_ago = at("2026-11-30T00:00:00Z");
        assert_eq!(
            s.next_due(Some(long_ago), now, 1),
            Some(now),
            "one catch-up, now"
        );
    }

    #[test]
    fn a_cron_expression_is_due_at_its_next_occurrence_in_utc() {
        let s = Schedule::new(Every::cron("15 * * * *").expect("valid"), Duration::ZERO);
        let now = at("2026-12-02T10:20:00Z");
        assert_eq!(s.next_due(None, now, 0), Some(at("2026-12-02T11:15:00Z")));
        let last = at("2026-12-02T10:15:00Z");
        assert_eq!(
            s.next_due(Some(last), now, 0),
            Some(at("2026-12-02T11:15:00Z"))
        );
        let missed = at("2026-12-02T08:15:00Z");
        assert_eq!(
            s.next_due(Some(missed), now, 0),
            Some(now),
            "missed: run now"
        );
        let hourly = Schedule::new(Every::cron("@hourly").expect("alias"), Duration::ZERO);
        assert_eq!(
            hourly.next_due(None, now, 0),
            Some(at("2026-12-02T11:00:00Z"))
        );
        assert!(Every::cron("61 * * * *").is_err());
        assert!(Every::cron("not cron").is_err());
    }

    #[test]
    fn the_jitter_is_bounded_deterministic_and_spreads_pairs() {
        let mut s = every(60);
        s.jitter = Duration::from_secs(30);
        let last = at("2026-12-02T10:00:00Z");
        let now = at("2026-12-02T10:00:01Z");
        let mut seen = std::collections::BTreeSet::new();
        for run in 0..50 {
            let due = s
                .next_due(Some(last), now, seed("orders", run))
                .expect("due");
            let late = (due - at("2026-12-02T10:01:00Z")).num_milliseconds();
            assert!((0..=30_000).contains(&late), "run {run}: {late} ms");
            assert_eq!(Some(due), s.next_due(Some(last), now, seed("orders", run)));
            seen.insert(late);
        }
        assert!(seen.len() > 40, "the jitter varies: {seen:?}");
        assert_ne!(seed("orders", 1), seed("users", 1));
    }
}
