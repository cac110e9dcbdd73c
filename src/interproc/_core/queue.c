/* QueueCore: the C half of Queue, SimpleQueue and JoinableQueue.
 *
 * One segment holds an ip_queue_hdr_t followed by the ring's base region.
 * The hot methods (put, get and their batch forms) live here so that a call
 * from Python reaches the ring without a Python frame in between; everything
 * else (naming, pickling of the queue itself) is in queues.py.
 */
#include "interproc.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define IP_MAX_CAPACITY (1ull << 40)

typedef struct {
    PyObject_HEAD
    ip_queue_hdr_t *hdr;
    size_t map_len;
    ip_channel_t ch;
    uint64_t base_cap; /* as checked at attach, like everything that sizes memory */
    uint64_t uid;
    int fd;
    int kind;
    int closed;
    int released;
    int active;   /* threads inside a method; resources go when it is 0 and closed */
    int pid_slot;
    ip_ident_t ident;  /* this process's liveness key on the segment, for get_view's pins */
    ip_pins_t pins;    /* get_view's: which regions its views pin */
    PyObject *pending; /* list of (type, payload) taken from the ring but not yet returned */
    PyObject *weakreflist;
} QueueCore;

static inline uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void release_resources(QueueCore *self)
{
    if (self->released)
        return;
    self->released = 1;
    ip_ident_release(&self->ident);
    if (self->hdr) {
        ip_pids_unregister(self->hdr->pids, IP_MAX_PIDS, self->pid_slot);
        ip_ringview_unmap(&self->ch.view); /* nothing to do if attach failed before it was set up */
        munmap(self->hdr, self->map_len);
        self->hdr = NULL;
    }
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
}

PyObject *ip_QueueClosedError;

static int closed_error(QueueCore *self)
{
    PyErr_Format(ip_QueueClosedError, "Queue %R is closed", (PyObject *)self);
    return -1;
}

/* Every public method brackets its work with enter/leave so that close()
 * from another thread never unmaps memory a blocked call still uses. */
static int enter(QueueCore *self)
{
    if (self->closed)
        return closed_error(self);
    self->active++;
    return 0;
}

static PyObject *leave(QueueCore *self, PyObject *result)
{
    if (--self->active == 0 && self->closed)
        release_resources(self);
    return result;
}

static int check_open(void *owner)
{
    QueueCore *self = owner;
    return self->closed ? closed_error(self) : 0;
}

static PyObject *raise_with_count(PyObject *type, const char *msg, Py_ssize_t count)
{
    PyObject *exc = PyObject_CallFunction(type, "s", msg);
    if (exc == NULL)
        return NULL;
    PyObject *n = PyLong_FromSsize_t(count);
    if (n == NULL || PyObject_SetAttrString(exc, "count", n) < 0) {
        Py_XDECREF(n);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(n);
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* construction                                                        */

static int init_segment(QueueCore *self, int kind, Py_ssize_t maxsize, long long capacity)
{
    uint64_t cap = IP_PAGE;
    while (cap < (uint64_t)capacity)
        cap <<= 1;
    uint64_t hsize = IP_QUEUE_HDR_SIZE;
    ip_queue_hdr_t *h = ip_segment_create(self->fd, (uint32_t)kind, hsize, hsize + cap);
    if (h == NULL)
        return -1;
    self->hdr = h;
    self->map_len = (size_t)(hsize + cap);
    h->maxsize = maxsize > 0 ? (uint64_t)maxsize : 0;
    h->base_cap = cap;
    if (ip_ring_init(&h->ring, hsize, cap)) {
        PyErr_SetString(PyExc_OSError, "cannot initialize process-shared mutexes");
        return -1;
    }
    self->base_cap = cap;
    self->ch.maxsize = h->maxsize;
    self->uid = h->seg.uid;
    ip_ringview_init(&self->ch.view, &h->ring, &h->seg, self->fd, (uint8_t *)h + hsize, hsize, cap,
                     hsize + cap);
    ip_segment_publish(&h->seg);
    return 0;
}

static int attach_segment(QueueCore *self, int kind)
{
    uint64_t file_size;
    ip_seghdr_t seg;
    ip_queue_hdr_t *h = ip_segment_attach(self->fd, (uint32_t)kind, IP_QUEUE_HDR_SIZE,
                                          &self->map_len, &file_size, &seg);
    if (h == NULL)
        return -1;
    self->hdr = h;
    /* Read once: the checks below and every later use see the same values. */
    uint64_t cap = __atomic_load_n(&h->base_cap, __ATOMIC_RELAXED);
    uint64_t maxsize = __atomic_load_n(&h->maxsize, __ATOMIC_RELAXED);
    if (cap < IP_PAGE || cap > IP_MAX_CAPACITY || (cap & (cap - 1))
        || seg.initial_size != seg.header_size + cap || self->map_len != seg.initial_size
        || __atomic_load_n(&h->ring.regions[0].offset, __ATOMIC_RELAXED) != seg.header_size
        || __atomic_load_n(&h->ring.regions[0].cap, __ATOMIC_RELAXED) != cap) {
        PyErr_SetString(ip_SegmentError, "queue header is corrupt (base region does not match)");
        return -1;
    }
    if (ip_ring_check(&h->ring, file_size) < 0)
        return -1;
    self->base_cap = cap;
    self->ch.maxsize = maxsize;
    self->uid = seg.uid;
    ip_ringview_init(&self->ch.view, &h->ring, &h->seg, self->fd, (uint8_t *)h + seg.header_size,
                     seg.header_size, cap, seg.initial_size);
    return 0;
}

static PyObject *QueueCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "kind", "maxsize", "capacity", NULL};
    int fd, kind;
    Py_ssize_t maxsize = 0;
    long long capacity = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ii|nL:QueueCore", kwlist, &fd, &kind, &maxsize,
                                     &capacity)) {
        /* fd is ours even when the other arguments are wrong. */
        int given = ip_arg_fd(args, kwds, 0, "fd");
        if (given >= 0)
            close(given);
        return NULL;
    }
    /* From here on fd is ours, also when we fail. */
    if (kind < IP_KIND_QUEUE || kind > IP_KIND_JOINABLE_QUEUE) {
        PyErr_Format(PyExc_ValueError, "unknown queue kind %d", kind);
        close(fd);
        return NULL;
    }
    if (capacity > (long long)IP_MAX_CAPACITY) {
        PyErr_Format(PyExc_ValueError, "capacity_bytes must be at most %llu",
                     (unsigned long long)IP_MAX_CAPACITY);
        close(fd);
        return NULL;
    }
    QueueCore *self = (QueueCore *)type->tp_alloc(type, 0);
    if (self == NULL) {
        close(fd);
        return NULL;
    }
    self->fd = fd; /* owned from here on */
    self->kind = kind;
    self->pid_slot = -1;
    int rc = capacity >= 0 ? init_segment(self, kind, maxsize, capacity) : attach_segment(self, kind);
    if (rc < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->ch.owner = self;
    self->ch.check = check_open;
    self->ch.shut = &self->hdr->shut;
    self->pid_slot = ip_pids_register(self->hdr->pids, IP_MAX_PIDS);
    return (PyObject *)self;
}

