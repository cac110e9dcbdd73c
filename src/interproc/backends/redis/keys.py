"""Key names, and the metadata hash that makes a name an object.

Interface
---------

Every key of one object is ``ip:{<name>}:<part>``: the braces make ``<name>``
the Redis Cluster hash tag, so all of an object's keys live in one slot and
one Lua script or transaction may touch them all.  ``<name>`` is the user's
name for a named object and ``anon:<32 hex digits>`` for an anonymous one.

``check_name(name) -> str``
    The rules of shared-memory names (a non-empty str of at most
    ``NAME_MAX`` UTF-8 bytes, no ``/`` or NUL, not ``.`` or ``..``), so that
    a name valid on one backend is valid on the other, plus: no ``{`` or
    ``}`` (they would change the hash tag) and no leading ``anon:``
    (reserved).  TypeError for a non-str, ValueError otherwise.
``anonymous_name() -> str``
    A fresh ``anon:<hex>`` name.
``object_key(name, part="") -> str`` and ``meta_key(name) -> str``
    The key of one part of an object (``ip:{name}`` itself for the empty
    part, which may be declared like any other), and of its metadata hash.

``create_meta(conn, name, kind, options, create=None, *, parts=(), init=None, codec=None, expire_ms=None) -> Meta``
    The open/create step of every kind, in one atomic Lua script:

    - ``create=None`` opens the object if it exists, else creates it;
      ``True`` creates it or raises FileExistsError; ``False`` opens it or
      raises FileNotFoundError.  Opening an object of another ``kind``
      raises TypeError ("'jobs' holds a Queue; asked for: Lock"), as
      opening a shared-memory segment does.
    - ``kind``: the class name (``"Queue"``, ``"Lock"``...); ``options``: a
      dict of plain JSON data (maxsize, parties, typecode...) stored at
      creation; an opener gets the *stored* options back, so a process
      opening ``Queue(name="jobs")`` learns the creator's maxsize.
    - ``parts``: the names of every part the object may ever have;
      ``delete_object`` deletes exactly those (and the metadata).  An object
      must not keep data under undeclared parts.
    - ``init``: ``{part: value}`` written in the same script when the
      object is created, so that nobody sees it half made: ``bytes``,
      ``str`` or ``int`` -> ``SET``; a ``list`` of those -> ``RPUSH``
      (nothing for an empty list); a ``dict`` -> ``HSET`` (nothing when
      empty).  Stale keys of the declared parts are deleted before.

    - ``expire_ms``: for an anonymous object only (ValueError otherwise):
      every key it makes expires after this many ms, unless something
      keeps the object alive (its manager, see ``RedisManager``'s
      ``orphan_ttl``); stored with the options, as ``EXPIRY_OPTION``, so
      that every handle knows it (``_base.alive``).

    Returns a :class:`Meta`: a dict of the stored options, with attributes
    ``name``, ``kind``, ``uid`` (random per incarnation: a name unlinked
    and created again gets another), ``parts`` and ``created`` (whether
    this call made it).
``read_meta(conn, name, kind=None) -> Meta``
    FileNotFoundError if there is no such object, TypeError on a kind
    mismatch.
``delete_object(conn, name, kind=None, uid=None)``
    Deletes the metadata and every declared part in one script.
    FileNotFoundError if there is none, TypeError on a kind mismatch; with
    ``uid``, only that incarnation is deleted (FileNotFoundError otherwise),
    so a late cleanup never removes an object re-created under the name.
``list_names(conn) -> list[str]``
    The names of every object (anonymous ones included), sorted.

A metadata hash that is missing its fields or has another layout version
raises ``CorruptDataError`` (an ``interproc.SegmentError``, a ValueError),
as a corrupt segment does.

Signed metadata: ``create_meta`` and ``read_meta`` take the object's
``codec`` (bound to its id).  With an authkey, the hash carries ``mac``, the
codec's raw signature (``codec.sign``) over kind, options, uid, layout
version and parts under the part ``meta``, and an opener refuses metadata
whose MAC does not match (``SignatureError``) before believing any of it:
a forged ``maxsize`` cannot make a bounded queue unbounded, and metadata
copied from another object fails, the object id being in the MAC.
``created`` (a timestamp for listings) is not covered.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ... import _core
from .client import WAIT_QUIETLY, Connection
from .codec import MAC_SIZE
from .errors import CorruptDataError

__all__ = [
    "PREFIX",
    "NAME_MAX",
    "LAYOUT_VERSION",
    "EXPIRY_OPTION",
    "Meta",
    "check_name",
    "anonymous_name",
    "object_key",
    "meta_key",
    "create_meta",
    "read_meta",
    "delete_object",
    "list_names",
]

PREFIX = "ip"
NAME_MAX: int = _core.NAME_MAX
ANON = "anon:"
LAYOUT_VERSION = "1"
META_PART = "meta"
#: The option under which an expiring object's expiry (ms) is stored.
EXPIRY_OPTION = "expire_ms"


def check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    n = len(name.encode("utf-8", "surrogatepass"))
    if n > NAME_MAX:
        raise ValueError(f"name is {n} bytes long; the limit is {NAME_MAX}")
    if "/" in name or "\0" in name:
        raise ValueError(f"name {name!r} must not contain '/' or NUL")
    if name in (".", ".."):
        raise ValueError(f"name {name!r} is reserved")
    if "{" in name or "}" in name:
        raise ValueError(f"name {name!r} must not contain '{{' or '}}' (Redis hash tags)")
    if name.startswith(ANON):
        raise ValueError(f"name {name!r} is reserved: names starting with {ANON!r} are anonymous objects'")
    return name


def anonymous_name() -> str:
    return ANON + secrets.token_hex(16)


def _check_any_name(name: Any) -> str:
    """A user name, or an anonymous one this module made."""
    if isinstance(name, str) and name.startswith(ANON):
        rest = name[len(ANON):]
        if rest and "{" not in rest and "}" not in rest:
            return name
    return check_name(name)


def object_key(name: str, part: str = "") -> str:
    """The key of one part of the object ``name``; ``part=""`` is ``ip:{name}`` itself."""
    if not isinstance(part, str):
        raise TypeError(f"a part name must be a str, not {type(part).__name__}")
    if not part:
        return f"{PREFIX}:{{{name}}}"
    return f"{PREFIX}:{{{name}}}:{part}"


def meta_key(name: str) -> str:
    return object_key(name, META_PART)


class Meta(dict):
    """The stored options of an object, plus what ``create_meta`` learnt about it."""

    def __init__(self, name: str, kind: str, options: Mapping[str, Any], uid: str,
                 parts: Iterable[str], created: bool):
        super().__init__(options)
        self.name = name
        self.kind = kind
        self.uid = uid
        self.parts = tuple(parts)
        self.created = created

    def __repr__(self) -> str:
        how = "created" if self.created else "opened"
        return f"Meta({self.name!r}, kind={self.kind!r}, {how}, options={dict(self)!r})"

    def __reduce__(self):
        return (Meta, (self.name, self.kind, dict(self), self.uid, self.parts, self.created))


# KEYS: meta, then every declared part.  ARGV: mode, kind, options, uid,
# version, parts, created-at, MAC or '', expiry in ms or '', number of init
# entries, then per entry: index into KEYS, type, number of values, the values.
_CREATE = WAIT_QUIETLY + """
local meta = KEYS[1]
local mode = ARGV[1]
if redis.call('EXISTS', meta) == 1 then
  if mode == 'create' then return {'exists'} end
  local m = redis.call('HMGET', meta, 'kind', 'options', 'uid', 'version', 'parts', 'mac')
  return {'opened', m[1], m[2], m[3], m[4], m[5], m[6]}
