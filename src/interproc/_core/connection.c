/* ConnectionCore: the C half of Connection, one end of a Pipe.
 *
 * A Pipe is one segment with two rings: ring k carries messages to end k.
 * Beside the segment, each receiving end k has a notification pipe (an OS
 * pipe): holders of end k keep its read side, holders of the other end its
 * write side.  That pipe does two jobs.
 *
 * - Liveness, for free from the kernel: when every process holding the
 *   other end has closed it or died, the read side reports POLLHUP (recv()
 *   then raises EOFError once the ring is empty), and when every holder of
 *   end k is gone the write side reports POLLERR (send() raises
 *   BrokenPipeError).  These are exactly the semantics of OS pipes, also
 *   under fork, where a child inherits both ends.
 * - Readiness for select() and friends, once fileno() was asked for: the
 *   pipe then holds a byte exactly while ring k holds messages.
 *
 * Blocking itself never goes through the OS pipe: recv() waits on the
 * ring's futex like Queue.get(), so the hot path makes no syscall.
 */
#include "interproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* How often send() asks the kernel whether the receiving end still exists,
 * when nothing else says it may be gone. */
#define IP_PEER_CHECK_NS 10000000LL
#define IP_MAX_CAPACITY (1ull << 40)

typedef struct {
    PyObject_HEAD
    ip_pipe_hdr_t *hdr;
    size_t map_len;
    int fd;
    ip_channel_t rx; /* ring[end]: what this end receives */
    ip_channel_t tx; /* ring[1 - end]: what this end sends */
    int end;
    int readable;
    int writable;
    int rfd; /* read side of this end's notification pipe, or -1 */
    int wfd; /* write side of the other end's notification pipe, or -1 */
    int closed;
    int released;
    int active;
    int peer_gone;
    int synced; /* this handle brought its end's readiness pipe in step once */
    uint32_t seen_closes;
    int64_t next_check_ns;
    uint64_t uid;
    /* A message taken from the ring whose recv() was then interrupted (a
     * signal while the readiness pipe was being updated): the next recv()
     * returns it. */
    PyObject *held;
    uint32_t held_type;
    PyObject *weakreflist;
} ConnectionCore;

static inline uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static int64_t coarse_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* ------------------------------------------------------------------ */
/* lifetime                                                            */

static void release_resources(ConnectionCore *self)
{
    if (self->released)
        return;
    self->released = 1;
    /* Our side of the notification pipes goes first, so that peers woken
     * below already see POLLHUP / POLLERR if we were the last holder. */
    close_fd(&self->rfd);
    close_fd(&self->wfd);
    if (self->hdr) {
        ip_pipe_hdr_t *h = self->hdr;
        if (self->tx.view.ring) { /* set up, not failed half-way through construction */
            __atomic_add_fetch(&h->ends[self->end].closes, 1, __ATOMIC_SEQ_CST);
            /* Receivers at the other end may sleep waiting for us: let them look. */
            if (self->writable)
                ip_event_signal(&self->tx.view.ring->put_ev, INT32_MAX);
            ip_ringview_unmap(&self->rx.view);
            ip_ringview_unmap(&self->tx.view);
        }
        munmap(self->hdr, self->map_len);
        self->hdr = NULL;
    }
    close_fd(&self->fd);
}

static int closed_error(void)
{
    PyErr_SetString(PyExc_OSError, "handle is closed");
    return -1;
}

static int enter(ConnectionCore *self)
{
    if (self->closed)
        return closed_error();
    self->active++;
    return 0;
}

static PyObject *leave(ConnectionCore *self, PyObject *result)
{
    if (--self->active == 0 && self->closed)
        release_resources(self);
    return result;
}

static int check_open(void *owner)
{
    return ((ConnectionCore *)owner)->closed ? closed_error() : 0;
}

/* ------------------------------------------------------------------ */
/* liveness                                                            */

static short poll_fd(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    int rc;
    do {
        rc = poll(&p, 1, 0);
    } while (rc < 0 && errno == EINTR);
    return rc > 0 ? p.revents : 0;
}

/* Called, while set, before this process asks the kernel whether a peer is
 * gone: descriptors this process still keeps for a hand-over to another
 * process (naming.py) would otherwise count as a holder of the very end
 * it waits on.  Set only while such descriptors exist. */
static PyObject *handover_hook;

