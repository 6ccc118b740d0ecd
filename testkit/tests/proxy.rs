//! The TCP fault proxy in front of a real redis-server (7.0): each fault is shown to
//! do what it says, measured on the client, on the server and in the proxy's
//! counters: clean relay, cut, black hole, dropped flows, stall, refuse, latency, bandwidth cap, and
//! stopping the proxy.
//!
//! Timing assertions have a hard side and a soft side. The hard side is what the
//! proxy guarantees (a delay is never shorter than configured; a capped transfer is
//! never faster than the cap); the soft side (not absurdly slower) has a wide
//! tolerance, since these tests share 2 noisy cores with everything else.

use std::time::{Duration, Instant};

use lockstep_testkit::info;
use lockstep_testkit::proxy::{
    Direction, PathMode, BANDWIDTH_BURST_MS, CHUNK_BYTES_MAX, HELD_BYTES_MAX,
};
use lockstep_testkit::Run;
use lockstep_testkit::{Auth, FaultProxy, RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long "nothing arrives" is watched for.
const SILENCE_WINDOW: Duration = Duration::from_millis(600);
/// How long a close or a reply may take to show up on a loaded machine.
const ARRIVAL_BOUND: Duration = Duration::from_secs(3);

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const PONG: &[u8] = b"+PONG\r\n";

/// A redis-server, a proxy in front of it, and a direct connection to the server for
/// measuring it (not through the proxy).
struct Rig {
    server: RedisServer,
    proxy: FaultProxy,
    direct: MultiplexedConnection,
}

impl Rig {
    async fn start() -> anyhow::Result<Rig> {
        let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let proxy = FaultProxy::start(server.addr()).await?;
        let direct = server.client().await?;
        Ok(Rig {
            server,
            proxy,
            direct,
        })
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        Ok(TcpStream::connect(self.proxy.local_addr()).await?)
    }

    /// Clients the server has besides our direct connection: the proxied ones.
    async fn proxied_clients_on_server(&mut self) -> anyhow::Result<i64> {
        let clients = info::info(&mut self.direct, "clients").await?;
        Ok(clients.int("connected_clients")? - 1)
    }

    async fn wait_for_proxied_clients(&mut self, expected: i64) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let now = self.proxied_clients_on_server().await?;
            if now == expected {
                return Ok(start.elapsed());
            }
            anyhow::ensure!(
                start.elapsed() < ARRIVAL_BOUND,
                "server has {now} proxied clients, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A RESP command as bytes.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A RESP bulk string reply as bytes.
fn bulk(value: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Read {
    Bytes(Vec<u8>),
    /// EOF or an error such as a reset: the connection is closed.
    Closed,
    /// Nothing (or not all of it) arrived in time; the connection is still open.
    TimedOut,
}

/// Reads exactly `len` bytes, or says why not.
async fn read_exactly(stream: &mut TcpStream, len: usize, within: Duration) -> Read {
    let mut buffer = vec![0; len];
    match tokio::time::timeout(within, stream.read_exact(&mut buffer)).await {
        Ok(Ok(_)) => Read::Bytes(buffer),
        Ok(Err(_)) => Read::Closed,
        Err(_) => Read::TimedOut,
    }
}

/// Sends `request` and reads a reply of exactly `expected.len()` bytes.
async fn round_trip(
    stream: &mut TcpStream,
    request: &[u8],
    expected: &[u8],
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    stream.write_all(request).await?;
    match read_exactly(stream, expected.len(), ARRIVAL_BOUND).await {
        Read::Bytes(reply) => {
            anyhow::ensure!(
                reply == expected,
                "reply {:?}, expected {:?}",
                String::from_utf8_lossy(&reply),
                String::from_utf8_lossy(expected)
            );
            Ok(start.elapsed())
        }
        other => anyhow::bail!("no reply: {other:?}"),
    }
}

/// Waits for the connection to close (EOF or error); returns how long it took.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            bound.saturating_sub(start.elapsed()),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => anyhow::bail!("connection still open after {bound:?}"),
        }
    }
}

async fn assert_silent(stream: &mut TcpStream, what: &str) {
    let read = read_exactly(stream, 1, SILENCE_WINDOW).await;
    assert_eq!(
        read,
        Read::TimedOut,
        "{what}: expected an open, silent connection"
    );
}

#[tokio::test]
async fn relays_redis_traffic_and_counts_every_byte() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;

    // Raw RESP: the exact bytes are known, so the counters must match them exactly.
    let mut conn = rig.connect().await?;
    round_trip(&mut conn, PING, PONG).await?;
    let set = command(&[b"SET", b"k", b"v\0\r\nbinary"]);
    round_trip(&mut conn, &set, b"+OK\r\n").await?;
    let get = command(&[b"GET", b"k"]);
    let value = bulk(b"v\0\r\nbinary");
    round_trip(&mut conn, &get, &value).await?;

    let stats = rig.proxy.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_open, 1);
    assert_eq!(
        stats.bytes_client_to_server,
        (PING.len() + set.len() + get.len()) as u64
    );
    assert_eq!(
        stats.bytes_server_to_client,
        (PONG.len() + b"+OK\r\n".len() + value.len()) as u64
    );
    assert_eq!(rig.proxied_clients_on_server().await?, 1);

    // A real client library works through it too, and the write reached the server.
    let client = redis::Client::open(rig.proxy.url_for(&rig.server))?;
    let mut via_proxy = client.get_multiplexed_async_connection().await?;
    via_proxy.run::<()>("SET through proxy").await?;
    let seen: String = rig.direct.run("GET through").await?;
    assert_eq!(seen, "proxy");

    // Closing the client closes the server side, and the open gauge follows.
    drop(conn);
    drop(via_proxy);
    drop(client);
    rig.wait_for_proxied_clients(0).await?;
    let stats = rig
        .proxy
        .wait_for_stats(ARRIVAL_BOUND, |s| s.connections_open == 0)
        .await
        .map_err(|s| anyhow::anyhow!("connections still open: {s:?}"))?;
    assert_eq!(stats.connections_accepted, 2);
    assert_eq!(stats.connections_cut, 0);
    Ok(())
}

