"""Children of the large-array tests (importable, for spawn)."""
import pickle

import numpy as np

MiB = 1 << 20


def samples():
    """Arrays and buffers of every shape that travels differently: large
    contiguous ones out of band (C and Fortran order, several in one
    message), small and non-contiguous ones in band, and the odd dtypes."""
    big = np.arange(MiB // 8, dtype=np.float64)
    readonly = big.copy()
    readonly.flags.writeable = False
    return [
        big,
        np.arange(256 * 1024, dtype=np.float32).reshape(512, 512),
        np.asfortranarray(np.arange(300 * 400, dtype=np.int64).reshape(300, 400)),
        big[::3],  # not contiguous: in band, arrives contiguous
        np.arange(10, dtype=np.int16),  # small: in band
        np.zeros(100_000, dtype=[("x", "<f8"), ("y", "<i4"), ("tag", "S3")]),
        np.arange(70_000, dtype=">f8"),  # big-endian
        (np.arange(50_000) + 1j).astype(np.complex128),
        np.ones(200_000, dtype=bool),
        np.array(3.5),  # 0-d
        np.empty((0, 7)),
        readonly,
        {"a": big, "b": big[: MiB // 16], "c": bytearray(b"x" * 100_000), "n": 7},
        bytearray(range(256)) * 1000,
        np.array(["a", {"b": 1}, None], dtype=object),
    ]


def describe(x):
    """What a receiver sees of ``x``, for comparing two deliveries."""
    if isinstance(x, dict):
        return {k: describe(v) for k, v in sorted(x.items())}
    if isinstance(x, np.ndarray):
        return (type(x).__name__, x.dtype.descr if x.dtype.names else x.dtype.str, x.shape,
                x.strides, x.flags.c_contiguous, x.flags.f_contiguous,
                x.flags.writeable, pickle.dumps(x.tolist()))
    return (type(x).__name__, bytes(x) if isinstance(x, bytearray) else x)


def contents(x):
    """What ``x`` holds, its type and shape; not how it is laid out."""
    if isinstance(x, dict):
        return {k: contents(v) for k, v in sorted(x.items())}
    if isinstance(x, np.ndarray):
        return (type(x).__name__, x.shape, pickle.dumps(x.tolist()))
    return (type(x).__name__, bytes(x) if isinstance(x, bytearray) else x)


def put_samples(q, mp_q):
    for s in samples():
        q.put(s)
        mp_q.put(s)


def send_samples(conn):
    for s in samples():
        conn.send(s)
    conn.close()


def echo_arrays(conn, n):
    """Receive ``n`` messages and send each back, doubled where it is an array."""
    for _ in range(n):
        x = conn.recv()
        conn.send(x * 2 if isinstance(x, np.ndarray) else x)


def put_numbered(q, producer, first, n, size):
    """Put arrays of ``size`` bytes, each filled with its own number
    (``producer * 1_000_000 + seq``), for checking after kills."""
    a = np.empty(size // 8, dtype=np.float64)
    for seq in range(first, first + n):
        a.fill(producer * 1_000_000 + seq)
        q.put(a)


def hold_view(q, ready):
    """Read an item in place and hold it until killed."""
    import time

    view = q.get_view()
    assert not view.value.flags.writeable
    ready.set()
    time.sleep(3600)
