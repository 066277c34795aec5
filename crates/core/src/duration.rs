//! Durations as people write them: `"250ms"`, `"2s"`, `"5m"`, `"1h 30m"`, or a number of
//! seconds. Serialized back in the same human form.

use serde::{Deserialize, Deserializer, Serializer, de};
use std::time::Duration;

/// Parses `"2s"`, `"1.5s"`, `"500ms"` or `"90"` (seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return from_secs(secs);
    }
    if let Some(secs) = text.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        return from_secs(secs);
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("'{text}' is not a duration ({e}); write e.g. \"500ms\", \"2s\", \"5m\" or a number of seconds")
    })
}

fn from_secs(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{secs} is not a duration: it must be 0 or more"));
    }
    if secs > 10.0 * 365.0 * 86_400.0 {
        return Err(format!("{secs} seconds is more than ten years"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `"1m 30s"`, `"250ms"`, `"0s"`.
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    // Whole milliseconds read best; sub-millisecond noise from jitter is dropped.
    let ms = Duration::from_millis(d.as_millis() as u64);
    if ms.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(ms).to_string()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Secs(f64),
    Text(String),
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Secs(secs) => from_secs(secs).map_err(de::Error::custom),
        Raw::Text(text) => parse(&text).map_err(de::Error::custom),
    }
}

/// The same for `Option<Duration>`, with `#[serde(default, with = "...::option")]`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Secs(secs)) => from_secs(secs).map(Some).map_err(de::Error::custom),
            Some(Raw::Text(text)) => parse(&text).map(Some).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_write() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse("-1").is_err());
        assert!(parse("soon").is_err());
        assert_eq!(format(Duration::from_millis(1500)), "1s 500ms");
    }
}
