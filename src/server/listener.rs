//! Accepting connections without letting them exhaust iamd.
//!
//! - **Descriptors.** An accept that fails for lack of file descriptors or
//!   memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) backs off, from 10 ms doubling
//!   to 1 s, instead of retrying at once (which spins a core while the
//!   listen queue fills). At start the soft descriptor limit is raised to the
//!   hard one, and connection limits leave a reserve below it for the store,
//!   the metrics listener and the reload.
//! - **A connection limit.** At the limit, the connection that has been idle
//!   longest is closed to make room; only when every connection has a request
//!   in flight is the new one refused. An idle flood thus cannot lock out a
//!   health check.
//! - **Idle and first-request timeouts.** A connection with no request in
//!   flight for the idle timeout is closed, and so is one that has not begun
//!   a request within the first-request timeout of being accepted (a client
//!   that connects and never speaks, or trickles its headers).
//!
//! The I/O wrapper sees requests begin and end through
//! [`ConnectionActivity`], which the admission layer finds in each
//! request's extensions (tonic's `Connected`).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub first_request_timeout: Duration,
}

/// What the I/O wrapper and the request path share about one connection.
#[derive(Debug)]
struct Activity {
    /// Requests in flight.
    active: AtomicUsize,
    /// Requests begun, ever.
    begun: AtomicU64,
    /// When the last request ended (or the connection was accepted), as
    /// milliseconds since the listener's epoch.
    last_ms: AtomicU64,
    evicted: AtomicBool,
    waker: AtomicWaker,
    epoch: Instant,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A handle on a connection's activity, in each request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionActivity(Arc<Activity>);

/// Marks the connection busy until dropped.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl ConnectionActivity {
    pub fn begin(&self) -> Busy {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        self.0.begun.fetch_add(1, Ordering::AcqRel);
        Busy(self.0.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Release);
        // No wake: the timer armed while this request was busy fires no
        // later than the idle deadline that starts now, and re-arms then.
        // Waking here would cost every request a poll of its connection.
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections of one listener, for the limit and eviction.
#[derive(Debug)]
pub struct ConnectionTable {
    /// The listener's name in metrics and logs.
    name: &'static str,
    limits: ConnectionLimits,
    epoch: Instant,
    open: Mutex<Vec<Weak<Activity>>>,
    refused: AtomicU64,
    evicted: AtomicU64,
    reported_evictions: AtomicU64,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection has a request in flight.
    Full,
}

impl ConnectionTable {
    pub fn new(name: &'static str, limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(ConnectionTable {
            name,
            limits,
            epoch: Instant::now(),
            open: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            reported_evictions: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|w| w.strong_count() > 0);
        open.len()
    }

    /// Connections refused and evicted so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.refused.load(Ordering::Relaxed),
            self.evicted.load(Ordering::Relaxed),
        )
    }

    /// Admits a new connection, evicting the longest-idle one at the limit.
    pub fn admit<T>(self: &Arc<Self>, io: T) -> Result<Guarded<T>, Refusal> {
        let admitted = self.admit_inner(io);
        let (refused, evicted) = (admitted.is_err(), self.evicted.load(Ordering::Relaxed));
        crate::metrics::connections(
            self.name,
            self.open(),
            refused,
            evicted > self.reported_evictions.swap(evicted, Ordering::Relaxed),
        );
        admitted
    }

    fn admit_inner<T>(self: &Arc<Self>, io: T) -> Result<Guarded<T>, Refusal> {
        let activity = Arc::new(Activity {
            active: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            epoch: self.epoch,
        });
        activity.last_ms.store(activity.now_ms(), Ordering::Release);
        let accepted_ms = activity.now_ms();
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|w| w.strong_count() > 0);
            let live = open
                .iter()
                .filter(|w| {
                    w.upgrade()
                        .is_some_and(|a| !a.evicted.load(Ordering::Acquire))
                })
                .count();
            if live >= self.limits.max_connections {
                let victim = open
                    .iter()
                    .filter_map(Weak::upgrade)
                    .filter(|a| {
                        a.active.load(Ordering::Acquire) == 0 && !a.evicted.load(Ordering::Acquire)
                    })
                    .min_by_key(|a| a.last_ms.load(Ordering::Acquire));
                match victim {
                    Some(v) => {
                        v.evicted.store(true, Ordering::Release);
                        v.waker.wake();
                        self.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                        return Err(Refusal::Full);
                    }
                }
            }
            open.push(Arc::downgrade(&activity));
        }
        Ok(Guarded {
            io,
            activity,
            table: self.clone(),
            limits: self.limits,
            accepted_ms,
            timer: Box::pin(tokio::time::sleep(self.limits.first_request_timeout)),
            linger: None,
        })
    }
}