end
if mode == 'attach' then return {'missing'} end
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HSET', meta, 'kind', ARGV[2], 'options', ARGV[3], 'uid', ARGV[4],
           'version', ARGV[5], 'parts', ARGV[6], 'created', ARGV[7])
if ARGV[8] ~= '' then redis.call('HSET', meta, 'mac', ARGV[8]) end
local pos = 11
for n = 1, tonumber(ARGV[10]) do
  local key = KEYS[tonumber(ARGV[pos])]
  local typ = ARGV[pos + 1]
  local cnt = tonumber(ARGV[pos + 2])
  pos = pos + 3
  local last = pos + cnt - 1
  if typ == 'string' then
    redis.call('SET', key, ARGV[pos])
  else
    local cmd = (typ == 'list') and 'RPUSH' or 'HSET'
    local j = pos
    while j <= last do
      local stop = math.min(j + 999, last)
      redis.call(cmd, key, unpack(ARGV, j, stop))
      j = stop + 1
    end
  end
  pos = last + 1
end
if ARGV[9] ~= '' then
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end
end
return {'created'}
"""

# KEYS: meta, then the parts the caller read.  ARGV: kind or '', uid or '',
# the parts string the caller read.
_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local m = redis.call('HMGET', KEYS[1], 'kind', 'uid', 'parts')
if ARGV[2] ~= '' and m[2] ~= ARGV[2] then return {'missing'} end
if ARGV[1] ~= '' and m[1] ~= ARGV[1] then return {'kind', m[1]} end
if (m[3] or '') ~= ARGV[3] then return {'changed'} end
redis.call('DEL', unpack(KEYS))
return {'deleted'}
"""


