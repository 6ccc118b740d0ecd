//! A TCP fault proxy: the network faults of lockstep's tests, done to real bytes.
//!
//! A [`FaultProxy`] listens on a free loopback port and relays every connection to
//! one upstream address (usually a [`crate::RedisServer`]). A test points a client
//! (or a sync, or a replica) at the proxy instead of the server, and then switches
//! faults while traffic flows, through a cheap, cloneable [`ProxyHandle`]:
//!
//! - [`ProxyHandle::cut_all`]: close every open connection now; both the client and
//!   the server see the close. New connections are still accepted.
//! - [`PathMode::BlackHole`]: a lost network path. Connections stay open, bytes in
//!   both directions are **swallowed** (read and discarded, counted in
//!   [`ProxyStats::bytes_dropped`]); a byte stream is not resumed where it stopped,
//!   so after [`ProxyHandle::restore`] a client must expect a desynchronised
//!   protocol on a connection that carried traffic during the black hole.
//! - [`PathMode::Stall`]: a path that stops and later recovers, as TCP sees it.
//!   Connections stay open, bytes are **held** (the proxy stops reading, so the
//!   kernel's flow control pushes back on the sender) and are delivered in order
//!   after [`ProxyHandle::restore`].
//! - [`ProxyHandle::drop_open_flows`]: a flow dropped by a NAT or a firewall. The
//!   connections open now are black-holed for good (bytes swallowed, nothing closed);
//!   connections made afterwards pass. Nothing lifts it: the old flows are dead, a
//!   client that reconnects gets through. A close or reset by either end is not
//!   passed on either (a NAT drops those packets too); a cut still closes them.
//! - refuse: new connections are closed (with a reset) right after `accept`; open
//!   ones are untouched.
//! - latency: a one-way delay per direction; each chunk is forwarded at its arrival
//!   time plus the latency, so a pipeline is delayed, not serialised.
//! - bandwidth: a cap in bytes per second per direction, shared by all connections of
//!   the proxy (one link), enforced by a token bucket with a burst of
//!   [`BANDWIDTH_BURST_MS`] worth of bytes.
//!
//! Counters ([`ProxyStats`]) let a test measure what a fault did. The proxy and
//! every task it spawned stop when the [`FaultProxy`] is dropped (or, awaited, with
//! [`FaultProxy::stop`]); no task outlives it holding a port.
//!
//! # Limits
//! Each direction of each connection holds at most [`HELD_BYTES_MAX`] bytes (and
//! [`HELD_CHUNKS_MAX`] chunks) between reading and writing; when the bound is reached
//! the proxy stops reading and TCP flow control takes over. A chunk is at most
//! [`CHUNK_BYTES_MAX`] bytes.
//!
//! # Architecture
//! One accept task owns a [`JoinSet`] of connection tasks. A connection task relays
//! both directions; each direction is a reader (stamps each chunk with its arrival
//! time and applies black hole / stall on arrival) and a writer (waits for the
//! chunk's due time, applies stall / black hole again, then the bandwidth cap),
//! joined by a bounded channel. Faults live in a [`watch`] channel that every task
//! reads; a cut is a generation counter in another.
//!
//! The proxy works on bytes, below any protocol: it must never parse, rewrite or
//! invent the bytes it relays (a fault drops, holds, delays or closes them).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::server::RedisServer;

/// The most bytes read from a socket at once (one chunk).
pub const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// The most bytes held in flight per direction per connection (delayed by latency,
/// waiting for bandwidth, or held by a stall).
pub const HELD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The most chunks held in flight per direction per connection.
pub const HELD_CHUNKS_MAX: usize = 4096;
/// The bandwidth cap's token bucket holds at most this many milliseconds' worth of
/// bytes, so an idle link may send that much at once; transfers of `n` bytes at
/// `rate` take at least `(n - rate * BANDWIDTH_BURST_MS / 1000) / rate` seconds.
pub const BANDWIDTH_BURST_MS: u64 = 10;
/// How long the proxy waits for the upstream to accept a connection before it closes
/// the client's.
pub const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// A capped direction writes pieces of at most this many milliseconds' worth of bytes,
/// so a large chunk trickles rather than arriving in one late burst.
const BANDWIDTH_PIECE_MS: u64 = 20;

