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
 *
 * Nothing read from the heap is trusted: any other process may damage or
 * forge any byte of it at any time, also while this one holds the lock.  A
 * shared word is read once (IP_LOAD) into a local, checked, and only the
 * local is used.  Every offset taken from shared memory is checked before it
 * is dereferenced (ip_heap_block, ip_heap_obj, ip_ditem_read, ...): the
 * block it names must carry an allocated block's header and lie below the
 * heap's top within this process's mapping, and what is read must fit in
 * it.  Loops driven by shared values are bounded.  A failed check raises
 * SegmentError and the operation rolls back.
 *
 * Under the lock no Python code runs and no object the garbage collector
 * tracks is made (the collector could run a finalizer there): reads copy
 * bytes, strings and numbers out (ip_copy_t) and decode the rest after the
 * lock.  An operation begun in the middle of another one of the same heap in
 * the same thread is refused all the same, because it could move the mapping
 * under the outer one.
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

static inline uint64_t class_size_of(uint32_t c)
{
    if (c < 16)
        return 16ull * (c + 1);
    uint32_t b = 8u + (c - 16u) / 4u, j = (c - 16u) % 4u;
    return (1ull << b) + (uint64_t)(j + 1) * (1ull << (b - 2));
}

/* Every checked access to the heap looks a block's size up: a table keeps
 * that to one load. */
static uint64_t class_sizes[IP_HEAP_NCLASSES];

__attribute__((constructor)) static void fill_class_sizes(void)
{
    for (uint32_t c = 0; c < IP_HEAP_NCLASSES; c++)
        class_sizes[c] = class_size_of(c);
}

