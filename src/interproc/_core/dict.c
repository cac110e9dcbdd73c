/* DictCore: a hash table in a shared heap (heap.c).
 *
 * Keys are compared in a canonical encoding, never through Python's hash():
 * that differs between processes (PYTHONHASHSEED) and would send two
 * processes to different slots.  The encoding makes equal keys equal bytes
 * for None, bool, int, float, str, bytes and tuples and frozensets of those
 * (1, 1.0 and True all encode as the integer 1); any other hashable key is
 * encoded as its pickle.  The hash of the encoding picks the slot.
 *
 * The table follows CPython's split layout: a slot table of u32 entry
 * numbers probed with CPython's perturbation sequence, and an entry array
 * in insertion order, so iteration and popitem() order match a dict's.
 * A change of value writes a new item and swaps one word; the table is
 * rebuilt, never edited in place, when it fills.
 *
 * Every operation reads the table once into a checked view (dview) and
 * probes at most every slot once (a table with no empty slot is damaged,
 * not a reason to spin), and every item is read through ip_ditem_read(), so
 * a damaged or forged table raises SegmentError.  Keys are encoded and
 * values serialized before the lock, compared as bytes under it, and
 * decoded after it.
 */
#include "interproc.h"

#include <math.h>
#include <string.h>

#define SLOT_EMPTY 0u
#define SLOT_DUMMY 0xffffffffu
#define MIN_SLOTS 8u
#define KEY_MAX_DEPTH 32
/* Items store key lengths in 32 bits. */
#define KEY_MAX_BYTES UINT32_MAX
/* A probe sequence visits every slot within this many probes past the
 * table's size: the perturbation is 0 after 13 shifts of 5 bits, and from
 * then on i -> 5i + 1 (mod a power of two) has full period. */
#define PROBE_EXTRA 13u
/* Items per lock hold while iterating. */
#define CHUNK_MAX 1024

/* ------------------------------------------------------------ keys */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    int needs_orig; /* decoding the encoding would not give the key's type back */
    int has_pickle; /* decoding it calls pickle.loads */
    uint8_t small[96];
} kbuf_t;

static void kbuf_init(kbuf_t *b)
{
    b->buf = b->small;
    b->len = 0;
    b->cap = sizeof b->small;
    b->needs_orig = b->has_pickle = 0;
}

static void kbuf_free(kbuf_t *b)
{
    if (b->buf != b->small)
        PyMem_Free(b->buf);
}

static int kput_grow(kbuf_t *b, const void *p, size_t n)
{
    if (n > KEY_MAX_BYTES - b->len) {
        PyErr_SetString(PyExc_OverflowError, "key too large: its encoding would exceed 4 GiB");
        return -1;
    }
    /* Never beyond the limit: below it, kput() need not check it again. */
    size_t cap = (b->len + n) * 2 < KEY_MAX_BYTES ? (b->len + n) * 2 : KEY_MAX_BYTES;
    uint8_t *nb = PyMem_Malloc(cap);
    if (nb == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(nb, b->buf, b->len);
    kbuf_free(b);
    b->buf = nb;
    b->cap = cap;
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

static inline int kput(kbuf_t *b, const void *p, size_t n)
{
    if (n > b->cap - b->len)
        return kput_grow(b, p, n);
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

static int kput_tagged(kbuf_t *b, char tag, const void *p, size_t n)
{
    uint32_t n32 = (uint32_t)n;
    if (n > KEY_MAX_BYTES) {
        PyErr_SetString(PyExc_OverflowError, "key too large: its encoding would exceed 4 GiB");
        return -1;
    }
    if (kput(b, &tag, 1) < 0 || kput(b, &n32, 4) < 0)
        return -1;
    return kput(b, p, n);
}

static int encode_int(kbuf_t *b, PyObject *v)
{
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (!overflow) {
        char tag = 'i';
        if (kput(b, &tag, 1) < 0)
            return -1;
        return kput(b, &x, 8);
    }
    PyObject *s = PyNumber_ToBase(v, 16);
    if (s == NULL)
        return -1;
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    int rc = u ? kput_tagged(b, 'I', u, (size_t)n) : -1;
    Py_DECREF(s);
    return rc;
}

static int encode_key(kbuf_t *b, PyObject *k, int depth);

static int encode_seq(kbuf_t *b, PyObject *k, int depth, char tag)
{
    PyObject *seq = tag == 't' ? Py_NewRef(k) : PySequence_List(k);
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    uint32_t n32 = (uint32_t)n;
    int rc = -1;
    if (kput(b, &tag, 1) < 0 || kput(b, &n32, 4) < 0)
        goto done;
    if (tag == 't') {
        for (Py_ssize_t i = 0; i < n; i++)
            if (encode_key(b, PySequence_Fast_GET_ITEM(seq, i), depth + 1) < 0)
                goto done;
        rc = 0;
        goto done;
    }
    /* frozenset: members in the order of their encodings, so that equal
     * sets encode alike whatever their iteration order. */
    {
        PyObject *encs = PyList_New(n);
        if (encs == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < n; i++) {
            kbuf_t sub;
            kbuf_init(&sub);
            if (encode_key(&sub, PySequence_Fast_GET_ITEM(seq, i), depth + 1) < 0) {
                kbuf_free(&sub);
                Py_DECREF(encs);
                goto done;
            }
            b->needs_orig |= sub.needs_orig;
            b->has_pickle |= sub.has_pickle;
            PyObject *e = PyBytes_FromStringAndSize((const char *)sub.buf, (Py_ssize_t)sub.len);
            kbuf_free(&sub);
            if (e == NULL) {
                Py_DECREF(encs);
                goto done;
            }
            PyList_SET_ITEM(encs, i, e);
        }
        if (PyList_Sort(encs) == 0) {
            rc = 0;
            for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
                PyObject *e = PyList_GET_ITEM(encs, i);
                rc = kput(b, PyBytes_AS_STRING(e), (size_t)PyBytes_GET_SIZE(e));
            }
        }
        Py_DECREF(encs);
    }
done:
    Py_DECREF(seq);
    return rc;
}

static int encode_key(kbuf_t *b, PyObject *k, int depth)
{
    if (depth > KEY_MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError, "key nested too deeply");
        return -1;
    }
    PyTypeObject *t = Py_TYPE(k);
    if (t == &PyLong_Type)
        return encode_int(b, k);
    if (t == &PyUnicode_Type || (PyUnicode_Check(k) && (b->needs_orig = 1))) {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(k, &n);
        if (u != NULL)
            return kput_tagged(b, 's', u, (size_t)n);
        PyErr_Clear(); /* lone surrogates */
        PyObject *e = PyUnicode_AsEncodedString(k, "utf-8", "surrogatepass");
        if (e == NULL)
            return -1;
        int rc = kput_tagged(b, 's', PyBytes_AS_STRING(e), (size_t)PyBytes_GET_SIZE(e));
        Py_DECREF(e);
        return rc;
    }
    if (k == Py_None) {
        char tag = 'n';
        return kput(b, &tag, 1);
    }
    if (t == &PyBytes_Type || (PyBytes_Check(k) && (b->needs_orig = 1)))
        return kput_tagged(b, 'b', PyBytes_AS_STRING(k), (size_t)PyBytes_GET_SIZE(k));
    if (PyBool_Check(k) || PyLong_Check(k)) {
        b->needs_orig = 1;
        return encode_int(b, k);
    }
    if (PyFloat_Check(k)) {
        double x = PyFloat_AS_DOUBLE(k);
        if (t != &PyFloat_Type)
            b->needs_orig = 1;
        if (isfinite(x) && floor(x) == x) {
            b->needs_orig = 1;
            PyObject *i = PyLong_FromDouble(x);
            if (i == NULL)
                return -1;
            int rc = encode_int(b, i);
            Py_DECREF(i);
            return rc;
        }
        if (isnan(x))
            x = NAN;
        char tag = 'f';
        if (kput(b, &tag, 1) < 0)
            return -1;
        return kput(b, &x, 8);
    }
    if (PyTuple_Check(k)) {
        if (t != &PyTuple_Type)
            goto other;
        b->needs_orig = 1;
        return encode_seq(b, k, depth, 't');
    }
    if (PyFrozenSet_Check(k)) {
        if (t != &PyFrozenSet_Type)
            goto other;
        b->needs_orig = 1;
        return encode_seq(b, k, depth, 'F');
    }
other:
    if (PyObject_Hash(k) == -1)
        return -1; /* unhashable: the TypeError a dict raises */
    if (ip_state.dumps == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "interproc._core is not configured");
        return -1;
    }
    PyObject *args[2] = {k, ip_state.protocol};
    PyObject *p = PyObject_Vectorcall(ip_state.dumps, args, 2, NULL);
    if (p == NULL)
        return -1;
    b->has_pickle = 1;
    int rc = kput_tagged(b, 'p', PyBytes_AS_STRING(p), (size_t)PyBytes_GET_SIZE(p));
    Py_DECREF(p);
    return rc;
}