static void QueueCore_dealloc(QueueCore *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    release_resources(self);
    Py_CLEAR(self->pending);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
}

static int QueueCore_traverse(QueueCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pending);
    return 0;
}

static int QueueCore_clear(QueueCore *self)
{
    Py_CLEAR(self->pending);
    return 0;
}

/* ------------------------------------------------------------------ */
/* put                                                                 */

/* Puts payloads[0..n) in order, blocking on maxsize as allowed.
 * Returns the number put; < n means an exception is set. */
static Py_ssize_t put_payloads(QueueCore *self, const ip_payload_t *payloads, Py_ssize_t n,
                               int block, PyObject *timeout, int batch)
{
    ip_deadline_t d;
    if (ip_deadline_init(&d, block, timeout) < 0)
        return 0;
    int timed_out;
    Py_ssize_t done = ip_channel_put(&self->ch, payloads, n, &d, &timed_out);
    if (batch && done < n && !timed_out && PyErr_ExceptionMatches(ip_state.ShutDown)) {
        /* As with Full: the caller learns which leading items went in. */
        PyErr_Clear();
        raise_with_count(ip_state.ShutDown, "queue is shut down", done);
    }
    if (timed_out) {
        if (batch)
            raise_with_count(ip_state.Full, "queue is full", done);
        else
            PyErr_SetNone(ip_state.Full);
    }
    return done;
}

static const char *const put_names[] = {"obj", "block", "timeout"};

static PyObject *QueueCore_put(QueueCore *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    PyObject *vals[3] = {NULL, Py_True, Py_None};
    if (ip_parse_args("put", args, nargs, kwnames, put_names, 3, 1, vals) < 0)
        return NULL;
    int block = PyObject_IsTrue(vals[1]);
    if (block < 0 || enter(self) < 0)
        return NULL;
    ip_payload_t payload = {0};
    Py_ssize_t ok = ip_payload_init_message(&payload, vals[0]) < 0
                        ? 0
                        : put_payloads(self, &payload, 1, block, vals[2], 0);
    ip_payload_clear(&payload);
    if (ok != 1)
        return leave(self, NULL);
    Py_INCREF(Py_None);
    return leave(self, Py_None);
}

static PyObject *QueueCore_put_nowait(QueueCore *self, PyObject *obj)
{
    PyObject *args[2] = {obj, Py_False};
    return QueueCore_put(self, args, 2, NULL);
}

static const char *const put_many_names[] = {"items", "block", "timeout"};

static PyObject *QueueCore_put_many(QueueCore *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    PyObject *vals[3] = {NULL, Py_True, Py_None};
    if (ip_parse_args("put_many", args, nargs, kwnames, put_many_names, 3, 1, vals) < 0)
        return NULL;
    int block = PyObject_IsTrue(vals[1]);
    if (block < 0 || enter(self) < 0)
        return NULL;
    /* A tuple: serializing one item may run code that changes a list of
     * them, or drops the last reference to an item. */
    PyObject *seq = PyTuple_Check(vals[0]) ? Py_NewRef(vals[0]) : PySequence_Tuple(vals[0]);
    if (seq == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) && !PyObject_CheckBuffer(vals[0])) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "put_many() needs an iterable of items");
        }
        return leave(self, NULL);
    }
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    ip_payload_t *payloads = PyMem_Calloc((size_t)n + 1, sizeof(ip_payload_t));
    PyObject *result = NULL;
    if (payloads == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Every item is serialized before any goes in: a bad one fails the call whole. */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ip_payload_init_message(&payloads[i], PyTuple_GET_ITEM(seq, i)) < 0)
            goto done;
    }
    if (n == 0 || put_payloads(self, payloads, n, block, vals[2], 1) == n)
        result = Py_NewRef(Py_None);