static inline uint64_t class_size(uint32_t c)
{
    return class_sizes[c];
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

int ip_heap_corrupt(const char *what)
{
    PyErr_Format(ip_SegmentError, "shared heap is corrupt (%s)", what);
    return -1;
}

/* ------------------------------------------------------- checked access */

/* [start, start + len) lies in the allocated part of the heap, below its
 * top, as mapped here. */
static inline int span_ok(ip_heap_t *hp, uint64_t start, uint64_t len)
{
    uint64_t end = IP_LOAD(IP_HHDR(hp)->top);
    if (end > hp->mapped)
        end = hp->mapped;
    return start >= IP_HEAP_START && start <= end && len <= end - start;
}

/* The size class of the block whose payload starts at off, if its header
 * carries `tag` and the whole block lies in the allocated part; else -1. */
static inline __attribute__((always_inline)) int block_class(ip_heap_t *hp, uint64_t off, uint32_t tag)
{
    if (off % 8 || off < IP_HEAP_START + BLOCK_HDR || off > hp->mapped)
        return -1;
    uint64_t hd = IP_LOAD(*word(hp, off - BLOCK_HDR));
    uint32_t c = (uint32_t)(hd & 0xff);
    if (hd >> 8 != tag || c >= IP_HEAP_NCLASSES || !span_ok(hp, off - BLOCK_HDR, class_size(c)))
        return -1;
    return (int)c;
}

static int no_block(uint64_t off)
{
    PyErr_Format(ip_SegmentError, "shared heap is corrupt (no block at offset %llu)", (unsigned long long)off);
    return 0;
}

/* ip_heap_block(), inlined where every item read pays for it. */
static inline __attribute__((always_inline)) uint64_t block_room(ip_heap_t *hp, uint64_t off)
{
    int c = block_class(hp, off, TAG_USED);
    return c < 0 ? (uint64_t)no_block(off) : class_size((uint32_t)c) - BLOCK_HDR;
}

uint64_t ip_heap_block(ip_heap_t *hp, uint64_t off)
{
    return block_room(hp, off);
}

int ip_ditem_read(ip_heap_t *hp, uint64_t off, ip_item_t *it)
{
    uint64_t room = block_room(hp, off);
    if (room == 0)
        return -1;
    if (room < sizeof(ip_ditem_t))
        return ip_heap_corrupt("bad dict item");
    const ip_ditem_t *d = IP_HOFF(hp, off);
    it->hash = IP_LOAD(d->hash);
    it->vlen = IP_LOAD(d->vlen);
    it->klen = IP_LOAD(d->klen);
    it->olen = IP_LOAD(d->olen);
    it->otype = IP_LOAD(d->otype);
    it->vtype = IP_LOAD(d->vtype);
    it->key_pickled = IP_LOAD(d->pad[0]) != 0;
    room -= sizeof *d;
    if (it->klen > room || it->olen > room - it->klen || it->vlen > room - it->klen - it->olen)
        return ip_heap_corrupt("a dict item overflows its block");
    it->off = off;
    ip_ditem_rebase(hp, it);
    return 0;
}

/* The list item at off, its value's length and type in *vlen and *vtype,
 * once its value is known to lie in its block; NULL with SegmentError. */
static inline __attribute__((always_inline)) const ip_litem_t *
litem_at(ip_heap_t *hp, uint64_t off, uint64_t *vlen, uint32_t *vtype)
{
    uint64_t room = block_room(hp, off);
    if (room == 0)
        return NULL;
    const ip_litem_t *l = IP_HOFF(hp, off);
    *vlen = IP_LOAD(l->vlen);
    *vtype = IP_LOAD(l->vtype);
    if (room < sizeof *l || *vlen > room - sizeof *l) {
        ip_heap_corrupt("a list item overflows its block");
        return NULL;
    }
    return l;
}

int ip_litem_read(ip_heap_t *hp, uint64_t off, ip_item_t *it)
{
    const ip_litem_t *l = litem_at(hp, off, &it->vlen, &it->vtype);
    if (l == NULL)
        return -1;
    it->key = it->orig = NULL;
    it->hash = it->klen = it->olen = 0;
    it->otype = 0;
    it->key_pickled = 0;
    it->off = off;
    it->val = (const uint8_t *)(l + 1);
    return 0;
}

/* ------------------------------------------------------------ undo log */

static inline ip_undo_t *undo_log(ip_heap_t *hp)
{
    return (ip_undo_t *)(hp->base + IP_HEAP_LOG_OFFSET);
}

/* The words a transaction may change, and so an undo entry may restore:
 * the header's counters and free-list heads, and the heap's own words.
 * Never the segment header, the lock, the log or `size` (which only grows). */
static inline int log_target_ok(ip_heap_t *hp, uint64_t off)
{
    if (off % 8)
        return 0;
    if (off < sizeof(ip_heap_hdr_t))
        return off > offsetof(ip_heap_hdr_t, size) && off != offsetof(ip_heap_hdr_t, log_count);
    return off >= IP_HEAP_START && off <= hp->mapped - 8;
}

/* ip_heap_set for an offset the caller knows to be a target log_target_ok
 * accepts: a header field, or a block block_class has just accepted.  The
 * allocator makes four such changes per allocation. */
static inline __attribute__((always_inline)) int log_set(ip_heap_t *hp, uint64_t off, uint64_t v)
{
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t n = IP_LOAD(h->log_count);
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

int ip_heap_set(ip_heap_t *hp, uint64_t off, uint64_t v)
{
    if (!log_target_ok(hp, off))
        return ip_heap_corrupt("a change outside the heap");
    return log_set(hp, off, v);
}

static void rollback(ip_heap_t *hp)
{
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t n = IP_LOAD(h->log_count);
    if (n > IP_HEAP_LOG_CAP)
        n = IP_HEAP_LOG_CAP;
    ip_undo_t *log = undo_log(hp);
    for (uint64_t i = n; i-- > 0;) {
        uint64_t off = IP_LOAD(log[i].off);
        /* A torn entry (written but not counted) or a forged one: skipped. */
        if (log_target_ok(hp, off))
            *word(hp, off) = IP_LOAD(log[i].old);
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

/* Maps what another process grew the heap to.  The size is read once and
 * checked against the file's real size: touching a mapping beyond the end
 * of the file raises SIGBUS. */
static int sync_size(ip_heap_t *hp)
{
    uint64_t size = IP_LOAD(IP_HHDR(hp)->size);
    if (size <= hp->mapped)
        return 0;
    struct stat st;
    if (fstat(hp->fd, &st) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (size > (uint64_t)st.st_size || size > IP_HEAP_SIZE_MAX)
        return ip_heap_corrupt("its size is beyond the end of its file");
    return remap(hp, size);
}

static int grow(ip_heap_t *hp, uint64_t need)
{
    uint64_t size = IP_LOAD(IP_HHDR(hp)->size);
    if (size < hp->mapped)
        size = hp->mapped;
    uint64_t step = size < GROW_STEP_MAX ? size : GROW_STEP_MAX;
    uint64_t want = size + step;
    if (want < need)
        want = need;
    want = (want + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
    if (want > IP_HEAP_SIZE_MAX) {
        PyErr_Format(PyExc_MemoryError, "the shared heap cannot grow to %llu bytes",
                     (unsigned long long)want);
        return -1;
    }
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
    if (size > IP_HEAP_ALLOC_MAX) {
        PyErr_SetString(PyExc_MemoryError, "object too large for a shared heap");
        return 0;
    }
    uint32_t c = class_of(size + BLOCK_HDR);
    uint64_t csize = class_size(c);
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t p = IP_LOAD(h->free_heads[c]);
    if (p != 0) {
        /* The head and its successor must both be free blocks of this
         * class: anything else would hand out live memory. */
        uint64_t next = block_class(hp, p, TAG_FREE) == (int)c ? IP_LOAD(*word(hp, p)) : 1;
        if (next != 0 && block_class(hp, next, TAG_FREE) != (int)c) {
            ip_heap_corrupt("bad free list");
            return 0;
        }
        if (log_set(hp, p, 0) < 0 || log_set(hp, hdr_off(hp, &h->free_heads[c]), next) < 0
            || log_set(hp, p - BLOCK_HDR, (uint64_t)TAG_USED << 8 | c) < 0)
            return 0;
    } else {
        uint64_t top = IP_LOAD(h->top);
        if (top < IP_HEAP_START || top % 16 || top > IP_HEAP_SIZE_MAX) {
            ip_heap_corrupt("bad top");
            return 0;
        }
        if (top + csize > IP_LOAD(h->size) || top + csize > hp->mapped) {
            if (grow(hp, top + csize) < 0)
                return 0;
            h = IP_HHDR(hp);
        }
        if (log_set(hp, hdr_off(hp, &h->top), top + csize) < 0)
            return 0;
        *word(hp, top) = (uint64_t)TAG_USED << 8 | c;
        p = top + BLOCK_HDR;
    }
    h = IP_HHDR(hp);
    if (log_set(hp, hdr_off(hp, &h->live_bytes), IP_LOAD(h->live_bytes) + csize) < 0)
        return 0;
    return p;
}

/* Outside any transaction: the block is unreachable, so the order of the
 * stores alone keeps a death harmless (at worst the block leaks). */
static void free_now(ip_heap_t *hp, uint64_t p)
{
    int c = block_class(hp, p, TAG_USED);
    if (c < 0)
        return; /* not an allocated block: never free twice */
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t csize = class_size((uint32_t)c);
    if (csize >= PUNCH_MIN)
        give_back(hp, p + 8, p - BLOCK_HDR + csize);
    *word(hp, p) = IP_LOAD(h->free_heads[c]);
    *word(hp, p - BLOCK_HDR) = (uint64_t)TAG_FREE << 8 | (uint32_t)c;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    h->free_heads[c] = p;
    h->live_bytes = IP_LOAD(h->live_bytes) - csize;
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
    int c = block_class(hp, off, TAG_USED);
    if (c < 0 || class_size((uint32_t)c) - BLOCK_HDR < sizeof(ip_obj_t))
        return NULL;
    ip_obj_t *o = IP_HOFF(hp, off);
    uint64_t id = IP_LOAD(o->oid);
    uint32_t t = IP_LOAD(o->type);
    if (id == 0 || (oid && id != oid))
        return NULL;
    if (type ? t != type : (t < IP_OBJ_FIRST || t > IP_OBJ_LAST))
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
    if (ip_heap_set(hp, hdr_off(hp, &h->objects), IP_LOAD(h->objects) + 1) < 0)
        return 0;
    return off;
}

int ip_heap_obj_release(ip_heap_t *hp, uint64_t off)
{
    ip_obj_t *o = ip_heap_obj(hp, off, 0, 0);
    if (o != NULL && IP_LOAD(o->refs) == 0 && IP_LOAD(o->handles) == 0)
        return ip_heap_free_later(hp, off | 1);
    return 0;
}

/* After the commit: a stored reference to `t` is gone with its item. */
static void unref_later(ip_heap_t *hp, uint32_t vtype, const uint8_t *data, uint64_t len)
{
    if (vtype != IP_VAL_REF || len != 8)
        return;
    uint64_t t;
    memcpy(&t, data, 8);
    ip_obj_t *to = ip_heap_obj(hp, t, 0, 0);
    uint64_t refs = to ? IP_LOAD(to->refs) : 0;
    if (refs > 0) {
        to->refs = refs - 1;
        if (refs == 1 && IP_LOAD(to->handles) == 0)
            (void)ip_heap_free_later(hp, t | 1);
    }
}

/* Frees a container nothing holds any more, after the commit: its tables,
 * its items, and the containers only its items held.  Iterative (through
 * the deferred list) and each container at most once (its oid is zeroed
 * first), so forged reference cycles end; a damaged table only leaks. */
static void free_object(ip_heap_t *hp, uint64_t off)
{
    ip_obj_t *o = ip_heap_obj(hp, off, 0, 0);
    if (o == NULL || IP_LOAD(o->refs) != 0 || IP_LOAD(o->handles) != 0)
        return;
    int list = IP_LOAD(o->type) == IP_OBJ_LIST;
    uint64_t items = IP_LOAD(o->items), index = IP_LOAD(o->index), cap = IP_LOAD(o->cap);
    uint64_t n = list ? IP_LOAD(o->used) : IP_LOAD(o->nitems);
    o->oid = 0;
    int c = items ? block_class(hp, items, TAG_USED) : -1;
    uint64_t esize = list ? sizeof(uint64_t) : sizeof(ip_dentry_t);
    if (c < 0 || n > cap || cap > (class_size((uint32_t)c) - BLOCK_HDR) / esize)
        n = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t it = list ? IP_LOAD(((uint64_t *)IP_HOFF(hp, items))[i])
                           : IP_LOAD(((ip_dentry_t *)IP_HOFF(hp, items))[i].item);
        ip_item_t v;
        if (it == 0 || (list ? ip_litem_read(hp, it, &v) : ip_ditem_read(hp, it, &v)) < 0) {
            PyErr_Clear();
            continue;
        }
        unref_later(hp, v.vtype, v.val, v.vlen);
        (void)ip_heap_free_later(hp, it);
    }
    (void)ip_heap_free_later(hp, items);
    (void)ip_heap_free_later(hp, index);
    (void)ip_heap_free_later(hp, off);
    ip_heap_hdr_t *h = IP_HHDR(hp);
    h->objects = IP_LOAD(h->objects) - 1;
}

/* ---------------------------------------------------------- the lock */

static void run_deferred(ip_heap_t *hp)
{
    if (hp->ndeferred == 0)
        return;
    /* An operation that failed may get here with its exception set; the
     * checks of free_object() must not replace it, nor leave one of theirs. */
    PyObject *et = NULL, *ev = NULL, *tb = NULL;
    if (PyErr_Occurred())
        PyErr_Fetch(&et, &ev, &tb);
    /* free_object() may defer more: the list grows while it is walked */
    for (size_t i = 0; i < hp->ndeferred; i++) {
        uint64_t off = hp->deferred[i];
        if (off & 1)
            free_object(hp, off & ~(uint64_t)1);
        else
            free_now(hp, off);
    }
    hp->ndeferred = 0;
    if (et != NULL || PyErr_Occurred())
        PyErr_Restore(et, ev, tb);
}

static void commit(ip_heap_t *hp)
{
    ip_heap_hdr_t *h = IP_HHDR(hp);
    uint64_t used = IP_LOAD(h->log_count);
    __atomic_store_n(&h->log_count, 0, __ATOMIC_RELEASE);
    if (used > IP_HEAP_LOG_CAP)
        used = IP_HEAP_LOG_CAP;
    if (used > LOG_KEEP_ENTRIES)
        give_back(hp, IP_HEAP_LOG_OFFSET + LOG_KEEP_ENTRIES * sizeof(ip_undo_t),
                  IP_HEAP_LOG_OFFSET + used * sizeof(ip_undo_t) + IP_PAGE);
    run_deferred(hp);
}

int ip_heap_checkpoint(ip_heap_t *hp)
{
    if (IP_LOAD(IP_HHDR(hp)->log_count) + LOG_RESERVE < IP_HEAP_LOG_CAP)
        return 0;
    commit(hp);
    return 1;
}

enum { HOLD_ACQUIRE, HOLD_OP, HOLD_COUNT, HOLD_GUARD };

static void count_hold(ip_heap_t *hp, int how)
{
    if (how != HOLD_ACQUIRE && hp->ops + hp->guards == 0)
        hp->floor = hp->acquires;
    hp->depth++;
    if (how == HOLD_ACQUIRE)
        hp->acquires++;
    else if (how == HOLD_GUARD)
        hp->guards++;
    else
        hp->ops++;
}

/* Whether the caller holds the lock: its thread, or, when a task of this
 * thread's event loop took it (acquire_async), that task while it runs. */
static int owned_by_me(ip_heap_t *hp)
{
    if (!hp->base || hp->depth <= 0 || hp->owner_pid != cur_pid)
        return 0;
    uint64_t me = ip_thread_serial();
    if (hp->owner_thread == me)
        return 1;
    return hp->owner_thread >> 63 && hp->task_thread == me
           && ip_running_task_owner() == hp->owner_thread;
}

/* The mutex is ours (res: IP_LOCK_OK or IP_LOCK_OWNER_DIED): the first
 * hold, of `owner`, and the recovery of a dead holder's transaction. */
static int took_mutex(ip_heap_t *hp, int res, uint64_t owner, int how)
{
    hp->owner_thread = owner;
    hp->task_thread = ip_thread_serial();
    hp->owner_pid = cur_pid;
    hp->depth = hp->acquires = hp->ops = hp->guards = hp->floor = 0;
    count_hold(hp, how);
    if (IP_LOAD(IP_HHDR(hp)->size) > hp->mapped && sync_size(hp) < 0) {
        /* A dead holder's transaction stays in the log for the next locker. */
        if (res == IP_LOCK_OWNER_DIED)
            ip_mutex_consistent(HEAP_LOCK(hp));
        hp->depth = hp->acquires = hp->ops = hp->guards = 0;
        pthread_mutex_unlock(HEAP_LOCK(hp));
        ip_event_wake(&hp->fixed->ev, 1);
        return -1;
    }
    ip_heap_hdr_t *h = IP_HHDR(hp);
    if (res == IP_LOCK_OWNER_DIED || IP_LOAD(h->log_count) != 0) {
        rollback(hp);
        h->recoveries = IP_LOAD(h->recoveries) + 1;
        if (res == IP_LOCK_OWNER_DIED)
            ip_mutex_consistent(HEAP_LOCK(hp));
    }
    hp->ndeferred = 0;
    return 0;
}

static int trylock_result(int rc)
{
    if (rc == 0)
        return IP_LOCK_OK;
    if (rc == EOWNERDEAD)
        return IP_LOCK_OWNER_DIED;
    errno = rc;
    PyErr_SetFromErrno(PyExc_OSError);
    return IP_LOCK_ERROR;
}

/* Takes one hold of the lock. */
static int hold(ip_heap_t *hp, const ip_deadline_t *d, int how)
{
    if (hp->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the shared heap is closed");
        return -1;
    }
    /* The thread's serial, never its ident: a thread that ends holding the
     * lock leaves its hold here, and a later thread given the same ident
     * would otherwise enter without the mutex. */
    uint64_t me = ip_thread_serial();
    if (hp->depth > 0 && hp->owner_pid == cur_pid) {
        if (hp->owner_thread >> 63 && hp->task_thread == me) {
            /* A task of this thread's event loop holds it.  Any other code
             * of the thread waiting for the mutex would wait for ever: the
             * task cannot run to let go. */
            if (ip_running_task_owner() != hp->owner_thread) {
                PyErr_SetString(PyExc_RuntimeError,
                                "the containers' lock is held by another task of this event loop "
                                "(async with d.lock); await it with d.lock.acquire_async() "
                                "instead of waiting for it here");
                return -1;
            }
            me = hp->owner_thread;
        }
        if (hp->owner_thread == me) {
            if (how == HOLD_OP && hp->ops > 0) {
                PyErr_SetString(PyExc_RuntimeError,
                                "a shared container was used in the middle of another operation "
                                "on a container of the same heap (from a finalizer or a "
                                "callback); that is refused, as it could move memory the other "
                                "operation is using");
                return -1;
            }
            count_hold(hp, how);
            return 0;
        }
    }
    int rc = pthread_mutex_trylock(HEAP_LOCK(hp));
    int res = rc == EBUSY ? ip_mutex_lock(HEAP_LOCK(hp), d) : trylock_result(rc);
    if (res == IP_LOCK_ERROR)
        return -1;
    if (res == IP_LOCK_TIMEOUT)
        return 1;
    return took_mutex(hp, res, me, how);
}

int ip_heap_enter(ip_heap_t *hp, const ip_deadline_t *d)
{
    return hold(hp, d, HOLD_OP);
}

int ip_heap_enter_count(ip_heap_t *hp)
{
    ip_deadline_t d = {.infinite = 1};
    return hold(hp, &d, HOLD_COUNT) == 0 ? 0 : -1;
}

static void drop_hold(ip_heap_t *hp)
{
    if (--hp->depth == 0) {
        pthread_mutex_unlock(HEAP_LOCK(hp));
        /* The unlock's atomic exchange orders it before the look at the
         * event's waiters; a ring lost anyway costs a loop one sweep. */
        ip_event_wake(&hp->fixed->ev, 1);
    }
}

/* Only the outermost operation commits or rolls back: an inner one (a
 * handle collected while an operation runs) only adds to what the outer
 * one frees. */
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
        /* Blocks the operation released stay allocated; but a handle closed
         * in the middle of it may have let a container go, which still has
         * to be freed.  free_object() checks again that nothing holds it,
         * and that it is still allocated below the restored top. */
        size_t k = 0;
        for (size_t i = 0; i < hp->ndeferred; i++)
            if (hp->deferred[i] & 1)
                hp->deferred[k++] = hp->deferred[i];
        hp->ndeferred = k;
        run_deferred(hp);
    }
    drop_hold(hp);
}

/* ------------------------------------------------------- operations */

int ip_handle_check(ip_handle_t *h)
{
    if (h->heap == NULL) {
        PyErr_Format(PyExc_ValueError, "%.100s is closed", Py_TYPE(h)->tp_name);
        return -1;
    }
    return 0;
}

Py_ssize_t ip_handle_len(ip_handle_t *h)
{
    if (ip_handle_check(h) < 0)
        return -1;
    /* The handle's block was checked when it was made, and mappings only grow. */
    uint64_t n = IP_LOAD(((ip_obj_t *)IP_HOFF(h->heap, h->off))->used);
    if (n > (uint64_t)PY_SSIZE_T_MAX) {
        ip_heap_corrupt("bad length");
        return -1;
    }
    return (Py_ssize_t)n;
}

int ip_op_begin(ip_handle_t *h, ip_op_t *op)
{
    op->hp = NULL;
    if (ip_handle_check(h) < 0)
        return -1;
    op->hp = (ip_heap_t *)Py_NewRef((PyObject *)h->heap);
    op->off = h->off;
    op->oid = h->oid;
    op->seen = &h->seen;
    ip_deadline_t d = {.infinite = 1};
    if (ip_heap_enter(op->hp, &d) != 0) {
        Py_CLEAR(op->hp);
        return -1;
    }
    return 0;
}

void ip_op_end(ip_op_t *op, int ok)
{
    if (ok)
        ip_heap_leave(op->hp);
    else
        ip_heap_abort(op->hp);
}

void ip_op_done(ip_op_t *op)
{
    Py_CLEAR(op->hp);
}

/* ---------------------------------------------------------- values */

int ip_value_init(ip_heap_t *hp, ip_value_t *v, PyObject *obj)
{
    v->ref = v->ref_oid = 0;
    v->p.obj = NULL;
    v->p.bufs = NULL;
    if ((PyObject_TypeCheck(obj, &ip_DictCore_Type) || PyObject_TypeCheck(obj, &ip_ListCore_Type))
        && ((ip_handle_t *)obj)->heap != NULL) {
        ip_heap_t *other = ((ip_handle_t *)obj)->heap;
        if (other->uid == hp->uid) {
            v->ref = ((ip_handle_t *)obj)->off;
            v->ref_oid = ((ip_handle_t *)obj)->oid;
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
    ip_obj_t *o = ip_heap_obj(hp, v->ref, 0, v->ref_oid);
    if (o == NULL) {
        PyErr_SetString(PyExc_ValueError, "the shared container being stored was freed");
        return -1;
    }
    return ip_heap_set(hp, v->ref + offsetof(ip_obj_t, refs), IP_LOAD(o->refs) + 1);
}

int ip_value_drop(ip_heap_t *hp, uint32_t vtype, const uint8_t *data, uint64_t len)
{
    if (vtype != IP_VAL_REF)
        return 0;
    if (len != 8)
        return ip_heap_corrupt("bad stored container reference");
    uint64_t t;
    memcpy(&t, data, 8);
    ip_obj_t *o = ip_heap_obj(hp, t, 0, 0);
    uint64_t refs = o ? IP_LOAD(o->refs) : 0;
    if (refs == 0)
        return 0;
    if (ip_heap_set(hp, t + offsetof(ip_obj_t, refs), refs - 1) < 0)
        return -1;
    return ip_heap_obj_release(hp, t);
}

/* ----------------------------------------------------------- copies */

static PyObject *handle_adopt(ip_heap_t *hp, ip_copy_t *c);

/* ip_copy_split(), inlined for plain values: the look and the decoder are
 * then direct calls. */
static inline __attribute__((always_inline)) int
copy_split(const uint8_t *data, uint64_t len, int (*now)(const uint8_t *p, uint64_t len),
           PyObject *(*decode)(const uint8_t *p, uint64_t len), int later, ip_copy_t *c)
{
    /* The look and the decoding read a private copy: shared bytes could
     * change between the two. */
    uint8_t small[256];
    PyObject *bytes = NULL;
    const uint8_t *p = small;
    c->kind = IP_COPY_DONE;
    c->counted = 0;
    c->obj = NULL;
    if (len <= sizeof small) {
        memcpy(small, data, (size_t)len);
    } else {
        if ((bytes = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len)) == NULL)
            return -1;
        p = (const uint8_t *)PyBytes_AS_STRING(bytes);
    }
    if (now(p, len)) {
        c->obj = decode(p, len);
        Py_XDECREF(bytes);
        return c->obj ? 0 : -1;
    }
    if (bytes == NULL && (bytes = PyBytes_FromStringAndSize((const char *)small, (Py_ssize_t)len)) == NULL)
        return -1;
    c->kind = later;
    c->obj = bytes;
    return 0;
}

int ip_copy_split(const uint8_t *data, uint64_t len, int (*now)(const uint8_t *p, uint64_t len),
                  PyObject *(*decode)(const uint8_t *p, uint64_t len), int later, ip_copy_t *c)
{
    return copy_split(data, len, now, decode, later, c);
}

/* A plain value that decodes to a str, bytes, number, bool or None: none of
 * them an object the collector tracks.  Tuples, lists and dicts wait. */
static int plain_atom(const uint8_t *p, uint64_t len)
{
    return len > 0 && p[0] != 't' && p[0] != 'l' && p[0] != 'd';
}

static inline __attribute__((always_inline)) int
copy_value(ip_heap_t *hp, uint32_t vtype, const uint8_t *data, uint64_t len, ip_copy_t *c)
{
    c->kind = IP_COPY_DONE;
    c->counted = 0;
    c->obj = NULL;
    switch (vtype) {
    case IP_REC_PLAIN:
        return copy_split(data, len, plain_atom, ip_plain_read, IP_COPY_PLAIN, c);
    case IP_REC_BYTES:
    case IP_REC_PICKLE:
        c->kind = vtype == IP_REC_PICKLE ? IP_COPY_PICKLE : IP_COPY_DONE;
        c->obj = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
        return c->obj ? 0 : -1;
    case IP_VAL_REF: {
        uint64_t t;
        if (len != 8)
            return ip_heap_corrupt("bad stored container reference");
        memcpy(&t, data, 8);
        ip_obj_t *o = ip_heap_obj(hp, t, 0, 0);
        if (o == NULL)
            return ip_heap_corrupt("a stored container is gone");
        c->kind = IP_COPY_REF;
        c->off = t;
        c->oid = IP_LOAD(o->oid);
        c->otype = IP_LOAD(o->type);
        if (c->oid == 0 || c->otype < IP_OBJ_FIRST || c->otype > IP_OBJ_LAST)
            return ip_heap_corrupt("a stored container is gone");
        return 0;
    }
    default:
        PyErr_Format(ip_SegmentError, "shared heap is corrupt (item type %u)", vtype);
        return -1;
    }
}

int ip_copy_value(ip_heap_t *hp, uint32_t vtype, const uint8_t *data, uint64_t len, ip_copy_t *c)
{
    return copy_value(hp, vtype, data, len, c);
}

int ip_litem_copy(ip_heap_t *hp, uint64_t off, ip_copy_t *c)
{
    uint64_t vlen;
    uint32_t vtype;
    c->kind = IP_COPY_DONE;
    c->counted = 0;
    c->obj = NULL;
    const ip_litem_t *l = litem_at(hp, off, &vlen, &vtype);
    return l == NULL ? -1 : copy_value(hp, vtype, (const uint8_t *)(l + 1), vlen, c);
}

/* Under the lock: gives back the count taken for a handle never made. */
static void uncount(ip_heap_t *hp, ip_copy_t *c)
{
    ip_obj_t *o = ip_heap_obj(hp, c->off, c->otype, c->oid);
    uint64_t n = o ? IP_LOAD(o->handles) : 0;
    if (n > 0) {
        o->handles = n - 1;
        if (ip_heap_obj_release(hp, c->off) < 0)
            PyErr_Clear(); /* no room to defer the free: the container leaks */
    }
    c->counted = 0;
}

int ip_copy_count_refs(ip_heap_t *hp, ip_copy_t *c, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i].kind != IP_COPY_REF)
            continue;
        ip_obj_t *o = ip_heap_obj(hp, c[i].off, c[i].otype, c[i].oid);
        if (o == NULL) {
            while (i-- > 0)
                if (c[i].counted)
                    uncount(hp, &c[i]);
            return ip_heap_corrupt("a stored container is gone");
        }
        /* Not logged: a handle's count is not part of any transaction. */
        o->handles = IP_LOAD(o->handles) + 1;
        c[i].counted = 1;
    }
    return 0;
}

void ip_copy_discard(ip_heap_t *hp, ip_copy_t *c, Py_ssize_t n)
{
    int counted = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_CLEAR(c[i].obj);
        counted |= c[i].counted;
    }
    if (!counted)
        return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (ip_heap_enter_count(hp) == 0) {
        for (Py_ssize_t i = 0; i < n; i++)
            if (c[i].counted)
                uncount(hp, &c[i]);
        ip_heap_leave(hp);
    } else {
        PyErr_Clear(); /* a signal interrupted the wait: the counts stay, the containers leak */
    }
    PyErr_Restore(et, ev, tb);
}

