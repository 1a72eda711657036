//! The small grammar the attribute and the run-time configuration share:
//! durations with a unit, and the "did you mean" suggestion for a mistyped
//! key.
//!
//! A crate of its own because a proc-macro crate cannot export functions:
//! `breaker-macros` and `breaker-runtime` both depend on it, so a duration
//! or a typo reads the same in
//! `#[circuit_breaker(timeout_duration = "500ms")]`, in
//! `BREAKER_LLM__TIMEOUT_DURATION=500ms` and in a `breaker.toml`. It has
//! no dependency beyond `std`. Not meant to be used directly.
//!
//! ```
//! assert_eq!(breaker_grammar::parse_duration("500ms"), Some(0.5));
//! assert_eq!(
//!     breaker_grammar::nearest("failur_threshold", &["failure_threshold", "fallback"]),
//!     Some("failure_threshold"),
//! );
//! ```

/// The units a duration may carry, for messages.
pub const DURATION_UNITS: &str = "`ns`, `us`, `ms`, `s`, `m` or `h`";

/// Seconds in `"1.5s"`, `"500ms"`, `"2m"`, `"1h"`, `"250us"`, `"10ns"`;
/// `None` when malformed. A minus sign is kept so the range check can name it.
pub fn parse_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.replace('_', "").parse().ok()?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    number.is_finite().then_some(number * scale)
}

/// The key of `keys` that `name` was most likely meant to be: one that
/// starts with it (`timeout` for `timeout_duration`), or one a few edits
/// away. Case and `-` for `_` are forgiven.
pub fn nearest<'k>(name: &str, keys: &[&'k str]) -> Option<&'k str> {
    let lower = name.to_lowercase().replace('-', "_");
    if lower.is_empty() {
        return None;
    }
    if let Some(key) = keys
        .iter()
        .find(|k| k.starts_with(&lower) || lower.starts_with(*k))
    {
        return Some(key);
    }
    keys.iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Levenshtein distance, in one row.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Some(0.5));
        assert_eq!(parse_duration("2m"), Some(120.0));
        assert_eq!(parse_duration("1.5s"), Some(1.5));
        assert_eq!(parse_duration("1h"), Some(3600.0));
        assert_eq!(parse_duration("-1s"), Some(-1.0));
        assert_eq!(parse_duration("500"), None);
        assert_eq!(parse_duration("fast"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }

    #[test]
    fn nearest_prefers_prefixes_then_small_edits() {
        let keys = ["timeout_duration", "failure_threshold", "fallback"];
        assert_eq!(nearest("timeout", &keys), Some("timeout_duration"));
        assert_eq!(
            nearest("failure_treshold", &keys),
            Some("failure_threshold")
        );
        assert_eq!(
            nearest("FAILUR_THRESHOLD", &keys),
            Some("failure_threshold")
        );
        assert_eq!(nearest("fallbak", &keys), Some("fallback"));
        assert_eq!(nearest("zzzzzzzz", &keys), None);
        assert_eq!(nearest("", &keys), None);
    }
}
