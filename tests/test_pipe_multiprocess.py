"""Pipes shared between real processes, under fork, spawn and forkserver,
and SIGKILLs in the middle of the stream (fork only).

The tests are written as a correct multiprocessing program is: after
start(), the parent closes its copy of the end it handed to the child, and a
child started by fork never waits for end of stream on an end whose peer it
inherited.
"""

import collections
import itertools
import multiprocessing
import os
import random
import signal
import threading
import time

import pytest

import interproc
from interproc import Pipe

import _pipe_helpers as ph
from _helpers import (TIMEOUT, KillDelay, check_item, join_ok, keep_killing, kill_and_reap, more_rounds,
                      new_seed, read_lines, start)
from _pipe_helpers import RING_IDS, RINGS, KiB, MiB, finish_within, ring_pipe, send_until_broken

pytestmark = pytest.mark.timeout(120)


def recv_or_fail(conn, timeout=TIMEOUT):
    assert conn.poll(timeout), f"nothing to receive within {timeout}s"
    return conn.recv()


# ------------------------------------------------------ as Process args

@pytest.mark.parametrize("child_end", [0, 1], ids=["child-has-first", "child-has-second"])
def test_echo_through_either_end(start_method, child_end):
    ends = Pipe()
    mine, theirs = ends[1 - child_end], ends[child_end]
    p = start(start_method, ph.echo_double, theirs, 50)
    theirs.close()
    for i in range(50):
        mine.send(i)
    got = [recv_or_fail(mine) for _ in range(50)]
    join_ok(p)
    assert got == [2 * i for i in range(50)]
    with pytest.raises(EOFError):
        finish_within(5, mine.recv)


def test_seed_exchange(start_method):
    parent_conn, child_conn = Pipe()
    p = start(start_method, ph.seed_child, child_conn)
    child_conn.close()
    assert recv_or_fail(parent_conn) == [42, None, "hello"]
    parent_conn.send("666")
    assert recv_or_fail(parent_conn) == ("child rec", "666")
    parent_conn.send(None)
    join_ok(p)
    with pytest.raises(EOFError):
        finish_within(5, parent_conn.recv)
    parent_conn.close()


def test_both_ends_to_children(start_method):
    r, w = Pipe(duplex=False)
    out = interproc.Queue()
    items = [("item", i, "x" * (i * 997)) for i in range(40)]
    receiver = start(start_method, ph.recv_n_and_report, r, len(items), out)
    sender = start(start_method, ph.send_items_and_close, w, items)
    r.close()
    w.close()
    assert out.get(timeout=TIMEOUT) == items
    join_ok(sender, receiver)


def test_child_closes_the_end_it_does_not_use(start_method):
    """The OS-pipe idiom: both ends go to the child, which closes the
    writer and reads until end of stream; the parent closes the reader and,
    when done, the writer."""
    r, w = Pipe(duplex=False)
    out = interproc.Queue()
    p = start(start_method, ph.read_until_eof, r, w, out)
    r.close()
    items = [i * "z" for i in range(30)]
    for item in items:
        w.send(item)
    w.close()
    assert out.get(timeout=TIMEOUT) == items
    join_ok(p)


def test_big_messages_across_processes(start_method):
    a, b = Pipe()
    rng = random.Random(5)
    items = [rng.randbytes(size) for size in (20 * MiB, 1, 3 * MiB + 1, 0)]
    p = start(start_method, ph.echo_double, b, len(items))
    b.close()
    for item in items:
        a.send(item)
    got = [recv_or_fail(a) for _ in items]
    join_ok(p)
    assert got == [x * 2 for x in items]


# ----------------------------------------------------------------- pools

def test_pool_initializer_argument(start_method):
    r, w = Pipe(duplex=False)
    with start_method.Pool(2, initializer=ph.pool_init, initargs=(w,)) as pool:
        assert pool.map_async(ph.pool_send, range(20), chunksize=1).get(TIMEOUT) == list(range(20))
        got = [recv_or_fail(r) for _ in range(20)]
        pool.close()
        pool.join()
    assert sorted(x for _, x in got) == list(range(20))
    assert os.getpid() not in {pid for pid, _ in got}
    assert not r.poll(0)


