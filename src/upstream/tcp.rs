//! The TCP connections of a provider's agent, checked before reuse with one system call.
//!
//! ureq's pool asks a connection whether it is still usable twice a request: when it is
//! given back, right after its answer was read, and when it is taken out for the next
//! request. Its own TCP transport answers each time by switching the socket to
//! non-blocking, reading, and switching it back: six system calls a request on top of the
//! exchange's two. Only the second question decides whether the connection carries a
//! request, so this transport answers the first without the socket (a connection spoiled
//! then is found out, and dropped, when taken), and the second with one
//! `recv(MSG_PEEK | MSG_DONTWAIT)`: usable exactly when nothing is waiting to be read and
//! the peer has not closed, ureq's answer. Reads and writes behave as in ureq's transport
//! (ureq does not export it): into ureq's buffers, with a socket timeout set only when it
//! changes, a timeout reported as the limit that ran out.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};

/// The shortest connect attempt one address is given when a name has several.
const MIN_PER_ADDRESS: Duration = Duration::from_millis(10);

/// Opens plain TCP connections whose idle check is one non-blocking peek.
#[derive(Debug, Default)]
pub(crate) struct PeekingTcpConnector;

impl<In: Transport> Connector<In> for PeekingTcpConnector {
    type Out = Either<In, PeekingTcp>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        // A connection made earlier in the chain (a SOCKS proxy's) is the one to use.
        if chained.is_some() {
            return Ok(chained.map(Either::A));
        }
        let config = details.config;
        let stream = connect_any(details.addrs.iter().copied(), details.timeout)?;
        if config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let stream = Arc::new(stream);
        // The agent shuts the socket down when its pool closes, even in the middle of I/O.
        let handle: Arc<dyn ShutdownHandle> = stream.clone();
        (details.register_shutdown)(Arc::downgrade(&handle))?;
        let buffers = LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size());
        Ok(Some(Either::B(PeekingTcp::new(stream, buffers))))
    }
}

/// Tries each address in turn, each given an equal share of the time that is left, and
/// returns the first connection made: a name whose first address is unreachable still
/// connects through the next.
fn connect_any(
    addrs: impl ExactSizeIterator<Item = SocketAddr>,
    timeout: NextTimeout,
) -> Result<TcpStream, ureq::Error> {
    let started = Instant::now();
    let budget = timeout.not_zero().map(|t| *t);
    let count = addrs.len();
    let mut last = None;
    for (i, addr) in addrs.enumerate() {
        let attempt = match budget {
            Some(total) => {
                let left = total.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(ureq::Error::Timeout(timeout.reason));
                }
                let share = left / (count - i) as u32;
                TcpStream::connect_timeout(&addr, share.max(MIN_PER_ADDRESS).min(left))
            }
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if is_timeout(&e) => last = Some(ureq::Error::Timeout(ureq::Timeout::Connect)),
            Err(e) if concerns_address(&e) => last = Some(ureq::Error::Io(e)),
            Err(e) => return Err(ureq::Error::Io(e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        ureq::Error::Io(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "no address to connect to",
        ))
    }))
}

/// A socket timeout: std reports one as `WouldBlock` on some systems, `TimedOut` on others.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// A failure that says nothing of the host's other addresses.
fn concerns_address(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::AddrNotAvailable
    )
}

/// A plain TCP connection: ureq's buffers, a read and a write timeout set on the socket
/// only when they change, and an idle check of one peek.
pub(crate) struct PeekingTcp {
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    /// What the socket's timeouts are now, so an unchanged one costs no system call.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Bytes went either way since the pool last asked whether it is usable: the pool is
    /// taking it back, and will ask again before it carries anything. This leans on the
    /// order ureq's pool asks in; tests/pool.rs and tests/tls.rs fail if that changes.
    used: bool,
}

impl PeekingTcp {
    fn new(stream: Arc<TcpStream>, buffers: LazyBuffers) -> PeekingTcp {
        PeekingTcp {
            stream,
            buffers,
            read_timeout: None,
            write_timeout: None,
            used: false,
        }
    }
}

impl fmt::Debug for PeekingTcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeekingTcp")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

/// The time an operation may take, `None` for no limit; an exhausted one is a timeout.
fn limit_of(timeout: &NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|t| *t))
}

/// A socket error, with a timeout named for the limit that ran out.
fn failed(e: io::Error, timeout: &NextTimeout) -> ureq::Error {
    match is_timeout(&e) {
        true => ureq::Error::Timeout(timeout.reason),
        false => ureq::Error::Io(e),
    }
}

