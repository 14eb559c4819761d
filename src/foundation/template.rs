//! Endpoint path templates (`/v2/last/trade/{symbol}`) and URL encoding.

use crate::foundation::text::Text;
use std::fmt::Write;

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Param(String),
}

impl Template {
    /// Parses a template; the error completes the sentence "`template` ...".
    pub fn parse(text: &str) -> Result<Template, String> {
        if !text.starts_with('/') {
            return Err("does not start with /".into());
        }
        if text
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '#')
        {
            return Err("has a space, control character or #".into());
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err("has a `}` with no opening `{`".into());
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or("has a `{` with no closing `}`")?;
            let name = &after[..close];
            if name.is_empty() {
                return Err("has an empty placeholder `{}`".into());
            }
            if name.contains('{') {
                return Err("has a `{` with no closing `}`".into());
            }
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "has a placeholder `{{{name}}}` that is not a parameter name"
                ));
            }
            parts.push(Part::Param(name.to_string()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The names of the parameters the template needs.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Param(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The first parameter the template needs that `params` lacks.
    pub fn missing<'a>(&'a self, params: &[(Text, Text)]) -> Option<&'a str> {
        self.params()
            .find(|needed| !params.iter().any(|(name, _)| name == needed))
    }

    /// Appends the filled path to `out`; returns a mask of which `params` it used.
    /// Callers check [`Template::missing`] first; a missing parameter renders empty.
    pub fn render(&self, params: &[(Text, Text)], out: &mut String) -> u64 {
        let mut used = 0u64;
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Param(name) => {
                    if let Some(i) = params.iter().position(|(n, _)| n == name) {
                        encode_segment(&params[i].1, out);
                        if i < 64 {
                            used |= 1 << i;
                        }
                    }
                }
            }
        }
        used
    }
}

/// Encodes a value that fills a path segment: as a component, and a value of `.` or `..`
/// fully, so that it cannot become a dot segment that servers resolve to another path.
pub(crate) fn encode_segment(value: &str, out: &mut String) {
    match value {
        "." => out.push_str("%2E"),
        ".." => out.push_str("%2E%2E"),
        _ => encode_component(value, out),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn encode_component(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Appends `k=v` (encoded) for each parameter `render` did not use (a bit per index in
/// `used`), the first after `*sep`, the rest after `&`.
pub(crate) fn append_unused(params: &[(Text, Text)], used: u64, sep: &mut char, out: &mut String) {
    for (i, (k, v)) in params.iter().enumerate() {
        if i < 64 && used & (1 << i) != 0 {
            continue;
        }
        out.push(*sep);
        encode_component(k, out);
        out.push('=');
        encode_component(v, out);
        *sep = '&';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(Text, Text)> {
        pairs
            .iter()
            .map(|(a, b)| (Text::from(*a), Text::from(*b)))
            .collect()
    }

    #[test]
    fn fills_and_encodes() {
        let t = Template::parse("/v2/{symbol}/trades/{day}").unwrap();
        let mut out = String::new();
        let used = t.render(
            &p(&[("day", "2026-11-27"), ("x", "1"), ("symbol", "BRK/A é")]),
            &mut out,
        );
        assert_eq!(out, "/v2/BRK%2FA%20%C3%A9/trades/2026-11-27");
        assert_eq!(used, 0b101);
        assert_eq!(t.params().collect::<Vec<_>>(), ["symbol", "day"]);
        assert_eq!(t.missing(&p(&[("symbol", "A")])), Some("day"));
    }

    #[test]
    fn refuses_malformed() {
        assert!(Template::parse("v2").is_err());
        assert!(Template::parse("/a/{}").unwrap_err().contains("empty"));
        assert!(Template::parse("/a/{b").unwrap_err().contains("no closing"));
        assert!(Template::parse("/a/b}").unwrap_err().contains("no opening"));
        assert!(Template::parse("/a/{b c}").is_err());
    }

    #[test]
    fn dot_segments_cannot_come_from_a_parameter() {
        let t = Template::parse("/v1/items/{id}/detail").unwrap();
        for (value, sent) in [
            (".", "%2E"),
            ("..", "%2E%2E"),
            ("...", "..."),
            ("a/../b", "a%2F..%2Fb"),
        ] {
            let mut out = String::new();
            t.render(&p(&[("id", value)]), &mut out);
            assert_eq!(out, format!("/v1/items/{sent}/detail"), "{value}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_template_parses_or_says_why(text in "\\PC{0,40}") {
            match Template::parse(&text) {
                Ok(t) => { let _ = t.params().count(); }
                Err(why) => proptest::prop_assert!(!why.is_empty()),
            }
        }

        #[test]
        fn a_parameter_fills_one_segment_and_never_a_dot_segment(value in "\\PC{0,24}") {
            let t = Template::parse("/a/{v}/b").unwrap();
            let mut out = String::new();
            t.render(&p(&[("v", &value)]), &mut out);
            let segment = out.strip_prefix("/a/").and_then(|r| r.strip_suffix("/b"));
            proptest::prop_assert!(segment.is_some(), "{}", out);
            let segment = segment.unwrap_or_default();
            proptest::prop_assert!(!segment.contains('/') && segment != "." && segment != "..");
            proptest::prop_assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        }
    }
}
