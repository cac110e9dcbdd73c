/* The byte ring shared by every channel (Queue now, Pipe later).
 *
 * A ring is a chain of regions.  Each region is a circular buffer of
 * length-prefixed records.  When the producer finds no room in its region it
 * does not wait: it moves to a free region (or a new, larger one) and leaves a
 * FWD record behind, which the consumer follows.  Regions the consumer has
 * left are freed, and their memory is given back to the kernel.
 *
 * Producers serialize on prod.lock, consumers on cons.lock; the two sides
 * only meet through a region's tail (producer-written) and head
 * (consumer-written) words.  Payloads are written and read outside those
 * words, and each side publishes its progress through its redo journal
 * (see ip_journal_t), so a process killed at any instruction leaves the ring
 * with either its old state or its new one.  docs/design.md walks through
 * every step.
 *
 * Every word of the ring may be damaged or forged by another process at any
 * time, even after it was checked.  So each value is read once, into a
 * local, and checked at the place it is used; pointers are only ever made
 * from this process's own record of what it mapped (ip_ringview_t); and
 * every loop that follows values from shared memory is bounded.  A bad
 * value raises SegmentError.
 */
#include "interproc.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ACTIVE 1ull
/* Overflow regions up to this many times the base region are kept warm. */
#define IP_WARM_FACTOR 4
/* Bigger ones keep their memory while a stream uses them, and give it back
 * once they have been free this long. */
#define IP_WARM_IDLE_NS 1000000000LL
/* A new region is at most this large unless one record needs more. */
#define IP_GROW_CAP (1ull << 40)
/* PAD and FWD records a reader may step over before it reaches a message:
 * a writer leaves at most one of each in front of one (see ip_ring_peek). */
#define IP_PEEK_STEPS 4

