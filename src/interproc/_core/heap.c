/* Heap: the shared memory behind SharedDict, SharedList and Namespace.
 *
 * One segment holds any number of containers, one robust lock, an undo log
 * and a size-class allocator.  Every operation runs under the lock as one
 * transaction: each word of existing state it changes is first recorded in
 * the undo log (offset, old value), and the log is emptied when the
 * operation is done.  Whoever takes the lock over from a dead holder plays
 * the log backwards, which restores the state before the interrupted
 * operation.  New data (items, tables) is written into freshly allocated
 * blocks that nothing points at until a logged store publishes them, so it
 * needs no logging.  Blocks an operation releases are freed only after it
 * commits; a death between the commit and those frees leaks the blocks
 * inside the heap (never corrupts it) until the heap itself is freed.
 *
 * The file only grows.  Every process maps all of it; a process that finds
 * the heap grown by another (h->size beyond its mapping) remaps with
 * mremap, which may move the mapping, so pointers into the heap are
 * re-derived from offsets after anything that can allocate.
 */
#define _GNU_SOURCE
#include "interproc.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pythread.h"
#include "structmember.h"

#define BLOCK_HDR 8u
#define TAG_USED 0xA1u
#define TAG_FREE 0xF3u
#define INITIAL_HEAP (256u * 1024u)
#define GROW_STEP_MAX (1ull << 30)
/* Freed blocks at least this large give their inner pages back to the OS. */
#define PUNCH_MIN (64u * 1024u)
/* After a transaction that used more of the log than this, its pages are
 * given back too. */
#define LOG_KEEP_ENTRIES 8192u
/* Operations that change many entries commit early when fewer than this
 * many undo entries are left (one operation never needs more). */
#define LOG_RESERVE 4096u

static long cur_pid;

static void after_fork_child(void)
{
    cur_pid = (long)getpid();
}

/* ---------------------------------------------------------------- sizes */

static inline uint32_t class_of(uint64_t n)
{
    if (n <= 256)
        return n <= 16 ? 0 : (uint32_t)((n + 15) / 16 - 1);
    uint64_t m = n - 1;
    uint32_t b = 63u - (uint32_t)__builtin_clzll(m);
    uint64_t base = 1ull << b;
    uint32_t j = (uint32_t)((m - base) >> (b - 2));
    return 16u + (b - 8u) * 4u + j;
}

static inline uint64_t class_size(uint32_t c)
{
    if (c < 16)
        return 16ull * (c + 1);
    uint32_t b = 8u + (c - 16u) / 4u, j = (c - 16u) % 4u;
    return (1ull << b) + (uint64_t)(j + 1) * (1ull << (b - 2));
}

#define HEAP_LOCK(hp) (&(hp)->fixed->lock)

static inline uint64_t *word(ip_heap_t *hp, uint64_t off)
{
    return (uint64_t *)(hp->base + off);
}

static inline uint64_t hdr_off(ip_heap_t *hp, uint64_t *field)
{
    return (uint64_t)((uint8_t *)field - hp->base);
}

/* ------------------------------------------------------------ undo log */

static inline ip_undo_t *undo_log(ip_heap_t *hp)
{
    return (ip_undo_t *)(hp->base + IP_HEAP_LOG_OFFSET);
}

int ip_heap_set(ip_heap_t *hp, uint64_t off, uint64_t v)
{
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t n = h->log_count;
    if (n >= IP_HEAP_LOG_CAP) {
        PyErr_SetString(PyExc_MemoryError, "one operation changed more words than the undo log holds");
        return -1;
    }
    ip_undo_t *e = &undo_log(hp)[n];
    e->off = off;
    e->old = *word(hp, off);
    /* The entry must be complete before it counts, and counted before the
     * word changes: a death between any two steps then rolls back right. */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&h->log_count, n + 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(word(hp, off), v, __ATOMIC_RELAXED);
    return 0;
}

static void rollback(ip_heap_t *hp)
{
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t n = h->log_count;
    if (n > IP_HEAP_LOG_CAP)
        n = IP_HEAP_LOG_CAP;
    ip_undo_t *log = undo_log(hp);
    for (uint64_t i = n; i-- > 0;) {
        uint64_t off = log[i].off;
        if (off >= IP_HEAP_LOG_OFFSET && off < IP_HEAP_START)
            continue; /* never inside the log itself */
        if (off % 8 || off + 8 > hp->mapped)
            continue; /* a torn entry, written but not counted: harmless to skip */
        *word(hp, off) = log[i].old;
    }
    __atomic_store_n(&h->log_count, 0, __ATOMIC_RELEASE);
}

static void give_back(ip_heap_t *hp, uint64_t start, uint64_t end)
{
    start = (start + IP_PAGE - 1) & ~(uint64_t)(IP_PAGE - 1);
    end &= ~(uint64_t)(IP_PAGE - 1);
    if (end > start)
        (void)fallocate(hp->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)start,
                        (off_t)(end - start));
}

/* ------------------------------------------------------------- mapping */

