/* Receive buffers: the memory a large message is copied into when it leaves
 * the ring, and that the receiver's objects (NumPy arrays rebuilt over
 * out-of-band buffers) then lie over.
 *
 * Fresh memory from the kernel is faulted in and zeroed page by page on its
 * first write: for a 100 MiB message that costs as much as the copy itself.
 * So a large buffer is an anonymous mapping of its own, with transparent
 * huge pages asked for, and the last one freed is kept for the next message
 * of a similar size: a stream of large items then copies into memory that
 * is already there.  The kept mapping is dropped once it has been idle for
 * a while (ip_recv_buffers_trim, called by a receiver about to sleep), so
 * a stream that stops leaves nothing behind.
 *
 * The type exports its memory read-write and is not tracked by the garbage
 * collector: making one under a ring lock runs no Python code.  Everything
 * here runs with the GIL held.
 */
#include "interproc.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

/* Smaller messages land in a bytearray: malloc serves them well. */
#define IP_RECV_MAPPED_MIN (1u << 20)
#define IP_HUGE_PAGE (2u << 20)
/* A kept mapping serves a message up to this many times smaller. */
#define IP_RECV_REUSE_FACTOR 2
/* ... and is given back after this long unused. */
#define IP_RECV_IDLE_NS 1000000000LL

/* One anonymous mapping: `cap` usable bytes from `data`, which is huge-page
 * aligned when the mapping is large. */
typedef struct {
    uint8_t *map;
    size_t map_len;
    uint8_t *data;
    size_t cap;
} mapping_t;

typedef struct {
    PyObject_HEAD
    mapping_t m;
    Py_ssize_t len;
    pid_t pid; /* a mapping inherited through fork is the child's copy */
} RecvBuffer;

static struct {
    mapping_t m; /* m.map NULL: none kept */
    int64_t since;
    pid_t pid;
} kept;

static void unmap_kept(void)
{
    if (kept.m.map != NULL && kept.pid == getpid())
        munmap(kept.m.map, kept.m.map_len);
    kept.m.map = NULL;
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* A mapping of at least `len` usable bytes: the kept one if it fits and is
 * not too big for it, else a new one. */
static int take_mapping(size_t len, mapping_t *m)
{
    if (kept.m.map != NULL && kept.pid == getpid() && kept.m.cap >= len
        && kept.m.cap / IP_RECV_REUSE_FACTOR <= len + IP_HUGE_PAGE) {
        *m = kept.m;
        kept.m.map = NULL;
        return 0;
    }
    unmap_kept();
    size_t cap = round_up(len, IP_PAGE);
    int huge = cap >= IP_HUGE_PAGE;
    if (huge)
        cap = round_up(cap, IP_HUGE_PAGE);
    /* One huge page more, to align the start on one. */
    size_t n = huge ? cap + IP_HUGE_PAGE : cap;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        PyErr_NoMemory();
        return -1;
    }
    m->map = p;
    m->map_len = n;
    m->data = p;
    m->cap = cap;
    if (huge) {
        m->data = (uint8_t *)round_up((uintptr_t)p, IP_HUGE_PAGE);
        /* Advice only: a kernel without transparent huge pages ignores it. */
        madvise(m->data, cap, MADV_HUGEPAGE);
    }
    return 0;
}

static void RecvBuffer_dealloc(RecvBuffer *self)
{
    if (self->m.map != NULL && self->pid == getpid()) {
        /* Kept for the next message, unless a bigger one is kept already. */
        if (kept.m.map == NULL || kept.pid != getpid() || kept.m.cap < self->m.cap) {
            unmap_kept();
            kept.m = self->m;
            kept.since = ip_now_ns();
            kept.pid = self->pid;
        } else {
            munmap(self->m.map, self->m.map_len);
        }
    }
    /* A buffer inherited through fork leaves the mapping to its parent. */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int RecvBuffer_getbuffer(RecvBuffer *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->m.data, self->len, 0, flags);
}

static PyBufferProcs RecvBuffer_as_buffer = {
    .bf_getbuffer = (getbufferproc)RecvBuffer_getbuffer,
};

static Py_ssize_t RecvBuffer_length(RecvBuffer *self)
{
    return self->len;
}

static PySequenceMethods RecvBuffer_as_sequence = {
    .sq_length = (lenfunc)RecvBuffer_length,
};

PyTypeObject ip_RecvBuffer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "interproc._core.RecvBuffer",
    .tp_doc = PyDoc_STR("Memory a large message was received into; the objects rebuilt\n"
                        "from it lie over it, and keep it alive."),
    .tp_basicsize = sizeof(RecvBuffer),
    .tp_dealloc = (destructor)RecvBuffer_dealloc,
    .tp_as_buffer = &RecvBuffer_as_buffer,
    .tp_as_sequence = &RecvBuffer_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

PyObject *ip_recv_buffer_new(uint64_t len, uint8_t **data)
{
    if (len > (uint64_t)PY_SSIZE_T_MAX - IP_HUGE_PAGE * 2) {
        PyErr_NoMemory();
        return NULL;
    }
    if (len < IP_RECV_MAPPED_MIN) {
        PyObject *b = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)len);
        if (b != NULL)
            *data = (uint8_t *)PyByteArray_AS_STRING(b);
        return b;
    }
    RecvBuffer *self = PyObject_New(RecvBuffer, &ip_RecvBuffer_Type);
    if (self == NULL)
        return NULL;
    self->m.map = NULL;
    self->len = 0;
    self->pid = getpid();
    if (take_mapping((size_t)len, &self->m) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->len = (Py_ssize_t)len;
    *data = self->m.data;
    return (PyObject *)self;
}

