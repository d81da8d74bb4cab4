//! The one clock: what time it is (jiff's `Timestamp`), as Unix milliseconds where it is stored,
//! and as RFC 3339 where a person or a policy reads it.

use std::time::Duration;

use jiff::Timestamp;

/// Now.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// Now, in milliseconds since the Unix epoch (what the state stores).
pub fn now_ms() -> i64 {
    now().as_millisecond()
}

/// Unix milliseconds as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()).unwrap_or_else(|_| ms.to_string())
}

/// `1h2m3s`-style.
pub fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
