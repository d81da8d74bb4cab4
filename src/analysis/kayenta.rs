//! The comparison with a baseline, in Kayenta's classes and score: each compared metric is High or
//! Low when its change is significant (Mann-Whitney, or bursts beyond every baseline sample) and
//! material (the mean moved more than `minEffect` baseline sd, or the mean changed by a factor of
//! [`MATERIAL_RATIO`] with [`MATERIAL_SEPARATED`] of the new samples beyond the baseline's range,
//! or that share of them lie past its far fence),
//! else Pass or NoData; then groups are scored and weighted out of 100.

use serde::Serialize;

use super::mannwhitney;
use crate::model::Direction;

/// A metric's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Class {
    /// No significant change in the bad direction.
    Pass,
    /// Significantly higher than the baseline.
    High,
    /// Significantly lower than the baseline.
    Low,
    /// No data on one side (NaNs removed first).
    NoData,
    /// No data on one side, and the metric requires data: counts as a failure.
    NoDataFail,
}

/// How one metric is compared.
#[derive(Debug, Clone, Copy)]
pub struct CompareSettings {
    /// Which way is bad.
    pub direction: Direction,
    /// Interval confidence (Kayenta's default here: 0.98).
    pub confidence: f64,
    /// How far the mean must move, in the baseline's standard deviations (default 2.5).
    pub min_effect: f64,
    /// High only when mean(new) / mean(baseline) ≥ this (default 1.0: any increase).
    pub allowed_increase: f64,
    /// Low only when the ratio ≤ this (default 1.0).
    pub allowed_decrease: f64,
    /// A critical metric fails the whole score when High with ratio ≥ this (default 1.0) ...
    pub critical_increase: f64,
    /// ... or Low with ratio ≤ this (default 1.0), or without data.
    pub critical_decrease: f64,
    /// Whether a failure of this metric fails the whole score.
    pub critical: bool,
    /// Whether missing data counts as a failure.
    pub require_data: bool,
}

/// A classification with its evidence.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Classification {
    /// The class.
    pub class: Class,
    /// Whether it fails the whole score.
    pub critical_failure: bool,
    /// Why, in words (with the numbers).
    pub reason: String,
    /// mean(new) / mean(baseline); NaN (`null` in JSON) when the baseline's mean is 0 or the
    /// means differ in sign.
    pub ratio: f64,
    /// The test, when it ran.
    pub lower: Option<f64>,
    /// Upper end of the interval.
    pub upper: Option<f64>,
    /// Shift estimate (new - baseline).
    pub estimate: Option<f64>,
    /// Two-sided p-value.
    pub p_value: Option<f64>,
    /// Samples compared after NaN removal.
    pub n_new: usize,
    /// Baseline samples.
    pub n_baseline: usize,
}

impl Classification {
    /// A Pass with no test behind it (yet).
    pub fn pass(n_new: usize, n_baseline: usize) -> Classification {
        Classification {
            class: Class::Pass,
            critical_failure: false,
            reason: String::new(),
            ratio: 1.0,
            lower: None,
            upper: None,
            estimate: None,
            p_value: None,
            n_new,
            n_baseline,
        }
    }
}

/// A change of the mean by this factor (or its inverse) is material when the samples show it too
/// (below): measured on the decision suite (docs/metrics.md), a factor alone is not enough.
pub const MATERIAL_RATIO: f64 = 2.5;

/// The share of new samples beyond the baseline's whole range (above its maximum for a rise,
/// below its minimum for a fall) that makes a change by [`MATERIAL_RATIO`] material: a third of
/// the new samples where the baseline never went, however noisy the baseline (its sd says
/// nothing then). Both chosen on half the suite's files, checked on the other half. The same
/// share of the new samples past the baseline's far fence is material by itself (a change the
/// mean hides: docs/metrics.md).
pub const MATERIAL_SEPARATED: f64 = 1.0 / 3.0;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// A small deterministic generator for the tie-breaking noise (Kayenta adds Gaussian noise of
/// 1e-5 × the value when both samples are each one repeated value).
fn jitter(values: &[f64], seed: u64) -> Vec<f64> {
    let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let scale = values[0] * 1e-5;
    values
        .iter()
        .map(|v| {
            let (u1, u2) = (next().max(f64::MIN_POSITIVE), next());
            v + scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        })
        .collect()
}

