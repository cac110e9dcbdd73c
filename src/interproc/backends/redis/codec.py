"""How values are turned into bytes for Redis, and back.

Interface
---------

``Codec(serializer="pickle", authkey=None, *, context=None)``
    ``serializer``: ``"pickle"`` (any picklable object), ``"json"`` or
    ``"msgpack"`` (plain data only, see below; msgpack needs the ``msgpack``
    package, part of ``interproc[redis]``).  ``authkey``: bytes; when given,
    every payload is signed with HMAC-SHA256 and ``loads`` refuses payloads
    that are unsigned, signed with another key or altered, with
    :class:`SignatureError` -- before unpickling anything.
    ``context``: what reference factories (below) open references with;
    the Connection of the object whose values are decoded.

``codec.dumps(obj, part=None, field=b"") -> bytes``
``codec.loads(data, key=None, part=None, field=b"") -> obj``
    ``key`` (the Redis key the payload came from) only goes into error
    messages.  ``part`` (a str) and ``field`` (bytes) are the payload's
    place within its object, for payloads that never move (a dict's values
    and original keys: the key part ``"h"`` or ``"k"``, and the hash field,
    the key's encoding): with an authkey the signature is bound to them
    too, and ``loads`` refuses a payload signed for another place, or
    for none.  Without ``part``, or without an authkey, they change
    nothing.
``codec.dumps_message(obj) -> bytes or list``
    A queue item's payload: ``dumps(obj)``, or, under pickle, when ``obj``
    holds large contiguous buffers (NumPy arrays and the like: see
    ``interproc.serialization.OUT_OF_BAND_MIN``), the payload as a list of
    pieces, the head (bytes) and then the buffers themselves, not copied.
    Joined, the pieces are the payload that ``loads`` reads; the queue has
    the server join them, so the buffers go from the sender's objects
    straight to the socket.
``codec.options`` and ``codec.bind(context, scope=None)``
    ``codec.options`` is a picklable dict (``serializer``,
    ``authkey``) and ``Codec(**options)`` remakes the codec;
    ``codec.bind(context, scope=None)`` is a copy with another context and
    scope (an object's handle keeps its codec bound to its connection and
    to the object's id, its scope).
``codec.sign(data, part) -> bytes`` and ``codec.verify(data, part, key=None) -> bytes``
    For bytes that are not payloads (Value and Array contents, object
    metadata): without an authkey they are the data itself; with one,
    ``sign`` prepends a MAC bound to the codec's scope and to ``part`` (the
    key part, plus an index where one matters), and ``verify`` checks and
    strips it (:class:`SignatureError`).  Both are deterministic: equal data
    signs to equal bytes, so a Lua script may compare signed contents.

Payload format
--------------

One header byte names the serializer: ``p``, ``j`` or ``m`` for an unsigned
payload, ``P``, ``J`` or ``M`` for a signed one, which continues with the
32-byte HMAC-SHA256 under the authkey of: the header byte, the scope field
(the 4-byte big-endian length of the scope's UTF-8, then that UTF-8; the
scope is the id of the object the payload belongs to, empty for an
unbound codec), and the body.  The body follows.  A payload copied into
another object fails its MAC there: a signature vouches for the bytes *and*
their place.

A payload with a place (``part`` given) has the same layout, but its MAC
is of the domain byte ``F``, the header byte, the scope field, the part
field (same length-prefixed form), the hash field (its 4-byte big-endian
length, then its bytes) and the body.  ``F`` is never a header byte, so
payloads signed with and without a place cannot pass for each other, and
the length prefixes keep any two places apart.  Unsigned payloads are the
same bytes with or without a place.

A pickle with out-of-band buffers (``dumps_message``) has the header byte
``o`` (``O`` signed, with the MAC of ``O``, the scope field and the body).
Its body is: the pickle's length, the number of buffers ``n`` (at least
one) and each buffer's length, all 8-byte little-endian; the pickle; the
buffers, back to back.  The receiver copies the buffers once, into memory
of its own, and unpickles over that copy: the objects are writable, unless
the pickle itself marks a buffer read-only, as multiprocessing's would be.

Raw signed data (``sign``): the 32-byte HMAC-SHA256 of ``b"R"``, the scope
field, the part field (same length-prefixed form) and the data, then the
data.  ``R`` is never a payload header, so raw data and payloads cannot be
passed off as each other.

A codec reads only its own serializer (a json codec never unpickles), and
only signed payloads when it has an authkey; a signed payload read by a codec
without one is refused too, since it means the processes disagree on the key.

Trust
-----

**pickle runs code on load.**  Without an authkey, whoever can write to the
Redis server can make every reader using ``serializer="pickle"`` (the
default) run code of their choosing.  With an authkey, only payloads signed
with it are unpickled.  json and msgpack never run code, key or no key:
what they read is plain data, and references in it (below) are checked as
data -- a registered tag, arguments of exactly the expected shape -- and
never name anything to import or call.

Plain data (json and msgpack)
-----------------------------

``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` and ``dict`` with
``str`` keys -- exactly those types, not subclasses -- and ``bytes`` under
msgpack.  Anything else raises TypeError at ``dumps`` naming the type and
where it sits, rather than coming back changed (a tuple as a list, an int
key as a str).  msgpack integers must fit in 64 bits (OverflowError).

References to other Redis objects
---------------------------------

A value may contain shared objects of this backend (a list stored in a
dict, a Queue sent through a Queue).  Such an object has a method
``__interproc_redis_ref__()`` returning ``(tag, *args)``: ``tag`` a str
registered with ``register_ref(tag, factory)``, ``args`` plain data
(tuples are allowed and arrive as lists).  ``dumps`` stores the reference
and ``loads`` calls ``factory(args, codec)`` with ``args`` as a list and
the codec that is reading: the object read gets that codec, and opens
itself on ``codec.context``.  This is the one way a factory learns both.
Every serializer stores references its own way (a persistent id under
pickle, a marked object under json, an extension type under msgpack), and
none of them confuses a reference with ordinary data.  A reference whose
tag is not registered, or that is not exactly ``[tag: str, args: list]``,
raises :class:`CorruptDataError`; a factory checks its own ``args`` and
raises the same on anything else.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
import struct
from typing import Any, Callable, Dict, List, Optional, Union

from ... import _core, serialization as _serialization
from .errors import CorruptDataError, SignatureError

__all__ = ["Codec", "register_ref", "read_ref", "REF_METHOD", "SERIALIZERS"]

SERIALIZERS = ("pickle", "json", "msgpack")

#: The method that makes an object travel as a reference.
REF_METHOD = "__interproc_redis_ref__"

#: The pickle protocol: fixed, so that machines with different Pythons
#: (3.10 and newer) read each other's payloads.
PICKLE_PROTOCOL = 5

MAC_SIZE = 32
_HEADERS = {"pickle": b"p", "json": b"j", "msgpack": b"m"}
#: A pickle with out-of-band buffers (unsigned; upper case signed).
_OOB_HEADER = b"o"
#: The receiver's copy puts each buffer at such a boundary, as the shared
#: memory queues do: aligned for any dtype and for vector copies.
_OOB_ALIGN = 64
_SERIALIZER_OF = {h[0]: s for s, h in _HEADERS.items()}
_SERIALIZER_OF.update({h.upper()[0]: s for s, h in _HEADERS.items()})
_OOB_HEADS = (_OOB_HEADER[0], _OOB_HEADER.upper()[0])
_SERIALIZER_OF.update({h: "pickle" for h in _OOB_HEADS})

# json: a dict whose only key is this stands for a reference.  Keys of user
# dicts that start with NUL get one more NUL, so they never look like it.
_JSON_REF = "\x00ref"
# msgpack: the extension type code of a reference.
_MSGPACK_REF = 1

_REF_FACTORIES: Dict[str, Callable[[List[Any], Any], Any]] = {}


def register_ref(tag: str, factory: Callable[[List[Any], "Codec"], Any]) -> None:
    """Make references tagged ``tag`` decode as ``factory(args, codec)``."""
    if not isinstance(tag, str) or not tag:
        raise TypeError("a reference tag must be a non-empty str")
    _REF_FACTORIES[tag] = factory


def _ref_of(obj: Any) -> List[Any]:
    """``[tag, args]`` of an object that travels as a reference."""
    parts = getattr(obj, REF_METHOD)()
    if not isinstance(parts, tuple) or not parts or not isinstance(parts[0], str):
        raise TypeError(
            f"{type(obj).__name__}.{REF_METHOD}() must return a tuple (tag: str, *args), not {parts!r}"
        )
    return [parts[0], _ref_args(list(parts[1:]))]


def _ref_args(value: Any) -> Any:
    t = type(value)
    if t in (list, tuple):
        return [_ref_args(v) for v in value]
    if t is dict:
        if not all(type(k) is str for k in value):
            raise TypeError(f"reference arguments: dict keys must be str: {value!r}")
        return {k: _ref_args(v) for k, v in value.items()}
    if value is None or t in (bool, int, float, str):
        return value
    raise TypeError(f"reference arguments must be plain data, not {t.__name__}: {value!r}")


def read_ref(tag: Any, args: Any, codec: "Codec") -> Any:
    """The object a reference ``[tag, args]`` names, as ``codec`` reads it
    (for a reference kept inside another's reference state)."""
    return _make_ref(tag, args, codec)


def _make_ref(tag: Any, args: Any, codec: "Codec") -> Any:
    if type(tag) is not str or type(args) is not list:
        raise CorruptDataError(f"malformed reference to a Redis object: {_short([tag, args])}")
    factory = _REF_FACTORIES.get(tag)
    if factory is None:
        raise CorruptDataError(
            f"a reference to a Redis object of unknown kind {_short(tag)}: the stored data is "
            "damaged or forged, or written by another version of interproc"
        )
    return factory(args, codec)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


# ---------------------------------------------------------------------------
# Plain data


class _NotPlain(TypeError):
    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.message = message
        self.path = path


_SCALARS = (type(None), bool, int, float, str)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _plain(obj: Any, serializer: str, active: set) -> Any:
    """A copy of ``obj`` ready for json or msgpack; raises _NotPlain."""
    t = type(obj)
    if t in _SCALARS:
        if t is int and serializer == "msgpack" and not _INT_MIN <= obj <= _INT_MAX:
            raise OverflowError(
                f"msgpack stores integers from -2**63 to 2**64-1, not {obj}; "
                "use serializer='pickle' or 'json' for larger ones"
            )
        return obj
    if t is bytes and serializer == "msgpack":
        return obj
    if t is list or t is dict:
        if id(obj) in active:
            raise ValueError(f"{serializer} cannot store a {t.__name__} that contains itself")
        active.add(id(obj))
        try:
            if t is list:
                out_list = []
                for i, v in enumerate(obj):
                    try:
                        out_list.append(_plain(v, serializer, active))
                    except _NotPlain as exc:
                        exc.path = f"[{i}]{exc.path}"
                        raise
                return out_list
            out: Dict[str, Any] = {}
            for k, v in obj.items():
                if type(k) is not str:
                    raise _NotPlain(f"has a key of type {type(k).__name__} ({k!r})")
                try:
                    pv = _plain(v, serializer, active)
                except _NotPlain as exc:
                    exc.path = f"[{k!r}]{exc.path}"
                    raise
                if serializer == "json" and k.startswith("\x00"):
                    k = "\x00" + k
                out[k] = pv
            return out
        finally:
            active.discard(id(obj))
    if hasattr(t, REF_METHOD):
        tag, args = _ref_of(obj)
        if serializer == "json":
            return {_JSON_REF: [tag, args]}
        msgpack = _import_msgpack()
        return msgpack.ExtType(_MSGPACK_REF, msgpack.packb([tag, args], use_bin_type=True))
    raise _NotPlain(f"is a {t.__module__}.{t.__qualname__}" if t.__module__ != "builtins"
                    else f"is a {t.__qualname__}")


def _import_msgpack():
    try:
        import msgpack
    except ImportError as exc:
        raise ImportError(
            "serializer='msgpack' needs the msgpack package: pip install interproc[redis]"
        ) from exc
    return msgpack


# ---------------------------------------------------------------------------
# Pickle with references


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if hasattr(type(obj), REF_METHOD):
            return ("ref", *_ref_of(obj))
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, codec: "Codec", buffers: Any = None):
        super().__init__(file, buffers=buffers)
        self._codec = codec

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 3 and pid[0] == "ref":
            return _make_ref(pid[1], pid[2], self._codec)
        raise pickle.UnpicklingError(f"unknown persistent id in a payload: {pid!r}")