/* Decodes one encoded key at *pp; advances it. */
static PyObject *decode_key(const uint8_t **pp, const uint8_t *end, int depth)
{
    const uint8_t *p = *pp;
    if (p >= end || depth > KEY_MAX_DEPTH)
        goto corrupt;
    char tag = (char)*p++;
    uint32_t n = 0;
    if (tag == 's' || tag == 'b' || tag == 'I' || tag == 'p' || tag == 't' || tag == 'F') {
        if (end - p < 4)
            goto corrupt;
        memcpy(&n, p, 4);
        p += 4;
        /* every member of a tuple or frozenset takes at least a byte */
        if ((uint64_t)(end - p) < n)
            goto corrupt;
    }
    PyObject *res = NULL;
    switch (tag) {
    case 'n':
        res = Py_NewRef(Py_None);
        break;
    case 'i': {
        long long x;
        if (end - p < 8)
            goto corrupt;
        memcpy(&x, p, 8);
        p += 8;
        res = PyLong_FromLongLong(x);
        break;
    }
    case 'f': {
        double x;
        if (end - p < 8)
            goto corrupt;
        memcpy(&x, p, 8);
        p += 8;
        res = PyFloat_FromDouble(x);
        break;
    }
    case 's':
        res = PyUnicode_DecodeUTF8((const char *)p, n, "surrogatepass");
        p += n;
        break;
    case 'b':
        res = PyBytes_FromStringAndSize((const char *)p, n);
        p += n;
        break;
    case 'I': {
        PyObject *s = PyUnicode_FromStringAndSize((const char *)p, n);
        p += n;
        if (s != NULL) {
            res = PyLong_FromUnicodeObject(s, 0);
            Py_DECREF(s);
        }
        break;
    }
    case 'p': {
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)p, n);
        p += n;
        if (bytes != NULL) {
            res = PyObject_CallOneArg(ip_state.loads, bytes);
            Py_DECREF(bytes);
        }
        break;
    }
    case 't':
    case 'F': {
        /* Every element takes at least its tag byte: a count beyond the
         * bytes left is damage, and must not size an allocation. */
        if ((uint64_t)n > (uint64_t)(end - p))
            goto corrupt;
        PyObject *t = PyTuple_New(n);
        if (t == NULL)
            return NULL;
        for (uint32_t i = 0; i < n; i++) {
            PyObject *e = decode_key(&p, end, depth + 1);
            if (e == NULL) {
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, i, e);
        }
        if (tag == 't')
            res = t;
        else {
            res = PyFrozenSet_New(t);
            Py_DECREF(t);
        }
        break;
    }
    default:
        goto corrupt;
    }
    *pp = p;
    return res;