/// A connection's I/O, closed when idle, evicted or silent too long.
pub struct Guarded<T> {
    io: T,
    activity: Arc<Activity>,
    table: Arc<ConnectionTable>,
    limits: ConnectionLimits,
    accepted_ms: u64,
    timer: Pin<Box<Sleep>>,
    /// Set once our side of the connection is shut: how long to keep
    /// reading (and discarding) what the peer still sends.
    linger: Option<Pin<Box<Sleep>>>,
}

/// After iamd closes a connection, how long it keeps reading until the peer
/// closes too. Closing a socket with unread input sends a TCP reset, and a
/// reset makes the peer's kernel drop the answer it has not read yet (the
/// last response of a graceful shutdown, say); reading until the peer's own
/// close (or this long) lets the answer arrive whole.
const LINGER: Duration = Duration::from_secs(2);

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        // This connection still counts as open in the table until now.
        let open = self.table.open().saturating_sub(1);
        crate::metrics::connections(self.table.name, open, false, false);
    }
}

impl<T> Guarded<T> {
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// `Err` when the connection must close now; otherwise the timer is
    /// armed for the next moment it might have to.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let a = &self.activity;
        a.waker.register(cx.waker());
        if a.evicted.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed to make room: the connection limit was reached and this one was idle longest",
            ));
        }
        loop {
            let now = a.now_ms();
            let next_ms = if a.active.load(Ordering::Acquire) > 0 {
                // Busy: the admission layer's deadline bounds the request.
                now + ms(self.limits.idle_timeout)
            } else if a.begun.load(Ordering::Acquire) == 0 {
                let at = self.accepted_ms + ms(self.limits.first_request_timeout);
                if now >= at {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request began within the first-request timeout",
                    ));
                }
                at
            } else {
                let at = a.last_ms.load(Ordering::Acquire) + ms(self.limits.idle_timeout);
                if now >= at {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle for longer than the idle timeout",
                    ));
                }
                at
            };
            let deadline = tokio::time::Instant::from_std(a.epoch + Duration::from_millis(next_ms));
            // Only ever earlier: a timer that fires early finds nothing due
            // and re-arms (once per timeout period at most), where moving it
            // later on every read would update the timer wheel per read.
            if deadline < self.timer.deadline() || self.timer.is_elapsed() {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(()) => continue,
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.linger.is_none() {
            std::task::ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
            self.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    return match self.linger.as_mut().map(|l| l.as_mut().poll(cx)) {
                        Some(Poll::Pending) => Poll::Pending,
                        _ => Poll::Ready(Ok(())),
                    };
                }
            }
        }
    }

    // No vectored writes, on purpose: h2 then copies a DATA frame under
    // 1 KiB into its write buffer (over 256 bytes it would chain it and
    // flush before the trailers), so a typical answer, with its HEADERS,
    // DATA and trailers, leaves in one write instead of two. Envoy's
    // `Check` answers (300-500 bytes) cost half the syscalls and segments
    // this way; larger answers pay one more write each.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T> tonic::transport::server::Connected for Guarded<T> {
    type ConnectInfo = ConnectionActivity;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionActivity(self.activity.clone())
    }
}

