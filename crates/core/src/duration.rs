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

/// Reads a number of seconds or a text such as `"2s"`. A visitor rather than an untagged
/// enum: that one buffered every value and built an error for each text before it tried the
/// second form, and stored policies hold their durations as text (a tenth of decoding a job).
struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration: a number of seconds or a text such as \"500ms\", \"2s\" or \"5m\"")
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
        from_secs(secs).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
        self.visit_f64(secs as f64)
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
        self.visit_f64(secs as f64)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
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
        struct Wrapped(Duration);
        impl<'de> Deserialize<'de> for Wrapped {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(Wrapped)
            }
        }
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
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

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        every: Duration,
        #[serde(default, with = "super::option")]
        within: Option<Duration>,
    }

    #[test]
    fn reads_numbers_texts_and_null_and_names_what_it_wants() {
        let read = |json: &str| serde_json::from_str::<Holder>(json);
        let h = read(r#"{"every": 1.5, "within": "2m"}"#).unwrap();
        assert_eq!(
            (h.every, h.within),
            (Duration::from_millis(1500), Some(Duration::from_secs(120)))
        );
        let h = read(r#"{"every": "250ms", "within": null}"#).unwrap();
        assert_eq!((h.every, h.within), (Duration::from_millis(250), None));
        assert_eq!(
            read(r#"{"every": 3}"#).unwrap().every,
            Duration::from_secs(3)
        );
        let err = read(r#"{"every": "soon"}"#).unwrap_err().to_string();
        assert!(err.contains("'soon' is not a duration"), "{err}");
        let err = read(r#"{"every": -2}"#).unwrap_err().to_string();
        assert!(err.contains("must be 0 or more"), "{err}");
        let err = read(r#"{"every": [1]}"#).unwrap_err().to_string();
        assert!(
            err.contains("a duration: a number of seconds or a text"),
            "{err}"
        );
    }
}
