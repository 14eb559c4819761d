//! UTC calendar arithmetic on Unix seconds: civil dates, HTTP dates, and the boundaries
//! at which daily and monthly quotas reset. No time zone but UTC, no leap seconds.

const DAY: u64 = 86_400;

/// A time of day in UTC, as minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TimeOfDay(pub u32);

impl TimeOfDay {
    /// Reads `HH:MM` (24-hour clock); why it cannot, otherwise.
    pub fn parse(text: &str) -> Result<TimeOfDay, String> {
        let refused = || format!("{text:?} is not a time of day as HH:MM (00:00 to 23:59)");
        let (h, m) = text.split_once(':').ok_or_else(refused)?;
        let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(h) || !two_digits(m) {
            return Err(refused());
        }
        let (h, m): (u32, u32) = (
            h.parse().map_err(|_| refused())?,
            m.parse().map_err(|_| refused())?,
        );
        if h > 23 || m > 59 {
            return Err(refused());
        }
        Ok(TimeOfDay(h * 60 + m))
    }

    pub(crate) fn seconds(self) -> u64 {
        u64::from(self.0) * 60
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of a day number since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Which calendar stretch a quota counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    Day,
    Month,
}

impl Period {
    /// The name used in configuration and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "per_day",
            Period::Month => "per_month",
        }
    }

    /// The Unix second at which the stretch holding `unix` began, and the one at which
    /// it ends: days begin at `reset` UTC, months on the 1st at `reset`.
    pub fn bounds(self, unix: u64, reset: TimeOfDay) -> (u64, u64) {
        // Shift so that every stretch starts at a midnight, then shift back.
        let shifted = unix.saturating_sub(reset.seconds());
        let day = (shifted / DAY) as i64;
        let (start_day, end_day) = match self {
            Period::Day => (day, day + 1),
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (days_from_civil(y, m, 1), days_from_civil(ny, nm, 1))
            }
        };
        let at = |d: i64| (d.max(0) as u64) * DAY + reset.seconds();
        (at(start_day), at(end_day))
    }
}

/// Unix seconds of an IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110).
pub(crate) fn http_date(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?.parse::<u32>().ok()?,
        parts.next()?,
        parts.next()?.parse::<i64>().ok()?,
        parts.next()?,
        parts.next()?,
    );
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let mut hms = time.split(':').map(|n| n.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if zone != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    if !(1970..=9999).contains(&year) || parts.next().is_some() {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * DAY + h * 3_600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(y: i64, mo: u32, d: u32, h: u64, mi: u64) -> u64 {
        days_from_civil(y, mo, d) as u64 * DAY + h * 3600 + mi * 60
    }

    #[test]
    fn http_dates_read_as_unix_seconds() {
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(http_date("Sun, 32 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(http_date("soon"), None);
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1, 0, 59, 60, 365, 10_957, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn times_of_day_are_hh_mm() {
        assert_eq!(TimeOfDay::parse("00:00"), Ok(TimeOfDay(0)));
        assert_eq!(TimeOfDay::parse("23:59"), Ok(TimeOfDay(1439)));
        for bad in [
            "24:00", "7:30", "07:60", "0730", "", "07:3O", " 07:30", "-1:00",
        ] {
            let e = TimeOfDay::parse(bad).unwrap_err();
            assert!(e.contains("HH:MM"), "{bad}: {e}");
        }
    }

    #[test]
    fn days_reset_at_their_time_not_a_day_after_start() {
        let reset = TimeOfDay(7 * 60 + 30);
        let before = unix(2026, 12, 1, 7, 29);
        assert_eq!(
            Period::Day.bounds(before, reset),
            (unix(2026, 11, 30, 7, 30), unix(2026, 12, 1, 7, 30))
        );
        let after = unix(2026, 12, 1, 7, 30);
        assert_eq!(
            Period::Day.bounds(after, reset),
            (unix(2026, 12, 1, 7, 30), unix(2026, 12, 2, 7, 30))
        );
    }

    #[test]
    fn months_reset_on_the_first_across_years_and_leap_days() {
        let midnight = TimeOfDay(0);
        assert_eq!(
            Period::Month.bounds(unix(2026, 12, 31, 23, 59), midnight),
            (unix(2026, 12, 1, 0, 0), unix(2027, 1, 1, 0, 0))
        );
        assert_eq!(
            Period::Month.bounds(unix(2028, 2, 29, 12, 0), midnight),
            (unix(2028, 2, 1, 0, 0), unix(2028, 3, 1, 0, 0))
        );
        // Before the reset time on the 1st, it is still the previous month.
        let six = TimeOfDay(6 * 60);
        assert_eq!(
            Period::Month.bounds(unix(2027, 1, 1, 5, 0), six),
            (unix(2026, 12, 1, 6, 0), unix(2027, 1, 1, 6, 0))
        );
    }
}