def test_pool_task_argument(start_method):
    r, w = Pipe(duplex=False)
    a, b = Pipe()
    with start_method.Pool(2) as pool:
        assert pool.apply_async(ph.send_items, (w, list(range(10)))).get(TIMEOUT) == 10
        assert [recv_or_fail(r) for _ in range(10)] == list(range(10))
        for x in ("a", "b", "c"):
            a.send(x)
        assert pool.apply_async(ph.pool_task_recv, (b, 3)).get(TIMEOUT) == ["a", "b", "c"]
        pool.close()
        pool.join()
    assert not r.poll(0) and not b.poll(0)


# ------------------------------------------------------- carried by others

def test_connection_through_a_queue(start_method):
    outer = interproc.Queue()
    r, w = Pipe(duplex=False)
    p = start(start_method, ph.conn_from_queue, outer, 5)
    outer.put(w)
    assert [recv_or_fail(r) for _ in range(5)] == [("via queue", i) for i in range(5)]
    join_ok(p)
    # The child closed its copy and is gone; ours is the last writer.
    assert not r.poll(0)
    w.close()
    with pytest.raises(EOFError):
        finish_within(5, r.recv)


def test_connection_through_another_pipe(start_method):
    carrier_here, carrier_there = Pipe()
    d1, d2 = Pipe()
    p = start(start_method, ph.conn_from_pipe, carrier_there, 5)
    carrier_there.close()
    carrier_here.send(d2)
    assert [recv_or_fail(d1) for _ in range(5)] == [("via pipe", i) for i in range(5)]
    d1.send("reply")
    assert recv_or_fail(carrier_here) == "reply"
    join_ok(p)


def test_pipe_made_in_child_handed_to_parent(start_method):
    carrier_here, carrier_there = Pipe()
    p = start(start_method, ph.pipe_made_in_child, carrier_there)
    carrier_there.close()
    end = recv_or_fail(carrier_here)
    assert isinstance(end, interproc.Connection)
    carrier_here.send("ack")
    assert recv_or_fail(end) == "from child"
    assert recv_or_fail(end) == "bye"
    join_ok(p)
    # The child held the only other end and has exited.
    with pytest.raises(EOFError):
        finish_within(5, end.recv)


def test_ends_closed_by_their_sender_right_after_sending_arrive_alive(start_method):
    """CPython's test_access: the sender's close() must not reach the
    receiver as EOFError before it has opened the end."""
    carrier_here, carrier_there = Pipe()
    p = start(start_method, ph.use_handed_ends, carrier_there)
    carrier_there.close()

    r, w = Pipe(duplex=False)
    carrier_here.send(w)
    w.close()
    assert recv_or_fail(r) == "all is well"
    # The child closed the only other copy: the end of stream is not hidden
    # by what this process kept for the hand-over, although it sends nothing
    # more that would clear it.
    with pytest.raises(EOFError):
        finish_within(TIMEOUT, r.recv)
    r.close()

    r, w = Pipe(duplex=False)
    carrier_here.send(r)
    r.close()
    w.send("foobar")
    assert recv_or_fail(carrier_here) == "foobar" * 2
    join_ok(p)
    # The receiving end's only holder is gone.
    send_until_broken(w, TIMEOUT)
    w.close()


def test_end_put_in_a_queue_and_closed_at_once_arrives_alive(start_method):
    outer = interproc.Queue()
    r, w = Pipe(duplex=False)
    outer.put(w)
    w.close()
    p = start(start_method, ph.write_from_queue, outer, 3)
    assert [recv_or_fail(r) for _ in range(3)] == [0, 1, 2]
    join_ok(p)
    with pytest.raises(EOFError):
        finish_within(TIMEOUT, r.recv)


