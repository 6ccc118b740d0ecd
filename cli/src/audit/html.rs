//! `lockstep audit history --format html`: one self-contained HTML page (inline CSS
//! and SVG, no script, no external resource) with, per pair, a chart of the
//! differences and one of the keys compared (the coverage) over time, each run a
//! point coloured by its verdict, and the keys differing in the last verified run,
//! persistent ones first.
//!
//! The charts are drawn here as SVG, so the page shows the same thing in any browser
//! and offline. Everything taken from the history (pair names, keys, verdicts) is
//! HTML-escaped; keys are written as in verify's CSV (`base64:` for binary keys).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::DateTime;

use crate::audit::history::{Run, TrackedKey, PERSISTENT_RUNS};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 160.0;
const MARGIN: f64 = 40.0;

// The colours are constants, each used for one thing only, so that a screenshot of
// the page can be checked by colour (cli/tests/audit_html.rs looks for these values).
/// The line of the differences chart.
pub const DIFFERENCES_SERIES: &str = "#7b1fa2";
/// The line of the keys-compared (coverage) chart.
pub const COVERAGE_SERIES: &str = "#00838f";
/// A run's dot, by verdict.
pub const CONSISTENT_DOT: &str = "#22aa22";
pub const DIFFERENCES_DOT: &str = "#dd2222";
pub const INCOMPLETE_DOT: &str = "#ddbb22";
pub const UNVERIFIED_DOT: &str = "#ee8800";
/// Each chart's frame and background.
pub const CHART_BORDER: &str = "#dddddd";
pub const CHART_BACKGROUND: &str = "#fafafa";

/// The whole page.
pub fn page(runs: &[Run], keys: &[TrackedKey]) -> String {
    let mut by_pair: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        by_pair.entry(run.pair.as_str()).or_default().push(run);
    }
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>lockstep audit history</title><style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}\
         svg{{background:{CHART_BACKGROUND};border:1px solid {CHART_BORDER};margin:0.5em 0;display:block}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}\
         .persistent{{color:#b00;font-weight:bold}}</style></head><body>\n\
         <h1>lockstep audit history</h1>\n",
    );
    if by_pair.is_empty() {
        out.push_str("<p>No audit recorded yet.</p>\n");
    }
    for (pair, runs) in &by_pair {
        let pair_keys: Vec<&TrackedKey> = keys.iter().filter(|k| k.pair == *pair).collect();
        out.push_str(&pair_section(pair, runs, &pair_keys));
    }
    out.push_str("</body></html>\n");
    out
}

fn pair_section(pair: &str, runs: &[&Run], keys: &[&TrackedKey]) -> String {
    let mut out = String::new();
    let last = runs.last().map_or("none", |r| r.verdict.as_str());
    let _ = writeln!(
        out,
        "<section class=\"pair\" id=\"pair-{p}\"><h2>{p}</h2><p>{} runs; last: {}</p>",
        runs.len(),
        escape(last),
        p = escape(pair)
    );
    let points = |value: fn(&Run) -> f64| -> Vec<(i64, f64, &str)> {
        runs.iter()
            .map(|r| (r.started_ms, value(r), r.verdict.as_str()))
            .collect()
    };
    out.push_str(&chart(
        "differences",
        DIFFERENCES_SERIES,
        &points(|r| r.differences as f64),
    ));
    out.push_str(&chart(
        "keys compared",
        COVERAGE_SERIES,
        &points(|r| r.keys_compared as f64),
    ));
    out.push_str(&key_table(keys));
    out.push_str("</section>\n");
    out
}