def _text(v: Any) -> Optional[str]:
    if v is None or v is False:
        return None
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _bytes(v: Any, what: str) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v).encode("ascii")
    raise TypeError(f"{what}: initial values must be bytes, str or int, not {type(v).__name__}")


def _kind_error(name: str, stored: Optional[str], kind: str) -> TypeError:
    return TypeError(f"{name!r} holds a {stored}; asked for: {kind}")


def _meta_signed_data(kind: str, options: str, uid: str, version: str, parts: str) -> bytes:
    """What a metadata MAC covers: every field an opener trusts."""
    return json.dumps([kind, options, uid, version, parts], separators=(",", ":")).encode()


def _meta_mac(codec: Any, kind: str, options: str, uid: str, version: str, parts: str) -> bytes:
    if codec is None or getattr(codec, "authkey", None) is None:
        return b""
    return codec.sign(_meta_signed_data(kind, options, uid, version, parts), META_PART)[:MAC_SIZE]


def _parse_meta(name: str, fields: List[Any], created: bool, codec: Any = None) -> Meta:
    mac = fields[5] if len(fields) > 5 else None
    kind, options, uid, version, parts = (_text(f) for f in fields[:5])
    if kind is None or options is None or uid is None:
        raise CorruptDataError(f"the metadata of {name!r} ({meta_key(name)}) is incomplete")
    if codec is not None and getattr(codec, "authkey", None) is not None:
        # Checked before anything in it is believed: a forged maxsize or
        # parties would change what every opener does.
        signed = _meta_signed_data(kind, options, uid, version or "", parts or "")
        codec.verify((mac if isinstance(mac, bytes) else b"") + signed, META_PART,
                     meta_key(name))
    if version != LAYOUT_VERSION:
        raise CorruptDataError(
            f"{name!r} has layout version {version}; this interproc reads version {LAYOUT_VERSION}"
        )
    try:
        opts = json.loads(options)
        part_list = json.loads(parts) if parts else []
    except ValueError:
        raise CorruptDataError(f"the metadata of {name!r} ({meta_key(name)}) is corrupt") from None
    if not isinstance(opts, dict) or not isinstance(part_list, list) \
            or not all(isinstance(p, str) for p in part_list):
        raise CorruptDataError(f"the metadata of {name!r} ({meta_key(name)}) is corrupt")
    return Meta(name, kind, opts, uid, part_list, created)


def _parts_json(parts: Iterable[str]) -> str:
    return json.dumps(list(parts), separators=(",", ":"))


