//! The one error type of the crate, shared by the Rust, C and Python surfaces.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong with a switchyard call.
///
/// The kinds are the same in every language: [`ErrorKind::code`] is the C status
/// number and the Python binding derives its exception classes from the same table.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An argument was missing, malformed or out of range; the text names it.
    InvalidArgument(String),
    /// The configuration was refused; the error names the key path and the reason.
    Config(ConfigError),
    /// The request named a service the configuration does not have.
    UnknownService(String),
    /// No provider of the service serves the endpoint.
    UnknownEndpoint {
        /// The service the request named.
        service: String,
        /// The endpoint no provider lists.
        endpoint: String,
    },
    /// The service already had `queue.max_size` requests waiting.
    QueueFull {
        /// The service whose queue was full.
        service: String,
        /// Its configured `queue.max_size`.
        max_size: usize,
    },
    /// The request's deadline passed before an answer, while queued or in flight.
    Timeout {
        /// How long the request had been under way when it gave up.
        elapsed: Duration,
        /// The attempts made before the deadline passed (possibly none).
        attempts: Vec<AttemptError>,
    },
    /// Nothing could be tried: every eligible provider was unavailable. No network was touched.
    NoHealthyProvider {
        /// The service whose providers were all unavailable.
        service: String,
    },
    /// Every allowed attempt failed before the deadline.
    AllProvidersFailed {
        /// Each attempt in the order it was made.
        attempts: Vec<AttemptError>,
    },
    /// The balancer is shutting down and takes no more work, or dropped this queued request.
    ShuttingDown,
    /// Every attempt failed because the answer was larger than `pool.max_response_bytes`.
    ResponseTooLarge {
        /// The configured limit in bytes.
        limit: u64,
        /// Each attempt in the order it was made.
        attempts: Vec<AttemptError>,
    },
    /// A bug inside switchyard, caught before it could do harm.
    Internal(String),
    /// Nothing could be tried: every eligible provider was out of rate or quota (or what
    /// is left is reserved for critical and high requests). No provider was charged.
    QuotaExhausted {
        /// The service whose providers were all held back.
        service: String,
        /// Each provider held back for its rate or quota, and when it frees up.
        waits: Vec<QuotaWait>,
    },
}

/// A provider held back by its rate or quota, as carried by [`Error::QuotaExhausted`].
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaWait {
    /// The provider's configured name.
    pub provider: String,
    /// `quota` (its quota, configured or answered, is used up), `reserve` (what is left
    /// is kept for critical and high requests), `rate` (its rate limit), or
    /// `rate_headers` (its answers said nothing is left).
    pub reason: &'static str,
    /// From the error to the moment it takes calls again; `None` when it never will for
    /// this request's priority.
    pub frees_in: Option<Duration>,
}

impl fmt::Display for QuotaWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            "quota" => "quota used up",
            "reserve" => "what is left of its quota is reserved for critical and high requests",
            "rate" => "rate limit reached",
            "rate_headers" => "its rate-limit headers say nothing is left",
            other => other,
        };
        write!(f, "{} {why}", self.provider)?;
        match self.frees_in {
            Some(d) => write!(f, ", frees up in {}", human(d)),
            None => f.write_str(", never for this priority (reserve = 1)"),
        }
    }
}

