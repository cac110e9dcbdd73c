/* interproc._core: module state, serialization helpers and initialization. */
#include "interproc.h"

#include <string.h>

ip_state_t ip_state;

extern PyMethodDef ip_segment_methods[];
extern PyMethodDef ip_buffer_methods[];

int ip_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  const char *const *names, int nnames, int required, PyObject **vals)
{
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, nnames,
                     nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        vals[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int j = 0;
        while (j < nnames && PyUnicode_CompareWithASCIIString(key, names[j]) != 0)
            j++;
        if (j == nnames) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname, key);
            return -1;
        }
        if (j < nargs) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[j]);
            return -1;
        }
        vals[j] = args[nargs + k];
    }
    for (int i = 0; i < required; i++) {
        if (vals[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}

int ip_arg_fd(PyObject *args, PyObject *kwds, Py_ssize_t pos, const char *name)
{
    PyObject *o = NULL;
    if (PyTuple_Check(args) && pos < PyTuple_GET_SIZE(args))
        o = PyTuple_GET_ITEM(args, pos);
    else if (kwds && PyDict_Check(kwds))
        o = PyDict_GetItemString(kwds, name); /* borrowed; str keys: no code runs */
    if (o == NULL || !PyLong_Check(o))
        return -1;
    int overflow;
    long fd = PyLong_AsLongAndOverflow(o, &overflow);
    if (fd == -1 && PyErr_Occurred())
        PyErr_Clear();
    return overflow || fd < 0 || fd > INT32_MAX ? -1 : (int)fd;
}

/* ------------------------------------------------------------------ */
/* Serialization                                                       */

static inline int is_atom(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    return o == Py_None || t == &PyLong_Type || t == &PyUnicode_Type || t == &PyFloat_Type
           || t == &PyBytes_Type || t == &PyBool_Type;
}

/* True when plain pickle.dumps gives the same bytes as ForkingPickler: the
 * pickler handles exact builtin types itself and never consults the
 * reducers ForkingPickler adds.  One level deep keeps the check cheap. */
static int is_plain(PyObject *o)
{
    if (is_atom(o))
        return 1;
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyTuple_Type || t == &PyList_Type) {
        Py_ssize_t n = Py_SIZE(o);
        if (n > 32)
            return 0;
        PyObject **items = t == &PyTuple_Type ? ((PyTupleObject *)o)->ob_item
                                              : ((PyListObject *)o)->ob_item;
        for (Py_ssize_t i = 0; i < n; i++)
            if (!is_atom(items[i]))
                return 0;
        return 1;
    }
    if (t == &PyDict_Type && PyDict_GET_SIZE(o) <= 32) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &pos, &k, &v))
            if (!is_atom(k) || !is_atom(v))
                return 0;
        return 1;
    }
    return 0;
}

/* Encodes a plain value now, into the payload's own storage. */
static int plain_snapshot(ip_payload_t *p, PyObject *obj, Py_ssize_t size)
{
    uint8_t *dst = p->inline_buf;
    if (size > IP_PAYLOAD_INLINE) {
        /* Not tracked by the garbage collector: allocating it runs no code. */
        p->obj = PyBytes_FromStringAndSize(NULL, size);
        if (p->obj == NULL)
            return -1;
        dst = (uint8_t *)PyBytes_AS_STRING(p->obj);
        p->data = (const char *)dst;
    }
    if (ip_plain_encode(obj, dst, (size_t)size) < 0) {
        Py_CLEAR(p->obj);
        p->data = NULL;
        return -1;
    }
    p->type = IP_REC_PLAIN;
    p->len = (uint64_t)size;
    return 0;
}

static inline uint64_t oob_align(uint64_t off)
{
    return (off + IP_OOB_ALIGN - 1) & ~(uint64_t)(IP_OOB_ALIGN - 1);
}