def test_an_end_whose_sender_exited_before_it_was_taken_is_gone(start_method):
    """The copies kept for the receiver die with their sender: the end's
    peer reads end of stream, and a late receiver is told the sender is
    gone."""
    outer = interproc.Queue()
    r, w = Pipe(duplex=False)
    p = start(start_method, ph.put_end_and_exit, outer, w)
    w.close()
    join_ok(p)
    with pytest.raises(EOFError):
        finish_within(TIMEOUT, r.recv)
    with pytest.raises(RuntimeError, match="has exited"):
        outer.get(timeout=TIMEOUT)


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("threads", [1, 4])
def test_ends_handed_over_leave_no_descriptors_behind(start_method, threads):
    per_thread = 30 // threads
    carrier_here, carrier_there = Pipe()
    p = start(start_method, ph.take_ends_and_close, carrier_there, per_thread * threads)
    carrier_there.close()
    carrier_here.poll(0)
    before = _open_fds()

    def hand_over():
        for _ in range(per_thread):
            a, b = Pipe()
            carrier_here.send(b)
            a.close()
            b.close()

    senders = [threading.Thread(target=hand_over) for _ in range(threads)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(TIMEOUT)
    assert recv_or_fail(carrier_here) == "done"
    join_ok(p)
    # Every end was taken: the copies kept for the receiver go at the next
    # look at a peer, here the end of stream of the carrier.
    with pytest.raises(EOFError):
        finish_within(TIMEOUT, carrier_here.recv)
    # (+2: the hand-over's own pipe, made at the first hand-over.)
    assert _open_fds() <= before + 2


def test_maxlength_leaves_the_message_for_other_handles(start_method):
    """docs/api.md: after a too-long message this handle no longer reads,
    and the message stays for the other handles of the same end."""
    r, w = Pipe(duplex=False)
    go_here, go_there = Pipe()
    out = interproc.Queue()
    p = start(start_method, ph.wait_go_then_recv_bytes, r, go_there, out)
    w.send_bytes(b"x" * 100)
    with pytest.raises(OSError):
        r.recv_bytes(10)
    go_here.send("go")
    assert out.get(timeout=TIMEOUT) == b"x" * 100
    join_ok(p)


# ------------------------------------------------------------- end of stream

@pytest.mark.parametrize("closes", [False, True], ids=["just-exits", "closes-then-exits"])
def test_eof_when_the_sending_child_exits(start_method, closes):
    r, w = Pipe(duplex=False)
    items = [1, "two", b"three" * 50_000, None]
    target = ph.send_items_and_close if closes else ph.send_items
    p = start(start_method, target, w, items)
    w.close()
    got = [finish_within(TIMEOUT, r.recv) for _ in items]
    assert got == items
    join_ok(p)
    t0 = time.monotonic()
    with pytest.raises(EOFError):
        finish_within(5, r.recv)
    assert time.monotonic() - t0 < 1.0


def test_eof_wakes_a_recv_blocked_when_the_child_is_killed(start_method):
    a, b = Pipe()
    sent = interproc.Queue()
    p = start(start_method, ph.send_then_hold, b, ["ready"], sent)
    b.close()
    assert recv_or_fail(a) == "ready"
    box = {}

    def blocked():
        try:
            box["got"] = a.recv()
        except EOFError:
            box["eof"] = time.monotonic()

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    time.sleep(0.1)
    assert t.is_alive(), f"recv() returned {box}"
    t_kill = time.monotonic()
    os.kill(p.pid, signal.SIGKILL)
    # Not reaped yet on purpose: a killed process is gone for its peers
    # whether or not its parent has collected it.
    t.join(5)
    try:
        assert not t.is_alive(), "recv() still blocked 5 s after the sender was SIGKILLed"
        assert "eof" in box, box
        assert box["eof"] - t_kill < 1.0, f"EOF came {box['eof'] - t_kill:.3f}s after the kill"
    finally:
        kill_and_reap(p)


def test_data_sent_before_a_kill_is_received_then_eof(start_method):
    r, w = Pipe(duplex=False)
    sent = interproc.Queue()
    rng = random.Random(9)
    items = [rng.randbytes(n) for n in (0, 10, 100 * KiB, 2 * MiB, 5)]
    p = start(start_method, ph.send_then_hold, w, items, sent)
    w.close()
    assert sent.get(timeout=TIMEOUT) == "sent"
    assert kill_and_reap(p) == -signal.SIGKILL
    assert [finish_within(10, r.recv) for _ in items] == items
    t0 = time.monotonic()
    with pytest.raises(EOFError):
        finish_within(5, r.recv)
    assert time.monotonic() - t0 < 1.0
    assert r.poll(0) is True


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "not-reaped"])
def test_broken_pipe_after_the_receiving_child_is_killed(start_method, reaped):
    a, b = Pipe()
    p = start(start_method, ph.announce_then_recv_forever, b)
    b.close()
    assert recv_or_fail(a) == "ready"
    for i in range(10):
        a.send(i)
    os.kill(p.pid, signal.SIGKILL)
    try:
        if reaped:
            p.join(30)
        send_until_broken(a, 0.1)
        with pytest.raises(BrokenPipeError):
            a.send_bytes(b"x" * MiB)
    finally:
        kill_and_reap(p)


