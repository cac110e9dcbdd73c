/* SyncCore: the C half of Lock, RLock, Semaphore, BoundedSemaphore and
 * Event.  Each lives in a one-page segment: a few words and an event count.
 *
 * A lock's state is one 64-bit word: 0 when free, else the holder's process
 * token, (start time << 22) | pid, which names one process for the life of
 * the machine (a pid alone may be reused).  Taking and giving back the lock
 * is one atomic operation on that word, so any thread or process may
 * release a Lock, as with multiprocessing's.  A waiter that has spun and is
 * about to sleep asks whether the holder is still alive; if it died, the
 * waiter takes the lock over with a compare-and-swap from the dead token,
 * which only one waiter can win.  No pthread mutex is involved, because a
 * robust mutex may only be released by the thread that locked it.
 */
#include "interproc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PID_BITS 22
#define PID_MASK ((1ull << PID_BITS) - 1)

PyObject *ip_OwnerDiedWarning;

typedef struct {
    PyObject_HEAD
    ip_sync_hdr_t *hdr;
    size_t map_len;
    int fd;
    int kind;
    int closed;
    int released;
    int active;
    int owner_died; /* the last acquisition here took over from a dead holder */
    int segkind;    /* the segment's own kind; `kind` is how it behaves */
    PyObject *weakreflist;
} SyncCore;

/* ------------------------------------------------------------------ */
/* process tokens                                                      */

static uint64_t self_token;

static void forget_token(void)
{
    self_token = 0; /* a forked child is another process */
}

/* Reads a process's start time (in clock ticks since boot) and whether it
 * is still running (not a zombie).  -1 if it cannot be read: it is gone. */
static int process_start(pid_t pid, uint64_t *start, int *running)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return -1;
    char state = p[2];
    *running = state != 'Z' && state != 'X' && state != 'x';
    p += 2;
    /* state is field 3; starttime is field 22 */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return -1;
        p++;
    }
    *start = strtoull(p, NULL, 10);
    return 0;
}

static uint64_t my_token(void)
{
    if (self_token == 0) {
        pid_t pid = getpid();
        uint64_t start = 0;
        int running;
        if (process_start(pid, &start, &running) < 0)
            start = 0;
        self_token = ((start << PID_BITS) | ((uint64_t)pid & PID_MASK)) ?: 1;
    }
    return self_token;
}

/* Whether the process a token names still runs. */
static int token_alive(uint64_t token)
{
    pid_t pid = (pid_t)(token & PID_MASK);
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) == -1 && errno == ESRCH)
        return 0;
    uint64_t start;
    int running;
    if (process_start(pid, &start, &running) < 0) {
        /* Unreadable: gone since kill() looked, or not ours to read.  Only
         * the kernel's word that it is gone counts as death: a live holder
         * taken for dead would break mutual exclusion. */
        return !(kill(pid, 0) == -1 && errno == ESRCH);
    }
    if (!running)
        return 0;
    return ((start << PID_BITS) >> PID_BITS) == (token >> PID_BITS);
}

/* Stricter than !token_alive(): gone by the kernel's word, or a zombie.  A
 * start time that does not match, or an entry that cannot be read, is not
 * taken as proof. */
static int surely_dead(uint64_t token)
{
    pid_t pid = (pid_t)(token & PID_MASK);
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) == -1 && errno == ESRCH)
        return 1;
    uint64_t start;
    int running;
    return process_start(pid, &start, &running) == 0 && !running;
}