corrupt:
    PyErr_SetString(ip_SegmentError, "shared dict is corrupt (bad key encoding)");
    return NULL;
}

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* Seed-free, so every process finds a key in the same slot. */
static uint64_t key_hash(const uint8_t *p, size_t n)
{
    const uint64_t m1 = 0x9E3779B97F4A7C15ull, m2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t h = m2 ^ (n * m1);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = rotl(h ^ (w * m1), 31) * m2;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = rotl(h ^ (w * m1), 31) * m2;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* A key ready for the table: its encoding, hash and, when the encoding
 * loses the key's type, the key as a value. */
typedef struct {
    kbuf_t enc;
    uint64_t hash;
    ip_payload_t orig;
    int has_orig;
} dkey_t;

static void dkey_clear(dkey_t *k);

static int dkey_init(dkey_t *k, PyObject *key)
{
    kbuf_init(&k->enc);
    k->has_orig = 0;
    k->orig.obj = NULL;
    k->orig.bufs = NULL;
    if (Py_IS_TYPE(key, &PyLong_Type)) {
        /* The commonest key, encoded as encode_int() would, without its calls. */
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(key, &overflow);
        if (!overflow && !(x == -1 && PyErr_Occurred())) {
            k->enc.small[0] = 'i';
            memcpy(k->enc.small + 1, &x, 8);
            k->enc.len = 9;
            k->hash = key_hash(k->enc.buf, 9);
            return 0;
        }
        PyErr_Clear();
    }
    if (encode_key(&k->enc, key, 0) < 0) {
        kbuf_free(&k->enc);
        return -1;
    }
    k->hash = key_hash(k->enc.buf, k->enc.len);
    if (k->enc.needs_orig) {
        if (ip_payload_init(&k->orig, key) < 0) {
            ip_payload_clear(&k->orig);
            kbuf_free(&k->enc);
            return -1;
        }
        k->has_orig = 1;
        if (k->orig.len > KEY_MAX_BYTES) {
            PyErr_SetString(PyExc_OverflowError, "key too large: its serialized form exceeds 4 GiB");
            dkey_clear(k);
            return -1;
        }
    }
    return 0;
}

static void dkey_clear(dkey_t *k)
{
    if (k->has_orig)
        ip_payload_clear(&k->orig);
    kbuf_free(&k->enc);
}

PyObject *ip_key_decode(const uint8_t *data, uint64_t len)
{
    const uint8_t *p = data;
    PyObject *res = decode_key(&p, data + len, 0);
    if (res != NULL && p != data + len) {
        Py_CLEAR(res);
        PyErr_SetString(ip_SegmentError, "shared dict is corrupt (bad key encoding)");
    }
    return res;
}

/* Keys that decode to an ASCII str (nothing can fail), bytes, a 64-bit
 * int, a float or None are decoded under the lock; the rest (tuples,
 * frozensets, pickles, big ints, other text) after it. */
static int key_atom(const uint8_t *p, uint64_t len)
{
    int now = len > 0 && (p[0] == 'n' || p[0] == 'i' || p[0] == 'f' || p[0] == 'b' || p[0] == 's');
    for (uint64_t i = 5; now && p[0] == 's' && i < len; i++)
        now = p[i] < 0x80;
    return now;
}

/* ------------------------------------------------------------ table */

/* A dict's table as read once under the lock and checked: what the
 * operation uses, never the live words again.  After an allocation (the
 * heap may have moved) its pointers are remade with dview_moved(); after
 * anything that changes the table it is read again. */
typedef struct {
    uint32_t *slots; /* NULL: no table yet */
    ip_dentry_t *ents;
    uint64_t index, items, mask, cap, nitems, used, version;
} dview_t;

#define OFLD(op, f) ((op)->off + offsetof(ip_obj_t, f))

static int dview(const ip_op_t *op, dview_t *v)
{
    ip_heap_t *hp = op->hp;
    ip_obj_t *o = ip_op_obj(op);
    if (o == NULL || IP_LOAD(o->type) == IP_OBJ_LIST) {
        PyErr_SetString(ip_SegmentError, "shared container is corrupt or was freed");
        return -1;
    }
    v->index = IP_LOAD(o->index);
    v->items = IP_LOAD(o->items);
    v->mask = IP_LOAD(o->mask);
    v->cap = IP_LOAD(o->cap);
    v->nitems = IP_LOAD(o->nitems);
    v->used = IP_LOAD(o->used);
    v->version = IP_LOAD(o->version);
    v->slots = NULL;
    v->ents = NULL;
    if (v->index == 0) {
        v->mask = v->cap = v->nitems = 0;
        return 0;
    }
    /* Slots hold entry numbers + 1 in 32 bits (all-ones: deleted), and a
     * table always keeps empty slots beyond its capacity. */
    if (v->mask >= UINT32_MAX || (v->mask & (v->mask + 1)) != 0 || v->cap > v->mask
        || v->nitems > v->cap)
        return ip_heap_corrupt("bad dict table");
    if (!ip_layout_is(op->seen, v->index, v->items, v->mask, v->cap)) {
        uint64_t room = ip_heap_block(hp, v->index);
        if (room == 0)
            return -1;
        if (room / sizeof(uint32_t) < v->mask + 1)
            return ip_heap_corrupt("a dict's slots overflow their block");
        if ((room = ip_heap_block(hp, v->items)) == 0)
            return -1;
        if (room / sizeof(ip_dentry_t) < v->cap)
            return ip_heap_corrupt("a dict's entries overflow their block");
        ip_layout_set(op->seen, v->index, v->items, v->mask, v->cap);
    }
    v->slots = IP_HOFF(hp, v->index);
    v->ents = IP_HOFF(hp, v->items);
    return 0;
}

/* After an allocation, which may have moved the heap but changes no
 * container: the view's pointers into the heap as it is mapped now.  Its
 * offsets were checked against a mapping that can only have grown. */
static void dview_moved(const ip_op_t *op, dview_t *v)
{
    if (v->slots != NULL) {
        v->slots = IP_HOFF(op->hp, v->index);
        v->ents = IP_HOFF(op->hp, v->items);
    }
}

/* 1: the key is at entry *ix, in slot *slot, item *item (read into *found
 * when that is not NULL); 0: it is missing and a new entry for it would take
 * slot *slot; -1: SegmentError. */
static int lookup(ip_heap_t *hp, const dview_t *v, const dkey_t *k, uint64_t *ix, uint64_t *slot,
                  uint64_t *item, ip_item_t *found)
{
    *slot = 0;
    if (v->slots == NULL)
        return 0;
    uint64_t mask = v->mask, perturb = k->hash, i = k->hash & mask;
    int64_t free_slot = -1;
    for (uint64_t probes = mask + 1 + PROBE_EXTRA; probes > 0; probes--) {
        uint32_t s = IP_LOAD(v->slots[i]);
        if (s == SLOT_EMPTY) {
            *slot = free_slot >= 0 ? (uint64_t)free_slot : i;
            return 0;
        }
        if (s == SLOT_DUMMY) {
            if (free_slot < 0)
                free_slot = (int64_t)i;
        } else {
            if (s > v->nitems)
                return ip_heap_corrupt("a dict slot names no entry");
            uint64_t it = IP_LOAD(v->ents[s - 1].item);
            if (IP_LOAD(v->ents[s - 1].hash) == k->hash && it != 0) {
                ip_item_t d, *dp = found != NULL ? found : &d;
                if (ip_ditem_read(hp, it, dp) < 0)
                    return -1;
                if (dp->klen == k->enc.len && memcmp(dp->key, k->enc.buf, k->enc.len) == 0) {
                    *ix = s - 1;
                    *slot = i;
                    *item = it;
                    return 1;
                }
            }
        }
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
    return ip_heap_corrupt("a dict's slot table has no empty slot");
}

/* The slot holding entry `ix` (whose hash is `hash`); -1 with SegmentError
 * if no slot does. */
static int64_t slot_of(const dview_t *v, uint64_t ix, uint64_t hash)
{
    uint64_t mask = v->mask, perturb = hash, i = hash & mask;
    for (uint64_t probes = mask + 1 + PROBE_EXTRA; probes > 0; probes--) {
        if (IP_LOAD(v->slots[i]) == (uint32_t)(ix + 1))
            return (int64_t)i;
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
    ip_heap_corrupt("a dict entry has no slot");
    return -1;
}

/* Stores a u32 slot through the aligned word that holds it, logged. */
static int set_slot(ip_heap_t *hp, const dview_t *v, uint64_t slot, uint32_t val)
{
    uint64_t soff = v->index + slot * sizeof(uint32_t);
    uint64_t woff = soff & ~(uint64_t)7;
    uint64_t w = IP_LOAD(*(uint64_t *)IP_HOFF(hp, woff));
    memcpy((uint8_t *)&w + (soff - woff), &val, 4);
    return ip_heap_set(hp, woff, w);
}

/* Rebuilds the table with room for at least `want` entries, compacting
 * out the holes.  New blocks, then one logged switch of five words. */
static int resize(const ip_op_t *op, uint64_t want)
{
    ip_heap_t *hp = op->hp;
    uint64_t slots = MIN_SLOTS;
    while (slots * 2 / 3 < want)
        slots *= 2;
    if (slots - 1 >= UINT32_MAX) {
        PyErr_SetString(PyExc_MemoryError, "too many keys for a shared dict");
        return -1;
    }
    uint64_t cap = slots * 2 / 3;
    uint64_t nidx = ip_heap_alloc(hp, slots * sizeof(uint32_t));
    if (nidx == 0)
        return -1;
    uint64_t nents = ip_heap_alloc(hp, cap * sizeof(ip_dentry_t));
    dview_t v;
    if (nents == 0 || dview(op, &v) < 0)
        return -1;
    uint32_t *ns = IP_HOFF(hp, nidx);
    ip_dentry_t *ne = IP_HOFF(hp, nents);
    memset(ns, 0, slots * sizeof(uint32_t));
    uint64_t n = 0;
    for (uint64_t i = 0; i < v.nitems; i++) {
        ip_dentry_t e = {IP_LOAD(v.ents[i].hash), IP_LOAD(v.ents[i].item)};
        if (e.item == 0)
            continue;
        if (n == cap)
            return ip_heap_corrupt("a dict holds more entries than it counts");
        /* The new table is unpublished but shared: bounded all the same. */
        uint64_t perturb = e.hash, s = e.hash & (slots - 1), probes = slots + PROBE_EXTRA;
        while (IP_LOAD(ns[s]) != SLOT_EMPTY && --probes > 0) {
            perturb >>= 5;
            s = (s * 5 + perturb + 1) & (slots - 1);
        }
        if (probes == 0)
            return ip_heap_corrupt("a new dict table was overwritten");
        ne[n] = e;
        ns[s] = (uint32_t)(n + 1);
        n++;
    }
    if (ip_heap_set(hp, OFLD(op, index), nidx) < 0 || ip_heap_set(hp, OFLD(op, mask), slots - 1) < 0
        || ip_heap_set(hp, OFLD(op, items), nents) < 0 || ip_heap_set(hp, OFLD(op, cap), cap) < 0
        || ip_heap_set(hp, OFLD(op, nitems), n) < 0)
        return -1;
    if (ip_heap_free_later(hp, v.index) < 0 || ip_heap_free_later(hp, v.items) < 0)
        return -1;
    return 0;
}

/* Writes a new item for key k (keeping the original key of item `like`,
 * when given: read before, and pointed at the heap as it is after the
 * allocation) with value v.  Returns its offset, or 0 with an exception set. */
static uint64_t new_item(ip_heap_t *hp, const dkey_t *k, ip_item_t *like, const ip_value_t *v)
{
    uint64_t klen = k->enc.len, olen = like ? like->olen : k->has_orig ? k->orig.len : 0;
    uint64_t off = ip_heap_alloc(hp, sizeof(ip_ditem_t) + klen + olen + v->p.len);
    if (off == 0 || ip_value_hold(hp, v) < 0)
        return 0;
    ip_ditem_t *it = IP_HOFF(hp, off);
    uint8_t *key = (uint8_t *)(it + 1);
    memset(it, 0, sizeof *it);
    it->hash = k->hash;
    it->klen = (uint32_t)klen;
    it->olen = (uint32_t)olen;
    it->pad[0] = (uint8_t)k->enc.has_pickle;
    memcpy(key, k->enc.buf, klen);
    if (like) {
        ip_ditem_rebase(hp, like);
        it->otype = (uint8_t)like->otype;
        memcpy(key + klen, like->orig, olen);
    } else if (olen) {
        it->otype = (uint8_t)k->orig.type;
        ip_payload_write(&k->orig, key + klen);
    }
    it->vlen = v->p.len;
    it->vtype = (uint8_t)v->p.type;
    ip_value_write(v, key + klen + olen);
    return off;
}

/* Drops the value reference of item `it` (read before, maybe before an
 * allocation) and frees the item after the commit. */
static int retire_item(ip_heap_t *hp, ip_item_t *it)
{
    ip_ditem_rebase(hp, it);
    if (ip_value_drop(hp, it->vtype, it->val, it->vlen) < 0)
        return -1;
    return ip_heap_free_later(hp, it->off);
}

/* Sets k to v.  `only_new`: leave an existing value alone (setdefault).
 * Returns 1 if the key was new, 0 if not, -1 on error. */
static int store(const ip_op_t *op, const dkey_t *k, const ip_value_t *v, int only_new)
{
    ip_heap_t *hp = op->hp;
    dview_t dv;
    ip_item_t old;
    uint64_t ix = 0, slot, item = 0;
    int found;
    if (dview(op, &dv) < 0 || (found = lookup(hp, &dv, k, &ix, &slot, &item, &old)) < 0)
        return -1;
    if (found) {
        if (only_new)
            return 0;
        /* Only offsets of the view are used after the allocation. */
        uint64_t fresh = new_item(hp, k, &old, v);
        if (fresh == 0)
            return -1;
        uint64_t eoff = dv.items + ix * sizeof(ip_dentry_t) + offsetof(ip_dentry_t, item);
        if (ip_heap_set(hp, eoff, fresh) < 0 || retire_item(hp, &old) < 0)
            return -1;
        return 0;
    }
    uint64_t fresh = new_item(hp, k, NULL, v);
    if (fresh == 0)
        return -1;
    dview_moved(op, &dv);
    if (dv.slots == NULL || dv.nitems >= dv.cap) {
        uint64_t live = dv.used < dv.nitems ? dv.used : dv.nitems;
        if (resize(op, live * 3 > 8 ? live * 3 : 8) < 0 || dview(op, &dv) < 0)
            return -1;
        if ((found = lookup(hp, &dv, k, &ix, &slot, &item, &old)) != 0)
            return found < 0 ? -1 : ip_heap_corrupt("a dict key appeared under the lock");
    }
    uint32_t s = IP_LOAD(dv.slots[slot]);
    if (dv.nitems >= dv.cap || (s != SLOT_EMPTY && s != SLOT_DUMMY))
        return ip_heap_corrupt("a dict table changed under the lock");
    uint64_t n = dv.nitems;
    dv.ents[n].hash = k->hash; /* beyond nitems: not yet part of the table */
    dv.ents[n].item = fresh;
    if (set_slot(hp, &dv, slot, (uint32_t)(n + 1)) < 0 || ip_heap_set(hp, OFLD(op, nitems), n + 1) < 0
        || ip_heap_set(hp, OFLD(op, used), dv.used + 1) < 0
        || ip_heap_set(hp, OFLD(op, version), dv.version + 1) < 0)
        return -1;
    return 1;
}

/* Removes entry ix, found at slot, whose item is `it`. */
static int remove_entry(const ip_op_t *op, const dview_t *dv, uint64_t ix, uint64_t slot, ip_item_t *it)
{
    ip_heap_t *hp = op->hp;
    if (dv->used == 0)
        return ip_heap_corrupt("a dict counts no keys but holds one");
    uint64_t eoff = dv->items + ix * sizeof(ip_dentry_t) + offsetof(ip_dentry_t, item);
    if (set_slot(hp, dv, slot, SLOT_DUMMY) < 0 || ip_heap_set(hp, eoff, 0) < 0
        || ip_heap_set(hp, OFLD(op, used), dv->used - 1) < 0
        || ip_heap_set(hp, OFLD(op, version), dv->version + 1) < 0)
        return -1;
    return retire_item(hp, it);
}

/* ---------------------------------------------------------- reading */

/* Under the lock: copies of an item's key and value. */
static int copy_key(ip_heap_t *hp, const ip_item_t *it, ip_copy_t *c)
{
    if (it->olen == 0)
        return ip_copy_split(it->key, it->klen, key_atom, ip_key_decode, IP_COPY_KEY, c);
    if (it->otype == IP_VAL_REF) {
        c->obj = NULL;
        c->counted = 0;
        return ip_heap_corrupt("bad dict key");
    }
    return ip_copy_value(hp, it->otype, it->orig, it->olen, c);
}

static int copy_value(ip_heap_t *hp, const ip_item_t *it, ip_copy_t *c)
{
    return ip_copy_value(hp, it->vtype, it->val, it->vlen, c);
}

/* ---------------------------------------------------------- DictCore */

static PyObject *DictCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return ip_handle_new(type, args, kwds, IP_OBJ_DICT);
}

static int raise_key_error(PyObject *key)
{
    PyObject *t = PyTuple_Pack(1, key);
    if (t != NULL) {
        PyErr_SetObject(PyExc_KeyError, t);
        Py_DECREF(t);
    }
    return -1;
}

/* Looks key up: 1 with its value's copy in *c (the key is also deleted
 * with `remove`: pop), 0 if missing, -1 with an exception.  On 1 the caller
 * finishes c with op->hp, then calls ip_op_done(op). */
static int fetch(ip_handle_t *h, PyObject *key, int remove, ip_op_t *op, ip_copy_t *c)
{
    dkey_t k;
    if (dkey_init(&k, key) < 0)
        return -1;
    if (ip_op_begin(h, op) < 0) {
        dkey_clear(&k);
        return -1;
    }
    ip_heap_t *hp = op->hp;
    dview_t dv;
    ip_item_t it;
    uint64_t ix = 0, slot, item = 0;
    int rc = dview(op, &dv) < 0 ? -1 : lookup(hp, &dv, &k, &ix, &slot, &item, &it);
    if (rc == 1) {
        if (copy_value(hp, &it, c) < 0)
            rc = -1;
        else if ((remove && remove_entry(op, &dv, ix, slot, &it) < 0) || ip_copy_count(hp, c, 1) < 0) {
            ip_copy_discard(hp, c, 1);
            rc = -1;
        }
    }
    ip_op_end(op, rc >= 0);
    if (rc <= 0)
        ip_op_done(op);
    dkey_clear(&k);
    return rc;
}

static PyObject *fetched(ip_op_t *op, ip_copy_t *c)
{
    PyObject *res = ip_copy_finish(op->hp, c);
    ip_op_done(op);
    return res;
}

static PyObject *DictCore_subscript(ip_handle_t *h, PyObject *key)
{
    ip_op_t op;
    ip_copy_t c;
    int rc = fetch(h, key, 0, &op, &c);
    if (rc == 0)
        raise_key_error(key);
    return rc > 0 ? fetched(&op, &c) : NULL;
}

static int DictCore_ass_subscript(ip_handle_t *h, PyObject *key, PyObject *value)
{
    dkey_t k;
    if (ip_handle_check(h) < 0 || dkey_init(&k, key) < 0)
        return -1;
    ip_value_t v;
    if (value != NULL && ip_value_init(h->heap, &v, value) < 0) {
        dkey_clear(&k);
        return -1;
    }
    ip_op_t op;
    int rc = ip_op_begin(h, &op);
    if (rc == 0) {
        if (value != NULL) {
            rc = store(&op, &k, &v, 0) < 0 ? -1 : 0;
        } else {
            dview_t dv;
            ip_item_t it;
            uint64_t ix = 0, slot, item = 0;
            int found = dview(&op, &dv) < 0 ? -1 : lookup(op.hp, &dv, &k, &ix, &slot, &item, &it);
            rc = found < 0 ? -1 : found == 0 ? -2 : remove_entry(&op, &dv, ix, slot, &it);
        }
        ip_op_end(&op, rc != -1);
        ip_op_done(&op);
        if (rc == -2)
            rc = raise_key_error(key);
    }
    if (value != NULL)
        ip_value_clear(&v);
    dkey_clear(&k);
    return rc;
}

static int DictCore_contains(ip_handle_t *h, PyObject *key)
{
    dkey_t k;
    if (dkey_init(&k, key) < 0)
        return -1;
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0) {
        dkey_clear(&k);
        return -1;
    }
    dview_t dv;
    uint64_t ix, slot, item;
    int rc = dview(&op, &dv) < 0 ? -1 : lookup(op.hp, &dv, &k, &ix, &slot, &item, NULL);
    ip_op_end(&op, 1);
    ip_op_done(&op);
    dkey_clear(&k);
    return rc;
}

static PyObject *DictCore_get(ip_handle_t *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd", nargs);
        return NULL;
    }
    ip_op_t op;
    ip_copy_t c;
    int rc = fetch(h, args[0], 0, &op, &c);
    if (rc == 0)
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return rc > 0 ? fetched(&op, &c) : NULL;
}

