//! Calls charged to one provider by calendar day (UTC), by month and over the last 24
//! hours: what the dashboard's "cost today / this month" multiply by the price.

use std::time::Duration;

use parking_lot::Mutex;

use crate::foundation::calendar::{Period, TimeOfDay};
use crate::policy::buckets::Buckets;

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Ledger {
    /// Unix seconds the counted day and month began and end.
    day: (u64, u64),
    today: u64,
    month: (u64, u64),
    this_month: u64,
    hours: Buckets<1, 25>,
    total: u64,
}

/// Calls charged, by calendar stretch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Charged {
    pub today: u64,
    pub this_month: u64,
    pub last_24h: u64,
    pub total: u64,
}

#[derive(Debug)]
pub(crate) struct CostLedger(Mutex<Ledger>);

impl Default for CostLedger {
    fn default() -> Self {
        CostLedger(Mutex::new(Ledger {
            day: (0, 0),
            today: 0,
            month: (0, 0),
            this_month: 0,
            hours: Buckets::new(HOUR),
            total: 0,
        }))
    }
}

impl CostLedger {
    /// Counts one charged call at Unix time `unix`.
    pub fn charge(&self, unix: Duration) {
        let mut l = self.0.lock();
        l.roll(unix);
        l.today += 1;
        l.this_month += 1;
        l.hours.add(unix, [1]);
        l.total += 1;
    }

    pub fn charged(&self, unix: Duration) -> Charged {
        let mut l = self.0.lock();
        l.roll(unix);
        Charged {
            today: l.today,
            this_month: l.this_month,
            last_24h: l.hours.sum(unix, 24, true)[0],
            total: l.total,
        }
    }
}

impl Ledger {
    /// Starts a new day or month when `unix` is outside the counted one; the calendar
    /// is consulted only then, not on every charge.
    fn roll(&mut self, unix: Duration) {
        let secs = unix.as_secs();
        let outside = |(start, end): (u64, u64)| secs < start || secs >= end;
        if outside(self.day) {
            self.day = Period::Day.bounds(secs, TimeOfDay(0));
            self.today = 0;
        }
        if outside(self.month) {
            self.month = Period::Month.bounds(secs, TimeOfDay(0));
            self.this_month = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::calendar::days_from_civil;

    fn at(y: i64, mo: u32, d: u32, h: u64) -> Duration {
        Duration::from_secs(days_from_civil(y, mo, d) as u64 * 86_400 + h * 3600)
    }

    #[test]
    fn days_months_and_the_last_24_hours_count_apart() {
        let ledger = CostLedger::default();
        ledger.charge(at(2026, 11, 30, 20));
        ledger.charge(at(2026, 12, 1, 1));
        ledger.charge(at(2026, 12, 1, 2));
        assert_eq!(
            ledger.charged(at(2026, 12, 1, 3)),
            Charged {
                today: 2,
                this_month: 2,
                last_24h: 3,
                total: 3
            }
        );
        assert_eq!(ledger.charged(at(2026, 12, 2, 3)).last_24h, 0);
        assert_eq!(ledger.charged(at(2026, 12, 2, 3)).this_month, 2);
    }
}