done:
    if (payloads) {
        for (Py_ssize_t i = 0; i < n; i++)
            ip_payload_clear(&payloads[i]);
    }
    PyMem_Free(payloads);
    Py_DECREF(seq);
    return leave(self, result);
}

/* Prepared puts, for put_async: the items are serialized once, when the
 * call is made, however many tries it takes to find room; a capsule holds
 * the payloads until the call is over. */
#define PREPARED "interproc.prepared_payloads"

typedef struct {
    Py_ssize_t n;
    ip_payload_t p[];
} prepared_t;

static void prepared_release(prepared_t *pr)
{
    for (Py_ssize_t i = 0; i < pr->n; i++)
        ip_payload_clear(&pr->p[i]);
    PyMem_Free(pr);
}

static void prepared_free(PyObject *capsule)
{
    prepared_t *pr = PyCapsule_GetPointer(capsule, PREPARED);
    if (pr == NULL) {
        PyErr_Clear();
        return;
    }
    prepared_release(pr);
}

/* _prepare(items: tuple) -> the payloads of every item, for _put_prepared. */
static PyObject *QueueCore_prepare(QueueCore *self, PyObject *items)
{
    (void)self;
    if (!PyTuple_Check(items)) {
        PyErr_SetString(PyExc_TypeError, "_prepare() needs a tuple");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    prepared_t *pr = PyMem_Calloc(1, sizeof(prepared_t) + ((size_t)n + 1) * sizeof(ip_payload_t));
    if (pr == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ip_payload_init_message(&pr->p[i], PyTuple_GET_ITEM(items, i)) < 0) {
            prepared_release(pr); /* the ones before it */
            return NULL;
        }
        pr->n = i + 1;
    }
    PyObject *capsule = PyCapsule_New(pr, PREPARED, prepared_free);
    if (capsule == NULL)
        prepared_release(pr);
    return capsule;
}

/* Puts payloads p[0..want) without waiting; how many went in (fewer when
 * the queue is full), or -1 with an exception: ShutDown with .count (the
 * `before` items put earlier and those that went in) once it is shut down. */
static Py_ssize_t put_now(QueueCore *self, const ip_payload_t *p, Py_ssize_t want,
                          Py_ssize_t before)
{
    if (want == 0)
        return 0;
    if (enter(self) < 0)
        return -1;
    ip_deadline_t now;
    if (ip_deadline_init(&now, 0, Py_None) < 0)
        return leave(self, NULL), -1;
    int timed_out = 0;
    Py_ssize_t done = ip_channel_put(&self->ch, p, want, &now, &timed_out);
    if (done < want && !timed_out) {
        if (PyErr_ExceptionMatches(ip_state.ShutDown)) {
            PyErr_Clear();
            raise_with_count(ip_state.ShutDown, "queue is shut down", before + done);
        }
        return leave(self, NULL), -1;
    }
    if (done == want && PyErr_Occurred())
        return leave(self, NULL), -1; /* in, and the published hook failed: as put() says */
    leave(self, NULL);
    return done;
}

/* _put_prepared(payloads, start) -> how many of the payloads from `start`
 * on went in, without waiting (fewer when the queue is full). */
static PyObject *QueueCore_put_prepared(QueueCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_put_prepared() takes (payloads, start)");
        return NULL;
    }
    prepared_t *pr = PyCapsule_GetPointer(args[0], PREPARED);
    if (pr == NULL)
        return NULL;
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || start > pr->n) {
        PyErr_SetString(PyExc_ValueError, "start out of range");
        return NULL;
    }
    Py_ssize_t done = put_now(self, pr->p + start, pr->n - start, start);
    return done < 0 ? NULL : PyLong_FromSsize_t(done);
}

/* _put_or_prepare(obj) -> None when obj went in at once, else (the queue
 * is full) its payload, ready for _put_prepared: put_async's fast path,
 * which pickles obj once either way and allocates nothing when it fits. */
static PyObject *QueueCore_put_or_prepare(QueueCore *self, PyObject *obj)
{
    ip_payload_t p;
    if (ip_payload_init_message(&p, obj) < 0)
        return NULL;
    Py_ssize_t done = put_now(self, &p, 1, 0);
    if (done != 0) {
        ip_payload_clear(&p);
        return done < 0 ? NULL : Py_NewRef(Py_None);
    }
    prepared_t *pr = PyMem_Calloc(1, sizeof(prepared_t) + 2 * sizeof(ip_payload_t));
    if (pr == NULL) {
        ip_payload_clear(&p);
        return PyErr_NoMemory();
    }
    pr->p[0] = p; /* a payload owns no pointer into itself: it moves */
    pr->n = 1;
    PyObject *capsule = PyCapsule_New(pr, PREPARED, prepared_free);
    if (capsule == NULL)
        prepared_release(pr);
    return capsule;
}

/* ------------------------------------------------------------------ */
/* get                                                                 */

/* Waits until at least one record can be taken, then takes up to max
 * (with `view`, one, read in place: ip_channel_take_view). */
static Py_ssize_t get_records(QueueCore *self, Py_ssize_t max, PyObject **payloads, uint32_t *types,
                              ip_view_t *view, const ip_deadline_t *d)
{
    Py_ssize_t n = ip_channel_take_view(&self->ch, max, UINT64_MAX, payloads, types, view, d);
    if (n == 0)
        PyErr_SetNone(ip_state.Empty);
    return n > 0 ? n : -1;
}