static PyObject *DictCore_pop(ip_handle_t *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "pop expected 1 or 2 arguments, got %zd", nargs);
        return NULL;
    }
    ip_op_t op;
    ip_copy_t c;
    int rc = fetch(h, args[0], 1, &op, &c);
    if (rc == 0) {
        if (nargs == 2)
            return Py_NewRef(args[1]);
        raise_key_error(args[0]);
    }
    return rc > 0 ? fetched(&op, &c) : NULL;
}

static PyObject *DictCore_setdefault(ip_handle_t *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "setdefault expected 1 or 2 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *dflt = nargs == 2 ? args[1] : Py_None;
    dkey_t k;
    if (dkey_init(&k, args[0]) < 0)
        return NULL;
    ip_value_t v;
    if (ip_handle_check(h) < 0 || ip_value_init(h->heap, &v, dflt) < 0) {
        dkey_clear(&k);
        return NULL;
    }
    PyObject *res = NULL;
    ip_op_t op;
    if (ip_op_begin(h, &op) == 0) {
        ip_heap_t *hp = op.hp;
        ip_copy_t c;
        int rc = store(&op, &k, &v, 1);
        if (rc == 0) {
            /* the key was there: its value */
            dview_t dv;
            ip_item_t it;
            uint64_t ix, slot, item = 0;
            if (dview(&op, &dv) < 0 || lookup(hp, &dv, &k, &ix, &slot, &item, &it) != 1
                || copy_value(hp, &it, &c) < 0)
                rc = -1;
            else if (ip_copy_count(hp, &c, 1) < 0) {
                ip_copy_discard(hp, &c, 1);
                rc = -1;
            }
            if (rc < 0 && !PyErr_Occurred())
                ip_heap_corrupt("a dict key vanished under the lock");
        }
        ip_op_end(&op, rc >= 0);
        if (rc == 1)
            res = Py_NewRef(dflt);
        else if (rc == 0)
            res = ip_copy_finish(hp, &c);
        ip_op_done(&op);
    }
    ip_value_clear(&v);
    dkey_clear(&k);
    return res;
}