_PICKLE_DIRECT = (type(None), bool, int, float, str, bytes)


def _field(text: str) -> bytes:
    """A length-prefixed field of MAC input, so that no two (scope, part)
    pairs give the same bytes."""
    return _bytes_field(text.encode("utf-8", "surrogatepass"))


def _bytes_field(raw: bytes) -> bytes:
    return len(raw).to_bytes(4, "big") + raw


_RAW_DOMAIN = b"R"
_PLACED_DOMAIN = b"F"


# ---------------------------------------------------------------------------
# The codec


class Codec:
    """Serializer plus optional signing (see the module docstring)."""

    __slots__ = ("serializer", "authkey", "context", "scope", "_header", "_payload_mac",
                 "_placed_mac", "_raw_mac", "_oob_header", "_oob_mac")

    def __init__(self, serializer: str = "pickle", authkey: Optional[bytes] = None, *,
                 context: Any = None, scope: Optional[str] = None):
        if serializer not in SERIALIZERS:
            raise ValueError(f"serializer must be one of {', '.join(map(repr, SERIALIZERS))}, not {serializer!r}")
        if authkey is not None:
            if isinstance(authkey, str) or not isinstance(authkey, (bytes, bytearray, memoryview)):
                raise TypeError(f"authkey must be bytes, not {type(authkey).__name__}")
            authkey = bytes(authkey)
            if not authkey:
                raise ValueError("authkey must not be empty")
        if serializer == "msgpack":
            _import_msgpack()
        if scope is not None and not isinstance(scope, str):
            raise TypeError(f"scope must be a str, not {type(scope).__name__}")
        self.serializer = serializer
        self.authkey = authkey
        self.context = context
        self.scope = scope
        h = _HEADERS[serializer]
        self._header = h.upper() if authkey else h
        self._oob_header = _OOB_HEADER.upper() if authkey else _OOB_HEADER
        if authkey:
            # The MAC state after the fixed prefix, copied per value: one
            # HMAC per value, as before the scope and place were added.
            where = _field(scope or "")
            keyed = hmac.new(authkey, digestmod=hashlib.sha256)
            self._payload_mac = keyed.copy()
            self._payload_mac.update(self._header + where)
            self._placed_mac = keyed.copy()
            self._placed_mac.update(_PLACED_DOMAIN + self._header + where)
            self._oob_mac = keyed.copy()
            self._oob_mac.update(self._oob_header + where)
            self._raw_mac = keyed
            self._raw_mac.update(_RAW_DOMAIN + where)
        else:
            self._payload_mac = self._placed_mac = self._raw_mac = self._oob_mac = None

    @property
    def options(self) -> Dict[str, Any]:
        """Picklable: ``Codec(**codec.options)`` is an equal codec (without the context)."""
        return {"serializer": self.serializer, "authkey": self.authkey}

    def bind(self, context: Any, scope: Optional[str] = None) -> "Codec":
        """This codec with another context for reference factories, and
        signatures bound to ``scope`` (an object's id)."""
        return Codec(self.serializer, self.authkey, context=context, scope=scope)

    def __reduce__(self):
        # Context and scope stay behind: the process that rebuilds the codec
        # binds it to its own connection and object.
        return (_rebuild, (self.serializer, self.authkey))

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Codec):
            return NotImplemented
        return (self.serializer, self.authkey) == (other.serializer, other.authkey)

    def __hash__(self) -> int:
        return hash((self.serializer, self.authkey))

    def __repr__(self) -> str:
        signed = ", signed" if self.authkey else ""
        return f"<Codec {self.serializer}{signed}>"

    # -- encoding

    def dumps(self, obj: Any, part: Optional[str] = None, field: bytes = b"") -> bytes:
        return self._payload(self._body(obj), part, field)

    def _payload(self, body: bytes, part: Optional[str] = None, field: bytes = b"") -> bytes:
        if self._payload_mac is None:
            return self._header + body
        return self._header + self._mac(body, part, field) + body

    def dumps_message(self, obj: Any) -> Union[bytes, List[Any]]:
        """A queue item's payload: bytes, or the pieces of one (see the
        module docstring) when ``obj`` holds large contiguous buffers."""
        if self.serializer != "pickle" or type(obj) in _PICKLE_DIRECT:
            return self.dumps(obj)
        keep_apart, bufs = _serialization.out_of_band_collector()
        out = io.BytesIO()
        _Pickler(out, PICKLE_PROTOCOL, buffer_callback=keep_apart).dump(obj)
        pickled = out.getvalue()
        if not bufs:
            return self._payload(pickled)
        layout = struct.pack(f"<QQ{len(bufs)}Q", len(pickled), len(bufs), *(b.nbytes for b in bufs))
        if self._oob_mac is None:
            return [self._oob_header + layout + pickled, *bufs]
        mac = self._oob_mac.copy()
        mac.update(layout)
        mac.update(pickled)
        for b in bufs:
            mac.update(b)
        return [self._oob_header + mac.digest() + layout + pickled, *bufs]

    def _mac(self, body: bytes, part: Optional[str], field: bytes) -> bytes:
        if part is None:
            mac = self._payload_mac.copy()
        else:
            mac = self._placed_mac.copy()
            mac.update(_field(part) + _bytes_field(field))
        mac.update(body)
        return mac.digest()

    def sign(self, data: bytes, part: str) -> bytes:
        """``data`` as stored under ``part`` of this codec's object (see the
        module docstring); the data itself without an authkey."""
        if self._raw_mac is None:
            return data
        mac = self._raw_mac.copy()
        mac.update(_field(part))
        mac.update(data)
        return mac.digest() + data

    def verify(self, stored: Any, part: str, key: Any = None) -> bytes:
        """The data of bytes made by :meth:`sign` for ``part``;
        SignatureError if they were not made so with this key, here."""
        if self._raw_mac is None:
            return stored
        where = f" at key {_show_key(key)}" if key is not None else ""
        if type(stored) is not bytes or len(stored) < MAC_SIZE:
            raise SignatureError(f"unsigned or truncated data{where}: this codec has an authkey "
                                 "and reads signed data only")
        data = stored[MAC_SIZE:]
        mac = self._raw_mac.copy()
        mac.update(_field(part))
        mac.update(data)
        if not hmac.compare_digest(stored[:MAC_SIZE], mac.digest()):
            raise SignatureError(f"bad signature{where}: signed with another authkey, for "
                                 "another object or key, or altered")
        return data

    def _body(self, obj: Any) -> bytes:
        if self.serializer == "pickle":
            if type(obj) in _PICKLE_DIRECT:
                return pickle.dumps(obj, PICKLE_PROTOCOL)
            buf = io.BytesIO()
            _Pickler(buf, PICKLE_PROTOCOL).dump(obj)
            return buf.getvalue()
        try:
            plain = _plain(obj, self.serializer, set())
        except _NotPlain as exc:
            allowed = "None, bool, int, float, str, list, dict with str keys"
            if self.serializer == "msgpack":
                allowed += ", bytes"
            raise TypeError(
                f"serializer {self.serializer!r} stores plain data only ({allowed}): "
                f"value{exc.path} {exc.message}; use serializer='pickle' for other objects"
            ) from None
        if self.serializer == "json":
            return json.dumps(plain, separators=(",", ":")).encode("ascii")
        return _import_msgpack().packb(plain, use_bin_type=True, unicode_errors="surrogatepass")

    # -- decoding

    def loads(self, data: Any, key: Any = None, part: Optional[str] = None,
              field: bytes = b"") -> Any:
        if data is not None and type(data) is bytes and data[:1] == self._header \
                and self.authkey is None:
            # The common case, first: an unsigned payload of this codec's
            # serializer, whose errors need no key in their message.
            return self._load_body(data[1:])
        where = f" at key {_show_key(key)}" if key is not None else ""
        if data is None:
            raise CorruptDataError(f"no payload{where} (a missing key?)")
        data = bytes(data)
        if not data:
            raise CorruptDataError(f"empty payload{where}")
        head = data[0]
        serializer = _SERIALIZER_OF.get(head)
        signed = 65 <= head <= 90  # upper case
        oob = head in _OOB_HEADS
        # An out-of-band payload is large: read through a view, not sliced.
        view = memoryview(data) if oob else data
        if self.authkey is not None:
            if serializer is None or not signed:
                raise SignatureError(
                    f"unsigned payload{where}: this codec has an authkey and reads signed payloads only"
                )
            if len(data) < 1 + MAC_SIZE:
                raise SignatureError(f"truncated signature{where}")
            mac, body = data[1:1 + MAC_SIZE], view[1 + MAC_SIZE:]
            if serializer != self.serializer:
                raise SignatureError(
                    f"payload{where} was written with serializer {serializer!r}; this codec reads "
                    f"{self.serializer!r}"
                )
            if oob:
                if part is not None:
                    raise SignatureError(f"payload{where} was signed as a queue item, not for a place")
                expected = self._oob_mac.copy()
                expected.update(body)
                expected = expected.digest()
            else:
                expected = self._mac(body, part, field)
            if not hmac.compare_digest(mac, expected):
                place = "another object" if part is None else "another object or field"
                raise SignatureError(
                    f"bad signature{where}: the payload was signed with another authkey, for "
                    f"{place}, or altered"
                )
        else:
            if serializer is None:
                raise CorruptDataError(f"not an interproc payload{where} (unknown header byte {head:#04x})")
            if signed:
                raise SignatureError(
                    f"signed payload{where}, but this codec has no authkey: give the authkey "
                    "the writer used"
                )
            body = view[1:]
        if serializer != self.serializer:
            raise CorruptDataError(
                f"payload{where} was written with serializer {serializer!r}; this codec reads "
                f"{self.serializer!r}"
            )
        if oob:
            return self._load_out_of_band(body, where)
        return self._load_body(body)

    def _load_out_of_band(self, body: memoryview, where: str) -> Any:
        """Unpickle a pickle with out-of-band buffers (see the module
        docstring) over one copy of its buffers, made here."""
        size = len(body)
        if size < 16:
            raise CorruptDataError(f"truncated out-of-band payload{where}")
        plen, n = struct.unpack_from("<QQ", body)
        if n == 0 or n > (size - 16) // 8:
            raise CorruptDataError(f"out-of-band payload{where} with a bad buffer count ({n})")
        lens = struct.unpack_from(f"<{n}Q", body, 16)
        off = 16 + 8 * n
        if plen > size - off or sum(lens) != size - off - plen:
            raise CorruptDataError(f"out-of-band payload{where} whose lengths do not add up")
        pickled = body[off:off + plen]
        off += plen
        starts = []
        total = 0
        for blen in lens:
            total = -(-total // _OOB_ALIGN) * _OOB_ALIGN
            starts.append(total)
            total += blen
        into = memoryview(_core.receive_buffer(total))
        buffers = []
        for start, blen in zip(starts, lens):
            into[start:start + blen] = body[off:off + blen]
            off += blen
            # Writable: the pickle makes read-only what the sender's was.
            buffers.append(into[start:start + blen])
        return _Unpickler(io.BytesIO(pickled), self, buffers).load()

    def _load_body(self, body: bytes) -> Any:
        if self.serializer == "pickle":
            return _Unpickler(io.BytesIO(body), self).load()
        try:
            if self.serializer == "json":
                return json.loads(body, object_hook=self._json_object)
            msgpack = _import_msgpack()
            return msgpack.unpackb(body, raw=False, ext_hook=self._msgpack_ext,
                                   strict_map_key=True, unicode_errors="surrogatepass")
        except CorruptDataError:
            raise
        except (ValueError, TypeError, RecursionError) as exc:
            # Plain data that does not parse: damaged, or not ours.
            raise CorruptDataError(f"malformed {self.serializer} payload: {exc}") from None

    def _json_object(self, d: Dict[str, Any]) -> Any:
        if len(d) == 1 and _JSON_REF in d:
            ref = d[_JSON_REF]
            if type(ref) is not list or len(ref) != 2:
                raise CorruptDataError(f"malformed reference to a Redis object: {_short(ref)}")
            return _make_ref(ref[0], ref[1], self)
        if any(k.startswith("\x00") for k in d):
            return {(k[1:] if k.startswith("\x00") else k): v for k, v in d.items()}
        return d

    def _msgpack_ext(self, code: int, data: bytes) -> Any:
        if code != _MSGPACK_REF:
            raise CorruptDataError(f"unknown msgpack extension type {code} in a payload")
        msgpack = _import_msgpack()
        try:
            ref = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:
            raise CorruptDataError(f"malformed reference to a Redis object: {exc}") from None
        if type(ref) is not list or len(ref) != 2:
            raise CorruptDataError(f"malformed reference to a Redis object: {_short(ref)}")
        return _make_ref(ref[0], ref[1], self)


def _rebuild(serializer: str, authkey: Optional[bytes]) -> Codec:
    return Codec(serializer, authkey)


def _show_key(key: Any) -> str:
    if isinstance(key, (bytes, bytearray)):
        try:
            return repr(bytes(key).decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return repr(key)
