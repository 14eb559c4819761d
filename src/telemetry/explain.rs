//! What `explain` says about a request: every provider of its service, whether it could
//! take the request now and why not, and the pick, computed without sending anything.

use serde::Serialize;

/// The decision for one request, as it would be made now. Nothing is sent, taken or
/// counted to make it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The request's service.
    pub service: String,
    /// The request's endpoint (a name or a raw path).
    pub endpoint: String,
    /// The strategy in use.
    pub strategy: String,
    /// What the candidates' scores are, for that strategy.
    pub scores_mean: &'static str,
    /// The provider that would be tried first, if any could take it now.
    pub pick: Option<String>,
    /// Why that one, or why none.
    pub why: String,
    /// Every provider of the service, in configuration order.
    pub candidates: Vec<ExplainedProvider>,
}

/// One provider, as the decision sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedProvider {
    /// Its configured name.
    pub provider: String,
    /// 1, 2 or 3; lower tiers are tried first.
    pub tier: u8,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    /// Why it rests (`retry_after`, `rate_headers`, `quota`), if it does.
    pub resting_reason: Option<&'static str>,
    /// How long it still rests, in ms.
    pub resting_ms: Option<u64>,
    /// Calls its tightest rate window still allows now; `None` without a rate limit.
    pub rate_remaining: Option<u64>,
    /// Calls its tightest quota still allows; `None` without a quota.
    pub quota_remaining: Option<u64>,
    /// Requests on the wire to it now.
    pub in_flight: usize,
    /// Seats a request of this priority may fill.
    pub max_connections: usize,
    /// Whether its health checks say it is down.
    pub health_down: bool,
    /// Its place in the strategy's ranking, when it is among those the pick is made from.
    pub score: Option<f64>,
    /// Why it cannot be the pick now; `None` for those the pick is made from.
    pub skipped: Option<String>,
}
