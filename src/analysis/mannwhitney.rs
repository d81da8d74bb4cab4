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
    fn quantiles_and_cdf_agree_with_tables() {
        assert!((normal_quantile(0.01) + 2.326_347_874_040_841).abs() < 1e-12);
        assert!((normal_quantile(0.025) + 1.959_963_984_540_054).abs() < 1e-12);
        assert!((normal_cdf(1.0) - 0.841_344_746_068_542_9).abs() < 1e-14);
        assert!((normal_cdf(-6.0) - 9.865_876_450_376_946e-10).abs() < 1e-20);
    }
}
