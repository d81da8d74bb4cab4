//! Freeze windows: date ranges and weekly windows in an IANA time zone (DST-aware, with jiff's
//! bundled time zone database), merged when back to back.

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::diag::Diagnostics;
use crate::model::{Freeze, Spanned};

/// A window in force: its name and when it (and any window right after it) ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    /// The window's name, or how it was written.
    pub name: String,
    /// When promotions may go on again.
    pub until: Timestamp,
}

/// The parsed windows of one environment.
#[derive(Debug, Clone)]
pub struct Windows {
    tz: TimeZone,
    ranges: Vec<(Timestamp, Timestamp, String)>,
    /// Minutes from Monday 00:00 of start and end, and a name.
    weekly: Vec<(i32, i32, String)>,
}

const WEEK: i32 = 7 * 1440;

impl Windows {
    /// Parses an environment's `freeze`, recording every mistake at its place; `None` if any.
    pub fn parse(f: &Freeze, diags: &mut Diagnostics) -> Option<Windows> {
        let before = diags.iter().filter(|d| d.severity == crate::diag::Severity::Error).count();
        let tz = match TimeZone::get(&f.timezone.value) {
            Ok(tz) => tz,
            Err(_) => {
                diags.error(
                    f.timezone.pos,
                    format!("unknown time zone `{}`: use an IANA name such as `Europe/Berlin`, `America/New_York` or `UTC`", f.timezone.value),
                );
                TimeZone::UTC
            }
        };
        let mut w = Windows { tz, ranges: Vec::new(), weekly: Vec::new() };
        if f.windows.is_empty() {
            diags.warning(f.timezone.pos, "`freeze` has no windows");
        }
        for win in &f.windows {
            let v = &win.value;
            match (&v.from, &v.to, &v.weekly) {
                (None, None, None) if v.daily.is_some() => {
                    let d = v.daily.as_ref().expect("checked");
                    let (a, b) = (clock_minute(&d.from, diags), clock_minute(&d.to, diags));
                    let mut days = Vec::new();
                    for day in &d.days {
                        match weekday(&day.value) {
                            Some(w) => days.push(i32::from(w.to_monday_zero_offset())),
                            None => diags.error(day.pos, format!("unknown day `{}`: write mon, tue, wed, thu, fri, sat or sun", day.value)),
                        }
                    }
                    if days.is_empty() {
                        days = (0..7).collect();
                    }
                    if let (Some(a), Some(b)) = (a, b) {
                        if a == b {
                            diags.error(d.to.pos, "a daily freeze window needs different start and end");
                        }
                        let length = (b - a).rem_euclid(1440);
                        let name = v.name.clone().unwrap_or_else(|| format!("daily {} → {}", d.from.value, d.to.value));
                        for day in days {
                            let start = day * 1440 + a;
                            w.weekly.push((start, (start + length) % WEEK, name.clone()));
                        }
                    }
                }
                (Some(from), Some(to), None) if v.daily.is_none() => {
                    let (a, b) = (w.instant(from, diags), w.instant(to, diags));
                    if let (Some(a), Some(b)) = (a, b) {
                        if b <= a {
                            diags.error(to.pos, format!("freeze window ends (`{}`) before it starts (`{}`)", to.value, from.value));
                        }
                        w.ranges.push((a, b, v.name.clone().unwrap_or_else(|| format!("{} → {}", from.value, to.value))));
                    }
                }
                (None, None, Some(wk)) if v.daily.is_none() => {
                    if let (Some(a), Some(b)) = (weekly_minute(&wk.from, diags), weekly_minute(&wk.to, diags)) {
                        if a == b {
                            diags.error(wk.to.pos, "a weekly freeze window needs different start and end");
                        }
                        w.weekly.push((a, b, v.name.clone().unwrap_or_else(|| format!("weekly {} → {}", wk.from.value, wk.to.value))));
                    }
                }
                _ => diags.error(
                    win.pos,
                    "a freeze window is one of `{from, to}` (dates or date-times), `{weekly: {from: fri 18:00, to: mon 08:00}}` or `{daily: {from: \"22:00\", to: \"06:00\"}}`",
                ),
            }
        }
        let after = diags.iter().filter(|d| d.severity == crate::diag::Severity::Error).count();
        (after == before).then_some(w)
    }