/// Classifies `new` against `baseline`: Kayenta's `MannWhitneyClassifier` steps (NaN, no data,
/// ties), then promote's rule (docs/metrics.md: significant and material, in the direction judged).
pub fn classify(new: &[f64], baseline: &[f64], s: &CompareSettings) -> Classification {
    // Sorted: the tests below and Mann-Whitney do not depend on the order.
    let mut new: Vec<f64> = new.iter().copied().filter(|v| !v.is_nan()).collect();
    let mut base: Vec<f64> = baseline.iter().copied().filter(|v| !v.is_nan()).collect();
    let mut c = Classification::pass(new.len(), base.len());
    if new.is_empty() || base.is_empty() {
        let side = if new.is_empty() { "the new version" } else { "the baseline" };
        c.class = if s.require_data && !s.critical { Class::NoDataFail } else { Class::NoData };
        c.critical_failure = s.critical;
        c.reason = format!("no data for {side} ({} new, {} baseline samples after removing NaN)", new.len(), base.len());
        return c;
    }
    new.sort_by(f64::total_cmp);
    base.sort_by(f64::total_cmp);
    if new == base {
        c.reason =
            format!("the new version's and the baseline's samples are identical (mean {}, {} samples each, p = 1)", super::fmt_f64(mean(&new)), new.len());
        return c;
    }
    if new.iter().chain(&base).all(|v| *v == new[0]) {
        c.reason = format!("every sample is {} (mean {} on both sides, p = 1)", super::fmt_f64(new[0]), super::fmt_f64(new[0]));
        return c;
    }
    let degenerate = new.first() == new.last() && base.first() == base.last();
    // The overlap of the samples: new samples beyond the baseline's whole range, each way.
    let (base_lo, base_hi) = (base[0], base[base.len() - 1]);
    let above = new.iter().filter(|v| **v > base_hi).count();
    let below = new.iter().filter(|v| **v < base_lo).count();
    // The means are of the samples as measured (the jitter only breaks ties for the test).
    let (mean_new, mean_base) = (mean(&new), mean(&base));
    let sd = sd(&base, mean_base);
    let (x, y) = if degenerate { (jitter(&new, 1), jitter(&base, 2)) } else { (new, base) };
    c.ratio = ratio(mean_new, mean_base);
    let Some(mw) = mannwhitney::test(&x, &y, s.confidence) else {
        c.reason = format!("every observation is tied: no test (means {} vs {})", super::fmt_f64(mean_new), super::fmt_f64(mean_base));
        return c;
    };
    // Small or heavily tied samples: the p-value from the assignments themselves (exact, or by
    // permutation), where the normal approximation is least to be trusted.
    let (p_value, p_how) = match mannwhitney::permutation_p(&x, &y) {
        Some((p, mannwhitney::Exactness::Exact)) => (p, " exact"),
        Some((p, mannwhitney::Exactness::Permutation)) => (p, " by permutation"),
        None => (mw.p_value, ""),
    };
    let mw = mannwhitney::MannWhitney { p_value, ..mw };
    c.lower = Some(mw.lower);
    c.upper = Some(mw.upper);
    c.estimate = Some(mw.estimate);
    c.p_value = Some(mw.p_value);
    // Bursts: a few samples far beyond everything the baseline did move the mean but hardly the
    // ranks; how many new samples lie past every baseline sample and past its far fence (3 IQR
    // beyond the quartiles), and how likely that many would be there by chance.
    let far = exceedance(&x, &y);
    let increase = matches!(s.direction, Direction::Increase | Direction::Either);
    let decrease = matches!(s.direction, Direction::Decrease | Direction::Either);
    let f = super::fmt_f64;
    // Which way it moved: the interval's side when it excludes 0; else the means' (a change in a
    // few samples, bursts, moves the mean and not the median of the differences).
    let delta = mean_new - mean_base;
    let up = mw.lower > 0.0 || (mw.upper >= 0.0 && mw.lower <= 0.0 && delta > 0.0);
    let down = mw.upper < 0.0 || (mw.upper >= 0.0 && mw.lower <= 0.0 && delta < 0.0);
    let alpha = 1.0 - s.confidence;
    let significant_up = (mw.p_value < alpha && up) || far.p_up < alpha;
    let significant_down = (mw.p_value < alpha && down) || far.p_down < alpha;
    let up = up || far.p_up < alpha;
    let down = down || far.p_down < alpha;
    let bursts = match (far.up, far.down) {
        (k, _) if far.p_up < alpha => format!(", {k} new samples far above every baseline sample (p = {})", f(far.p_up)),
        (_, k) if far.p_down < alpha => format!(", {k} new samples far below every baseline sample (p = {})", f(far.p_down)),
        _ => String::new(),
    };
    // How much: the mean's move in the baseline's standard deviations (any move over a constant
    // baseline), so that a series' own ups and downs do not count.
    let effect = if sd > 0.0 {
        delta.abs() / sd
    } else if delta == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    // A second measure of size, for a noisy baseline whose sd hides a shift: the mean changed by
    // a factor of MATERIAL_RATIO and a third of the new samples lie beyond the baseline's range that way.
    let separated = |k: usize| k as f64 >= MATERIAL_SEPARATED * c.n_new as f64;
    // The ratio read along the number line: for a negative baseline, -60 against -20 (ratio 3) is
    // a fall, to a third.
    let level = if mean_base < 0.0 { 1.0 / c.ratio } else { c.ratio };
    let scaled_up = !level.is_nan() && level >= MATERIAL_RATIO && separated(above);
    let scaled_down = !level.is_nan() && level <= 1.0 / MATERIAL_RATIO && separated(below);
    // A third measure, for a change the mean hides (half the new samples far above and half far
    // below it, or a few far beyond on a noisy baseline): the same share of the new samples past
    // the baseline's far fence that way, which no day of the baseline's own noise reaches.
    let burst_up = separated(far.up) && far.p_up < alpha;
    let burst_down = separated(far.down) && far.p_down < alpha;
    let by_sd = effect > s.min_effect;
    let material_up = by_sd || scaled_up || burst_up;
    let material_down = by_sd || scaled_down || burst_down;
    let means = match c.ratio {
        r if r.is_finite() => format!("mean {} vs {} (ratio {})", f(mean_new), f(mean_base), f(r)),
        _ if mean_base == 0.0 => format!("mean {} vs {} (the baseline's mean is 0)", f(mean_new), f(mean_base)),
        _ => format!("mean {} vs {}", f(mean_new), f(mean_base)),
    };
    let moved = if effect.is_finite() { format!("{} sd", f((effect * 100.0).round() / 100.0)) } else { "over a constant baseline".to_string() };
    let facts = format!(
        "{means}, moved {moved}, {above} new samples above and {below} below the baseline's range, shift {} ({:.0}% interval {} .. {}), p = {}{p_how}{bursts} ({} new, {} baseline samples)",
        f(mw.estimate),
        s.confidence * 100.0,
        f(mw.lower),
        f(mw.upper),
        f(mw.p_value),
        c.n_new,
        c.n_baseline
    );
    let within = |limit: f64, high: bool| if high { level.is_nan() || level >= limit } else { level.is_nan() || level <= limit };
    let size = |by_sd: bool, burst: bool, word: &str| {
        if by_sd {
            format!("the mean moved more than {} baseline sd", f(s.min_effect))
        } else if burst {
            format!(
                "at least {:.0}% of the new samples far {} every baseline sample, past its far fence",
                MATERIAL_SEPARATED * 100.0,
                if word == "rose" { "above" } else { "below" }
            )
        } else {
            format!(
                "the mean {word} by a factor of {} or more, with at least {:.0}% of the new samples {} the baseline's range",
                f(MATERIAL_RATIO),
                MATERIAL_SEPARATED * 100.0,
                if word == "rose" { "above" } else { "below" }
            )
        }
    };
    if significant_up && material_up && up && increase && within(s.allowed_increase, true) {
        c.class = Class::High;
        c.critical_failure = s.critical && within(s.critical_increase, true);
        c.reason = format!("High: {facts}: significant (p < {}) and material ({})", f(alpha), size(by_sd, burst_up && !scaled_up, "rose"));
    } else if significant_down && material_down && down && decrease && within(s.allowed_decrease, false) {
        c.class = Class::Low;
        c.critical_failure = s.critical && within(s.critical_decrease, false);
        c.reason = format!("Low: {facts}: significant (p < {}) and material ({})", f(alpha), size(by_sd, burst_down && !scaled_down, "fell"));
    } else if !(significant_up || significant_down) {
        c.reason = format!("Pass: {facts}: not significant (p >= {})", f(alpha));
    } else if !(significant_up && material_up || significant_down && material_down) {
        c.reason = format!(
            "Pass: {facts}: significant, but not material (the mean moved at most {} baseline sd, and not by a factor of {} with {:.0}% of the new samples beyond the baseline's range, nor {:.0}% of them past its far fence)",
            f(s.min_effect),
            f(MATERIAL_RATIO),
            MATERIAL_SEPARATED * 100.0,
            MATERIAL_SEPARATED * 100.0
        );
    } else {
        c.reason = format!("Pass: {facts}: not in the direction judged or within the allowed effect size");
    }
    c
}