static int remap(ip_heap_t *hp, uint64_t size)
{
    if (size <= hp->mapped)
        return 0;
    void *p = mremap(hp->base, (size_t)hp->mapped, (size_t)size, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    hp->base = p;
    hp->mapped = size;
    return 0;
}

static int grow(ip_heap_t *hp, uint64_t need)
{
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t size = h->size;
    uint64_t step = size < GROW_STEP_MAX ? size : GROW_STEP_MAX;
    uint64_t want = size + step;
    if (want < need)
        want = need;
    want = (want + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
    struct stat st;
    if (fstat(hp->fd, &st) != 0 || ((uint64_t)st.st_size < want && ftruncate(hp->fd, (off_t)want) != 0)) {
        PyErr_Format(PyExc_MemoryError, "the shared heap cannot grow to %llu bytes: %s",
                     (unsigned long long)want, strerror(errno));
        return -1;
    }
    if (remap(hp, want) < 0)
        return -1;
    IP_HHDR(hp)->size = want; /* only grows, so a rollback has nothing to restore */
    return 0;
}

/* ----------------------------------------------------------- allocator */

uint64_t ip_heap_alloc(ip_heap_t *hp, uint64_t size)
{
    if (size > (1ull << 46)) {
        PyErr_SetString(PyExc_MemoryError, "object too large for a shared heap");
        return 0;
    }
    uint32_t c = class_of(size + BLOCK_HDR);
    uint64_t csize = class_size(c);
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t p = h->free_heads[c];
    if (p != 0) {
        if (p < IP_HEAP_START + BLOCK_HDR || p + 8 > hp->mapped) {
            PyErr_SetString(ip_SegmentError, "shared heap is corrupt (bad free list)");
            return 0;
        }
        uint64_t next = *word(hp, p);
        if (ip_heap_set(hp, p, 0) < 0 || ip_heap_set(hp, hdr_off(hp, &h->free_heads[c]), next) < 0
            || ip_heap_set(hp, p - BLOCK_HDR, (uint64_t)TAG_USED << 8 | c) < 0)
            return 0;
    } else {
        uint64_t top = h->top;
        if (top + csize > h->size) {
            if (grow(hp, top + csize) < 0)
                return 0;
            h = IP_HHDR(hp);
        }
        if (ip_heap_set(hp, hdr_off(hp, &h->top), top + csize) < 0)
            return 0;
        *word(hp, top) = (uint64_t)TAG_USED << 8 | c;
        p = top + BLOCK_HDR;
    }
    h = IP_HHDR(hp);
    if (ip_heap_set(hp, hdr_off(hp, &h->live_bytes), h->live_bytes + csize) < 0)
        return 0;
    return p;
}

/* Outside any transaction: the block is unreachable, so the order of the
 * stores alone keeps a death harmless (at worst the block leaks). */
static void free_now(ip_heap_t *hp, uint64_t p)
{
    if (p < IP_HEAP_START + BLOCK_HDR || p + 8 > hp->mapped)
        return;
    uint64_t hd = *word(hp, p - BLOCK_HDR);
    uint32_t c = (uint32_t)(hd & 0xff);
    if ((hd >> 8 & 0xff) != TAG_USED || c >= IP_HEAP_NCLASSES)
        return; /* not an allocated block: never free twice */
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t csize = class_size(c);
    if (csize >= PUNCH_MIN)
        give_back(hp, p + 8, p - BLOCK_HDR + csize);
    *word(hp, p) = h->free_heads[c];
    *word(hp, p - BLOCK_HDR) = (uint64_t)TAG_FREE << 8 | c;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    h->free_heads[c] = p;
    h->live_bytes -= csize;
}

int ip_heap_free_later(ip_heap_t *hp, uint64_t off)
{
    if (off == 0)
        return 0;
    if (hp->ndeferred == hp->cap_deferred) {
        size_t cap = hp->cap_deferred ? hp->cap_deferred * 2 : 64;
        uint64_t *d = PyMem_Realloc(hp->deferred, cap * sizeof *d);
        if (d == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        hp->deferred = d;
        hp->cap_deferred = cap;
    }
    hp->deferred[hp->ndeferred++] = off;
    return 0;
}

/* ------------------------------------------------------------- objects */

static uint64_t next_oid(void)
{
    static uint64_t state;
    static long state_pid;
    if (state == 0 || state_pid != cur_pid) {
        if (getrandom(&state, sizeof state, 0) != (ssize_t)sizeof state)
            state = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull;
        state ^= (uint64_t)cur_pid << 32;
        state_pid = cur_pid;
    }
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 1;
}

ip_obj_t *ip_heap_obj(ip_heap_t *hp, uint64_t off, uint32_t type, uint64_t oid)
{
    if (off < IP_HEAP_START + BLOCK_HDR || off % 8 || off + sizeof(ip_obj_t) > hp->mapped)
        return NULL;
    ip_obj_t *o = IP_HOFF(hp, off);
    if (o->oid == 0 || (oid && o->oid != oid))
        return NULL;
    if (type ? o->type != type : (o->type < IP_OBJ_DICT || o->type > IP_OBJ_NAMESPACE))
        return NULL;
    return o;
}

uint64_t ip_heap_obj_new(ip_heap_t *hp, uint32_t type)
{
    uint64_t off = ip_heap_alloc(hp, sizeof(ip_obj_t));
    if (off == 0)
        return 0;
    ip_obj_t *o = IP_HOFF(hp, off);
    memset(o, 0, sizeof *o);
    o->type = type;
    o->oid = next_oid();
    ip_heap_hdr_t *h = IP_HHDR(hp);
    if (ip_heap_set(hp, hdr_off(hp, &h->objects), h->objects + 1) < 0)
        return 0;
    return off;
}

int ip_heap_obj_release(ip_heap_t *hp, uint64_t off)
{
    ip_obj_t *o = ip_heap_obj(hp, off, 0, 0);
    if (o != NULL && o->refs == 0 && o->handles == 0)
        return ip_heap_free_later(hp, off | 1);
    return 0;
}

/* Frees a container nothing holds any more, after the commit: its tables,
 * its items, and the containers only its items held. */
static void free_object(ip_heap_t *hp, uint64_t off)
{
    ip_obj_t *o = ip_heap_obj(hp, off, 0, 0);
    if (o == NULL || o->refs != 0 || o->handles != 0)
        return;
    o->oid = 0;
    if (o->type == IP_OBJ_LIST) {
        for (uint64_t i = 0; i < o->used; i++) {
            uint64_t it = ((uint64_t *)IP_HOFF(hp, o->items))[i];
            ip_litem_t *li = IP_HOFF(hp, it);
            if (li->vtype == IP_VAL_REF) {
                uint64_t t = *(uint64_t *)(li + 1);
                ip_obj_t *to = ip_heap_obj(hp, t, 0, 0);
                if (to && to->refs > 0 && --to->refs == 0 && to->handles == 0)
                    (void)ip_heap_free_later(hp, t | 1);
            }
            (void)ip_heap_free_later(hp, it);
        }
    } else if (o->items) {
        ip_dentry_t *e = IP_HOFF(hp, o->items);
        for (uint64_t i = 0; i < o->nitems; i++) {
            if (e[i].item == 0)
                continue;
            ip_ditem_t *di = IP_HOFF(hp, e[i].item);
            if (di->vtype == IP_VAL_REF) {
                uint64_t t = *(uint64_t *)((uint8_t *)(di + 1) + di->klen + di->olen);
                ip_obj_t *to = ip_heap_obj(hp, t, 0, 0);
                if (to && to->refs > 0 && --to->refs == 0 && to->handles == 0)
                    (void)ip_heap_free_later(hp, t | 1);
            }
            (void)ip_heap_free_later(hp, e[i].item);
        }
    }
    o = IP_HOFF(hp, off);
    (void)ip_heap_free_later(hp, o->items);
    (void)ip_heap_free_later(hp, o->index);
    (void)ip_heap_free_later(hp, off);
    IP_HHDR(hp)->objects--;
}

/* ---------------------------------------------------------- the lock */

static void commit(ip_heap_t *hp)
{
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t used = h->log_count;
    __atomic_store_n(&h->log_count, 0, __ATOMIC_RELEASE);
    if (used > LOG_KEEP_ENTRIES)
        give_back(hp, IP_HEAP_LOG_OFFSET + LOG_KEEP_ENTRIES * sizeof(ip_undo_t),
                  IP_HEAP_LOG_OFFSET + used * sizeof(ip_undo_t) + IP_PAGE);
    /* free_object() may defer more: the list grows while it is walked */
    for (size_t i = 0; i < hp->ndeferred; i++) {
        uint64_t off = hp->deferred[i];
        if (off & 1)
            free_object(hp, off & ~(uint64_t)1);
        else
            free_now(hp, off);
    }
    hp->ndeferred = 0;
}

int ip_heap_checkpoint(ip_heap_t *hp)
{
    if (IP_HHDR(hp)->log_count + LOG_RESERVE < IP_HEAP_LOG_CAP)
        return 0;
    commit(hp);
    return 1;
}

/* Takes one hold of the lock, as an operation (`op`) or an acquire(). */
static int hold(ip_heap_t *hp, const ip_deadline_t *d, int op)
{
    if (hp->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the shared heap is closed");
        return -1;
    }
    unsigned long me = PyThread_get_thread_ident();
    if (hp->depth > 0 && hp->owner_pid == cur_pid && hp->owner_thread == me) {
        hp->depth++;
        hp->ops += op;
        return 0;
    }
    ip_heap_hdr_t *h = IP_HHDR(hp);
    int rc = pthread_mutex_trylock(HEAP_LOCK(hp));
    int res;
    if (rc == 0)
        res = IP_LOCK_OK;
    else if (rc == EOWNERDEAD)
        res = IP_LOCK_OWNER_DIED;
    else if (rc == EBUSY)
        res = ip_mutex_lock(HEAP_LOCK(hp), d);
    else {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (res == IP_LOCK_ERROR)
        return -1;
    if (res == IP_LOCK_TIMEOUT)
        return 1;
    hp->owner_thread = me;
    hp->owner_pid = cur_pid;
    hp->depth = 1;
    hp->ops = op;
    h = IP_HHDR(hp);
    if (h->size > hp->mapped && remap(hp, h->size) < 0) {
        if (res == IP_LOCK_OWNER_DIED)
            ip_mutex_consistent(HEAP_LOCK(hp));
        hp->depth = hp->ops = 0;
        pthread_mutex_unlock(HEAP_LOCK(hp));
        return -1;
    }
    h = IP_HHDR(hp);
    if (res == IP_LOCK_OWNER_DIED || h->log_count != 0) {
        rollback(hp);
        h->recoveries++;
        if (res == IP_LOCK_OWNER_DIED)
            ip_mutex_consistent(HEAP_LOCK(hp));
    }
    hp->ndeferred = 0;
    return 0;
}

int ip_heap_enter(ip_heap_t *hp, const ip_deadline_t *d)
{
    return hold(hp, d, 1);
}

static void drop_hold(ip_heap_t *hp)
{
    if (--hp->depth == 0)
        pthread_mutex_unlock(HEAP_LOCK(hp));
}

/* Only the outermost operation commits or rolls back: an inner one (a
 * handle collected while an operation allocates Python objects) only adds
 * to what the outer one frees. */
void ip_heap_leave(ip_heap_t *hp)
{
    if (--hp->ops == 0)
        commit(hp);
    drop_hold(hp);
}

void ip_heap_abort(ip_heap_t *hp)
{
    if (--hp->ops == 0) {
        rollback(hp);
        hp->ndeferred = 0;
    }
    drop_hold(hp);
}

/* ---------------------------------------------------------- values */

int ip_handle_check(ip_handle_t *h)
{
    if (h->heap == NULL) {
        PyErr_Format(PyExc_ValueError, "%.100s is closed", Py_TYPE(h)->tp_name);
        return -1;
    }
    return 0;
}

int ip_value_init(ip_heap_t *hp, ip_value_t *v, PyObject *obj)
{
    v->ref = 0;
    v->p.obj = NULL;
    if ((PyObject_TypeCheck(obj, &ip_DictCore_Type) || PyObject_TypeCheck(obj, &ip_ListCore_Type))
        && ((ip_handle_t *)obj)->heap != NULL) {
        ip_heap_t *other = ((ip_handle_t *)obj)->heap;
        if (other->uid == hp->uid) {
            v->ref = ((ip_handle_t *)obj)->off;
            v->p.type = IP_VAL_REF;
            v->p.data = NULL;
            v->p.len = 8;
            return 0;
        }
        /* Only the heap holding a container keeps it alive; stored elsewhere,
         * an anonymous one would be freed with its last handle and leave a
         * dangling reference behind.  A named one lives until unlinked. */
        if (other->kind == IP_KIND_HEAP) {
            PyErr_Format(PyExc_ValueError,
                         "an anonymous %.100s can only be stored in containers of its own heap "
                         "(the anonymous containers made in the same process); give it a name= "
                         "to store it in a named container",
                         Py_TYPE(obj)->tp_name);
            return -1;
        }
    }
    return ip_payload_init(&v->p, obj);
}

void ip_value_clear(ip_value_t *v)
{
    ip_payload_clear(&v->p);
}

void ip_value_write(const ip_value_t *v, uint8_t *dst)
{
    if (v->p.type != IP_VAL_REF) {
        ip_payload_write(&v->p, dst);
        return;
    }
    memcpy(dst, &v->ref, 8);
}

/* The count a stored reference adds: taken before the item is published. */
int ip_value_hold(ip_heap_t *hp, const ip_value_t *v)
{
    if (v->p.type != IP_VAL_REF)
        return 0;
    ip_obj_t *o = ip_heap_obj(hp, v->ref, 0, 0);
    if (o == NULL) {
        PyErr_SetString(PyExc_ValueError, "the shared container being stored was freed");
        return -1;
    }
    return ip_heap_set(hp, v->ref + offsetof(ip_obj_t, refs), o->refs + 1);
}

int ip_value_drop(ip_heap_t *hp, uint32_t vtype, const uint8_t *data)
{
    if (vtype != IP_VAL_REF)
        return 0;
    uint64_t t;
    memcpy(&t, data, 8);
    ip_obj_t *o = ip_heap_obj(hp, t, 0, 0);
    if (o == NULL || o->refs == 0)
        return 0;
    if (ip_heap_set(hp, t + offsetof(ip_obj_t, refs), o->refs - 1) < 0)
        return -1;
    return ip_heap_obj_release(hp, t);
}

PyObject *ip_value_copy(ip_heap_t *hp, uint32_t vtype, const uint8_t *data, uint64_t len, int *kind)
{
    *kind = IP_COPY_DONE;
    switch (vtype) {
    case IP_REC_PLAIN:
        return ip_plain_read(data, len);
    case IP_REC_BYTES:
        return PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
    case IP_REC_PICKLE:
        *kind = IP_COPY_PICKLE;
        return PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
    case IP_VAL_REF: {
        uint64_t t;
        memcpy(&t, data, 8);
        ip_obj_t *o = ip_heap_obj(hp, t, 0, 0);
        if (o == NULL) {
            PyErr_SetString(ip_SegmentError, "shared heap is corrupt (a stored container is gone)");
            return NULL;
        }
        PyObject *res = Py_BuildValue("(KIK)", (unsigned long long)t, (unsigned)o->type,
                                      (unsigned long long)o->oid);
        if (res == NULL)
            return NULL;
        o->handles++; /* the handle the factory makes counts itself as this one */
        *kind = IP_COPY_REF;
        return res;
    }
    default:
        PyErr_Format(ip_SegmentError, "shared heap is corrupt (item type %u)", vtype);
        return NULL;
    }
}

PyObject *ip_value_finish(ip_heap_t *hp, PyObject *copy, int kind)
{
    if (kind == IP_COPY_DONE)
        return copy;
    PyObject *res;
    if (kind == IP_COPY_PICKLE)
        res = PyObject_CallOneArg(ip_state.loads, copy);
    else if (hp->factory == NULL || hp->factory == Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "no factory for stored containers");
        res = NULL;
    } else
        res = PyObject_CallFunctionObjArgs(hp->factory, (PyObject *)hp, copy, NULL);
    Py_DECREF(copy);
    return res;
}

/* ---------------------------------------------------------- HeapCore */

static int heap_layout(ip_heap_t *hp, uint32_t kind, int create)
{
    size_t size;
    uint64_t file_size;
    if (create) {
        ip_heap_hdr_t *h = ip_segment_create(hp->fd, kind, IP_HEAP_HDR_SIZE, IP_HEAP_START + INITIAL_HEAP);
        if (h == NULL)
            return -1;
        hp->base = (uint8_t *)h;
        hp->mapped = IP_HEAP_START + INITIAL_HEAP;
        if ((hp->fixed = ip_map(hp->fd, IP_HEAP_HDR_SIZE, 0)) == NULL)
            return -1;
        if (ip_mutex_init(HEAP_LOCK(hp)) != 0) {
            PyErr_SetString(PyExc_OSError, "cannot initialize a process-shared mutex");
            return -1;
        }
        h->size = hp->mapped;
        h->top = IP_HEAP_START;
        hp->uid = h->seg.uid;
        hp->kind = kind;
        if (kind != IP_KIND_HEAP) {
            uint32_t type = kind == IP_KIND_DICT ? IP_OBJ_DICT
                            : kind == IP_KIND_LIST ? IP_OBJ_LIST : IP_OBJ_NAMESPACE;
            ip_deadline_t d = {.infinite = 1};
            if (ip_heap_enter(hp, &d) != 0)
                return -1;
            uint64_t root = ip_heap_obj_new(hp, type);
            if (root == 0) {
                ip_heap_abort(hp);
                return -1;
            }
            ((ip_obj_t *)IP_HOFF(hp, root))->refs = 1; /* a root is held by its name */
            IP_HHDR(hp)->root = root;
            ip_heap_leave(hp);
        }
        ip_segment_publish(&IP_HHDR(hp)->seg);
        return 0;
    }
    ip_heap_hdr_t *h = ip_segment_attach(hp->fd, kind, IP_HEAP_HDR_SIZE, &size, &file_size, NULL);
    if (h == NULL)
        return -1;
    hp->base = (uint8_t *)h;
    hp->mapped = size;
    hp->uid = h->seg.uid;
    hp->kind = kind;
    if ((hp->fixed = ip_map(hp->fd, IP_HEAP_HDR_SIZE, 0)) == NULL)
        return -1;
    if (size < IP_HEAP_START || h->size < size || h->size > file_size || h->top < IP_HEAP_START
        || h->top > h->size) {
        PyErr_SetString(ip_SegmentError, "shared heap header is corrupt (bad sizes)");
        return -1;
    }
    if (kind != IP_KIND_HEAP && h->root == 0) {
        PyErr_SetString(ip_SegmentError, "shared container has no root object");
        return -1;
    }
    return remap(hp, h->size);
}

static PyObject *HeapCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "kind", "create", NULL};
    int fd, create = 0;
    unsigned int kind;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iI|p:HeapCore", kwlist, &fd, &kind, &create))
        return NULL;
    if (kind < IP_KIND_HEAP || kind > IP_KIND_NAMESPACE) {
        PyErr_Format(PyExc_ValueError, "not a container kind: %u", kind);
        return NULL;
    }
    ip_heap_t *hp = (ip_heap_t *)type->tp_alloc(type, 0);
    if (hp == NULL)
        return NULL;
    hp->fd = fd; /* owned from here on, closed by dealloc even on failure */
    hp->factory = Py_NewRef(Py_None);
    if (heap_layout(hp, kind, create) < 0) {
        Py_DECREF(hp);
        return NULL;
    }
    return (PyObject *)hp;
}

static void HeapCore_dealloc(ip_heap_t *hp)
{
    PyObject_GC_UnTrack(hp);
    if (hp->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)hp);
    if (hp->depth > 0 && hp->owner_pid == cur_pid && hp->fixed)
        pthread_mutex_unlock(HEAP_LOCK(hp));
    if (hp->base)
        munmap(hp->base, (size_t)hp->mapped);
    if (hp->fixed)
        munmap(hp->fixed, IP_HEAP_HDR_SIZE);
    if (hp->fd >= 0)
        close(hp->fd);
    PyMem_Free(hp->deferred);
    Py_CLEAR(hp->factory);
    Py_TYPE(hp)->tp_free((PyObject *)hp);
}