/* Keeps taken records for the next call, ahead of any already kept.  The
 * references in payloads[0..n) move there; on failure they are dropped. */
static int keep_pending(QueueCore *self, PyObject **payloads, uint32_t *types, Py_ssize_t n)
{
    PyObject *kept = n > 0 ? PyList_New(n) : NULL;
    for (Py_ssize_t k = 0; kept && k < n; k++) {
        PyObject *pair = Py_BuildValue("(IN)", types[k], payloads[k]);
        payloads[k] = NULL;
        if (pair == NULL) {
            for (Py_ssize_t j = k + 1; j < n; j++)
                Py_CLEAR(payloads[j]);
            Py_CLEAR(kept);
            return -1;
        }
        PyList_SET_ITEM(kept, k, pair);
    }
    if (n == 0)
        return 0;
    if (kept == NULL) {
        for (Py_ssize_t j = 0; j < n; j++)
            Py_CLEAR(payloads[j]);
        return -1;
    }
    if (self->pending != NULL && PyList_SetSlice(kept, n, n, self->pending) < 0) {
        Py_DECREF(kept);
        return -1;
    }
    Py_XSETREF(self->pending, kept);
    return 0;
}

/* keep_pending() while an exception is set: the exception stays. */
static void keep_pending_on_error(QueueCore *self, PyObject **payloads, uint32_t *types, Py_ssize_t n)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (keep_pending(self, payloads, types, n) < 0)
        PyErr_WriteUnraisable((PyObject *)self); /* and the records are lost */
    PyErr_Restore(type, value, tb);
}

/* Turns taken records into objects.  A record that fails to unpickle is
 * reported, and the ones after it wait in self->pending for the next call. */
static PyObject *decode_records(QueueCore *self, PyObject **payloads, uint32_t *types, Py_ssize_t n,
                                int as_list)
{
    PyObject *list = as_list ? PyList_New(0) : NULL;
    if (as_list && list == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *obj = ip_deserialize(types[i], payloads[i]);
        Py_CLEAR(payloads[i]);
        if (obj == NULL) {
            /* Keep the rest for later; this one is lost, as it would be in
             * multiprocessing. */
            keep_pending_on_error(self, payloads + i + 1, types + i + 1, n - i - 1);
            if (list && PyList_GET_SIZE(list) > 0) {
                PyErr_Clear();
                return list;
            }
            goto fail;
        }
        if (!as_list)
            return obj;
        if (PyList_Append(list, obj) < 0) {
            Py_DECREF(obj);
            goto fail;
        }
        Py_DECREF(obj);
    }
    return list;
fail:
    for (Py_ssize_t k = 0; k < n; k++)
        Py_CLEAR(payloads[k]);
    Py_XDECREF(list);
    return NULL;
}

/* Moves up to max pending records into payloads/types. */
static Py_ssize_t take_pending(QueueCore *self, Py_ssize_t max, PyObject **payloads, uint32_t *types)
{
    Py_ssize_t avail = PyList_GET_SIZE(self->pending);
    Py_ssize_t n = avail < max ? avail : max;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(self->pending, i);
        types[i] = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(pair, 0));
        payloads[i] = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
    }
    if (PyList_SetSlice(self->pending, 0, n, NULL) < 0) {
        for (Py_ssize_t i = 0; i < n; i++)
            Py_CLEAR(payloads[i]);
        return -1;
    }
    if (PyList_GET_SIZE(self->pending) == 0)
        Py_CLEAR(self->pending);
    return n;
}

static const char *const get_names[] = {"block", "timeout"};

/* A message read in place is one more use of the handle: its memory is
 * this handle's mapping, which close() must leave until the use ends. */
static void view_done(PyObject *owner)
{
    leave((QueueCore *)owner, NULL);
}

/* get(), and _get_view() with `in_place`: the buffers of an out-of-band
 * message read where they lie, read-only (ip_view_decode). */
static PyObject *get_one(QueueCore *self, const char *fname, PyObject *const *args,
                         Py_ssize_t nargs, PyObject *kwnames, int in_place)
{
    PyObject *vals[2] = {Py_True, Py_None};
    if (ip_parse_args(fname, args, nargs, kwnames, get_names, 2, 0, vals) < 0)
        return NULL;
    int block = PyObject_IsTrue(vals[0]);
    ip_deadline_t d;
    if (block < 0 || ip_deadline_init(&d, block, vals[1]) < 0 || enter(self) < 0)
        return NULL;
    PyObject *payload = NULL;
    uint32_t type;
    Py_ssize_t n;
    ip_view_t view = {.pins = &self->pins};
    if (self->pending) {
        n = take_pending(self, 1, &payload, &type);
    } else {
        if (in_place && (view.key = ip_ident_get(&self->ident, self->fd, 1)) == 0)
            return leave(self, NULL);
        n = get_records(self, 1, &payload, &type, in_place ? &view : NULL, &d);
    }
    if (n <= 0)
        return leave(self, NULL);
    if (payload != NULL)
        return leave(self, decode_records(self, &payload, &type, 1, 0));
    self->active++; /* the view's, ended by view_done */
    return leave(self, ip_view_decode((PyObject *)self, &self->ch.view, &view, view_done));
}

static PyObject *QueueCore_get(QueueCore *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    return get_one(self, "get", args, nargs, kwnames, 0);
}

