//! Next-occurrence computation for a cron expression in an IANA timezone, with the DST rule made
//! explicit: the expression is matched against local wall-clock times (by `croner`, on naive
//! date-times), and each matching wall-clock time is turned into one instant here:
//!
//! - a wall-clock time that exists once fires at that instant;
//! - a wall-clock time that occurs twice (fall back) fires once, at its first occurrence;
//! - a wall-clock time that does not exist (spring forward) fires at the first valid instant after
//!   it, i.e. the moment the clocks jump. Several such times (and a match at the jump itself)
//!   collapse into that one instant, so it fires once.
//!
//! Instants are always whole scheduled seconds, so ticks never drift.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Bound on the candidates examined for one next-occurrence (a repeated hour of an every-second
/// schedule needs 3,600).
const MAX_CANDIDATES: usize = 100_000;

/// A parsed schedule: a cron expression read in a timezone.
#[derive(Clone)]
pub struct Schedule {
    cron: Arc<croner::Cron>,
    tz: Tz,
    expression: String,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule").field("expression", &self.expression).field("timezone", &self.tz.name()).finish()
    }
}

/// Why a schedule could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is invalid.
    #[error("schedule: {0}")]
    Expression(String),
    /// The timezone is not an IANA name.
    #[error("timezone: {0}")]
    Timezone(String),
}

/// Parsed expressions are shared: a parsed `croner::Cron` holds a few KiB of bitfields, and
/// thousands of sources often use a handful of distinct expressions (measured with the cron bench:
/// 10,000 sources over 60 distinct expressions went from 114 MiB to 71 MiB RSS).
fn shared_cron(expression: &str) -> Result<Arc<croner::Cron>, ScheduleError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Weak<croner::Cron>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(cron) = map.get(expression).and_then(Weak::upgrade) {
        return Ok(cron);
    }
    let cron =
        Arc::new(switchyard_schemas::sources::cron::parse_schedule(expression).map_err(ScheduleError::Expression)?);
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(expression.to_owned(), Arc::downgrade(&cron));
    Ok(cron)
}

impl Schedule {
    /// Parses `expression` (5 fields, 6 fields with seconds, or a macro) read in `timezone`.
    ///
    /// # Errors
    /// [`ScheduleError`] naming the part that is wrong.
    pub fn new(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let cron = shared_cron(expression)?;
        let tz = switchyard_schemas::sources::cron::parse_timezone(timezone).map_err(ScheduleError::Timezone)?;
        Ok(Self { cron, tz, expression: expression.to_owned() })
    }

    /// The expression as configured.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The timezone.
    pub const fn timezone(&self) -> Tz {
        self.tz
    }

    /// The instant a matching local wall-clock time fires at (the DST rule above).
    pub fn instant_of(&self, local: NaiveDateTime) -> DateTime<Utc> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => a.with_timezone(&Utc).min(b.with_timezone(&Utc)),
            LocalResult::None => self.end_of_gap(local),
        }
    }

    /// The first instant whose local wall-clock time is at or after `local`, a time inside a gap.
    fn end_of_gap(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let as_utc = Utc.from_utc_datetime(&local);
        let day = TimeDelta::days(1);
        let offset = |u: DateTime<Utc>| {
            TimeDelta::seconds(i64::from(self.tz.offset_from_utc_datetime(&u.naive_utc()).fix().local_minus_utc()))
        };
        let (before, after) = (offset(as_utc - day), offset(as_utc + day));
        // Wall time = instant + offset. Before the jump the offset is `before`, after it `after`.
        let mut lo = (as_utc - after.max(before)).timestamp(); // wall(lo) < local
        let mut hi = (as_utc - before.min(after)).timestamp(); // wall(hi) >= local
        let wall = |s: i64| {
            let u = DateTime::<Utc>::from_timestamp(s, 0).unwrap_or(as_utc);
            u.naive_utc() + offset(u)
        };
        if wall(hi) < local {
            hi = lo.max(hi) + 2 * day.num_seconds();
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if wall(mid) >= local {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        DateTime::<Utc>::from_timestamp(hi, 0).unwrap_or(as_utc)
    }

    /// The first tick strictly after `t`, or `None` when the expression never matches again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Wall-clock times at or before t's own wall-clock time fire at or before t (the mapping
        // is monotonic), so the search starts just after it. Only inside a repeated hour can a
        // later wall-clock time still map to an instant at or before t; those are skipped.
        let mut cursor = t.with_timezone(&self.tz).naive_local();
        for _ in 0..MAX_CANDIDATES {
            let local = self.cron.find_next_occurrence(&cursor, false).ok()?;
            let at = self.instant_of(local);
            if at > t {
                return Some(at);
            }
            cursor = local;
        }
        None
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut cursor = t;
        while out.len() < n {
            let Some(next) = self.next_after(cursor) else { break };
            out.push(next);
            cursor = next;
        }
        out
    }

    /// Whether any tick falls in `(after, until]`.
    pub fn any_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> bool {
        self.next_after(after).is_some_and(|t| t <= until)
    }

    /// The last (at most) `k` ticks in `(after, until]`, oldest first, and whether older ones in
    /// the range were left out. Searches backwards from `until` in doubling windows (from one
    /// hour), so a long outage costs the ticks of the last window or two, not one step per tick.
    pub fn last_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, k: usize) -> (Vec<DateTime<Utc>>, bool) {
        if k == 0 || until <= after {
            return (Vec::new(), self.any_between(after, until));
        }
        let mut window = TimeDelta::hours(1);
        loop {
            let start = if until - after <= window { after } else { until - window };
            let mut ring = std::collections::VecDeque::with_capacity(k + 1);
            let mut count = 0usize;
            let mut cursor = start;
            while let Some(t) = self.next_after(cursor).filter(|t| *t <= until) {
                count += 1;
                ring.push_back(t);
                if ring.len() > k {
                    ring.pop_front();
                }
                cursor = t;
            }
            if count >= k || start == after {
                let older = count > k || (start > after && self.any_between(after, start));
                return (ring.into(), older);
            }
            window = window.checked_mul(2).unwrap_or(TimeDelta::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn utc_every_minute_is_aligned() {
        let s = Schedule::new("* * * * *", "UTC").unwrap();
        assert_eq!(s.next_after(utc("2026-01-01T00:00:30.5Z")), Some(utc("2026-01-01T00:01:00Z")));
        assert_eq!(s.next_after(utc("2026-01-01T00:01:00Z")), Some(utc("2026-01-01T00:02:00Z")));
    }

    #[test]
    fn last_between_keeps_the_most_recent() {
        let s = Schedule::new("* * * * * *", "UTC").unwrap();
        let (ticks, older) = s.last_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-03T00:00:00Z"), 3);
        assert_eq!(ticks, vec![utc("2026-01-02T23:59:58Z"), utc("2026-01-02T23:59:59Z"), utc("2026-01-03T00:00:00Z")]);
        assert!(older);
        let (ticks, older) = s.last_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:00:02Z"), 5);
        assert_eq!(ticks, vec![utc("2026-01-01T00:00:01Z"), utc("2026-01-01T00:00:02Z")]);
        assert!(!older);
        let y = Schedule::new("@yearly", "UTC").unwrap();
        let (ticks, older) = y.last_between(utc("2020-06-01T00:00:00Z"), utc("2026-06-01T00:00:00Z"), 2);
        assert_eq!(ticks, vec![utc("2025-01-01T00:00:00Z"), utc("2026-01-01T00:00:00Z")]);
        assert!(older);
    }
}
