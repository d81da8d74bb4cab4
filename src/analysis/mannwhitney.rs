//! The Mann-Whitney U test with a confidence interval of the location shift, as Kayenta computes it
//! (R's `wilcox.test(x, y, conf.int = TRUE, exact = FALSE, correct = TRUE)`).

/// The test's result for `x` (the new version) against `y` (the baseline).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U statistic of `x`: the number of pairs (x_i, y_j) with x_i > y_j, ties counting one half.
    pub u: f64,
    /// Two-sided p-value, normal approximation with tie and continuity correction.
    pub p_value: f64,
    /// Lower end of the confidence interval of the shift x - y.
    pub lower: f64,
    /// Upper end.
    pub upper: f64,
    /// The Hodges-Lehmann shift estimate: the median of all differences x_i - y_j.
    pub estimate: f64,
}

/// (U of x - mu against y minus its mean under the null, its standard deviation). `x` and `y`
/// are sorted: one merge, O(n + m), with average ranks and the tie term of the combined sample.
fn statistic(x: &[f64], y: &[f64], mu: f64) -> (f64, f64) {
    let (n, m) = (x.len() as f64, y.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut rank = 0.0; // ranks given so far
    let mut x_ranks = 0.0;
    let mut ties = 0.0;
    while i < x.len() || j < y.len() {
        let v = match (x.get(i).map(|a| a - mu), y.get(j)) {
            (Some(a), Some(&b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => unreachable!(),
        };
        let (mut in_x, mut in_y) = (0.0, 0.0);
        while i < x.len() && x[i] - mu == v {
            in_x += 1.0;
            i += 1;
        }
        while j < y.len() && y[j] == v {
            in_y += 1.0;
            j += 1;
        }
        let t = in_x + in_y;
        let avg = rank + (t + 1.0) / 2.0;
        x_ranks += avg * in_x;
        ties += t * t * t - t;
        rank += t;
    }
    let dz = x_ranks - n * (n + 1.0) / 2.0 - n * m / 2.0;
    let sigma = ((n * m / 12.0) * ((n + m + 1.0) - ties / ((n + m) * (n + m - 1.0)))).sqrt();
    (dz, sigma)
}

/// The continuity-corrected z of the shift `mu`, minus `quantile` (Kayenta's `wilcoxonDiff`).
fn diff(x: &[f64], y: &[f64], mu: f64, quantile: f64) -> f64 {
    let (dz, sigma) = statistic(x, y, mu);
    let correction = if dz == 0.0 { 0.0 } else { dz.signum() * 0.5 };
    (dz - correction) / sigma - quantile
}

/// The shift where `diff` crosses zero, by bisection (the function is a non-increasing step
/// function of the shift, so this finds the step Kayenta's Brent solver finds).
fn root(x: &[f64], y: &[f64], quantile: f64, lo: f64, hi: f64) -> f64 {
    let (f_lo, f_hi) = (diff(x, y, lo, quantile), diff(x, y, hi, quantile));
    if f_lo <= 0.0 {
        return lo;
    }
    if f_hi >= 0.0 {
        return hi;
    }
    let (mut a, mut b) = (lo, hi);
    let scale = lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE);
    for _ in 0..200 {
        let mid = a + (b - a) / 2.0;
        if b - a <= scale * 1e-12 || mid == a || mid == b {
            break;
        }
        if diff(x, y, mid, quantile) > 0.0 {
            a = mid;
        } else {
            b = mid;
        }
    }
    a + (b - a) / 2.0
}

/// The standard normal quantile (Acklam's algorithm refined by one Halley step; |error| < 1e-15).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
    const B: [f64; 5] = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let x = if p < 0.02425 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - 0.02425 {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let e = normal_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// The standard normal CDF, through musl's erfc (the `libm` crate).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Runs the test; `None` when a sample is empty or every observation is the same value (no
/// interval can be computed: Kayenta's "all observations are tied").
pub fn test(x: &[f64], y: &[f64], confidence: f64) -> Option<MannWhitney> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| v.is_nan()) {
        return None;
    }
    let mut xs = x.to_vec();
    let mut ys = y.to_vec();
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    let (x, y) = (&xs[..], &ys[..]);
    let (dz, sigma) = statistic(x, y, 0.0);
    if sigma == 0.0 || !sigma.is_finite() {
        return None;
    }
    let (n, m) = (x.len() as f64, y.len() as f64);
    let u = dz + n * m / 2.0;
    let correction = if dz == 0.0 { 0.0 } else { dz.signum() * 0.5 };
    let z = (dz - correction) / sigma;
    let p_value = (2.0 * normal_cdf(-z.abs())).min(1.0);

    let lo = x.iter().copied().fold(f64::INFINITY, f64::min) - y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max) - y.iter().copied().fold(f64::INFINITY, f64::min);
    let zq = normal_quantile((1.0 - confidence) / 2.0);
    Some(MannWhitney {
        u,
        p_value,
        lower: root(x, y, -zq, lo, hi),
        upper: root(x, y, zq, lo, hi),
        estimate: hodges_lehmann(x, y).unwrap_or_else(|| root(x, y, 0.0, lo, hi)),
    })
}

/// How the p-value of a small or heavily tied comparison was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exactness {
    /// Every assignment of the pooled samples to the two sides counted.
    Exact,
    /// A fixed number of random assignments (deterministic seed).
    Permutation,
}

/// Draws of a permutation test.
const DRAWS: usize = 20_000;

