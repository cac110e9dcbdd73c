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
 */
#include "interproc.h"

#include <math.h>
#include <string.h>

#define SLOT_EMPTY 0u
#define SLOT_DUMMY 0xffffffffu
#define MIN_SLOTS 8u
#define KEY_MAX_DEPTH 32
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

static int kput(kbuf_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        uint8_t *nb = PyMem_Malloc(cap);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(nb, b->buf, b->len);
        kbuf_free(b);
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

static int kput_tagged(kbuf_t *b, char tag, const void *p, size_t n)
{
    uint32_t n32 = (uint32_t)n;
    if (n > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "key too large");
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
        if ((tag != 't' && tag != 'F') && (uint64_t)(end - p) < n)
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

static int dkey_init(dkey_t *k, PyObject *key)
{
    kbuf_init(&k->enc);
    k->has_orig = 0;
    k->orig.obj = NULL;
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
    }
    return 0;
}

static void dkey_clear(dkey_t *k)
{
    if (k->has_orig)
        ip_payload_clear(&k->orig);
    kbuf_free(&k->enc);
}

/* ------------------------------------------------------------ table */

static inline ip_obj_t *OBJ(ip_handle_t *h)
{
    return IP_HOFF(h->heap, h->off);
}

static inline uint32_t *slots_of(ip_heap_t *hp, ip_obj_t *o)
{
    return IP_HOFF(hp, o->index);
}

static inline ip_dentry_t *entries_of(ip_heap_t *hp, ip_obj_t *o)
{
    return IP_HOFF(hp, o->items);
}

static inline uint8_t *ditem_key(ip_ditem_t *it)
{
    return (uint8_t *)(it + 1);
}

static inline uint8_t *ditem_val(ip_ditem_t *it)
{
    return (uint8_t *)(it + 1) + it->klen + it->olen;
}

/* The entry holding the key, or -1; *slot_out is its slot, or the slot a
 * new entry for it would take. */
static int64_t lookup(ip_heap_t *hp, ip_obj_t *o, const dkey_t *k, uint64_t *slot_out)
{
    if (o->index == 0) {
        *slot_out = 0;
        return -1;
    }
    uint32_t *slots = slots_of(hp, o);
    ip_dentry_t *ents = entries_of(hp, o);
    uint64_t mask = o->mask, perturb = k->hash, i = k->hash & mask;
    int64_t free_slot = -1;
    for (;;) {
        uint32_t s = slots[i];
        if (s == SLOT_EMPTY) {
            *slot_out = free_slot >= 0 ? (uint64_t)free_slot : i;
            return -1;
        }
        if (s == SLOT_DUMMY) {
            if (free_slot < 0)
                free_slot = (int64_t)i;
        } else {
            ip_dentry_t *e = &ents[s - 1];
            if (e->hash == k->hash && e->item) {
                ip_ditem_t *it = IP_HOFF(hp, e->item);
                if (it->klen == k->enc.len && memcmp(ditem_key(it), k->enc.buf, k->enc.len) == 0) {
                    *slot_out = i;
                    return (int64_t)s - 1;
                }
            }
        }
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
}

static uint64_t find_free_slot(uint32_t *slots, uint64_t mask, uint64_t hash)
{
    uint64_t perturb = hash, i = hash & mask;
    while (slots[i] != SLOT_EMPTY) {
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
    return i;
}

#define OFLD(h, f) ((h)->off + offsetof(ip_obj_t, f))

/* Rebuilds the table with room for at least `want` entries, compacting
 * out the holes.  New blocks, then one logged switch of five words. */
static int resize(ip_handle_t *h, uint64_t want)
{
    ip_heap_t *hp = h->heap;
    uint64_t slots = MIN_SLOTS;
    while (slots * 2 / 3 < want)
        slots *= 2;
    uint64_t cap = slots * 2 / 3;
    uint64_t nidx = ip_heap_alloc(hp, slots * sizeof(uint32_t));
    if (nidx == 0)
        return -1;
    uint64_t nents = ip_heap_alloc(hp, cap * sizeof(ip_dentry_t));
    if (nents == 0)
        return -1;
    ip_obj_t *o = OBJ(h);
    uint32_t *ns = IP_HOFF(hp, nidx);
    ip_dentry_t *ne = IP_HOFF(hp, nents);
    memset(ns, 0, slots * sizeof(uint32_t));
    uint64_t n = 0;
    if (o->items) {
        ip_dentry_t *oe = entries_of(hp, o);
        for (uint64_t i = 0; i < o->nitems; i++) {
            if (oe[i].item == 0)
                continue;
            ne[n] = oe[i];
            ns[find_free_slot(ns, slots - 1, oe[i].hash)] = (uint32_t)(n + 1);
            n++;
        }
    }
    uint64_t old_idx = o->index, old_ents = o->items;
    if (ip_heap_set(hp, OFLD(h, index), nidx) < 0 || ip_heap_set(hp, OFLD(h, mask), slots - 1) < 0
        || ip_heap_set(hp, OFLD(h, items), nents) < 0 || ip_heap_set(hp, OFLD(h, cap), cap) < 0
        || ip_heap_set(hp, OFLD(h, nitems), n) < 0)
        return -1;
    if (ip_heap_free_later(hp, old_idx) < 0 || ip_heap_free_later(hp, old_ents) < 0)
        return -1;
    return 0;
}

/* Writes a new item for key k (copying the key part of `like` when given)
 * with value v.  Returns its offset, or 0 with an exception set. */
static uint64_t new_item(ip_heap_t *hp, const dkey_t *k, uint64_t like, const ip_value_t *v)
{
    uint64_t klen, olen;
    if (like) {
        ip_ditem_t *l = IP_HOFF(hp, like);
        klen = l->klen;
        olen = l->olen;
    } else {
        klen = k->enc.len;
        olen = k->has_orig ? k->orig.len : 0;
    }
    uint64_t off = ip_heap_alloc(hp, sizeof(ip_ditem_t) + klen + olen + v->p.len);
    if (off == 0)
        return 0;
    if (ip_value_hold(hp, v) < 0)
        return 0;
    ip_ditem_t *it = IP_HOFF(hp, off);
    if (like) {
        ip_ditem_t *l = IP_HOFF(hp, like);
        memcpy(it, l, sizeof *it + klen + olen);
    } else {
        memset(it, 0, sizeof *it);
        it->hash = k->hash;
        it->klen = (uint32_t)klen;
        it->olen = (uint32_t)olen;
        it->pad[0] = (uint8_t)k->enc.has_pickle;
        memcpy(ditem_key(it), k->enc.buf, klen);
        if (olen) {
            it->otype = (uint8_t)k->orig.type;
            ip_payload_write(&k->orig, ditem_key(it) + klen);
        }
    }
    it->vlen = v->p.len;
    it->vtype = (uint8_t)v->p.type;
    ip_value_write(v, ditem_val(it));
    return off;
}

/* Drops the item's value reference and frees it after the commit. */
static int retire_item(ip_heap_t *hp, uint64_t item)
{
    ip_ditem_t *it = IP_HOFF(hp, item);
    if (ip_value_drop(hp, it->vtype, ditem_val(it)) < 0)
        return -1;
    return ip_heap_free_later(hp, item);
}

/* Sets k to v.  `only_new`: leave an existing value alone (setdefault).
 * Returns 1 if the key was new, 0 if not, -1 on error. */
static int store(ip_handle_t *h, const dkey_t *k, const ip_value_t *v, int only_new)
{
    ip_heap_t *hp = h->heap;
    uint64_t slot;
    int64_t ix = lookup(hp, OBJ(h), k, &slot);
    if (ix >= 0) {
        if (only_new)
            return 0;
        uint64_t old = entries_of(hp, OBJ(h))[ix].item;
        uint64_t item = new_item(hp, k, old, v);
        if (item == 0)
            return -1;
        uint64_t eoff = OBJ(h)->items + (uint64_t)ix * sizeof(ip_dentry_t) + offsetof(ip_dentry_t, item);
        if (ip_heap_set(hp, eoff, item) < 0 || retire_item(hp, old) < 0)
            return -1;
        return 0;
    }
    uint64_t item = new_item(hp, k, 0, v);
    if (item == 0)
        return -1;
    ip_obj_t *o = OBJ(h);
    if (o->index == 0 || o->nitems >= o->cap) {
        if (resize(h, o->used * 3 > 8 ? o->used * 3 : 8) < 0)
            return -1;
        o = OBJ(h);
        lookup(hp, o, k, &slot);
    }
    uint64_t n = o->nitems;
    ip_dentry_t *e = &entries_of(hp, o)[n];
    e->hash = k->hash; /* beyond nitems: not yet part of the table */
    e->item = item;
    uint64_t soff = o->index + slot * sizeof(uint32_t);
    /* slots are u32; log the aligned word that holds this one */
    uint64_t woff = soff & ~(uint64_t)7;
    uint64_t w = *(uint64_t *)IP_HOFF(hp, woff);
    memcpy((uint8_t *)&w + (soff - woff), &(uint32_t){(uint32_t)(n + 1)}, 4);
    if (ip_heap_set(hp, woff, w) < 0 || ip_heap_set(hp, OFLD(h, nitems), n + 1) < 0
        || ip_heap_set(hp, OFLD(h, used), o->used + 1) < 0
        || ip_heap_set(hp, OFLD(h, version), o->version + 1) < 0)
        return -1;
    return 1;
}

/* Removes entry ix found at slot. */
static int remove_entry(ip_handle_t *h, int64_t ix, uint64_t slot)
{
    ip_heap_t *hp = h->heap;
    ip_obj_t *o = OBJ(h);
    uint64_t item = entries_of(hp, o)[ix].item;
    uint64_t soff = o->index + slot * sizeof(uint32_t);
    uint64_t woff = soff & ~(uint64_t)7;
    uint64_t w = *(uint64_t *)IP_HOFF(hp, woff);
    memcpy((uint8_t *)&w + (soff - woff), &(uint32_t){SLOT_DUMMY}, 4);
    uint64_t eoff = o->items + (uint64_t)ix * sizeof(ip_dentry_t) + offsetof(ip_dentry_t, item);
    if (ip_heap_set(hp, woff, w) < 0 || ip_heap_set(hp, eoff, 0) < 0
        || ip_heap_set(hp, OFLD(h, used), o->used - 1) < 0
        || ip_heap_set(hp, OFLD(h, version), o->version + 1) < 0)
        return -1;
    return retire_item(hp, item);
}

/* ---------------------------------------------------------- reading */

/* Under the lock: what outlives it of an item's value / key. */
static PyObject *copy_value(ip_heap_t *hp, uint64_t item, int *kind)
{
    ip_ditem_t *it = IP_HOFF(hp, item);
    return ip_value_copy(hp, it->vtype, ditem_val(it), it->vlen, kind);
}

#define COPY_KEY_DEFERRED 3

static PyObject *copy_key(ip_heap_t *hp, uint64_t item, int *kind)
{
    ip_ditem_t *it = IP_HOFF(hp, item);
    if (it->olen)
        return ip_value_copy(hp, it->otype, ditem_key(it) + it->klen, it->olen, kind);
    if (it->pad[0]) { /* decoding unpickles: after the lock */
        *kind = COPY_KEY_DEFERRED;
        return PyBytes_FromStringAndSize((const char *)ditem_key(it), it->klen);
    }
    *kind = IP_COPY_DONE;
    const uint8_t *p = ditem_key(it);
    return decode_key(&p, p + it->klen, 0);
}

static PyObject *finish(ip_heap_t *hp, PyObject *copy, int kind)
{
    if (copy == NULL)
        return NULL;
    if (kind == COPY_KEY_DEFERRED) {
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(copy);
        PyObject *res = decode_key(&p, p + PyBytes_GET_SIZE(copy), 0);
        Py_DECREF(copy);
        return res;
    }
    return ip_value_finish(hp, copy, kind);
}

/* ---------------------------------------------------------- DictCore */

static int enter(ip_handle_t *h)
{
    if (ip_handle_check(h) < 0)
        return -1;
    ip_deadline_t d = {.infinite = 1};
    if (ip_heap_enter(h->heap, &d) != 0)
        return -1;
    if (ip_heap_obj(h->heap, h->off, 0, h->oid) == NULL) {
        ip_heap_leave(h->heap);
        PyErr_SetString(ip_SegmentError, "shared container is corrupt or was freed");
        return -1;
    }
    return 0;
}

static PyObject *DictCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return ip_handle_new(type, args, kwds, IP_OBJ_DICT);
}

static Py_ssize_t DictCore_len(ip_handle_t *h)
{
    if (ip_handle_check(h) < 0)
        return -1;
    return (Py_ssize_t)__atomic_load_n(&OBJ(h)->used, __ATOMIC_RELAXED);
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

/* Looks key up; on a hit returns the value's copy (kind set), on a miss
 * NULL with no exception, on error NULL with one.  With `remove`, a hit is
 * also deleted (pop). */
static PyObject *fetch(ip_handle_t *h, PyObject *key, int remove, int *kind)
{
    dkey_t k;
    if (dkey_init(&k, key) < 0)
        return NULL;
    if (enter(h) < 0) {
        dkey_clear(&k);
        return NULL;
    }
    ip_heap_t *hp = h->heap;
    uint64_t slot;
    int64_t ix = lookup(hp, OBJ(h), &k, &slot);
    PyObject *res = NULL;
    if (ix >= 0) {
        uint64_t item = entries_of(hp, OBJ(h))[ix].item;
        res = copy_value(hp, item, kind);
        if (res != NULL && remove && remove_entry(h, ix, slot) < 0) {
            Py_CLEAR(res);
            ip_heap_abort(hp);
            dkey_clear(&k);
            return NULL;
        }
    }
    ip_heap_leave(hp);
    dkey_clear(&k);
    return res;
}

static PyObject *DictCore_subscript(ip_handle_t *h, PyObject *key)
{
    int kind;
    PyObject *c = fetch(h, key, 0, &kind);
    if (c == NULL) {
        if (!PyErr_Occurred())
            raise_key_error(key);
        return NULL;
    }
    return finish(h->heap, c, kind);
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
    int rc = enter(h);
    if (rc == 0) {
        ip_heap_t *hp = h->heap;
        if (value != NULL) {
            rc = store(h, &k, &v, 0) < 0 ? -1 : 0;
        } else {
            uint64_t slot;
            int64_t ix = lookup(hp, OBJ(h), &k, &slot);
            if (ix < 0) {
                rc = -2;
            } else {
                rc = remove_entry(h, ix, slot);
            }
        }
        if (rc == -1)
            ip_heap_abort(hp);
        else
            ip_heap_leave(hp);
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
    if (enter(h) < 0) {
        dkey_clear(&k);
        return -1;
    }
    uint64_t slot;
    int64_t ix = lookup(h->heap, OBJ(h), &k, &slot);
    ip_heap_leave(h->heap);
    dkey_clear(&k);
    return ix >= 0;
}

static PyObject *DictCore_get(ip_handle_t *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd", nargs);
        return NULL;
    }
    int kind;
    PyObject *c = fetch(h, args[0], 0, &kind);
    if (c == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return finish(h->heap, c, kind);
}

static PyObject *DictCore_pop(ip_handle_t *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "pop expected 1 or 2 arguments, got %zd", nargs);
        return NULL;
    }
    int kind;
    PyObject *c = fetch(h, args[0], 1, &kind);
    if (c == NULL) {
        if (PyErr_Occurred())
            return NULL;
        if (nargs == 2)
            return Py_NewRef(args[1]);
        raise_key_error(args[0]);
        return NULL;
    }
    return finish(h->heap, c, kind);
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
    int kind = IP_COPY_DONE;
    if (enter(h) == 0) {
        ip_heap_t *hp = h->heap;
        int rc = store(h, &k, &v, 1);
        if (rc < 0) {
            ip_heap_abort(hp);
        } else if (rc == 1) {
            ip_heap_leave(hp);
            res = Py_NewRef(dflt);
        } else {
            uint64_t slot;
            int64_t ix = lookup(hp, OBJ(h), &k, &slot);
            res = copy_value(hp, entries_of(hp, OBJ(h))[ix].item, &kind);
            ip_heap_leave(hp);
            res = finish(hp, res, kind);
        }
    }
    ip_value_clear(&v);
    dkey_clear(&k);
    return res;
}

static PyObject *DictCore_popitem(ip_handle_t *h, PyObject *Py_UNUSED(a))
{
    if (enter(h) < 0)
        return NULL;
    ip_heap_t *hp = h->heap;
    ip_obj_t *o = OBJ(h);
    if (o->used == 0) {
        ip_heap_leave(hp);
        PyErr_SetString(PyExc_KeyError, "popitem(): dictionary is empty");
        return NULL;
    }
    ip_dentry_t *ents = entries_of(hp, o);
    uint64_t n = o->nitems;
    while (n > 0 && ents[n - 1].item == 0)
        n--;
    int64_t ix = (int64_t)n - 1;
    uint64_t item = ents[ix].item;
    int kk, kv;
    PyObject *key = copy_key(hp, item, &kk);
    PyObject *val = key ? copy_value(hp, item, &kv) : NULL;
    /* find the entry's slot to mark it deleted */
    uint32_t *slots = slots_of(hp, o);
    uint64_t mask = o->mask, hash = ents[ix].hash, perturb = hash, i = hash & mask;
    while (slots[i] != (uint32_t)(ix + 1)) {
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
    if (val == NULL || remove_entry(h, ix, i) < 0
        || ip_heap_set(hp, OFLD(h, nitems), (uint64_t)ix) < 0) {
        Py_XDECREF(key);
        Py_XDECREF(val);
        ip_heap_abort(hp);
        return NULL;
    }
    ip_heap_leave(hp);
    key = finish(hp, key, kk);
    val = finish(hp, val, kv);
    if (key == NULL || val == NULL) {
        Py_XDECREF(key);
        Py_XDECREF(val);
        return NULL;
    }
    PyObject *res = PyTuple_Pack(2, key, val);
    Py_DECREF(key);
    Py_DECREF(val);
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
    if (enter(h) < 0)
        goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        ip_heap_checkpoint(h->heap);
        if (store(h, &keys[i], &vals[i], 0) < 0) {
            ip_heap_abort(h->heap);
            goto out;
        }
    }
    ip_heap_leave(h->heap);
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

static PyObject *DictCore_clear(ip_handle_t *h, PyObject *Py_UNUSED(a))
{
    if (enter(h) < 0)
        return NULL;
    ip_heap_t *hp = h->heap;
    ip_obj_t *o = OBJ(h);
    int rc = 0;
    if (o->items) {
        ip_dentry_t *ents = entries_of(hp, o);
        for (uint64_t i = 0; i < o->nitems && rc == 0; i++)
            if (ents[i].item)
                rc = retire_item(hp, ents[i].item);
        o = OBJ(h);
        if (rc == 0)
            rc = ip_heap_free_later(hp, o->index) | ip_heap_free_later(hp, o->items);
        if (rc == 0
            && (ip_heap_set(hp, OFLD(h, index), 0) < 0 || ip_heap_set(hp, OFLD(h, items), 0) < 0
                || ip_heap_set(hp, OFLD(h, mask), 0) < 0 || ip_heap_set(hp, OFLD(h, cap), 0) < 0
                || ip_heap_set(hp, OFLD(h, nitems), 0) < 0 || ip_heap_set(hp, OFLD(h, used), 0) < 0
                || ip_heap_set(hp, OFLD(h, version), o->version + 1) < 0))
            rc = -1;
    }
    if (rc < 0) {
        ip_heap_abort(hp);
        return NULL;
    }
    ip_heap_leave(hp);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(chunk_doc, "_chunk(pos, n, what) -> (list, next_pos, version)\n--\n\n"
"Up to n keys (what=0), values (1) or (key, value) pairs (2) from entry\n"
"`pos` on, read under one hold of the lock.");

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
    PyObject *out = PyList_New(0);
    PyObject *kinds = PyList_New(0);
    if (out == NULL || kinds == NULL)
        goto fail_nolock;
    if (enter(h) < 0)
        goto fail_nolock;
    ip_heap_t *hp = h->heap;
    ip_obj_t *o = OBJ(h);
    uint64_t version = o->version;
    uint64_t i = (uint64_t)pos;
    Py_ssize_t got = 0;
    for (; i < o->nitems && got < n; i++) {
        uint64_t item = entries_of(hp, o)[i].item;
        if (item == 0)
            continue;
        int kk = 0, kv = 0;
        PyObject *key = NULL, *val = NULL;
        if (what != 1 && (key = copy_key(hp, item, &kk)) == NULL)
            goto fail;
        if (what != 0 && (val = copy_value(hp, item, &kv)) == NULL) {
            Py_XDECREF(key);
            goto fail;
        }
        PyObject *cell = what == 0 ? key : what == 1 ? val : PyTuple_Pack(2, key, val);
        if (what == 2) {
            Py_DECREF(key);
            Py_DECREF(val);
        }
        PyObject *k = PyLong_FromLong(kk << 4 | kv);
        if (cell == NULL || k == NULL || PyList_Append(out, cell) < 0 || PyList_Append(kinds, k) < 0) {
            Py_XDECREF(cell);
            Py_XDECREF(k);
            goto fail;
        }
        Py_DECREF(cell);
        Py_DECREF(k);
        got++;
    }
    ip_heap_leave(hp);
    /* finish copies (unpickling, stored containers) outside the lock */
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(out); j++) {
        long kk = PyLong_AsLong(PyList_GET_ITEM(kinds, j));
        int ck = (int)(kk >> 4), cv = (int)(kk & 15);
        if (ck == IP_COPY_DONE && cv == IP_COPY_DONE)
            continue;
        PyObject *cell = PyList_GET_ITEM(out, j);
        PyObject *fin;
        if (what == 2) {
            PyObject *key = finish(hp, Py_NewRef(PyTuple_GET_ITEM(cell, 0)), ck);
            PyObject *val = key ? finish(hp, Py_NewRef(PyTuple_GET_ITEM(cell, 1)), cv) : NULL;
            fin = val ? PyTuple_Pack(2, key, val) : NULL;
            Py_XDECREF(key);
            Py_XDECREF(val);
        } else {
            fin = finish(hp, Py_NewRef(cell), what == 0 ? ck : cv);
        }
        if (fin == NULL)
            goto fail_nolock;
        PyList_SetItem(out, j, fin);
    }
    Py_DECREF(kinds);
    PyObject *res = Py_BuildValue("(NnK)", out, (Py_ssize_t)i, (unsigned long long)version);
    return res;
fail:
    ip_heap_leave(h->heap);
fail_nolock:
    Py_XDECREF(out);
    Py_XDECREF(kinds);
    return NULL;
}

PyDoc_STRVAR(state_doc, "_state() -> (len, version)\n--\n\n"
"The size and the key-set version, read without the lock.");

static PyObject *DictCore_state(ip_handle_t *h, PyObject *Py_UNUSED(a))
{
    if (ip_handle_check(h) < 0)
        return NULL;
    ip_obj_t *o = OBJ(h);
    return Py_BuildValue("(KK)", (unsigned long long)__atomic_load_n(&o->used, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&o->version, __ATOMIC_RELAXED));
}

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
    {"_chunk", (PyCFunction)DictCore_chunk, METH_VARARGS, chunk_doc},
    {"_state", (PyCFunction)DictCore_state, METH_NOARGS, state_doc},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods DictCore_as_mapping = {
    .mp_length = (lenfunc)DictCore_len,
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
    .tp_doc = "DictCore(heap, offset, oid, counted=False)\n--\n\n"
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