static void run_handover_hook(void)
{
    if (handover_hook == NULL)
        return;
    PyObject *r = PyObject_CallNoArgs(handover_hook);
    if (r == NULL)
        PyErr_WriteUnraisable(handover_hook);
    Py_XDECREF(r);
}

static PyObject *ConnectionCore_set_handover_hook(PyObject *Py_UNUSED(cls), PyObject *hook)
{
    Py_XSETREF(handover_hook, hook == Py_None ? NULL : Py_NewRef(hook));
    Py_RETURN_NONE;
}

/* The ring was found empty: is anyone left who could send? */
static int rx_eof(void *owner)
{
    ConnectionCore *self = owner;
    run_handover_hook();
    if (self->rfd >= 0 && !(poll_fd(self->rfd, POLLIN) & POLLHUP))
        return 0;
    /* Whatever the peer sent before it went is delivered first. */
    if (ip_channel_size(&self->rx) > 0)
        return 0;
    PyErr_SetNone(PyExc_EOFError);
    return -1;
}

/* Before a send: is anyone left who could receive?  Asking the kernel costs
 * a syscall, so it is asked when a close() was seen or now and then. */
static int tx_check_peer(ConnectionCore *self)
{
    if (!self->peer_gone) {
        uint32_t closes = __atomic_load_n(&self->hdr->ends[1 - self->end].closes, __ATOMIC_ACQUIRE);
        int64_t now = coarse_now_ns();
        if (closes != self->seen_closes || now >= self->next_check_ns) {
            self->seen_closes = closes;
            self->next_check_ns = now + IP_PEER_CHECK_NS;
            run_handover_hook();
            if (self->wfd < 0 || (poll_fd(self->wfd, POLLOUT) & POLLERR))
                self->peer_gone = 1;
        }
    }
    if (self->peer_gone) {
        errno = EPIPE;
        PyErr_SetFromErrno(PyExc_BrokenPipeError);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* the notification pipe                                               */

static void drain(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

/* Writes one byte into a notification pipe; from the reading side, through
 * a write descriptor held only for this call, so that holding end k never
 * counts as holding its peer. */
static void poke(int wfd, int rfd)
{
    char one = 1;
    if (wfd >= 0) {
        (void)!write(wfd, &one, 1);
        return;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", rfd);
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        (void)!write(fd, &one, 1);
        close(fd);
    }
}

/* The end's lock is held for a few syscalls at most, but its holder may be
 * frozen (SIGSTOP) or stuck: wait for it as for a ring lock, without the GIL
 * and with signal handlers run, so that other threads go on and Ctrl-C
 * interrupts.  0, or -1 with an exception set. */
static int lock_end(ip_pipe_end_t *e)
{
    static const ip_deadline_t forever = {.infinite = 1};
    int r = ip_mutex_lock(&e->lock, &forever);
    if (r == IP_LOCK_OWNER_DIED)
        ip_mutex_consistent(&e->lock); /* `notified` is re-derived by every holder */
    return r == IP_LOCK_OK || r == IP_LOCK_OWNER_DIED ? 0 : -1;
}

/* Puts end k's pipe in step with ring k.  Called by a receiver of end k. */
static int resync_end(ConnectionCore *self)
{
    ip_pipe_end_t *e = &self->hdr->ends[self->end];
    if (lock_end(e) < 0)
        return -1;
    drain(self->rfd);
    int nonempty = ip_channel_size(&self->rx) > 0;
    if (nonempty)
        poke(-1, self->rfd);
    __atomic_store_n(&e->notified, (uint32_t)nonempty, __ATOMIC_SEQ_CST);
    ip_mutex_unlock(&e->lock);
    return 0;
}

/* After a send: the receiving end may be watched through its fileno(). */
static int tx_published(void *owner)
{
    ConnectionCore *self = owner;
    ip_pipe_end_t *e = &self->hdr->ends[1 - self->end];
    if (!__atomic_load_n(&e->armed, __ATOMIC_ACQUIRE) || __atomic_load_n(&e->notified, __ATOMIC_ACQUIRE))
        return 0;
    if (lock_end(e) < 0)
        return -1;
    if (!__atomic_load_n(&e->notified, __ATOMIC_ACQUIRE) && ip_channel_size(&self->tx) > 0) {
        poke(self->wfd, -1);
        __atomic_store_n(&e->notified, 1, __ATOMIC_SEQ_CST);
    }
    ip_mutex_unlock(&e->lock);
    return 0;
}

/* After a take left the ring empty: the pipe must stop saying "readable".
 * `notified` is only read under the lock here: a sender may be between its
 * look at the ring and its store of `notified`. */
static int rx_emptied(void *owner)
{
    ConnectionCore *self = owner;
    ip_pipe_end_t *e = &self->hdr->ends[self->end];
    if (!__atomic_load_n(&e->armed, __ATOMIC_ACQUIRE))
        return 0;
    if (lock_end(e) < 0)
        return -1;
    if (__atomic_load_n(&e->notified, __ATOMIC_ACQUIRE) && ip_channel_size(&self->rx) == 0) {
        drain(self->rfd);
        __atomic_store_n(&e->notified, 0, __ATOMIC_SEQ_CST);
        /* A sender that published just now may have seen the old
         * `notified` and skipped its byte: look once more. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (ip_channel_size(&self->rx) > 0) {
            poke(-1, self->rfd);
            __atomic_store_n(&e->notified, 1, __ATOMIC_SEQ_CST);
        }
    }
    ip_mutex_unlock(&e->lock);
    return 0;
}

/* ------------------------------------------------------------------ */
/* construction                                                        */

static void setup_channel(ConnectionCore *self, ip_channel_t *ch, int ring, uint64_t hsize,
                          uint64_t cap)
{
    ip_pipe_hdr_t *h = self->hdr;
    uint64_t off = hsize + (uint64_t)ring * cap;
    ip_ringview_init(&ch->view, &h->rings[ring], &h->seg, self->fd, (uint8_t *)h + off, off, cap,
                     hsize + 2 * cap);
    ch->maxsize = 0;
    ch->shut = NULL; /* a pipe ends by EOF, not by a shutdown state */
    ch->owner = self;
    ch->check = check_open;
}

static int init_segment(ConnectionCore *self, long long capacity)
{
    uint64_t cap = IP_PAGE;
    while (cap < (uint64_t)capacity)
        cap <<= 1;
    uint64_t hsize = IP_PIPE_HDR_SIZE, size = hsize + 2 * cap;
    ip_pipe_hdr_t *h = ip_segment_create(self->fd, IP_KIND_PIPE, hsize, size);
    if (h == NULL)
        return -1;
    self->hdr = h;
    self->map_len = (size_t)size;
    h->base_cap = cap;
    if (ip_mutex_init(&h->ends[0].lock) || ip_mutex_init(&h->ends[1].lock)
        || ip_ring_init(&h->rings[0], hsize, cap) || ip_ring_init(&h->rings[1], hsize + cap, cap)) {
        PyErr_SetString(PyExc_OSError, "cannot initialize process-shared mutexes");
        return -1;
    }
    self->uid = h->seg.uid;
    setup_channel(self, &self->rx, self->end, hsize, cap);
    setup_channel(self, &self->tx, 1 - self->end, hsize, cap);
    ip_segment_publish(&h->seg);
    return 0;
}

static int attach_segment(ConnectionCore *self)
{
    uint64_t file_size;
    ip_seghdr_t seg;
    ip_pipe_hdr_t *h =
        ip_segment_attach(self->fd, IP_KIND_PIPE, IP_PIPE_HDR_SIZE, &self->map_len, &file_size, &seg);
    if (h == NULL)
        return -1;
    self->hdr = h;
    uint64_t hsize = seg.header_size;
    /* Read once; a power of two of at most IP_MAX_CAPACITY, so that the
     * sums below cannot wrap. */
    uint64_t cap = __atomic_load_n(&h->base_cap, __ATOMIC_RELAXED);
    int ok = cap >= IP_PAGE && cap <= IP_MAX_CAPACITY && !(cap & (cap - 1))
             && seg.initial_size == hsize + 2 * cap && self->map_len == seg.initial_size;
    for (int k = 0; ok && k < 2; k++) {
        ip_region_t *base = &h->rings[k].regions[0];
        ok = __atomic_load_n(&base->offset, __ATOMIC_RELAXED) == hsize + (uint64_t)k * cap
             && __atomic_load_n(&base->cap, __ATOMIC_RELAXED) == cap;
    }
    if (!ok) {
        PyErr_SetString(ip_SegmentError, "pipe header is corrupt (base regions do not match)");
        return -1;
    }
    if (ip_ring_check(&h->rings[0], file_size) < 0 || ip_ring_check(&h->rings[1], file_size) < 0)
        return -1;
    self->uid = seg.uid;
    setup_channel(self, &self->rx, self->end, hsize, cap);
    setup_channel(self, &self->tx, 1 - self->end, hsize, cap);
    return 0;
}

static void close_arg_fds(PyObject *args, PyObject *kwds)
{
    static const struct {
        Py_ssize_t pos;
        const char *name;
    } fds[] = {{0, "fd"}, {4, "rfd"}, {5, "wfd"}};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        int fd = ip_arg_fd(args, kwds, fds[i].pos, fds[i].name);
        if (fd >= 0)
            close(fd);
    }
}

static PyObject *ConnectionCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "end", "readable", "writable", "rfd", "wfd", "capacity", NULL};
    int fd, end, readable, writable, rfd, wfd;
    long long capacity = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iippii|L:ConnectionCore", kwlist, &fd, &end,
                                     &readable, &writable, &rfd, &wfd, &capacity)) {
        /* The descriptors are ours even when the other arguments are wrong. */
        close_arg_fds(args, kwds);
        return NULL;
    }
    ConnectionCore *self = (ConnectionCore *)type->tp_alloc(type, 0);
    if (self == NULL) {
        close(fd);
        if (rfd >= 0)
            close(rfd);
        if (wfd >= 0)
            close(wfd);
        return NULL;
    }
    /* From here on the descriptors are ours, also when we fail. */
    self->fd = fd;
    self->rfd = rfd;
    self->wfd = wfd;
    self->end = end;
    self->readable = readable;
    self->writable = writable;
    self->released = 0;
    if (end != 0 && end != 1) {
        PyErr_Format(PyExc_ValueError, "end must be 0 or 1, not %d", end);
        goto fail;
    }
    if (capacity > (long long)IP_MAX_CAPACITY) {
        PyErr_SetString(PyExc_ValueError, "capacity is too large");
        goto fail;
    }
    if ((capacity >= 0 ? init_segment(self, capacity) : attach_segment(self)) < 0)
        goto fail;
    self->rx.eof = rx_eof;
    self->rx.emptied = rx_emptied;
    self->tx.published = tx_published;
    self->seen_closes = __atomic_load_n(&self->hdr->ends[1 - end].closes, __ATOMIC_ACQUIRE);
    self->peer_gone = writable && wfd < 0;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static void ConnectionCore_dealloc(ConnectionCore *self)
{
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    release_resources(self);
    Py_CLEAR(self->held);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------------ */
/* sending                                                             */

static int check_writable(ConnectionCore *self)
{
    if (!self->writable) {
        PyErr_SetString(PyExc_OSError, "connection is read-only");
        return -1;
    }
    return tx_check_peer(self);
}

static PyObject *send_payload(ConnectionCore *self, ip_payload_t *p)
{
    ip_deadline_t forever = {.infinite = 1};
    int timed_out;
    /* An exception with the message in: a signal arrived while the
     * receiving end's readiness pipe was being updated. */
    if (ip_channel_put(&self->tx, p, 1, &forever, &timed_out) != 1 || PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *ConnectionCore_send(ConnectionCore *self, PyObject *obj)
{
    if (enter(self) < 0)
        return NULL;
    if (check_writable(self) < 0)
        return leave(self, NULL);
    ip_payload_t p = {0};
    PyObject *res = ip_payload_init_message(&p, obj) < 0 ? NULL : send_payload(self, &p);
    ip_payload_clear(&p);
    return leave(self, res);
}

static const char *const send_bytes_names[] = {"buf", "offset", "size"};

static PyObject *ConnectionCore_send_bytes(ConnectionCore *self, PyObject *const *args,
                                           Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *vals[3] = {NULL, NULL, Py_None};
    if (ip_parse_args("send_bytes", args, nargs, kwnames, send_bytes_names, 3, 1, vals) < 0)
        return NULL;
    if (enter(self) < 0)
        return NULL;
    if (check_writable(self) < 0)
        return leave(self, NULL);
    Py_buffer view;
    if (PyObject_GetBuffer(vals[0], &view, PyBUF_SIMPLE) < 0)
        return leave(self, NULL);
    PyObject *res = NULL;
    Py_ssize_t n = view.len, offset = 0, size;
    if (vals[1] && (offset = PyLong_AsSsize_t(vals[1])) == -1 && PyErr_Occurred())
        goto done;
    /* The same checks and words as multiprocessing's Connection. */
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset is negative");
        goto done;
    }
    if (n < offset) {
        PyErr_SetString(PyExc_ValueError, "buffer length < offset");
        goto done;
    }
    if (vals[2] == Py_None) {
        size = n - offset;
    } else {
        if ((size = PyLong_AsSsize_t(vals[2])) == -1 && PyErr_Occurred())
            goto done;
        if (size < 0) {
            PyErr_SetString(PyExc_ValueError, "size is negative");
            goto done;
        }
        if (size > n - offset) {
            PyErr_SetString(PyExc_ValueError, "buffer length < offset + size");
            goto done;
        }
    }
    ip_payload_t p = {.obj = NULL, .data = (const char *)view.buf + offset, .len = (uint64_t)size,
                      .type = IP_REC_RAW};
    res = send_payload(self, &p);
done:
    PyBuffer_Release(&view);
    return leave(self, res);
}

/* ------------------------------------------------------------------ */
/* receiving                                                           */

static int check_readable(ConnectionCore *self)
{
    if (!self->readable) {
        PyErr_SetString(PyExc_OSError, "connection is write-only");
        return -1;
    }
    return 0;
}

/* Takes the next message as it lies in the ring.  max_len as in
 * recv_bytes(); a longer message closes this handle, as in multiprocessing. */
static PyObject *take_one_by(ConnectionCore *self, uint64_t max_len, uint32_t *type,
                             const ip_deadline_t *d)
{
    PyObject *payload = NULL;
    Py_ssize_t n;
    if (self->held != NULL) {
        if ((uint64_t)PyBytes_GET_SIZE(self->held) <= max_len) {
            *type = self->held_type;
            payload = self->held;
            self->held = NULL;
            return payload;
        }
        PyErr_SetString(PyExc_OSError, "bad message length");
        n = -1;
    } else {
        n = ip_channel_take(&self->rx, 1, max_len, &payload, type, d);
    }
    if (n == 0)
        return NULL; /* the deadline passed: no exception */
    if (n == 1 && PyErr_Occurred()) {
        /* Taken, then interrupted: raise now, deliver next time. */
        self->held = payload;
        self->held_type = *type;
        return NULL;
    }
    if (n == 1)
        return payload;
    if (max_len != UINT64_MAX && PyErr_ExceptionMatches(PyExc_OSError)) {
        /* "bad message length": as multiprocessing, a duplex end stops
         * reading and a read-only one closes (released by leave()). */
        if (self->writable)
            self->readable = 0;
        else
            self->closed = 1;
    }
    return NULL;
}

static PyObject *take_one(ConnectionCore *self, uint64_t max_len, uint32_t *type)
{
    ip_deadline_t forever = {.infinite = 1};
    return take_one_by(self, max_len, type, &forever);
}

/* The bytes recv_bytes() returns: what send_bytes() sent, or the pickle
 * that multiprocessing would have sent for a send(). */
static PyObject *as_message_bytes(uint32_t type, PyObject *payload)
{
    if (type == IP_REC_RAW || type == IP_REC_PICKLE)
        return payload;
    PyObject *obj = ip_deserialize(type, payload);
    Py_DECREF(payload);
    if (obj == NULL)
        return NULL;
    PyObject *b = PyObject_CallOneArg(ip_state.slow_dumps, obj);
    Py_DECREF(obj);
    return b;
}

/* recv_bytes()'s maxlength: None for any length, else a size >= 0. */
static int max_length(PyObject *arg, uint64_t *max_len)
{
    *max_len = UINT64_MAX;
    if (arg == Py_None)
        return 0;
    Py_ssize_t m = PyLong_AsSsize_t(arg);
    if (m == -1 && PyErr_Occurred())
        return -1;
    if (m < 0) {
        PyErr_SetString(PyExc_ValueError, "negative maxlength");
        return -1;
    }
    *max_len = (uint64_t)m;
    return 0;
}

static PyObject *ConnectionCore_recv(ConnectionCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    if (check_readable(self) < 0)
        return leave(self, NULL);
    uint32_t type;
    PyObject *payload = take_one(self, UINT64_MAX, &type);
    if (payload == NULL)
        return leave(self, NULL);
    PyObject *obj = ip_deserialize(type, payload);
    Py_DECREF(payload);
    return leave(self, obj);
}

static PyObject *ConnectionCore_recv_bytes(ConnectionCore *self, PyObject *const *args,
                                           Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"maxlength"};
    PyObject *vals[1] = {Py_None};
    if (ip_parse_args("recv_bytes", args, nargs, kwnames, names, 1, 0, vals) < 0)
        return NULL;
    if (enter(self) < 0)
        return NULL;
    if (check_readable(self) < 0)
        return leave(self, NULL);
    uint64_t max_len;
    if (max_length(vals[0], &max_len) < 0)
        return leave(self, NULL);
    uint32_t type;
    PyObject *payload = take_one(self, max_len, &type);
    if (payload == NULL)
        return leave(self, NULL);
    return leave(self, as_message_bytes(type, payload));
}

/* _recv_now(as_bytes, maxlength): recv() (or recv_bytes(maxlength)) when
 * it would not wait, as a 1-tuple; None when nothing is there yet.  What
 * recv_async() tries each time its loop is rung. */
static PyObject *ConnectionCore_recv_now(ConnectionCore *self, PyObject *const *args,
                                         Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_recv_now() takes (as_bytes, maxlength)");
        return NULL;
    }
    int as_bytes = PyObject_IsTrue(args[0]);
    uint64_t max_len;
    if (as_bytes < 0 || max_length(args[1], &max_len) < 0 || enter(self) < 0)
        return NULL;
    if (check_readable(self) < 0)
        return leave(self, NULL);
    ip_deadline_t now;
    if (ip_deadline_init(&now, 0, Py_None) < 0)
        return leave(self, NULL);
    uint32_t type;
    PyObject *payload = take_one_by(self, max_len, &type, &now);
    if (payload == NULL) {
        /* A take that does not wait never asks whether the stream ended:
         * asked here, on the way to waiting, as recv() asks before it
         * sleeps. */
        if (PyErr_Occurred() || rx_eof(self) < 0)
            return leave(self, NULL);
        return leave(self, Py_NewRef(Py_None));
    }
    PyObject *msg = as_bytes ? as_message_bytes(type, payload) : ip_deserialize(type, payload);
    if (!as_bytes)
        Py_DECREF(payload);
    if (msg == NULL)
        return leave(self, NULL);
    PyObject *one = PyTuple_Pack(1, msg);
    Py_DECREF(msg);
    return leave(self, one);
}

/* _bell(0, ...): an asyncio loop's bell on the event of messages arriving
 * at this end (ip_bell_py).  The end of the stream rings nothing: a waiter
 * watches the notification pipe's read side for the hang-up as well. */
static PyObject *ConnectionCore_bell(ConnectionCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (ip_bell_which(args, nargs, 0) < 0 || enter(self) < 0)
        return NULL;
    if (check_readable(self) < 0)
        return leave(self, NULL);
    return leave(self, ip_bell_py(&self->rx.view.ring->put_ev, args + 1, nargs - 1));
}

static PyObject *ConnectionCore_recv_bytes_into(ConnectionCore *self, PyObject *const *args,
                                                Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"buf", "offset"};
    PyObject *vals[2] = {NULL, NULL};
    if (ip_parse_args("recv_bytes_into", args, nargs, kwnames, names, 2, 1, vals) < 0)
        return NULL;
    if (enter(self) < 0)
        return NULL;
    if (check_readable(self) < 0)
        return leave(self, NULL);
    Py_buffer view;
    if (PyObject_GetBuffer(vals[0], &view, PyBUF_WRITABLE) < 0) {
        /* Checked before anything is taken, so no message is lost. */
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "recv_bytes_into() needs a writable buffer, not %.100s",
                         Py_TYPE(vals[0])->tp_name);
        }
        return leave(self, NULL);
    }
    PyObject *res = NULL;
    Py_ssize_t offset = 0;
    if (vals[1] && (offset = PyLong_AsSsize_t(vals[1])) == -1 && PyErr_Occurred())
        goto done;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        goto done;
    }
    if (offset > view.len) {
        PyErr_SetString(PyExc_ValueError, "offset too large");
        goto done;
    }
    uint32_t type;
    PyObject *payload = take_one(self, UINT64_MAX, &type);
    PyObject *msg = payload ? as_message_bytes(type, payload) : NULL;
    if (msg == NULL)
        goto done;
    Py_ssize_t size = PyBytes_GET_SIZE(msg);
    if (size > view.len - offset) {
        /* As multiprocessing: the message is gone from the pipe, and comes
         * back whole inside the exception. */
        PyErr_SetObject(ip_state.BufferTooShort, msg);
    } else {
        memcpy((char *)view.buf + offset, PyBytes_AS_STRING(msg), (size_t)size);
        res = PyLong_FromSsize_t(size);
    }
    Py_DECREF(msg);