static int HeapCore_traverse(ip_heap_t *hp, visitproc visit, void *arg)
{
    Py_VISIT(hp->factory);
    return 0;
}

static int HeapCore_clear(ip_heap_t *hp)
{
    Py_CLEAR(hp->factory);
    return 0;
}

PyDoc_STRVAR(acquire_doc, "acquire(block=True, timeout=None) -> bool\n--\n\n"
"Take the heap's lock; re-entrant for the thread that holds it.  While it is\n"
"held no other process or thread reads or changes any container of the heap.");

static PyObject *HeapCore_acquire(ip_heap_t *hp, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *vals[2] = {Py_True, Py_None};
    if (ip_parse_args("acquire", args, nargs, kwnames, names, 2, 0, vals) < 0)
        return NULL;
    int block = PyObject_IsTrue(vals[0]);
    if (block < 0)
        return NULL;
    ip_deadline_t d;
    PyObject *timeout = vals[1];
    if (!block)
        timeout = NULL;
    if (timeout != NULL && timeout != Py_None) {
        double t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        if (t < 0) /* as multiprocessing's locks: a negative timeout does not wait */
            block = 0;
    }
    if (ip_deadline_init(&d, block, block ? timeout : Py_None) < 0)
        return NULL;
    int rc = hold(hp, &d, 0);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc == 0);
}