/* Takes what message_dumps returned for a message with out-of-band
 * buffers: (pickle, tuple of memoryviews).  The views are the buffers as
 * pickle's raw() gave them: one-dimensional, contiguous, unsigned bytes;
 * they hold the exporters' buffers, which cannot be resized or freed while
 * exported, so the lengths stay what they are now. */
static int oob_snapshot(ip_payload_t *p, PyObject *res)
{
    PyObject *pickled = PyTuple_GET_ITEM(res, 0), *bufs = PyTuple_GET_ITEM(res, 1);
    if (!PyBytes_CheckExact(pickled) || !PyTuple_CheckExact(bufs) || PyTuple_GET_SIZE(bufs) == 0) {
        PyErr_SetString(PyExc_TypeError, "serializer returned a malformed (pickle, buffers) pair");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(bufs);
    uint64_t len = 16 + 8 * (uint64_t)n + (uint64_t)PyBytes_GET_SIZE(pickled);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *mv = PyTuple_GET_ITEM(bufs, i);
        if (!PyMemoryView_Check(mv) || !PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(mv), 'C')) {
            PyErr_SetString(PyExc_TypeError, "an out-of-band buffer is not a contiguous memoryview");
            return -1;
        }
        len = oob_align(len) + (uint64_t)PyMemoryView_GET_BUFFER(mv)->len;
    }
    p->obj = Py_NewRef(pickled);
    p->data = PyBytes_AS_STRING(pickled);
    p->pickle_len = (uint64_t)PyBytes_GET_SIZE(pickled);
    p->bufs = Py_NewRef(bufs);
    p->len = len;
    p->type = IP_REC_OOB;
    return 0;
}

static int payload_init(ip_payload_t *p, PyObject *obj, int message)
{
    p->obj = NULL;
    p->data = NULL;
    p->bufs = NULL;
    p->len = 0;
    p->type = IP_REC_PICKLE;
    if (PyBytes_CheckExact(obj)) {
        p->type = IP_REC_BYTES;
        p->obj = Py_NewRef(obj);
        p->data = PyBytes_AS_STRING(obj);
        p->len = (uint64_t)PyBytes_GET_SIZE(obj);
        return 0;
    }
    /* Most values are small atoms: encoded in one pass, not sized first. */
    Py_ssize_t plain = ip_plain_encode_atom(obj, p->inline_buf, IP_PAYLOAD_INLINE);
    if (plain > 0) {
        p->type = IP_REC_PLAIN;
        p->len = (uint64_t)plain;
        return 0;
    }
    plain = ip_plain_size(obj);
    if (plain > 0)
        return plain_snapshot(p, obj, plain);
    if (ip_state.dumps == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "interproc._core is not configured");
        return -1;
    }
    PyObject *res;
    if (is_plain(obj)) {
        PyObject *args[2] = {obj, ip_state.protocol};
        res = PyObject_Vectorcall(ip_state.dumps, args, 2, NULL);
    } else {
        /* Messages in band too until serialization configured them. */
        PyObject *fn = message && ip_state.message_dumps ? ip_state.message_dumps
                                                          : ip_state.slow_dumps;
        res = PyObject_CallOneArg(fn, obj);
    }
    if (res != NULL && message && PyTuple_CheckExact(res) && PyTuple_GET_SIZE(res) == 2) {
        int rc = oob_snapshot(p, res);
        Py_DECREF(res);
        return rc;
    }
    if (res != NULL && !PyBytes_CheckExact(res)) {
        PyErr_Format(PyExc_TypeError, "serializer returned %.100s, not bytes", Py_TYPE(res)->tp_name);
        Py_CLEAR(res);
    }
    if (res == NULL)
        return -1;
    p->obj = res;
    p->data = PyBytes_AS_STRING(res);
    p->len = (uint64_t)PyBytes_GET_SIZE(res);
    return 0;
}

int ip_payload_init(ip_payload_t *p, PyObject *obj)
{
    return payload_init(p, obj, 0);
}

