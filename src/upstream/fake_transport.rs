//! An in-memory [`Transport`] for engine unit tests: scripted replies, a log of what was
//! sent, attempts held on the wire until the test lets them go, and time that passes on
//! a manual clock instead of the wall.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::foundation::clock::ManualClock;
use crate::foundation::error::{AttemptError, AttemptKind};
use crate::upstream::transport::{Answer, Failure, Outgoing, Transport};

/// What the fake does with the next attempt.
pub(crate) enum Reply {
    /// Answers with this status (5xx and 429 are failures, as on the wire).
    Status(u16),
    /// Answers with this status, these headers and this body.
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Fails before any answer, with this kind.
    Fail(AttemptKind),
    /// Takes this long on the manual clock, then answers 200.
    Slow(Duration),
    /// Takes this long on the manual clock, then fails as timed out.
    TimesOut(Duration),
    /// Is refused before sending: the caller's input cannot go on the wire.
    Refused,
    /// Says so on `arrived` when it is on the wire, then stays there until `release`
    /// sends or is dropped, then answers 200.
    Held {
        arrived: Sender<()>,
        release: Receiver<()>,
    },
    /// The same, then answers this status (5xx and 429 are failures).
    HeldThen {
        arrived: Sender<()>,
        release: Receiver<()>,
        status: u16,
    },
}

/// A held call lets go by itself after this, so a test that fails before releasing it
/// ends instead of hanging.
const HELD_AT_MOST: Duration = Duration::from_secs(10);

/// Makes the reply to the n-th attempt (from 0) when none is queued.
type Script = Box<dyn FnMut(usize) -> Reply + Send>;

pub(crate) struct FakeTransport {
    clock: Arc<ManualClock>,
    replies: Mutex<VecDeque<Reply>>,
    script: Mutex<Option<Script>>,
    sent: Mutex<Vec<String>>,
    healthy: Mutex<bool>,
}

impl FakeTransport {
    pub fn new(clock: Arc<ManualClock>) -> Arc<FakeTransport> {
        Arc::new(FakeTransport {
            clock,
            replies: Mutex::new(VecDeque::new()),
            script: Mutex::new(None),
            sent: Mutex::new(Vec::new()),
            healthy: Mutex::new(true),
        })
    }

    /// Queues the reply to a coming attempt; with none queued, attempts get 200.
    pub fn push(&self, reply: Reply) {
        self.replies.lock().push_back(reply);
    }

    /// Replies to attempts with nothing queued by calling `script` with the attempt's
    /// number; without a script they get 200.
    pub fn script(&self, script: impl FnMut(usize) -> Reply + Send + 'static) {
        *self.script.lock() = Some(Box::new(script));
    }

    /// The URLs of the attempts sent so far.
    pub fn sent(&self) -> Vec<String> {
        self.sent.lock().clone()
    }

    pub fn set_healthy(&self, healthy: bool) {
        *self.healthy.lock() = healthy;
    }
}

impl Transport for FakeTransport {
    fn send(&self, out: &Outgoing<'_>) -> Result<Answer, Failure> {
        let number = {
            let mut sent = self.sent.lock();
            sent.push(out.url.to_string());
            sent.len() - 1
        };
        let queued = self.replies.lock().pop_front();
        let reply = queued.unwrap_or_else(|| match self.script.lock().as_mut() {
            Some(script) => script(number),
            None => Reply::Status(200),
        });
        let fail = |kind, status: Option<u16>| Failure {
            error: AttemptError {
                provider: out.provider.to_string(),
                kind,
                status,
                elapsed: Duration::ZERO,
                message: format!("fake {kind:?}"),
            },
            maybe_sent: kind != AttemptKind::Connect,
            headers: None,
            refused: None,
        };
        let status = match reply {
            Reply::Status(status) => status,
            Reply::Answer {
                status,
                headers,
                body,
            } => {
                let mut map = ureq::http::HeaderMap::new();
                for (name, value) in headers {
                    if let Ok(v) = ureq::http::HeaderValue::from_str(&value) {
                        map.append(name, v);
                    }
                }
                if status >= 500 || status == 429 {
                    let mut f = fail(AttemptKind::Status, Some(status));
                    f.headers = Some(Box::new(map));
                    return Err(f);
                }
                return Ok(Answer {
                    status,
                    headers: map,
                    body,
                    raw_body: None,
                });
            }
            Reply::Fail(kind) => return Err(fail(kind, None)),
            Reply::TimesOut(took) => {
                self.clock.advance(took);
                return Err(fail(AttemptKind::Timeout, None));
            }
            Reply::Refused => {
                let mut f = fail(AttemptKind::Protocol, None);
                f.refused = Some("a header value the wire cannot carry".into());
                f.maybe_sent = false;
                return Err(f);
            }
            Reply::Slow(took) => {
                self.clock.advance(took);
                200
            }
            Reply::Held { arrived, release } => {
                let _ = arrived.send(());
                let _ = release.recv_timeout(HELD_AT_MOST);
                200
            }
            Reply::HeldThen {
                arrived,
                release,
                status,
            } => {
                let _ = arrived.send(());
                let _ = release.recv_timeout(HELD_AT_MOST);
                status
            }
        };
        if status >= 500 || status == 429 {
            return Err(fail(AttemptKind::Status, Some(status)));
        }
        Ok(Answer {
            status,
            headers: ureq::http::HeaderMap::new(),
            body: out.url.as_bytes().to_vec(),
            raw_body: None,
        })
    }

    fn check_health(&self, _url: &str, _headers: &[(String, String)], _timeout: Duration) -> bool {
        *self.healthy.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::clock::Clock;
    use crate::foundation::request::Method;

    #[test]
    fn replies_come_in_order_then_200_and_slow_ones_move_the_clock() {
        let clock = ManualClock::shared();
        let fake = FakeTransport::new(clock.clone());
        fake.push(Reply::Status(503));
        fake.push(Reply::Slow(Duration::from_millis(300)));
        let out = Outgoing {
            provider: "p",
            method: Method::Get,
            url: "http://x/1",
            headers: &[],
            extra_headers: &[],
            body: None,
            timeout: Duration::from_secs(1),
            max_response_bytes: 1024,
            follow_redirects: false,
        };
        let first = fake.send(&out).unwrap_err();
        assert_eq!(
            (first.error.kind, first.error.status),
            (AttemptKind::Status, Some(503))
        );
        assert_eq!(fake.send(&out).unwrap().status, 200);
        assert_eq!(clock.now(), Duration::from_millis(300));
        assert_eq!(fake.send(&out).unwrap().body, b"http://x/1");
        assert_eq!(fake.sent().len(), 3);
        fake.set_healthy(false);
        assert!(!fake.check_health("http://x/h", &[], Duration::from_secs(1)));
    }
}