PyObject *ip_copy_decode(ip_heap_t *hp, ip_copy_t *c)
{
    PyObject *obj = c->obj, *res = NULL;
    c->obj = NULL;
    switch (c->kind) {
    case IP_COPY_DONE:
        return obj;
    case IP_COPY_REF:
        return handle_adopt(hp, c);
    case IP_COPY_PLAIN:
        res = ip_plain_read((const uint8_t *)PyBytes_AS_STRING(obj), (uint64_t)PyBytes_GET_SIZE(obj));
        break;
    case IP_COPY_KEY:
        res = ip_key_decode((const uint8_t *)PyBytes_AS_STRING(obj), (uint64_t)PyBytes_GET_SIZE(obj));
        break;
    default:
        if (ip_state.loads == NULL)
            PyErr_SetString(PyExc_RuntimeError, "interproc._core is not configured");
        else
            res = PyObject_CallOneArg(ip_state.loads, obj);
    }
    Py_DECREF(obj);
    return res;
}

PyObject *ip_copy_finish_all(ip_heap_t *hp, ip_copy_t *c, Py_ssize_t n, int per)
{
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        ip_copy_discard(hp, c, n * per);
        return NULL;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        ip_copy_t *cj = &c[j * per];
        PyObject *cell = ip_copy_finish(hp, cj);
        if (per == 2) {
            PyObject *v = cell ? ip_copy_finish(hp, cj + 1) : NULL;
            if (cell == NULL)
                ip_copy_discard(hp, cj + 1, 1);
            PyObject *pair = v ? PyTuple_Pack(2, cell, v) : NULL;
            Py_XDECREF(cell);
            Py_XDECREF(v);
            cell = pair;
        }
        if (cell == NULL) {
            ip_copy_discard(hp, cj + per, (n - j - 1) * per);
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, cell);
    }
    return out;
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
            uint32_t type = kind == IP_KIND_DICT   ? IP_OBJ_DICT
                            : kind == IP_KIND_LIST ? IP_OBJ_LIST
                            : kind == IP_KIND_SET  ? IP_OBJ_SET
                                                   : IP_OBJ_NAMESPACE;
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
    ip_seghdr_t seg;
    ip_heap_hdr_t *h = ip_segment_attach(hp->fd, kind, IP_HEAP_HDR_SIZE, &size, &file_size, &seg);
    if (h == NULL)
        return -1;
    hp->base = (uint8_t *)h;
    hp->mapped = size;
    hp->uid = seg.uid;
    hp->kind = kind;
    if ((hp->fixed = ip_map(hp->fd, IP_HEAP_HDR_SIZE, 0)) == NULL)
        return -1;
    /* Early diagnosis only: every one of these is checked again at its use. */
    uint64_t hsize = IP_LOAD(h->size), top = IP_LOAD(h->top);
    if (size < IP_HEAP_START || hsize < size || hsize > file_size || top < IP_HEAP_START || top > hsize) {
        PyErr_SetString(ip_SegmentError, "shared heap header is corrupt (bad sizes)");
        return -1;
    }
    if (kind != IP_KIND_HEAP && IP_LOAD(h->root) == 0) {
        PyErr_SetString(ip_SegmentError, "shared container has no root object");
        return -1;
    }
    return sync_size(hp);
}