/// The two-sided p-value of the rank-sum statistic (mid-ranks for ties) over the assignments of
/// the pooled samples to the sides, where the normal approximation is least to be trusted: fewer
/// than 20 samples in all, or a quarter or more of them one tied value (at most 200 samples; above
/// that the tie-corrected approximation holds). Exact when the assignments are at most 50,000;
/// else 20,000 random ones, p = (k + 1) / (draws + 1). `None`: the approximation is used.
pub fn permutation_p(x: &[f64], y: &[f64]) -> Option<(f64, Exactness)> {
    let (n, m) = (x.len(), y.len());
    let total = n + m;
    if n == 0 || m == 0 || total > 200 {
        return None;
    }
    let mut pooled: Vec<(f64, bool)> = x.iter().map(|v| (*v, true)).chain(y.iter().map(|v| (*v, false))).collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mid-ranks, and the largest tie group.
    let mut ranks = vec![0.0; total];
    let (mut i, mut biggest) = (0, 0);
    while i < total {
        let mut j = i;
        while j + 1 < total && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        ranks[i..=j].fill(mid);
        biggest = biggest.max(j - i + 1);
        i = j + 1;
    }
    if total >= 20 && biggest * 4 < total {
        return None;
    }
    let observed: f64 = pooled.iter().zip(&ranks).filter(|((_, in_x), _)| *in_x).map(|(_, r)| r).sum();
    let centre = n as f64 * (total as f64 + 1.0) / 2.0;
    let far = (observed - centre).abs() - 1e-9;
    let assignments = (0..n).fold(1f64, |c, k| c * (total - k) as f64 / (k + 1) as f64);
    if assignments <= 50_000.0 {
        // Every n-subset of the ranks, in lexicographic order.
        let mut pick: Vec<usize> = (0..n).collect();
        let (mut at_least, mut all) = (0u64, 0u64);
        loop {
            let sum: f64 = pick.iter().map(|&k| ranks[k]).sum();
            all += 1;
            at_least += u64::from((sum - centre).abs() >= far);
            let Some(k) = (0..n).rev().find(|&k| pick[k] < total - n + k) else { break };
            pick[k] += 1;
            for l in k + 1..n {
                pick[l] = pick[l - 1] + 1;
            }
        }
        return Some((at_least as f64 / all as f64, Exactness::Exact));
    }
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut r = ranks.clone();
    let mut at_least = 0usize;
    for _ in 0..DRAWS {
        // A partial Fisher-Yates shuffle: the first n places are a random n-subset.
        for k in 0..n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let j = k + (s % (total - k) as u64) as usize;
            r.swap(k, j);
        }
        let sum: f64 = r[..n].iter().sum();
        at_least += usize::from((sum - centre).abs() >= far);
    }
    Some(((at_least + 1) as f64 / (DRAWS + 1) as f64, Exactness::Permutation))
}

/// The median of all pairwise differences, when there are at most 4 million of them (else `None`:
/// the caller takes the root of the statistic, which lies within the same middle step).
fn hodges_lehmann(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len().saturating_mul(y.len()) > 4_000_000 {
        return None;
    }
    let mut d: Vec<f64> = x.iter().flat_map(|a| y.iter().map(move |b| a - b)).collect();
    let n = d.len();
    let (_, hi, _) = d.select_nth_unstable_by(n / 2, f64::total_cmp);
    let hi = *hi;
    if n % 2 == 1 {
        return Some(hi);
    }
    let lo = d[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo + hi) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_samples_get_their_exact_p_value() {
        // Three against three, all higher: 2 of the 20 assignments are as extreme (two-sided).
        let (p, how) = permutation_p(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(how, Exactness::Exact);
        assert!((p - 0.1).abs() < 1e-12, "{p}");
        // Identical samples: nothing is more extreme than what was seen.
        let (p, _) = permutation_p(&[1.0, 2.0], &[1.0, 2.0]).unwrap();
        assert!((p - 1.0).abs() < 1e-12, "{p}");
        // Large and untied: the approximation is used.
        let x: Vec<f64> = (0..30).map(f64::from).collect();
        let y: Vec<f64> = (0..30).map(|i| f64::from(i) + 0.5).collect();
        assert!(permutation_p(&x, &y).is_none());
    }

    #[test]
    fn heavy_ties_get_a_permutation_p_value_close_to_the_exact_one() {
        // 40 against 40, mostly zeros: the permutation p of a clear difference is small, of none
        // large, and repeatable (fixed seed).
        let base: Vec<f64> = (0..40).map(|i| if i % 10 == 0 { 1.0 } else { 0.0 }).collect();
        let more: Vec<f64> = (0..40).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect();
        let (p, how) = permutation_p(&more, &base).unwrap();
        assert_eq!(how, Exactness::Permutation);
        assert!(p < 0.01, "{p}");
        assert_eq!(permutation_p(&more, &base).unwrap().0, p);
        let (p, _) = permutation_p(&base, &base.iter().rev().copied().collect::<Vec<_>>()).unwrap();
        assert!(p > 0.9, "{p}");
    }

    #[test]
    fn quantiles_and_cdf_agree_with_tables() {
        assert!((normal_quantile(0.01) + 2.326_347_874_040_841).abs() < 1e-12);
        assert!((normal_quantile(0.025) + 1.959_963_984_540_054).abs() < 1e-12);
        assert!((normal_cdf(1.0) - 0.841_344_746_068_542_9).abs() < 1e-14);
        assert!((normal_cdf(-6.0) - 9.865_876_450_376_946e-10).abs() < 1e-20);
    }
}
