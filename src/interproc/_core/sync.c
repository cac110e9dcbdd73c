/* SyncCore: the C half of Lock, RLock, Semaphore, BoundedSemaphore, Event,
 * Condition, Barrier and the lock of a Value or Array.  Each lives in a
 * segment whose header pages hold a few words and event counts.
 *
 * A lock's state is one 64-bit word: 0 when free, else the holder's
 * liveness key on this segment (wait.c): the name of an OFD lock that the
 * holding process keeps on the segment's own file, which the kernel drops
 * when the process dies.  Any process that shares the file can ask whether
 * the key is still held, whatever PID namespace it runs in, and a key is
 * never confused with a later process the way a reused pid is.  Taking and
 * giving back the lock is one atomic operation on that word, so any thread
 * or process may release a Lock, as with multiprocessing's.  A waiter that
 * has spun and is about to sleep asks whether the holder's key is still
 * held; if not, it takes the lock over with a compare-and-swap from the
 * dead key, which only one waiter can win.  No pthread mutex is involved,
 * because a robust mutex may only be released by the thread that locked it.
 *
 * Everything read from the segment may be damaged or forged by another
 * process at any time: sizes and counts that place memory are validated
 * once on attach and kept in the handle, indices are local, and a word
 * that makes no sense costs at most a wrong answer for this object.
 */
#include "interproc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Set in the owner word between taking a dead holder's lock and finishing
 * the RLock's words: until then the word names no one who may re-enter. */
#define TAKING_OVER (1ull << 63)
#define SEM_MAX ((uint64_t)INT64_MAX)

PyObject *ip_OwnerDiedWarning;

typedef struct {
    PyObject_HEAD
    ip_sync_hdr_t *hdr;
    size_t map_len;
    int fd;
    int kind;
    int segkind;    /* the segment's own kind; `kind` is how it behaves */
    int closed;
    int released;   /* fd and identity given back; the mapping may outlive them */
    int active;     /* calls in progress, which may have released the GIL */
    Py_ssize_t exports; /* buffers over the data area */
    int owner_died; /* the last acquisition here took over from a dead holder */
    ip_ident_t ident;
    /* Validated on attach (or written on create): never re-read. */
    uint64_t uid;
    uint64_t data_size;
    uint64_t maxvalue;
    PyObject *meta;
    PyObject *weakreflist;
} SyncCore;

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static uint64_t self_pid;

static void forget_pid(void)
{
    self_pid = 0; /* a forked child is another process */
}

static inline uint64_t my_pid(void)
{
    if (self_pid == 0)
        self_pid = (uint64_t)getpid();
    return self_pid;
}