/* _get_view(block=True, timeout=None) */
static PyObject *QueueCore_get_view(QueueCore *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    return get_one(self, "get_view", args, nargs, kwnames, 1);
}

static PyObject *QueueCore_get_nowait(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *args[1] = {Py_False};
    return QueueCore_get(self, args, 1, NULL);
}

/* Scratch space for get_many: on the stack for small batches, grown on the
 * heap as records actually arrive, so that no size taken from the caller
 * or from shared memory is ever allocated up front. */
#define GET_MANY_SMALL 64
#define GET_MANY_FIRST_MAX 65536
#define GET_MANY_SLACK 1024

typedef struct {
    PyObject *small_p[GET_MANY_SMALL];
    uint32_t small_t[GET_MANY_SMALL];
    PyObject **payloads;
    uint32_t *types;
    Py_ssize_t cap;
} scratch_t;

static void scratch_init(scratch_t *s)
{
    s->payloads = s->small_p;
    s->types = s->small_t;
    s->cap = GET_MANY_SMALL;
}

/* Room for at least `want` records (at most PY_SSIZE_T_MAX / 16), keeping
 * the `kept` ones already in. */
static int scratch_grow(scratch_t *s, Py_ssize_t want, Py_ssize_t kept)
{
    if (want <= s->cap)
        return 0;
    PyObject **p = PyMem_New(PyObject *, (size_t)want);
    uint32_t *t = PyMem_New(uint32_t, (size_t)want);
    if (p == NULL || t == NULL) {
        PyMem_Free(p);
        PyMem_Free(t);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(p, s->payloads, (size_t)kept * sizeof *p);
    memcpy(t, s->types, (size_t)kept * sizeof *t);
    if (s->payloads != s->small_p) {
        PyMem_Free(s->payloads);
        PyMem_Free(s->types);
    }
    s->payloads = p;
    s->types = t;
    s->cap = want;
    return 0;
}

static void scratch_free(scratch_t *s)
{
    if (s->payloads != s->small_p) {
        PyMem_Free(s->payloads);
        PyMem_Free(s->types);
    }
}

static const char *const get_many_names[] = {"max_items", "block", "timeout"};

static PyObject *QueueCore_get_many(QueueCore *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    PyObject *vals[3] = {Py_None, Py_True, Py_None};
    if (ip_parse_args("get_many", args, nargs, kwnames, get_many_names, 3, 0, vals) < 0)
        return NULL;
    Py_ssize_t max = -1;
    if (vals[0] != Py_None) {
        max = PyLong_AsSsize_t(vals[0]);
        if (max == -1 && PyErr_Occurred())
            return NULL;
        if (max < 1) {
            PyErr_Format(PyExc_ValueError, "max_items must be at least 1, not %zd", max);
            return NULL;
        }
    }
    int block = PyObject_IsTrue(vals[1]);
    ip_deadline_t d;
    if (block < 0 || ip_deadline_init(&d, block, vals[2]) < 0 || enter(self) < 0)
        return NULL;
    scratch_t s;
    scratch_init(&s);
    Py_ssize_t got = 0;
    PyObject *result = NULL;
    if (self->pending) {
        Py_ssize_t avail = PyList_GET_SIZE(self->pending);
        if (max < 0)
            max = avail;
        if (scratch_grow(&s, avail < max ? avail : max, 0) < 0)
            goto done;
        got = take_pending(self, s.cap < max ? s.cap : max, s.payloads, s.types);
    } else {
        /* Sized by what is there, as far as the counts can be believed;
         * more room is made below if more arrives.  Without max_items,
         * what is there now and what comes meanwhile, within a bound, so
         * that producers faster than this call cannot keep it going. */
        uint64_t there = ip_channel_size(&self->ch); /* at most IP_MAX_MESSAGES */
        if (max < 0)
            max = (Py_ssize_t)there + GET_MANY_SLACK;
        there += GET_MANY_SMALL;
        Py_ssize_t first = there > GET_MANY_FIRST_MAX ? GET_MANY_FIRST_MAX : (Py_ssize_t)there;
        if (scratch_grow(&s, first < max ? first : max, 0) < 0)
            goto done;
        ip_deadline_t now = {0};
        for (;;) {
            Py_ssize_t want = s.cap - got < max - got ? s.cap - got : max - got;
            Py_ssize_t n = ip_channel_take(&self->ch, want, UINT64_MAX, s.payloads + got,
                                           s.types + got, got ? &now : &d);
            if (n < 0 && got > 0 && PyErr_ExceptionMatches(ip_state.ShutDown)) {
                /* Drained: what this call took is returned; the next one raises. */
                PyErr_Clear();
                break;
            }
            if (n < 0 || (n == 0 && got == 0)) {
                if (n == 0)
                    PyErr_SetNone(ip_state.Empty);
                /* What earlier rounds took is not lost with the error. */
                keep_pending_on_error(self, s.payloads, s.types, got);
                got = -1;
                break;
            }
            got += n;
            if (n < want || got == max)
                break;
            /* The ring held more than there was room for: take the rest
             * without waiting, in rounds as large as all taken so far. */
            Py_ssize_t more = got <= (PY_SSIZE_T_MAX / 16) / 2 ? 2 * got : PY_SSIZE_T_MAX / 16;
            if (scratch_grow(&s, more < max ? more : max, got) < 0) {
                PyErr_Clear(); /* return what is in hand */
                break;
            }
            ip_deadline_init(&now, 0, NULL);
        }
    }
    if (got > 0)
        result = decode_records(self, s.payloads, s.types, got, 1);
done:
    scratch_free(&s);
    return leave(self, result);
}

/* ------------------------------------------------------------------ */
/* sizes, close, joinable                                              */

static PyObject *QueueCore_qsize(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t n;
    if (enter(self) < 0)
        return NULL;
    if (ip_channel_count(&self->ch, &n) < 0)
        return leave(self, NULL);
    if (self->pending)
        n += (uint64_t)PyList_GET_SIZE(self->pending);
    return leave(self, PyLong_FromUnsignedLongLong(n));
}

static PyObject *QueueCore_empty(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t n;
    if (enter(self) < 0)
        return NULL;
    if (ip_channel_count(&self->ch, &n) < 0)
        return leave(self, NULL);
    return leave(self, PyBool_FromLong(n == 0 && self->pending == NULL));
}

static PyObject *QueueCore_full(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t n;
    if (enter(self) < 0)
        return NULL;
    if (ip_channel_count(&self->ch, &n) < 0)
        return leave(self, NULL);
    return leave(self, PyBool_FromLong(self->ch.maxsize && n >= self->ch.maxsize));
}

static PyObject *QueueCore_close(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->closed) {
        self->closed = 1;
        if (self->active == 0)
            release_resources(self);
    }
    Py_RETURN_NONE;
}

