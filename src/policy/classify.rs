//! What an answer means beyond the status rule: "quota used up" (rest the provider, fail
//! over, no breaker failure), a provider failure, or an answer for the caller.

use crate::foundation::config::ClassifyConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An answer for the caller.
    Answer,
    /// The provider's quota is used up (status or throttle notice).
    QuotaUsedUp,
    /// The answer counts as a provider failure.
    Failure,
}

#[derive(Debug, Clone)]
pub(crate) struct Classifier {
    quota_statuses: Vec<u16>,
    quota_body: Vec<Vec<u8>>,
    failure_statuses: Vec<u16>,
    failure_body: Vec<Vec<u8>>,
}

impl Classifier {
    pub fn new(config: &ClassifyConfig) -> Classifier {
        Classifier {
            quota_statuses: config.quota_statuses.clone(),
            quota_body: config
                .quota_body
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            failure_statuses: config.failure_statuses.clone(),
            failure_body: config
                .failure_body
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        }
    }

    /// Whether a failure status (5xx, 429) is to be read as "quota used up" instead.
    pub fn is_quota_status(&self, status: u16) -> bool {
        self.quota_statuses.contains(&status)
    }

    /// The verdict on an answer the status rule lets through (not 5xx or 429).
    pub fn judge(&self, status: u16, body: &[u8]) -> Verdict {
        if self.quota_statuses.contains(&status) {
            return Verdict::QuotaUsedUp;
        }
        if self.failure_statuses.contains(&status) {
            return Verdict::Failure;
        }
        if (200..300).contains(&status) {
            if self.quota_body.iter().any(|n| contains(body, n)) {
                return Verdict::QuotaUsedUp;
            }
            if self.failure_body.iter().any(|n| contains(body, n)) {
                return Verdict::Failure;
            }
        }
        Verdict::Answer
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies_are_judged() {
        let c = Classifier::new(&ClassifyConfig {
            quota_body: vec!["rate limit reached".into()],
            failure_statuses: vec![404],
            failure_body: vec!["\"error\"".into()],
            ..ClassifyConfig::default()
        });
        assert_eq!(c.judge(402, b""), Verdict::QuotaUsedUp, "402 by default");
        assert_eq!(
            c.judge(200, b"{\"note\": \"rate limit reached\"}"),
            Verdict::QuotaUsedUp
        );
        assert_eq!(c.judge(200, b"{\"error\": 1}"), Verdict::Failure);
        assert_eq!(c.judge(404, b""), Verdict::Failure);
        assert_eq!(c.judge(200, b"{\"price\": 1}"), Verdict::Answer);
        assert_eq!(
            c.judge(400, b"rate limit reached"),
            Verdict::Answer,
            "bodies count on 2xx only"
        );
        assert!(!c.is_quota_status(429));
    }
}
