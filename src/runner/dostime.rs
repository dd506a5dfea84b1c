//! Conversions between Unix time and the MS-DOS date/time that zip entries carry.
//!
//! Python's `stream_dir` stores mtimes as *local* time clamped to [1980, 2107] and
//! `unstream_dir` reads them back as local time (spec §0.3/§0.4). Both ends of a receptor
//! job run with TZ=UTC in practice, so this module uses UTC on both sides and never consults
//! the process time zone. The civil-date arithmetic is Howard Hinnant's `days_from_civil`.

/// A broken-down UTC date and time (seconds are 0..=59; DOS halves them on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    /// 0..=23
    pub hour: u8,
    /// 0..=59
    pub minute: u8,
    /// 0..=59
    pub second: u8,
}

/// The earliest time a DOS timestamp can hold (1980-01-01 00:00:00).
pub const DOS_MIN: Civil = Civil { year: 1980, month: 1, day: 1, hour: 0, minute: 0, second: 0 };
/// The latest time a DOS timestamp can hold (2107-12-31 23:59:58, seconds are even).
pub const DOS_MAX: Civil = Civil { year: 2107, month: 12, day: 31, hour: 23, minute: 59, second: 58 };

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is 1..=31 and m is 1..=12 by construction.
    (y, m as u8, d as u8)
}

/// Unix seconds → UTC civil time.
pub fn civil_from_unix(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u8,
        minute: (rem % 3600 / 60) as u8,
        second: (rem % 60) as u8,
    }
}

/// UTC civil time → Unix seconds. Returns `None` for out-of-range fields (e.g. month 0),
/// which a hostile or sloppy zip may contain.
pub fn unix_from_civil(c: &Civil) -> Option<i64> {
    let valid = (1..=12).contains(&c.month)
        && (1..=31).contains(&c.day)
        && c.hour < 24
        && c.minute < 60
        && c.second < 62;
    if !valid {
        return None;
    }
    let days = days_from_civil(c.year, i64::from(c.month), i64::from(c.day));
    Some(days * 86_400 + i64::from(c.hour) * 3600 + i64::from(c.minute) * 60 + i64::from(c.second))
}

/// Unix seconds → the civil time to store in a zip entry, clamped like Python's
/// `strict_timestamps=False` (before 1980 → 1980-01-01 00:00:00, after 2107 → 2107-12-31 23:59:58).
pub fn dos_clamped(secs: i64) -> Civil {
    let c = civil_from_unix(secs);
    if c.year < 1980 {
        DOS_MIN
    } else if c.year > 2107 {
        DOS_MAX
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_known_dates() {
        let c = civil_from_unix(1_795_974_551); // 2026-11-29T17:49:11Z
        assert_eq!(c, Civil { year: 2026, month: 11, day: 29, hour: 17, minute: 49, second: 11 });
        assert_eq!(unix_from_civil(&c), Some(1_795_974_551));
        assert_eq!(civil_from_unix(0).year, 1970);
        assert_eq!(unix_from_civil(&DOS_MIN), Some(315_532_800));
        for secs in [-86_401_i64, 951_782_400, 4_107_542_399, 4_354_819_199] {
            assert_eq!(unix_from_civil(&civil_from_unix(secs)), Some(secs));
        }
    }

    #[test]
    fn clamps_like_python() {
        assert_eq!(dos_clamped(157_766_400), DOS_MIN); // 1975
        assert_eq!(dos_clamped(i64::from(u32::MAX) * 2), DOS_MAX); // year 2242
        assert_eq!(dos_clamped(315_532_800), DOS_MIN);
    }

    #[test]
    fn rejects_invalid_fields() {
        let bad = Civil { month: 0, ..DOS_MIN };
        assert_eq!(unix_from_civil(&bad), None);
        let bad = Civil { hour: 24, ..DOS_MIN };
        assert_eq!(unix_from_civil(&bad), None);
    }
}