static PyObject *HeapCore_release(ip_heap_t *hp, PyObject *Py_UNUSED(a))
{
    if (hp->base == NULL || hp->depth <= 0 || hp->owner_pid != cur_pid
        || hp->owner_thread != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return NULL;
    }
    drop_hold(hp);
    Py_RETURN_NONE;
}

static PyObject *HeapCore_is_owned(ip_heap_t *hp, PyObject *Py_UNUSED(a))
{
    return PyBool_FromLong(hp->base && hp->depth > 0 && hp->owner_pid == cur_pid
                           && hp->owner_thread == PyThread_get_thread_ident());
}

PyDoc_STRVAR(new_object_doc, "new_object(type) -> (offset, oid)\n--\n\n"
"Allocate an empty container of `type` (1 dict, 2 list, 3 namespace).");

static PyObject *HeapCore_new_object(ip_heap_t *hp, PyObject *arg)
{
    long type = PyLong_AsLong(arg);
    if (type == -1 && PyErr_Occurred())
        return NULL;
    if (type < IP_OBJ_DICT || type > IP_OBJ_NAMESPACE) {
        PyErr_Format(PyExc_ValueError, "not a container type: %ld", type);
        return NULL;
    }
    ip_deadline_t d = {.infinite = 1};
    if (ip_heap_enter(hp, &d) != 0)
        return NULL;
    uint64_t off = ip_heap_obj_new(hp, (uint32_t)type);
    if (off == 0) {
        ip_heap_abort(hp);
        return NULL;
    }
    uint64_t oid = ((ip_obj_t *)IP_HOFF(hp, off))->oid;
    ip_heap_leave(hp);
    return Py_BuildValue("(KK)", (unsigned long long)off, (unsigned long long)oid);
}