/// One direction of the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Requests: from the client (connected to the proxy) to the upstream server.
    ClientToServer,
    /// Replies: from the upstream server to the client.
    ServerToClient,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::ClientToServer, Direction::ServerToClient];

    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// What happens to bytes on the path (both directions, all connections).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathMode {
    /// Bytes are forwarded (subject to latency and bandwidth).
    #[default]
    Pass,
    /// Bytes are read and discarded; connections stay open. A lost network path.
    /// New connections are accepted (and connected upstream), but nothing passes.
    BlackHole,
    /// Bytes are held (not read, or not written if already read) and delivered in
    /// order once the path passes again. A path that stalls and recovers. New
    /// connections are accepted (and connected upstream), but nothing passes yet.
    Stall,
}

/// Latency and bandwidth of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// One-way delay added to every chunk.
    pub latency: Duration,
    /// Cap in bytes per second, shared by all connections; `None` is unlimited.
    pub rate_bytes_per_sec: Option<u64>,
}

/// Every fault the proxy can apply, as one value. `Faults::default()` is a clean
/// relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub path: PathMode,
    /// New connections are closed right after `accept`.
    pub refuse_new: bool,
    pub client_to_server: LinkFaults,
    pub server_to_client: LinkFaults,
}

impl Faults {
    pub fn link(&self, direction: Direction) -> &LinkFaults {
        match direction {
            Direction::ClientToServer => &self.client_to_server,
            Direction::ServerToClient => &self.server_to_client,
        }
    }

    pub fn link_mut(&mut self, direction: Direction) -> &mut LinkFaults {
        match direction {
            Direction::ClientToServer => &mut self.client_to_server,
            Direction::ServerToClient => &mut self.server_to_client,
        }
    }
}

/// A snapshot of the proxy's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Every connection the listener accepted, refused ones included.
    pub connections_accepted: u64,
    /// Connections being relayed now (accepted, not refused, not yet closed).
    pub connections_open: u64,
    /// Connections closed because refuse was on when they arrived.
    pub connections_refused: u64,
    /// Connections closed by [`ProxyHandle::cut_all`].
    pub connections_cut: u64,
    /// Connections closed because the upstream did not accept in time.
    pub upstream_connect_failures: u64,
    /// Bytes written to the server / to the client.
    pub bytes_client_to_server: u64,
    pub bytes_server_to_client: u64,
    /// Bytes swallowed by the black hole, per direction.
    pub bytes_dropped_client_to_server: u64,
    pub bytes_dropped_server_to_client: u64,
    /// Bytes read and not yet written (delayed, throttled or stalled) now, per
    /// direction; never more than [`HELD_BYTES_MAX`] per connection.
    pub bytes_held_client_to_server: u64,
    pub bytes_held_server_to_client: u64,
}

impl ProxyStats {
    pub fn bytes_forwarded(&self, direction: Direction) -> u64 {
        match direction {
            Direction::ClientToServer => self.bytes_client_to_server,
            Direction::ServerToClient => self.bytes_server_to_client,
        }
    }

    pub fn bytes_dropped(&self, direction: Direction) -> u64 {
        match direction {
            Direction::ClientToServer => self.bytes_dropped_client_to_server,
            Direction::ServerToClient => self.bytes_dropped_server_to_client,
        }
    }

