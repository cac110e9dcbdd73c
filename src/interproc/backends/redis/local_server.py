"""Throw-away Redis servers on loopback, for the tests and the benchmarks.

``redis-server`` (and, for a cluster, ``redis-cli``) must be installed;
nothing here imports redis-py.

- :class:`RedisServer`: one standalone server on a free port of 127.0.0.1
  and on a unix socket, optionally with a password, in its own directory,
  with persistence off, or on with ``persistent=True`` (an append-only
  file synced on every write: ``appendfsync always``).  ``kill()`` then
  ``start()`` restarts it on the same port, with what it persisted.
  ``replicate(master)`` makes it a replica of another and waits until its
  first synchronization is done.
- :class:`RedisClusterServers`: cluster-enabled servers (optionally with a
  password) joined into a Redis Cluster by ``redis-cli --cluster create``,
  three masters without replicas by default, or ``replicas=1`` (six nodes),
  ready once every node reports ``cluster_state:ok``.  ``kill_master(key)``
  kills the master serving a key and ``wait_failover(dead)`` waits until a
  replica took its slots over.  ``announce(ports)`` makes the nodes tell
  clients other ports (fault proxies in front of them).
- :class:`RedisSentinel`: one Sentinel (``redis-server --sentinel``)
  watching a :class:`RedisServer` under a service name, with a short
  down-after time.
- ``make_tls_files``: a throw-away CA and server certificate (openssl), for
  ``RedisServer(tls=True)``.

Servers die with the process that started them (``PR_SET_PDEATHSIG``), so a
run that is killed leaves none behind.  ``missing_binaries()`` names the
binaries that are not installed.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import List, Optional

__all__ = [
    "REDIS_CLI", "REDIS_SERVER", "RedisClusterServers", "RedisSentinel", "RedisServer", "free_port",
    "make_tls_files", "missing_binaries",
]

REDIS_SERVER = "redis-server"
REDIS_CLI = "redis-cli"
STARTUP_TIMEOUT = 20.0


def missing_binaries(cli: bool = False) -> List[str]:
    """The Redis binaries (``redis-server``, and ``redis-cli`` with ``cli``)
    not found on PATH."""
    wanted = [REDIS_SERVER] + ([REDIS_CLI] if cli else [])
    return [b for b in wanted if shutil.which(b) is None]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _end(proc: "subprocess.Popen[bytes]") -> None:
    """Terminate a server process (continued first: a stopped one cannot
    exit) and reap it; killed if it does not go within 10 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port(cluster_bus: bool = False) -> int:
    """A TCP port of 127.0.0.1 free right now (and port + 10000, for a cluster bus)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not cluster_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found on 127.0.0.1")


def _encode(args) -> bytes:
    out = f"*{len(args)}\r\n".encode()
    for a in args:
        b = a.encode() if isinstance(a, str) else bytes(a)
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


def _read_reply(f) -> bytes:
    """One RESP2 reply from a socket file, as raw bytes (arrays flattened)."""
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed")
    if line[:1] == b"$":
        size = int(line[1:])
        return line + (f.read(size + 2) if size >= 0 else b"")
    if line[:1] == b"*":
        n = int(line[1:])
        return line + b"".join(_read_reply(f) for _ in range(max(n, 0)))
    return line


def _commands(address, *commands, timeout: float = 5.0) -> List[bytes]:
    """Send commands on one connection and return their raw replies (no redis-py needed)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(b"".join(_encode(c) for c in commands))
        with s.makefile("rb") as f:
            return [_read_reply(f) for _ in commands]


def make_tls_files(directory: str) -> dict:
    """A throw-away CA and a server certificate for 127.0.0.1, made by openssl.

    Returns the paths: ``ca``, ``cert``, ``key``.
    """
    os.makedirs(directory, exist_ok=True)
    p = {n: os.path.join(directory, f) for n, f in [
        ("ca", "ca.crt"), ("ca_key", "ca.key"), ("cert", "server.crt"), ("key", "server.key"),
        ("csr", "server.csr"), ("ext", "server.ext")]}
    # Python 3.13+ verifies strictly (VERIFY_X509_STRICT): the CA needs a
    # key usage, the server certificate its key identifiers.
    with open(p["ext"], "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", p["ca_key"], "-out", p["ca"], "-days", "2",
         "-subj", "/CN=interproc test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", p["key"], "-out", p["csr"], "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey", p["ca_key"],
         "-CAcreateserial", "-out", p["cert"], "-days", "2", "-extfile", p["ext"]],
    ):
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return {"ca": p["ca"], "cert": p["cert"], "key": p["key"]}