static PyObject *HeapCore_root(ip_heap_t *hp, void *Py_UNUSED(c))
{
    if (hp->base == NULL || IP_HHDR(hp)->root == 0)
        Py_RETURN_NONE;
    ip_obj_t *o = ip_heap_obj(hp, IP_HHDR(hp)->root, 0, 0);
    if (o == NULL) {
        PyErr_SetString(ip_SegmentError, "shared container's root object is corrupt");
        return NULL;
    }
    return Py_BuildValue("(KK)", (unsigned long long)IP_HHDR(hp)->root, (unsigned long long)o->oid);
}

static PyObject *HeapCore_info(ip_heap_t *hp, PyObject *Py_UNUSED(a))
{
    ip_deadline_t d = {.infinite = 1};
    if (ip_heap_enter(hp, &d) != 0)
        return NULL;
    ip_heap_hdr_t *h = IP_HHDR(hp);
    struct stat st;
    long long fsize = fstat(hp->fd, &st) == 0 ? (long long)st.st_size : -1;
    uint64_t items = 0;
    ip_obj_t *root = h->root ? ip_heap_obj(hp, h->root, 0, 0) : NULL;
    if (root)
        items = root->used;
    PyObject *res = Py_BuildValue(
        "{sKsKsKsKsKsLsK}", "size", (unsigned long long)h->size, "top",
        (unsigned long long)h->top, "live_bytes", (unsigned long long)h->live_bytes, "objects",
        (unsigned long long)h->objects, "recoveries", (unsigned long long)h->recoveries,
        "file_size", fsize, "items", (unsigned long long)items);
    ip_heap_leave(hp);
    return res;
}