    pub fn bytes_held(&self, direction: Direction) -> u64 {
        match direction {
            Direction::ClientToServer => self.bytes_held_client_to_server,
            Direction::ServerToClient => self.bytes_held_server_to_client,
        }
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    upstream_connect_failures: AtomicU64,
    forwarded: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    held: [AtomicU64; 2],
}

/// Keeps `connections_open` right however a connection task ends (including abort).
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> OpenGuard {
        shared.counters.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(shared)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A token bucket in the "debt" form: a reservation always succeeds and says when
/// the bytes may be sent; the level may go negative and refills at `rate`.
#[derive(Debug, Default)]
struct TokenBucket {
    /// Bytes that may be sent now; negative is debt. At most the burst.
    tokens: f64,
    last_refill: Option<Instant>,
}

impl TokenBucket {
    fn reserve(&mut self, bytes: usize, rate_bytes_per_sec: u64, now: Instant) -> Instant {
        let rate = rate_bytes_per_sec.max(1) as f64;
        let burst = rate * BANDWIDTH_BURST_MS as f64 / 1000.0;
        let elapsed = self.last_refill.map_or(0.0, |last| {
            now.saturating_duration_since(last).as_secs_f64()
        });
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last_refill = Some(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

fn piece_bytes(rate_bytes_per_sec: u64) -> usize {
    let piece = rate_bytes_per_sec.saturating_mul(BANDWIDTH_PIECE_MS) / 1000;
    usize::try_from(piece)
        .unwrap_or(CHUNK_BYTES_MAX)
        .clamp(1, CHUNK_BYTES_MAX)
}

/// State shared by the handle and every task of one proxy.
struct Shared {
    /// Where new connections are relayed to (see [`ProxyHandle::move_upstream`]).
    upstream: watch::Sender<SocketAddr>,
    faults: watch::Sender<Faults>,
    /// Generation of cuts; every change closes the connections open at that moment.
    cuts: watch::Sender<u64>,
    /// Id of the next accepted connection.
    next_flow: AtomicU64,
    /// Connections whose id is below this are dead flows (see
    /// [`ProxyHandle::drop_open_flows`]).
    dead_below: AtomicU64,
    counters: Counters,
    /// One bucket per direction, shared by all connections. A std `Mutex`: held for
    /// a few arithmetic operations, never across an `.await`.
    buckets: [Mutex<TokenBucket>; 2],
}

/// Switches a proxy's faults and reads its counters. Cheap to clone; every clone
/// controls the same proxy. Outliving the proxy is harmless (it then controls
/// nothing).
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("faults", &self.faults())
            .field("stats", &self.stats())
            .finish()
    }
}

impl ProxyHandle {
    /// Relays new connections to `upstream` from now on and closes the open ones:
    /// what a virtual IP does when it moves to another server (a failover behind a
    /// fixed address).
    pub fn move_upstream(&self, upstream: SocketAddr) {
        self.shared.upstream.send_replace(upstream);
        self.cut_all();
    }

    /// Closes every connection open now, on both sides. New ones are still accepted.
    pub fn cut_all(&self) {
        self.shared.cuts.send_modify(|generation| *generation += 1);
    }

    /// Swallows bytes in both directions without closing anything. A `restore`
    /// afterwards lets the same connections carry bytes again with a gap in them,
    /// which no TCP connection does: to model a frozen flow that recovers use
    /// [`stall`](Self::stall); for one that does not, cut the connections before
    /// restoring (or [`drop_open_flows`](Self::drop_open_flows)).
    pub fn black_hole(&self) {
        self.set_path(PathMode::BlackHole);
    }

    /// Black-holes every connection open now, for good, without closing it (a flow a
    /// NAT or firewall dropped); connections accepted afterwards pass. `restore` does
    /// not revive them.
    pub fn drop_open_flows(&self) {
        let next = self.shared.next_flow.load(Ordering::SeqCst);
        self.shared.dead_below.fetch_max(next, Ordering::SeqCst);
        // Wakes the pumps so a chunk already waiting is checked again.
        self.update(|_| {});
    }

    /// Holds bytes in both directions without closing anything.
    pub fn stall(&self) {
        self.set_path(PathMode::Stall);
    }

    /// Bytes pass again (latency, bandwidth and refuse stay as they are).
    pub fn restore(&self) {
        self.set_path(PathMode::Pass);
    }

    pub fn set_path(&self, path: PathMode) {
        self.update(|faults| faults.path = path);
    }

    /// When on, new connections are closed (reset) right after `accept`.
    pub fn refuse_new(&self, on: bool) {
        self.update(|faults| faults.refuse_new = on);
    }

    /// The same one-way `latency` in both directions (a round trip gains twice it).
    pub fn set_latency(&self, latency: Duration) {
        for direction in Direction::BOTH {
            self.set_latency_in(direction, latency);
        }
    }

    pub fn set_latency_in(&self, direction: Direction, latency: Duration) {
        self.update(|faults| faults.link_mut(direction).latency = latency);
    }

    /// The same cap in both directions; `None` is unlimited.
    pub fn set_bandwidth(&self, rate_bytes_per_sec: Option<u64>) {
        for direction in Direction::BOTH {
            self.set_bandwidth_in(direction, rate_bytes_per_sec);
        }
    }

    pub fn set_bandwidth_in(&self, direction: Direction, rate_bytes_per_sec: Option<u64>) {
        if let Some(rate) = rate_bytes_per_sec {
            assert!(rate > 0, "a bandwidth cap of 0 bytes/s is a stall");
        }
        // A new cap starts from an empty bucket: no burst, no debt from the old rate.
        *lock(&self.shared.buckets[direction.index()]) = TokenBucket::default();
        self.update(|faults| faults.link_mut(direction).rate_bytes_per_sec = rate_bytes_per_sec);
    }

    /// Back to a clean relay: pass, accept, no latency, no cap.
    pub fn reset(&self) {
        self.set_faults(Faults::default());
    }

    pub fn set_faults(&self, faults: Faults) {
        self.update(|current| *current = faults);
    }

    /// Changes any faults at once; connections see the change together.
    pub fn update(&self, change: impl FnOnce(&mut Faults)) {
        self.shared.faults.send_modify(change);
    }

    pub fn faults(&self) -> Faults {
        *self.shared.faults.borrow()
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            connections_accepted: load(&c.accepted),
            connections_open: load(&c.open),
            connections_refused: load(&c.refused),
            connections_cut: load(&c.cut),
            upstream_connect_failures: load(&c.upstream_connect_failures),
            bytes_client_to_server: load(&c.forwarded[0]),
            bytes_server_to_client: load(&c.forwarded[1]),
            bytes_dropped_client_to_server: load(&c.dropped[0]),
            bytes_dropped_server_to_client: load(&c.dropped[1]),
            bytes_held_client_to_server: load(&c.held[0]),
            bytes_held_server_to_client: load(&c.held[1]),
        }
    }

    /// Polls the counters until `condition` holds (returns them) or `timeout`
    /// passes (returns the last ones as the error, for the test's message).
    pub async fn wait_for_stats(
        &self,
        timeout: Duration,
        condition: impl Fn(&ProxyStats) -> bool,
    ) -> Result<ProxyStats, ProxyStats> {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if condition(&stats) {
                return Ok(stats);
            }
            if Instant::now() >= deadline {
                return Err(stats);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A poisoned bucket only means another task panicked mid-arithmetic; its numbers
/// are still usable.
fn lock(bucket: &Mutex<TokenBucket>) -> std::sync::MutexGuard<'_, TokenBucket> {
    bucket
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Whether connection `flow` was dropped by [`ProxyHandle::drop_open_flows`].
    fn is_dead(&self, flow: u64) -> bool {
        flow < self.dead_below.load(Ordering::SeqCst)
    }
}

/// A running proxy from a loopback port to `upstream`. Dereferences to its
/// [`ProxyHandle`]; dropping it stops the proxy and closes every connection.
pub struct FaultProxy {
    local_addr: SocketAddr,
    handle: ProxyHandle,
    stop: Option<oneshot::Sender<()>>,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 on a free port and relays to `upstream`. Must be called
    /// inside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: watch::Sender::new(upstream),
            faults: watch::Sender::new(Faults::default()),
            cuts: watch::Sender::new(0),
            next_flow: AtomicU64::new(0),
            dead_below: AtomicU64::new(0),
            counters: Counters::default(),
            buckets: Default::default(),
        });
        let (stop, stopped) = oneshot::channel();
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        tracing::debug!(%local_addr, %upstream, "fault proxy started");
        Ok(FaultProxy {
            local_addr,
            handle: ProxyHandle { shared },
            stop: Some(stop),
            accept_task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Where new connections go now.
    pub fn upstream(&self) -> SocketAddr {
        *self.handle.shared.upstream.borrow()
    }

    /// `server`'s URL (scheme, credentials) with the proxy's port: a client of it
    /// talks to `server` through the proxy. Assumes the proxy's upstream is `server`.
    pub fn url_for(&self, server: &RedisServer) -> String {
        // `server.url()` ends in `:<port>`; everything before the last colon stays.
        let url = server.url();
        let base = url
            .rsplit_once(':')
            .map_or(url.as_str(), |(base, _port)| base);
        format!("{base}:{}", self.port())
    }

    /// A handle that outlives borrows of the proxy (e.g. for a task that toggles
    /// faults while the test drives traffic).
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// Stops the proxy and waits until its listener and every connection are closed.
    /// Dropping does the same without waiting.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The accept task ends on its own after closing its connections; an error
        // here can only be a panic in it, which a test will have seen in the log.
        let _ = (&mut self.accept_task).await;
    }
}

impl Deref for FaultProxy {
    type Target = ProxyHandle;

    fn deref(&self) -> &ProxyHandle {
        &self.handle
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting drops the accept task's future: its listener and its JoinSet,
        // whose drop aborts every connection task, closing their sockets.
        self.accept_task.abort();
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("local_addr", &self.local_addr)
            .field("upstream", &self.upstream())
            .field("handle", &self.handle)
            .finish()
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    if shared.faults.borrow().refuse_new {
                        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                        // A reset rather than a FIN: the nearest thing to a refusal
                        // once the kernel has completed the handshake.
                        let _ = client.set_zero_linger();
                        drop(client);
                        continue;
                    }
                    // Subscribed here, so a cut issued from now on reaches it.
                    let cuts = shared.cuts.subscribe();
                    let upstream = *shared.upstream.borrow();
                    let flow = shared.next_flow.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve(client, upstream, shared.clone(), cuts, flow));
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Relays one connection until both directions end, either side fails, or a cut.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut cuts: watch::Receiver<u64>,
    flow: u64,
) {
    let _open = OpenGuard::new(shared.clone());
    tokio::select! {
        Ok(()) = cuts.changed() => {
            shared.counters.cut.fetch_add(1, Ordering::Relaxed);
        }
        result = relay(client, upstream, &shared, flow) => {
            if let Err(error) = result {
                tracing::debug!(%error, "fault proxy connection ended");
            }
        }
    }
    // Returning drops both sockets: the client and the server each see a close.
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    shared: &Arc<Shared>,
    flow: u64,
) -> io::Result<()> {
    let connect = tokio::time::timeout(
        Duration::from_millis(UPSTREAM_CONNECT_TIMEOUT_MS),
        TcpStream::connect(upstream),
    );
    let server = match connect.await {
        Ok(Ok(server)) => server,
        Ok(Err(error)) => {
            shared
                .counters
                .upstream_connect_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        Err(_elapsed) => {
            shared
                .counters
                .upstream_connect_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream connect timed out",
            ));
        }
    };
    // The proxy adds only the delay it is told to.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        pump(
            client_read,
            server_write,
            Direction::ClientToServer,
            shared,
            flow
        ),
        pump(
            server_read,
            client_write,
            Direction::ServerToClient,
            shared,
            flow
        ),
    )?;
    Ok(())
}