def test_broken_pipe_after_the_receiving_child_exits(start_method):
    r, w = Pipe(duplex=False)
    out = interproc.Queue()
    p = start(start_method, ph.recv_n_and_report, r, 3, out)
    r.close()
    for i in range(3):
        w.send(i)
    assert out.get(timeout=TIMEOUT) == [0, 1, 2]
    join_ok(p)
    send_until_broken(w, 0.1)


# ----------------------------------------------------------- fan in / out

@pytest.mark.parametrize("ring", RINGS, ids=RING_IDS)
def test_many_senders_one_receiver(start_method, ring):
    r, w = ring_pipe(ring, duplex=False)
    n_senders, per_sender = 3, 150
    procs = [start(start_method, ph.checked_sender, w, i, per_sender, 1000 + i) for i in range(n_senders)]
    w.close()
    last = {}
    for _ in range(n_senders * per_sender):
        item = finish_within(TIMEOUT, r.recv)
        sender, seq, ok = check_item(item)
        assert ok, f"torn message {item!r:.200}"
        assert seq == last.get(sender, -1) + 1, f"sender {sender}: {seq} after {last.get(sender)}"
        last[sender] = seq
    join_ok(*procs)
    assert last == {i: per_sender - 1 for i in range(n_senders)}
    with pytest.raises(EOFError):
        finish_within(5, r.recv)


@pytest.mark.parametrize("ring", RINGS, ids=RING_IDS)
def test_many_receivers_each_message_once(start_method, ring):
    r, w = ring_pipe(ring, duplex=False)
    out = interproc.Queue()
    n_receivers, n_items = 3, 450
    procs = [start(start_method, ph.checked_receiver, r, out, i) for i in range(n_receivers)]
    r.close()
    ph.checked_sender(w, "parent", n_items, 77)
    for _ in procs:
        w.send(None)
    results = dict(out.get(timeout=TIMEOUT) for _ in procs)
    join_ok(*procs)
    everything = [seq for got in results.values() for _, seq, _ in got]
    assert all(ok for got in results.values() for _, _, ok in got), "torn message"
    assert sorted(everything) == list(range(n_items)), "a message was lost or received twice"
    for got in results.values():
        seqs = [seq for _, seq, _ in got]
        assert seqs == sorted(seqs)


# ------------------------------------------------------------- idle CPU

def test_child_blocked_in_recv_does_not_burn_cpu(start_method):
    a, b = Pipe()
    p = start(start_method, ph.idle_recv_cpu, b)
    b.close()
    assert recv_or_fail(a) == "ready"
    time.sleep(2.0)
    t_send = time.monotonic()
    a.send("wake")
    msg, cpu, wall = recv_or_fail(a)
    t_back = time.monotonic()
    join_ok(p)
    assert msg == "wake"
    assert wall >= 1.9
    assert cpu < 0.02 * wall, f"the child used {cpu * 1000:.1f} ms of CPU in {wall:.2f} s blocked in recv()"
    assert t_back - t_send < 0.5, f"the child took {t_back - t_send:.3f}s to wake and answer"


# ======================================================== SIGKILL chaos