static PyMethodDef HeapCore_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))HeapCore_acquire, METH_FASTCALL | METH_KEYWORDS,
     acquire_doc},
    {"release", (PyCFunction)HeapCore_release, METH_NOARGS, "release()\n--\n\nDrop one hold of the lock."},
    {"_is_owned", (PyCFunction)HeapCore_is_owned, METH_NOARGS, NULL},
    {"new_object", (PyCFunction)HeapCore_new_object, METH_O, new_object_doc},
    {"info", (PyCFunction)HeapCore_info, METH_NOARGS, "info() -> dict\n--\n\nSizes and counters."},
    {NULL, NULL, 0, NULL},
};

static PyObject *HeapCore_get_uid(ip_heap_t *hp, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(hp->uid);
}

static PyObject *HeapCore_get_fd(ip_heap_t *hp, void *Py_UNUSED(c))
{
    return PyLong_FromLong(hp->fd);
}

static PyObject *HeapCore_get_kind(ip_heap_t *hp, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(hp->kind);
}

static PyObject *HeapCore_get_factory(ip_heap_t *hp, void *Py_UNUSED(c))
{
    return Py_NewRef(hp->factory ? hp->factory : Py_None);
}

static int HeapCore_set_factory(ip_heap_t *hp, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL)
        v = Py_None;
    Py_XSETREF(hp->factory, Py_NewRef(v));
    return 0;
}