/// A duration for people: "350 ms", "42 s", "3 h 20 min".
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms} ms")
    } else if s < 120 {
        format!("{} s", (ms + 500) / 1000)
    } else if s < 7200 {
        format!("{} min", (s + 30) / 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// The kind of an [`Error`], with the stable numbers of the C API.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorKind {
    /// See [`Error::InvalidArgument`].
    InvalidArgument = 1,
    /// See [`Error::Config`].
    Config = 2,
    /// See [`Error::UnknownService`].
    UnknownService = 3,
    /// See [`Error::UnknownEndpoint`].
    UnknownEndpoint = 4,
    /// See [`Error::QueueFull`].
    QueueFull = 5,
    /// See [`Error::Timeout`].
    Timeout = 6,
    /// See [`Error::NoHealthyProvider`].
    NoHealthyProvider = 7,
    /// See [`Error::AllProvidersFailed`].
    AllProvidersFailed = 8,
    /// See [`Error::ShuttingDown`].
    ShuttingDown = 9,
    /// See [`Error::ResponseTooLarge`].
    ResponseTooLarge = 10,
    /// See [`Error::Internal`].
    Internal = 11,
    /// See [`Error::QuotaExhausted`].
    QuotaExhausted = 12,
}

impl ErrorKind {
    /// Every kind, in code order.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidArgument,
        ErrorKind::Config,
        ErrorKind::UnknownService,
        ErrorKind::UnknownEndpoint,
        ErrorKind::QueueFull,
        ErrorKind::Timeout,
        ErrorKind::NoHealthyProvider,
        ErrorKind::AllProvidersFailed,
        ErrorKind::ShuttingDown,
        ErrorKind::ResponseTooLarge,
        ErrorKind::Internal,
        ErrorKind::QuotaExhausted,
    ];

    /// The status number of the C API (`SY_ERR_*`); 0 is success and never an error.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The kind with C status number `code`; `None` for 0 (success) and unknown numbers.
    pub fn from_code(code: u32) -> Option<ErrorKind> {
        ErrorKind::ALL.iter().copied().find(|k| k.code() == code)
    }

    /// What the kind means, in a sentence; for messages that have nothing more specific.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "an argument was missing, malformed or out of range",
            ErrorKind::Config => "the configuration was refused",
            ErrorKind::UnknownService => "the request named a service that is not configured",
            ErrorKind::UnknownEndpoint => "no provider of the service serves the endpoint",
            ErrorKind::QueueFull => "the service's queue was full",
            ErrorKind::Timeout => "the request's deadline passed",
            ErrorKind::NoHealthyProvider => "no provider of the service was available",
            ErrorKind::AllProvidersFailed => "every allowed attempt failed",
            ErrorKind::ShuttingDown => "the balancer is shutting down",
            ErrorKind::ResponseTooLarge => "every answer was over max_response_bytes",
            ErrorKind::Internal => "an internal error in switchyard",
            ErrorKind::QuotaExhausted => "every eligible provider was out of rate or quota",
        }
    }

    /// A stable snake_case name, as used in metrics and in the Python binding.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Config => "config",
            ErrorKind::UnknownService => "unknown_service",
            ErrorKind::UnknownEndpoint => "unknown_endpoint",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NoHealthyProvider => "no_healthy_provider",
            ErrorKind::AllProvidersFailed => "all_providers_failed",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::ResponseTooLarge => "response_too_large",
            ErrorKind::Internal => "internal",
            ErrorKind::QuotaExhausted => "quota_exhausted",
        }
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Config(_) => ErrorKind::Config,
            Error::UnknownService(_) => ErrorKind::UnknownService,
            Error::UnknownEndpoint { .. } => ErrorKind::UnknownEndpoint,
            Error::QueueFull { .. } => ErrorKind::QueueFull,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::NoHealthyProvider { .. } => ErrorKind::NoHealthyProvider,
            Error::AllProvidersFailed { .. } => ErrorKind::AllProvidersFailed,
            Error::ShuttingDown => ErrorKind::ShuttingDown,
            Error::ResponseTooLarge { .. } => ErrorKind::ResponseTooLarge,
            Error::Internal(_) => ErrorKind::Internal,
            Error::QuotaExhausted { .. } => ErrorKind::QuotaExhausted,
        }
    }

    /// The attempts this error carries; empty for kinds that touch no network.
    pub fn attempts(&self) -> &[AttemptError] {
        match self {
            Error::Timeout { attempts, .. }
            | Error::AllProvidersFailed { attempts }
            | Error::ResponseTooLarge { attempts, .. } => attempts,
            _ => &[],
        }
    }

    /// A configuration error; path and reason are capped in length.
    pub(crate) fn config(path: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Config(ConfigError {
            path: capped(path.into()),
            reason: capped(reason.into()),
        })
    }
}

/// Longest text an error carries; more is elided (a parser once quoted a 2 MB line).
pub(crate) const MAX_MESSAGE: usize = 1000;

/// `text` cut to [`MAX_MESSAGE`] bytes at a character boundary, saying how much was left out.
pub(crate) fn capped(text: String) -> String {
    if text.len() <= MAX_MESSAGE {
        return text;
    }
    let mut cut = MAX_MESSAGE;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} more bytes)", &text[..cut], text.len() - cut)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Config(e) => write!(f, "configuration error: {e}"),
            Error::UnknownService(s) => write!(f, "unknown service `{s}`"),
            Error::UnknownEndpoint { service, endpoint } => {
                write!(
                    f,
                    "no provider of service `{service}` serves endpoint `{endpoint}`"
                )
            }
            Error::QueueFull { service, max_size } => {
                write!(
                    f,
                    "queue of service `{service}` is full ({max_size} waiting)"
                )
            }
            Error::Timeout { elapsed, attempts } => {
                write!(f, "deadline passed after {} ms", elapsed.as_millis())?;
                write_attempts(f, attempts)
            }
            Error::NoHealthyProvider { service } => {
                write!(f, "no provider of service `{service}` is available")
            }
            Error::AllProvidersFailed { attempts } => {
                write!(f, "all {} attempts failed", attempts.len())?;
                write_attempts(f, attempts)
            }
            Error::ShuttingDown => f.write_str("the balancer is shutting down"),
            Error::ResponseTooLarge { limit, attempts } => {
                write!(f, "response larger than {limit} bytes")?;
                write_attempts(f, attempts)
            }
            Error::Internal(what) => write!(f, "internal error: {what}"),
            Error::QuotaExhausted { service, waits } => {
                write!(
                    f,
                    "every eligible provider of service `{service}` is out of rate or quota"
                )?;
                for (i, w) in waits.iter().enumerate() {
                    f.write_str(if i == 0 { ": " } else { "; " })?;
                    write!(f, "{w}")?;
                }
                Ok(())
            }
        }
    }
}