static PyObject *HeapCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "kind", "create", NULL};
    int fd;
    PyObject *pkind, *pcreate = Py_False;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO|O:HeapCore", kwlist, &fd, &pkind, &pcreate))
        return NULL;
    /* The descriptor is ours from here on: closed on every failure. */
    long kind = PyLong_Check(pkind) ? PyLong_AsLong(pkind) : -1;
    int create = PyObject_IsTrue(pcreate);
    if (kind == -1 && PyErr_Occurred()) {
        close(fd);
        return NULL;
    }
    if (!PyLong_Check(pkind)) {
        PyErr_Format(PyExc_TypeError, "kind must be an int, not %.100s", Py_TYPE(pkind)->tp_name);
        close(fd);
        return NULL;
    }
    if (kind < IP_KIND_HEAP || kind > IP_KIND_SET || create < 0) {
        if (create >= 0)
            PyErr_Format(PyExc_ValueError, "not a container kind: %ld", kind);
        close(fd);
        return NULL;
    }
    ip_heap_t *hp = (ip_heap_t *)type->tp_alloc(type, 0);
    if (hp == NULL) {
        close(fd);
        return NULL;
    }
    hp->fd = fd; /* closed by dealloc, also on failure */
    hp->factory = Py_NewRef(Py_None);
    if (heap_layout(hp, (uint32_t)kind, create) < 0) {
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
    if (hp->depth > 0 && hp->owner_pid == cur_pid && hp->fixed) {
        pthread_mutex_unlock(HEAP_LOCK(hp));
        ip_event_wake(&hp->fixed->ev, 1);
    }
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
"held no other process or thread reads or changes any container of the heap.\n"
"False when block is false or the timeout passed first.  A holder that died\n"
"is taken over: the operation it was in the middle of is undone first.");

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
    int rc = hold(hp, &d, HOLD_ACQUIRE);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc == 0);
}