#[tokio::test]
async fn url_for_reaches_a_server_with_credentials_through_the_proxy() -> anyhow::Result<()> {
    for auth in [Auth::password(), Auth::acl_user()] {
        let server =
            RedisServer::start(ServerConfig::new(RedisVersion::V7_0).auth(auth.clone())).await?;
        let proxy = FaultProxy::start(server.addr()).await?;
        let url = proxy.url_for(&server);
        assert!(url.ends_with(&format!(":{}", proxy.port())), "{url}");
        let mut conn = redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await?;
        let pong: String = conn.run("PING").await?;
        assert_eq!(pong, "PONG", "{auth:?}");
        assert_eq!(proxy.stats().connections_open, 1);
    }
    Ok(())
}

#[tokio::test]
async fn cut_all_closes_every_connection_on_both_sides_and_accepts_new_ones() -> anyhow::Result<()>
{
    let mut rig = Rig::start().await?;
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut conn = rig.connect().await?;
        round_trip(&mut conn, PING, PONG).await?;
        conns.push(conn);
    }
    assert_eq!(rig.proxied_clients_on_server().await?, 3);

    rig.proxy.cut_all();
    for conn in &mut conns {
        let took = closed_within(conn, ARRIVAL_BOUND).await?;
        eprintln!("client saw the cut after {took:?}");
    }
    let took = rig.wait_for_proxied_clients(0).await?;
    eprintln!("server saw the cut within {took:?}");
    let stats = rig
        .proxy
        .wait_for_stats(ARRIVAL_BOUND, |s| s.connections_open == 0)
        .await
        .map_err(|s| anyhow::anyhow!("connections still open: {s:?}"))?;
    assert_eq!(stats.connections_cut, 3);

    // The listener is untouched: a new connection goes through.
    let mut fresh = rig.connect().await?;
    round_trip(&mut fresh, PING, PONG).await?;
    assert_eq!(rig.proxy.stats().connections_accepted, 4);
    assert_eq!(rig.proxy.stats().connections_cut, 3);
    Ok(())
}