int ip_payload_init_message(ip_payload_t *p, PyObject *obj)
{
    return payload_init(p, obj, 1);
}

/* The record's header and pickle, then each buffer in its place; the
 * padding between them is zeroed, so no stale ring bytes travel on. */
static void oob_write(const ip_payload_t *p, uint8_t *dst)
{
    Py_ssize_t n = PyTuple_GET_SIZE(p->bufs);
    uint64_t head[2] = {p->pickle_len, (uint64_t)n};
    memcpy(dst, head, sizeof head);
    uint64_t off = sizeof head;
    for (Py_ssize_t i = 0; i < n; i++, off += 8) {
        const Py_buffer *b = PyMemoryView_GET_BUFFER(PyTuple_GET_ITEM(p->bufs, i));
        uint64_t blen = (uint64_t)b->len;
        memcpy(dst + off, &blen, 8);
    }
    memcpy(dst + off, p->data, (size_t)p->pickle_len);
    off += p->pickle_len;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_buffer *b = PyMemoryView_GET_BUFFER(PyTuple_GET_ITEM(p->bufs, i));
        uint64_t start = oob_align(off);
        memset(dst + off, 0, (size_t)(start - off));
        ip_bulk_copy(dst + start, b->buf, (uint64_t)b->len);
        off = start + (uint64_t)b->len;
    }
}

void ip_payload_write(const ip_payload_t *p, uint8_t *dst)
{
    if (p->type == IP_REC_OOB && p->bufs)
        oob_write(p, dst);
    else
        ip_bulk_copy(dst, p->data ? p->data : (const char *)p->inline_buf, p->len);
}

void ip_payload_clear(ip_payload_t *p)
{
    Py_CLEAR(p->obj);
    Py_CLEAR(p->bufs);
}

static PyObject *oob_corrupt(void)
{
    PyErr_SetString(ip_SegmentError, "queue data is corrupt (an out-of-band record's layout)");
    return NULL;
}

/* Rebuilds a message from its IP_REC_OOB record: `payload` is a copy of
 * it of this process's own (ip_recv_buffer_new), or the record itself,
 * read in place (ip_view_decode), which another process could change
 * meanwhile.  So the layout is read once, into locals, and checked there,
 * and the pickle is copied out.  Each buffer is a slice of the payload:
 * the receiver's object lies over it with no further copy. */
static PyObject *oob_loads(PyObject *payload)
{
    Py_buffer view;
    if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *base = view.buf;
    uint64_t len = (uint64_t)view.len, head[2];
    PyObject *mv = NULL, *pickled = NULL, *bufs = NULL, *kw = NULL, *args = NULL, *res = NULL;
    if (len < sizeof head) {
        oob_corrupt();
        goto done;
    }
    memcpy(head, base, sizeof head);
    uint64_t plen = head[0], n = head[1], off = sizeof head;
    if (n == 0 || n > (len - off) / 8 || plen > len - off - 8 * n) {
        oob_corrupt();
        goto done;
    }
    uint64_t descs = off;
    off += 8 * n;
    mv = PyMemoryView_FromObject(payload);
    if (mv == NULL)
        goto done;
    /* Copied: read in place, the pickle could change under the unpickler. */
    pickled = PyBytes_FromStringAndSize((const char *)base + off, (Py_ssize_t)plen);
    bufs = PyList_New((Py_ssize_t)n);
    if (pickled == NULL || bufs == NULL)
        goto done;
    off += plen;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t blen;
        memcpy(&blen, base + descs + 8 * i, 8);
        off = oob_align(off);
        if (off > len || blen > len - off) {
            oob_corrupt();
            goto done;
        }
        /* Writable: the pickle itself makes it read-only where the
         * sender's was (READONLY_BUFFER). */
        PyObject *b = PySequence_GetSlice(mv, (Py_ssize_t)off, (Py_ssize_t)(off + blen));
        if (b == NULL)
            goto done;
        PyList_SET_ITEM(bufs, (Py_ssize_t)i, b);
        off += blen;
    }
    if (off != len) {
        oob_corrupt();
        goto done;
    }
    args = PyTuple_Pack(1, pickled);
    kw = args ? Py_BuildValue("{s:O}", "buffers", bufs) : NULL;
    if (kw != NULL)
        res = PyObject_Call(ip_state.loads, args, kw);