done:
    PyBuffer_Release(&view);
    return leave(self, res);
}

/* Whether a timeout is a number below zero, which multiprocessing's poll()
 * takes as "look without waiting".  Anything that is not a number is left
 * to ip_deadline_init to refuse. */
static int negative_timeout(PyObject *timeout)
{
    if (timeout == Py_None || !PyNumber_Check(timeout))
        return 0;
    double secs = PyFloat_AsDouble(timeout);
    if (secs == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return secs < 0;
}

static PyObject *ConnectionCore_poll(ConnectionCore *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *zero = PyFloat_FromDouble(0.0);
    if (zero == NULL)
        return NULL;
    PyObject *vals[1] = {zero};
    ip_deadline_t d;
    int rc = ip_parse_args("poll", args, nargs, kwnames, names, 1, 0, vals);
    if (rc == 0)
        rc = ip_deadline_init(&d, !negative_timeout(vals[0]), vals[0]);
    Py_DECREF(zero);
    if (rc < 0 || enter(self) < 0)
        return NULL;
    if (check_readable(self) < 0)
        return leave(self, NULL);
    if (self->held != NULL)
        return leave(self, Py_NewRef(Py_True));
    rc = ip_channel_wait_ready(&self->rx, &d);
    if (rc == IP_WAIT_ERROR)
        return leave(self, NULL);
    /* Keeps a watched fileno() honest after a race. */
    if (rc == IP_WAIT_TIMEOUT && rx_emptied(self) < 0)
        return leave(self, NULL);
    return leave(self, PyBool_FromLong(rc == IP_WAIT_DONE));
}

/* ------------------------------------------------------------------ */
/* the rest                                                            */

static PyObject *ConnectionCore_fileno(ConnectionCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    if (!self->readable)
        return leave(self, PyLong_FromLong(self->wfd));
    ip_pipe_end_t *e = &self->hdr->ends[self->end];
    if (!self->synced) {
        __atomic_store_n(&e->armed, 1, __ATOMIC_SEQ_CST);
        if (resync_end(self) < 0)
            return leave(self, NULL);
        self->synced = 1;
    }
    return leave(self, PyLong_FromLong(self->rfd));
}

static PyObject *ConnectionCore_close(ConnectionCore *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->closed) {
        self->closed = 1;
        if (self->active == 0)
            release_resources(self);
    }
    Py_RETURN_NONE;
}