/// Bytes read but not yet written, with the share of the held-bytes bound they use.
struct Chunk {
    data: Bytes,
    arrived: Instant,
    _held: Held,
}

/// Accounts for a chunk's bytes while it is held: its permits of the bound, and the
/// `bytes_held` gauge; both are given back when the chunk is dropped (written,
/// swallowed, or abandoned with its connection).
struct Held {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    direction: Direction,
    shared: Arc<Shared>,
}

impl Held {
    fn new(permit: OwnedSemaphorePermit, direction: Direction, shared: &Arc<Shared>) -> Held {
        let bytes = permit.num_permits() as u64;
        shared.counters.held[direction.index()].fetch_add(bytes, Ordering::Relaxed);
        Held {
            _permit: permit,
            bytes,
            direction,
            shared: shared.clone(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shared.counters.held[self.direction.index()].fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// One direction: read, delay, write. Ends when the source reaches EOF and every
/// held byte was written (the EOF is then passed on as a write shutdown).
async fn pump(
    source: OwnedReadHalf,
    sink: OwnedWriteHalf,
    direction: Direction,
    shared: &Arc<Shared>,
    flow: u64,
) -> io::Result<()> {
    let (chunks_tx, chunks_rx) = mpsc::channel(HELD_CHUNKS_MAX);
    let held = Arc::new(Semaphore::new(HELD_BYTES_MAX));
    tokio::try_join!(
        read_side(source, chunks_tx, held, direction, shared, flow),
        write_side(sink, chunks_rx, direction, shared, flow),
    )?;
    Ok(())
}

fn gone(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_string())
}

async fn read_side(
    mut source: OwnedReadHalf,
    chunks: mpsc::Sender<Chunk>,
    held: Arc<Semaphore>,
    direction: Direction,
    shared: &Arc<Shared>,
    flow: u64,
) -> io::Result<()> {
    let mut faults = shared.faults.subscribe();
    let chunk_permits = u32::try_from(CHUNK_BYTES_MAX).map_err(|_| gone("chunk size"))?;
    loop {
        // Stall: stop reading, so the sender's kernel buffers fill and it blocks.
        faults
            .wait_for(|f| f.path != PathMode::Stall)
            .await
            .map_err(|_| gone("proxy"))?;
        let mut permit = held
            .clone()
            .acquire_many_owned(chunk_permits)
            .await
            .map_err(|_| gone("held-bytes semaphore"))?;
        let mut buffer = BytesMut::with_capacity(CHUNK_BYTES_MAX);
        let read = source.read_buf(&mut buffer).await;
        if shared.is_dead(flow) && !matches!(read, Ok(n) if n > 0) {
            // A dead flow carries no close or reset either: the other end never
            // learns (until a cut or the proxy's end).
            return std::future::pending().await;
        }
        let read_bytes = read?;
        if read_bytes == 0 {
            return Ok(());
        }
        let arrived = Instant::now();
        if faults.borrow().path == PathMode::BlackHole || shared.is_dead(flow) {
            shared.counters.dropped[direction.index()]
                .fetch_add(read_bytes as u64, Ordering::Relaxed);
            continue;
        }
        // Keep a permit per byte read; the rest of the chunk's permits go back.
        let held_permit = permit
            .split(read_bytes)
            .ok_or_else(|| gone("held-bytes permit"))?;
        drop(permit);
        let chunk = Chunk {
            data: buffer.freeze(),
            arrived,
            _held: Held::new(held_permit, direction, shared),
        };
        if chunks.send(chunk).await.is_err() {
            // The writer ended (its error is what try_join reports).
            return Ok(());
        }
    }
}

async fn write_side(
    mut sink: OwnedWriteHalf,
    mut chunks: mpsc::Receiver<Chunk>,
    direction: Direction,
    shared: &Shared,
    flow: u64,
) -> io::Result<()> {
    let mut faults = shared.faults.subscribe();
    while let Some(chunk) = chunks.recv().await {
        wait_until_due(&mut faults, chunk.arrived, direction).await?;
        let mut data = chunk.data;
        while !data.is_empty() {
            // Stall: hold what was read (the reader stops too).
            faults
                .wait_for(|f| f.path != PathMode::Stall)
                .await
                .map_err(|_| gone("proxy"))?;
            if faults.borrow().path == PathMode::BlackHole || shared.is_dead(flow) {
                shared.counters.dropped[direction.index()]
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                break;
            }
            let piece_len = match faults.borrow().link(direction).rate_bytes_per_sec {
                None => data.len(),
                Some(rate) => data.len().min(piece_bytes(rate)),
            };
            if !wait_for_bandwidth(&mut faults, shared, direction, piece_len).await?
                || faults.borrow().path != PathMode::Pass
            {
                // The cap or the path changed while waiting: look at both again.
                continue;
            }
            let piece = data.split_to(piece_len);
            sink.write_all(&piece).await?;
            shared.counters.forwarded[direction.index()]
                .fetch_add(piece_len as u64, Ordering::Relaxed);
        }
    }
    if shared.is_dead(flow) {
        // A dead flow does not pass the close on (see `read_side`).
        return std::future::pending().await;
    }
    // The source reached EOF: pass the half-close on.
    sink.shutdown().await
}

/// Waits until `arrived` plus the direction's latency; a latency changed meanwhile
/// applies to the chunks already waiting.
async fn wait_until_due(
    faults: &mut watch::Receiver<Faults>,
    arrived: Instant,
    direction: Direction,
) -> io::Result<()> {
    loop {
        let latency = faults.borrow_and_update().link(direction).latency;
        if latency.is_zero() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep_until(arrived + latency) => return Ok(()),
            changed = faults.changed() => changed.map_err(|_| gone("proxy"))?,
        }
    }
}

/// Reserves `bytes` in the direction's bucket and waits until they may be sent.
/// Returns false if the cap changed while waiting (the reservation is void then:
/// changing the cap empties the bucket).
async fn wait_for_bandwidth(
    faults: &mut watch::Receiver<Faults>,
    shared: &Shared,
    direction: Direction,
    bytes: usize,
) -> io::Result<bool> {
    let Some(rate) = faults.borrow().link(direction).rate_bytes_per_sec else {
        return Ok(true);
    };
    let send_at = lock(&shared.buckets[direction.index()]).reserve(bytes, rate, Instant::now());
    if send_at <= Instant::now() {
        return Ok(true);
    }
    tokio::select! {
        () = tokio::time::sleep_until(send_at) => Ok(true),
        changed = faults.wait_for(|f| f.link(direction).rate_bytes_per_sec != Some(rate)) => {
            changed.map_err(|_| gone("proxy"))?;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_bucket_makes_n_bytes_wait_n_over_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::default();
        let at = bucket.reserve(1000, 1000, start);
        assert_eq!(at - start, Duration::from_secs(1));
        // Debt accumulates: the next 500 bytes wait behind the first 1000.
        let at = bucket.reserve(500, 1000, start);
        assert_eq!(at - start, Duration::from_millis(1500));
    }

    #[test]
    fn an_idle_bucket_allows_only_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::default();
        bucket.reserve(0, 1000, start);
        let later = start + Duration::from_secs(60);
        // Burst is 10 ms of 1000 B/s = 10 bytes.
        assert_eq!(bucket.reserve(10, 1000, later), later);
        assert_eq!(
            bucket.reserve(1, 1000, later) - later,
            Duration::from_millis(1)
        );
    }

    #[test]
    fn pieces_are_a_fraction_of_a_second_and_never_empty() {
        assert_eq!(piece_bytes(1), 1);
        assert_eq!(piece_bytes(100_000), 2_000);
        assert_eq!(piece_bytes(u64::MAX), CHUNK_BYTES_MAX);
    }
}