/* The items whose tasks can still be finished: every item put, less those
 * an immediate shutdown discarded (finished by it, as queue.Queue does). */
static uint64_t unfinished_limit(QueueCore *self)
{
    uint64_t put = ld(&self->hdr->ring.prod.count);
    return put - ip_channel_discarded(&self->ch, put);
}

static int joinable(QueueCore *self)
{
    if (self->kind != IP_KIND_JOINABLE_QUEUE) {
        PyErr_SetString(PyExc_AttributeError, "only a JoinableQueue counts tasks");
        return -1;
    }
    return enter(self);
}

static PyObject *QueueCore_task_done(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    if (joinable(self) < 0)
        return NULL;
    ip_queue_hdr_t *h = self->hdr;
    uint64_t done = ld(&h->tasks_done);
    for (;;) {
        if (done >= unfinished_limit(self)) {
            PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
            return leave(self, NULL);
        }
        if (__atomic_compare_exchange_n(&h->tasks_done, &done, done + 1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_ACQUIRE))
            break;
    }
    ip_event_signal(&h->done_ev, INT32_MAX);
    return leave(self, Py_NewRef(Py_None));
}

static int join_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    QueueCore *self = arg;
    (void)before_sleep;
    if (self->closed)
        return closed_error(self);
    ip_queue_hdr_t *h = self->hdr;
    /* An immediate shutdown whose process died before it recorded what it
     * discarded would keep this wait going for ever: finish it here. */
    int st = ip_channel_shut_state(&self->ch);
    if (st < 0)
        return -1;
    if (st == IP_SHUT_NOW && ld(&h->shut.discarded) == 0 && ip_channel_finish_discard(&self->ch) < 0)
        return -1;
    uint64_t done = ld(&h->tasks_done);
    if (done >= unfinished_limit(self))
        return 1;
    *watch = &h->tasks_done;
    *watch_val = done;
    return 0;
}

static PyObject *QueueCore_join(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    if (joinable(self) < 0)
        return NULL;
    ip_deadline_t forever = {.infinite = 1};
    if (ip_wait_for(&self->hdr->done_ev, &forever, join_attempt, self) != IP_WAIT_DONE)
        return leave(self, NULL);
    return leave(self, Py_NewRef(Py_None));
}

/* _bell(which, bell) / _bell(which, slot, bell): an asyncio loop's bell on
 * the event of items (0), of room (1) or of finished tasks (2). */
static PyObject *QueueCore_bell(QueueCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    long which = ip_bell_which(args, nargs, 2);
    if (which < 0 || enter(self) < 0)
        return NULL;
    ip_event_t *ev = which == 0   ? &self->ch.view.ring->put_ev
                     : which == 1 ? &self->ch.view.ring->get_ev
                                  : &self->hdr->done_ev;
    return leave(self, ip_bell_py(ev, args + 1, nargs - 1));
}

/* _join_ready(): whether join() would return now (a JoinableQueue). */
static PyObject *QueueCore_join_ready(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    if (joinable(self) < 0)
        return NULL;
    const uint64_t *watch = NULL;
    uint64_t watch_val = 0;
    int rc = join_attempt(self, 0, &watch, &watch_val);
    if (rc < 0)
        return leave(self, NULL);
    return leave(self, PyBool_FromLong(rc));
}

static const char *const shutdown_names[] = {"immediate"};