static PyGetSetDef HeapCore_getset[] = {
    {"uid", (getter)HeapCore_get_uid, NULL, "Random identity of the segment.", NULL},
    {"fd", (getter)HeapCore_get_fd, NULL, "The segment's descriptor.", NULL},
    {"kind", (getter)HeapCore_get_kind, NULL, "The segment's kind.", NULL},
    {"root", (getter)HeapCore_root, NULL, "(offset, oid) of the root container, or None.", NULL},
    {"factory", (getter)HeapCore_get_factory, (setter)HeapCore_set_factory,
     "factory(heap, (offset, type, oid)) -> handle on a container read back from a value.", NULL},
    {NULL},
};

PyTypeObject ip_HeapCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "interproc._core.HeapCore",
    .tp_basicsize = sizeof(ip_heap_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "HeapCore(fd, kind, create=False)\n--\n\n"
              "One process's view of a shared heap of containers.",
    .tp_new = HeapCore_new,
    .tp_dealloc = (destructor)HeapCore_dealloc,
    .tp_traverse = (traverseproc)HeapCore_traverse,
    .tp_clear = (inquiry)HeapCore_clear,
    .tp_weaklistoffset = offsetof(ip_heap_t, weakrefs),
    .tp_methods = HeapCore_methods,
    .tp_getset = HeapCore_getset,
};

/* ---------------------------------------------------------- handles */

/* Shared by DictCore and ListCore: __new__(heap, offset, oid, counted=False). */
PyObject *ip_handle_new(PyTypeObject *type, PyObject *args, PyObject *kwds, uint32_t want)
{
    static char *kwlist[] = {"heap", "offset", "oid", "counted", NULL};
    PyObject *heap;
    unsigned long long off, oid;
    int counted = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!KK|p", kwlist, &ip_HeapCore_Type, &heap, &off,
                                     &oid, &counted))
        return NULL;
    ip_heap_t *hp = (ip_heap_t *)heap;
    ip_deadline_t d = {.infinite = 1};
    if (ip_heap_enter(hp, &d) != 0)
        return NULL;
    ip_obj_t *o = ip_heap_obj(hp, off, 0, oid);
    if (o == NULL || (want == IP_OBJ_DICT ? o->type == IP_OBJ_LIST : o->type != want)) {
        if (counted && o == NULL) {
            ip_obj_t *any = ip_heap_obj(hp, off, 0, 0);
            if (any && any->handles)
                any->handles--;
        }
        ip_heap_leave(hp);
        PyErr_SetString(PyExc_RuntimeError,
                        o == NULL ? "the shared container is gone: it was freed before this "
                                    "reference to it was used (keep a handle on it until it "
                                    "has been received)"
                                  : "the reference is to another kind of container");
        return NULL;
    }
    if (!counted)
        o->handles++;
    uint32_t otype = o->type;
    ip_heap_leave(hp);
    ip_handle_t *h = (ip_handle_t *)type->tp_alloc(type, 0);
    if (h == NULL) {
        /* gives the count back */
        if (ip_heap_enter(hp, &d) == 0) {
            o = ip_heap_obj(hp, off, 0, oid);
            if (o && o->handles)
                o->handles--;
            (void)ip_heap_obj_release(hp, off);
            ip_heap_leave(hp);
        }
        return NULL;
    }
    h->heap = (ip_heap_t *)Py_NewRef(heap);
    h->off = off;
    h->oid = oid;
    h->type = otype;
    h->pid = cur_pid;
    return (PyObject *)h;
}