void ip_recv_buffers_trim(void)
{
    if (kept.m.map != NULL && ip_now_ns() - kept.since >= IP_RECV_IDLE_NS)
        unmap_kept();
}

/* For the receivers written in Python (the Redis backend): the same warm
 * memory, which the caller fills. */
static PyObject *receive_buffer(PyObject *mod, PyObject *arg)
{
    (void)mod;
    /* An exact int only: no __index__ of the caller's runs here. */
    if (!PyLong_CheckExact(arg)) {
        PyErr_Format(PyExc_TypeError, "receive_buffer() takes an int, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    Py_ssize_t len = PyLong_AsSsize_t(arg);
    if (len == -1 && PyErr_Occurred())
        return NULL;
    if (len < 0) {
        PyErr_SetString(PyExc_ValueError, "receive_buffer() takes a length of 0 or more");
        return NULL;
    }
    uint8_t *data;
    return ip_recv_buffer_new((uint64_t)len, &data);
}

static PyObject *trim_receive_buffers(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    ip_recv_buffers_trim();
    Py_RETURN_NONE;
}

PyMethodDef ip_buffer_methods[] = {
    {"receive_buffer", receive_buffer, METH_O,
     PyDoc_STR("receive_buffer(n) -> writable buffer of n bytes, contents unset\n\n"
               "The memory a queue receives a large message into: from 1 MiB a\n"
               "mapping of its own with huge pages asked for, the last one freed\n"
               "kept for the next message of a similar size.")},
    {"trim_receive_buffers", trim_receive_buffers, METH_NOARGS,
     PyDoc_STR("trim_receive_buffers()\n\n"
               "Give back the kept receive mapping once it has been idle a second:\n"
               "for a receiver about to wait.")},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* Copies                                                              */

#if defined(__x86_64__)
/* Non-temporal stores: the destination's lines are written whole, not read
 * first, and do not take the cache from the data still to be read. */
static void copy_streaming(uint8_t *dst, const uint8_t *src, size_t len)
{
    size_t head = (size_t)(-(uintptr_t)dst & 63);
    memcpy(dst, src, head);
    dst += head;
    src += head;
    len -= head;
    for (; len >= 64; len -= 64, dst += 64, src += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)src);
        __m128i b = _mm_loadu_si128((const __m128i *)(src + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + 48));
        _mm_stream_si128((__m128i *)dst, a);
        _mm_stream_si128((__m128i *)(dst + 16), b);
        _mm_stream_si128((__m128i *)(dst + 32), c);
        _mm_stream_si128((__m128i *)(dst + 48), d);
    }
    /* Non-temporal stores are not ordered by the release store that later
     * publishes the message: the fence makes them visible before it. */
    _mm_sfence();
    memcpy(dst, src, len);
}
#endif

void ip_bulk_copy(uint8_t *dst, const void *src, uint64_t len)
{
    if (len < IP_NOGIL_COPY) {
        memcpy(dst, src, (size_t)len);
        return;
    }
    Py_BEGIN_ALLOW_THREADS
#if defined(__x86_64__)
    if (len >= IP_STREAM_COPY)
        copy_streaming(dst, src, (size_t)len);
    else
#endif
        memcpy(dst, src, (size_t)len);
    Py_END_ALLOW_THREADS
}

/* ------------------------------------------------------------------ */
/* Messages read in place                                              */

/* The payload of a message pinned in its ring region (ip_view_t),
 * exported read-only.  It keeps its owner (the handle whose mapping holds
 * the memory) open, and gives the pin back when it goes: the objects
 * rebuilt over it hold it through their memoryviews, so the memory stays
 * valid exactly as long as something can still read it. */
typedef struct {
    PyObject_HEAD
    PyObject *owner;
    ip_ringview_t *ring;
    void (*done)(PyObject *owner);
    ip_view_t view;
    pid_t pid;
} SharedBuffer;

static void SharedBuffer_dealloc(SharedBuffer *self)
{
    /* A copy inherited through fork pins nothing of its own. */
    if (self->pid == getpid()) {
        ip_ring_unpin(self->ring, self->view.pins, self->view.region, self->view.key);
        self->done(self->owner);
    }
    Py_DECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int SharedBuffer_getbuffer(SharedBuffer *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, (void *)self->view.data,
                             (Py_ssize_t)self->view.len, 1, flags);
}

static PyBufferProcs SharedBuffer_as_buffer = {
    .bf_getbuffer = (getbufferproc)SharedBuffer_getbuffer,
};

PyTypeObject ip_SharedBuffer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "interproc._core.SharedBuffer",
    .tp_doc = PyDoc_STR("A message read in place in shared memory, read-only; the objects\n"
                        "rebuilt from it lie over it, and keep it pinned."),
    .tp_basicsize = sizeof(SharedBuffer),
    .tp_dealloc = (destructor)SharedBuffer_dealloc,
    .tp_as_buffer = &SharedBuffer_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

PyObject *ip_view_decode(PyObject *owner, ip_ringview_t *ring, const ip_view_t *view,
                         void (*done)(PyObject *owner))
{
    SharedBuffer *self = PyObject_New(SharedBuffer, &ip_SharedBuffer_Type);
    if (self == NULL) {
        ip_ring_unpin(ring, view->pins, view->region, view->key);
        done(owner);
        return NULL;
    }
    self->owner = Py_NewRef(owner);
    self->ring = ring;
    self->done = done;
    self->view = *view;
    self->pid = getpid();
    PyObject *obj = ip_deserialize(IP_REC_OOB, (PyObject *)self);
    Py_DECREF(self); /* the object holds it if it lies over it */
    return obj;
}