static PyObject *QueueCore_shutdown(QueueCore *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    PyObject *vals[1] = {Py_False};
    if (ip_parse_args("shutdown", args, nargs, kwnames, shutdown_names, 1, 0, vals) < 0)
        return NULL;
    int immediate = PyObject_IsTrue(vals[0]);
    if (immediate < 0 || enter(self) < 0)
        return NULL;
    if (ip_channel_shutdown(&self->ch, immediate) < 0)
        return leave(self, NULL);
    if (immediate) /* the discarded items count as finished tasks: join() may return */
        ip_event_signal(&self->hdr->done_ev, INT32_MAX);
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *QueueCore_register_pid(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    /* Called in a freshly forked child, where only the forking thread
     * exists: no call can be in progress on this object. */
    self->active = 0;
    if (enter(self) < 0)
        return NULL;
    self->pid_slot = ip_pids_register(self->hdr->pids, IP_MAX_PIDS);
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *QueueCore_unregister_pid(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    ip_pids_unregister(self->hdr->pids, IP_MAX_PIDS, self->pid_slot);
    self->pid_slot = -1;
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *QueueCore_info(QueueCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    ip_queue_hdr_t *h = self->hdr;
    PyObject *pids = PyList_New(0);
    if (pids == NULL)
        return leave(self, NULL);
    for (int i = 0; i < IP_MAX_PIDS; i++) {
        uint32_t p = __atomic_load_n(&h->pids[i], __ATOMIC_ACQUIRE);
        if (p == 0 || (kill((pid_t)p, 0) == -1 && errno == ESRCH))
            continue;
        int seen = 0; /* a process with several handles holds several slots */
        for (int k = 0; k < i && !seen; k++)
            seen = __atomic_load_n(&h->pids[k], __ATOMIC_ACQUIRE) == p;
        if (seen)
            continue;
        PyObject *o = PyLong_FromUnsignedLong(p);
        if (o == NULL || PyList_Append(pids, o) < 0) {
            Py_XDECREF(o);
            Py_DECREF(pids);
            return leave(self, NULL);
        }
        Py_DECREF(o);
    }
    int regions = 0;
    for (int i = 0; i < IP_MAX_REGIONS; i++)
        regions += (ld(&h->ring.regions[i].state) & 1) != 0;
    struct stat st;
    long long fsize = fstat(self->fd, &st) == 0 ? (long long)st.st_size : -1;
    PyObject *d = Py_BuildValue(
        "{s:i,s:K,s:K,s:K,s:K,s:N,s:i,s:L,s:K,s:K,s:K,s:K}", "kind", self->kind, "maxsize",
        (unsigned long long)self->ch.maxsize, "capacity_bytes", (unsigned long long)self->base_cap,
        "items", (unsigned long long)ip_channel_size(&self->ch), "bytes_used",
        (unsigned long long)ip_ring_bytes_used(&self->ch.view), "pids", pids, "regions", regions,
        "file_size", fsize, "put_count", (unsigned long long)ld(&h->ring.prod.count), "creator_pid",
        (unsigned long long)h->seg.creator_pid, "shutdown", (unsigned long long)ld(&h->shut.state),
        "discarded", (unsigned long long)ld(&h->shut.discarded));
    return leave(self, d);
}

static PyObject *QueueCore_get_maxsize(QueueCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->released ? 0 : self->ch.maxsize);
}

static PyObject *QueueCore_get_capacity(QueueCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->released ? 0 : self->base_cap);
}

static PyObject *QueueCore_get_fd(QueueCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->fd);
}

static PyObject *QueueCore_get_closed(QueueCore *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *QueueCore_get_is_shutdown(QueueCore *self, void *Py_UNUSED(c))
{
    if (enter(self) < 0)
        return NULL;
    int st = ip_channel_shut_state(&self->ch);
    return leave(self, st < 0 ? NULL : PyBool_FromLong(st != IP_SHUT_OPEN));
}

static PyObject *QueueCore_get_kind(QueueCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->kind);
}

static PyObject *QueueCore_get_uid(QueueCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->released ? 0 : self->uid);
}

PyDoc_STRVAR(put_doc,
"put($self, obj, block=True, timeout=None)\n--\n\n"
"Put obj into the queue.\n\n"
"obj is pickled here, in the caller, so an object that cannot be pickled\n"
"raises at once, and what is delivered is obj as it was at the call.  The\n"
"call blocks only while the queue holds maxsize items (never when maxsize\n"
"is 0: the shared ring grows instead).  If block is false, or timeout\n"
"seconds pass, queue.Full is raised.  After close(), ValueError; after\n"
"shutdown(), by any process, ShutDown (also for a put waiting for room).\n"
"A damaged queue raises interproc.SegmentError and nothing goes in.");
PyDoc_STRVAR(get_doc,
"get($self, block=True, timeout=None)\n--\n\n"
"Remove and return the oldest item.\n\n"
"Blocks until an item is there; if block is false, or timeout seconds pass,\n"
"queue.Empty is raised.  The GIL is released while waiting, and Ctrl-C\n"
"interrupts the wait.  After close(), ValueError.  Once the queue is shut\n"
"down and empty (at once after shutdown(immediate=True)), ShutDown, also\n"
"for a get that was waiting.  A damaged queue raises\n"
"interproc.SegmentError and nothing is taken.");
PyDoc_STRVAR(put_many_doc,
"put_many($self, items, block=True, timeout=None)\n--\n\n"
"Put every item of items, in order, holding the producer lock once per run.\n\n"
"All items are pickled before any is put.  If the call gives up on a full\n"
"queue it raises queue.Full whose .count says how many leading items went in;\n"
"stopped by a shutdown, ShutDown with the same .count.");
PyDoc_STRVAR(get_many_doc,
"get_many($self, max_items=None, block=True, timeout=None)\n--\n\n"
"Wait, as get() does, for at least one item, then return a list of every\n"
"item present, at most max_items of them.  Memory is used only for the\n"
"items taken, whatever max_items says.  If taking more fails after some\n"
"were taken, the error is raised and those items come first from the next\n"
"get or get_many.");