static inline uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline uint32_t ld32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void st(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline void st32(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static int corrupt(const char *what)
{
    PyErr_Format(ip_SegmentError, "queue data is corrupt (%s)", what);
    return -1;
}

/* Records the other side's position in `region`.  The region is cleared
 * first and set last, so a side killed halfway leaves no hint rather than
 * one that pairs a region with another region's position. */
static inline void set_hint(ip_side_t *side, uint32_t region, uint64_t pos)
{
    st32(&side->hint_region, IP_NO_REGION);
    st(&side->hint_pos, pos);
    st32(&side->hint_region, region);
}

static inline void drop_hint(ip_side_t *side)
{
    st32(&side->hint_region, IP_NO_REGION);
}

static inline uint64_t rec_space(uint64_t len)
{
    return IP_REC_HDR + ((len + IP_REC_ALIGN - 1) & ~(uint64_t)(IP_REC_ALIGN - 1));
}

static inline uint64_t pow2_at_least(uint64_t x)
{
    uint64_t p = IP_PAGE;
    while (p < x && p < (1ull << 62))
        p <<= 1;
    return p;
}

int ip_ring_init(ip_ring_t *r, uint64_t base_offset, uint64_t base_cap)
{
    memset(r, 0, sizeof *r);
    if (ip_mutex_init(&r->prod.lock) || ip_mutex_init(&r->cons.lock))
        return -1;
    r->regions[0].cap = base_cap;
    r->regions[0].offset = base_offset;
    r->regions[0].state = (1ull << 1) | ACTIVE;
    r->prod.hint_region = IP_NO_REGION;
    r->cons.hint_region = IP_NO_REGION;
    return 0;
}

int ip_ring_check(const ip_ring_t *r, uint64_t file_size)
{
    if (ld32(&r->prod.cur) >= IP_MAX_REGIONS || ld32(&r->cons.cur) >= IP_MAX_REGIONS)
        goto corrupt;
    for (int i = 0; i < IP_MAX_REGIONS; i++) {
        uint64_t off = ld(&r->regions[i].offset), cap = ld(&r->regions[i].cap);
        if (off == 0) {
            if (i == 0)
                goto corrupt;
            continue;
        }
        if (cap < IP_PAGE || cap > IP_MAX_REGION_CAP || (cap & (cap - 1)) || off % IP_PAGE
            || off > file_size || cap > file_size - off)
            goto corrupt;
    }
    return 0;
corrupt:
    PyErr_SetString(ip_SegmentError, "queue header is corrupt (bad region table)");
    return -1;
}

void ip_ringview_init(ip_ringview_t *v, ip_ring_t *ring, ip_seghdr_t *seg, int fd, uint8_t *base,
                      uint64_t base_offset, uint64_t base_cap, uint64_t data_start)
{
    memset(v, 0, sizeof *v);
    v->ring = ring;
    v->seg = seg;
    v->fd = fd;
    v->data_start = data_start;
    v->maps[0] = base;
    v->caps[0] = base_cap;
    v->offs[0] = base_offset;
}

/* Region i's buffer and capacity as this process maps it (i < IP_MAX_REGIONS).
 * An overflow region is mapped on first use, once its extent has been
 * checked against the file as it is then: a region another process assigned
 * after we attached was never covered by the checks at attach. */
static int region_map(ip_ringview_t *v, uint32_t i, uint8_t **buf, uint64_t *cap)
{
    if (v->maps[i] == NULL) {
        ip_region_t *rg = &v->ring->regions[i];
        uint64_t off = ld(&rg->offset); /* stored last by the assigner: read first */
        uint64_t c = ld(&rg->cap);
        if (off == 0)
            return corrupt("a record points to an unassigned region");
        if (c < IP_PAGE || c > IP_MAX_REGION_CAP || (c & (c - 1)) || off % IP_PAGE
            || off < v->data_start || off > UINT64_MAX - c)
            return corrupt("a region's extent is impossible");
        struct stat sb;
        if (fstat(v->fd, &sb) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (off + c > (uint64_t)sb.st_size)
            return corrupt("a region lies beyond the end of the file");
        uint8_t *p = ip_map(v->fd, (size_t)c, (off_t)off);
        if (p == NULL)
            return -1;
        v->maps[i] = p;
        v->caps[i] = c;
        v->offs[i] = off;
    }
    *buf = v->maps[i];
    *cap = v->caps[i];
    return 0;
}

void ip_ringview_unmap(ip_ringview_t *v)
{
    for (int i = 1; i < IP_MAX_REGIONS; i++) {
        if (v->maps[i]) {
            munmap(v->maps[i], (size_t)v->caps[i]);
            v->maps[i] = NULL;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Journals                                                            */

/* A journal is filled in the process's own memory, copied to the shared
 * one (which only recovery reads), and applied from the private copy: a
 * value changed in shared memory between a check and its use cannot steer
 * a store. */
static void journal_publish(ip_journal_t *shared, const ip_journal_t *j)
{
    shared->count = j->count;
    shared->pos = j->pos;
    shared->region = j->region;
    shared->cur = j->cur;
    shared->other = j->other;
    shared->other_state = j->other_state;
    shared->other_tail = j->other_tail;
    __atomic_store_n(&shared->valid, 1, __ATOMIC_SEQ_CST);
}

static void journal_load(const ip_journal_t *shared, ip_journal_t *j)
{
    j->valid = 1;
    j->count = __atomic_load_n(&shared->count, __ATOMIC_RELAXED);
    j->pos = __atomic_load_n(&shared->pos, __ATOMIC_RELAXED);
    j->region = __atomic_load_n(&shared->region, __ATOMIC_RELAXED);
    j->cur = __atomic_load_n(&shared->cur, __ATOMIC_RELAXED);
    j->other = __atomic_load_n(&shared->other, __ATOMIC_RELAXED);
    j->other_state = __atomic_load_n(&shared->other_state, __ATOMIC_RELAXED);
    j->other_tail = __atomic_load_n(&shared->other_tail, __ATOMIC_RELAXED);
}

static void apply_producer(ip_ring_t *r, const ip_journal_t *j)
{
    if (j->other != IP_NO_REGION) {
        /* The head hint may speak of this region's previous life. */
        drop_hint(&r->prod);
        ip_region_t *o = &r->regions[j->other];
        /* Skipped when already done: the consumer may be reading it by now. */
        if (ld(&o->state) != j->other_state) {
            st(&r->heads[j->other], 0);
            st(&o->tail, j->other_tail);
            st(&o->state, j->other_state);
        }
    }
    /* Counted before it is visible, so that in - out never goes negative. */
    st(&r->prod.count, j->count);
    st(&r->regions[j->region].tail, j->pos); /* the publication point */
    st32(&r->prod.cur, j->cur);
}

static inline int is_big(const ip_ringview_t *v, uint32_t i)
{
    return i != 0 && v->maps[i] && v->caps[i] > IP_WARM_FACTOR * v->caps[0];
}

/* Makes region i, whose active state is `state`, free for producers. */
static void free_region(ip_ringview_t *v, uint32_t i, uint64_t state)
{
    ip_region_t *rg = &v->ring->regions[i];
    /* The base region and the first overflow sizes always stay warm.  A big
     * one keeps its memory too while it is in use: a stream of large items
     * would otherwise fault every page of it in again for each item, which
     * cost a 100 MiB stream most of its speed.  It is given back once the
     * region has been idle a while (ip_ring_give_back).  Stamped before
     * the state frees it, so whoever sees it free sees since when. */
    if (is_big(v, i)) {
        int64_t now = ip_now_ns();
        st(&rg->idle_since, now > 0 ? (uint64_t)now : 1);
    }
    /* Only now may a producer pick it up again. */
    st(&rg->state, state & ~ACTIVE);
}

/* Whether a live process holds a view into region i.  The pins of dead
 * ones are cleared on the way: a reader killed while holding a view pins
 * nothing for longer than it takes the next look to notice. */
static int pinned(ip_ringview_t *v, uint32_t i)
{
    ip_region_t *rg = &v->ring->regions[i];
    int live = 0;
    for (int k = 0; k < IP_PIN_SLOTS; k++) {
        uint64_t key = __atomic_load_n(&rg->pins[k], __ATOMIC_SEQ_CST);
        if (key == 0)
            continue;
        if (ip_key_alive(v->fd, key))
            live = 1;
        else
            __atomic_compare_exchange_n(&rg->pins[k], &key, 0, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST);
    }
    return live;
}

/* Without asking the kernel: any slot taken (the producers' test, on every
 * message, where a dead pin only costs a region switch). */
static int any_pin(const ip_ring_t *r, uint32_t i)
{
    const ip_region_t *rg = &r->regions[i];
    for (int k = 0; k < IP_PIN_SLOTS; k++)
        if (__atomic_load_n(&rg->pins[k], __ATOMIC_SEQ_CST))
            return 1;
    return 0;
}

/* The pinned_release hand-off: whoever clears it frees the region. */
static void free_if_released(ip_ringview_t *v, uint32_t i)
{
    ip_region_t *rg = &v->ring->regions[i];
    uint64_t state = __atomic_load_n(&rg->pinned_release, __ATOMIC_SEQ_CST);
    if (state != 0 && !pinned(v, i)
        && __atomic_compare_exchange_n(&rg->pinned_release, &state, 0, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST)
        && ld(&rg->state) == state)
        free_region(v, i, state);
}

static void release_region(ip_ringview_t *v, uint32_t i, uint64_t expected)
{
    ip_region_t *rg = &v->ring->regions[i];
    /* A different state means a replay: it was released, maybe reused, already. */
    if (ld(&rg->state) != expected)
        return;
    if (!pinned(v, i)) {
        free_region(v, i, expected);
        return;
    }
    /* A reader holds a view here: the last unpin frees it.  Stored, then
     * the pins read again: an unpin that came in between sees the store. */
    __atomic_store_n(&rg->pinned_release, expected, __ATOMIC_SEQ_CST);
    free_if_released(v, i);
}

static void pins_check_pid(ip_pins_t *p)
{
    pid_t me = getpid();
    if (p->pid != me) {
        memset(p, 0, sizeof *p);
        p->pid = me;
    }
}

int ip_ring_pin(ip_ringview_t *v, ip_pins_t *p, uint32_t i, uint64_t key)
{
    pins_check_pid(p);
    if (p->refs[i] > 0) {
        p->refs[i]++;
        return 0;
    }
    /* Producers leave a pinned region for another: past a few, views are
     * refused (the reader copies) so that the stream keeps regions enough. */
    int held = 0;
    for (uint32_t k = 0; k < IP_MAX_REGIONS; k++)
        held += any_pin(v->ring, k);
    if (held >= IP_MAX_PINNED_REGIONS)
        return -1;
    ip_region_t *rg = &v->ring->regions[i];
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < IP_PIN_SLOTS; k++) {
            uint64_t free_slot = 0;
            if (__atomic_compare_exchange_n(&rg->pins[k], &free_slot, key, 0, __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST)) {
                p->refs[i] = 1;
                p->slot[i] = (int8_t)k;
                return 0;
            }
        }
        if (pass == 0)
            pinned(v, i); /* clears the slots of dead readers for a second look */
    }
    return -1;
}

void ip_ring_unpin(ip_ringview_t *v, ip_pins_t *p, uint32_t i, uint64_t key)
{
    if (i >= IP_MAX_REGIONS || p->pid != getpid() || p->refs[i] == 0 || --p->refs[i] > 0)
        return;
    int slot = p->slot[i];
    if (slot < 0 || slot >= IP_PIN_SLOTS)
        return;
    uint64_t mine = key;
    __atomic_compare_exchange_n(&v->ring->regions[i].pins[slot], &mine, 0, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    free_if_released(v, i);
}

/* Is region i big, mapped here, holding nothing (free, or in use but
 * emptied: nothing is left to read there) and idle since long enough? */
static int idle_memory(const ip_ringview_t *v, int i, int64_t now)
{
    const ip_region_t *rg = &v->ring->regions[i];
    if (!is_big(v, (uint32_t)i))
        return 0;
    uint64_t since = ld(&rg->idle_since);
    if (since == 0 || now - (int64_t)since < IP_WARM_IDLE_NS || any_pin(v->ring, (uint32_t)i))
        return 0;
    return !(ld(&rg->state) & ACTIVE) || ld(&v->ring->heads[i]) == ld(&rg->tail);
}

/* The consumer emptied region i: since when it holds nothing. */
static void stamp_emptied(ip_ringview_t *v, uint32_t i)
{
    if (i < IP_MAX_REGIONS && is_big(v, i)
        && ld(&v->ring->heads[i]) == ld(&v->ring->regions[i].tail)) {
        int64_t now = ip_now_ns();
        st(&v->ring->regions[i].idle_since, now > 0 ? (uint64_t)now : 1);
    }
}

int ip_ring_idle_memory(const ip_ringview_t *v, int64_t now)
{
    for (int i = 1; i < IP_MAX_REGIONS; i++)
        if (idle_memory(v, i, now))
            return 1;
    return 0;
}

void ip_ring_give_back(ip_ringview_t *v, int64_t now)
{
    for (int i = 1; i < IP_MAX_REGIONS; i++) {
        if (!idle_memory(v, i, now))
            continue;
        /* Only an extent this process mapped, and so checked, is punched;
         * freeing many pages takes a while, so without the GIL.  A holder
         * killed halfway leaves a free region partly given back: harmless. */
        int fd = v->fd;
        off_t off = (off_t)v->offs[i], len = (off_t)v->caps[i];
        Py_BEGIN_ALLOW_THREADS
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        Py_END_ALLOW_THREADS
        st(&v->ring->regions[i].idle_since, 0);
    }
}

static void apply_consumer(ip_ringview_t *v, const ip_journal_t *j)
{
    ip_ring_t *r = v->ring;
    st(&r->heads[j->region], j->pos);
    st32(&r->cons.cur, j->cur);
    st(&r->cons.count, j->count);
    if (j->other != IP_NO_REGION)
        release_region(v, j->other, j->other_state);
    stamp_emptied(v, j->region);
}

static void apply(ip_ringview_t *v, const ip_side_t *side, const ip_journal_t *j)
{
    if (side == &v->ring->prod)
        apply_producer(v->ring, j);
    else
        apply_consumer(v, j);
}

/* A side's commit: the journal goes out for recovery, is applied from the
 * private copy, and is cleared. */
static void journal_commit(ip_ringview_t *v, ip_side_t *side, const ip_journal_t *j)
{
    journal_publish(&side->journal, j);
    apply(v, side, j);
    st(&side->journal.valid, 0);
}

/* Is `other` a region a commit could have activated or released? */
static int other_sane(const ip_ring_t *r, const ip_journal_t *j)
{
    return j->other < IP_MAX_REGIONS && j->other != j->region && (j->other_state & ACTIVE)
           && ld(&r->regions[j->other].offset) != 0;
}

/* What a producer's commit can have written: a new tail at or after the
 * region's head, no more than a region away; a count that only grows; on a
 * switch, an assigned region made active and current. */
static int producer_journal_sane(ip_ring_t *r, const ip_journal_t *j)
{
    if (j->region >= IP_MAX_REGIONS || j->pos % IP_REC_ALIGN
        || j->pos - ld(&r->heads[j->region]) > IP_MAX_REGION_CAP)
        return 0;
    uint64_t count = ld(&r->prod.count);
    if (j->count < count || j->count - count > IP_MAX_MESSAGES)
        return 0;
    if (j->other == IP_NO_REGION)
        return j->cur == j->region;
    return other_sane(r, j) && j->cur == j->other && j->other_tail % IP_REC_ALIGN == 0
           && j->other_tail <= IP_MAX_REGION_CAP;
}

/* ... and a consumer's: a new head at or before the region's tail, a count
 * that only grows and never passes the producers', a release of an
 * assigned region other than the current one. */
static int consumer_journal_sane(ip_ring_t *r, const ip_journal_t *j)
{
    if (j->region >= IP_MAX_REGIONS || j->cur != j->region || j->pos % IP_REC_ALIGN
        || ld(&r->regions[j->region].tail) - j->pos > IP_MAX_REGION_CAP)
        return 0;
    uint64_t count = ld(&r->cons.count);
    if (j->count < count || j->count > ld(&r->prod.count))
        return 0;
    return j->other == IP_NO_REGION || other_sane(r, j);
}

/* Replays the journal a dead holder of one side left, if it is one that
 * side's commit could have written; drops it either way. */
static int recover(ip_ringview_t *v, ip_side_t *side)
{
    int producer = side == &v->ring->prod;
    ip_journal_t *shared = &side->journal;
    int rc = 0;
    if (ld(&shared->valid)) {
        ip_journal_t j;
        journal_load(shared, &j);
        if (!(producer ? producer_journal_sane(v->ring, &j) : consumer_journal_sane(v->ring, &j)))
            rc = corrupt(producer ? "a dead producer left an impossible journal; it was dropped"
                                  : "a dead consumer left an impossible journal; it was dropped");
        else
            apply(v, side, &j);
    }
    st(&shared->valid, 0);
    return rc;
}

int ip_ring_recover_producer(ip_ringview_t *v)
{
    return recover(v, &v->ring->prod);
}

int ip_ring_recover_consumer(ip_ringview_t *v)
{
    return recover(v, &v->ring->cons);
}

/* ------------------------------------------------------------------ */
/* Producer                                                            */

/* In a producer transaction: `region`/`pos` is where records go.  After a
 * switch, `other` holds the region the producer left and `other_tail` its
 * final tail (the FWD record included); the journal swaps them round. */

void ip_ring_produce_begin(ip_ringview_t *v, ip_txn_t *t)
{
    ip_ring_t *r = v->ring;
    t->region = ld32(&r->prod.cur);
    if (t->region >= IP_MAX_REGIONS)
        t->region = IP_NO_REGION; /* reported by the first reserve */
    t->pos = t->region == IP_NO_REGION ? 0 : ld(&r->regions[t->region].tail);
    t->count = ld(&r->prod.count);
    t->other = IP_NO_REGION;
    t->other_state = 0;
    t->other_tail = 0;
    t->nrec = 0;
}

/* Picks the region to continue in: the smallest free one that fits, else a
 * new one twice the size of the current one (`cap`).  Returns its index or
 * -1 with an exception set. */
static int pick_region(ip_ringview_t *v, uint32_t current, uint64_t cap, uint64_t need)
{
    ip_ring_t *r = v->ring;
    int best = -1;
    uint64_t best_cap = 0;
    for (int i = 0; i < IP_MAX_REGIONS; i++) {
        ip_region_t *rg = &r->regions[i];
        if ((uint32_t)i == current || ld(&rg->offset) == 0 || (ld(&rg->state) & ACTIVE))
            continue;
        uint64_t c = v->maps[i] ? v->caps[i] : ld(&rg->cap);
        if (c >= need && (best < 0 || c < best_cap)) {
            best = i;
            best_cap = c;
        }
    }
    if (best >= 0)
        return best;
    for (int i = 1; i < IP_MAX_REGIONS; i++) {
        ip_region_t *rg = &r->regions[i];
        if (ld(&rg->offset) != 0)
            continue;
        uint64_t c = cap * 2;
        if (c > IP_GROW_CAP)
            c = IP_GROW_CAP;
        if (c < need)
            c = pow2_at_least(need);
        if (c > IP_MAX_REGION_CAP) {
            PyErr_Format(PyExc_MemoryError, "a queue region of %llu bytes is too large",
                         (unsigned long long)c);
            return -1;
        }
        uint64_t off;
        if (ip_segment_alloc(v->seg, v->fd, c, &off) < 0)
            return -1;
        st(&rg->cap, c);
        st(&rg->tail, 0);
        st(&rg->state, 0);
        st(&rg->offset, off);
        return i;
    }
    PyErr_SetString(PyExc_MemoryError,
                    "queue has too many overflow regions: consumers are far behind producers");
    return -1;
}

/* The consumer's position in the producer's region: the hint while it is
 * good enough, else the head itself.  -1 with SegmentError when the head
 * is not a position the consumer could have reached. */
static int producer_used(ip_ring_t *r, ip_txn_t *t, uint64_t cap, int fresh, uint64_t *used)
{
    uint64_t head;
    if (!fresh && ld32(&r->prod.hint_region) == t->region) {
        head = ld(&r->prod.hint_pos);
        /* A hint is only a cache: one that cannot be right is replaced. */
        if (head % IP_REC_ALIGN == 0 && t->pos - head <= cap - IP_REC_HDR) {
            *used = t->pos - head;
            return 1;
        }
    }
    head = ld(&r->heads[t->region]);
    set_hint(&r->prod, t->region, head);
    /* The producer always leaves IP_REC_HDR free, for a FWD record. */
    if (head % IP_REC_ALIGN || t->pos - head > cap - IP_REC_HDR)
        return corrupt("head and tail of a region are too far apart");
    *used = t->pos - head;
    return 0;
}

uint8_t *ip_ring_reserve(ip_ringview_t *v, ip_txn_t *t, uint32_t type, uint64_t len)
{
    ip_ring_t *r = v->ring;
    if (len > IP_MAX_RECORD) {
        PyErr_SetString(PyExc_OverflowError, "message too large");
        return NULL;
    }
    uint64_t need = rec_space(len);
    if (t->region >= IP_MAX_REGIONS) {
        corrupt("the producers' current region is out of range");
        return NULL;
    }
    for (;;) {
        uint8_t *buf;
        uint64_t cap, used;
        if (region_map(v, t->region, &buf, &cap) < 0)
            return NULL;
        if (t->pos % IP_REC_ALIGN) {
            corrupt("misaligned tail");
            return NULL;
        }
        uint64_t phys = t->pos & (cap - 1);
        uint64_t contig = cap - phys;
        uint64_t pad = need <= contig ? 0 : contig;
        if (t->other != IP_NO_REGION) {
            used = t->pos; /* activated in this transaction: its stored head is stale */
        } else {
            int hinted = producer_used(r, t, cap, 0, &used);
            if (hinted < 0)
                return NULL;
            if (hinted && used + pad + need + IP_REC_HDR > cap && producer_used(r, t, cap, 1, &used) < 0)
                return NULL;
        }
        /* used <= cap - IP_REC_HDR, pad <= cap and need <= IP_MAX_RECORD:
         * the sum cannot wrap.  A region a reader holds a view into is
         * full for producers: the room the reader's message left is not
         * theirs to write.  Read after the head, which the reader's pin
         * comes before. */
        if (used + pad + need + IP_REC_HDR <= cap
            && (t->other != IP_NO_REGION || !any_pin(r, t->region))) {
            if (pad) {
                ip_rec_t *p = (ip_rec_t *)(buf + phys);
                p->type = IP_REC_PAD;
                p->reserved = 0;
                p->len = pad - IP_REC_HDR;
                t->pos += pad;
                phys = 0;
            }
            ip_rec_t *h = (ip_rec_t *)(buf + phys);
            h->type = type;
            h->reserved = 0;
            h->len = len;
            t->pos += need;
            t->count++;
            t->nrec++;
            return (uint8_t *)(h + 1);
        }
        if (t->other != IP_NO_REGION)
            return NULL; /* one switch per transaction: commit first */

        int next = pick_region(v, t->region, cap, need + 2 * IP_REC_HDR);
        if (next < 0)
            return NULL;
        uint8_t *next_buf;
        uint64_t next_cap;
        if (region_map(v, (uint32_t)next, &next_buf, &next_cap) < 0)
            return NULL;
        /* The record must fit there at once: a switch is never published
         * without one, which is what lets readers bound their steps. */
        if (next_cap < need + 2 * IP_REC_HDR) {
            corrupt("a free region is smaller than the region table says");
            return NULL;
        }
        ip_rec_t *f = (ip_rec_t *)(buf + phys);
        f->type = IP_REC_FWD;
        f->reserved = 0;
        f->len = (uint64_t)next;
        uint64_t gen = ld(&r->regions[next].state) >> 1;
        t->other = t->region;
        t->other_tail = t->pos + IP_REC_HDR;
        t->other_state = ((gen + 1) << 1) | ACTIVE;
        t->region = (uint32_t)next;
        t->pos = 0;
    }
}

uint32_t ip_ring_produce_commit(ip_ringview_t *v, ip_txn_t *t)
{
    ip_ring_t *r = v->ring;
    uint32_t n = t->nrec;
    ip_journal_t j = {0};
    if (t->other == IP_NO_REGION) {
        if (n == 0)
            return 0;
        j.region = t->region;
        j.pos = t->pos;
        j.other = IP_NO_REGION;
    } else {
        /* Journal speaks of the region left behind and the one activated. */
        j.region = t->other;
        j.pos = t->other_tail;
        j.other = t->region;
        j.other_tail = t->pos;
        j.other_state = t->other_state;
    }
    j.cur = t->region;
    j.count = t->count;
    journal_commit(v, &r->prod, &j);
    ip_ring_produce_begin(v, t);
    return n;
}

/* ------------------------------------------------------------------ */
/* Consumer                                                            */

/* In a consumer transaction, `other` is the region left behind (to be
 * released at commit) and `other_state` the state it had while active. */

void ip_ring_consume_begin(ip_ringview_t *v, ip_txn_t *t)
{
    ip_ring_t *r = v->ring;
    t->region = ld32(&r->cons.cur);
    if (t->region >= IP_MAX_REGIONS)
        t->region = IP_NO_REGION; /* reported by the first peek */
    t->pos = t->region == IP_NO_REGION ? 0 : ld(&r->heads[t->region]);
    t->count = ld(&r->cons.count);
    t->other = IP_NO_REGION;
    t->other_state = 0;
    t->other_tail = 0;
    t->nrec = 0;
}

/* The published tail of the consumer's region: the hint while it says there
 * is more to read, else the tail itself. */
static uint64_t consumer_tail(ip_ring_t *r, ip_txn_t *t, uint64_t cap)
{
    if (ld32(&r->cons.hint_region) == t->region) {
        uint64_t hint = ld(&r->cons.hint_pos);
        /* A hint is only a cache: one that cannot be right is replaced. */
        if (hint != t->pos && hint % IP_REC_ALIGN == 0 && hint - t->pos <= cap)
            return hint;
    }
    uint64_t tail = ld(&r->regions[t->region].tail);
    set_hint(&r->cons, t->region, tail);
    return tail;
}

/* The records a producer leaves in front of a message are: nothing; a PAD
 * (the message did not fit before the end of the buffer); or a FWD, after
 * which the region it names starts with the message.  So a reader reaches
 * a message, or the tail, within a few steps, and two FWDs never follow
 * each other without a message in between (ip_channel's take counts on
 * that); anything else is forged. */
int ip_ring_peek(ip_ringview_t *v, ip_txn_t *t, uint32_t *type, const uint8_t **data, uint64_t *len)
{
    ip_ring_t *r = v->ring;
    for (int steps = 0;; steps++) {
        if (t->region >= IP_MAX_REGIONS)
            return corrupt("the consumers' current region is out of range");
        if (steps > IP_PEEK_STEPS)
            return corrupt("padding and forward records lead nowhere");
        uint8_t *buf;
        uint64_t cap;
        if (region_map(v, t->region, &buf, &cap) < 0)
            return -1;
        if (t->pos % IP_REC_ALIGN)
            return corrupt("misaligned head");
        uint64_t tail = consumer_tail(r, t, cap);
        if (t->pos == tail)
            return 0;
        uint64_t avail = tail - t->pos;
        if (tail % IP_REC_ALIGN || avail > cap)
            return corrupt("head and tail of a region are too far apart");
        uint64_t phys = t->pos & (cap - 1);
        const ip_rec_t *h = (const ip_rec_t *)(buf + phys);
        /* Each read once: the writer (or a forger) may change them meanwhile. */
        uint32_t rtype = __atomic_load_n(&h->type, __ATOMIC_RELAXED);
        uint64_t rlen = __atomic_load_n(&h->len, __ATOMIC_RELAXED);
        switch (rtype) {
        case IP_REC_PAD:
            if (cap - phys > avail)
                return corrupt("padding runs past the tail");
            t->pos += cap - phys;
            continue;
        case IP_REC_FWD: {
            if (rlen >= IP_MAX_REGIONS || rlen == t->region)
                return corrupt("bad forward record");
            if (t->other != IP_NO_REGION)
                return IP_PEEK_AGAIN; /* one release per transaction */
            uint32_t next = (uint32_t)rlen;
            uint64_t left = ld(&r->regions[t->region].state);
            if (!(left & ACTIVE) || !(ld(&r->regions[next].state) & ACTIVE))
                return corrupt("forward record from or to a free region");
            /* Not committed yet, but the tail hint must never meet a region
             * that was released and reused since it was taken. */
            drop_hint(&r->cons);
            t->other = t->region;
            t->other_state = left;
            t->region = next;
            t->pos = ld(&r->heads[next]);
            continue;
        }
        case IP_REC_PICKLE:
        case IP_REC_BYTES:
        case IP_REC_PLAIN:
        case IP_REC_RAW:
        case IP_REC_OOB:
            /* phys <= cap - IP_REC_HDR: the position is aligned. */
            if (rlen > cap - phys - IP_REC_HDR)
                return corrupt("record longer than its region");
            if (rec_space(rlen) > avail)
                return corrupt("record runs past the tail");
            *type = rtype;
            *data = (const uint8_t *)(h + 1);
            *len = rlen;
            return 1;
        default:
            return corrupt("unknown record type");
        }
    }
}

void ip_ring_advance(ip_txn_t *t, uint64_t len)
{
    t->pos += rec_space(len);
    t->count++;
    t->nrec++;
}

uint32_t ip_ring_consume_commit(ip_ringview_t *v, ip_txn_t *t)
{
    ip_ring_t *r = v->ring;
    uint32_t n = t->nrec;
    if (n == 0 && t->other == IP_NO_REGION)
        return 0;
    ip_journal_t j = {0};
    j.region = t->region;
    j.pos = t->pos;
    j.cur = t->region;
    j.count = t->count;
    j.other = t->other;
    j.other_state = t->other_state;
    journal_commit(v, &r->cons, &j);
    ip_ring_consume_begin(v, t);
    return n;
}

uint64_t ip_ring_bytes_used(const ip_ringview_t *v)
{
    const ip_ring_t *r = v->ring;
    uint64_t total = 0;
    for (int i = 0; i < IP_MAX_REGIONS; i++) {
        const ip_region_t *rg = &r->regions[i];
        if (!(ld(&rg->state) & ACTIVE))
            continue;
        uint64_t used = ld(&rg->tail) - ld(&r->heads[i]);
        if (used <= ld(&rg->cap) && used <= IP_MAX_REGION_CAP)
            total += used;
    }
    return total;
}

const uint64_t *ip_ring_tail_word(const ip_ringview_t *v, const ip_txn_t *t)
{
    return &v->ring->regions[t->region].tail;
}

int ip_ring_full(ip_ringview_t *v, uint64_t in, uint64_t maxsize)
{
    ip_side_t *p = &v->ring->prod;
    uint64_t out = ld(&p->hint_count);
    if (in >= out && in - out < maxsize)
        return 0;
    out = ld(&v->ring->cons.count);
    st(&p->hint_count, out);
    /* Consumers only take what producers counted, and we hold the
     * producers' lock: out cannot pass in. */
    if (out > in || in - out > IP_MAX_MESSAGES)
        return corrupt("impossible message counts");
    return in - out >= maxsize;
}