static PyObject *ConnectionCore_after_fork(ConnectionCore *self, PyObject *Py_UNUSED(ignored))
{
    /* Only the forking thread exists in the child: no call is in progress. */
    self->active = 0;
    Py_RETURN_NONE;
}

static PyObject *get_closed(ConnectionCore *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *get_readable(ConnectionCore *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->readable);
}

static PyObject *get_writable(ConnectionCore *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->writable);
}

static PyObject *get_handles(ConnectionCore *self, void *Py_UNUSED(c))
{
    if (self->closed)
        return closed_error(), NULL;
    return Py_BuildValue("(iiiiiiK)", self->fd, self->rfd, self->wfd, self->end, self->readable,
                         self->writable, (unsigned long long)self->uid);
}

static PyObject *get_uid(ConnectionCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->released ? 0 : self->uid);
}

PyDoc_STRVAR(send_doc,
"send($self, obj, /)\n--\n\n"
"Send obj to the other end.  It is serialized here (an unpicklable object\n"
"raises at once) and never waits: the shared ring grows.  BrokenPipeError\n"
"once every process holding the other end has closed it or died.  A signal\n"
"handler's exception raised while the other end's fileno() readiness is\n"
"updated comes after the message went in.  A damaged pipe raises\n"
"interproc.SegmentError.");
PyDoc_STRVAR(recv_doc,
"recv($self, /)\n--\n\n"
"Return the next object sent from the other end, waiting for one.  The GIL\n"
"is released while waiting and Ctrl-C interrupts the wait.  EOFError once\n"
"nothing is left and every process holding the other end has closed it or\n"
"died (SIGKILL included): it never hangs on a dead peer.  Interrupted by a\n"
"signal handler's exception after the message was taken, it keeps the\n"
"message for the next call.");
PyDoc_STRVAR(send_bytes_doc,
"send_bytes($self, buf, offset=0, size=None)\n--\n\n"
"Send size bytes of the bytes-like object buf, starting at offset, as one\n"
"message.");
PyDoc_STRVAR(recv_bytes_doc,
"recv_bytes($self, maxlength=None)\n--\n\n"
"Return the next message as bytes.  A message longer than maxlength raises\n"
"OSError and closes this handle, as in multiprocessing (the message stays\n"
"in the pipe).  EOFError as recv().");
PyDoc_STRVAR(recv_bytes_into_doc,
"recv_bytes_into($self, buf, offset=0)\n--\n\n"
"Read the next message into the writable buffer buf at offset and return\n"
"its length.  If it does not fit, multiprocessing.BufferTooShort is raised\n"
"with the whole message as its first argument.");
PyDoc_STRVAR(poll_doc,
"poll($self, timeout=0.0)\n--\n\n"
"Whether recv() would return without waiting: a message is there, or the\n"
"other end is gone.  Waits up to timeout seconds (None: for ever; below\n"
"zero: not at all, as multiprocessing).");
PyDoc_STRVAR(fileno_doc,
"fileno($self, /)\n--\n\n"
"A descriptor that is readable while messages wait here or the other end\n"
"is gone, for select(), selectors, multiprocessing.connection.wait() and\n"
"asyncio.  Asking for it turns kernel notification on for this end, which\n"
"costs a syscall per empty-to-non-empty change from then on.");