/// A line chart of `(time ms, value, verdict)` in `series` colour, one dot per run.
fn chart(title: &str, series: &str, points: &[(i64, f64, &str)]) -> String {
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => return String::new(),
    };
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let top = max.max(1.0);
    let span = (last - first).max(1) as f64;
    let xy = |(t, v): (i64, f64)| {
        let x = MARGIN + (t - first) as f64 / span * (WIDTH - 2.0 * MARGIN);
        let y = HEIGHT - MARGIN / 2.0 - v / top * (HEIGHT - MARGIN);
        (x, y)
    };
    let mut svg = format!(
        "<svg class=\"chart\" data-title=\"{t}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t} over time\">\
         <text x=\"4\" y=\"14\" font-size=\"12\">{t} (max {max})</text>",
        t = escape(title)
    );
    let line: Vec<String> = points
        .iter()
        .map(|&(t, v, _)| {
            let (x, y) = xy((t, v));
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"{series}\" stroke-width=\"2\" points=\"{}\"/>",
        line.join(" ")
    );
    for &(t, v, verdict) in points {
        let (x, y) = xy((t, v));
        let _ = write!(
            svg,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{}\"><title>{} {}: {v}</title></circle>",
            colour(verdict),
            time(t),
            escape(verdict)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{MARGIN}\" y=\"{HEIGHT}\" font-size=\"10\" dy=\"-2\">{}</text>\
         <text x=\"{}\" y=\"{HEIGHT}\" font-size=\"10\" dy=\"-2\" text-anchor=\"end\">{}</text></svg>",
        time(first),
        WIDTH - MARGIN,
        time(last)
    );
    svg
}

fn key_table(keys: &[&TrackedKey]) -> String {
    if keys.is_empty() {
        return "<p>No key differs in the last verified run.</p>\n".to_owned();
    }
    let mut sorted = keys.to_vec();
    sorted.sort_by_key(|k| std::cmp::Reverse(k.consecutive));
    let mut out = String::from(
        "<table><tr><th>state</th><th>db</th><th>key</th><th>kind</th>\
         <th>consecutive runs</th><th>first seen (UTC)</th></tr>\n",
    );
    for k in sorted {
        let (class, state) = if k.consecutive >= PERSISTENT_RUNS {
            ("persistent", "persistent")
        } else {
            ("new", "new (lag?)")
        };
        let _ = writeln!(
            out,
            "<tr class=\"{class}\"><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            k.db,
            escape(&lockstep_verify::output::encode_key(&k.key)),
            escape(&k.kind),
            k.consecutive,
            time(k.first_seen_ms)
        );
    }
    out.push_str("</table>\n");
    out
}

fn colour(verdict: &str) -> &'static str {
    match verdict {
        "consistent" => CONSISTENT_DOT,
        "differences" => DIFFERENCES_DOT,
        "incomplete" => INCOMPLETE_DOT,
        _ => UNVERIFIED_DOT,
    }
}

fn time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pair: &str, at: i64, differences: u64, verdict: &str) -> Run {
        Run {
            pair: pair.into(),
            started_ms: at,
            ended_ms: at + 5,
            differences,
            keys_compared: 100,
            verdict: verdict.into(),
            ..Run::default()
        }
    }

    #[test]
    fn each_pair_gets_two_charts_with_a_point_per_run_and_keys_are_escaped() {
        let runs = [
            run("a", 0, 0, "consistent"),
            run("b", 500, 0, "consistent"),
            run("a", 1000, 2, "differences"),
            run("a", 2000, 1, "differences"),
        ];
        let keys = [TrackedKey {
            pair: "a".into(),
            db: 0,
            key: b"<script>alert(1)</script>".to_vec(),
            kind: "value".into(),
            first_seen_ms: 1000,
            last_seen_ms: 2000,
            consecutive: 2,
        }];
        let html = page(&runs, &keys);
        assert_eq!(
            html.matches("<svg class=\"chart\"").count(),
            4,
            "two per pair"
        );
        assert_eq!(
            html.matches("<circle").count(),
            8,
            "a dot per run per chart"
        );
        let a =
            &html[html.find("id=\"pair-a\"").expect("a")..html.find("id=\"pair-b\"").expect("b")];
        let polyline = a
            .split("points=\"")
            .nth(1)
            .expect("a line")
            .split('"')
            .next()
            .expect("end");
        assert_eq!(polyline.split(' ').count(), 3, "{polyline}");
        assert!(
            !html.contains("<script>") && html.contains("&lt;script&gt;"),
            "escaped"
        );
        assert!(html.contains("class=\"persistent\""));
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "self-contained"
        );
        assert!(page(&[], &[]).contains("No audit recorded yet"));
    }
}