fn write_attempts(f: &mut fmt::Formatter<'_>, attempts: &[AttemptError]) -> fmt::Result {
    for (i, a) in attempts.iter().enumerate() {
        f.write_str(if i == 0 { ": " } else { "; " })?;
        write!(f, "{a}")?;
    }
    Ok(())
}

impl std::error::Error for Error {}

/// A refused configuration: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, e.g. `services.stocks.providers[1].base_url`; empty for the whole document.
    pub path: String,
    /// What is wrong with the value at that path.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// How one attempt against one provider failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// The connection could not be made (refused, unreachable, name not found).
    Connect,
    /// The attempt's timeout or the request's deadline passed.
    Timeout,
    /// The provider answered with a failure status (5xx or 429).
    Status,
    /// The connection was reset or closed before a whole answer arrived.
    Reset,
    /// The answer was not valid HTTP, or was cut short.
    Protocol,
    /// The answer was larger than `pool.max_response_bytes`.
    TooLarge,
    /// The provider answered that its quota is used up (`classify.quota_statuses` or
    /// `quota_body`); it rests, and its breaker does not count it.
    Quota,
    /// TLS failed: the provider's certificate did not verify (untrusted, expired, for
    /// another name), or the handshake failed (a client certificate it wanted).
    Tls,
}

impl AttemptKind {
    /// The name used in errors, JSON and metrics: `connect`, `timeout`, `status`, ...
    pub fn name(self) -> &'static str {
        match self {
            AttemptKind::Connect => "connect",
            AttemptKind::Timeout => "timeout",
            AttemptKind::Status => "status",
            AttemptKind::Reset => "reset",
            AttemptKind::Protocol => "protocol",
            AttemptKind::TooLarge => "too_large",
            AttemptKind::Quota => "quota",
            AttemptKind::Tls => "tls",
        }
    }
}

/// One failed attempt, as carried by [`Error::AllProvidersFailed`] and its kin.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptError {
    /// The provider's configured name.
    pub provider: String,
    /// What went wrong.
    pub kind: AttemptKind,
    /// The HTTP status, when the provider answered.
    pub status: Option<u16>,
    /// From sending the attempt to its failure.
    pub elapsed: Duration,
    /// A human-readable detail; never contains configured secrets.
    pub message: String,
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} after {} ms",
            self.provider,
            self.kind.name(),
            self.elapsed.as_millis()
        )?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract_table() {
        let codes: Vec<u32> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes, (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn error_stays_small() {
        // Errors travel through channels on every failed request; keep them a few words.
        assert!(std::mem::size_of::<Error>() <= 64);
    }

    #[test]
    fn quota_exhausted_names_each_provider_and_when_it_frees_up() {
        let e = Error::QuotaExhausted {
            service: "news".into(),
            waits: vec![
                QuotaWait {
                    provider: "newsapi".into(),
                    reason: "quota",
                    frees_in: Some(Duration::from_secs(3 * 3600 + 20 * 60)),
                },
                QuotaWait {
                    provider: "gnews".into(),
                    reason: "rate",
                    frees_in: Some(Duration::from_millis(50)),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "every eligible provider of service `news` is out of rate or quota: newsapi quota \
             used up, frees up in 3 h 20 min; gnews rate limit reached, frees up in 50 ms"
        );
        assert_eq!(e.kind().code(), 12);
    }

    #[test]
    fn config_error_reads_path_then_reason() {
        let e = Error::config("services.a.providers[0].tier", "4 is not 1, 2 or 3");
        assert_eq!(
            e.to_string(),
            "configuration error: services.a.providers[0].tier: 4 is not 1, 2 or 3"
        );
    }
}