static inline uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline int cas(uint64_t *p, uint64_t expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline int key_alive(SyncCore *self, uint64_t word, uint64_t mine)
{
    uint64_t key = word & IP_KEY_MASK;
    return (mine && key == mine) || ip_key_alive(self->fd, key);
}

/* ------------------------------------------------------------------ */
/* lifetime                                                            */

static void release_resources(SyncCore *self)
{
    if (!self->released) {
        self->released = 1;
        ip_ident_release(&self->ident);
        if (self->fd >= 0) {
            close(self->fd);
            self->fd = -1;
        }
    }
    /* Buffers handed out keep the data mapped until the last is released. */
    if (self->exports == 0 && self->hdr) {
        munmap(self->hdr, self->map_len);
        self->hdr = NULL;
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

/* A Value's, Array's or Condition's segment behaves as an RLock: its lock. */
static int semantic_kind(int kind)
{
    return kind == IP_KIND_VALUE || kind == IP_KIND_ARRAY || kind == IP_KIND_CONDITION
               ? IP_KIND_RLOCK
               : kind;
}

/* ------------------------------------------------------------------ */
/* Barrier state: `value` packs generation, broken and arrivals.       */

#define B_BROKEN (1ull << 31)
#define B_COUNT(w) ((w) & (B_BROKEN - 1))
#define B_GEN(w) ((w) >> 32)
#define B_MAX_PARTIES (B_BROKEN - 1)

/* ------------------------------------------------------------------ */
/* construction                                                        */

/* The fd is ours even when the arguments around it are bad. */
static void close_given_fd(PyObject *args, PyObject *kwds)
{
    PyObject *fdobj = NULL;
    if (args && PyTuple_GET_SIZE(args) > 0)
        fdobj = PyTuple_GET_ITEM(args, 0);
    else if (kwds)
        fdobj = PyDict_GetItemString(kwds, "fd");
    if (fdobj && PyLong_Check(fdobj)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(fdobj, &overflow);
        if (!overflow && v >= 0 && v <= INT_MAX)
            close((int)v);
    }
}

static int attach_check(SyncCore *self, uint32_t meta_len)
{
    const char *bad = NULL;
    if (meta_len > IP_SYNC_META_MAX || self->data_size > self->map_len - IP_SYNC_HDR_SIZE)
        bad = "bad sizes";
    else if (self->segkind == IP_KIND_BARRIER
             && (self->maxvalue < 1 || self->maxvalue > B_MAX_PARTIES))
        bad = "bad number of parties";
    else if (self->segkind == IP_KIND_BOUNDED_SEMAPHORE && self->maxvalue > SEM_MAX)
        bad = "bad ceiling";
    if (bad) {
        PyErr_Format(ip_SegmentError, "synchronization header is corrupt (%s)", bad);
        return -1;
    }
    return 0;
}

static PyObject *SyncCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "kind", "value", "maxvalue", "create", "data_size", "meta", NULL};
    int fd, kind, create = 0;
    long long value = 0, maxvalue = 0, data_size = 0;
    Py_buffer meta = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ii|LLpLy*:SyncCore", kwlist, &fd, &kind, &value,
                                     &maxvalue, &create, &data_size, &meta)) {
        close_given_fd(args, kwds);
        return NULL;
    }
    Py_ssize_t meta_len = meta.buf ? meta.len : 0;
    PyObject *meta_copy = PyBytes_FromStringAndSize(meta.buf, meta_len);
    if (meta.buf)
        PyBuffer_Release(&meta);
    if (meta_copy == NULL) {
        close(fd);
        return NULL;
    }
    SyncCore *self = (SyncCore *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(meta_copy);
        close(fd);
        return NULL;
    }
    self->fd = fd; /* ours from here on, also when we fail */
    self->kind = semantic_kind(kind);
    self->segkind = kind;
    if (!is_lock(self->kind) && !is_semaphore(kind) && kind != IP_KIND_EVENT
        && kind != IP_KIND_BARRIER) {
        Py_DECREF(meta_copy);
        PyErr_Format(PyExc_ValueError, "unknown synchronization kind %d", kind);
        goto fail;
    }
    uint64_t hsize = IP_SYNC_HDR_SIZE;
    if (create) {
        self->meta = meta_copy;
        if (meta_len > IP_SYNC_META_MAX) {
            PyErr_Format(PyExc_ValueError, "type description too long (%zd bytes)", meta_len);
            goto fail;
        }
        if (value < 0 || maxvalue < 0) {
            PyErr_SetString(PyExc_ValueError, "semaphore initial value must be >= 0");
            goto fail;
        }
        if (kind == IP_KIND_BARRIER && (maxvalue < 1 || (uint64_t)maxvalue > B_MAX_PARTIES)) {
            PyErr_Format(PyExc_ValueError, "parties must be between 1 and %llu",
                         (unsigned long long)B_MAX_PARTIES);
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
        self->uid = h->seg.uid;
        self->data_size = (uint64_t)data_size;
        self->maxvalue = (uint64_t)maxvalue;
        h->value = (uint64_t)value;
        h->maxvalue = (uint64_t)maxvalue;
        h->data_size = (uint64_t)data_size;
        h->meta_len = (uint32_t)meta_len;
        if (meta_len)
            memcpy(h->meta, PyBytes_AS_STRING(meta_copy), (size_t)meta_len);
        ip_segment_publish(&h->seg);
    } else {
        Py_DECREF(meta_copy);
        uint64_t file_size;
        ip_seghdr_t seg;
        self->hdr = ip_segment_attach(fd, (uint32_t)kind, hsize, &self->map_len, &file_size, &seg);
        if (self->hdr == NULL)
            goto fail;
        ip_sync_hdr_t *h = self->hdr;
        /* One read of each: what is checked is what is kept. */
        self->uid = seg.uid;
        self->data_size = __atomic_load_n(&h->data_size, __ATOMIC_RELAXED);
        self->maxvalue = __atomic_load_n(&h->maxvalue, __ATOMIC_RELAXED);
        uint32_t ml = __atomic_load_n(&h->meta_len, __ATOMIC_RELAXED);
        if (attach_check(self, ml) < 0)
            goto fail;
        self->meta = PyBytes_FromStringAndSize((const char *)h->meta, ml);
        if (self->meta == NULL)
            goto fail;
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
    Py_CLEAR(self->meta);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The data area as a writable buffer, for ctypes' from_buffer: one
 * mapping serves the lock and the data.  close() while buffers are out
 * gives back the descriptor at once and unmaps after the last buffer. */
static int SyncCore_getbuffer(SyncCore *self, Py_buffer *view, int flags)
{
    if (self->closed || self->hdr == NULL) {
        view->obj = NULL;
        return closed_error();
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, (uint8_t *)self->hdr + IP_SYNC_HDR_SIZE,
                          (Py_ssize_t)self->data_size, 0, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void SyncCore_releasebuffer(SyncCore *self, Py_buffer *Py_UNUSED(view))
{
    if (--self->exports == 0 && self->closed && self->active == 0)
        release_resources(self);
}

static PyBufferProcs SyncCore_as_buffer = {
    .bf_getbuffer = (getbufferproc)SyncCore_getbuffer,
    .bf_releasebuffer = (releasebufferproc)SyncCore_releasebuffer,
};

/* ------------------------------------------------------------------ */
/* waiter slots                                                        */

/* Taken for the length of a wait that did not succeed at once, for
 * statistics().  A slot of a process that died is reused and not counted. */
static int take_waiter_slot(SyncCore *self, uint64_t word, int recycle)
{
    ip_sync_hdr_t *h = self->hdr;
    for (int pass = 0; pass < 1 + recycle; pass++) {
        for (int i = 0; i < IP_SYNC_WAITER_SLOTS; i++) {
            uint64_t cur = ld(&h->waiting[i]);
            /* A dead waiter's slot is reused only when no free one is left. */
            if ((cur == 0 || (pass && !key_alive(self, cur, word & IP_KEY_MASK)))
                && cas(&h->waiting[i], cur, word))
                return i;
        }
    }
    return -1; /* all taken: this waiter goes uncounted */
}

static void give_waiter_slot(ip_sync_hdr_t *h, int slot, uint64_t word)
{
    if (slot >= 0 && slot < IP_SYNC_WAITER_SLOTS)
        cas(&h->waiting[slot], word, 0); /* only our own: the index may come from a caller */
}

static unsigned live_waiters(SyncCore *self)
{
    ip_sync_hdr_t *h = self->hdr;
    uint64_t mine = ip_ident_fast(&self->ident);
    unsigned n = 0;
    for (int i = 0; i < IP_SYNC_WAITER_SLOTS; i++) {
        uint64_t cur = ld(&h->waiting[i]);
        if (cur != 0 && key_alive(self, cur, mine))
            n++;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* acquiring                                                           */

typedef struct {
    SyncCore *self;
    uint64_t token;
    int recovered;
    int probe; /* not going to wait: look at the holder's health at once */
} acquire_ctx;

/* Waits with a waiter slot taken, unless the first try succeeds. */
static int wait_counted(SyncCore *self, const ip_deadline_t *d, ip_attempt_fn attempt,
                        acquire_ctx *c)
{
    const uint64_t *watch;
    uint64_t watch_val;
    int rc = attempt(c, c->probe, &watch, &watch_val);
    if (rc != 0 || ip_deadline_passed(d))
        return rc;
    uint64_t key = c->token ? c->token : ip_ident_get(&self->ident, self->fd, 1);
    if (key == 0)
        PyErr_Clear(); /* only statistics() would miss this waiter */
    int slot = key ? take_waiter_slot(self, key, 1) : -1;
    rc = ip_wait_for(&self->hdr->ev, d, attempt, c);
    give_waiter_slot(self->hdr, slot, key);
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
    /* Asking is a syscall: only once spinning has not helped, or when the
     * caller will not wait at all. */
    if ((before_sleep || c->probe) && cur != 0 && !key_alive(self, cur, c->token)
        && cas(&h->owner, cur, c->token | TAKING_OVER)) {
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

/* The lock word is ours: the rest of the holder's words. */
static void took_lock(SyncCore *self, uint64_t token, uint64_t thread, int recovered)
{
    ip_sync_hdr_t *h = self->hdr;
    __atomic_store_n(&h->owner_pid, my_pid(), __ATOMIC_RELAXED);
    __atomic_store_n(&h->thread, thread, __ATOMIC_RELEASE);
    if (self->kind == IP_KIND_RLOCK)
        h->count = 1;
    if (recovered) /* now re-entry may see it ours */
        __atomic_store_n(&h->owner, token, __ATOMIC_RELEASE);
    self->owner_died = recovered;
}

static void give_back(SyncCore *self)
{
    ip_sync_hdr_t *h = self->hdr;
    h->count = 0;
    __atomic_store_n(&h->thread, 0, __ATOMIC_RELEASE);
    __atomic_exchange_n(&h->owner, 0, __ATOMIC_SEQ_CST);
    ip_event_wake(&h->ev, 1);
}

/* Takes the lock or a unit of the semaphore; the caller has entered.
 * Returns 1, 0 when the deadline passed, -1 with an exception set. */
static int acquire_by(SyncCore *self, const ip_deadline_t *d, uint64_t thread)
{
    ip_sync_hdr_t *h = self->hdr;
    acquire_ctx c = {self, 0, 0, 0};
    int lock = is_lock(self->kind);
    if (lock) {
        c.token = ip_ident_get(&self->ident, self->fd, 1);
        if (c.token == 0)
            return -1;
        if (self->kind == IP_KIND_RLOCK) {
            if (ld(&h->owner) == c.token && ld(&h->thread) == thread) {
                h->count++;
                return 1;
            }
        }
    }
    c.probe = ip_deadline_passed(d);
    int rc = wait_counted(self, d, lock ? lock_attempt : semaphore_attempt, &c);
    if (rc != IP_WAIT_DONE)
        return rc == IP_WAIT_ERROR ? -1 : 0;
    if (!lock)
        return 1;
    took_lock(self, c.token, thread, c.recovered);
    if (c.recovered) {
        __atomic_add_fetch(&h->recoveries, 1, __ATOMIC_RELAXED);
        if (PyErr_WarnEx(ip_OwnerDiedWarning,
                         "the previous holder of this lock died holding it; the data it "
                         "protects may be half-updated",
                         1) < 0) {
            give_back(self); /* warnings turned into errors: the lock is not taken */
            return -1;
        }
    }
    return 1;
}

static int acquire_core(SyncCore *self, const ip_deadline_t *d)
{
    return acquire_by(self, d, ip_thread_serial());
}

static const char *const acquire_names[] = {"block", "timeout"};

/* acquire(block=True, timeout=None) for every kind but Event. */
static PyObject *SyncCore_acquire(SyncCore *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    /* The uncontended Lock, first and with nothing else: it is the case that
     * has to be as cheap as multiprocessing's.  Once this handle knows its
     * process's key, that is a load, a compare-and-swap and two stores. */
    if (nargs == 0 && kwnames == NULL && is_lock(self->kind) && !self->closed) {
        uint64_t token = ip_ident_fast(&self->ident);
        ip_sync_hdr_t *h = self->hdr;
        if (token && self->kind == IP_KIND_LOCK) {
            if (cas(&h->owner, 0, token)) {
                __atomic_store_n(&h->owner_pid, my_pid(), __ATOMIC_RELAXED);
                __atomic_store_n(&h->thread, ip_thread_serial(), __ATOMIC_RELAXED);
                self->owner_died = 0;
                Py_RETURN_TRUE;
            }
        } else if (token) {
            uint64_t thread = ip_thread_serial();
            uint64_t owner = ld(&h->owner);
            if (owner == token && ld(&h->thread) == thread) {
                h->count++;
                Py_RETURN_TRUE;
            }
            if (owner == 0 && cas(&h->owner, 0, token)) {
                took_lock(self, token, thread, 0);
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
    int rc = acquire_core(self, &d);
    return leave(self, rc < 0 ? NULL : PyBool_FromLong(rc));
}

static PyObject *ip_UnlockedReleaseError;

/* Gives the lock back; the caller has entered.  0, or -1 with an exception. */
/* Who the caller is to `lock`, as an owner number: its thread, unless
 * the lock is an RLock that a task holds (acquire_async) and that task is
 * the one running. */
static uint64_t caller_owner(SyncCore *lock)
{
    uint64_t thread = ip_thread_serial();
    if (lock->kind == IP_KIND_RLOCK) {
        uint64_t holder = ld(&lock->hdr->thread);
        if (holder != thread && holder >> 63 && ip_running_task_owner() == holder)
            return holder;
    }
    return thread;
}

static int lock_release_by(SyncCore *self, uint64_t thread)
{
    ip_sync_hdr_t *h = self->hdr;
    if (self->kind == IP_KIND_RLOCK) {
        uint64_t key = ip_ident_get(&self->ident, self->fd, 0);
        if (key == 0 || ld(&h->owner) != key || ld(&h->thread) != thread) {
            PyErr_SetString(PyExc_AssertionError,
                            "attempt to release recursive lock not owned by thread");
            return -1;
        }
        if (h->count > 1) {
            h->count--;
            return 0;
        }
        give_back(self);
        return 0;
    }
    if (__atomic_exchange_n(&h->owner, 0, __ATOMIC_SEQ_CST) == 0) {
        PyErr_SetString(ip_UnlockedReleaseError, "semaphore or lock released too many times");
        return -1;
    }
    ip_event_wake(&h->ev, 1);
    return 0;
}

static int lock_release(SyncCore *self)
{
    return lock_release_by(self, caller_owner(self));
}

/* The owner a _acquire_as/_release_as call names: a number with the top
 * bit set, which no thread's ip_thread_serial() ever is (a task of an
 * event loop holds an RLock as a thread would). */
static int owner_arg(SyncCore *self, PyObject *arg, uint64_t *owner)
{
    if (!is_lock(self->kind)) {
        PyErr_SetString(PyExc_TypeError, "only a lock has an owner");
        return -1;
    }
    *owner = PyLong_AsUnsignedLongLong(arg);
    if (*owner == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    if (!(*owner >> 63)) {
        PyErr_SetString(PyExc_ValueError, "not a task's owner number");
        return -1;
    }
    return 0;
}

static int lock_is_owned_by(SyncCore *lock, uint64_t owner);

/* _acquire_as(owner[, depth]): acquire(False) on behalf of `owner`
 * (owner_arg); with `depth`, an RLock comes back that deep (the end of a
 * coroutine's Condition wait, the counterpart of _acquire_restore). */
static PyObject *SyncCore_acquire_as(SyncCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t owner, depth = 0;
    if (nargs != 1 && nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_acquire_as(owner[, depth])");
        return NULL;
    }
    if (owner_arg(self, args[0], &owner) < 0)
        return NULL;
    if (nargs == 2) {
        depth = PyLong_AsUnsignedLongLong(args[1]);
        if (depth == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
        if (depth == 0) {
            PyErr_SetString(PyExc_ValueError, "depth must be one or more");
            return NULL;
        }
    }
    ip_deadline_t now;
    if (ip_deadline_init(&now, 0, Py_None) < 0 || enter(self) < 0)
        return NULL;
    if (depth && self->kind == IP_KIND_RLOCK && lock_is_owned_by(self, owner)) {
        PyErr_SetString(PyExc_RuntimeError, "the lock is already held: nothing to restore");
        return leave(self, NULL);
    }
    int rc = acquire_by(self, &now, owner);
    if (rc > 0 && depth && self->kind == IP_KIND_RLOCK)
        self->hdr->count = depth;
    return leave(self, rc < 0 ? NULL : PyBool_FromLong(rc));
}

/* _release_as(owner): release() on behalf of `owner`. */
static PyObject *SyncCore_release_as(SyncCore *self, PyObject *arg)
{
    uint64_t owner;
    if (owner_arg(self, arg, &owner) < 0)
        return NULL;
    if (enter(self) < 0)
        return NULL;
    return leave(self, lock_release_by(self, owner) < 0 ? NULL : Py_NewRef(Py_None));
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
    if (is_lock(self->kind))
        return leave(self, lock_release(self) < 0 ? NULL : Py_NewRef(Py_None));
    ip_sync_hdr_t *h = self->hdr;
    uint64_t v = ld(&h->value);
    for (;;) {
        if (self->kind == IP_KIND_BOUNDED_SEMAPHORE
            && (v > self->maxvalue || (uint64_t)n > self->maxvalue - v)) {
            PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
            return leave(self, NULL);
        }
        if (v > SEM_MAX || (uint64_t)n > SEM_MAX - v) {
            PyErr_Format(PyExc_OverflowError, "the semaphore's value would exceed %llu",
                         (unsigned long long)SEM_MAX);
            return leave(self, NULL);
        }
        if (__atomic_compare_exchange_n(&h->value, &v, v + (uint64_t)n, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
    }
    ip_event_signal(&h->ev, (int)(n < INT32_MAX ? n : INT32_MAX));
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
    acquire_ctx c = {self, 0, 0, 0};
    rc = wait_counted(self, &d, event_attempt, &c);
    if (rc == IP_WAIT_ERROR)
        return leave(self, NULL);
    return leave(self, PyBool_FromLong(rc == IP_WAIT_DONE));
}

/* ------------------------------------------------------------------ */
/* The lock of a Condition: ownership, letting go and coming back.     */

/* 1 if `owner` (a thread's or a task's number) holds `lock`, 0 if not,
 * -1 when it is closed. */
static int lock_is_owned_by(SyncCore *lock, uint64_t owner)
{
    if (lock->closed)
        return closed_error();
    uint64_t key = ip_ident_get(&lock->ident, lock->fd, 0);
    ip_sync_hdr_t *h = lock->hdr;
    return key != 0 && ld(&h->owner) == key
           && (lock->kind != IP_KIND_RLOCK || ld(&h->thread) == owner);
}

/* Whether the caller (its thread, or the task running) holds `lock`. */
static int lock_is_owned(SyncCore *lock)
{
    return lock->closed ? closed_error() : lock_is_owned_by(lock, caller_owner(lock));
}

/* Lets go of a lock `owner` holds, however deep: *depth to come back. */
static int lock_release_save_by(SyncCore *lock, uint64_t owner, uint64_t *depth)
{
    int owned = lock_is_owned_by(lock, owner);
    if (owned <= 0) {
        if (owned == 0)
            PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return -1;
    }
    if (enter(lock) < 0)
        return -1;
    ip_sync_hdr_t *h = lock->hdr;
    *depth = 1;
    if (lock->kind == IP_KIND_RLOCK) {
        *depth = h->count ? h->count : 1;
        h->count = 1;
    }
    int rc = lock_release_by(lock, owner);
    leave(lock, NULL);
    return rc;
}

static int lock_release_save(SyncCore *lock, uint64_t *depth)
{
    if (lock->closed)
        return closed_error();
    return lock_release_save_by(lock, caller_owner(lock), depth);
}

static int lock_acquire_restore(SyncCore *lock, uint64_t depth)
{
    if (enter(lock) < 0)
        return -1;
    ip_deadline_t forever = {.infinite = 1};
    int rc = acquire_core(lock, &forever);
    if (rc > 0 && lock->kind == IP_KIND_RLOCK)
        lock->hdr->count = depth;
    leave(lock, NULL);
    return rc > 0 ? 0 : -1;
}

static PyObject *SyncCore_is_owned(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    int owned = lock_is_owned(self);
    return owned < 0 ? NULL : PyBool_FromLong(owned);
}

/* Who holds a lock, as multiprocessing's repr tells it: 0 nobody, 1 the
 * calling thread, 2 another thread of this process, 3 another process. */
static PyObject *SyncCore_owner_state(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (!is_lock(self->kind)) {
        PyErr_SetString(PyExc_TypeError, "only a Lock or RLock has an owner");
        return NULL;
    }
    if (self->closed) {
        closed_error();
        return NULL;
    }
    ip_sync_hdr_t *h = self->hdr;
    uint64_t owner = ld(&h->owner);
    if (owner == 0)
        return PyLong_FromLong(0);
    uint64_t key = ip_ident_get(&self->ident, self->fd, 0);
    if (key == 0 || owner != key)
        return PyLong_FromLong(3);
    return PyLong_FromLong(ld(&h->thread) == ip_thread_serial() ? 1 : 2);
}

static PyObject *SyncCore_release_save(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t depth;
    if (lock_release_save(self, &depth) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(depth);
}

static PyObject *SyncCore_acquire_restore(SyncCore *self, PyObject *arg)
{
    unsigned long long depth = PyLong_AsUnsignedLongLong(arg);
    if (depth == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (lock_acquire_restore(self, depth) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Raises the exception set now with (t, v, tb), fetched earlier, as its context. */
static void chain_saved(PyObject *t, PyObject *v, PyObject *tb)
{
    if (t == NULL)
        return;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb)
        PyException_SetTraceback(v, tb);
    PyObject *nt, *nv, *ntb;
    PyErr_Fetch(&nt, &nv, &ntb);
    PyErr_NormalizeException(&nt, &nv, &ntb);
    if (nv && nv != v)
        PyException_SetContext(nv, v); /* steals v */
    else
        Py_XDECREF(v);
    Py_DECREF(t);
    Py_XDECREF(tb);
    PyErr_Restore(nt, nv, ntb);
}

/* ------------------------------------------------------------------ */
/* Condition: each waiter registers, with the lock held, in a slot of its
 * own with a ticket; notify(n) marks the n oldest waiting slots notified.
 * A notification therefore reaches only waiters registered before it,
 * and a waiter that times out settles with notify by compare-and-swap on
 * its slot.  Waiters that find every slot taken share a generation
 * counter that any notify reaching them bumps (they may wake spuriously).
 * Condition waiters never sleep on the lock's event count, so releasing
 * the lock wakes an acquirer, not a waiter. */

#define C_CLAIMED 1ull
#define C_WAITING 2ull
#define C_NOTIFIED 3ull
#define C_STATE(w) ((w) >> IP_KEY_BITS)
#define C_WORD(s, key) (((s) << IP_KEY_BITS) | (key))

typedef struct {
    SyncCore *self;
    int slot;      /* -1: no slot; woken by cond_gen moving past gen */
    uint64_t word; /* the slot's state while we wait */
    uint64_t gen;
} cond_reg;

static void cond_register(cond_reg *r, uint64_t key)
{
    SyncCore *self = r->self;
    ip_sync_hdr_t *h = self->hdr;
    /* Counted before a slot is taken and uncounted after it is freed: the
     * count may read high (a waiter died), never low. */
    __atomic_add_fetch(&h->cond_waiting, 1, __ATOMIC_SEQ_CST);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < IP_COND_SLOTS; i++) {
            ip_cond_slot_t *s = &h->cond[i];
            uint64_t cur = ld(&s->state);
            if (cur != 0) {
                /* Second pass: a slot left behind by a waiter that died. */
                if (!pass || key_alive(self, cur, key) || !cas(&s->state, cur, 0))
                    continue;
                __atomic_sub_fetch(&h->cond_waiting, 1, __ATOMIC_SEQ_CST);
            }
            if (cas(&s->state, 0, C_WORD(C_CLAIMED, key))) {
                uint64_t t = __atomic_fetch_add(&h->cond_tickets, 1, __ATOMIC_SEQ_CST);
                __atomic_store_n(&s->ticket, t, __ATOMIC_RELEASE);
                r->slot = i;
                r->word = C_WORD(C_WAITING, key);
                __atomic_store_n(&s->state, r->word, __ATOMIC_SEQ_CST);
                return;
            }
        }
    }
    r->slot = -1;
    __atomic_add_fetch(&h->cond_overflow, 1, __ATOMIC_SEQ_CST);
    r->gen = ld(&h->cond_gen);
    __atomic_sub_fetch(&h->cond_waiting, 1, __ATOMIC_SEQ_CST);
}

static int cond_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    cond_reg *r = arg;
    (void)before_sleep;
    if (r->self->closed)
        return closed_error();
    ip_sync_hdr_t *h = r->self->hdr;
    uint64_t *w = r->slot >= 0 ? &h->cond[r->slot].state : &h->cond_gen;
    uint64_t cur = ld(w);
    if (cur != (r->slot >= 0 ? r->word : r->gen))
        return 1; /* notified (anything else is a spurious wake-up) */
    *watch = w;
    *watch_val = cur;
    return 0;
}

/* Frees the registration; returns whether a notify reached it first. */
static int cond_settle(cond_reg *r)
{
    ip_sync_hdr_t *h = r->self->hdr;
    if (r->slot < 0) {
        int woken = ld(&h->cond_gen) != r->gen;
        __atomic_sub_fetch(&h->cond_overflow, 1, __ATOMIC_SEQ_CST);
        return woken;
    }
    uint64_t *state = &h->cond[r->slot].state;
    uint64_t cur = r->word;
    int woken = !__atomic_compare_exchange_n(state, &cur, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    if (woken && cur == C_WORD(C_NOTIFIED, r->word & IP_KEY_MASK))
        cas(state, cur, 0);
    __atomic_sub_fetch(&h->cond_waiting, 1, __ATOMIC_SEQ_CST);
    return woken;
}

typedef struct {
    uint64_t ticket;
    uint64_t word;
    int slot;
} cond_pick;

static int older_first(const void *a, const void *b)
{
    int64_t d = (int64_t)(((const cond_pick *)a)->ticket - ((const cond_pick *)b)->ticket);
    return d < 0 ? -1 : d > 0;
}

/* Wakes up to n waiters (n < 0: all), oldest first; returns how many of
 * those in slots it woke. */
static Py_ssize_t cond_notify(SyncCore *self, Py_ssize_t n)
{
    ip_sync_hdr_t *h = self->hdr;
    Py_ssize_t given = 0;
    if (ld(&h->cond_waiting)) {
        uint64_t mine = ip_ident_fast(&self->ident);
        cond_pick w[IP_COND_SLOTS];
        int m = 0;
        for (int i = 0; i < IP_COND_SLOTS; i++) {
            uint64_t cur = ld(&h->cond[i].state);
            if (C_STATE(cur) == C_WAITING)
                w[m++] = (cond_pick){ld(&h->cond[i].ticket), cur, i};
        }
        if (n >= 0 && n < m)
            qsort(w, (size_t)m, sizeof *w, older_first);
        for (int k = 0; k < m && (n < 0 || given < n); k++) {
            ip_cond_slot_t *s = &h->cond[w[k].slot];
            uint64_t key = w[k].word & IP_KEY_MASK;
            /* A waiter that died would swallow the notification: free its
             * slot and move on.  notify_all needs no such care. */
            if (n >= 0 && !key_alive(self, key, mine)) {
                if (cas(&s->state, w[k].word, 0))
                    __atomic_sub_fetch(&h->cond_waiting, 1, __ATOMIC_SEQ_CST);
                continue;
            }
            /* Fails when the waiter withdrew (timed out) first. */
            if (cas(&s->state, w[k].word, C_WORD(C_NOTIFIED, key))) {
                given++;
                ip_event_signal(&s->ev, 1);
            }
        }
    }
    if ((n < 0 || given < n) && ld(&h->cond_overflow)) {
        __atomic_add_fetch(&h->cond_gen, 1, __ATOMIC_SEQ_CST);
        ip_event_signal(&h->cond_ev, INT32_MAX);
    }
    return given;
}

/* The lock argument of _cond_wait and _cond_enter (args[0] of two). */
static SyncCore *cond_lock_arg(const char *what, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (%zd given)", what, nargs);
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &ip_SyncCore_Type) || !is_lock(((SyncCore *)args[0])->kind)) {
        PyErr_SetString(PyExc_TypeError, "the condition's lock must be an interproc Lock or RLock");
        return NULL;
    }
    SyncCore *lock = (SyncCore *)args[0];
    return lock->closed ? (closed_error(), NULL) : lock;
}

/* The start of every Condition wait: checks that `owner` holds the lock,
 * registers, then lets go of the lock, however deep (*depth).  The
 * caller has entered.  0, or -1 with an exception and nothing held. */
static int cond_begin(SyncCore *self, SyncCore *lock, uint64_t owner, cond_reg *r, uint64_t *depth)
{
    int owned = lock_is_owned_by(lock, owner);
    if (owned <= 0) {
        if (owned == 0)
            PyErr_SetString(PyExc_RuntimeError, "cannot wait on un-acquired lock");
        return -1;
    }
    uint64_t key = ip_ident_get(&self->ident, self->fd, 1);
    if (key == 0)
        return -1;
    *r = (cond_reg){self, -1, 0, 0};
    cond_register(r, key);
    if (lock_release_save_by(lock, owner, depth) < 0) {
        cond_settle(r);
        return -1;
    }
    return 0;
}

/* _cond_wait(lock, timeout): Condition.wait in one call, so that no signal
 * handler can run between registering and letting go of the lock, or
 * between waking and taking it back. */
static PyObject *SyncCore_cond_wait(SyncCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    SyncCore *lock = cond_lock_arg("_cond_wait", args, nargs);
    ip_deadline_t d;
    if (lock == NULL || ip_deadline_init(&d, 1, args[1]) < 0 || enter(self) < 0)
        return NULL;
    Py_INCREF(lock);
    PyObject *result = NULL;
    cond_reg r;
    uint64_t depth;
    if (cond_begin(self, lock, caller_owner(lock), &r, &depth) < 0)
        goto out;
    ip_sync_hdr_t *h = self->hdr;
    ip_wait_for(r.slot >= 0 ? &h->cond[r.slot].ev : &h->cond_ev, &d, cond_attempt, &r);
    /* Whatever ended the wait, a notify that got here first counts. */
    int woken = cond_settle(&r);
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (lock_acquire_restore(lock, depth) < 0) {
        chain_saved(t, v, tb);
        goto out;
    }
    if (t) {
        PyErr_Restore(t, v, tb);
        goto out;
    }
    result = PyBool_FromLong(woken);
out:
    Py_DECREF(lock);
    return leave(self, result);
}

/* A coroutine's Condition wait (wait_async) is the same in steps that
 * never wait: _cond_enter(lock, owner) registers and lets go of the lock,
 * _cond_notified(reg) tells whether a notify has reached the
 * registration, _cond_leave(reg) frees it, and the lock's
 * _acquire_as(owner, depth) takes it back.  The event loop waits between
 * the steps, on the registration's event (_bell(1) when it has no slot,
 * _bell(2 + slot) otherwise).  A registration travels as
 * (slot, word, generation). */
static PyObject *SyncCore_cond_enter(SyncCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    SyncCore *lock = cond_lock_arg("_cond_enter", args, nargs);
    uint64_t owner;
    if (lock == NULL || owner_arg(lock, args[1], &owner) < 0 || enter(self) < 0)
        return NULL;
    cond_reg r;
    uint64_t depth;
    if (cond_begin(self, lock, owner, &r, &depth) < 0)
        return leave(self, NULL);
    return leave(self, Py_BuildValue("((iKK)K)", r.slot, (unsigned long long)r.word,
                                     (unsigned long long)r.gen, (unsigned long long)depth));
}

static int cond_reg_arg(SyncCore *self, PyObject *args, cond_reg *r)
{
    unsigned long long word, gen;
    int slot;
    if (!PyArg_ParseTuple(args, "iKK", &slot, &word, &gen))
        return -1;
    if (slot < -1 || slot >= IP_COND_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "not a Condition registration");
        return -1;
    }
    *r = (cond_reg){self, slot, word, gen};
    return 0;
}

/* One try of a wait's attempt, for a coroutine's steps: whether it is
 * done.  The caller has entered. */
static PyObject *try_once(SyncCore *self, ip_attempt_fn attempt, void *ctx, int before_sleep)
{
    const uint64_t *watch;
    uint64_t seen;
    int rc = attempt(ctx, before_sleep, &watch, &seen);
    return leave(self, rc < 0 ? NULL : PyBool_FromLong(rc));
}

static PyObject *SyncCore_cond_notified(SyncCore *self, PyObject *args)
{
    cond_reg r;
    if (cond_reg_arg(self, args, &r) < 0 || enter(self) < 0)
        return NULL;
    return try_once(self, cond_attempt, &r, 0);
}

static PyObject *SyncCore_cond_leave(SyncCore *self, PyObject *args)
{
    cond_reg r;
    if (cond_reg_arg(self, args, &r) < 0 || enter(self) < 0)
        return NULL;
    return leave(self, PyBool_FromLong(cond_settle(&r)));
}

static PyObject *SyncCore_cond_notify(SyncCore *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (enter(self) < 0)
        return NULL;
    return leave(self, PyLong_FromSsize_t(cond_notify(self, n)));
}

static uint64_t cond_waiters(ip_sync_hdr_t *h)
{
    uint64_t n = ld(&h->cond_overflow);
    for (int i = 0; i < IP_COND_SLOTS; i++)
        n += C_STATE(ld(&h->cond[i].state)) == C_WAITING;
    return n;
}

/* ------------------------------------------------------------------ */
/* Barrier: `value` packs generation, broken and the count of arrivals;
 * `count` records the last generation ended by a reset, plus one.  A
 * waiting party holds a waiter slot with its key, tagged with its
 * generation, so that a party that died waiting breaks the barrier. */

#define B_TAG(gen) (((gen)&0x7fffull) << IP_KEY_BITS)

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

static void barrier_signal(ip_sync_hdr_t *h)
{
    ip_event_signal(&h->ev, INT32_MAX);
}

/* Breaks generation gen unless it has ended: the one compare-and-swap that
 * the last party's release also races for, so that either every party
 * passes or every party is told the barrier broke.  Returns whether gen is
 * broken. */
static int barrier_break_gen(ip_sync_hdr_t *h, uint64_t gen)
{
    uint64_t cur = ld(&h->value);
    while (B_GEN(cur) == gen) {
        if (cur & B_BROKEN)
            return 1;
        if (__atomic_compare_exchange_n(&h->value, &cur, cur | B_BROKEN, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            barrier_signal(h);
            return 1;
        }
    }
    return 0;
}

typedef struct {
    SyncCore *self;
    uint64_t gen;
    uint64_t mine;
    int broken; /* BrokenBarrierError is set */
} barrier_ctx;

/* Whether a party of generation gen died waiting.  A dead party's slot of
 * an earlier generation (it passed and died before letting go) is freed. */
static int barrier_party_died(barrier_ctx *c)
{
    ip_sync_hdr_t *h = c->self->hdr;
    for (int i = 0; i < IP_SYNC_WAITER_SLOTS; i++) {
        uint64_t t = ld(&h->waiting[i]);
        if (t == 0 || key_alive(c->self, t, c->mine))
            continue;
        if ((t & ~IP_KEY_MASK) != B_TAG(c->gen))
            cas(&h->waiting[i], t, 0);
        else if (ld(&h->waiting[i]) == t)
            return 1;
    }
    return 0;
}

/* Done when generation gen ends, by a release or a reset. */
static int barrier_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    barrier_ctx *c = arg;
    if (c->self->closed)
        return closed_error();
    ip_sync_hdr_t *h = c->self->hdr;
    uint64_t cur = ld(&h->value);
    if (B_GEN(cur) != c->gen)
        return 1;
    if (!(cur & B_BROKEN) && before_sleep && barrier_party_died(c)) {
        barrier_break_gen(h, c->gen); /* nobody else may hang */
        cur = ld(&h->value);
        if (B_GEN(cur) != c->gen)
            return 1;
    }
    if (cur & B_BROKEN) {
        c->broken = 1;
        return broken_error(), -1;
    }
    *watch = &h->value;
    *watch_val = cur;
    return 0;
}

/* Whether the parties of generation gen are all still there (as many live
 * slots of gen as parties, or as slots): what backs up a full count. */
static int barrier_parties_present(barrier_ctx *c, uint64_t parties)
{
    ip_sync_hdr_t *h = c->self->hdr;
    uint64_t need = parties < IP_SYNC_WAITER_SLOTS ? parties : IP_SYNC_WAITER_SLOTS, n = 0;
    for (int i = 0; i < IP_SYNC_WAITER_SLOTS; i++) {
        uint64_t t = ld(&h->waiting[i]);
        if (t && (t & ~IP_KEY_MASK) == B_TAG(c->gen) && key_alive(c->self, t, c->mine))
            n++;
    }
    return n >= need;
}

/* A waiter's deadline passed.  1: gen is broken (by us, as threading's
 * timeout does); 0: gen ended; 2: the last party is in, and threading
 * would let the generation pass: wait on.  A full count that no live
 * parties back up (forged) must not hold anyone past its timeout: on
 * `recheck`, a grace period after the timeout (which covers the last
 * party between arriving and taking its slot), the parties are counted. */
static int barrier_timed_out(barrier_ctx *c, uint64_t parties, int recheck)
{
    ip_sync_hdr_t *h = c->self->hdr;
    uint64_t cur = ld(&h->value);
    for (;;) {
        if (B_GEN(cur) != c->gen)
            return 0;
        if (cur & B_BROKEN)
            return 1;
        if (B_COUNT(cur) >= parties && (!recheck || barrier_parties_present(c, parties)))
            return 2;
        if (__atomic_compare_exchange_n(&h->value, &cur, cur | B_BROKEN, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            barrier_signal(h);
            return 1;
        }
    }
}

#define B_GRACE_NS 100000000L
/* A waiting party sees the count move as the others arrive, before the
 * generation ends: it spins on through a few such moves instead of
 * sleeping, which would put a futex wake-up into every round. */
#define B_SPINS 4

static void deadline_after(ip_deadline_t *d, long ns)
{
    clock_gettime(CLOCK_MONOTONIC, &d->at);
    d->infinite = 0;
    d->at.tv_nsec += ns;
    d->at.tv_sec += d->at.tv_nsec / 1000000000L;
    d->at.tv_nsec %= 1000000000L;
}

/* One party arrives: 1 when counted in, with its arrival index, its
 * generation and the waiter slot it took; 0 when every party of
 * generation *gen is in (the arrival must wait for the next one); -1 when
 * the barrier is broken. */
static int barrier_arrive(SyncCore *self, uint64_t key, uint64_t *index, uint64_t *gen, int *slot)
{
    ip_sync_hdr_t *h = self->hdr;
    uint64_t cur = ld(&h->value);
    for (;;) {
        if (cur & B_BROKEN)
            return -1;
        *gen = B_GEN(cur);
        if (B_COUNT(cur) >= self->maxvalue)
            return 0;
        if (__atomic_compare_exchange_n(&h->value, &cur, cur + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
    }
    *index = B_COUNT(cur);
    *slot = take_waiter_slot(self, B_TAG(*gen) | key, 0);
    return 1;
}

/* _barrier_wait(timeout) -> (index, generation, slot, last).  Arrives and,
 * unless last, waits for the generation to end.  The last party gets its
 * slot back to hand to _barrier_release or _barrier_abort after the action. */
static PyObject *SyncCore_barrier_wait(SyncCore *self, PyObject *timeout)
{
    ip_deadline_t d;
    if (ip_deadline_init(&d, 1, timeout) < 0 || enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    uint64_t key = ip_ident_get(&self->ident, self->fd, 1);
    if (key == 0)
        return leave(self, NULL);
    uint64_t parties = self->maxvalue;
    barrier_ctx c = {self, 0, key, 0};
    uint64_t index, gen;
    int slot, arrived;
    while ((arrived = barrier_arrive(self, key, &index, &gen, &slot)) == 0) {
        /* Every party of this generation is in and the last is finishing
         * it: join the next one, as threading does.  Not having arrived,
         * a party that gives up here breaks nothing. */
        c.gen = gen;
        int rc = ip_wait_for_spins(&h->ev, &d, barrier_attempt, &c, B_SPINS);
        if (rc == IP_WAIT_ERROR)
            return leave(self, NULL);
        if (rc == IP_WAIT_TIMEOUT)
            return leave(self, broken_error());
    }
    if (arrived < 0)
        return leave(self, broken_error());
    uint64_t word = B_TAG(gen) | key;
    if (index + 1 == parties)
        return leave(self, Py_BuildValue("(KKiO)", (unsigned long long)index,
                                         (unsigned long long)gen, slot, Py_True));
    c.gen = gen;
    const ip_deadline_t *until = &d;
    ip_deadline_t grace;
    int rc, broke = 0, rechecks = 0;
    for (;;) {
        rc = ip_wait_for_spins(&h->ev, until, barrier_attempt, &c, B_SPINS);
        if (rc != IP_WAIT_TIMEOUT)
            break;
        int t = barrier_timed_out(&c, parties, rechecks++ > 0);
        if (t == 1) {
            broke = 1;
            break;
        }
        if (t == 0) {
            rc = IP_WAIT_DONE;
            break;
        }
        deadline_after(&grace, B_GRACE_NS);
        until = &grace;
    }
    give_waiter_slot(h, slot, word);
    if (rc == IP_WAIT_ERROR) {
        if (!c.broken)
            barrier_break_gen(h, gen); /* a party that leaves (Ctrl-C) breaks it */
        return leave(self, NULL);
    }
    if (broke || ld(&h->count) == gen + 1) /* timed out, or ended by a reset */
        return leave(self, broken_error());
    return leave(self, Py_BuildValue("(KKiO)", (unsigned long long)index, (unsigned long long)gen,
                                     -1, Py_False));
}

/* A coroutine's Barrier.wait (wait_async) is the same in steps that never
 * wait, the event loop waiting between them on the barrier's event:
 *   _barrier_arrive() -> (index, generation, slot, last) as _barrier_wait
 *     returns, or the generation to await the end of first (every party of
 *     it is in: the arrival is for the next one);
 *   _barrier_ended(generation) -> whether it has ended; BrokenBarrierError
 *     if it broke, or if a party of it died waiting (it is broken then);
 *   _barrier_timed_out(generation, recheck) -> as barrier_timed_out;
 *   _barrier_leave(generation, slot, abandon) gives the slot back, breaks
 *     the generation if `abandon` (a party that leaves early: cancelled),
 *     and returns whether a reset ended it (broken for its parties). */
static PyObject *SyncCore_barrier_arrive(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    uint64_t key = ip_ident_get(&self->ident, self->fd, 1);
    if (key == 0)
        return leave(self, NULL);
    uint64_t index, gen;
    int slot, arrived = barrier_arrive(self, key, &index, &gen, &slot);
    if (arrived <= 0)
        return leave(self, arrived < 0 ? broken_error() : PyLong_FromUnsignedLongLong(gen));
    return leave(self, Py_BuildValue("(KKiO)", (unsigned long long)index, (unsigned long long)gen,
                                     slot, index + 1 == self->maxvalue ? Py_True : Py_False));
}

static int barrier_gen_arg(SyncCore *self, PyObject *arg, barrier_ctx *c)
{
    unsigned long long gen = PyLong_AsUnsignedLongLong(arg);
    if (gen == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (enter(self) < 0)
        return -1;
    *c = (barrier_ctx){self, gen, ip_ident_get(&self->ident, self->fd, 1), 0};
    if (c->mine == 0) {
        leave(self, NULL);
        return -1;
    }
    return 0;
}

static PyObject *SyncCore_barrier_ended(SyncCore *self, PyObject *arg)
{
    barrier_ctx c;
    if (barrier_gen_arg(self, arg, &c) < 0)
        return NULL;
    return try_once(self, barrier_attempt, &c, 1);
}

static PyObject *SyncCore_barrier_timed_out_py(SyncCore *self, PyObject *args)
{
    PyObject *gen;
    int recheck;
    barrier_ctx c;
    if (!PyArg_ParseTuple(args, "Op:_barrier_timed_out", &gen, &recheck)
        || barrier_gen_arg(self, gen, &c) < 0)
        return NULL;
    return leave(self, PyLong_FromLong(barrier_timed_out(&c, self->maxvalue, recheck)));
}

static PyObject *SyncCore_barrier_leave(SyncCore *self, PyObject *args)
{
    unsigned long long gen;
    int slot, abandon;
    if (!PyArg_ParseTuple(args, "Kip:_barrier_leave", &gen, &slot, &abandon) || enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    give_waiter_slot(h, slot, B_TAG((uint64_t)gen) | ip_ident_fast(&self->ident));
    if (abandon)
        barrier_break_gen(h, gen);
    return leave(self, PyBool_FromLong(ld(&h->count) == gen + 1));
}

/* _barrier_release(generation, slot): the last party, after the action,
 * starts the next generation, unless the barrier broke meanwhile. */
static PyObject *SyncCore_barrier_release(SyncCore *self, PyObject *args)
{
    unsigned long long gen;
    int slot;
    if (!PyArg_ParseTuple(args, "Ki:_barrier_release", &gen, &slot) || enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    give_waiter_slot(h, slot, B_TAG((uint64_t)gen) | ip_ident_fast(&self->ident));
    uint64_t cur = ld(&h->value);
    for (;;) {
        if (B_GEN(cur) != gen || (cur & B_BROKEN))
            return leave(self, broken_error());
        if (__atomic_compare_exchange_n(&h->value, &cur, (B_GEN(cur) + 1) << 32, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            break;
    }
    barrier_signal(h);
    return leave(self, Py_NewRef(Py_None));
}

/* _barrier_abort([generation, slot]): breaks the barrier, whatever its
 * generation; the last party whose action failed gives its slot back. */
static PyObject *SyncCore_barrier_abort(SyncCore *self, PyObject *args)
{
    unsigned long long gen = 0;
    int slot = -1;
    if (!PyArg_ParseTuple(args, "|Ki:_barrier_abort", &gen, &slot) || enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    give_waiter_slot(h, slot, B_TAG((uint64_t)gen) | ip_ident_fast(&self->ident));
    __atomic_or_fetch(&h->value, B_BROKEN, __ATOMIC_SEQ_CST);
    barrier_signal(h);
    return leave(self, Py_NewRef(Py_None));
}

static PyObject *SyncCore_barrier_reset(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    uint64_t mine = ip_ident_fast(&self->ident);
    for (int i = 0; i < IP_SYNC_WAITER_SLOTS; i++) { /* forget parties that died */
        uint64_t t = ld(&h->waiting[i]);
        if (t && !key_alive(self, t, mine))
            cas(&h->waiting[i], t, 0);
    }
    uint64_t cur = ld(&h->value);
    /* Waiters of the ending generation see it ended by a reset: broken for them. */
    __atomic_store_n(&h->count, B_GEN(cur) + 1, __ATOMIC_SEQ_CST);
    while (!__atomic_compare_exchange_n(&h->value, &cur, (B_GEN(cur) + 1) << 32, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        __atomic_store_n(&h->count, B_GEN(cur) + 1, __ATOMIC_SEQ_CST);
    barrier_signal(h);
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

/* ------------------------------------------------------------------ */

static PyObject *SyncCore_statistics(SyncCore *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    PyObject *waiters = PyLong_FromUnsignedLong(live_waiters(self));
    PyObject *d = NULL;
    if (waiters == NULL)
        return leave(self, NULL);
    if (is_lock(self->kind)) {
        uint64_t owner = ld(&h->owner);
        uint64_t depth = !owner ? 0 : self->kind == IP_KIND_RLOCK ? h->count : 1;
        PyObject *pid = owner ? PyLong_FromUnsignedLongLong(ld(&h->owner_pid)) : Py_NewRef(Py_None);
        if (pid && self->segkind == IP_KIND_CONDITION)
            d = Py_BuildValue("{s:O,s:N,s:K,s:N,s:K,s:K}", "locked", owner ? Py_True : Py_False,
                              "owner_pid", pid, "recursion", (unsigned long long)depth, "waiters",
                              Py_NewRef(waiters), "owner_deaths",
                              (unsigned long long)ld(&h->recoveries), "condition_waiters",
                              (unsigned long long)cond_waiters(h));
        else if (pid)
            d = Py_BuildValue("{s:O,s:N,s:K,s:N,s:K}", "locked", owner ? Py_True : Py_False,
                              "owner_pid", pid, "recursion", (unsigned long long)depth, "waiters",
                              Py_NewRef(waiters), "owner_deaths",
                              (unsigned long long)ld(&h->recoveries));
    } else if (self->segkind == IP_KIND_BARRIER) {
        uint64_t cur = ld(&h->value);
        d = Py_BuildValue("{s:K,s:K,s:O,s:N}", "parties", (unsigned long long)self->maxvalue,
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

static PyObject *SyncCore_set_wait_slice(PyObject *Py_UNUSED(cls), PyObject *arg)
{
    double secs = PyFloat_AsDouble(arg);
    if (secs == -1.0 && PyErr_Occurred())
        return NULL;
    ip_wait_set_slice(secs > 0 && secs < 1e6 ? (int64_t)(secs * 1e9) : 0);
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
    return PyLong_FromUnsignedLongLong(self->released ? 0 : self->uid);
}

static PyObject *get_meta(SyncCore *self, void *Py_UNUSED(c))
{
    if (self->released || self->meta == NULL)
        return closed_error(), NULL;
    return Py_NewRef(self->meta);
}

static PyObject *get_data_size(SyncCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->released ? 0 : self->data_size);
}

static PyObject *get_maxvalue(SyncCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->released ? 0 : self->maxvalue);
}

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL | METH_KEYWORDS

/* _bell(which, bell) / _bell(which, slot, bell): an asyncio loop's bell
 * on the event of lock, semaphore, Event and Barrier waiters (0), or of a
 * Condition's waiters without a slot (1) and in slot i (2 + i). */
static PyObject *SyncCore_bell(SyncCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    long last = self->segkind == IP_KIND_CONDITION ? 1 + IP_COND_SLOTS : 0;
    long which = ip_bell_which(args, nargs, last);
    if (which < 0 || enter(self) < 0)
        return NULL;
    ip_sync_hdr_t *h = self->hdr;
    ip_event_t *ev = which == 0 ? &h->ev : which == 1 ? &h->cond_ev : &h->cond[which - 2].ev;
    return leave(self, ip_bell_py(ev, args + 1, nargs - 1));
}

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
    {"_bell", (PyCFunction)(void (*)(void))SyncCore_bell, METH_FASTCALL, NULL},
    {"_acquire_as", (PyCFunction)(void (*)(void))SyncCore_acquire_as, METH_FASTCALL, NULL},
    {"_set_task_owner_hook", (PyCFunction)ip_set_task_owner_hook, METH_O | METH_STATIC, NULL},
    {"_release_as", (PyCFunction)SyncCore_release_as, METH_O, NULL},
    {"statistics", (PyCFunction)SyncCore_statistics, METH_NOARGS,
     "statistics($self, /)\n--\n\nA dict describing the current state: who holds it, how many "
     "wait."},
    {"close", (PyCFunction)SyncCore_close, METH_NOARGS,
     "close($self, /)\n--\n\nRelease this handle; the object itself lives on in other handles.\n"
     "Buffers over a Value's data stay valid until released."},
    {"_after_fork", (PyCFunction)SyncCore_after_fork, METH_NOARGS, NULL},
    {"_cond_wait", (PyCFunction)(void (*)(void))SyncCore_cond_wait, METH_FASTCALL, NULL},
    {"_cond_notify", (PyCFunction)SyncCore_cond_notify, METH_O, NULL},
    {"_cond_enter", (PyCFunction)(void (*)(void))SyncCore_cond_enter, METH_FASTCALL, NULL},
    {"_cond_notified", (PyCFunction)SyncCore_cond_notified, METH_VARARGS, NULL},
    {"_cond_leave", (PyCFunction)SyncCore_cond_leave, METH_VARARGS, NULL},
    {"_is_owned", (PyCFunction)SyncCore_is_owned, METH_NOARGS, NULL},
    {"_owner_state", (PyCFunction)SyncCore_owner_state, METH_NOARGS, NULL},
    {"_release_save", (PyCFunction)SyncCore_release_save, METH_NOARGS, NULL},
    {"_acquire_restore", (PyCFunction)SyncCore_acquire_restore, METH_O, NULL},
    {"_barrier_wait", (PyCFunction)SyncCore_barrier_wait, METH_O, NULL},
    {"_barrier_release", (PyCFunction)SyncCore_barrier_release, METH_VARARGS, NULL},
    {"_barrier_arrive", (PyCFunction)SyncCore_barrier_arrive, METH_NOARGS, NULL},
    {"_barrier_ended", (PyCFunction)SyncCore_barrier_ended, METH_O, NULL},
    {"_barrier_timed_out", (PyCFunction)SyncCore_barrier_timed_out_py, METH_VARARGS, NULL},
    {"_barrier_leave", (PyCFunction)SyncCore_barrier_leave, METH_VARARGS, NULL},
    {"_barrier_abort", (PyCFunction)SyncCore_barrier_abort, METH_VARARGS, NULL},
    {"_barrier_reset", (PyCFunction)SyncCore_barrier_reset, METH_NOARGS, NULL},
    {"_barrier_state", (PyCFunction)SyncCore_barrier_state, METH_NOARGS, NULL},
    {"_set_wait_slice", (PyCFunction)SyncCore_set_wait_slice, METH_O | METH_STATIC,
     "Tests only: the longest single sleep of every wait in this process, in seconds (0: the "
     "default)."},
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
    .tp_doc = "SyncCore(fd, kind, value=0, maxvalue=0, create=False, data_size=0, meta=b'')\n--\n\n"
              "A synchronization object in a segment.  Takes ownership of fd, also when it\n"
              "raises.  Exports its data area (a Value's or Array's) as a writable buffer.",
    .tp_new = SyncCore_new,
    .tp_dealloc = (destructor)SyncCore_dealloc,
    .tp_as_buffer = &SyncCore_as_buffer,
    .tp_methods = SyncCore_methods,
    .tp_getset = SyncCore_getset,
    .tp_weaklistoffset = offsetof(SyncCore, weakreflist),
};

uint8_t *ip_sync_data(PyObject *obj, uint64_t *size)
{
    SyncCore *self = (SyncCore *)obj;
    if (self->closed || self->hdr == NULL) {
        closed_error();
        return NULL;
    }
    *size = self->data_size;
    return (uint8_t *)self->hdr + IP_SYNC_HDR_SIZE;
}

int ip_sync_init_module(PyObject *m)
{
    /* multiprocessing.Lock raises ValueError here, threading.Lock (and so a
     * multiprocessing manager's Lock proxy) RuntimeError: code written for
     * either catches this one. */
    PyObject *bases = PyTuple_Pack(2, PyExc_ValueError, PyExc_RuntimeError);
    if (bases == NULL)
        return -1;
    ip_UnlockedReleaseError = PyErr_NewExceptionWithDoc(
        "interproc.synchronize.UnlockedReleaseError",
        "release() of a Lock that is not locked: a ValueError, as multiprocessing.Lock\n"
        "raises, and a RuntimeError, as threading.Lock raises.",
        bases, NULL);
    Py_DECREF(bases);
    if (ip_UnlockedReleaseError == NULL
        || PyModule_AddObjectRef(m, "UnlockedReleaseError", ip_UnlockedReleaseError) < 0)
        return -1;
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
    if (pthread_atfork(NULL, NULL, forget_pid) != 0)
        return -1;
    return 0;
}