#[tokio::test]
async fn black_hole_swallows_bytes_without_closing_then_traffic_flows_again() -> anyhow::Result<()>
{
    let mut rig = Rig::start().await?;
    let mut old = rig.connect().await?;
    round_trip(&mut old, PING, PONG).await?;
    let before = rig.proxy.stats();

    rig.proxy.black_hole();
    old.write_all(PING).await?;
    assert_silent(&mut old, "open connection in a black hole").await;
    // A new connection is accepted, but nothing gets through either.
    let mut new = rig.connect().await?;
    new.write_all(PING).await?;
    assert_silent(&mut new, "new connection in a black hole").await;

    // Nothing was closed: the server still has both clients.
    assert_eq!(rig.proxied_clients_on_server().await?, 2);
    let during = rig.proxy.stats();
    assert_eq!(during.connections_open, 2);
    assert_eq!(during.bytes_client_to_server, before.bytes_client_to_server);
    assert_eq!(during.bytes_server_to_client, before.bytes_server_to_client);
    assert_eq!(
        during.bytes_dropped(Direction::ClientToServer),
        2 * PING.len() as u64
    );

    // Back to normal: both connections work, and the swallowed PINGs stay lost (each
    // connection gets exactly one PONG for its one new PING, nothing more).
    rig.proxy.restore();
    assert_eq!(rig.proxy.faults().path, PathMode::Pass);
    for conn in [&mut old, &mut new] {
        round_trip(conn, PING, PONG).await?;
        assert_silent(conn, "after the black hole").await;
    }
    let after = rig.proxy.stats();
    assert_eq!(
        after.bytes_client_to_server,
        before.bytes_client_to_server + 2 * PING.len() as u64
    );
    assert_eq!(
        after.bytes_dropped(Direction::ClientToServer),
        2 * PING.len() as u64
    );
    assert_eq!(after.bytes_dropped(Direction::ServerToClient), 0);
    Ok(())
}

#[tokio::test]
async fn dropped_flows_stay_dead_while_new_connections_pass() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let mut old = rig.connect().await?;
    round_trip(&mut old, PING, PONG).await?;

    rig.proxy.drop_open_flows();
    old.write_all(PING).await?;
    assert_silent(&mut old, "a dropped flow").await;
    // A new connection (a client that reconnects) gets through at once.
    let mut new = rig.connect().await?;
    round_trip(&mut new, PING, PONG).await?;
    // Nothing was closed, and restore does not revive the dead flow.
    assert_eq!(rig.proxied_clients_on_server().await?, 2);
    rig.proxy.restore();
    old.write_all(PING).await?;
    assert_silent(&mut old, "a dropped flow after restore").await;
    round_trip(&mut new, PING, PONG).await?;
    assert_eq!(
        rig.proxy.stats().bytes_dropped(Direction::ClientToServer),
        2 * PING.len() as u64
    );
    // The server closing the dead flow (as a primary does after its repl-timeout)
    // does not reach the client either.
    rig.direct
        .run::<i64>("CLIENT KILL TYPE normal SKIPME yes")
        .await?;
    assert_silent(&mut old, "a dropped flow the server closed").await;
    Ok(())
}

#[tokio::test]
async fn black_hole_swallows_replies_already_on_their_way() -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let mut conn = rig.connect().await?;
    round_trip(&mut conn, PING, PONG).await?;

    // The request gets through, then the path goes while the reply is delayed.
    rig.proxy
        .set_latency_in(Direction::ServerToClient, Duration::from_millis(300));
    conn.write_all(PING).await?;
    rig.proxy
        .wait_for_stats(ARRIVAL_BOUND, |s| {
            s.bytes_client_to_server == 2 * PING.len() as u64
        })
        .await
        .map_err(|s| anyhow::anyhow!("request not forwarded: {s:?}"))?;
    rig.proxy.black_hole();
    assert_silent(&mut conn, "reply in flight into a black hole").await;
    let stats = rig
        .proxy
        .wait_for_stats(ARRIVAL_BOUND, |s| s.bytes_dropped_server_to_client > 0)
        .await
        .map_err(|s| anyhow::anyhow!("reply not dropped: {s:?}"))?;
    assert_eq!(stats.bytes_dropped_server_to_client, PONG.len() as u64);
    Ok(())
}