FORK = multiprocessing.get_context("fork")
N_SENDERS = 3
N_RECEIVERS = 2
IN_FLIGHT = 32        # senders slow down above this many unreceived messages
KILLS_PER_RUN = 200
CHAOS_SECONDS = 15    # past this, only until half the kills are done (see keep_killing)
JOIN_TIMEOUT = 30


def drain(conn, first_timeout=0.2):
    """Everything left in ``conn``; a recv that hangs fails the test."""
    items = []
    timeout = first_timeout
    while conn.poll(timeout):
        items.append(finish_within(10, conn.recv))
        timeout = 0.01
    return items


class Cast:
    """The live senders and receivers of one chaos run, and their history."""

    def __init__(self, r, w, tmp_path, seed):
        self.r, self.w = r, w
        self.dir = tmp_path
        self.rng = random.Random(seed)
        self.stop = FORK.RawValue("b", 0)
        self.sent = FORK.RawArray("q", N_SENDERS)
        self.received = FORK.RawArray("q", N_RECEIVERS)
        self.ids = itertools.count()
        self.senders = {}    # slot -> (Process, sender id)
        self.receivers = {}  # slot -> (Process, receiver id)
        self.all_sender_ids = []
        self.all_receiver_ids = []
        self.killed_senders = set()
        self.sender_kills = 0
        self.receiver_kills = 0
        self.unexpected_exits = []

    def sender_log(self, sid):
        return self.dir / f"s{sid}.log"

    def receiver_log(self, rid):
        return self.dir / f"r{rid}.log"

    def spawn_sender(self, slot):
        sid = next(self.ids)
        proc = FORK.Process(
            target=ph.crash_sender,
            args=(self.w, sid, str(self.sender_log(sid)), self.stop, self.rng.getrandbits(32),
                  self.sent, self.received, slot, IN_FLIGHT),
        )
        proc.start()
        self.senders[slot] = (proc, sid)
        self.all_sender_ids.append(sid)

    def spawn_receiver(self, slot):
        rid = next(self.ids)
        proc = FORK.Process(
            target=ph.crash_receiver,
            args=(self.r, str(self.receiver_log(rid)), self.received, slot),
        )
        proc.start()
        self.receivers[slot] = (proc, rid)
        self.all_receiver_ids.append(rid)

    def kill_one(self):
        if self.rng.random() < 0.5:
            slot = self.rng.randrange(N_SENDERS)
            proc, sid = self.senders[slot]
            code = kill_and_reap(proc)
            if code == -signal.SIGKILL:
                self.sender_kills += 1
                self.killed_senders.add(sid)
            else:
                self.unexpected_exits.append(("sender", sid, code))
            self.spawn_sender(slot)
        else:
            slot = self.rng.randrange(N_RECEIVERS)
            proc, rid = self.receivers[slot]
            code = kill_and_reap(proc)
            if code == -signal.SIGKILL:
                self.receiver_kills += 1
            else:
                self.unexpected_exits.append(("receiver", rid, code))
            self.spawn_receiver(slot)

    def stop_all(self):
        """Senders first; then one None per receiver, which comes after
        everything the senders sent."""
        hung = []
        self.stop.value = 1
        for proc, sid in self.senders.values():
            proc.join(JOIN_TIMEOUT)
            if proc.is_alive():
                hung.append(("sender", sid))
                proc.kill()
                proc.join(JOIN_TIMEOUT)
            elif proc.exitcode != 0:
                self.unexpected_exits.append(("sender at stop", sid, proc.exitcode))
        for _ in self.receivers:
            self.w.send(None)
        for proc, rid in self.receivers.values():
            proc.join(JOIN_TIMEOUT)
            if proc.is_alive():
                hung.append(("receiver", rid))
                proc.kill()
                proc.join(JOIN_TIMEOUT)
            elif proc.exitcode != 0:
                self.unexpected_exits.append(("receiver at stop", rid, proc.exitcode))
        return hung


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ring", RINGS, ids=RING_IDS)
def test_random_sigkills_of_senders_and_receivers(tmp_path, ring):
    seed = new_seed()
    ctx = f"seed={seed} ring={ring}"
    r, w = ring_pipe(ring, duplex=False)
    cast = Cast(r, w, tmp_path, seed)
    for slot in range(N_SENDERS):
        cast.spawn_sender(slot)
    for slot in range(N_RECEIVERS):
        cast.spawn_receiver(slot)

    t0 = time.monotonic()
    kills = 0
    while keep_killing(kills, KILLS_PER_RUN, t0, CHAOS_SECONDS):
        time.sleep(cast.rng.uniform(0, 0.06))
        cast.kill_one()
        kills += 1
    chaos_seconds = time.monotonic() - t0

    hung = cast.stop_all()
    assert not hung, f"{ctx}: {hung} did not stop within {JOIN_TIMEOUT}s"
    assert not cast.unexpected_exits, f"{ctx}: processes died by themselves: {cast.unexpected_exits}"
    leftovers = drain(r, first_timeout=0.05)
    assert not leftovers, f"{ctx}: {len(leftovers)} messages came after the final Nones"

    # --- what was sent: seqs whose send() returned, per sender
    logged = {s: [int(x) for x in read_lines(cast.sender_log(s))] for s in cast.all_sender_ids}
    for s, seqs in logged.items():
        assert seqs == list(range(len(seqs))), f"{ctx}: sender {s} log is not 0..n-1"
    logged_set = {(s, q) for s, seqs in logged.items() for q in seqs}

    # --- what was received, per receiver, in order
    bad = []
    received = []  # (receiver, sender, seq)
    for rid in cast.all_receiver_ids:
        for line in read_lines(cast.receiver_log(rid)):
            fields = line.split(" ")
            if fields[0] == "EXC" or fields[-1] != "ok":
                bad.append((rid, line))
            else:
                received.append((rid, int(fields[0]), int(fields[1])))
    assert not bad, f"{ctx}: torn or unreadable messages: {bad[:10]}"

    counts = collections.Counter((s, q) for _, s, q in received)
    dups = sorted(k for k, n in counts.items() if n > 1)
    assert not dups, f"{ctx}: received more than once: {dups[:20]}"

    last_seen = {}
    for rid, s, q in received:
        assert q > last_seen.get((rid, s), -1), f"{ctx}: receiver {rid} got sender {s}'s {q} out of order"
        last_seen[(rid, s)] = q

    delivered = set(counts)
    missing = sorted(logged_set - delivered)
    # A killed receiver may take with it the one message it was reading.
    assert len(missing) <= cast.receiver_kills, (
        f"{ctx}: {len(missing)} messages whose send() returned were never received, "
        f"more than {cast.receiver_kills} receiver kills can explain: {missing[:20]}"
    )

    # Received but never logged: only the last message of a killed sender.
    unlogged = collections.defaultdict(list)
    for s, q in sorted(delivered - logged_set):
        unlogged[s].append(q)
    for s, seqs in unlogged.items():
        assert s in cast.killed_senders, f"{ctx}: sender {s} exited cleanly yet {seqs} are unlogged"
        assert seqs == [len(logged[s])], f"{ctx}: sender {s}: unlogged {seqs} after {len(logged[s])} logged"

    # The pipe still works, for us and for new processes.
    big = random.Random(seed).randbytes(3 * MiB)
    w.send("after")
    w.send_bytes(big)
    assert finish_within(10, r.recv) == "after"
    assert finish_within(10, r.recv_bytes) == big
    proc = FORK.Process(target=ph.send_items, args=(w, [1, 2, 3]))
    proc.start()
    proc.join(JOIN_TIMEOUT)
    assert proc.exitcode == 0
    assert drain(r) == [1, 2, 3]

    print(
        f"{ctx}: {kills} kills ({cast.sender_kills} senders, {cast.receiver_kills} receivers) "
        f"in {chaos_seconds:.1f}s; {len(logged_set)} sends returned, {len(delivered)} received, "
        f"{len(missing)} lost with killed receivers, {sum(map(len, unlogged.values()))} received unlogged"
    )
    assert kills >= KILLS_PER_RUN // 2, f"{ctx}: only {kills} kills"
    assert cast.sender_kills > 0 and cast.receiver_kills > 0, ctx
    # A pipe wedged by the first kill would pass every check above vacuously.
    assert len(delivered) >= 1000, f"{ctx}: only {len(delivered)} messages went through"
    r.close()
    w.close()