static PyObject *DictCore_popitem(ip_handle_t *h, PyObject *Py_UNUSED(a))
{
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0)
        return NULL;
    ip_heap_t *hp = op.hp;
    dview_t dv;
    ip_item_t it;
    ip_copy_t c[2] = {{0}, {0}};
    int rc = dview(&op, &dv);
    if (rc == 0 && dv.used == 0) {
        rc = -2;
    } else if (rc == 0) {
        uint64_t n = dv.nitems, item = 0;
        while (n > 0 && (item = IP_LOAD(dv.ents[n - 1].item)) == 0)
            n--;
        int64_t slot = -1;
        if (n == 0)
            rc = ip_heap_corrupt("a dict counts keys it does not hold");
        else if ((slot = slot_of(&dv, n - 1, IP_LOAD(dv.ents[n - 1].hash))) < 0
                 || ip_ditem_read(hp, item, &it) < 0 || copy_key(hp, &it, &c[0]) < 0)
            rc = -1;
        else if (copy_value(hp, &it, &c[1]) < 0)
            rc = -1;
        else if (remove_entry(&op, &dv, n - 1, (uint64_t)slot, &it) < 0
                 || ip_heap_set(hp, OFLD(&op, nitems), n - 1) < 0 || ip_copy_count(hp, c, 2) < 0)
            rc = -1;
        if (rc < 0)
            ip_copy_discard(hp, c, 2);
    }
    ip_op_end(&op, rc != -1);
    PyObject *res = NULL;
    if (rc == -2) {
        PyErr_SetString(PyExc_KeyError, "popitem(): dictionary is empty");
    } else if (rc == 0) {
        PyObject *list = ip_copy_finish_all(hp, c, 1, 2);
        if (list != NULL) {
            res = Py_NewRef(PyList_GET_ITEM(list, 0));
            Py_DECREF(list);
        }
    }
    ip_op_done(&op);
    return res;
}