static PyMethodDef ConnectionCore_methods[] = {
    {"send", (PyCFunction)ConnectionCore_send, METH_O, send_doc},
    {"recv", (PyCFunction)ConnectionCore_recv, METH_NOARGS, recv_doc},
    {"send_bytes", (PyCFunction)(void (*)(void))ConnectionCore_send_bytes,
     METH_FASTCALL | METH_KEYWORDS, send_bytes_doc},
    {"recv_bytes", (PyCFunction)(void (*)(void))ConnectionCore_recv_bytes,
     METH_FASTCALL | METH_KEYWORDS, recv_bytes_doc},
    {"recv_bytes_into", (PyCFunction)(void (*)(void))ConnectionCore_recv_bytes_into,
     METH_FASTCALL | METH_KEYWORDS, recv_bytes_into_doc},
    {"poll", (PyCFunction)(void (*)(void))ConnectionCore_poll, METH_FASTCALL | METH_KEYWORDS,
     poll_doc},
    {"fileno", (PyCFunction)ConnectionCore_fileno, METH_NOARGS, fileno_doc},
    {"close", (PyCFunction)ConnectionCore_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose this handle.  Later calls on it raise OSError."},
    {"_after_fork", (PyCFunction)ConnectionCore_after_fork, METH_NOARGS, NULL},
    {"_recv_now", (PyCFunction)(void (*)(void))ConnectionCore_recv_now, METH_FASTCALL, NULL},
    {"_bell", (PyCFunction)(void (*)(void))ConnectionCore_bell, METH_FASTCALL, NULL},
    {"_set_handover_hook", (PyCFunction)ConnectionCore_set_handover_hook, METH_O | METH_STATIC, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ConnectionCore_getset[] = {
    {"closed", (getter)get_closed, NULL, "True once close() was called.", NULL},
    {"readable", (getter)get_readable, NULL, "True if this end can receive.", NULL},
    {"writable", (getter)get_writable, NULL, "True if this end can send.", NULL},
    {"_handles", (getter)get_handles, NULL, NULL, NULL},
    {"_uid", (getter)get_uid, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ip_ConnectionCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "interproc._core.ConnectionCore",
    .tp_basicsize = sizeof(ConnectionCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "ConnectionCore(fd, end, readable, writable, rfd, wfd, capacity=-1)\n--\n\n"
              "One end of a pipe segment.  Takes ownership of the descriptors, also\n"
              "when it raises.  With capacity >= 0 it lays out a new segment.",
    .tp_new = ConnectionCore_new,
    .tp_dealloc = (destructor)ConnectionCore_dealloc,
    .tp_methods = ConnectionCore_methods,
    .tp_getset = ConnectionCore_getset,
    .tp_weaklistoffset = offsetof(ConnectionCore, weakreflist),
};