/* Gives up this handle's count; the container is freed with its last one. */
static void handle_release(ip_handle_t *h)
{
    ip_heap_t *hp = h->heap;
    if (hp == NULL)
        return;
    h->heap = NULL;
    if (h->pid == cur_pid && hp->base != NULL) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        ip_deadline_t d = {.infinite = 1};
        if (ip_heap_enter(hp, &d) == 0) {
            ip_obj_t *o = ip_heap_obj(hp, h->off, 0, h->oid);
            if (o && o->handles) {
                o->handles--;
                if (ip_heap_obj_release(hp, h->off) < 0)
                    PyErr_Clear();
            }
            ip_heap_leave(hp);
        } else {
            PyErr_Clear(); /* a signal interrupted the wait: the count stays, the object leaks */
        }
        PyErr_Restore(et, ev, tb);
    }
    Py_DECREF(hp);
}

void ip_handle_dealloc(ip_handle_t *h)
{
    PyObject_GC_UnTrack(h);
    if (h->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)h);
    handle_release(h);
    Py_CLEAR(h->dict);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

int ip_handle_traverse(ip_handle_t *h, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(h));
    Py_VISIT(h->dict);
    Py_VISIT((PyObject *)h->heap);
    return 0;
}

int ip_handle_clear(ip_handle_t *h)
{
    Py_CLEAR(h->dict);
    return 0;
}

static PyObject *handle_close(ip_handle_t *h, PyObject *Py_UNUSED(a))
{
    handle_release(h);
    Py_RETURN_NONE;
}

static PyObject *handle_get_heap(ip_handle_t *h, void *Py_UNUSED(c))
{
    if (ip_handle_check(h) < 0)
        return NULL;
    return Py_NewRef((PyObject *)h->heap);
}

static PyObject *handle_get_offset(ip_handle_t *h, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(h->off);
}

static PyObject *handle_get_oid(ip_handle_t *h, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(h->oid);
}

static PyObject *handle_get_closed(ip_handle_t *h, void *Py_UNUSED(c))
{
    return PyBool_FromLong(h->heap == NULL);
}

static PyMethodDef handle_methods[] = {
    {"close", (PyCFunction)handle_close, METH_NOARGS,
     "close()\n--\n\nLet go of this handle.  The container lives on while other handles\n"
     "or containers hold it, or its name."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef handle_getset[] = {
    {"_heap", (getter)handle_get_heap, NULL, NULL, NULL},
    {"_offset", (getter)handle_get_offset, NULL, NULL, NULL},
    {"_oid", (getter)handle_get_oid, NULL, NULL, NULL},
    {"closed", (getter)handle_get_closed, NULL, "True once close() was called.", NULL},
    {NULL},
};

PyTypeObject ip_HandleCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "interproc._core.HandleCore",
    .tp_basicsize = sizeof(ip_handle_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A handle on one container of a shared heap.",
    .tp_dealloc = (destructor)ip_handle_dealloc,
    .tp_traverse = (traverseproc)ip_handle_traverse,
    .tp_clear = (inquiry)ip_handle_clear,
    .tp_weaklistoffset = offsetof(ip_handle_t, weakrefs),
    .tp_dictoffset = offsetof(ip_handle_t, dict),
    .tp_methods = handle_methods,
    .tp_getset = handle_getset,
};

int ip_heap_init_module(PyObject *m)
{
    cur_pid = (long)getpid();
    if (pthread_atfork(NULL, NULL, after_fork_child) != 0)
        return -1;
    if (PyType_Ready(&ip_HeapCore_Type) < 0
        || PyModule_AddObjectRef(m, "HeapCore", (PyObject *)&ip_HeapCore_Type) < 0)
        return -1;
    if (PyType_Ready(&ip_HandleCore_Type) < 0)
        return -1;
    extern PyMethodDef ip_key_functions[];
    if (PyModule_AddFunctions(m, ip_key_functions) < 0)
        return -1;
    if (PyType_Ready(&ip_DictCore_Type) < 0
        || PyModule_AddObjectRef(m, "DictCore", (PyObject *)&ip_DictCore_Type) < 0)
        return -1;
    if (PyType_Ready(&ip_ListCore_Type) < 0
        || PyModule_AddObjectRef(m, "ListCore", (PyObject *)&ip_ListCore_Type) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "KIND_HEAP", IP_KIND_HEAP) < 0
        || PyModule_AddIntConstant(m, "KIND_DICT", IP_KIND_DICT) < 0
        || PyModule_AddIntConstant(m, "KIND_LIST", IP_KIND_LIST) < 0
        || PyModule_AddIntConstant(m, "KIND_NAMESPACE", IP_KIND_NAMESPACE) < 0
        || PyModule_AddIntConstant(m, "HEAP_START", (long)IP_HEAP_START) < 0
        || PyModule_AddIntConstant(m, "OBJ_DICT", IP_OBJ_DICT) < 0
        || PyModule_AddIntConstant(m, "OBJ_LIST", IP_OBJ_LIST) < 0
        || PyModule_AddIntConstant(m, "OBJ_NAMESPACE", IP_OBJ_NAMESPACE) < 0)
        return -1;
    return 0;
}