PyDoc_STRVAR(shutdown_doc,
"shutdown($self, immediate=False)\n--\n\n"
"Shut the queue down, for every process that uses it: queue.Queue.shutdown().\n\n"
"From then on put, put_nowait and put_many raise ShutDown.  get and\n"
"get_many return what is left, then raise ShutDown instead of waiting or\n"
"raising Empty.  With immediate true, what is left is discarded and get\n"
"raises ShutDown at once; a JoinableQueue counts the discarded items as\n"
"done, so join() returns once the items taken before are done.  Every\n"
"blocked put, get and join, in any process, wakes.  Calling it again is\n"
"harmless, and immediate=True after a plain shutdown discards what is\n"
"left.  A process killed inside it leaves the queue either as it was or\n"
"shut down; an immediate shutdown it began is finished by the next get,\n"
"join or shutdown.");

static PyMethodDef QueueCore_methods[] = {
    {"put", (PyCFunction)(void (*)(void))QueueCore_put, METH_FASTCALL | METH_KEYWORDS, put_doc},
    {"get", (PyCFunction)(void (*)(void))QueueCore_get, METH_FASTCALL | METH_KEYWORDS, get_doc},
    {"put_nowait", (PyCFunction)QueueCore_put_nowait, METH_O,
     "put_nowait($self, obj, /)\n--\n\nput(obj, block=False)."},
    {"_get_view", (PyCFunction)(void (*)(void))QueueCore_get_view, METH_FASTCALL | METH_KEYWORDS,
     NULL},
    {"get_nowait", (PyCFunction)QueueCore_get_nowait, METH_NOARGS,
     "get_nowait($self, /)\n--\n\nget(block=False)."},
    {"put_many", (PyCFunction)(void (*)(void))QueueCore_put_many, METH_FASTCALL | METH_KEYWORDS,
     put_many_doc},
    {"get_many", (PyCFunction)(void (*)(void))QueueCore_get_many, METH_FASTCALL | METH_KEYWORDS,
     get_many_doc},
    {"qsize", (PyCFunction)QueueCore_qsize, METH_NOARGS,
     "qsize($self, /)\n--\n\nThe number of items in the queue (exact, not approximate)."},
    {"empty", (PyCFunction)QueueCore_empty, METH_NOARGS,
     "empty($self, /)\n--\n\nTrue if the queue holds no item."},
    {"full", (PyCFunction)QueueCore_full, METH_NOARGS,
     "full($self, /)\n--\n\nTrue if the queue holds maxsize items (never when maxsize is 0)."},
    {"close", (PyCFunction)QueueCore_close, METH_NOARGS,
     "close($self, /)\n--\n\nRelease this handle: later calls on it raise ValueError.  The "
     "queue itself, and other handles to it, are unaffected."},
    {"shutdown", (PyCFunction)(void (*)(void))QueueCore_shutdown, METH_FASTCALL | METH_KEYWORDS,
     shutdown_doc},
    {"_task_done", (PyCFunction)QueueCore_task_done, METH_NOARGS, NULL},
    {"_join", (PyCFunction)QueueCore_join, METH_NOARGS, NULL},
    {"_join_ready", (PyCFunction)QueueCore_join_ready, METH_NOARGS, NULL},
    {"_bell", (PyCFunction)(void (*)(void))QueueCore_bell, METH_FASTCALL, NULL},
    {"_prepare", (PyCFunction)QueueCore_prepare, METH_O, NULL},
    {"_put_prepared", (PyCFunction)(void (*)(void))QueueCore_put_prepared, METH_FASTCALL, NULL},
    {"_put_or_prepare", (PyCFunction)QueueCore_put_or_prepare, METH_O, NULL},
    {"_register_pid", (PyCFunction)QueueCore_register_pid, METH_NOARGS, NULL},
    {"_unregister_pid", (PyCFunction)QueueCore_unregister_pid, METH_NOARGS, NULL},
    {"_info", (PyCFunction)QueueCore_info, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef QueueCore_getset[] = {
    {"maxsize", (getter)QueueCore_get_maxsize, NULL, "The item limit (0: unbounded).", NULL},
    {"capacity_bytes", (getter)QueueCore_get_capacity, NULL,
     "Bytes in the base region of the shared ring (a power of two).", NULL},
    {"is_shutdown", (getter)QueueCore_get_is_shutdown, NULL,
     "True once shutdown() was called on this queue, by any process.", NULL},
    {"_fd", (getter)QueueCore_get_fd, NULL, NULL, NULL},
    {"_closed", (getter)QueueCore_get_closed, NULL, NULL, NULL},
    {"_kind", (getter)QueueCore_get_kind, NULL, NULL, NULL},
    {"_uid", (getter)QueueCore_get_uid, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ip_QueueCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "interproc._core.QueueCore",
    .tp_basicsize = sizeof(QueueCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "QueueCore(fd, kind, maxsize=0, capacity=-1)\n--\n\n"
              "The shared-memory ring behind a queue.  Takes ownership of fd, also\n"
              "when it raises.  With\n"
              "capacity >= 0 it lays out a new segment in the empty file; otherwise\n"
              "it validates and attaches to an existing one.",
    .tp_new = QueueCore_new,
    .tp_dealloc = (destructor)QueueCore_dealloc,
    .tp_traverse = (traverseproc)QueueCore_traverse,
    .tp_clear = (inquiry)QueueCore_clear,
    .tp_methods = QueueCore_methods,
    .tp_getset = QueueCore_getset,
    .tp_weaklistoffset = offsetof(QueueCore, weakreflist),
};