PyDoc_STRVAR(update_doc, "_update_pairs(pairs)\n--\n\n"
"Store a list of (key, value) pairs in one transaction.");

static PyObject *DictCore_update_pairs(ip_handle_t *h, PyObject *pairs)
{
    if (!PyList_Check(pairs)) {
        PyErr_SetString(PyExc_TypeError, "pairs must be a list");
        return NULL;
    }
    if (ip_handle_check(h) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(pairs);
    dkey_t *keys = PyMem_Calloc(n ? (size_t)n : 1, sizeof *keys);
    ip_value_t *vals = PyMem_Calloc(n ? (size_t)n : 1, sizeof *vals);
    Py_ssize_t done = 0;
    PyObject *res = NULL;
    if (keys == NULL || vals == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    /* Everything that can fail on bad input fails here, before the lock:
     * an unhashable key or unpicklable value leaves the dict as it was. */
    for (; done < n; done++) {
        PyObject *p = PyList_GET_ITEM(pairs, done);
        if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 2) {
            PyErr_SetString(PyExc_TypeError, "pairs must hold (key, value) tuples");
            goto out;
        }
        if (dkey_init(&keys[done], PyTuple_GET_ITEM(p, 0)) < 0)
            goto out;
        if (ip_value_init(h->heap, &vals[done], PyTuple_GET_ITEM(p, 1)) < 0) {
            dkey_clear(&keys[done]);
            goto out;
        }
    }
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0)
        goto out;
    int ok = 1;
    for (Py_ssize_t i = 0; i < n && ok; i++) {
        ip_heap_checkpoint(op.hp);
        ok = store(&op, &keys[i], &vals[i], 0) >= 0;
    }
    ip_op_end(&op, ok);
    ip_op_done(&op);
    if (ok)
        res = Py_NewRef(Py_None);
out:
    for (Py_ssize_t i = 0; i < done; i++) {
        dkey_clear(&keys[i]);
        ip_value_clear(&vals[i]);
    }
    PyMem_Free(keys);
    PyMem_Free(vals);
    return res;
}

/* ------------------------------------------------------- key sets */

/* What _keys_apply() does with each key: a shared set's bulk updates. */
enum { KEYS_ADD = 0, KEYS_DISCARD = 1, KEYS_TOGGLE = 2, KEYS_RETAIN = 3 };

/* By encoding, then by position, so that the first of equal keys sorts first. */
static int dkey_order(const void *a, const void *b)
{
    const dkey_t *x = *(dkey_t *const *)a, *y = *(dkey_t *const *)b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    if (x->enc.len != y->enc.len)
        return x->enc.len < y->enc.len ? -1 : 1;
    int c = memcmp(x->enc.buf, y->enc.buf, x->enc.len);
    if (c != 0)
        return c;
    return x < y ? -1 : x > y;
}

static int dkey_same(const dkey_t *x, const dkey_t *y)
{
    return x->hash == y->hash && x->enc.len == y->enc.len
           && memcmp(x->enc.buf, y->enc.buf, x->enc.len) == 0;
}

/* Whether a stored key (its hash and encoding) is among the sorted keys. */
static int sorted_has(dkey_t *const *sorted, Py_ssize_t n, uint64_t hash, const uint8_t *enc,
                      uint64_t len)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        const dkey_t *k = sorted[mid];
        int c = k->hash != hash         ? (k->hash < hash ? -1 : 1)
                : k->enc.len != len     ? (k->enc.len < len ? -1 : 1)
                                        : memcmp(k->enc.buf, enc, len);
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Removes key k if present: 1 removed, 0 absent, -1 error. */
static int discard_key(const ip_op_t *op, const dkey_t *k)
{
    dview_t dv;
    ip_item_t it;
    uint64_t ix = 0, slot, item = 0;
    int found = dview(op, &dv) < 0 ? -1 : lookup(op->hp, &dv, k, &ix, &slot, &item, &it);
    if (found <= 0)
        return found;
    return remove_entry(op, &dv, ix, slot, &it) < 0 ? -1 : 1;
}