PyDoc_STRVAR(release_doc, "release()\n--\n\n"
"Drop one hold taken by acquire().  RuntimeError if this thread holds none,\n"
"or only ones that a container operation in progress depends on (code it\n"
"calls, such as a sort key, cannot release the lock from under it).");

static PyObject *HeapCore_release(ip_heap_t *hp, PyObject *Py_UNUSED(a))
{
    if (!owned_by_me(hp)) {
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return NULL;
    }
    long floor = hp->ops + hp->guards > 0 ? hp->floor : 0;
    if (hp->acquires <= floor) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot release the lock here: this thread holds it for a container "
                        "operation in progress, not through an acquire() of its own");
        return NULL;
    }
    hp->acquires--;
    drop_hold(hp);
    Py_RETURN_NONE;
}

/* _acquire_as(owner): acquire(False) for the asyncio task whose owner
 * number (its top bit set) is `owner`, which then holds the lock as a
 * thread would.  Never waits, not even for a holder about to let go: the
 * event loop awaits the heap's event (_bell) between tries. */
static PyObject *HeapCore_acquire_as(ip_heap_t *hp, PyObject *arg)
{
    uint64_t owner = PyLong_AsUnsignedLongLong(arg);
    if (owner == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    if (!(owner >> 63)) {
        PyErr_SetString(PyExc_ValueError, "not a task's owner number");
        return NULL;
    }
    if (hp->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the shared heap is closed");
        return NULL;
    }
    if (hp->depth > 0 && hp->owner_pid == cur_pid) {
        /* Another thread or task of this process holds the mutex, or the
         * task itself, which takes it again. */
        if (hp->owner_thread != owner || hp->task_thread != ip_thread_serial())
            Py_RETURN_FALSE;
        count_hold(hp, HOLD_ACQUIRE);
        Py_RETURN_TRUE;
    }
    int rc = pthread_mutex_trylock(HEAP_LOCK(hp));
    if (rc == EBUSY)
        Py_RETURN_FALSE;
    int res = trylock_result(rc);
    if (res == IP_LOCK_ERROR || took_mutex(hp, res, owner, HOLD_ACQUIRE) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

/* _bell(0, ...): an asyncio loop's bell on the lock's event (ip_bell_py). */
static PyObject *HeapCore_bell(ip_heap_t *hp, PyObject *const *args, Py_ssize_t nargs)
{
    if (ip_bell_which(args, nargs, 0) < 0)
        return NULL;
    if (hp->fixed == NULL || hp->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the shared heap is closed");
        return NULL;
    }
    return ip_bell_py(&hp->fixed->ev, args + 1, nargs - 1);
}

static PyObject *HeapCore_is_owned(ip_heap_t *hp, PyObject *Py_UNUSED(a))
{
    return PyBool_FromLong(owned_by_me(hp));
}

static PyObject *HeapCore_guard_enter(ip_heap_t *hp, PyObject *Py_UNUSED(a))
{
    ip_deadline_t d = {.infinite = 1};
    if (hold(hp, &d, HOLD_GUARD) != 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *HeapCore_guard_exit(ip_heap_t *hp, PyObject *Py_UNUSED(a))
{
    if (!owned_by_me(hp) || hp->guards <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "no compound operation in progress");
        return NULL;
    }
    hp->guards--;
    drop_hold(hp);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(new_object_doc, "new_object(type) -> (offset, oid)\n--\n\n"
"Allocate an empty container of `type` (1 dict, 2 list, 3 namespace, 4 set).");

static PyObject *HeapCore_new_object(ip_heap_t *hp, PyObject *arg)
{
    long type = PyLong_AsLong(arg);
    if (type == -1 && PyErr_Occurred())
        return NULL;
    if (type < IP_OBJ_FIRST || type > IP_OBJ_LAST) {
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
    uint64_t root = hp->base ? IP_LOAD(IP_HHDR(hp)->root) : 0;
    if (root == 0)
        Py_RETURN_NONE;
    ip_obj_t *o = ip_heap_obj(hp, root, 0, 0);
    uint64_t oid = o ? IP_LOAD(o->oid) : 0;
    if (oid == 0) {
        PyErr_SetString(ip_SegmentError, "shared container's root object is corrupt");
        return NULL;
    }
    return Py_BuildValue("(KK)", (unsigned long long)root, (unsigned long long)oid);
}

static PyObject *HeapCore_info(ip_heap_t *hp, PyObject *Py_UNUSED(a))
{
    ip_deadline_t d = {.infinite = 1};
    if (ip_heap_enter(hp, &d) != 0)
        return NULL;
    ip_heap_hdr_t *h = IP_HHDR(hp);
    struct stat st;
    long long fsize = fstat(hp->fd, &st) == 0 ? (long long)st.st_size : -1;
    uint64_t root_off = IP_LOAD(h->root);
    ip_obj_t *root = root_off ? ip_heap_obj(hp, root_off, 0, 0) : NULL;
    unsigned long long v[6] = {IP_LOAD(h->size), IP_LOAD(h->top), IP_LOAD(h->live_bytes),
                               IP_LOAD(h->objects), IP_LOAD(h->recoveries),
                               root ? IP_LOAD(root->used) : 0};
    ip_heap_leave(hp);
    return Py_BuildValue("{sKsKsKsKsKsLsK}", "size", v[0], "top", v[1], "live_bytes", v[2],
                         "objects", v[3], "recoveries", v[4], "file_size", fsize, "items", v[5]);
}

static PyMethodDef HeapCore_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))HeapCore_acquire, METH_FASTCALL | METH_KEYWORDS,
     acquire_doc},
    {"release", (PyCFunction)HeapCore_release, METH_NOARGS, release_doc},
    {"_is_owned", (PyCFunction)HeapCore_is_owned, METH_NOARGS, NULL},
    {"_acquire_as", (PyCFunction)HeapCore_acquire_as, METH_O, NULL},
    {"_bell", (PyCFunction)(void (*)(void))HeapCore_bell, METH_FASTCALL, NULL},
    {"_guard_enter", (PyCFunction)HeapCore_guard_enter, METH_NOARGS,
     "_guard_enter()\n--\n\nHold the lock for a compound operation: re-entrant, and not\n"
     "releasable by release() until _guard_exit()."},
    {"_guard_exit", (PyCFunction)HeapCore_guard_exit, METH_NOARGS, NULL},
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
     "factory(type) -> the class (a subclass of DictCore or ListCore) of a handle on a\n"
     "container of that type read back from a value.", NULL},
    {NULL},
};

PyTypeObject ip_HeapCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "interproc._core.HeapCore",
    .tp_basicsize = sizeof(ip_heap_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "HeapCore(fd, kind, create=False)\n--\n\n"
              "One process's view of a shared heap of containers.  Takes fd over: it\n"
              "is closed with the heap, and also when the arguments are refused.",
    .tp_new = HeapCore_new,
    .tp_dealloc = (destructor)HeapCore_dealloc,
    .tp_traverse = (traverseproc)HeapCore_traverse,
    .tp_clear = (inquiry)HeapCore_clear,
    .tp_weaklistoffset = offsetof(ip_heap_t, weakrefs),
    .tp_methods = HeapCore_methods,
    .tp_getset = HeapCore_getset,
};

/* ---------------------------------------------------------- handles */

static PyObject *handle_make(PyTypeObject *cls, ip_heap_t *hp, const ip_copy_t *c)
{
    ip_handle_t *h = (ip_handle_t *)cls->tp_alloc(cls, 0);
    if (h == NULL)
        return NULL;
    /* CPython 3.11 specializes a method call (l.append) on an instance
     * whose dict exists, not on one whose dict is still to be made.  Made
     * before the handle takes the count: a failure leaves the count to c. */
    if ((h->dict = PyDict_New()) == NULL) {
        Py_DECREF(h);
        return NULL;
    }
    h->heap = (ip_heap_t *)Py_NewRef((PyObject *)hp);
    h->off = c->off;
    h->oid = c->oid;
    h->type = c->otype;
    h->pid = cur_pid;
    return (PyObject *)h;
}

/* A handle on a stored container read back, whose count c holds. */
static PyObject *handle_adopt(ip_heap_t *hp, ip_copy_t *c)
{
    PyObject *res = NULL, *cls;
    if (hp->factory == NULL || hp->factory == Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "no factory for stored containers");
    } else if ((cls = PyObject_CallFunction(hp->factory, "I", (unsigned)c->otype)) != NULL) {
        PyTypeObject *base = c->otype == IP_OBJ_LIST ? &ip_ListCore_Type : &ip_DictCore_Type;
        if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, base))
            PyErr_Format(PyExc_TypeError, "the heap's factory must give a subclass of %s",
                         base->tp_name);
        else if ((res = handle_make((PyTypeObject *)cls, hp, c)) != NULL)
            c->counted = 0;
        Py_DECREF(cls);
    }
    if (res == NULL)
        ip_copy_discard(hp, c, 1);
    return res;
}

