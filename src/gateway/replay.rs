//! The replay bound after downtime (`bridge.replay`): of the rows missed while the bridge was away,
//! only the newest `maxRows` that are younger than `maxAgeMinutes` are dispatched; the rest are
//! counted and stepped over, never dispatched silently: one summary line per catch-up, no write or
//! log line per row (docs/reliability.md, "Catching up after downtime").

use chrono::{DateTime, Duration, Utc};

use crate::config::ReplayConfig;

/// What to do with one row of the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Dispatch,
    /// Beyond `maxRows` missed rows.
    TooMany,
    /// Older than `maxAgeMinutes`.
    TooOld,
}

/// The bound of one session, fixed when it starts.
#[derive(Debug, Clone)]
pub struct ReplayBound {
    /// Rows at or below this ROWID are beyond `maxRows`.
    floor: i64,
    /// The newest ROWID when the session started: rows after it are live and always dispatched
    /// (their timestamps come from the Mac's clock, which need not agree with ours).
    backlog_end: i64,
    oldest: DateTime<Utc>,
    pub too_many: u64,
    pub too_old: u64,
    /// The lowest and highest ROWID skipped, for the summary.
    skipped_range: Option<(i64, i64)>,
}

impl ReplayBound {
    /// `cursor` is the last handled ROWID, `newest` the newest ROWID on the Mac now.
    pub fn new(config: &ReplayConfig, cursor: i64, newest: i64, now: DateTime<Utc>) -> Self {
        let rows = i64::try_from(config.max_rows).unwrap_or(i64::MAX);
        let minutes = i64::try_from(config.max_age_minutes).unwrap_or(i64::MAX / 60_000);
        Self {
            floor: cursor.max(newest.saturating_sub(rows)),
            backlog_end: newest,
            oldest: Duration::try_minutes(minutes)
                .and_then(|age| now.checked_sub_signed(age))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            too_many: 0,
            too_old: 0,
            skipped_range: None,
        }
    }

    /// Rows at or below this ROWID are beyond `maxRows`: their content does not matter.
    pub fn floor(&self) -> i64 {
        self.floor
    }

    /// The newest ROWID when the session started: past it, rows are live.
    pub fn backlog_end(&self) -> i64 {
        self.backlog_end
    }

    /// The ROWIDs of the first and last skipped row.
    pub fn skipped_range(&self) -> Option<(i64, i64)> {
        self.skipped_range
    }

    fn note_skip(&mut self, rowid: i64) {
        self.skipped_range = Some(match self.skipped_range {
            None => (rowid, rowid),
            Some((low, high)) => (low.min(rowid), high.max(rowid)),
        });
    }

    /// Judge a row (and count it when it is skipped).
    pub fn judge(&mut self, rowid: i64, created_at: &str) -> Verdict {
        if rowid > self.backlog_end {
            return Verdict::Dispatch;
        }
        if rowid <= self.floor {
            self.too_many += 1;
            self.note_skip(rowid);
            return Verdict::TooMany;
        }
        // An unparsable timestamp is not evidence of age: dispatch.
        let old = DateTime::parse_from_rfc3339(created_at).is_ok_and(|t| t.with_timezone(&Utc) < self.oldest);
        if old {
            self.too_old += 1;
            self.note_skip(rowid);
            return Verdict::TooOld;
        }
        Verdict::Dispatch
    }

    pub fn skipped(&self) -> u64 {
        self.too_many + self.too_old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    const FRESH: &str = "2026-11-24T11:59:00Z";
    const STALE: &str = "2026-11-24T09:00:00Z";

    #[test]
    fn replays_only_the_newest_max_rows_of_the_backlog() {
        let config = ReplayConfig {
            max_rows: 3,
            max_age_minutes: 120,
        };
        let mut bound = ReplayBound::new(&config, 10, 20, now());
        let verdicts: Vec<Verdict> = (11..=20).map(|id| bound.judge(id, FRESH)).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Dispatch).count(), 3);
        assert_eq!(
            verdicts[6],
            Verdict::TooMany,
            "row 17 is the last one beyond the bound"
        );
        assert_eq!(verdicts[7], Verdict::Dispatch);
        assert_eq!(bound.too_many, 7);
        assert_eq!(bound.skipped_range(), Some((11, 17)));
        assert_eq!((bound.floor(), bound.backlog_end()), (17, 20));
    }

    #[test]
    fn skips_old_backlog_but_never_live_rows() {
        let config = ReplayConfig {
            max_rows: 500,
            max_age_minutes: 120,
        };
        let mut bound = ReplayBound::new(&config, 10, 12, now());
        assert_eq!(bound.judge(11, STALE), Verdict::TooOld);
        assert_eq!(bound.judge(12, FRESH), Verdict::Dispatch);
        assert_eq!(
            bound.judge(13, STALE),
            Verdict::Dispatch,
            "live rows are never judged by age"
        );
        assert_eq!(bound.judge(14, "not a time"), Verdict::Dispatch);
        assert_eq!(bound.skipped(), 1);
    }

    #[test]
    fn zero_rows_replays_nothing_and_a_short_backlog_is_untouched() {
        let config = ReplayConfig {
            max_rows: 0,
            max_age_minutes: 120,
        };
        let mut bound = ReplayBound::new(&config, 10, 12, now());
        assert_eq!(bound.judge(12, FRESH), Verdict::TooMany);
        let config = ReplayConfig {
            max_rows: 500,
            max_age_minutes: u64::MAX,
        };
        let mut bound = ReplayBound::new(&config, 10, 12, now());
        assert_eq!(bound.judge(11, "1970-01-01T00:00:00Z"), Verdict::Dispatch);
        assert_eq!(bound.backlog_end(), 12);
    }
}