/* Removes every key not among the sorted ones; the number removed, or -1. */
static Py_ssize_t retain_keys(const ip_op_t *op, dkey_t *const *sorted, Py_ssize_t n)
{
    ip_heap_t *hp = op->hp;
    Py_ssize_t removed = 0;
    dview_t dv;
    if (dview(op, &dv) < 0)
        return -1;
    /* Removing leaves holes and never allocates: entry numbers stay put. */
    for (uint64_t i = 0; i < dv.nitems; i++) {
        uint64_t item = IP_LOAD(dv.ents[i].item);
        if (item == 0)
            continue;
        ip_item_t it;
        if (ip_ditem_read(hp, item, &it) < 0)
            return -1;
        uint64_t hash = IP_LOAD(dv.ents[i].hash);
        if (sorted_has(sorted, n, hash, it.key, it.klen))
            continue;
        int64_t slot = slot_of(&dv, i, hash);
        if (slot < 0 || remove_entry(op, &dv, i, (uint64_t)slot, &it) < 0)
            return -1;
        removed++;
        ip_heap_checkpoint(hp);
        if (dview(op, &dv) < 0)
            return -1;
    }
    return removed;
}

PyDoc_STRVAR(keys_apply_doc, "_keys_apply(how, keys) -> int\n--\n\n"
"A shared set's bulk update, in one transaction: add every key of the list\n"
"(how=0, with None as its value), discard them (1), toggle each distinct\n"
"one (2), or remove every stored key not among them (3).  Returns how many\n"
"keys were added or removed.  The keys are encoded before the lock.");

static PyObject *DictCore_keys_apply(ip_handle_t *h, PyObject *args)
{
    int how;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "iO!:_keys_apply", &how, &PyList_Type, &list))
        return NULL;
    if (how < KEYS_ADD || how > KEYS_RETAIN) {
        PyErr_Format(PyExc_ValueError, "not a key operation: %d", how);
        return NULL;
    }
    if (ip_handle_check(h) < 0)
        return NULL;
    /* A copy: encoding a key may run code that changes the list. */
    PyObject *items = PySequence_List(list);
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items), done = 0, changed = 0;
    dkey_t *keys = PyMem_Calloc(n ? (size_t)n : 1, sizeof *keys);
    dkey_t **sorted = PyMem_Calloc(n ? (size_t)n : 1, sizeof *sorted);
    char *dup = PyMem_Calloc(n ? (size_t)n : 1, 1);
    PyObject *res = NULL;
    int have_value = 0;
    ip_value_t none;
    if (keys == NULL || sorted == NULL || dup == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    /* Whatever can fail on bad input (an unhashable key, one that does
     * not pickle) fails here, before the lock, and changes nothing. */
    for (; done < n; done++) {
        if (dkey_init(&keys[done], PyList_GET_ITEM(items, done)) < 0)
            goto out;
        sorted[done] = &keys[done];
    }
    if (how == KEYS_TOGGLE || how == KEYS_RETAIN) {
        qsort(sorted, (size_t)n, sizeof *sorted, dkey_order);
        for (Py_ssize_t i = 1; i < n; i++)
            if (dkey_same(sorted[i - 1], sorted[i]))
                dup[sorted[i] - keys] = 1;
    }
    if (how == KEYS_ADD || how == KEYS_TOGGLE) {
        if (ip_value_init(h->heap, &none, Py_None) < 0)
            goto out;
        have_value = 1;
    }
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0)
        goto out;
    int ok = 1;
    if (how == KEYS_RETAIN) {
        Py_ssize_t removed = retain_keys(&op, sorted, n);
        ok = removed >= 0;
        changed = removed;
    }
    for (Py_ssize_t i = 0; i < n && ok && how != KEYS_RETAIN; i++) {
        if (dup[i])
            continue;
        ip_heap_checkpoint(op.hp);
        int rc;
        if (how == KEYS_ADD) {
            rc = store(&op, &keys[i], &none, 1);
        } else {
            rc = discard_key(&op, &keys[i]);
            if (rc == 0 && how == KEYS_TOGGLE)
                rc = store(&op, &keys[i], &none, 1);
        }
        ok = rc >= 0;
        changed += rc > 0;
    }
    ip_op_end(&op, ok);
    ip_op_done(&op);
    if (ok)
        res = PyLong_FromSsize_t(changed);
out:
    if (have_value)
        ip_value_clear(&none);
    for (Py_ssize_t i = 0; i < done; i++)
        dkey_clear(&keys[i]);
    PyMem_Free(keys);
    PyMem_Free(sorted);
    PyMem_Free(dup);
    Py_DECREF(items);
    return res;
}

static PyObject *DictCore_clear(ip_handle_t *h, PyObject *Py_UNUSED(a))
{
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0)
        return NULL;
    ip_heap_t *hp = op.hp;
    dview_t dv;
    int rc = dview(&op, &dv);
    if (rc == 0 && dv.slots != NULL) {
        /* Retiring items never allocates, so the view stays valid. */
        for (uint64_t i = 0; i < dv.nitems && rc == 0; i++) {
            uint64_t item = IP_LOAD(dv.ents[i].item);
            ip_item_t it;
            if (item)
                rc = ip_ditem_read(hp, item, &it) < 0 ? -1 : retire_item(hp, &it);
        }
        if (rc == 0 && (ip_heap_free_later(hp, dv.index) < 0 || ip_heap_free_later(hp, dv.items) < 0))
            rc = -1;
        if (rc == 0
            && (ip_heap_set(hp, OFLD(&op, index), 0) < 0 || ip_heap_set(hp, OFLD(&op, items), 0) < 0
                || ip_heap_set(hp, OFLD(&op, mask), 0) < 0 || ip_heap_set(hp, OFLD(&op, cap), 0) < 0
                || ip_heap_set(hp, OFLD(&op, nitems), 0) < 0 || ip_heap_set(hp, OFLD(&op, used), 0) < 0
                || ip_heap_set(hp, OFLD(&op, version), dv.version + 1) < 0))
            rc = -1;
    }
    ip_op_end(&op, rc == 0);
    ip_op_done(&op);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Up to n keys (what=0), values (1) or (key, value) pairs (2) from entry
 * `pos` on, copied under one hold of the lock and decoded after it.
 * *next: the entry to go on from; *version: the dict's key-set version. */
static PyObject *read_entries(ip_handle_t *h, uint64_t pos, uint64_t n, int what, uint64_t *next,
                              uint64_t *version)
{
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0)
        return NULL;
    ip_heap_t *hp = op.hp;
    int per = what == 2 ? 2 : 1;
    ip_copy_t *cs = NULL;
    uint64_t got = 0, i = pos;
    dview_t dv;
    int ok = dview(&op, &dv) == 0;
    if (ok) {
        uint64_t room = pos < dv.nitems ? dv.nitems - pos : 0;
        if (room > n)
            room = n;
        if ((cs = PyMem_Calloc(room ? (size_t)room * per : 1, sizeof *cs)) == NULL) {
            PyErr_NoMemory();
            ok = 0;
        }
    }
    for (; ok && i < dv.nitems && got < n; i++) {
        uint64_t item = IP_LOAD(dv.ents[i].item);
        if (item == 0)
            continue;
        ip_item_t it;
        ip_copy_t *c = &cs[got * per];
        if (ip_ditem_read(hp, item, &it) < 0 || (what != 1 && copy_key(hp, &it, c) < 0)
            || (what != 0 && copy_value(hp, &it, c + (what == 2)) < 0)) {
            Py_CLEAR(c->obj); /* a key copied before its value failed */
            ok = 0;
            break;
        }
        got++;
    }
    if (ok && ip_copy_count(hp, cs, (Py_ssize_t)(got * per)) < 0)
        ok = 0;
    if (!ok && cs != NULL)
        ip_copy_discard(hp, cs, (Py_ssize_t)(got * per));
    ip_op_end(&op, 1);
    *next = i;
    *version = dv.version;
    PyObject *out = ok ? ip_copy_finish_all(hp, cs, (Py_ssize_t)got, per) : NULL;
    PyMem_Free(cs);
    ip_op_done(&op);
    return out;
}