#[tokio::test]
async fn stall_holds_bytes_and_delivers_them_in_order_on_restore() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let mut conn = rig.connect().await?;
    round_trip(&mut conn, PING, PONG).await?;

    rig.proxy.stall();
    let mut requests = Vec::new();
    let mut replies = Vec::new();
    for i in 0..5 {
        let text = format!("held-{i}");
        requests.extend(command(&[b"ECHO", text.as_bytes()]));
        replies.extend(bulk(text.as_bytes()));
    }
    conn.write_all(&requests).await?;
    assert_silent(&mut conn, "stalled connection").await;
    assert_eq!(rig.proxied_clients_on_server().await?, 1);
    assert_eq!(rig.proxy.stats().bytes_client_to_server, PING.len() as u64);

    rig.proxy.restore();
    match read_exactly(&mut conn, replies.len(), ARRIVAL_BOUND).await {
        Read::Bytes(got) => assert_eq!(got, replies, "held requests answered in order"),
        other => panic!("held requests never answered: {other:?}"),
    }
    let stats = rig.proxy.stats();
    assert_eq!(stats.bytes_dropped_client_to_server, 0);
    assert_eq!(
        stats.bytes_client_to_server,
        (PING.len() + requests.len()) as u64
    );
    Ok(())
}

#[tokio::test]
async fn refuse_closes_new_connections_and_leaves_open_ones_alone() -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let mut open = rig.connect().await?;
    round_trip(&mut open, PING, PONG).await?;

    rig.proxy.refuse_new(true);
    let mut refused = rig.connect().await?;
    // The write may fail or not depending on timing; the read must see the close.
    let _ = refused.write_all(PING).await;
    closed_within(&mut refused, ARRIVAL_BOUND).await?;
    round_trip(&mut open, PING, PONG).await?;

    rig.proxy.refuse_new(false);
    let mut accepted = rig.connect().await?;
    round_trip(&mut accepted, PING, PONG).await?;
    let stats = rig.proxy.stats();
    assert_eq!(stats.connections_accepted, 3);
    assert_eq!(stats.connections_refused, 1);
    assert_eq!(stats.connections_open, 2);
    Ok(())
}

/// Round trips of PING on `conn`, sorted.
async fn ping_times(conn: &mut TcpStream, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        times.push(round_trip(conn, PING, PONG).await?);
    }
    times.sort();
    Ok(times)
}

#[tokio::test]
async fn latency_adds_at_least_the_configured_delay_to_each_round_trip() -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let mut conn = rig.connect().await?;
    let baseline = ping_times(&mut conn, 20).await?;
    let baseline_median = baseline[baseline.len() / 2];

    // Both directions: a round trip gains twice the one-way delay.
    let one_way = Duration::from_millis(60);
    rig.proxy.set_latency(one_way);
    let delayed = ping_times(&mut conn, 10).await?;
    let (min, median) = (delayed[0], delayed[delayed.len() / 2]);
    eprintln!("baseline median {baseline_median:?}; with {one_way:?} each way: min {min:?}, median {median:?}");
    assert!(
        min >= 2 * one_way,
        "round trip {min:?} shorter than 2 x {one_way:?}"
    );
    assert!(
        median < baseline_median + 2 * one_way + Duration::from_millis(250),
        "median {median:?} far above the configured delay"
    );

    // One direction only.
    rig.proxy.set_latency(Duration::ZERO);
    rig.proxy
        .set_latency_in(Direction::ClientToServer, Duration::from_millis(100));
    let delayed = ping_times(&mut conn, 5).await?;
    assert!(delayed[0] >= Duration::from_millis(100), "{delayed:?}");
    assert!(
        delayed[2] < baseline_median + Duration::from_millis(350),
        "{delayed:?}"
    );

    // Back to no latency: round trips are fast again.
    rig.proxy.reset();
    let after = ping_times(&mut conn, 5).await?;
    assert!(after[2] < Duration::from_millis(100), "{after:?}");
    Ok(())
}

