/* The plain codec: a compact encoding for the small messages queues carry
 * most, written straight into the ring.
 *
 * It covers exact None, bool, int (64-bit), float, str and bytes, and an
 * exact tuple, list or dict of those, one level deep, up to PLAIN_MAX_ITEMS
 * items and PLAIN_MAX_BYTES bytes.  Within those bounds no two parts of a
 * message can share a mutable object, so unlike pickle there is no identity
 * to preserve, and the decoded value equals the original.  Anything else is
 * pickled.  Encoding is several times cheaper than pickle.dumps, decoding
 * than pickle.loads.  A value is encoded when it is put, into a buffer the
 * payload owns (ip_payload_init): a list or dict changed later, by another
 * thread or by code that runs while other items are pickled, cannot change
 * what was sized.
 *
 * Layout: one tag byte per value, then
 *   'N' 'T' 'F'              nothing
 *   'i'                      int64, little-endian
 *   'f'                      IEEE double
 *   's'  u8 kind, u32 n      n code units of the str's own kind (1, 2 or 4 bytes)
 *   'b'  u32 n               n bytes
 *   't' 'l'  u32 n           n values
 *   'd'  u32 n               n key, value pairs
 */
#include "interproc.h"

#include <string.h>

#define PLAIN_MAX_ITEMS 256
#define PLAIN_MAX_BYTES 4096

static Py_ssize_t atom_size(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None || t == &PyBool_Type)
        return 1;
    if (t == &PyLong_Type) {
        int overflow;
        PyLong_AsLongLongAndOverflow(o, &overflow);
        return overflow ? -1 : 9;
    }
    if (t == &PyFloat_Type)
        return 9;
    if (t == &PyUnicode_Type) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(o) < 0) {
            PyErr_Clear();
            return -1;
        }
#endif
        return 6 + PyUnicode_GET_LENGTH(o) * PyUnicode_KIND(o);
    }
    if (t == &PyBytes_Type)
        return 5 + PyBytes_GET_SIZE(o);
    return -1;
}

Py_ssize_t ip_plain_size(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    Py_ssize_t total;
    if (t == &PyTuple_Type || t == &PyList_Type) {
        Py_ssize_t n = Py_SIZE(o);
        if (n > PLAIN_MAX_ITEMS)
            return -1;
        PyObject **items = t == &PyTuple_Type ? ((PyTupleObject *)o)->ob_item
                                              : ((PyListObject *)o)->ob_item;
        total = 5;
        for (Py_ssize_t i = 0; i < n && total <= PLAIN_MAX_BYTES; i++) {
            Py_ssize_t s = atom_size(items[i]);
            if (s < 0)
                return -1;
            total += s;
        }
    } else if (t == &PyDict_Type) {
        if (PyDict_GET_SIZE(o) > PLAIN_MAX_ITEMS)
            return -1;
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        total = 5;
        while (total <= PLAIN_MAX_BYTES && PyDict_Next(o, &pos, &k, &v)) {
            Py_ssize_t ks = atom_size(k), vs = atom_size(v);
            if (ks < 0 || vs < 0)
                return -1;
            total += ks + vs;
        }
    } else {
        total = atom_size(o);
    }
    return total > PLAIN_MAX_BYTES ? -1 : total;
}

/* Encoding goes into a buffer of the size ip_plain_size() gave, and checks
 * every write against its end anyway: between sizing and encoding no code
 * runs that could change a list or dict, but if a change ever slipped in
 * it must fail the put, not write past the buffer. */
typedef struct {
    uint8_t *p;
    uint8_t *end;
} writer_t;

static int room(writer_t *w, size_t n)
{
    return (size_t)(w->end - w->p) >= n;
}

static int put_bytes(writer_t *w, const void *src, size_t n)
{
    if (!room(w, n))
        return -1;
    memcpy(w->p, src, n);
    w->p += n;
    return 0;
}

static int put_tag(writer_t *w, uint8_t tag)
{
    return put_bytes(w, &tag, 1);
}

static int put_u32(writer_t *w, uint32_t v)
{
    return put_bytes(w, &v, 4);
}

static int write_atom(PyObject *o, writer_t *w)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None)
        return put_tag(w, 'N');
    if (t == &PyBool_Type)
        return put_tag(w, o == Py_True ? 'T' : 'F');
    if (t == &PyLong_Type) {
        int overflow;
        int64_t v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow)
            return -1;
        return put_tag(w, 'i') < 0 ? -1 : put_bytes(w, &v, 8);
    }
    if (t == &PyFloat_Type) {
        double v = PyFloat_AS_DOUBLE(o);
        return put_tag(w, 'f') < 0 ? -1 : put_bytes(w, &v, 8);
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(o);
        int kind = PyUnicode_KIND(o);
        if (n > PLAIN_MAX_BYTES || put_tag(w, 's') < 0 || put_tag(w, (uint8_t)kind) < 0
            || put_u32(w, (uint32_t)n) < 0)
            return -1;
        return put_bytes(w, PyUnicode_DATA(o), (size_t)n * (size_t)kind);
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(o);
        if (n > PLAIN_MAX_BYTES || put_tag(w, 'b') < 0 || put_u32(w, (uint32_t)n) < 0)
            return -1;
        return put_bytes(w, PyBytes_AS_STRING(o), (size_t)n);
    }
    return -1;
}

Py_ssize_t ip_plain_encode_atom(PyObject *o, uint8_t *dst, size_t cap)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_CheckExact(o) && PyUnicode_READY(o) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    writer_t w = {dst, dst + cap};
    return write_atom(o, &w) < 0 ? 0 : w.p - dst;
}