BIG = 20 * MiB
BIG_ROUNDS = 30


def _timed_run(target, *args):
    t0 = time.monotonic()
    proc = FORK.Process(target=target, args=args)
    proc.start()
    proc.join(JOIN_TIMEOUT)
    assert proc.exitcode == 0
    return time.monotonic() - t0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ring", RINGS, ids=RING_IDS)
def test_sigkill_inside_a_big_send(ring):
    seed = new_seed()
    rng = random.Random(seed)
    r, w = ring_pipe(ring, duplex=False)
    payload = rng.randbytes(BIG)

    span = _timed_run(ph.send_then_exit, w, (-1, payload))
    assert finish_within(10, r.recv) == (-1, payload)

    outcomes = collections.Counter()
    delay = KillDelay(rng, span)
    i = killed = 0
    while more_rounds(i, BIG_ROUNDS, killed, BIG_ROUNDS // 4):
        proc = FORK.Process(target=ph.send_then_exit, args=(w, (i, payload)))
        proc.start()
        delay.sleep()
        code = kill_and_reap(proc)
        assert code in (0, -signal.SIGKILL), f"seed={seed} round {i}: exit code {code}"
        delay.outcome(code == 0)
        killed += code != 0
        # The sender is reaped: whatever it committed is there already.
        items = drain(r, first_timeout=0.05)
        outcomes[(code, len(items))] += 1
        if code == 0:
            assert len(items) == 1, f"seed={seed} round {i}: a send that returned left {len(items)} messages"
        else:
            assert len(items) <= 1, f"seed={seed} round {i}: {len(items)} messages from one send"
        for seq, data in items:
            assert seq == i and data == payload, f"seed={seed} round {i}: torn message"
        i += 1

    print(f"seed={seed} ring={ring} span={span * 1000:.1f}ms outcomes (exit code, messages): {dict(outcomes)}")
    assert killed >= BIG_ROUNDS // 4, f"seed={seed}: only {killed} of {i} sends were interrupted"
    w.send("small")
    assert finish_within(5, r.recv) == "small"
    w.send((0, payload))
    assert finish_within(10, r.recv) == (0, payload)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ring", RINGS, ids=RING_IDS)
def test_sigkill_inside_a_big_recv(ring):
    seed = new_seed()
    rng = random.Random(seed)
    r, w = ring_pipe(ring, duplex=False)
    payload = rng.randbytes(BIG)

    w.send((-1, payload))
    span = _timed_run(ph.recv_and_check, r, payload)
    assert not r.poll(0)

    outcomes = collections.Counter()
    delay = KillDelay(rng, span)
    i = killed = 0
    while more_rounds(i, BIG_ROUNDS, killed, BIG_ROUNDS // 4):
        w.send((i, payload))
        proc = FORK.Process(target=ph.recv_and_check, args=(r, payload))
        proc.start()
        delay.sleep()
        code = kill_and_reap(proc)
        assert code != 3, f"seed={seed} round {i}: the child got a torn message"
        assert code in (0, -signal.SIGKILL), f"seed={seed} round {i}: exit code {code}"
        delay.outcome(code == 0)
        killed += code != 0
        items = drain(r, first_timeout=0.05)
        outcomes[(code, len(items))] += 1
        if code == 0:
            assert not items, f"seed={seed} round {i}: a message received is still there"
        else:
            assert len(items) <= 1
        for seq, data in items:
            assert seq == i and data == payload, f"seed={seed} round {i}: torn message"
        i += 1

    print(f"seed={seed} ring={ring} span={span * 1000:.1f}ms outcomes (exit code, messages left): {dict(outcomes)}")
    assert killed >= BIG_ROUNDS // 4, f"seed={seed}: only {killed} of {i} recvs were interrupted"
    w.send("small")
    assert finish_within(5, r.recv) == "small"