/// mean(new) / mean(baseline), when both are of one sign and the baseline's is not 0 (NaN
/// otherwise: a ratio over a zero or negative mean says nothing).
fn ratio(new: f64, base: f64) -> f64 {
    if base > 0.0 && new >= 0.0 || base < 0.0 && new <= 0.0 { new / base } else { f64::NAN }
}

/// How many new samples lie beyond every baseline sample and beyond its far fence (Tukey's 3 IQR
/// past the quartiles; past the baseline's range when its IQR is 0), each way, and the chance of at
/// least that many under exchangeability: that the top (bottom) k of all samples are all new,
/// prod_{i<k} (n-i)/(n+m-i), which bounds it since the fence only asks more.
struct Far {
    up: usize,
    p_up: f64,
    down: usize,
    p_down: f64,
}

fn exceedance(new: &[f64], base: &[f64]) -> Far {
    let mut b = base.to_vec();
    b.sort_by(f64::total_cmp);
    let q = |p: f64| b[((b.len() - 1) as f64 * p).round() as usize];
    let (q1, q3, lo, hi) = (q(0.25), q(0.75), b[0], b[b.len() - 1]);
    let spread = if q3 > q1 { q3 - q1 } else { hi - lo };
    let (upper, lower) = ((q3 + 3.0 * spread).max(hi), (q1 - 3.0 * spread).min(lo));
    let up = new.iter().filter(|v| **v > upper).count();
    let down = new.iter().filter(|v| **v < lower).count();
    let (n, m) = (new.len() as f64, base.len() as f64);
    let chance = |k: usize| (0..k).map(|i| (n - i as f64) / (n + m - i as f64)).product::<f64>();
    Far { up, p_up: if up == 0 { 1.0 } else { chance(up) }, down, p_down: if down == 0 { 1.0 } else { chance(down) } }
}