Py_ssize_t ip_plain_encode(PyObject *o, uint8_t *dst, size_t cap)
{
    writer_t w = {dst, dst + cap};
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyTuple_Type || t == &PyList_Type) {
        Py_ssize_t n = Py_SIZE(o);
        if (n > PLAIN_MAX_ITEMS || put_tag(&w, t == &PyTuple_Type ? 't' : 'l') < 0
            || put_u32(&w, (uint32_t)n) < 0)
            goto changed;
        PyObject **items = t == &PyTuple_Type ? ((PyTupleObject *)o)->ob_item
                                              : ((PyListObject *)o)->ob_item;
        for (Py_ssize_t i = 0; i < n; i++)
            if (write_atom(items[i], &w) < 0)
                goto changed;
    } else if (t == &PyDict_Type) {
        Py_ssize_t pos = 0, n = PyDict_GET_SIZE(o), seen = 0;
        PyObject *k, *v;
        if (n > PLAIN_MAX_ITEMS || put_tag(&w, 'd') < 0 || put_u32(&w, (uint32_t)n) < 0)
            goto changed;
        while (PyDict_Next(o, &pos, &k, &v)) {
            if (++seen > n || write_atom(k, &w) < 0 || write_atom(v, &w) < 0)
                goto changed;
        }
        if (seen != n)
            goto changed;
    } else if (write_atom(o, &w) < 0) {
        goto changed;
    }
    if (w.p != w.end)
        goto changed;
    return w.p - dst;
changed:
    PyErr_Format(PyExc_RuntimeError, "%.100s changed size while it was being serialized",
                 t->tp_name);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Decoding checks every length against the end: the bytes come from
 * shared memory, and a corrupt message must raise, not crash. */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} reader_t;

static int need(reader_t *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        PyErr_SetString(ip_SegmentError, "queue data is corrupt (truncated plain message)");
        return -1;
    }
    return 0;
}

static int get_u32(reader_t *r, uint32_t *v)
{
    if (need(r, 4) < 0)
        return -1;
    memcpy(v, r->p, 4);
    r->p += 4;
    return 0;
}

static PyObject *read_atom(reader_t *r)
{
    if (need(r, 1) < 0)
        return NULL;
    uint8_t tag = *r->p++;
    switch (tag) {
    case 'N':
        Py_RETURN_NONE;
    case 'T':
        Py_RETURN_TRUE;
    case 'F':
        Py_RETURN_FALSE;
    case 'i': {
        int64_t v;
        if (need(r, 8) < 0)
            return NULL;
        memcpy(&v, r->p, 8);
        r->p += 8;
        return PyLong_FromLongLong(v);
    }
    case 'f': {
        double v;
        if (need(r, 8) < 0)
            return NULL;
        memcpy(&v, r->p, 8);
        r->p += 8;
        return PyFloat_FromDouble(v);
    }
    case 's': {
        uint32_t n;
        if (need(r, 1) < 0)
            return NULL;
        int kind = *r->p++;
        if (get_u32(r, &n) < 0)
            return NULL;
        if (kind != 1 && kind != 2 && kind != 4) {
            PyErr_SetString(ip_SegmentError, "queue data is corrupt (bad string kind)");
            return NULL;
        }
        if (need(r, (size_t)n * (size_t)kind) < 0)
            return NULL;
        if (kind == 4) {
            /* No code point past U+10FFFF: CPython refuses to make one. */
            for (uint32_t i = 0; i < n; i++) {
                uint32_t c;
                memcpy(&c, r->p + 4 * (size_t)i, 4);
                if (c > 0x10FFFF) {
                    PyErr_SetString(ip_SegmentError, "queue data is corrupt (bad code point)");
                    return NULL;
                }
            }
        }
        PyObject *s = PyUnicode_FromKindAndData(kind, r->p, n);
        r->p += (size_t)n * (size_t)kind;
        return s;
    }
    case 'b': {
        uint32_t n;
        if (get_u32(r, &n) < 0 || need(r, n) < 0)
            return NULL;
        PyObject *b = PyBytes_FromStringAndSize((const char *)r->p, n);
        r->p += n;
        return b;
    }
    default:
        PyErr_SetString(ip_SegmentError, "queue data is corrupt (bad plain tag)");
        return NULL;
    }
}

PyObject *ip_plain_read(const uint8_t *data, uint64_t len)
{
    reader_t r = {data, data + len};
    if (need(&r, 1) < 0)
        return NULL;
    uint8_t tag = *r.p;
    if (tag != 't' && tag != 'l' && tag != 'd')
        return read_atom(&r);
    r.p++;
    uint32_t n;
    if (get_u32(&r, &n) < 0)
        return NULL;
    if (n > PLAIN_MAX_ITEMS) {
        PyErr_SetString(ip_SegmentError, "queue data is corrupt (bad plain count)");
        return NULL;
    }
    PyObject *c = tag == 't' ? PyTuple_New(n) : tag == 'l' ? PyList_New(n) : PyDict_New();
    if (c == NULL)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *v = read_atom(&r);
        if (v == NULL)
            goto fail;
        if (tag == 't') {
            PyTuple_SET_ITEM(c, i, v);
        } else if (tag == 'l') {
            PyList_SET_ITEM(c, i, v);
        } else {
            PyObject *val = read_atom(&r);
            int rc = val ? PyDict_SetItem(c, v, val) : -1;
            Py_DECREF(v);
            Py_XDECREF(val);
            if (rc < 0)
                goto fail;
        }
    }
    return c;
fail:
    Py_DECREF(c);
    return NULL;
}