def create_meta(
    conn: Connection,
    name: str,
    kind: str,
    options: Optional[Mapping[str, Any]] = None,
    create: Optional[bool] = None,
    *,
    parts: Iterable[str] = (),
    init: Optional[Mapping[str, Any]] = None,
    codec: Any = None,
    expire_ms: Optional[int] = None,
) -> Meta:
    """Open or create the object ``name`` (see the module docstring)."""
    name = _check_any_name(name)
    if expire_ms is not None:
        if type(expire_ms) is not int or expire_ms < 1:
            raise ValueError(f"expire_ms must be a positive int, not {expire_ms!r}")
        if not name.startswith(ANON):
            raise ValueError("only an anonymous object expires: a named one stays until unlinked")
    if create is not None and not isinstance(create, bool):
        raise TypeError(f"create must be None, True or False, not {create!r}")
    if not isinstance(kind, str) or not kind:
        raise TypeError("kind must be a non-empty str")
    options = dict(options or {})
    options.pop(EXPIRY_OPTION, None)
    if expire_ms is not None:
        options[EXPIRY_OPTION] = expire_ms
    try:
        options_json = json.dumps(options, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"options of a {kind} must be plain JSON data: {exc}") from None
    parts = list(parts)
    if META_PART in parts or len(set(parts)) != len(parts):
        raise ValueError(f"parts must be distinct and not {META_PART!r}: {parts!r}")
    init = dict(init or {})
    unknown = set(init) - set(parts)
    if unknown:
        raise ValueError(f"init names parts that are not declared: {sorted(unknown)!r}")

    keys = [meta_key(name)] + [object_key(name, p) for p in parts]
    uid = secrets.token_hex(8)
    mode = {None: "open", True: "create", False: "attach"}[create]
    parts_json = _parts_json(parts)
    args: List[Any] = [mode, kind, options_json, uid, LAYOUT_VERSION, parts_json,
                       repr(time.time()),
                       _meta_mac(codec, kind, options_json, uid, LAYOUT_VERSION, parts_json),
                       "" if expire_ms is None else expire_ms]
    entries: List[Any] = []
    n = 0
    for part, value in init.items():
        index = parts.index(part) + 2  # Lua indexes from 1, and KEYS[1] is meta
        what = f"init[{part!r}]"
        if isinstance(value, list):
            if not value:
                continue
            entries += [index, "list", len(value)] + [_bytes(v, what) for v in value]
        elif isinstance(value, dict):
            if not value:
                continue
            flat: List[bytes] = []
            for k, v in value.items():
                flat += [_bytes(k, what), _bytes(v, what)]
            entries += [index, "hash", len(flat)] + flat
        else:
            entries += [index, "string", 1, _bytes(value, what)]
        n += 1
    args += [n] + entries

    with conn.errors(f"opening {kind} {name!r}"):
        reply = conn.script(_CREATE)(keys, args)
    status = _text(reply[0])
    if status == "created":
        return Meta(name, kind, options, uid, parts, True)
    if status == "exists":
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name)
    if status == "missing":
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    meta = _parse_meta(name, list(reply[1:7]), False, codec)
    if meta.kind != kind:
        raise _kind_error(name, meta.kind, kind)
    return meta


def read_meta(conn: Connection, name: str, kind: Optional[str] = None, codec: Any = None) -> Meta:
    """The metadata of an existing object (see the module docstring)."""
    name = _check_any_name(name)
    with conn.errors(f"reading the metadata of {name!r}"):
        fields = conn.client.hmget(meta_key(name),
                                   ["kind", "options", "uid", "version", "parts", "mac"])
    if all(f is None for f in fields):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    meta = _parse_meta(name, list(fields), False, codec)
    if kind is not None and meta.kind != kind:
        raise _kind_error(name, meta.kind, kind)
    return meta


def delete_object(conn: Connection, name: str, kind: Optional[str] = None, uid: Optional[str] = None) -> None:
    """Delete the object ``name`` and all its declared parts, atomically."""
    name = _check_any_name(name)
    script = conn.script(_DELETE)
    for _ in range(100):
        with conn.errors(f"unlinking {name!r}"):
            raw_parts = conn.client.hget(meta_key(name), "parts")
        parts_text = _text(raw_parts) or ""
        try:
            parts = json.loads(parts_text) if parts_text else []
        except ValueError:
            raise CorruptDataError(f"the metadata of {name!r} ({meta_key(name)}) is corrupt") from None
        keys = [meta_key(name)] + [object_key(name, p) for p in parts]
        with conn.errors(f"unlinking {name!r}"):
            reply = script(keys, [kind or "", uid or "", parts_text])
        status = _text(reply[0])
        if status == "deleted":
            return
        if status == "missing":
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        if status == "kind":
            raise _kind_error(name, _text(reply[1]), kind or "")
        # 'changed': re-created between our read and the script; read again
    raise OSError(f"could not unlink {name!r}: it keeps being re-created")


def list_names(conn: Connection) -> List[str]:
    """Every object name on the server (or cluster), sorted."""
    head, tail = f"{PREFIX}:{{", f"}}:{META_PART}"
    names = set()
    with conn.errors("listing objects"):
        for key in conn.client.scan_iter(match=f"{PREFIX}:{{*}}:{META_PART}", count=1000):
            k = _text(key) or ""
            if k.startswith(head) and k.endswith(tail):
                names.add(k[len(head):-len(tail)])
    return sorted(names)