static inline uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline int cas(uint64_t *p, uint64_t expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------------ */
/* lifetime                                                            */

static void release_resources(SyncCore *self)
{
    if (self->released)
        return;
    self->released = 1;
    if (self->hdr) {
        munmap(self->hdr, self->map_len);
        self->hdr = NULL;
    }
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
}

static int closed_error(void)
{
    PyErr_SetString(PyExc_ValueError, "the synchronization object is closed");
    return -1;
}

static int enter(SyncCore *self)
{
    if (self->closed)
        return closed_error();
    self->active++;
    return 0;
}

static PyObject *leave(SyncCore *self, PyObject *result)
{
    if (--self->active == 0 && self->closed)
        release_resources(self);
    return result;
}

static int is_lock(int kind)
{
    return kind == IP_KIND_LOCK || kind == IP_KIND_RLOCK;
}

static int is_semaphore(int kind)
{
    return kind == IP_KIND_SEMAPHORE || kind == IP_KIND_BOUNDED_SEMAPHORE;
}

/* A Value's or Array's segment behaves as an RLock: its lock. */
static int semantic_kind(int kind)
{
    return kind == IP_KIND_VALUE || kind == IP_KIND_ARRAY || kind == IP_KIND_CONDITION
               ? IP_KIND_RLOCK
               : kind;
}

static PyObject *SyncCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "kind", "value", "maxvalue", "create", "data_size", "meta", NULL};
    int fd, kind, create = 0;
    long long value = 0, maxvalue = 0, data_size = 0;
    Py_buffer meta = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ii|LLpLy*:SyncCore", kwlist, &fd, &kind, &value,
                                     &maxvalue, &create, &data_size, &meta))
        return NULL;
    Py_ssize_t meta_len = meta.buf ? meta.len : 0;
    uint8_t meta_copy[IP_SYNC_META_MAX];
    if (meta_len > IP_SYNC_META_MAX) {
        PyBuffer_Release(&meta);
        close(fd);
        PyErr_Format(PyExc_ValueError, "type description too long (%zd bytes)", meta_len);
        return NULL;
    }
    if (meta_len)
        memcpy(meta_copy, meta.buf, (size_t)meta_len);
    if (meta.buf)
        PyBuffer_Release(&meta);
    SyncCore *self = (SyncCore *)type->tp_alloc(type, 0);
    if (self == NULL) {
        close(fd);
        return NULL;
    }
    self->fd = fd; /* ours from here on, also when we fail */
    self->kind = semantic_kind(kind);
    self->segkind = kind;
    if (!is_lock(self->kind) && !is_semaphore(kind) && kind != IP_KIND_EVENT
        && kind != IP_KIND_BARRIER) {
        PyErr_Format(PyExc_ValueError, "unknown synchronization kind %d", kind);
        goto fail;
    }
    uint64_t hsize = IP_SYNC_HDR_SIZE;
    if (create) {
        if (value < 0 || maxvalue < 0) {
            PyErr_SetString(PyExc_ValueError, "semaphore initial value must be >= 0");
            goto fail;
        }
        if (data_size < 0 || data_size > (1ll << 40)) {
            PyErr_Format(PyExc_ValueError, "bad data size %lld", data_size);
            goto fail;
        }
        uint64_t pages = ((uint64_t)data_size + IP_PAGE - 1) / IP_PAGE * IP_PAGE;
        ip_sync_hdr_t *h = ip_segment_create(fd, (uint32_t)kind, hsize, hsize + pages);
        if (h == NULL)
            goto fail;
        self->hdr = h;
        self->map_len = (size_t)(hsize + pages);
        h->value = (uint64_t)value;
        h->maxvalue = (uint64_t)maxvalue;
        h->data_size = (uint64_t)data_size;
        h->meta_len = (uint32_t)meta_len;
        if (meta_len)
            memcpy(h->meta, meta_copy, (size_t)meta_len);
        ip_segment_publish(&h->seg);
    } else {
        uint64_t file_size;
        self->hdr = ip_segment_attach(fd, (uint32_t)kind, hsize, &self->map_len, &file_size, NULL);
        if (self->hdr == NULL)
            goto fail;
        if (self->hdr->meta_len > IP_SYNC_META_MAX
            || self->hdr->data_size > self->map_len - hsize) {
            PyErr_SetString(ip_SegmentError, "shared value header is corrupt (bad sizes)");
            goto fail;
        }
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static void SyncCore_dealloc(SyncCore *self)
{
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    release_resources(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------------ */
/* acquiring                                                           */

typedef struct {
    SyncCore *self;
    uint64_t token;
    uint64_t thread;
    int recovered;
    int probe; /* not going to wait: look at the holder's health at once */
} acquire_ctx;

/* Waiter slots: taken for the length of a wait that did not succeed at
 * once.  A slot of a process that died is reused and not counted. */
static int take_waiter_slot(ip_sync_hdr_t *h, int recycle)
{
    uint64_t token = my_token();
    for (int pass = 0; pass < 1 + recycle; pass++) {
        for (int i = 0; i < IP_SYNC_WAITER_SLOTS; i++) {
            uint64_t cur = ld(&h->waiting[i]);
            /* A dead waiter's slot is reused only when no free one is left. */
            if ((cur == 0 || (pass && cur != token && !token_alive(cur)))
                && cas(&h->waiting[i], cur, token))
                return i;
        }
    }
    return -1; /* all taken: this waiter goes uncounted */
}

static void give_waiter_slot(ip_sync_hdr_t *h, int slot)
{
    if (slot >= 0)
        __atomic_store_n(&h->waiting[slot], 0, __ATOMIC_RELEASE);
}

static unsigned live_waiters(ip_sync_hdr_t *h)
{
    unsigned n = 0;
    for (int i = 0; i < IP_SYNC_WAITER_SLOTS; i++) {
        uint64_t cur = ld(&h->waiting[i]);
        if (cur == 0)
            continue;
        if (cur == my_token() || token_alive(cur))
            n++;
    }
    return n;
}

/* Waits with a waiter slot taken, unless the first try succeeds. */
static int wait_counted(ip_sync_hdr_t *h, const ip_deadline_t *d, ip_attempt_fn attempt, void *ctx)
{
    const uint64_t *watch;
    uint64_t watch_val;
    int rc = attempt(ctx, ((acquire_ctx *)ctx)->probe, &watch, &watch_val);
    if (rc != 0 || ip_deadline_passed(d))
        return rc;
    int slot = take_waiter_slot(h, 1);
    rc = ip_wait_for(&h->ev, d, attempt, ctx);
    give_waiter_slot(h, slot);
    return rc;
}

static int lock_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    acquire_ctx *c = arg;
    SyncCore *self = c->self;
    if (self->closed)
        return closed_error();
    ip_sync_hdr_t *h = self->hdr;
    uint64_t cur = ld(&h->owner);
    if (cur == 0 && cas(&h->owner, 0, c->token))
        return 1;
    /* Looking is a syscall or two: only once spinning has not helped, or
     * when the caller will not wait at all. */
    if ((before_sleep || c->probe) && cur != 0 && !token_alive(cur)
        && cas(&h->owner, cur, c->token)) {
        c->recovered = 1;
        return 1;
    }
    *watch = &h->owner;
    *watch_val = ld(&h->owner);
    return 0;
}

static int semaphore_attempt(void *arg, int before_sleep, const uint64_t **watch,
                             uint64_t *watch_val)
{
    SyncCore *self = ((acquire_ctx *)arg)->self;
    (void)before_sleep;
    if (self->closed)
        return closed_error();
    uint64_t *value = &self->hdr->value;
    uint64_t v = ld(value);
    while (v > 0) {
        if (__atomic_compare_exchange_n(value, &v, v - 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return 1;
    }
    *watch = value;
    *watch_val = 0;
    return 0;
}

static int event_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    SyncCore *self = ((acquire_ctx *)arg)->self;
    (void)before_sleep;
    if (self->closed)
        return closed_error();
    if (ld(&self->hdr->value))
        return 1;
    *watch = &self->hdr->value;
    *watch_val = 0;
    return 0;
}

static const char *const acquire_names[] = {"block", "timeout"};

/* acquire(block=True, timeout=None) for every kind but Event. */
static PyObject *SyncCore_acquire(SyncCore *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    /* The uncontended Lock, first and with nothing else: it is the case that
     * has to be as cheap as multiprocessing's. */
    if (nargs == 0 && kwnames == NULL && is_lock(self->kind) && !self->closed) {
        ip_sync_hdr_t *h = self->hdr;
        uint64_t token = my_token();
        if (self->kind == IP_KIND_LOCK) {
            if (cas(&h->owner, 0, token)) {
                self->owner_died = 0;
                Py_RETURN_TRUE;
            }
        } else {
            uint64_t thread = (uint64_t)PyThread_get_thread_ident();
            uint64_t owner = ld(&h->owner);
            if (owner == token && ld(&h->thread) == thread) {
                h->count++;
                Py_RETURN_TRUE;
            }
            if (owner == 0 && cas(&h->owner, 0, token)) {
                __atomic_store_n(&h->thread, thread, __ATOMIC_RELEASE);
                h->count = 1;
                self->owner_died = 0;
                Py_RETURN_TRUE;
            }
        }
    }
    PyObject *vals[2] = {Py_True, Py_None};
    if (ip_parse_args("acquire", args, nargs, kwnames, acquire_names, 2, 0, vals) < 0)
        return NULL;
    int block = PyObject_IsTrue(vals[0]);
    if (block < 0)
        return NULL;
    ip_deadline_t d;
    /* As multiprocessing: a timeout only counts when blocking, and a
     * negative one means "do not wait". */
    PyObject *timeout = vals[1];
    if (block && timeout != Py_None) {
        double t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        if (t < 0)
            timeout = NULL, block = 0;
    }
    if (ip_deadline_init(&d, block, timeout) < 0 || enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    acquire_ctx c = {self, 0, 0, 0, 0};
    if (is_lock(self->kind)) {
        c.token = my_token();
        if (self->kind == IP_KIND_RLOCK) {
            c.thread = (uint64_t)PyThread_get_thread_ident();
            if (ld(&h->owner) == c.token && ld(&h->thread) == c.thread) {
                h->count++;
                return leave(self, Py_NewRef(Py_True));
            }
        }
    }
    c.probe = ip_deadline_passed(&d);
    ip_attempt_fn attempt = is_lock(self->kind) ? lock_attempt : semaphore_attempt;
    int rc = wait_counted(h, &d, attempt, &c);
    if (rc == IP_WAIT_ERROR)
        return leave(self, NULL);
    if (rc == IP_WAIT_TIMEOUT)
        return leave(self, Py_NewRef(Py_False));
    if (is_lock(self->kind)) {
        if (self->kind == IP_KIND_RLOCK) {
            __atomic_store_n(&h->thread, c.thread, __ATOMIC_RELEASE);
            h->count = 1;
        }
        self->owner_died = c.recovered;
        if (c.recovered) {
            __atomic_add_fetch(&h->recoveries, 1, __ATOMIC_RELAXED);
            if (PyErr_WarnEx(ip_OwnerDiedWarning,
                             "the previous holder of this lock died holding it; the data it "
                             "protects may be half-updated",
                             1) < 0) {
                /* Warnings turned into errors: the lock is ours, give it back. */
                h->thread = 0;
                h->count = 0;
                __atomic_store_n(&h->owner, 0, __ATOMIC_RELEASE);
                ip_event_signal(&h->ev, 1);
                return leave(self, NULL);
            }
        }
    }
    return leave(self, Py_NewRef(Py_True));
}

static PyObject *SyncCore_release(SyncCore *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"n"};
    PyObject *vals[1] = {NULL};
    if ((nargs || kwnames) && ip_parse_args("release", args, nargs, kwnames, names, 1, 0, vals) < 0)
        return NULL;
    Py_ssize_t n = 1;
    if (vals[0] && is_lock(self->kind)) {
        PyErr_SetString(PyExc_TypeError, "release() takes no arguments (1 given)");
        return NULL;
    }
    if (vals[0] && (n = PyLong_AsSsize_t(vals[0])) == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "n must be one or more");
        return NULL;
    }
    if (enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    if (self->kind == IP_KIND_RLOCK) {
        if (ld(&h->owner) != my_token() || ld(&h->thread) != (uint64_t)PyThread_get_thread_ident()) {
            PyErr_SetString(PyExc_AssertionError, "attempt to release recursive lock not owned by thread");
            return leave(self, NULL);
        }
        if (--h->count > 0)
            return leave(self, Py_NewRef(Py_None));
        h->thread = 0;
        __atomic_exchange_n(&h->owner, 0, __ATOMIC_SEQ_CST);
        ip_event_wake(&h->ev, 1);
    } else if (self->kind == IP_KIND_LOCK) {
        if (__atomic_exchange_n(&h->owner, 0, __ATOMIC_SEQ_CST) == 0) {
            PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
            return leave(self, NULL);
        }
        ip_event_wake(&h->ev, 1);
    } else {
        uint64_t v = ld(&h->value);
        for (;;) {
            if (self->kind == IP_KIND_BOUNDED_SEMAPHORE && v + (uint64_t)n > h->maxvalue) {
                PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
                return leave(self, NULL);
            }
            if (__atomic_compare_exchange_n(&h->value, &v, v + (uint64_t)n, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                break;
        }
        ip_event_signal(&h->ev, (int)(n < INT32_MAX ? n : INT32_MAX));
    }
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *SyncCore_exit(SyncCore *self, PyObject *Py_UNUSED(args))
{
    return SyncCore_release(self, NULL, 0, NULL);
}

static PyObject *SyncCore_locked(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    int held = is_lock(self->kind) ? ld(&self->hdr->owner) != 0 : ld(&self->hdr->value) == 0;
    return leave(self, PyBool_FromLong(held));
}

static PyObject *SyncCore_get_value(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    return leave(self, PyLong_FromUnsignedLongLong(ld(&self->hdr->value)));
}

/* ------------------------------------------------------------------ */
/* Event                                                               */

static PyObject *SyncCore_set(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    __atomic_store_n(&self->hdr->value, 1, __ATOMIC_SEQ_CST);
    ip_event_signal(&self->hdr->ev, INT32_MAX);
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *SyncCore_clear(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    __atomic_store_n(&self->hdr->value, 0, __ATOMIC_SEQ_CST);
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *SyncCore_is_set(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    return leave(self, PyBool_FromLong(ld(&self->hdr->value) != 0));
}

static PyObject *SyncCore_wait(SyncCore *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *vals[1] = {Py_None};
    if (ip_parse_args("wait", args, nargs, kwnames, names, 1, 0, vals) < 0)
        return NULL;
    ip_deadline_t d;
    PyObject *timeout = vals[0];
    if (timeout != Py_None) {
        double t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        if (t < 0)
            timeout = PyFloat_FromDouble(0.0); /* threading.Event treats it as 0 */
        else
            Py_INCREF(timeout);
    } else {
        Py_INCREF(timeout);
    }
    int rc = ip_deadline_init(&d, 1, timeout);
    Py_DECREF(timeout);
    if (rc < 0 || enter(self) < 0)
        return NULL;
    acquire_ctx c = {self, 0, 0, 0, 0};
    rc = wait_counted(self->hdr, &d, event_attempt, &c);
    if (rc == IP_WAIT_ERROR)
        return leave(self, NULL);
    return leave(self, PyBool_FromLong(rc == IP_WAIT_DONE));
}

/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* Condition: the lock is this segment's RLock (or one the caller gives);
 * `value` packs the waiters registered and the wake tokens handed out, so
 * that notify and a timing-out waiter settle who is woken in one CAS. */

#define HIGH(w) ((w) >> 32)
#define LOW(w) ((w)&0xffffffffull)

static PyObject *SyncCore_cond_register(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    __atomic_add_fetch(&self->hdr->value, 1ull << 32, __ATOMIC_SEQ_CST);
    return leave(self, Py_NewRef(Py_None));
}

static int token_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    SyncCore *self = ((acquire_ctx *)arg)->self;
    (void)before_sleep;
    if (self->closed)
        return closed_error();
    uint64_t *w = &self->hdr->value;
    uint64_t cur = ld(w);
    while (LOW(cur) > 0) {
        if (__atomic_compare_exchange_n(w, &cur, cur - 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return 1;
    }
    *watch = w;
    *watch_val = cur;
    return 0;
}

/* A registered waiter that stops waiting (timeout, signal, bad argument):
 * withdraw, unless a token came for it meanwhile, which is then its to
 * take.  Returns whether it was notified after all. */
static int cond_withdraw(SyncCore *self)
{
    uint64_t *w = &self->hdr->value;
    uint64_t cur = ld(w);
    int woken = 0;
    for (;;) {
        uint64_t next;
        if (HIGH(cur) > 0)
            next = cur - (1ull << 32);
        else if (LOW(cur) > 0)
            next = cur - 1, woken = 1;
        else
            break;
        if (__atomic_compare_exchange_n(w, &cur, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            break;
        woken = 0;
    }
    return woken;
}

static PyObject *SyncCore_cond_wait(SyncCore *self, PyObject *timeout)
{
    if (enter(self) < 0)
        return NULL;
    ip_deadline_t d;
    if (ip_deadline_init(&d, 1, timeout) < 0) {
        cond_withdraw(self);
        return leave(self, NULL);
    }
    acquire_ctx c = {self, 0, 0, 0, 0};
    int rc = ip_wait_for(&self->hdr->ev, &d, token_attempt, &c);
    if (rc == IP_WAIT_DONE)
        return leave(self, Py_NewRef(Py_True));
    int woken = cond_withdraw(self);
    if (rc == IP_WAIT_ERROR)
        return leave(self, NULL);
    return leave(self, PyBool_FromLong(woken));
}

static PyObject *SyncCore_cond_notify(SyncCore *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (enter(self) < 0)
        return NULL;
    uint64_t *w = &self->hdr->value;
    uint64_t cur = ld(w), give;
    do {
        give = n < 0 || (uint64_t)n > HIGH(cur) ? HIGH(cur) : (uint64_t)n;
    } while (give && !__atomic_compare_exchange_n(w, &cur, cur - (give << 32) + give, 0,
                                                  __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    if (give)
        ip_event_signal(&self->hdr->ev, INT32_MAX);
    return leave(self, PyLong_FromUnsignedLongLong(give));
}

/* For Condition.wait with this segment's RLock: let go entirely and come
 * back at the same depth. */
static PyObject *SyncCore_is_owned(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    int mine = ld(&h->owner) == my_token()
               && (self->kind != IP_KIND_RLOCK || ld(&h->thread) == (uint64_t)PyThread_get_thread_ident());
    return leave(self, PyBool_FromLong(mine));
}

static PyObject *SyncCore_release_save(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    uint64_t depth = self->kind == IP_KIND_RLOCK ? h->count : 1;
    h->count = 1;
    leave(self, NULL);
    PyObject *r = SyncCore_release(self, NULL, 0, NULL);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    return PyLong_FromUnsignedLongLong(depth);
}

static PyObject *SyncCore_acquire_restore(SyncCore *self, PyObject *arg)
{
    unsigned long long depth = PyLong_AsUnsignedLongLong(arg);
    if (depth == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *r = SyncCore_acquire(self, NULL, 0, NULL);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    if (self->kind == IP_KIND_RLOCK && !self->closed)
        self->hdr->count = depth;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* Barrier: `value` packs generation, broken and the count of arrivals;
 * `count` records the last generation ended by a reset; the waiter slots
 * hold the arrived parties' tokens, so that a dead one breaks the barrier. */

#define B_BROKEN (1ull << 31)
#define B_COUNT(w) ((w) & (B_BROKEN - 1))
#define B_GEN(w) ((w) >> 32)

static PyObject *broken_error(void)
{
    PyObject *mod = PyImport_ImportModule("threading");
    if (mod) {
        PyObject *exc = PyObject_GetAttrString(mod, "BrokenBarrierError");
        Py_DECREF(mod);
        if (exc) {
            PyErr_SetNone(exc);
            Py_DECREF(exc);
        }
    }
    return NULL;
}

static void barrier_break(ip_sync_hdr_t *h)
{
    __atomic_or_fetch(&h->value, B_BROKEN, __ATOMIC_SEQ_CST);
    ip_event_signal(&h->ev, INT32_MAX);
}

/* Arrives: returns (index, generation, slot). */
static PyObject *SyncCore_barrier_arrive(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    uint64_t cur = ld(&h->value);
    for (;;) {
        if (cur & B_BROKEN) {
            leave(self, NULL);
            return broken_error();
        }
        if (__atomic_compare_exchange_n(&h->value, &cur, cur + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
    }
    /* Dead parties' slots are kept: the waiters' checks must find them. */
    int slot = take_waiter_slot(h, 0);
    return leave(self, Py_BuildValue("(KKi)", (unsigned long long)B_COUNT(cur),
                                     (unsigned long long)B_GEN(cur), slot));
}

typedef struct {
    SyncCore *self;
    uint64_t gen;
} barrier_ctx;

static int barrier_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    barrier_ctx *c = arg;
    SyncCore *self = c->self;
    if (self->closed)
        return closed_error();
    ip_sync_hdr_t *h = self->hdr;
    uint64_t cur = ld(&h->value);
    if (B_GEN(cur) != c->gen) {
        if (ld(&h->count) == c->gen + 1) /* ended by a reset */
            return broken_error(), -1;
        return 1;
    }
    if (cur & B_BROKEN)
        return broken_error(), -1;
    if (before_sleep) {
        for (int i = 0; i < IP_SYNC_WAITER_SLOTS; i++) {
            uint64_t t = ld(&h->waiting[i]);
            /* Only the kernel's word that the pid is gone: breaking a healthy
             * barrier is worse than noticing a death once it is reaped. */
            if (t && t != my_token() && surely_dead(t) && ld(&h->waiting[i]) == t) {
                barrier_break(h); /* a party died waiting: nobody else may hang */
                return broken_error(), -1;
            }
        }
    }
    *watch = &h->value;
    *watch_val = cur;
    return 0;
}

static PyObject *SyncCore_barrier_wait(SyncCore *self, PyObject *args)
{
    unsigned long long gen;
    int slot;
    PyObject *timeout;
    if (!PyArg_ParseTuple(args, "KiO", &gen, &slot, &timeout))
        return NULL;
    if (enter(self) < 0)
        return NULL;
    ip_deadline_t d;
    if (ip_deadline_init(&d, 1, timeout) < 0) {
        /* Already arrived: a party that cannot wait must not be counted. */
        give_waiter_slot(self->hdr, slot);
        barrier_break(self->hdr);
        return leave(self, NULL);
    }
    barrier_ctx c = {self, gen};
    int rc = ip_wait_for(&self->hdr->ev, &d, barrier_attempt, &c);
    give_waiter_slot(self->hdr, slot);
    if (rc == IP_WAIT_TIMEOUT) {
        barrier_break(self->hdr); /* as threading: a timeout breaks the barrier */
        leave(self, NULL);
        return broken_error();
    }
    if (rc == IP_WAIT_ERROR) {
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
            barrier_break(self->hdr);
        return leave(self, NULL);
    }
    return leave(self, Py_NewRef(Py_None));
}

/* The last arrival, after the action: the next generation begins. */
static PyObject *SyncCore_barrier_release(SyncCore *self, PyObject *slot_obj)
{
    int slot = (int)PyLong_AsLong(slot_obj);
    if (slot == -1 && PyErr_Occurred())
        return NULL;
    if (enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    give_waiter_slot(h, slot);
    uint64_t cur = ld(&h->value);
    while (!__atomic_compare_exchange_n(&h->value, &cur, (B_GEN(cur) + 1) << 32, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
    }
    ip_event_signal(&h->ev, INT32_MAX);
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *SyncCore_barrier_abort(SyncCore *self, PyObject *slot_obj)
{
    if (enter(self) < 0)
        return NULL;
    if (slot_obj != Py_None) {
        int slot = (int)PyLong_AsLong(slot_obj);
        if (slot == -1 && PyErr_Occurred())
            return leave(self, NULL);
        give_waiter_slot(self->hdr, slot);
    }
    barrier_break(self->hdr);
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *SyncCore_barrier_reset(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    for (int i = 0; i < IP_SYNC_WAITER_SLOTS; i++) { /* forget parties that died */
        uint64_t t = ld(&h->waiting[i]);
        if (t && t != my_token() && !token_alive(t))
            cas(&h->waiting[i], t, 0);
    }
    uint64_t cur = ld(&h->value);
    /* Waiters of the ending generation see it ended by a reset: broken for them. */
    __atomic_store_n(&h->count, B_GEN(cur) + 1, __ATOMIC_SEQ_CST);
    while (!__atomic_compare_exchange_n(&h->value, &cur, (B_GEN(cur) + 1) << 32, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        __atomic_store_n(&h->count, B_GEN(cur) + 1, __ATOMIC_SEQ_CST);
    ip_event_signal(&h->ev, INT32_MAX);
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *SyncCore_barrier_state(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    uint64_t cur = ld(&self->hdr->value);
    return leave(self, Py_BuildValue("(KO)", (unsigned long long)B_COUNT(cur),
                                     (cur & B_BROKEN) ? Py_True : Py_False));
}

static PyObject *SyncCore_statistics(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    PyObject *waiters = PyLong_FromUnsignedLong(live_waiters(h));
    PyObject *d = NULL;
    if (waiters == NULL)
        return leave(self, NULL);
    if (is_lock(self->kind)) {
        uint64_t owner = ld(&h->owner);
        PyObject *pid = owner ? PyLong_FromUnsignedLongLong(owner & PID_MASK) : Py_NewRef(Py_None);
        if (pid && self->segkind == IP_KIND_CONDITION)
            d = Py_BuildValue("{s:O,s:N,s:K,s:N,s:K,s:K}", "locked", owner ? Py_True : Py_False,
                              "owner_pid", pid, "recursion", (unsigned long long)(owner ? h->count : 0),
                              "waiters", Py_NewRef(waiters), "owner_deaths",
                              (unsigned long long)ld(&h->recoveries), "condition_waiters",
                              (unsigned long long)HIGH(ld(&h->value)));
        else if (pid)
            d = Py_BuildValue("{s:O,s:N,s:K,s:N,s:K}", "locked", owner ? Py_True : Py_False,
                              "owner_pid", pid, "recursion",
                              (unsigned long long)(!owner ? 0 : self->kind == IP_KIND_RLOCK ? h->count : 1),
                              "waiters",
                              Py_NewRef(waiters), "owner_deaths",
                              (unsigned long long)ld(&h->recoveries));
    } else if (self->segkind == IP_KIND_BARRIER) {
        uint64_t cur = ld(&h->value);
        d = Py_BuildValue("{s:K,s:K,s:O,s:N}", "parties", (unsigned long long)h->maxvalue,
                          "n_waiting", (unsigned long long)B_COUNT(cur), "broken",
                          (cur & B_BROKEN) ? Py_True : Py_False, "waiters", Py_NewRef(waiters));
    } else if (is_semaphore(self->kind)) {
        d = Py_BuildValue("{s:K,s:N}", "value", (unsigned long long)ld(&h->value), "waiters",
                          Py_NewRef(waiters));
    } else {
        d = Py_BuildValue("{s:O,s:N}", "set", ld(&h->value) ? Py_True : Py_False, "waiters",
                          Py_NewRef(waiters));
    }
    Py_DECREF(waiters);
    return leave(self, d);
}

static PyObject *SyncCore_close(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->closed) {
        self->closed = 1;
        if (self->active == 0)
            release_resources(self);
    }
    Py_RETURN_NONE;
}

static PyObject *SyncCore_after_fork(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    self->active = 0;
    Py_RETURN_NONE;
}

static PyObject *get_owner_died(SyncCore *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->owner_died);
}

static PyObject *get_fd(SyncCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->fd);
}

static PyObject *get_closed(SyncCore *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *get_uid(SyncCore *self, void *Py_UNUSED(c))
{
    return self->released ? PyLong_FromLong(0) : PyLong_FromUnsignedLongLong(self->hdr->seg.uid);
}

static PyObject *get_meta(SyncCore *self, void *Py_UNUSED(c))
{
    if (self->released)
        return closed_error(), NULL;
    return PyBytes_FromStringAndSize((const char *)self->hdr->meta, self->hdr->meta_len);
}

static PyObject *get_data_size(SyncCore *self, void *Py_UNUSED(c))
{
    return self->released ? PyLong_FromLong(0) : PyLong_FromUnsignedLongLong(self->hdr->data_size);
}

static PyObject *get_maxvalue(SyncCore *self, void *Py_UNUSED(c))
{
    return self->released ? PyLong_FromLong(0) : PyLong_FromUnsignedLongLong(self->hdr->maxvalue);
}

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL | METH_KEYWORDS

static PyMethodDef SyncCore_methods[] = {
    {"_acquire", FASTCALL(SyncCore_acquire), NULL},
    {"_release", FASTCALL(SyncCore_release), NULL},
    {"_exit", (PyCFunction)SyncCore_exit, METH_VARARGS, NULL},
    {"_locked", (PyCFunction)SyncCore_locked, METH_NOARGS, NULL},
    {"_get_value", (PyCFunction)SyncCore_get_value, METH_NOARGS, NULL},
    {"_set", (PyCFunction)SyncCore_set, METH_NOARGS, NULL},
    {"_clear", (PyCFunction)SyncCore_clear, METH_NOARGS, NULL},
    {"_is_set", (PyCFunction)SyncCore_is_set, METH_NOARGS, NULL},
    {"_wait", FASTCALL(SyncCore_wait), NULL},
    {"statistics", (PyCFunction)SyncCore_statistics, METH_NOARGS,
     "statistics($self, /)\n--\n\nA dict describing the current state: who holds it, how many "
     "wait."},
    {"close", (PyCFunction)SyncCore_close, METH_NOARGS,
     "close($self, /)\n--\n\nRelease this handle; the object itself lives on in other handles."},
    {"_after_fork", (PyCFunction)SyncCore_after_fork, METH_NOARGS, NULL},
    {"_cond_register", (PyCFunction)SyncCore_cond_register, METH_NOARGS, NULL},
    {"_cond_wait", (PyCFunction)SyncCore_cond_wait, METH_O, NULL},
    {"_cond_notify", (PyCFunction)SyncCore_cond_notify, METH_O, NULL},
    {"_is_owned", (PyCFunction)SyncCore_is_owned, METH_NOARGS, NULL},
    {"_release_save", (PyCFunction)SyncCore_release_save, METH_NOARGS, NULL},
    {"_acquire_restore", (PyCFunction)SyncCore_acquire_restore, METH_O, NULL},
    {"_barrier_arrive", (PyCFunction)SyncCore_barrier_arrive, METH_NOARGS, NULL},
    {"_barrier_wait", (PyCFunction)SyncCore_barrier_wait, METH_VARARGS, NULL},
    {"_barrier_release", (PyCFunction)SyncCore_barrier_release, METH_O, NULL},
    {"_barrier_abort", (PyCFunction)SyncCore_barrier_abort, METH_O, NULL},
    {"_barrier_reset", (PyCFunction)SyncCore_barrier_reset, METH_NOARGS, NULL},
    {"_barrier_state", (PyCFunction)SyncCore_barrier_state, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef SyncCore_getset[] = {
    {"owner_died", (getter)get_owner_died, NULL,
     "True if this handle's last acquisition took the lock over from a process that died "
     "holding it.",
     NULL},
    {"_fd", (getter)get_fd, NULL, NULL, NULL},
    {"_closed", (getter)get_closed, NULL, NULL, NULL},
    {"_uid", (getter)get_uid, NULL, NULL, NULL},
    {"_maxvalue", (getter)get_maxvalue, NULL, NULL, NULL},
    {"_meta", (getter)get_meta, NULL, NULL, NULL},
    {"_data_size", (getter)get_data_size, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ip_SyncCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "interproc._core.SyncCore",
    .tp_basicsize = sizeof(SyncCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "SyncCore(fd, kind, value=0, maxvalue=0, create=False)\n--\n\n"
              "A lock, semaphore or event in a one-page segment.  Takes ownership of fd,\n"
              "also when it raises.",
    .tp_new = SyncCore_new,
    .tp_dealloc = (destructor)SyncCore_dealloc,
    .tp_methods = SyncCore_methods,
    .tp_getset = SyncCore_getset,
    .tp_weaklistoffset = offsetof(SyncCore, weakreflist),
};

uint8_t *ip_sync_data(PyObject *obj, uint64_t *size)
{
    SyncCore *self = (SyncCore *)obj;
    if (self->closed || self->released) {
        closed_error();
        return NULL;
    }
    *size = self->hdr->data_size;
    return (uint8_t *)self->hdr + IP_SYNC_HDR_SIZE;
}

int ip_sync_init_module(PyObject *m)
{
    ip_OwnerDiedWarning = PyErr_NewExceptionWithDoc(
        "interproc.OwnerDiedWarning",
        "A lock was taken over from a process that died holding it: the data it\n"
        "protects may be half-updated.",
        PyExc_RuntimeWarning, NULL);
    if (ip_OwnerDiedWarning == NULL || PyModule_AddObjectRef(m, "OwnerDiedWarning", ip_OwnerDiedWarning) < 0)
        return -1;
    if (PyType_Ready(&ip_SyncCore_Type) < 0
        || PyModule_AddObjectRef(m, "SyncCore", (PyObject *)&ip_SyncCore_Type) < 0)
        return -1;
    if (PyType_Ready(&ip_AtomicCell_Type) < 0
        || PyModule_AddObjectRef(m, "AtomicCell", (PyObject *)&ip_AtomicCell_Type) < 0)
        return -1;
    if (pthread_atfork(NULL, NULL, forget_token) != 0)
        return -1;
    return 0;
}