/// Is this accept error the process or system running out of descriptors
/// or memory (which retrying at once cannot fix)?
pub fn is_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Accepts on `accept` forever, backing off on exhaustion; the caller admits.
pub async fn accept_with_backoff<T, A, F>(mut accept: A, what: &'static str) -> T
where
    A: FnMut() -> F,
    F: std::future::Future<Output = io::Result<T>>,
{
    let mut backoff = Duration::from_millis(10);
    loop {
        match accept().await {
            Ok(io) => return io,
            Err(e) if is_exhaustion(&e) => {
                crate::metrics::accept_exhausted(what);
                tracing::warn!(listener = what, error = %e, backoff_ms = backoff.as_millis() as u64,
                    "cannot accept: out of descriptors or memory; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            // A connection that failed before it was accepted: the next may not.
            Err(e) => tracing::debug!(listener = what, error = %e, "accept failed"),
        }
    }
}

/// A listener iamd accepts connections on.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_io(&self) -> impl std::future::Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        let (stream, _) = self.accept().await?;
        // A response written in several segments must not wait for the
        // client's delayed ACK (tens of milliseconds on small RPCs).
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        Ok(self.accept().await?.0)
    }
}

/// The connections a listener admits, for tonic's `serve_with_incoming`:
/// refused ones are closed here and never reach the server.
pub fn incoming<L: Accept>(
    listener: L,
    table: Arc<ConnectionTable>,
) -> impl futures_util::Stream<Item = Result<Guarded<L::Io>, std::convert::Infallible>> {
    futures_util::stream::unfold((listener, table), |(listener, table)| async move {
        loop {
            let io = accept_with_backoff(|| listener.accept_io(), table.name).await;
            match table.admit(io) {
                Ok(guarded) => return Some((Ok(guarded), (listener, table))),
                Err(Refusal::Full) => {
                    tracing::debug!(
                        listener = table.name,
                        "connection refused: every open connection is busy"
                    );
                }
            }
        }
    })
}

/// Raises the soft descriptor limit to the hard limit; returns the soft
/// limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    if current.maximum.is_some() && current.current != current.maximum {
        let raised = Rlimit {
            current: current.maximum,
            maximum: current.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the file descriptor limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Descriptors kept free of connections: the store's files, the reload,
/// the watch, logs, traces.
pub const DESCRIPTOR_RESERVE: u64 = 64;

/// The connection limit the descriptor limit leaves room for.
pub fn fit_to_descriptors(wanted: usize, others: usize, soft_limit: u64) -> usize {
    let room = soft_limit
        .saturating_sub(DESCRIPTOR_RESERVE)
        .saturating_sub(others as u64);
    wanted
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: max,
            idle_timeout: Duration::from_secs(60),
            first_request_timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn at_the_limit_the_longest_idle_connection_makes_room() {
        let table = ConnectionTable::new("test", limits(2));
        let a = table.admit(()).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = table.admit(()).unwrap();
        let busy_b = ConnectionActivity(b.activity.clone()).begin();
        let _c = table.admit(()).unwrap();
        assert!(
            a.activity.evicted.load(Ordering::Acquire),
            "a was idle longest"
        );
        assert!(!b.activity.evicted.load(Ordering::Acquire));
        // Now b is busy and c is idle: c goes next; then none is idle.
        let busy_c = ConnectionActivity(_c.activity.clone()).begin();
        assert_eq!(table.admit(()).err(), Some(Refusal::Full));
        assert_eq!(table.counts(), (1, 1));
        drop((busy_b, busy_c));
        assert!(table.admit(()).is_ok());
    }

    #[test]
    fn descriptor_exhaustion_is_recognised_and_limits_fit() {
        assert!(is_exhaustion(&io::Error::from_raw_os_error(24)));
        assert!(is_exhaustion(&io::Error::from_raw_os_error(23)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(103)));
        assert_eq!(fit_to_descriptors(1024, 64, 256), 128);
        assert_eq!(fit_to_descriptors(100, 64, 1 << 20), 100);
        assert_eq!(fit_to_descriptors(100, 64, 10), 1);
    }
}