class RedisServer:
    """One ``redis-server`` on 127.0.0.1:<free port> and a unix socket
    (and, with ``tls=True``, a TLS port with a certificate from a throw-away CA)."""

    def __init__(self, workdir: str, password: Optional[str] = None, cluster: bool = False,
                 port: Optional[int] = None, tls: bool = False, persistent: bool = False,
                 cluster_node_timeout_ms: int = 5000):
        self.workdir = workdir
        self.persistent = persistent
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.password = password
        self.cluster = cluster
        self.port = port
        self.tls = tls
        self.tls_port: Optional[int] = None
        self.tls_files: Optional[dict] = None
        self.proc: Optional[subprocess.Popen] = None
        os.makedirs(workdir, exist_ok=True)
        self.socket_path = os.path.join(workdir, "redis.sock")
        self.logfile = os.path.join(workdir, "redis.log")

    # -- addresses

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``, without credentials."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def tls_url(self) -> str:
        """``rediss://127.0.0.1:<tls port>/0``; connect with ``ssl_ca_certs=tls_files["ca"]``."""
        return f"rediss://127.0.0.1:{self.tls_port}/0"

    @property
    def auth_url(self) -> str:
        """The URL with the password in it (the plain URL if there is none)."""
        if self.password is None:
            return self.url
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    # -- life cycle

    def start(self) -> "RedisServer":
        last_error = ""
        # A restart (start() after kill() or stop()) keeps the port, so that
        # clients find the server where it was.
        fixed_port = self.port
        for _ in range(5):  # another process may take the port between choosing and binding
            self.port = fixed_port or free_port(cluster_bus=self.cluster)
            args = [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.workdir, "--logfile", self.logfile,
                "--unixsocket", self.socket_path, "--unixsocketperm", "700",
                "--save", "", "--daemonize", "no", "--protected-mode", "no",
            ]
            if self.persistent:
                # Every acknowledged write is on disk before its reply.
                args += ["--appendonly", "yes", "--appendfsync", "always"]
            else:
                args += ["--appendonly", "no"]
            if self.password is not None:
                args += ["--requirepass", self.password, "--masterauth", self.password]
            if self.tls:
                if self.tls_files is None:
                    self.tls_files = make_tls_files(os.path.join(self.workdir, "tls"))
                self.tls_port = free_port()
                args += ["--tls-port", str(self.tls_port),
                         "--tls-cert-file", self.tls_files["cert"],
                         "--tls-key-file", self.tls_files["key"],
                         "--tls-ca-cert-file", self.tls_files["ca"],
                         "--tls-auth-clients", "no"]
            if self.cluster:
                args += ["--cluster-enabled", "yes",
                         "--cluster-config-file", os.path.join(self.workdir, "nodes.conf"),
                         "--cluster-node-timeout", str(self.cluster_node_timeout_ms),
                         # a replica's first sync starts at once, not 5 s later
                         "--repl-diskless-sync-delay", "0"]
            if not fixed_port:  # a new node; a restarted one keeps its identity
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.workdir, "nodes.conf"))
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )
            if self._wait_ready():
                return self
            last_error = self._log_tail()
            self.stop()
            if fixed_port:
                break
        raise RuntimeError(f"redis-server did not start in {self.workdir}:\n{last_error}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                reply = _commands(("127.0.0.1", self.port), ("PING",), timeout=1.0)[0]
            except OSError:
                reply = b""
            # With a password, NOAUTH is the answer of a ready server.
            if reply.startswith(b"+PONG") or b"NOAUTH" in reply:
                return True
            time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return "(no log)"

    def command(self, *args: str) -> bytes:
        """One command, authenticated if needed; its raw reply."""
        cmds = [("AUTH", self.password)] if self.password is not None else []
        return _commands(("127.0.0.1", self.port), *cmds, args)[-1]

    def replicate(self, master: "RedisServer", timeout: float = 10.0) -> "RedisServer":
        """Make this server a replica of ``master`` and wait until the master
        lists it online (its first synchronization done)."""
        # The first sync starts at once, not 5 s later.
        master.command("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        self.command("REPLICAOF", "127.0.0.1", str(master.port))
        online = f"port={self.port},state=online".encode()
        deadline = time.monotonic() + timeout
        while online not in master.command("INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.address} did not become a replica of "
                                   f"{master.address} within {timeout} s:\n{self._log_tail()}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would; ``start()`` restarts it on the same port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def pid(self) -> Optional[int]:
        """The server's process id (to SIGSTOP it, say), None when not running."""
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            _end(self.proc)
        self.proc = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RedisClusterServers:
    """Cluster-enabled servers joined into one Redis Cluster: ``nodes``
    masters (at least three), each with ``replicas`` replicas."""

    def __init__(self, workdir: str, nodes: int = 3, password: Optional[str] = None,
                 replicas: int = 0, node_timeout_ms: Optional[int] = None):
        self.workdir = workdir
        self.password = password
        self.replicas = replicas
        # A failover takes about the node timeout: short where one is awaited.
        if node_timeout_ms is None:
            node_timeout_ms = 1000 if replicas else 5000
        self.servers: List[RedisServer] = [
            RedisServer(os.path.join(workdir, f"node{i}"), cluster=True, password=password,
                        cluster_node_timeout_ms=node_timeout_ms)
            for i in range(nodes * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """The URL of the first node: redis-py finds the others from it."""
        return self.servers[0].url

    @property
    def auth_url(self) -> str:
        return self.servers[0].auth_url

    @property
    def addresses(self) -> List[str]:
        return [s.address for s in self.servers]

    @property
    def live_servers(self) -> List[RedisServer]:
        return [s for s in self.servers if s.alive]

    def start(self) -> "RedisClusterServers":
        try:
            for s in self.servers:
                s.start()
            env = dict(os.environ)
            if self.password is not None:
                env["REDISCLI_AUTH"] = self.password  # not on the command line
            out = subprocess.run(
                [REDIS_CLI, "--cluster", "create", *self.addresses,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=env,
            )
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")
            self._wait_ok()
            if self.replicas:
                self._wait(lambda: all(self._replicas_in_sync(m) for m in self._masters()),
                           "the replicas did not finish their first synchronization")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, done, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if done():
                    return
            except (OSError, LookupError):
                pass  # a node being killed, or the cluster between two states: ask again
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster in {self.workdir}: {what}")
            time.sleep(0.05)

    def _wait_ok(self) -> None:
        pending = list(self.live_servers)

        def all_ok() -> bool:
            pending[:] = [s for s in pending if b"cluster_state:ok" not in s.command("CLUSTER", "INFO")]
            return not pending

        self._wait(all_ok, "cluster_state:ok not reached; nodes not ready: "
                   + ", ".join(s.address for s in pending))

    # -- topology, read from the nodes themselves

    def nodes_table(self, via: Optional[RedisServer] = None) -> List[dict]:
        """``CLUSTER NODES`` as seen by ``via`` (the first live node): one
        dict per node with ``id``, ``port`` (announced), ``flags``,
        ``master`` (its master's id, or '-') and ``slots`` (ranges)."""
        via = via or self.live_servers[0]
        text = via.command("CLUSTER", "NODES").split(b"\r\n", 1)[1].decode()
        rows = []
        for line in text.splitlines():
            f = line.split()
            if len(f) < 8:
                continue
            slots = []
            for r in f[8:]:
                if r.startswith("["):
                    continue  # a slot being migrated or imported
                lo, _, hi = r.partition("-")
                slots.append((int(lo), int(hi or lo)))
            rows.append({"id": f[0], "port": int(f[1].split("@")[0].rsplit(":", 1)[1]),
                         "flags": set(f[2].split(",")), "master": f[3], "slots": slots})
        return rows

    def _node_id(self, server: RedisServer) -> str:
        return server.command("CLUSTER", "MYID").split(b"\r\n")[1].decode()

    def _masters(self) -> List[RedisServer]:
        return [s for s in self.live_servers
                if b"role:master" in s.command("INFO", "replication")]

    def _replicas_in_sync(self, master: RedisServer) -> bool:
        info = master.command("INFO", "replication").decode()
        return info.count("state=online") >= self.replicas

    def server_for_slot(self, slot: int, via: Optional[RedisServer] = None) -> RedisServer:
        """The server that ``via`` says serves ``slot``."""
        ids = {self._node_id(s): s for s in self.live_servers}
        for row in self.nodes_table(via):
            if "master" in row["flags"] and "fail" not in row["flags"] and any(
                    lo <= slot <= hi for lo, hi in row["slots"]):
                if row["id"] in ids:
                    return ids[row["id"]]
        raise LookupError(f"no live master serves slot {slot}")

    def slot(self, key: str) -> int:
        reply = self.live_servers[0].command("CLUSTER", "KEYSLOT", key)
        return int(reply[1:].strip())

    def kill_master(self, key: str) -> RedisServer:
        """SIGKILL the master that serves ``key``; returns it (dead)."""
        server = self.server_for_slot(self.slot(key))
        server.kill()
        return server

    def wait_failover(self, key: str, dead: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until every live node is ``cluster_state:ok`` again and agrees
        that a node other than ``dead`` serves ``key``'s slot; returns it."""
        slot = self.slot(key)
        found: List[RedisServer] = []

        def taken_over() -> bool:
            owners = set()
            for s in self.live_servers:
                if b"cluster_state:ok" not in s.command("CLUSTER", "INFO"):
                    return False
                owners.add(self.server_for_slot(slot, via=s))
            if len(owners) != 1 or dead in owners:
                return False
            found[:] = list(owners)
            return True

        self._wait(taken_over, f"no replica took slot {slot} over from {dead.address}", timeout)
        return found[0]

    def announce(self, ports: dict) -> None:
        """Make each node tell clients ``ports[node's port]`` as its port
        (the bus port stays), and wait until every node says so: clients
        then reach the nodes through whatever listens there."""
        for s in self.live_servers:
            s.command("CONFIG", "SET", "cluster-announce-bus-port", str(s.port + 10000))
            s.command("CONFIG", "SET", "cluster-announce-port", str(ports.get(s.port, s.port)))
        wanted = {ports.get(s.port, s.port) for s in self.live_servers}
        self._wait(lambda: all({r["port"] for r in self.nodes_table(s)} >= wanted
                               for s in self.live_servers),
                   "the nodes did not learn the announced ports")

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    def __enter__(self) -> "RedisClusterServers":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RedisSentinel:
    """One Sentinel on 127.0.0.1:<free port> watching ``master`` as
    ``service``: ``.url`` is ``redis+sentinel://127.0.0.1:<port>/<service>/0``."""

    def __init__(self, workdir: str, master: RedisServer, service: str = "interproc-test"):
        self.workdir = workdir
        self.master = master
        self.service = service
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        os.makedirs(workdir, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"

    def start(self) -> "RedisSentinel":
        self.port = free_port()
        conf = os.path.join(self.workdir, "sentinel.conf")
        with open(conf, "w") as f:  # Sentinel rewrites its own configuration
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                    f"logfile {os.path.join(self.workdir, 'sentinel.log')}\n"
                    f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
                    f"sentinel down-after-milliseconds {self.service} 1000\n"
                    f"sentinel failover-timeout {self.service} 5000\n")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, conf, "--sentinel"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                reply = _commands(("127.0.0.1", self.port),
                                  ("SENTINEL", "get-master-addr-by-name", self.service), timeout=1.0)[0]
                if str(self.master.port).encode() in reply:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server --sentinel did not start in {self.workdir}")

    def stop(self) -> None:
        if self.proc is not None:
            _end(self.proc)
        self.proc = None

    def __enter__(self) -> "RedisSentinel":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