    /// `2026-12-20` (midnight) or `2026-12-20 18:00` in the window's time zone.
    fn instant(&self, s: &Spanned<String>, diags: &mut Diagnostics) -> Option<Timestamp> {
        let text = s.value.trim().replacen(' ', "T", 1);
        let dt = if text.len() == 10 { text.parse::<Date>().map(|d| d.at(0, 0, 0, 0)) } else { text.parse::<DateTime>() };
        match dt.and_then(|dt| dt.to_zoned(self.tz.clone())) {
            Ok(z) => Some(z.timestamp()),
            Err(_) => {
                diags.error(s.pos, format!("malformed date `{}`: write `2026-12-20` or `2026-12-20 18:00` (in the window's `timezone`)", s.value));
                None
            }
        }
    }

    /// The window in force at `now`, if any, with when it ends (windows back to back are merged).
    pub fn active(&self, now: Timestamp) -> Option<Frozen> {
        let mut found: Option<Frozen> = None;
        let mut at = now;
        for _ in 0..64 {
            let Some((name, end)) = self.covering(at) else { break };
            found = Some(Frozen { name: found.map_or(name, |f| f.name), until: end });
            at = end;
        }
        found
    }

    fn covering(&self, t: Timestamp) -> Option<(String, Timestamp)> {
        if let Some((_, b, n)) = self.ranges.iter().find(|(a, b, _)| *a <= t && t < *b) {
            return Some((n.clone(), *b));
        }
        let z = t.to_zoned(self.tz.clone());
        let m = minute_of_week(&z);
        for (a, b, n) in &self.weekly {
            let inside = if a < b { *a <= m && m < *b } else { m >= *a || m < *b };
            if inside {
                let ahead = (b - m).rem_euclid(WEEK);
                return Some((n.clone(), self.local_after(&z, ahead)));
            }
        }
        None
    }

    /// The instant `minutes` of wall-clock time after `z`'s local time (through DST changes, the
    /// wall clock decides: `mon 08:00` is 08:00 whatever the offset).
    fn local_after(&self, z: &Zoned, minutes: i32) -> Timestamp {
        let base = z.datetime().with().second(0).subsec_nanosecond(0).build().unwrap_or(z.datetime());
        let dt = base.checked_add(jiff::Span::new().minutes(i64::from(minutes))).unwrap_or(base);
        dt.to_zoned(self.tz.clone()).map(|z| z.timestamp()).unwrap_or(z.timestamp())
    }
}

fn minute_of_week(z: &Zoned) -> i32 {
    i32::from(z.weekday().to_monday_zero_offset()) * 1440 + i32::from(z.hour()) * 60 + i32::from(z.minute())
}