/// Sets a socket timeout when it differs from the one the socket has (`now`): a constant
/// per-read or per-write limit costs one system call per connection, not one per read.
fn keep_timeout(
    stream: &TcpStream,
    now: &mut Option<Duration>,
    limit: Option<Duration>,
    set: impl Fn(&TcpStream, Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    if limit != *now {
        set(stream, limit)?;
        *now = limit;
    }
    Ok(())
}

impl Transport for PeekingTcp {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let limit = limit_of(&timeout)?;
        let set = |stream: &TcpStream, limit| stream.set_write_timeout(limit);
        keep_timeout(&self.stream, &mut self.write_timeout, limit, set)?;
        self.used = true;
        let output = &self.buffers.output()[..amount];
        (&*self.stream)
            .write_all(output)
            .map_err(|e| failed(e, &timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let limit = limit_of(&timeout)?;
        let set = |stream: &TcpStream, limit| stream.set_read_timeout(limit);
        keep_timeout(&self.stream, &mut self.read_timeout, limit, set)?;
        self.used = true;
        let started = Instant::now();
        loop {
            match (&*self.stream).read(self.buffers.input_append_buf()) {
                Ok(read) => {
                    self.buffers.input_appended(read);
                    return Ok(read > 0);
                }
                // A signal cut the wait short: wait again for what is left of it.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if let Some(limit) = limit {
                        let left = limit.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            return Err(ureq::Error::Timeout(timeout.reason));
                        }
                        keep_timeout(&self.stream, &mut self.read_timeout, Some(left), set)?;
                    }
                }
                Err(e) => return Err(failed(e, &timeout)),
            }
        }
    }

    fn is_open(&mut self) -> bool {
        // Given back after use: the question that counts comes when it is taken out.
        if std::mem::take(&mut self.used) {
            return true;
        }
        idle_and_open(&self.stream)
    }
}

/// Whether an idle connection can carry another request: nothing unasked-for is waiting
/// to be read, and the peer has not closed it.
#[cfg(unix)]
fn idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    let peeked = socket2::SockRef::from(stream)
        .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
    // Ok(0) is the peer's close; Ok(n) bytes nobody asked for.
    matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Elsewhere, as ureq does it: the socket turns non-blocking for one peek.
#[cfg(not(unix))]
fn idle_and_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8];
    let idle = matches!(stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).is_ok() && idle
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// Waits (bounded) until the client's socket has something to read or was closed.
    fn readable(client: &TcpStream) {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8];
        let _ = client.peek(&mut byte);
    }

    #[test]
    fn a_quiet_open_connection_is_usable_and_stays_blocking() {
        let (client, _server) = pair();
        assert!(idle_and_open(&client));
        assert!(idle_and_open(&client), "a peek consumes nothing");
        // The peek did not leave the socket non-blocking: a read still waits.
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut byte = [0u8];
        let err = client.peek(&mut byte).unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
    }

    #[test]
    fn bytes_nobody_asked_for_make_it_unusable() {
        let (client, mut server) = pair();
        server.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        readable(&client);
        assert!(!idle_and_open(&client));
    }

    #[test]
    fn a_peer_that_closed_makes_it_unusable() {
        let (client, server) = pair();
        drop(server);
        readable(&client);
        assert!(!idle_and_open(&client));
    }

    #[test]
    fn given_back_after_use_it_is_kept_and_then_checked_when_taken_out() {
        let (client, mut server) = pair();
        let mut tcp = PeekingTcp::new(Arc::new(client), LazyBuffers::new(1024, 1024));
        assert!(tcp.is_open(), "a quiet connection nobody used");
        tcp.buffers().output()[..4].copy_from_slice(b"ping");
        tcp.transmit_output(4, NextTimeout::default()).unwrap();
        server.write_all(b"pong").unwrap();
        assert!(tcp.await_input(NextTimeout::default()).unwrap());
        assert_eq!(tcp.buffers().input(), b"pong");
        // The server ends the connection while it is being given back.
        drop(server);
        readable(&tcp.stream);
        assert!(tcp.is_open(), "given back: kept, the socket not asked");
        assert!(!tcp.is_open(), "taken out: the close is seen");
    }

    #[test]
    fn a_silent_peer_ends_a_read_with_the_timeout_that_ran_out() {
        let (client, _server) = pair();
        let mut tcp = PeekingTcp::new(Arc::new(client), LazyBuffers::new(1024, 1024));
        let per_read = NextTimeout {
            per_read: Some(ureq::unversioned::transport::time::Duration::from_millis(
                50,
            )),
            ..NextTimeout::default()
        };
        let started = Instant::now();
        let err = tcp.await_input(per_read).unwrap_err();
        assert!(
            matches!(err, ureq::Error::Timeout(ureq::Timeout::PerRead)),
            "{err:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!(tcp.read_timeout, Some(Duration::from_millis(50)));
        // Spent: no read is tried.
        let spent = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_millis(0),
            ..NextTimeout::default()
        };
        assert!(matches!(
            tcp.await_input(spent),
            Err(ureq::Error::Timeout(ureq::Timeout::Global))
        ));
    }

    #[test]
    fn connects_through_a_later_address_when_the_first_refuses() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = {
            let closed = TcpListener::bind("127.0.0.1:0").unwrap();
            closed.local_addr().unwrap()
        };
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(5),
            reason: ureq::Timeout::Connect,
            per_read: None,
            per_write: None,
        };
        let addrs = [refused, listener.local_addr().unwrap()];
        let stream = connect_any(addrs.into_iter(), timeout).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), listener.local_addr().unwrap());
        let only_refused = connect_any([refused].into_iter(), timeout).unwrap_err();
        assert!(
            matches!(&only_refused, ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused),
            "{only_refused:?}"
        );
    }
}