/* Shared by DictCore and ListCore: __new__(heap, offset, oid). */
PyObject *ip_handle_new(PyTypeObject *type, PyObject *args, PyObject *kwds, uint32_t want)
{
    static char *kwlist[] = {"heap", "offset", "oid", NULL};
    PyObject *heap;
    unsigned long long off, oid;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!KK", kwlist, &ip_HeapCore_Type, &heap, &off,
                                     &oid))
        return NULL;
    ip_heap_t *hp = (ip_heap_t *)heap;
    if (ip_heap_enter_count(hp) != 0)
        return NULL;
    ip_obj_t *o = oid ? ip_heap_obj(hp, off, 0, oid) : NULL;
    ip_copy_t c = {.kind = IP_COPY_REF, .off = off, .oid = oid, .otype = o ? IP_LOAD(o->type) : 0};
    if (o == NULL || (want == IP_OBJ_DICT ? c.otype == IP_OBJ_LIST : c.otype != want)) {
        ip_heap_leave(hp);
        PyErr_SetString(PyExc_RuntimeError,
                        o == NULL ? "the shared container is gone: it was freed before this "
                                    "reference to it was used (keep a handle on it until it "
                                    "has been received)"
                                  : "the reference is to another kind of container");
        return NULL;
    }
    o->handles = IP_LOAD(o->handles) + 1;
    c.counted = 1;
    ip_heap_leave(hp);
    PyObject *res = handle_make(type, hp, &c);
    if (res == NULL)
        ip_copy_discard(hp, &c, 1);
    return res;
}

