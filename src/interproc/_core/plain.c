/* The plain codec: a compact encoding for the small messages queues carry
 * most, written straight into the ring.
 *
 * It covers exact None, bool, int (64-bit), float, str and bytes, and an
 * exact tuple, list or dict of those, one level deep, up to PLAIN_MAX_ITEMS
 * items and PLAIN_MAX_BYTES bytes.  Within those bounds no two parts of a
 * message can share a mutable object, so unlike pickle there is no identity
 * to preserve, and the decoded value equals the original.  Anything else is
 * pickled.  Encoding is several times cheaper than pickle.dumps, decoding
 * than pickle.loads, and the encoder writes straight into the ring.
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

static inline uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
    return p + 4;
}

static uint8_t *write_atom(PyObject *o, uint8_t *p)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None) {
        *p++ = 'N';
    } else if (t == &PyBool_Type) {
        *p++ = o == Py_True ? 'T' : 'F';
    } else if (t == &PyLong_Type) {
        int64_t v = PyLong_AsLongLong(o); /* range checked by atom_size */
        *p++ = 'i';
        memcpy(p, &v, 8);
        p += 8;
    } else if (t == &PyFloat_Type) {
        double v = PyFloat_AS_DOUBLE(o);
        *p++ = 'f';
        memcpy(p, &v, 8);
        p += 8;
    } else if (t == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(o);
        int kind = PyUnicode_KIND(o);
        *p++ = 's';
        *p++ = (uint8_t)kind;
        p = put_u32(p, (uint32_t)n);
        memcpy(p, PyUnicode_DATA(o), (size_t)(n * kind));
        p += n * kind;
    } else { /* bytes */
        Py_ssize_t n = PyBytes_GET_SIZE(o);
        *p++ = 'b';
        p = put_u32(p, (uint32_t)n);
        memcpy(p, PyBytes_AS_STRING(o), (size_t)n);
        p += n;
    }
    return p;
}

void ip_plain_write(PyObject *o, uint8_t *p)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyTuple_Type || t == &PyList_Type) {
        Py_ssize_t n = Py_SIZE(o);
        PyObject **items = t == &PyTuple_Type ? ((PyTupleObject *)o)->ob_item
                                              : ((PyListObject *)o)->ob_item;
        *p++ = t == &PyTuple_Type ? 't' : 'l';
        p = put_u32(p, (uint32_t)n);
        for (Py_ssize_t i = 0; i < n; i++)
            p = write_atom(items[i], p);
    } else if (t == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        *p++ = 'd';
        p = put_u32(p, (uint32_t)PyDict_GET_SIZE(o));
        while (PyDict_Next(o, &pos, &k, &v)) {
            p = write_atom(k, p);
            p = write_atom(v, p);
        }
    } else {
        write_atom(o, p);
    }
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