/// The sample standard deviation (0 for fewer than two samples).
fn sd(v: &[f64], mean: f64) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// A metric's place in the score.
#[derive(Debug, Clone)]
pub struct Scored<'a> {
    /// Its group (the check's name unless given).
    pub group: &'a str,
    /// The group's weight (the largest weight given to a check of the group).
    pub weight: f64,
    /// Its classification.
    pub classification: &'a Classification,
}

/// The score out of 100 and its explanation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreResult {
    /// 0..=100; `None` when no compared metric had data.
    pub score: Option<f64>,
    /// Per group: (name, score, weight).
    pub groups: Vec<(String, f64, f64)>,
    /// A critical metric failed: the score is 0.
    pub critical: Option<String>,
}

/// Kayenta's weighted-sum scorer: a group's score is the share of its metrics that passed (metrics
/// without data left out, unless they require data); the total weighs groups with data; a
/// critical failure makes it 0.
pub fn score(metrics: &[(&str, Scored<'_>)]) -> ScoreResult {
    let mut groups: Vec<(String, f64, u32, u32)> = Vec::new();
    let mut critical = None;
    for (name, m) in metrics {
        if m.classification.critical_failure && critical.is_none() {
            critical = Some(format!("critical metric `{name}`: {}", m.classification.reason));
        }
        let i = match groups.iter().position(|g| g.0 == m.group) {
            Some(i) => i,
            None => {
                groups.push((m.group.to_string(), 0.0, 0, 0));
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        g.1 = g.1.max(m.weight);
        match m.classification.class {
            Class::NoData => {}
            Class::Pass => {
                g.2 += 1;
                g.3 += 1;
            }
            _ => g.3 += 1,
        }
    }
    let scored: Vec<(String, f64, f64)> = groups.iter().filter(|g| g.3 > 0).map(|g| (g.0.clone(), 100.0 * g.2 as f64 / g.3 as f64, g.1)).collect();
    let total_weight: f64 = scored.iter().map(|g| g.2).sum();
    let score = if critical.is_some() {
        Some(0.0)
    } else if scored.is_empty() || total_weight <= 0.0 {
        None
    } else {
        Some(scored.iter().map(|g| g.1 * g.2).sum::<f64>() / total_weight)
    };
    ScoreResult { score, groups: scored, critical }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CompareSettings {
        CompareSettings {
            direction: Direction::Increase,
            confidence: 0.98,
            min_effect: 2.5,
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
            critical_increase: 1.0,
            critical_decrease: 1.0,
            critical: false,
            require_data: false,
        }
    }

    #[test]
    fn classifies_shifts_by_direction() {
        let base: Vec<f64> = (0..40).map(|i| 100.0 + (i % 10) as f64).collect();
        let high: Vec<f64> = base.iter().map(|v| v * 1.2).collect();
        assert_eq!(classify(&high, &base, &settings()).class, Class::High);
        assert_eq!(classify(&base, &high, &settings()).class, Class::Pass, "a decrease is fine when only increases are bad");
        let either = CompareSettings { direction: Direction::Either, ..settings() };
        assert_eq!(classify(&base, &high, &either).class, Class::Low);
        assert_eq!(classify(&base, &base, &settings()).class, Class::Pass);
        let nan: Vec<f64> = vec![f64::NAN; 5];
        assert_eq!(classify(&nan, &base, &settings()).class, Class::NoData);
        let strict = CompareSettings { require_data: true, ..settings() };
        assert_eq!(classify(&nan, &base, &strict).class, Class::NoDataFail);
        // Each side one repeated value: Kayenta adds tiny noise, and a real difference still shows.
        assert_eq!(classify(&[5.0; 20], &[4.0; 20], &settings()).class, Class::High);
    }

    #[test]
    fn a_noisy_baseline_does_not_hide_a_change_of_level_the_samples_show() {
        let either = CompareSettings { direction: Direction::Either, ..settings() };
        // A noisy baseline (spikes make its sd as large as its mean); the new window at a third
        // of it, half of its samples below anything the baseline did.
        let base: Vec<f64> = (0..30).map(|i| if i % 10 == 0 { 60.0 } else { 8.0 + (i % 4) as f64 }).collect();
        let new: Vec<f64> = (0..30).map(|i| if i % 2 == 0 { 2.0 + (i % 3) as f64 } else { 8.0 }).collect();
        let c = classify(&new, &base, &either);
        assert_eq!(c.class, Class::Low, "{}", c.reason);
        assert!(c.reason.contains("15 below the baseline's range") && c.reason.contains("by a factor of 2.5 or more"), "{}", c.reason);
        // The same fall with the new samples inside the baseline's range: the sd rule alone, and
        // it is not enough.
        let new: Vec<f64> = (0..30).map(|i| if i % 2 == 0 { 8.0 } else { 9.0 }).collect();
        let c = classify(&new, &base, &either);
        assert_eq!(c.class, Class::Pass, "{}", c.reason);
        assert!(c.reason.contains("significant, but not material"), "{}", c.reason);
        // A negative metric read along the number line: -60 against -20 is a fall.
        let base: Vec<f64> = (0..30).map(|i| -20.0 - (i % 5) as f64).collect();
        let new: Vec<f64> = base.iter().map(|v| v * 3.0).collect();
        assert_eq!(classify(&new, &base, &either).class, Class::Low);
        assert_eq!(classify(&new, &base, &settings()).class, Class::Pass, "a fall is fine when only rises are bad");
    }

    #[test]
    fn a_third_of_the_new_samples_far_beyond_the_baseline_is_material_whatever_the_mean_does() {
        // A noisy baseline (three spikes make its sd about 90); the new window spreads: a third of
        // it far above anything the baseline did, the rest as before. The mean moves about 2 sd and
        // by a factor under 2.5: only the samples show the change.
        let base: Vec<f64> = (0..30).map(|i| if i % 10 == 0 { 400.0 } else { 100.0 + (i % 10) as f64 }).collect();
        let spread = |far: usize| (0..30).map(|i| if i < far { 700.0 + i as f64 } else { 100.0 + (i % 10) as f64 }).collect::<Vec<f64>>();
        let c = classify(&spread(10), &base, &settings());
        assert_eq!(c.class, Class::High, "{}", c.reason);
        assert!(c.ratio < MATERIAL_RATIO, "{}", c.reason);
        assert!(c.reason.contains("at least 33% of the new samples far above every baseline sample"), "{}", c.reason);
        // Under a third far above: significant, and not material.
        let c = classify(&spread(9), &base, &settings());
        assert_eq!(c.class, Class::Pass, "{}", c.reason);
        assert!(c.reason.contains("nor 33% of them past its far fence"), "{}", c.reason);
    }

    #[test]
    fn scores_weighted_groups_and_critical() {
        let pass = Classification::pass(1, 1);
        let high = Classification { class: Class::High, ..pass.clone() };
        let nodata = Classification { class: Class::NoData, ..pass.clone() };
        let m = |g, w, c| Scored { group: g, weight: w, classification: c };
        let r = score(&[("a", m("latency", 3.0, &pass)), ("b", m("latency", 3.0, &high)), ("c", m("errors", 1.0, &pass)), ("d", m("errors", 1.0, &nodata))]);
        // latency: 50 (weight 3); errors: 100 (weight 1; no-data left out) -> (150 + 100) / 4
        assert_eq!(r.score, Some(62.5));
        let crit = Classification { critical_failure: true, ..high.clone() };
        assert_eq!(score(&[("a", m("x", 1.0, &pass)), ("b", m("y", 1.0, &crit))]).score, Some(0.0));
        assert_eq!(score(&[("d", m("x", 1.0, &nodata))]).score, None, "no data is not a pass");
    }
}
