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
 */
#include "interproc.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>

#define ACTIVE 1ull
/* Overflow regions up to this many times the base region are kept warm. */
#define IP_WARM_FACTOR 4

static inline uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void st(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Records the other side's position in `region`.  The region is cleared
 * first and set last, so a side killed halfway leaves no hint rather than
 * one that pairs a region with another region's position. */
static inline void set_hint(ip_side_t *side, uint32_t region, uint64_t pos)
{
    __atomic_store_n(&side->hint_region, IP_NO_REGION, __ATOMIC_RELEASE);
    st(&side->hint_pos, pos);
    __atomic_store_n(&side->hint_region, region, __ATOMIC_RELEASE);
}

static inline void drop_hint(ip_side_t *side)
{
    __atomic_store_n(&side->hint_region, IP_NO_REGION, __ATOMIC_RELEASE);
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
    if (r->prod.cur >= IP_MAX_REGIONS || r->cons.cur >= IP_MAX_REGIONS)
        goto corrupt;
    for (int i = 0; i < IP_MAX_REGIONS; i++) {
        uint64_t off = r->regions[i].offset, cap = r->regions[i].cap;
        if (off == 0) {
            if (i == 0)
                goto corrupt;
            continue;
        }
        if (cap < IP_PAGE || (cap & (cap - 1)) || off % IP_PAGE || off + cap > file_size
            || off + cap < off)
            goto corrupt;
    }
    return 0;
corrupt:
    PyErr_SetString(ip_SegmentError, "queue header is corrupt (bad region table)");
    return -1;
}

static uint8_t *region_buf(ip_ringview_t *v, uint32_t i)
{
    if (i == 0)
        return v->base;
    if (v->maps[i])
        return v->maps[i];
    ip_region_t *rg = &v->ring->regions[i];
    uint64_t off = ld(&rg->offset);
    uint64_t cap = rg->cap;
    if (off == 0 || cap < IP_PAGE || (cap & (cap - 1))) {
        PyErr_SetString(ip_SegmentError, "queue data is corrupt (record points to an unassigned region)");
        return NULL;
    }
    uint8_t *p = ip_map(v->fd, (size_t)cap, (off_t)off);
    if (p)
        v->maps[i] = p;
    return p;
}

void ip_ringview_unmap(ip_ringview_t *v)
{
    for (int i = 1; i < IP_MAX_REGIONS; i++) {
        if (v->maps[i]) {
            munmap(v->maps[i], (size_t)v->ring->regions[i].cap);
            v->maps[i] = NULL;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Journals                                                            */

static void apply_producer(ip_ring_t *r, ip_journal_t *j)
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
    __atomic_store_n(&r->prod.cur, j->cur, __ATOMIC_RELEASE);
}

static void release_region(ip_ringview_t *v, uint32_t i, uint64_t expected)
{
    ip_region_t *rg = &v->ring->regions[i];
    /* A different state means a replay: it was released, maybe reused, already. */
    if (ld(&rg->state) != expected)
        return;
    /* Big overflow regions give their memory back to the kernel.  The base
     * region and the first overflow sizes stay warm: a stream that overflows
     * steadily would otherwise fault every page in again on each lap. */
    if (i != 0 && rg->cap > IP_WARM_FACTOR * v->ring->regions[0].cap)
        fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)rg->offset,
                  (off_t)rg->cap);
    /* Only now may a producer pick it up again. */
    st(&rg->state, expected & ~ACTIVE);
}

static void apply_consumer(ip_ringview_t *v, ip_journal_t *j)
{
    ip_ring_t *r = v->ring;
    st(&r->heads[j->region], j->pos);
    __atomic_store_n(&r->cons.cur, j->cur, __ATOMIC_RELEASE);
    st(&r->cons.count, j->count);
    if (j->other != IP_NO_REGION)
        release_region(v, j->other, j->other_state);
}

static int journal_sane(const ip_journal_t *j)
{
    return j->region < IP_MAX_REGIONS && j->cur < IP_MAX_REGIONS
           && (j->other == IP_NO_REGION || j->other < IP_MAX_REGIONS);
}

void ip_ring_recover_producer(ip_ringview_t *v)
{
    ip_journal_t *j = &v->ring->prod.journal;
    if (ld(&j->valid) && journal_sane(j))
        apply_producer(v->ring, j);
    st(&j->valid, 0);
}

void ip_ring_recover_consumer(ip_ringview_t *v)
{
    ip_journal_t *j = &v->ring->cons.journal;
    if (ld(&j->valid) && journal_sane(j))
        apply_consumer(v, j);
    st(&j->valid, 0);
}

/* ------------------------------------------------------------------ */
/* Producer                                                            */

/* In a producer transaction: `region`/`pos` is where records go.  After a
 * switch, `other` holds the region the producer left and `other_tail` its
 * final tail (the FWD record included); the journal swaps them round. */

void ip_ring_produce_begin(ip_ringview_t *v, ip_txn_t *t)
{
    ip_ring_t *r = v->ring;
    t->region = __atomic_load_n(&r->prod.cur, __ATOMIC_ACQUIRE);
    if (t->region >= IP_MAX_REGIONS)
        t->region = 0; /* corrupt; region 0 always exists */
    t->pos = ld(&r->regions[t->region].tail);
    t->count = ld(&r->prod.count);
    t->other = IP_NO_REGION;
    t->other_state = 0;
    t->other_tail = 0;
    t->nrec = 0;
}

/* Picks the region to continue in: the smallest free one that fits, else a
 * new one twice the size of the current one.  Returns its index or -1. */
static int pick_region(ip_ringview_t *v, uint32_t current, uint64_t need)
{
    ip_ring_t *r = v->ring;
    int best = -1;
    for (int i = 0; i < IP_MAX_REGIONS; i++) {
        ip_region_t *rg = &r->regions[i];
        if ((uint32_t)i == current || ld(&rg->offset) == 0 || (ld(&rg->state) & ACTIVE))
            continue;
        if (rg->cap >= need && (best < 0 || rg->cap < r->regions[best].cap))
            best = i;
    }
    if (best >= 0)
        return best;
    for (int i = 1; i < IP_MAX_REGIONS; i++) {
        ip_region_t *rg = &r->regions[i];
        if (ld(&rg->offset) != 0)
            continue;
        uint64_t cap = r->regions[current].cap * 2;
        if (cap > (1ull << 40))
            cap = 1ull << 40;
        if (cap < need)
            cap = pow2_at_least(need);
        if (cap > (1ull << 44)) {
            PyErr_Format(PyExc_MemoryError, "a queue region of %llu bytes is too large",
                         (unsigned long long)cap);
            return -1;
        }
        uint64_t off;
        if (ip_segment_alloc(v->seg, v->fd, cap, &off) < 0)
            return -1;
        rg->cap = cap;
        rg->tail = 0;
        rg->state = 0;
        st(&rg->offset, off);
        return i;
    }
    PyErr_SetString(PyExc_MemoryError,
                    "queue has too many overflow regions: consumers are far behind producers");
    return -1;
}

uint8_t *ip_ring_reserve(ip_ringview_t *v, ip_txn_t *t, uint32_t type, uint64_t len)
{
    ip_ring_t *r = v->ring;
    uint64_t need = rec_space(len);
    if (need < len) {
        PyErr_SetString(PyExc_OverflowError, "message too large");
        return NULL;
    }
    for (;;) {
        ip_region_t *rg = &r->regions[t->region];
        uint64_t cap = rg->cap;
        uint64_t head;
        int hinted = 0;
        if (t->other != IP_NO_REGION) {
            head = 0; /* activated in this transaction: its stored head is stale */
        } else if (__atomic_load_n(&r->prod.hint_region, __ATOMIC_ACQUIRE) == t->region) {
            head = ld(&r->prod.hint_pos);
            hinted = 1;
        } else {
            head = ld(&r->heads[t->region]);
            set_hint(&r->prod, t->region, head);
        }
        uint64_t used = t->pos - head;
        uint64_t phys = t->pos & (cap - 1);
        uint64_t contig = cap - phys;
        uint64_t pad = need <= contig ? 0 : contig;
        /* IP_REC_HDR stays free so that a FWD record always fits. */
        int fits = used <= cap && used + pad + need + IP_REC_HDR <= cap;
        if (!fits && hinted) {
            head = ld(&r->heads[t->region]);
            set_hint(&r->prod, t->region, head);
            used = t->pos - head;
            fits = used <= cap && used + pad + need + IP_REC_HDR <= cap;
        }
        if (fits) {
            uint8_t *buf = region_buf(v, t->region);
            if (buf == NULL)
                return NULL;
            if (pad) {
                ip_rec_t *p = (ip_rec_t *)(buf + phys);
                p->type = IP_REC_PAD;
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

        int next = pick_region(v, t->region, need + 2 * IP_REC_HDR);
        if (next < 0)
            return NULL;
        if (region_buf(v, (uint32_t)next) == NULL)
            return NULL;
        uint8_t *buf = region_buf(v, t->region);
        if (buf == NULL)
            return NULL;
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
    ip_journal_t *j = &r->prod.journal;
    uint32_t n = t->nrec;
    if (t->other == IP_NO_REGION) {
        if (n == 0)
            return 0;
        j->region = t->region;
        j->pos = t->pos;
        j->other = IP_NO_REGION;
    } else {
        /* Journal speaks of the region left behind and the one activated. */
        j->region = t->other;
        j->pos = t->other_tail;
        j->other = t->region;
        j->other_tail = t->pos;
        j->other_state = t->other_state;
    }
    j->cur = t->region;
    j->count = t->count;
    __atomic_store_n(&j->valid, 1, __ATOMIC_SEQ_CST);
    apply_producer(r, j);
    st(&j->valid, 0);
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
    t->region = __atomic_load_n(&r->cons.cur, __ATOMIC_ACQUIRE);
    if (t->region >= IP_MAX_REGIONS)
        t->region = 0;
    t->pos = ld(&r->heads[t->region]);
    t->count = ld(&r->cons.count);
    t->other = IP_NO_REGION;
    t->other_state = 0;
    t->other_tail = 0;
    t->nrec = 0;
}

static int corrupt(const char *what)
{
    PyErr_Format(ip_SegmentError, "queue data is corrupt (%s)", what);
    return -1;
}

int ip_ring_peek(ip_ringview_t *v, ip_txn_t *t, uint32_t *type, const uint8_t **data, uint64_t *len)
{
    ip_ring_t *r = v->ring;
    for (;;) {
        ip_region_t *rg = &r->regions[t->region];
        uint64_t tail;
        if (__atomic_load_n(&r->cons.hint_region, __ATOMIC_ACQUIRE) == t->region
            && ld(&r->cons.hint_pos) > t->pos) {
            tail = ld(&r->cons.hint_pos);
        } else {
            tail = ld(&rg->tail);
            set_hint(&r->cons, t->region, tail);
        }
        if (t->pos == tail)
            return 0;
        uint64_t cap = rg->cap;
        if (tail - t->pos > cap)
            return corrupt("head and tail are too far apart");
        uint8_t *buf = region_buf(v, t->region);
        if (buf == NULL)
            return -1;
        uint64_t phys = t->pos & (cap - 1);
        const ip_rec_t *h = (const ip_rec_t *)(buf + phys);
        uint64_t room = cap - phys - IP_REC_HDR;
        switch (h->type) {
        case IP_REC_PAD:
            t->pos += cap - phys;
            continue;
        case IP_REC_FWD: {
            if (h->len >= IP_MAX_REGIONS || h->len == t->region)
                return corrupt("bad forward record");
            if (t->other != IP_NO_REGION)
                return IP_PEEK_AGAIN; /* one release per transaction */
            uint32_t next = (uint32_t)h->len;
            /* Not committed yet, but the tail hint must never meet a region
             * that was released and reused since it was taken. */
            drop_hint(&r->cons);
            t->other = t->region;
            t->other_state = ld(&rg->state);
            t->region = next;
            t->pos = ld(&r->heads[next]);
            continue;
        }
        case IP_REC_PICKLE:
        case IP_REC_BYTES:
        case IP_REC_PLAIN:
        case IP_REC_RAW:
            if (h->len > room)
                return corrupt("record longer than its region");
            *type = h->type;
            *data = (const uint8_t *)(h + 1);
            *len = h->len;
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
    ip_journal_t *j = &r->cons.journal;
    j->region = t->region;
    j->pos = t->pos;
    j->cur = t->region;
    j->count = t->count;
    j->other = t->other;
    j->other_state = t->other_state;
    __atomic_store_n(&j->valid, 1, __ATOMIC_SEQ_CST);
    apply_consumer(v, j);
    st(&j->valid, 0);
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
        if (used <= rg->cap)
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
    return in >= out && in - out >= maxsize;
}