done:
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_XDECREF(bufs);
    Py_XDECREF(pickled);
    Py_XDECREF(mv);
    PyBuffer_Release(&view);
    return res;
}

PyObject *ip_deserialize(uint32_t type, PyObject *payload)
{
    if (type == IP_REC_BYTES)
        return Py_NewRef(payload);
    if (type == IP_REC_PLAIN)
        return ip_plain_read((const uint8_t *)PyBytes_AS_STRING(payload),
                             (uint64_t)PyBytes_GET_SIZE(payload));
    if (type == IP_REC_OOB)
        return oob_loads(payload);
    /* PICKLE, and RAW: what send_bytes() sent is unpickled by recv(), as in
     * multiprocessing. */
    return PyObject_CallOneArg(ip_state.loads, payload);
}

PyDoc_STRVAR(configure_doc,
"_configure(dumps, loads, slow_dumps, protocol, Full, Empty, BufferTooShort)\n--\n\n"
"Install the serializers and exception types the C core uses.  Called once\n"
"by interproc.serialization at import.");

static PyObject *configure(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *dumps, *loads, *slow, *proto, *full, *empty, *tooshort;
    if (!PyArg_ParseTuple(args, "OOOOOOO:_configure", &dumps, &loads, &slow, &proto, &full, &empty,
                          &tooshort))
        return NULL;
    Py_XSETREF(ip_state.dumps, Py_NewRef(dumps));
    Py_XSETREF(ip_state.loads, Py_NewRef(loads));
    Py_XSETREF(ip_state.slow_dumps, Py_NewRef(slow));
    Py_XSETREF(ip_state.protocol, Py_NewRef(proto));
    Py_XSETREF(ip_state.Full, Py_NewRef(full));
    Py_XSETREF(ip_state.Empty, Py_NewRef(empty));
    Py_XSETREF(ip_state.BufferTooShort, Py_NewRef(tooshort));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(configure_messages_doc,
"_configure_messages(message_dumps)\n--\n\n"
"Install the serializer of messages through queues and pipes, which returns\n"
"the pickle, or (pickle, out-of-band buffers).  Called once by\n"
"interproc.serialization at import.");

static PyObject *configure_messages(PyObject *Py_UNUSED(m), PyObject *dumps)
{
    Py_XSETREF(ip_state.message_dumps, Py_NewRef(dumps));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(configure_shutdown_doc,
"_configure_shutdown(ShutDown)\n--\n\n"
"Install the exception a shut-down queue raises.  Called once by\n"
"interproc.queues at import, which defines it.");

static PyObject *configure_shutdown(PyObject *Py_UNUSED(m), PyObject *cls)
{
    if (!PyExceptionClass_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "ShutDown must be an exception class");
        return NULL;
    }
    Py_XSETREF(ip_state.ShutDown, Py_NewRef(cls));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(layout_doc,
"_layout()\n--\n\n"
"Offsets and sizes of the queue and pipe layouts in shared memory, as a\n"
"dict of 'struct.field' -> int.  For tests and fuzzers that damage a\n"
"segment on purpose; not an API.");

static PyObject *layout(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
#define F(key, type, field) {key, offsetof(type, field)}
#define S(key, type) {key, sizeof(type)}
    static const struct {
        const char *key;
        size_t value;
    } items[] = {
        F("seg.header_size", ip_seghdr_t, header_size),
        F("seg.initial_size", ip_seghdr_t, initial_size),
        F("seg.file_end", ip_seghdr_t, file_end),
        F("seg.grow_lock", ip_seghdr_t, grow_lock),
        F("queue.maxsize", ip_queue_hdr_t, maxsize),
        F("queue.base_cap", ip_queue_hdr_t, base_cap),
        F("queue.shut.state", ip_queue_hdr_t, shut.state),
        F("queue.shut.discarded", ip_queue_hdr_t, shut.discarded),
        F("queue.tasks_done", ip_queue_hdr_t, tasks_done),
        F("region.pins", ip_region_t, pins),
        F("region.pinned_release", ip_region_t, pinned_release),
        F("queue.ring", ip_queue_hdr_t, ring),
        S("queue.size", ip_queue_hdr_t),
        F("pipe.base_cap", ip_pipe_hdr_t, base_cap),
        F("pipe.ends", ip_pipe_hdr_t, ends),
        S("pipe.end_size", ip_pipe_end_t),
        F("pipe.end.lock", ip_pipe_end_t, lock),
        F("pipe.rings", ip_pipe_hdr_t, rings),
        S("ring.size", ip_ring_t),
        F("ring.prod", ip_ring_t, prod),
        F("ring.cons", ip_ring_t, cons),
        F("ring.put_ev", ip_ring_t, put_ev),
        F("ring.get_ev", ip_ring_t, get_ev),
        F("event.waiters", ip_event_t, waiters),
        F("ring.regions", ip_ring_t, regions),
        F("ring.heads", ip_ring_t, heads),
        F("side.lock", ip_side_t, lock),
        F("side.cur", ip_side_t, cur),
        F("side.hint_region", ip_side_t, hint_region),
        F("side.count", ip_side_t, count),
        F("side.hint_pos", ip_side_t, hint_pos),
        F("side.hint_count", ip_side_t, hint_count),
        F("side.journal", ip_side_t, journal),
        F("journal.valid", ip_journal_t, valid),
        F("journal.count", ip_journal_t, count),
        F("journal.pos", ip_journal_t, pos),
        F("journal.region", ip_journal_t, region),
        F("journal.cur", ip_journal_t, cur),
        F("journal.other", ip_journal_t, other),
        F("journal.other_state", ip_journal_t, other_state),
        F("journal.other_tail", ip_journal_t, other_tail),
        S("region.size", ip_region_t),
        F("region.offset", ip_region_t, offset),
        F("region.cap", ip_region_t, cap),
        F("region.tail", ip_region_t, tail),
        F("region.state", ip_region_t, state),
        S("rec.size", ip_rec_t),
        F("rec.type", ip_rec_t, type),
        F("rec.len", ip_rec_t, len),
        {"rec.PICKLE", IP_REC_PICKLE},
        {"rec.BYTES", IP_REC_BYTES},
        {"rec.PAD", IP_REC_PAD},
        {"rec.FWD", IP_REC_FWD},
        {"rec.PLAIN", IP_REC_PLAIN},
        {"rec.RAW", IP_REC_RAW},
        {"rec.OOB", IP_REC_OOB},
        {"oob.align", IP_OOB_ALIGN},
        {"max_regions", IP_MAX_REGIONS},
    };
#undef F
#undef S
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        PyObject *v = PyLong_FromSize_t(items[i].value);
        if (v == NULL || PyDict_SetItemString(d, items[i].key, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyMethodDef module_methods[] = {
    {"_configure", configure, METH_VARARGS, configure_doc},
    {"_configure_shutdown", configure_shutdown, METH_O, configure_shutdown_doc},
    {"_configure_messages", configure_messages, METH_O, configure_messages_doc},
    {"_layout", layout, METH_NOARGS, layout_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "interproc._core",
    .m_doc = "The C core of interproc: shared-memory segments, futex waits and the ring.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__core(void)
{
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddFunctions(m, ip_segment_methods) < 0
        || PyModule_AddFunctions(m, ip_buffer_methods) < 0)
        goto fail;
    ip_SegmentError = PyErr_NewExceptionWithDoc(
        "interproc.SegmentError",
        "A shared-memory segment is truncated, foreign or corrupt.  The message\n"
        "names the problem.",
        PyExc_ValueError, NULL);
    if (ip_SegmentError == NULL || PyModule_AddObjectRef(m, "SegmentError", ip_SegmentError) < 0)
        goto fail;
    PyObject *closed_bases = PyTuple_Pack(2, PyExc_ValueError, PyExc_OSError);
    if (closed_bases == NULL)
        goto fail;
    ip_QueueClosedError = PyErr_NewExceptionWithDoc(
        "interproc.queues.QueueClosedError",
        "A closed queue handle was used: a ValueError, as multiprocessing's Queue.put()\n"
        "and get() raise, and an OSError, as its empty() raises once closed.",
        closed_bases, NULL);
    Py_DECREF(closed_bases);
    if (ip_QueueClosedError == NULL
        || PyModule_AddObjectRef(m, "QueueClosedError", ip_QueueClosedError) < 0)
        goto fail;
    if (PyType_Ready(&ip_RecvBuffer_Type) < 0 || PyType_Ready(&ip_SharedBuffer_Type) < 0)
        goto fail;
    if (PyType_Ready(&ip_QueueCore_Type) < 0
        || PyModule_AddObjectRef(m, "QueueCore", (PyObject *)&ip_QueueCore_Type) < 0)
        goto fail;
    if (ip_sync_init_module(m) < 0)
        goto fail;
    if (ip_heap_init_module(m) < 0)
        goto fail;
    if (PyType_Ready(&ip_ConnectionCore_Type) < 0
        || PyModule_AddObjectRef(m, "ConnectionCore", (PyObject *)&ip_ConnectionCore_Type) < 0)
        goto fail;
    if (PyModule_AddIntConstant(m, "KIND_QUEUE", IP_KIND_QUEUE) < 0
        || PyModule_AddIntConstant(m, "KIND_SIMPLE_QUEUE", IP_KIND_SIMPLE_QUEUE) < 0
        || PyModule_AddIntConstant(m, "KIND_JOINABLE_QUEUE", IP_KIND_JOINABLE_QUEUE) < 0
        || PyModule_AddIntConstant(m, "KIND_PIPE", IP_KIND_PIPE) < 0
        || PyModule_AddIntConstant(m, "KIND_LOCK", IP_KIND_LOCK) < 0
        || PyModule_AddIntConstant(m, "KIND_RLOCK", IP_KIND_RLOCK) < 0
        || PyModule_AddIntConstant(m, "KIND_SEMAPHORE", IP_KIND_SEMAPHORE) < 0
        || PyModule_AddIntConstant(m, "KIND_BOUNDED_SEMAPHORE", IP_KIND_BOUNDED_SEMAPHORE) < 0
        || PyModule_AddIntConstant(m, "KIND_EVENT", IP_KIND_EVENT) < 0
        || PyModule_AddIntConstant(m, "KIND_VALUE", IP_KIND_VALUE) < 0
        || PyModule_AddIntConstant(m, "KIND_ARRAY", IP_KIND_ARRAY) < 0
        || PyModule_AddIntConstant(m, "KIND_CONDITION", IP_KIND_CONDITION) < 0
        || PyModule_AddIntConstant(m, "KIND_BARRIER", IP_KIND_BARRIER) < 0
        || PyModule_AddIntConstant(m, "DATA_OFFSET", IP_SYNC_HDR_SIZE) < 0
        || PyModule_AddIntConstant(m, "LAYOUT_VERSION", IP_LAYOUT_VERSION) < 0
        || PyModule_AddIntConstant(m, "NAME_MAX", IP_NAME_MAX) < 0
        || PyModule_AddStringConstant(m, "SHM_PREFIX", IP_SHM_PREFIX) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