/* Gives up this handle's count; the container is freed with its last one.
 * Allowed in the middle of another operation (a handle collected there):
 * it only counts out and defers frees, it never allocates. */
static void handle_release(ip_handle_t *h)
{
    ip_heap_t *hp = h->heap;
    if (hp == NULL)
        return;
    h->heap = NULL;
    if (h->pid == cur_pid && hp->base != NULL) {
        ip_copy_t c = {.kind = IP_COPY_REF, .counted = 1, .off = h->off, .oid = h->oid,
                       .otype = h->type};
        ip_copy_discard(hp, &c, 1);
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

/* Field offsets of the shared layouts, for tools and tests that inspect or
 * damage a heap on purpose. */
static int add_layout(PyObject *m)
{
    static const struct {
        const char *name;
        unsigned long long value;
    } fields[] = {
        {"hdr.version", offsetof(ip_seghdr_t, version)},
        {"hdr.size", offsetof(ip_heap_hdr_t, size)},
        {"hdr.top", offsetof(ip_heap_hdr_t, top)},
        {"hdr.root", offsetof(ip_heap_hdr_t, root)},
        {"hdr.log_count", offsetof(ip_heap_hdr_t, log_count)},
        {"hdr.free_heads", offsetof(ip_heap_hdr_t, free_heads)},
        {"log", IP_HEAP_LOG_OFFSET},
        {"start", IP_HEAP_START},
        {"obj.type", offsetof(ip_obj_t, type)},
        {"obj.oid", offsetof(ip_obj_t, oid)},
        {"obj.handles", offsetof(ip_obj_t, handles)},
        {"obj.refs", offsetof(ip_obj_t, refs)},
        {"obj.used", offsetof(ip_obj_t, used)},
        {"obj.version", offsetof(ip_obj_t, version)},
        {"obj.index", offsetof(ip_obj_t, index)},
        {"obj.mask", offsetof(ip_obj_t, mask)},
        {"obj.items", offsetof(ip_obj_t, items)},
        {"obj.nitems", offsetof(ip_obj_t, nitems)},
        {"obj.cap", offsetof(ip_obj_t, cap)},
        {"dentry.size", sizeof(ip_dentry_t)},
        {"ditem.vlen", offsetof(ip_ditem_t, vlen)},
        {"ditem.klen", offsetof(ip_ditem_t, klen)},
        {"ditem.olen", offsetof(ip_ditem_t, olen)},
        {"ditem.otype", offsetof(ip_ditem_t, otype)},
        {"ditem.vtype", offsetof(ip_ditem_t, vtype)},
        {"litem.vlen", offsetof(ip_litem_t, vlen)},
        {"litem.vtype", offsetof(ip_litem_t, vtype)},
    };
    PyObject *d = PyDict_New();
    if (d == NULL)
        return -1;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(fields[i].value);
        if (v == NULL || PyDict_SetItemString(d, fields[i].name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return -1;
        }
        Py_DECREF(v);
    }
    int rc = PyModule_AddObjectRef(m, "HEAP_LAYOUT", d);
    Py_DECREF(d);
    return rc;
}

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
        || PyModule_AddIntConstant(m, "KIND_SET", IP_KIND_SET) < 0
        || PyModule_AddIntConstant(m, "HEAP_START", (long)IP_HEAP_START) < 0
        || PyModule_AddIntConstant(m, "OBJ_DICT", IP_OBJ_DICT) < 0
        || PyModule_AddIntConstant(m, "OBJ_LIST", IP_OBJ_LIST) < 0
        || PyModule_AddIntConstant(m, "OBJ_NAMESPACE", IP_OBJ_NAMESPACE) < 0
        || PyModule_AddIntConstant(m, "OBJ_SET", IP_OBJ_SET) < 0)
        return -1;
    return add_layout(m);
}
