//! The one clock: what time it is (jiff's `Timestamp`), as Unix milliseconds where it is stored,
//! and as RFC 3339 where a person or a policy reads it.

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