/// `mon`, `Monday`, ...
fn weekday(s: &str) -> Option<Weekday> {
    Some(match s.trim().to_ascii_lowercase().get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// `18:00` as minutes from midnight.
fn hh_mm(s: &str) -> Option<i32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

/// `fri 18:00` as minutes from Monday 00:00.
fn weekly_minute(s: &Spanned<String>, diags: &mut Diagnostics) -> Option<i32> {
    let parsed = s.value.trim().split_once(' ').and_then(|(day, time)| Some(i32::from(weekday(day)?.to_monday_zero_offset()) * 1440 + hh_mm(time)?));
    if parsed.is_none() {
        diags.error(s.pos, format!("malformed weekly time `{}`: write a day and a time, like `fri 18:00` or `mon 08:00`", s.value));
    }
    parsed
}

/// `22:00` as minutes from midnight.
fn clock_minute(s: &Spanned<String>, diags: &mut Diagnostics) -> Option<i32> {
    let parsed = hh_mm(&s.value);
    if parsed.is_none() {
        diags.error(s.pos, format!("malformed time `{}`: write hours and minutes, like `22:00` (quote it in YAML)", s.value));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FreezeWindow, OnFreeze, Weekly};

    fn sp(s: &str) -> Spanned<String> {
        Spanned::new(Default::default(), s.to_string())
    }

    fn freeze(tz: &str, windows: Vec<FreezeWindow>) -> Freeze {
        Freeze {
            timezone: sp(tz),
            windows: windows.into_iter().map(|w| Spanned::new(Default::default(), w)).collect(),
            on_freeze: OnFreeze::Wait,
            break_glass: vec![],
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_date_range_starts_at_local_midnight() {
        let f = freeze("Europe/Berlin", vec![FreezeWindow { from: Some(sp("2026-12-20")), to: Some(sp("2027-01-04 08:00")), ..Default::default() }]);
        let w = Windows::parse(&f, &mut Diagnostics::new("p")).unwrap();
        // Midnight in Berlin is 23:00 UTC the day before (winter, +01:00).
        assert!(w.active(ts("2026-12-19T22:59:59Z")).is_none());
        let f = w.active(ts("2026-12-19T23:00:00Z")).unwrap();
        assert_eq!(f.until, ts("2027-01-04T07:00:00Z"));
    }

    #[test]
    fn a_weekend_window_across_new_yorks_dst_change() {
        // DST starts on Sunday 2026-03-08 in New York: Friday is -05:00, Monday -04:00.
        let weekly = Weekly { from: sp("fri 18:00"), to: sp("mon 08:00") };
        let f = freeze("America/New_York", vec![FreezeWindow { weekly: Some(weekly), ..Default::default() }]);
        let w = Windows::parse(&f, &mut Diagnostics::new("p")).unwrap();
        assert!(w.active(ts("2026-03-06T22:59:00Z")).is_none(), "17:59 Friday in New York");
        let f = w.active(ts("2026-03-06T23:00:00Z")).unwrap();
        assert_eq!(f.until, ts("2026-03-09T12:00:00Z"), "Monday 08:00 EDT");
        assert!(w.active(ts("2026-03-09T12:00:00Z")).is_none());
    }

    #[test]
    fn nights_across_midnight_on_listed_days() {
        let daily = crate::model::Daily { from: sp("22:00"), to: sp("06:00"), days: vec![sp("fri"), sp("sat")] };
        let f = freeze("Europe/Berlin", vec![FreezeWindow { daily: Some(daily), ..Default::default() }]);
        let w = Windows::parse(&f, &mut Diagnostics::new("p")).unwrap();
        // Friday 2026-11-27 23:30 in Berlin (+01:00) is frozen until Saturday 06:00, and Saturday
        // night's window does not start before 22:00.
        assert_eq!(w.active(ts("2026-11-27T22:30:00Z")).unwrap().until, ts("2026-11-28T05:00:00Z"));
        assert!(w.active(ts("2026-11-28T12:00:00Z")).is_none());
        assert!(w.active(ts("2026-11-26T22:30:00Z")).is_none(), "Thursday night is not listed");
        // Saturday night runs into Sunday morning.
        assert_eq!(w.active(ts("2026-11-29T04:59:00Z")).unwrap().until, ts("2026-11-29T05:00:00Z"));
    }

    #[test]
    fn back_to_back_windows_merge_and_mistakes_are_all_reported() {
        let f = freeze(
            "UTC",
            vec![
                FreezeWindow { from: Some(sp("2026-12-20")), to: Some(sp("2026-12-24")), ..Default::default() },
                FreezeWindow { from: Some(sp("2026-12-24")), to: Some(sp("2026-12-27")), ..Default::default() },
            ],
        );
        let w = Windows::parse(&f, &mut Diagnostics::new("p")).unwrap();
        assert_eq!(w.active(ts("2026-12-21T00:00:00Z")).unwrap().until, ts("2026-12-27T00:00:00Z"));
        let bad = freeze(
            "Mars/Olympus",
            vec![
                FreezeWindow { from: Some(sp("2026-13-01")), to: Some(sp("2026-12-24")), ..Default::default() },
                FreezeWindow { weekly: Some(Weekly { from: sp("friday"), to: sp("mon 25:00") }), ..Default::default() },
            ],
        );
        let mut d = Diagnostics::new("p");
        assert!(Windows::parse(&bad, &mut d).is_none());
        let msgs: Vec<String> = d.iter().map(|x| x.message.clone()).collect();
        assert_eq!(msgs.len(), 4, "{msgs:#?}");
    }
}
