//! What a sampled run proves, as a sentence a person can act on: "with 20,000 sampled
//! keys and 0 differences, fewer than 0.015% of keys differ, at 95% confidence".
//!
//! A sample with no difference does not prove equality; it bounds the fraction of
//! differing keys. The sample is the hash sample ([`crate::Sample`]): a key is in it
//! by its hash, independent of whether it differs, so the differing keys found among
//! `n` sampled keys are a binomial draw of the true differing fraction `p`.
//!
//! The bounds are exact binomial (Clopper-Pearson) bounds, never the normal
//! approximation (which claims a zero-width interval when no key differs):
//! - the one-sided upper bound at 95%: the `p` for which `k` or fewer differences in
//!   `n` keys has probability 5%, the 0.95 quantile of Beta(k + 1, n - k) (with k = 0
//!   it is `1 - 0.05^(1/n)`); 1 when every sampled key differs;
//! - with differences, the estimate `k / n` and the two-sided 95% interval: the 0.025
//!   quantile of Beta(k, n - k + 1) and the 0.975 quantile of Beta(k + 1, n - k).
//!
//! The beta quantile is statrs's (`inv_beta_reg`, algorithm AS 64 refined by Newton
//! steps), checked below against values computed independently with SciPy 1.17
//! (`scipy.stats.beta.ppf`). Percentages are printed with two significant digits,
//! an upper bound rounded up and a lower bound rounded down, so the printed claim is
//! never stronger than the computed one.
//!
//! Pure: it reads nothing and is only called for sampled runs; a full run says
//! CONSISTENT or INCONSISTENT instead.

use serde_json::json;
use statrs::function::beta::inv_beta_reg;

/// The confidence of every bound (one-sided for the upper bound, two-sided for the
/// interval).
pub const CONFIDENCE: f64 = 0.95;

/// The bound on the differing fraction that a sample of `sampled` keys with
/// `differing` differences proves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Statement {
    pub sampled: u64,
    pub differing: u64,
    /// One-sided upper bound at [`CONFIDENCE`] on the fraction of differing keys.
    pub upper_bound: f64,
    /// `differing / sampled`.
    pub estimate: f64,
    /// With differences: the two-sided interval at [`CONFIDENCE`].
    pub interval: Option<(f64, f64)>,
}

impl Statement {
    /// The statement for `differing` differences among `sampled` keys; None when no
    /// key was sampled (nothing is proved). More differences than keys (keys counted
    /// elsewhere) are taken as every key differing.
    pub fn new(sampled: u64, differing: u64) -> Option<Statement> {
        if sampled == 0 {
            return None;
        }
        let (n, k) = (sampled as f64, differing.min(sampled) as f64);
        let alpha = 1.0 - CONFIDENCE;
        let upper = |q: f64| {
            if k >= n {
                1.0
            } else {
                inv_beta_reg(k + 1.0, n - k, q)
            }
        };
        let interval = (k > 0.0).then(|| {
            (
                inv_beta_reg(k, n - k + 1.0, alpha / 2.0),
                upper(1.0 - alpha / 2.0),
            )
        });
        Some(Statement {
            sampled,
            differing,
            upper_bound: upper(CONFIDENCE),
            estimate: k / n,
            interval,
        })
    }

    /// The sentence, e.g. "with 20,000 sampled keys and 0 differences, fewer than
    /// 0.015% of keys differ, at 95% confidence".
    pub fn sentence(&self) -> String {
        let head = format!(
            "with {} sampled keys and {} differences",
            thousands(self.sampled),
            thousands(self.differing)
        );
        match self.interval {
            None => format!(
                "{head}, fewer than {}% of keys differ, at 95% confidence",
                percent(self.upper_bound, Round::Up)
            ),
            Some((low, high)) => format!(
                "{head}, an estimated {}% of keys differ (95% confidence interval {}% to {}%)",
                percent(self.estimate, Round::Nearest),
                percent(low, Round::Down),
                percent(high, Round::Up)
            ),
        }
    }

    /// The statement in the JSON summary and the audit history.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "sampled_keys": self.sampled,
            "differences": self.differing,
            "confidence": CONFIDENCE,
            "upper_bound": self.upper_bound,
            "estimate": self.estimate,
            "interval": self.interval.map(|(low, high)| [low, high]),
            "sentence": self.sentence(),
        })
    }
}