PyDoc_STRVAR(chunk_doc, "_chunk(pos, n, what) -> (list, next_pos, version)\n--\n\n"
"Up to n keys (what=0), values (1) or (key, value) pairs (2) from entry\n"
"`pos` on, read under one hold of the lock and decoded after it.");

static PyObject *DictCore_chunk(ip_handle_t *h, PyObject *args)
{
    Py_ssize_t pos, n;
    int what;
    if (!PyArg_ParseTuple(args, "nni:_chunk", &pos, &n, &what))
        return NULL;
    if (pos < 0 || n < 0 || what < 0 || what > 2) {
        PyErr_SetString(PyExc_ValueError, "bad chunk arguments");
        return NULL;
    }
    if (n > CHUNK_MAX * 1024)
        n = CHUNK_MAX * 1024;
    uint64_t next, version;
    PyObject *out = read_entries(h, (uint64_t)pos, (uint64_t)n, what, &next, &version);
    if (out == NULL)
        return NULL;
    return Py_BuildValue("(NKK)", out, (unsigned long long)next, (unsigned long long)version);
}

PyDoc_STRVAR(snapshot_doc, "_snapshot(what) -> list\n--\n\n"
"Every key (what=0), value (1) or (key, value) pair (2), read under one hold\n"
"of the lock and decoded (unpickled) after it.");

static PyObject *DictCore_snapshot(ip_handle_t *h, PyObject *arg)
{
    long what = PyLong_AsLong(arg);
    if (what == -1 && PyErr_Occurred())
        return NULL;
    if (what < 0 || what > 2) {
        PyErr_SetString(PyExc_ValueError, "what must be 0, 1 or 2");
        return NULL;
    }
    uint64_t next, version;
    return read_entries(h, 0, UINT64_MAX, (int)what, &next, &version);
}

PyDoc_STRVAR(state_doc, "_state() -> (len, version)\n--\n\n"
"The size and the key-set version, read without the lock.");

static PyObject *DictCore_state(ip_handle_t *h, PyObject *Py_UNUSED(a))
{
    Py_ssize_t n = ip_handle_len(h);
    if (n < 0)
        return NULL;
    ip_obj_t *o = IP_HOFF(h->heap, h->off);
    return Py_BuildValue("(nK)", n, (unsigned long long)IP_LOAD(o->version));
}

/* ------------------------------------------------- module functions */

PyDoc_STRVAR(encode_key_doc, "encode_key(key) -> bytes\n--\n\n"
"The canonical encoding shared dicts compare keys in: equal keys (1, 1.0,\n"
"True) give equal bytes in every process, whatever its hash seed.\n"
"TypeError for an unhashable key.");

static PyObject *encode_key_fn(PyObject *Py_UNUSED(m), PyObject *key)
{
    kbuf_t b;
    kbuf_init(&b);
    if (encode_key(&b, key, 0) < 0) {
        kbuf_free(&b);
        return NULL;
    }
    PyObject *res = PyBytes_FromStringAndSize((const char *)b.buf, (Py_ssize_t)b.len);
    kbuf_free(&b);
    return res;
}

PyDoc_STRVAR(decode_key_doc, "decode_key(data) -> key\n--\n\n"
"The key encode_key() encoded, in its canonical type (an int for True or 1.0).");

static PyObject *decode_key_fn(PyObject *Py_UNUSED(m), PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *p = view.buf, *end = p + view.len;
    PyObject *res = decode_key(&p, end, 0);
    if (res != NULL && p != end) {
        Py_CLEAR(res);
        PyErr_SetString(PyExc_ValueError, "trailing bytes after an encoded key");
    }
    PyBuffer_Release(&view);
    return res;
}

PyMethodDef ip_key_functions[] = {
    {"encode_key", encode_key_fn, METH_O, encode_key_doc},
    {"decode_key", decode_key_fn, METH_O, decode_key_doc},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef DictCore_methods[] = {
    {"get", (PyCFunction)(void (*)(void))DictCore_get, METH_FASTCALL,
     "get(key, default=None)\n--\n\nThe value for key, else default."},
    {"pop", (PyCFunction)(void (*)(void))DictCore_pop, METH_FASTCALL,
     "pop(key[, default])\n--\n\nRemove key and return its value; default, or KeyError, if missing."},
    {"setdefault", (PyCFunction)(void (*)(void))DictCore_setdefault, METH_FASTCALL,
     "setdefault(key, default=None)\n--\n\nThe value for key, storing default first if key is "
     "missing; atomic."},
    {"popitem", (PyCFunction)DictCore_popitem, METH_NOARGS,
     "popitem()\n--\n\nRemove and return the last inserted (key, value) pair."},
    {"clear", (PyCFunction)DictCore_clear, METH_NOARGS, "clear()\n--\n\nRemove every item."},
    {"_update_pairs", (PyCFunction)DictCore_update_pairs, METH_O, update_doc},
    {"_keys_apply", (PyCFunction)DictCore_keys_apply, METH_VARARGS, keys_apply_doc},
    {"_chunk", (PyCFunction)DictCore_chunk, METH_VARARGS, chunk_doc},
    {"_snapshot", (PyCFunction)DictCore_snapshot, METH_O, snapshot_doc},
    {"_state", (PyCFunction)DictCore_state, METH_NOARGS, state_doc},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods DictCore_as_mapping = {
    .mp_length = (lenfunc)ip_handle_len,
    .mp_subscript = (binaryfunc)DictCore_subscript,
    .mp_ass_subscript = (objobjargproc)DictCore_ass_subscript,
};

static PySequenceMethods DictCore_as_sequence = {
    .sq_contains = (objobjproc)DictCore_contains,
};

PyTypeObject ip_DictCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "interproc._core.DictCore",
    .tp_basicsize = sizeof(ip_handle_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "DictCore(heap, offset, oid)\n--\n\n"
              "The C part of SharedDict and Namespace.",
    .tp_base = &ip_HandleCore_Type,
    .tp_new = DictCore_new,
    .tp_dealloc = (destructor)ip_handle_dealloc,
    .tp_traverse = (traverseproc)ip_handle_traverse,
    .tp_clear = (inquiry)ip_handle_clear,
    .tp_methods = DictCore_methods,
    .tp_as_mapping = &DictCore_as_mapping,
    .tp_as_sequence = &DictCore_as_sequence,
};
