//! The alert: a JSON POST to the configured webhook whenever a pair's verdict changes
//! from its previous recorded run (consistent to differences and back, to and from
//! could-not-verify, incomplete), including across restarts (the previous run comes
//! from the history). The first run of a pair is a change from nothing.
//!
//! The body names the pair, the previous and new verdicts, the times and the counts
//! (and a sample's statement): never a URL or an error text, so never a password.
//! Each POST gets a timeout per attempt and retries with a growing pause; a webhook
//! that stays down is logged, and the audit goes on (an alert never stops an audit).
//! Plain `http://` only for now (the binary's HTTP client is built without TLS).

use std::time::Duration;

use serde_json::json;

use crate::audit::history::Run;

/// Attempts per alert.
pub const ATTEMPTS: u32 = 3;
/// Time allowed to each attempt.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The alert's body, when `run` changes the verdict of `previous`; None otherwise.
pub fn alert(previous: Option<&Run>, run: &Run) -> Option<serde_json::Value> {
    let before = previous.map(|p| p.verdict.as_str());
    if before == Some(run.verdict.as_str()) {
        return None;
    }
    Some(json!({
        "event": "audit_state_changed",
        "pair": run.pair,
        "previous_verdict": before,
        "verdict": run.verdict,
        "started_ms": run.started_ms,
        "ended_ms": run.ended_ms,
        "mode": run.mode,
        "keys_compared": run.keys_compared,
        "differences": run.differences,
        "by_kind": run.by_kind,
        "statement": run.statement.as_ref().and_then(|s| s.get("sentence")).cloned(),
    }))
}

/// Posts `body` to `url` in the background, with retries; failures are logged. The
/// handle ends when the alert is delivered or dropped.
pub fn send(url: &str, body: serde_json::Value) -> tokio::task::JoinHandle<()> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        let text = body.to_string();
        for attempt in 1..=ATTEMPTS {
            let sent = agent
                .post(&url)
                .header("content-type", "application/json")
                .send(text.as_str());
            match sent {
                Ok(_) => return,
                Err(err) if attempt < ATTEMPTS => {
                    tracing::warn!(
                        "the audit webhook failed (attempt {attempt} of {ATTEMPTS}): {err}"
                    );
                    std::thread::sleep(Duration::from_secs(u64::from(attempt)));
                }
                Err(err) => tracing::error!(
                    "the audit webhook failed {ATTEMPTS} times, this alert is dropped: {err}"
                ),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(verdict: &str) -> Run {
        Run {
            pair: "orders".into(),
            verdict: verdict.into(),
            error: Some("cannot connect to redis://:***@h:1".into()),
            ..Run::default()
        }
    }

    #[test]
    fn only_a_change_of_verdict_alerts_and_the_body_holds_no_error_text() {
        assert!(alert(Some(&run("consistent")), &run("consistent")).is_none());
        let body = alert(Some(&run("consistent")), &run("differences")).expect("a change");
        assert_eq!(
            (body["previous_verdict"].as_str(), body["verdict"].as_str()),
            (Some("consistent"), Some("differences"))
        );
        let first = alert(None, &run("could_not_verify")).expect("first run");
        assert!(first["previous_verdict"].is_null());
        assert!(!first.to_string().contains("redis://"), "{first}");
    }
}