#[derive(Clone, Copy)]
enum Round {
    Up,
    Down,
    Nearest,
}

/// `fraction` as a percentage with two significant digits, rounded as asked.
fn percent(fraction: f64, round: Round) -> String {
    let value = fraction * 100.0;
    if value <= 0.0 || !value.is_finite() {
        return "0".to_owned();
    }
    let decimals = (1 - value.log10().floor() as i32).clamp(0, 12);
    let scale = 10f64.powi(decimals);
    // A hair of tolerance so an exact 0.015 is not pushed up to 0.016 by float noise.
    let scaled = value * scale;
    let rounded = match round {
        Round::Up => (scaled - 1e-9).ceil(),
        Round::Down => (scaled + 1e-9).floor(),
        Round::Nearest => scaled.round(),
    } / scale;
    format!("{rounded:.prec$}", prec = decimals as usize)
}

/// `n` with a comma every three digits.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected.abs() * 1e-6 + 1e-15
    }

    /// (n, k, one-sided upper, interval low, interval high) from SciPy 1.17:
    /// `beta.ppf(0.95, k+1, n-k)`, `beta.ppf(0.025, k, n-k+1)`,
    /// `beta.ppf(0.975, k+1, n-k)`.
    const SCIPY: [(u64, u64, f64, f64, f64); 6] = [
        (20000, 0, 0.00014977539622296283, 0.0, 0.0001844269639618992),
        (1000, 0, 0.002991249545095295, 0.0, 0.003682083896865671),
        (100, 0, 0.029513049607039925, 0.0, 0.03621669264517641),
        (
            20000,
            3,
            0.00038763675578637095,
            3.093467444528525e-05,
            0.00043830045339363695,
        ),
        (
            1000,
            10,
            0.016903175120562504,
            0.004805510691049308,
            0.01831324305511245,
        ),
        (
            10,
            1,
            0.39416330243650466,
            0.0025285785444617848,
            0.4450161170281954,
        ),
    ];

    #[test]
    fn the_bounds_match_scipy() {
        for (n, k, upper, low, high) in SCIPY {
            let s = Statement::new(n, k).expect("keys were sampled");
            assert!(close(s.upper_bound, upper), "n={n} k={k}: {s:?}");
            match s.interval {
                None => assert_eq!(k, 0),
                Some((l, h)) => assert!(close(l, low) && close(h, high), "n={n} k={k}: {s:?}"),
            }
        }
    }

    #[test]
    fn no_difference_in_20000_keys_is_fewer_than_0_015_percent() {
        let s = Statement::new(20_000, 0).expect("sampled");
        assert!(close(s.upper_bound, 1.0 - 0.05f64.powf(1.0 / 20_000.0)));
        assert_eq!(
            s.sentence(),
            "with 20,000 sampled keys and 0 differences, fewer than 0.015% of keys differ, \
             at 95% confidence"
        );
    }

    #[test]
    fn differences_give_the_estimate_and_an_interval_rounded_outwards() {
        let s = Statement::new(20_000, 3).expect("sampled");
        assert_eq!(
            s.sentence(),
            "with 20,000 sampled keys and 3 differences, an estimated 0.015% of keys differ \
             (95% confidence interval 0.0030% to 0.044%)"
        );
        let all = Statement::new(50, 50).expect("sampled");
        assert_eq!(all.upper_bound, 1.0);
        let (low, high) = all.interval.expect("differences");
        assert!(close(low, 0.9288782635358024) && high == 1.0, "{all:?}");
    }

    #[test]
    fn nothing_sampled_proves_nothing() {
        assert_eq!(Statement::new(0, 0), None);
        let more = Statement::new(5, 9).expect("sampled");
        assert_eq!((more.estimate, more.upper_bound), (1.0, 1.0));
    }

    #[test]
    fn percentages_round_the_claim_never_stronger() {
        assert_eq!(percent(0.00014977, Round::Up), "0.015");
        assert_eq!(percent(0.00014977, Round::Down), "0.014");
        assert_eq!(percent(0.39416, Round::Up), "40");
        assert_eq!(percent(0.016903, Round::Nearest), "1.7");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
