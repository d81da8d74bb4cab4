//! The Mann-Whitney test against reference values computed by scipy
//! (tests/fixtures/mannwhitney/reference.py says how; reference.json holds the values).

use promote::analysis::mannwhitney;

#[test]
fn mann_whitney_matches_scipy() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mannwhitney/reference.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    let nums = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let (x, y) = (nums(&c["x"]), nums(&c["y"]));
        let r = mannwhitney::test(&x, &y, c["confidence"].as_f64().unwrap()).unwrap();
        let close = |got: f64, want: &serde_json::Value, tol: f64, what: &str| {
            let want = want.as_f64().unwrap();
            assert!((got - want).abs() <= tol * want.abs().max(1.0), "{name}: {what} = {got}, scipy says {want}");
        };
        close(r.u, &c["u"], 0.0, "U");
        close(r.p_value, &c["p"], 1e-9, "p-value");
        close(r.estimate, &c["estimate"], 1e-12, "Hodges-Lehmann estimate");
        let scale = x.iter().chain(&y).fold(0.0f64, |m, v| m.max(v.abs()));
        close(r.lower, &c["lower"], 1e-7 * scale, "interval lower end");
        close(r.upper, &c["upper"], 1e-7 * scale, "interval upper end");
    }
}
