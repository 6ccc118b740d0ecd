//! `--until`'s instant: unix seconds, or an RFC 3339 date-time
//! (`2026-12-03T18:00:00Z`, `2026-12-03T19:00:00+01:00`, fractions of a second
//! dropped), as the unix seconds the `#TS:` annotations carry. Pure; no time zone
//! database (RFC 3339 carries its offset).

/// The unix seconds of `text`.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    rfc3339(text.trim()).ok_or_else(|| {
        format!(
            "{text:?} is neither unix seconds nor an RFC 3339 instant such as 2026-12-03T18:00:00Z"
        )
    })
}

/// `YYYY-MM-DD(T| )HH:MM:SS[.frac](Z|±HH:MM)`.
fn rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
        return None;
    }
    let field = |from: usize, to: usize| -> Option<i64> {
        let digits = text.get(from..to)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
    let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = zone_offset(rest)?;
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Seconds east of UTC of `Z` or `±HH:MM`.
fn zone_offset(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = zone.get(1..)?.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the civil-from-days
/// inverse: years counted from March, so leap days come last).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_rfc3339_instants() {
        assert_eq!(parse_instant("1764784800"), Ok(1_764_784_800));
        assert_eq!(parse_instant("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_instant("2000-03-01T00:00:00Z"), Ok(951_868_800));
        assert_eq!(parse_instant("2026-12-03T18:00:00Z"), Ok(1_796_320_800));
        assert_eq!(
            parse_instant("2026-12-03T19:00:00+01:00"),
            Ok(1_796_320_800)
        );
        assert_eq!(
            parse_instant("2026-12-03 17:00:00.25-01:00"),
            Ok(1_796_320_800)
        );
        assert_eq!(parse_instant("2024-02-29T12:00:00Z"), Ok(1_709_208_000));
    }

    #[test]
    fn anything_else_is_refused_with_an_example() {
        for bad in [
            "",
            "yesterday",
            "2026-12-03",
            "2026-12-03T18:00:00",
            "2026-13-03T18:00:00Z",
            "2026-12-03T18:00:00+1:00",
        ] {
            let err = parse_instant(bad).expect_err(bad);
            assert!(err.contains("2026-12-03T18:00:00Z"), "{err}");
        }
    }
}
