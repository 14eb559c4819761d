//! Spans for the `tracing` feature: one per request and one per attempt inside it, with
//! OpenTelemetry's HTTP client attribute names (`http.request.method`,
//! `server.address`, `server.port`, `url.scheme`, `http.response.status_code`,
//! `error.type`, `http.request.resend_count`) and the balancer's own
//! (`switchyard.service`, `switchyard.endpoint`, `switchyard.provider`,
//! `switchyard.tier`). URLs are not recorded: a provider's key may sit in its path or
//! query. Without the feature every type here is empty and every call does nothing.

/// A request's span; it ends when the job does.
#[derive(Clone, Default)]
pub(crate) struct RequestSpan {
    #[cfg(feature = "tracing")]
    span: Option<tracing::Span>,
}

/// An attempt's span, inside its request's.
#[derive(Default)]
pub(crate) struct AttemptSpan {
    #[cfg(feature = "tracing")]
    span: Option<tracing::Span>,
}

impl RequestSpan {
    /// The span of a request of `service` for `endpoint` by `method`.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn new(service: &str, endpoint: &str, method: &'static str) -> RequestSpan {
        #[cfg(feature = "tracing")]
        {
            let span = tracing::info_span!(
                "switchyard.request",
                "http.request.method" = method,
                "switchyard.service" = service,
                "switchyard.endpoint" = endpoint,
                "switchyard.provider" = tracing::field::Empty,
                "http.response.status_code" = tracing::field::Empty,
                "error.type" = tracing::field::Empty,
            );
            RequestSpan { span: Some(span) }
        }
        #[cfg(not(feature = "tracing"))]
        RequestSpan {}
    }

    /// The request ended: with an answer from `provider`, or an error of this kind.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn ended(&self, answer: Result<(&str, u16), &'static str>) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            match answer {
                Ok((provider, status)) => {
                    span.record("switchyard.provider", provider);
                    span.record("http.response.status_code", status);
                }
                Err(kind) => {
                    span.record("error.type", kind);
                }
            }
        }
    }

    /// The span of an attempt to `url` at `provider` (tier `tier`); `resends` earlier
    /// attempts of the request.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn attempt(
        &self,
        method: &'static str,
        url: &str,
        (provider, tier): (&str, u8),
        resends: u32,
    ) -> AttemptSpan {
        #[cfg(feature = "tracing")]
        if let Some(parent) = &self.span {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                    (h.trim_matches(['[', ']']), p.parse::<u16>().ok())
                }
                _ => (authority, None),
            };
            let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
            let span = tracing::info_span!(
                parent: parent,
                "switchyard.attempt",
                "http.request.method" = method,
                "url.scheme" = scheme,
                "server.address" = host,
                "server.port" = port,
                "http.request.resend_count" = resends,
                "switchyard.provider" = provider,
                "switchyard.tier" = tier,
                "http.response.status_code" = tracing::field::Empty,
                "error.type" = tracing::field::Empty,
            );
            return AttemptSpan { span: Some(span) };
        }
        AttemptSpan::default()
    }
}

impl AttemptSpan {
    /// Runs `f` inside the span.
    pub fn within<T>(&self, f: impl FnOnce() -> T) -> T {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            return span.in_scope(f);
        }
        f()
    }

    /// The attempt ended with this status and failure kind, if any.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn ended(&self, status: Option<u16>, failure: Option<&'static str>) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            if let Some(status) = status {
                span.record("http.response.status_code", status);
            }
            if let Some(kind) = failure {
                span.record("error.type", kind);
            }
        }
    }
}
