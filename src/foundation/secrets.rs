//! Keeping configured secrets (header and query values, the dashboard token, whatever a
//! `${VAR}` brought in) out of error messages, `Debug` and `Serialize`: for the
//! configuration, and for every attempt's error message.

use std::collections::BTreeMap;

use serde::Serializer;

/// What stands in for a secret.
pub(crate) const REDACTED: &str = "[redacted]";

/// Shortest value treated as a secret worth hiding (shorter ones would hide common words).
const MIN_SECRET_LEN: usize = 4;

/// Serializes a map with every value replaced.
pub(crate) fn redacted_values<S: Serializer>(
    map: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(map.keys().map(|k| (k, REDACTED)))
}

/// Serializes a present token as [`REDACTED`].
pub(crate) fn redacted_token<S: Serializer>(
    token: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match token {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

/// A map whose values print as [`REDACTED`], for `Debug`.
pub(crate) struct RedactedMap<'a>(pub &'a BTreeMap<String, String>);

impl std::fmt::Debug for RedactedMap<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, REDACTED)))
            .finish()
    }
}

/// Values to hide wherever they appear in a text.
#[derive(Debug, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// The values long enough to be worth hiding, longest first, so a secret that
    /// contains another is hidden whole.
    pub fn new(values: impl IntoIterator<Item = String>) -> Secrets {
        let mut kept: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_SECRET_LEN)
            .collect();
        kept.sort_by_key(|s| std::cmp::Reverse(s.len()));
        kept.dedup();
        Secrets(kept)
    }

    /// Replaces every secret in `text` with [`REDACTED`].
    pub fn hide(&self, text: &mut String) {
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                *text = text.replace(secret.as_str(), REDACTED);
            }
        }
    }
}

/// Removes secrets from a message about a configuration: the values of `${VAR}`s, and
/// every string a parser quoted (it may be a secret written into the file).
pub(crate) fn scrub(message: &str, expanded: &[String]) -> String {
    let mut out = without_quoted_strings(message);
    Secrets::new(expanded.iter().cloned()).hide(&mut out);
    out
}

/// serde's `invalid type: string "…"` and the like, with the string left out.
fn without_quoted_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let after = &rest[at + "string \"".len()..];
        // The quoted text ends at the first unescaped quote.
        let mut end = after.len();
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = i + 1;
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = &after[end.min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// A URL as it may be shown: scheme and authority only (a key may sit in the path).
pub(crate) fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority: String = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .chars()
        .take(80)
        .collect();
    let more = if rest.len() > authority.len() {
        "..."
    } else {
        ""
    };
    if scheme.is_empty() {
        format!("{authority}{more}")
    } else {
        format!(
            "{}://{authority}{more}",
            scheme.chars().take(16).collect::<String>()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_and_expanded_values_are_hidden() {
        let m = r#"invalid type: string "Bearer sk-123456", expected a map"#;
        assert_eq!(scrub(m, &[]), "invalid type: a string, expected a map");
        let m = "bad value sk-123456 and sk-1234567 here";
        assert_eq!(
            scrub(m, &["sk-123456".into(), "sk-1234567".into(), "ab".into()]),
            "bad value [redacted] and [redacted] here"
        );
        assert_eq!(scrub(r#"string "a\"b" end"#, &[]), "a string end");
    }

    #[test]
    fn urls_show_scheme_and_host_only() {
        assert_eq!(
            shown_url("https://api.x.com/v1/KEY?k=1"),
            "https://api.x.com..."
        );
        assert_eq!(shown_url("htp://x"), "htp://x");
        assert_eq!(shown_url("nonsense"), "nonsense");
    }
}