#[tokio::test]
async fn latency_delays_a_pipeline_without_serialising_it() -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let mut conn = rig.connect().await?;
    round_trip(&mut conn, PING, PONG).await?;
    let one_way = Duration::from_millis(100);
    rig.proxy.set_latency(one_way);

    // 20 requests sent as 20 separate writes 5 ms apart; if the proxy serialised
    // them, the last reply would come after 20 round trips (4 s).
    let count = 20;
    let mut expected = Vec::new();
    let start = Instant::now();
    for i in 0..count {
        let text = format!("order-{i}");
        conn.write_all(&command(&[b"ECHO", text.as_bytes()]))
            .await?;
        expected.extend(bulk(text.as_bytes()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = read_exactly(&mut conn, expected.len(), Duration::from_secs(10)).await;
    let took = start.elapsed();
    assert_eq!(got, Read::Bytes(expected), "replies in request order");
    eprintln!("pipeline of {count} with {one_way:?} each way took {took:?}");
    assert!(took >= 2 * one_way, "{took:?}");
    assert!(took < Duration::from_millis(1_500), "serialised? {took:?}");
    Ok(())
}

#[tokio::test]
async fn bandwidth_cap_bounds_transfer_time_in_each_direction() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let rate: u64 = 64 * 1024;
    let burst = rate * BANDWIDTH_BURST_MS / 1000;
    let value = vec![b'x'; 96 * 1024];

    // Requests: a SET of a large value, capped from client to server.
    rig.proxy
        .set_bandwidth_in(Direction::ClientToServer, Some(rate));
    let mut conn = rig.connect().await?;
    let set = command(&[b"SET", b"big", &value]);
    let took = round_trip(&mut conn, &set, b"+OK\r\n").await?;
    let floor = Duration::from_secs_f64((set.len() as u64 - burst) as f64 / rate as f64);
    eprintln!(
        "{} bytes up at {rate} B/s took {took:?} (floor {floor:?})",
        set.len()
    );
    assert!(took >= floor, "{took:?} < {floor:?}");
    assert!(took < 3 * floor + Duration::from_secs(1), "{took:?}");

    // Replies: a GET of it, capped from server to client only.
    rig.proxy.set_bandwidth_in(Direction::ClientToServer, None);
    rig.proxy
        .set_bandwidth_in(Direction::ServerToClient, Some(rate));
    let reply = bulk(&value);
    let took = round_trip(&mut conn, &command(&[b"GET", b"big"]), &reply).await?;
    let floor = Duration::from_secs_f64((reply.len() as u64 - burst) as f64 / rate as f64);
    eprintln!(
        "{} bytes down at {rate} B/s took {took:?} (floor {floor:?})",
        reply.len()
    );
    assert!(took >= floor, "{took:?} < {floor:?}");
    assert!(took < 3 * floor + Duration::from_secs(1), "{took:?}");

    // Unlimited again: the same GET is fast.
    rig.proxy.set_bandwidth(None);
    let took = round_trip(&mut conn, &command(&[b"GET", b"big"]), &reply).await?;
    assert!(took < Duration::from_millis(500), "{took:?}");

    let stats = rig.proxy.stats();
    assert_eq!(
        stats.bytes_server_to_client,
        (b"+OK\r\n".len() + 2 * reply.len()) as u64
    );
    let stored: Vec<u8> = rig.direct.run("GET big").await?;
    assert_eq!(stored, value);
    Ok(())
}

#[tokio::test]
async fn bandwidth_cap_is_shared_by_all_connections() -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let value = vec![b'y'; 32 * 1024];
    let mut direct = rig.server.client().await?;
    direct.run_args::<()>(("SET", "shared", &value)).await?;
    let rate: u64 = 64 * 1024;
    let burst = rate * BANDWIDTH_BURST_MS / 1000;
    rig.proxy
        .set_bandwidth_in(Direction::ServerToClient, Some(rate));

    let reply = bulk(&value);
    let get = command(&[b"GET", b"shared"]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut conn = rig.connect().await?;
        let (get, reply) = (get.clone(), reply.clone());
        tasks.push(tokio::spawn(async move {
            round_trip(&mut conn, &get, &reply).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let took = start.elapsed();
    let total = 3 * reply.len() as u64;
    let floor = Duration::from_secs_f64((total - burst) as f64 / rate as f64);
    eprintln!(
        "3 x {} bytes at a shared {rate} B/s took {took:?} (floor {floor:?})",
        reply.len()
    );
    assert!(took >= floor, "{took:?} < {floor:?}");
    Ok(())
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections_and_frees_its_port() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let mut conn = rig.connect().await?;
    round_trip(&mut conn, PING, PONG).await?;
    let addr = rig.proxy.local_addr();
    let handle = rig.proxy.handle();

    let other = FaultProxy::start(rig.server.addr()).await?;
    let proxy = std::mem::replace(&mut rig.proxy, other);
    drop(proxy);
    closed_within(&mut conn, ARRIVAL_BOUND).await?;
    rig.wait_for_proxied_clients(0).await?;
    // The handle outlives the proxy harmlessly and saw the connection close.
    handle
        .wait_for_stats(ARRIVAL_BOUND, |s| s.connections_open == 0)
        .await
        .map_err(|s| anyhow::anyhow!("connections still open: {s:?}"))?;
    handle.cut_all();

    // The listener is gone: connecting is refused (allow the abort a moment).
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            start.elapsed() < ARRIVAL_BOUND,
            "port {addr} still accepting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test]
async fn stop_waits_until_the_port_is_free_and_connections_are_closed() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let proxy = FaultProxy::start(rig.server.addr()).await?;
    let addr = proxy.local_addr();
    let mut conn = TcpStream::connect(addr).await?;
    round_trip(&mut conn, PING, PONG).await?;
    let handle = proxy.handle();
    proxy.stop().await;
    assert_eq!(handle.stats().connections_open, 0);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "port {addr} still accepting"
    );
    closed_within(&mut conn, ARRIVAL_BOUND).await?;
    rig.wait_for_proxied_clients(0).await?;
    Ok(())
}

#[tokio::test]
async fn faults_switch_while_a_client_keeps_writing() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let client = redis::Client::open(rig.proxy.url_for(&rig.server))?;
    let handle = rig.proxy.handle();
    // A writer that counts acknowledged INCRs; it reconnects after a cut.
    let writer = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_millis(2_500);
        let mut acked = 0u64;
        while Instant::now() < deadline {
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            while Instant::now() < deadline {
                let incr = conn.run::<i64>("INCR counter");
                match tokio::time::timeout(Duration::from_millis(300), incr).await {
                    Ok(Ok(_)) => acked += 1,
                    _ => break,
                }
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.set_latency(Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.set_bandwidth(Some(10_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.cut_all();
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.reset();
    let acked = writer.await?;
    let counter: i64 = rig.direct.run("GET counter").await?;
    let stats = handle.stats();
    eprintln!("acked {acked}, counter {counter}, {stats:?}");
    assert!(acked > 0);
    // Every acknowledged INCR happened; at most one per cut connection was applied
    // without its reply getting back.
    assert!(counter as u64 >= acked);
    assert!(counter as u64 <= acked + stats.connections_cut + stats.connections_accepted);
    assert!(stats.connections_cut >= 1);
    assert!(
        stats.connections_accepted >= 2,
        "the writer reconnected after the cut"
    );
    Ok(())
}

#[tokio::test]
async fn held_bytes_stay_within_the_bound_under_latency() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    rig.proxy
        .set_latency_in(Direction::ClientToServer, Duration::from_millis(1_500));
    let value_len = 3 * HELD_BYTES_MAX;
    let set = command(&[b"SET", b"big", &vec![b'z'; value_len]]);
    let (mut read, mut write) = rig.connect().await?.into_split();
    let writer = tokio::spawn(async move { write.write_all(&set).await.map(|()| write) });

    // While the delay holds everything, the proxy reads up to its bound and stops.
    let mut held_max = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let stats = rig.proxy.stats();
        assert_eq!(
            stats.bytes_client_to_server, 0,
            "delayed bytes were written"
        );
        held_max = held_max.max(stats.bytes_held(Direction::ClientToServer));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("held at most {held_max} bytes (bound {HELD_BYTES_MAX})");
    assert!(held_max <= HELD_BYTES_MAX as u64);
    assert!(
        held_max > (HELD_BYTES_MAX - CHUNK_BYTES_MAX) as u64,
        "bound never reached"
    );

    // Dropping the delay lets the whole value through, intact.
    rig.proxy.set_latency(Duration::ZERO);
    let _write = tokio::time::timeout(ARRIVAL_BOUND, writer).await???;
    let mut reply = [0u8; 5];
    tokio::time::timeout(ARRIVAL_BOUND, read.read_exact(&mut reply)).await??;
    assert_eq!(&reply, b"+OK\r\n");
    let len: usize = rig.direct.run("STRLEN big").await?;
    assert_eq!(len, value_len);
    let stats = rig
        .proxy
        .wait_for_stats(ARRIVAL_BOUND, |s| s.bytes_held_client_to_server == 0)
        .await
        .map_err(|s| anyhow::anyhow!("bytes still held: {s:?}"))?;
    assert!(stats.bytes_client_to_server > value_len as u64);
    Ok(())
}

async fn replication_field(server: &RedisServer, field: &str) -> anyhow::Result<String> {
    let replication = server.info("replication").await?;
    Ok(replication.get(field).unwrap_or_default().to_owned())
}

async fn wait_for_link(replica: &RedisServer, status: &str, bound: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let now = replication_field(replica, "master_link_status").await?;
        if now == status {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < bound,
            "replica link {now:?}, expected {status:?} within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn dbsize(server: &RedisServer) -> anyhow::Result<i64> {
    let mut conn = server.client().await?;
    conn.run("DBSIZE").await
}

/// The use the proxy is for: a replication link through it, cut and kept down while
/// the primary takes writes, then let back up; measured on both servers.
#[tokio::test]
async fn a_replica_behind_the_proxy_loses_its_link_on_cut_and_resyncs_partially(
) -> anyhow::Result<()> {
    let primary = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let proxy = FaultProxy::start(primary.addr()).await?;
    let replica =
        RedisServer::start(ServerConfig::new(RedisVersion::V7_0).replica_of(proxy.local_addr()))
            .await?;
    wait_for_link(&replica, "up", Duration::from_secs(10)).await?;
    let mut writes = primary.client().await?;
    writes.run::<()>("SET before 1").await?;

    proxy.refuse_new(true);
    proxy.cut_all();
    wait_for_link(&replica, "down", ARRIVAL_BOUND).await?;
    for i in 0..100 {
        writes
            .run_args::<()>(("SET", format!("during-{i}"), i))
            .await?;
    }
    // The replica retries about once a second; give it two tries.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(
        replication_field(&replica, "master_link_status").await?,
        "down"
    );
    assert!(
        dbsize(&replica).await? <= 1,
        "writes reached a cut-off replica"
    );
    let refused = proxy.stats().connections_refused;
    assert!(refused >= 1, "the replica did not retry");
    let partial_before: i64 = primary.info("stats").await?.int("sync_partial_ok")?;

    proxy.refuse_new(false);
    wait_for_link(&replica, "up", Duration::from_secs(10)).await?;
    let start = Instant::now();
    while dbsize(&replica).await? != 101 {
        assert!(start.elapsed() < ARRIVAL_BOUND, "replica did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let partial_after: i64 = primary.info("stats").await?.int("sync_partial_ok")?;
    assert_eq!(partial_after, partial_before + 1, "resync was not partial");
    let stats = proxy.stats();
    eprintln!("{stats:?}");
    assert!(stats.connections_cut >= 1);
    Ok(())
}

#[tokio::test]
async fn a_missing_upstream_closes_the_client_and_is_counted() -> anyhow::Result<()> {
    // A port that was free a moment ago: nothing listens on it.
    let vacant = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let proxy = FaultProxy::start(vacant).await?;
    let mut conn = TcpStream::connect(proxy.local_addr()).await?;
    closed_within(&mut conn, ARRIVAL_BOUND).await?;
    let stats = proxy
        .wait_for_stats(ARRIVAL_BOUND, |s| s.connections_open == 0)
        .await
        .map_err(|s| anyhow::anyhow!("connection still open: {s:?}"))?;
    assert_eq!(stats.upstream_connect_failures, 1);
    assert_eq!(stats.connections_accepted, 1);
    Ok(())
}

/// Moving the upstream (a virtual IP after a failover): open connections are closed,
/// new ones reach the new server.
#[tokio::test]
async fn move_upstream_closes_open_connections_and_sends_new_ones_elsewhere() -> anyhow::Result<()>
{
    let first = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let second = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let proxy = FaultProxy::start(first.addr()).await?;
    let mut old = TcpStream::connect(("127.0.0.1", proxy.port())).await?;
    old.write_all(PING).await?;
    let mut pong = [0u8; PONG.len()];
    old.read_exact(&mut pong).await?; // relayed: the proxy holds it
    proxy.move_upstream(second.addr());
    assert_eq!(proxy.upstream(), second.addr());
    // The old connection ends (after whatever was already relayed).
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(ARRIVAL_BOUND, async {
        loop {
            match old.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the old connection stayed open");
    // A new one reaches the second server: its port is what CONFIG GET port says.
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}", proxy.port()))?
        .get_multiplexed_async_connection()
        .await?;
    let port: Vec<String> = conn.run("CONFIG GET port").await?;
    assert_eq!(port[1], second.port().to_string());
    Ok(())
}
