/* Channel: one ring as its users see it.  Put and take with deadlines,
 * locking with recovery, waking the other side.  Queue and Connection are
 * both thin types over channels, so this logic exists once.
 */
#include "interproc.h"

#include <errno.h>
#include <string.h>

static inline uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* Locks one side, replaying the journal of a holder that died.
 * 1 locked, 0 timed out, -1 error (including the owner's check). */
static int lock_side(ip_channel_t *ch, ip_side_t *side, const ip_deadline_t *d)
{
    if (ch->check && ch->check(ch->owner) < 0)
        return -1;
    int r = ip_mutex_lock(&side->lock, d);
    if (r == IP_LOCK_OWNER_DIED) {
        int rc = side == &ch->view.ring->prod ? ip_ring_recover_producer(&ch->view)
                                              : ip_ring_recover_consumer(&ch->view);
        ip_mutex_consistent(&side->lock);
        if (rc < 0) {
            ip_mutex_unlock(&side->lock);
            return -1;
        }
        r = IP_LOCK_OK;
    }
    return r == IP_LOCK_OK ? 1 : r == IP_LOCK_TIMEOUT ? 0 : -1;
}

/* Reads out before in: both only grow, and out never passes in, so a
 * reader only sees out > in (or more messages than the regions can hold)
 * in a damaged header. */
static int counts(const ip_channel_t *ch, uint64_t *n)
{
    uint64_t out = ld(&ch->view.ring->cons.count);
    uint64_t in = ld(&ch->view.ring->prod.count);
    *n = in - out;
    return in >= out && in - out <= IP_MAX_MESSAGES ? 0 : -1;
}

uint64_t ip_channel_size(const ip_channel_t *ch)
{
    uint64_t n;
    return counts(ch, &n) == 0 ? n : 0;
}

int ip_channel_count(const ip_channel_t *ch, uint64_t *n)
{
    if (counts(ch, n) == 0)
        return 0;
    PyErr_SetString(ip_SegmentError, "queue header is corrupt (impossible message counts)");
    return -1;
}

/* ------------------------------------------------------------------ */
/* shutdown                                                            */

static void shut_error(void)
{
    PyErr_SetString(ip_state.ShutDown ? ip_state.ShutDown : PyExc_RuntimeError,
                    "queue is shut down");
}

int ip_channel_shut_state(const ip_channel_t *ch)
{
    uint64_t st = ld(&ch->shut->state);
    if (st <= IP_SHUT_NOW)
        return (int)st;
    PyErr_SetString(ip_SegmentError, "queue header is corrupt (unknown shutdown state)");
    return -1;
}

uint64_t ip_channel_discarded(const ip_channel_t *ch, uint64_t limit)
{
    uint64_t d = ld(&ch->shut->discarded);
    return d == 0 ? 0 : d - 1 < limit ? d - 1 : limit;
}

/* Under cons.lock, in an immediately shut-down channel.  The count is
 * recorded before anything is discarded: a process that dies in the middle
 * leaves the rest to the next one here, which must not count it again.
 * Each commit is journaled like a take's, so the ring stays whole. */
static int discard_locked(ip_channel_t *ch)
{
    uint64_t n;
    if (ip_channel_count(ch, &n) < 0)
        return -1;
    if (ld(&ch->shut->discarded) == 0)
        __atomic_store_n(&ch->shut->discarded, n + 1, __ATOMIC_RELEASE);
    if (n == 0)
        return 0;
    ip_ringview_t *v = &ch->view;
    ip_txn_t t;
    ip_ring_consume_begin(v, &t);
    int again = 0, rc;
    for (;;) {
        uint32_t type;
        const uint8_t *data;
        uint64_t len;
        rc = ip_ring_peek(v, &t, &type, &data, &len);
        if (rc == IP_PEEK_AGAIN) {
            if (again++) {
                PyErr_SetString(ip_SegmentError,
                                "queue data is corrupt (forward records without messages between)");
                rc = -1;
                break;
            }
            ip_ring_consume_commit(v, &t);
            continue;
        }
        if (rc <= 0)
            break;
        again = 0;
        ip_ring_advance(&t, len);
    }
    ip_ring_consume_commit(v, &t);
    return rc < 0 ? -1 : 0;
}

int ip_channel_finish_discard(ip_channel_t *ch)
{
    ip_ring_t *r = ch->view.ring;
    ip_deadline_t forever = {.infinite = 1};
    if (lock_side(ch, &r->cons, &forever) <= 0)
        return -1;
    int rc = ip_channel_shut_state(ch) < 0 ? -1 : discard_locked(ch);
    ip_mutex_unlock(&r->cons.lock);
    ip_event_signal(&r->get_ev, INT32_MAX);
    return rc;
}

int ip_channel_shutdown(ip_channel_t *ch, int immediate)
{
    ip_ring_t *r = ch->view.ring;
    ip_deadline_t forever = {.infinite = 1};
    int want = immediate ? IP_SHUT_NOW : IP_SHUT_DRAIN;
    /* Under the producer lock (whose dead holder's journal is replayed
     * first): the put in progress commits before the state changes, and
     * none commits after. */
    if (lock_side(ch, &r->prod, &forever) <= 0)
        return -1;
    int st = ip_channel_shut_state(ch);
    if (st >= 0 && st < want)
        __atomic_store_n(&ch->shut->state, (uint64_t)want, __ATOMIC_SEQ_CST);
    ip_mutex_unlock(&r->prod.lock);
    if (st < 0)
        return -1;
    /* Every sleeper looks again: takes find the state, puts waiting for
     * room find it under the lock.  A shutdown killed before these lines
     * costs the sleepers one slice of their wait, no more. */
    ip_event_signal(&r->put_ev, INT32_MAX);
    ip_event_signal(&r->get_ev, INT32_MAX);
    if (want == IP_SHUT_NOW || st == IP_SHUT_NOW)
        return ip_channel_finish_discard(ch);
    return 0;
}

/* ------------------------------------------------------------------ */
/* put                                                                 */

/* Gives back the memory of big regions idle for a while (ip_ring_give_back)
 * if the producers' lock is free now; never waits for it.  For a consumer
 * about to sleep: a stream that stopped leaves nothing resident behind. */
static void give_back_idle(ip_channel_t *ch)
{
    ip_ring_t *r = ch->view.ring;
    int64_t now = ip_now_ns();
    if (!ip_ring_idle_memory(&ch->view, now))
        return;
    int rc = pthread_mutex_trylock(&r->prod.lock);
    if (rc == EOWNERDEAD) {
        int bad = ip_ring_recover_producer(&ch->view);
        ip_mutex_consistent(&r->prod.lock);
        if (bad < 0)
            PyErr_Clear(); /* reported to the next producer, as lock_side would */
    } else if (rc != 0) {
        return;
    }
    ip_ring_give_back(&ch->view, now);
    ip_mutex_unlock(&r->prod.lock);
}

/* Copies payloads into the ring under prod.lock.  Returns how many went in;
 * *err is set when it stopped on a Python error rather than on maxsize. */
static Py_ssize_t write_batch(ip_channel_t *ch, const ip_payload_t *payloads, Py_ssize_t n,
                              uint32_t *published, int *err)
{
    ip_ringview_t *v = &ch->view;
    ip_txn_t t;
    ip_ring_produce_begin(v, &t);
    Py_ssize_t i = 0;
    int again = 0, switched = 0;
    *err = 0;
    while (i < n) {
        int full = ch->maxsize ? ip_ring_full(v, t.count, ch->maxsize) : 0;
        if (full) {
            *err = full < 0;
            break;
        }
        uint8_t *dst = ip_ring_reserve(v, &t, payloads[i].type, payloads[i].len);
        if (dst == NULL) {
            /* "Commit first" comes at most once per record: the fresh
             * transaction switches regions, and a switch always fits. */
            if (!PyErr_Occurred() && again++)
                PyErr_SetString(ip_SegmentError, "queue header is corrupt (no region takes the message)");
            if (PyErr_Occurred()) {
                *err = 1;
                break;
            }
            *published += ip_ring_produce_commit(v, &t);
            continue;
        }
        again = 0;
        switched |= t.other != IP_NO_REGION;
        ip_payload_write(&payloads[i], dst);
        i++;
    }
    *published += ip_ring_produce_commit(v, &t);
    /* Regions change hands: a moment to give back those left idle. */
    if (switched)
        ip_ring_give_back(v, ip_now_ns());
    return i;
}

typedef struct {
    ip_channel_t *ch;
    const ip_payload_t *payloads;
    Py_ssize_t n;
    Py_ssize_t done;
    const ip_deadline_t *d;
} put_ctx;

/* One try at putting what is left; waits only for the lock. */
static int put_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    put_ctx *c = arg;
    ip_ring_t *r = c->ch->view.ring;
    (void)before_sleep;
    int locked = lock_side(c->ch, &r->prod, c->d);
    if (locked <= 0)
        return locked;
    /* Read under the lock that shutdown() stores it under: a put either
     * commits before the shutdown or sees it. */
    if (c->ch->shut) {
        int st = ip_channel_shut_state(c->ch);
        if (st != IP_SHUT_OPEN) {
            ip_mutex_unlock(&r->prod.lock);
            if (st > 0)
                shut_error();
            return -1;
        }
    }
    uint32_t published = 0;
    int err;
    c->done += write_batch(c->ch, c->payloads + c->done, c->n - c->done, &published, &err);
    ip_mutex_unlock(&r->prod.lock);
    if (published) {
        ip_event_signal(&r->put_ev, (int)published);
        if (c->ch->published && c->ch->published(c->ch->owner) < 0)
            err = 1;
    }
    if (err)
        return -1;
    if (c->done == c->n)
        return 1;
    *watch = &r->cons.count;
    *watch_val = ld(&r->cons.count);
    return 0;
}

Py_ssize_t ip_channel_put(ip_channel_t *ch, const ip_payload_t *payloads, Py_ssize_t n,
                          const ip_deadline_t *d, int *timed_out)
{
    put_ctx c = {ch, payloads, n, 0, d};
    int rc = ip_wait_for(&ch->view.ring->get_ev, d, put_attempt, &c);
    *timed_out = rc == IP_WAIT_TIMEOUT;
    return c.done;
}

/* ------------------------------------------------------------------ */
/* take                                                                */

/* Copies up to max records out of the ring into new bytes objects, under
 * cons.lock.  Returns the number taken, or -1.  No object the garbage
 * collector tracks is made here, so no finalizer can run under the lock. */
static Py_ssize_t take_records(ip_channel_t *ch, Py_ssize_t max, uint64_t max_len,
                               PyObject **payloads, uint32_t *types, ip_view_t *view,
                               const uint64_t **watch, uint64_t *watch_val)
{
    ip_ringview_t *v = &ch->view;
    ip_txn_t t;
    ip_ring_consume_begin(v, &t);
    Py_ssize_t n = 0;
    int failed = 0, again = 0;
    while (n < max) {
        uint32_t type;
        const uint8_t *data;
        uint64_t len;
        int rc = ip_ring_peek(v, &t, &type, &data, &len);
        if (rc == IP_PEEK_AGAIN) {
            /* A region a producer switched to starts with a message, so a
             * second FWD without one taken in between is forged, and
             * following such FWDs could go round for ever. */
            if (again++) {
                rc = -1;
                PyErr_SetString(ip_SegmentError,
                                "queue data is corrupt (forward records without messages between)");
            } else {
                ip_ring_consume_commit(v, &t);
                continue;
            }
        }
        if (rc <= 0) {
            failed = rc < 0;
            if (rc == 0) {
                *watch = ip_ring_tail_word(v, &t);
                *watch_val = t.pos;
            }
            break;
        }
        if (len > max_len) {
            /* Left where it is, for a reader that can take it. */
            PyErr_SetString(PyExc_OSError, "bad message length");
            failed = 1;
            break;
        }
        /* Read in place: pinned, so that no producer writes over it and
         * the region is not freed, until the view is given back.  Pinned
         * before the commit that takes it: a producer that sees the new
         * head sees the pin. */
        if (view != NULL && type == IP_REC_OOB && view->key != 0) {
            if (ip_ring_pin(v, view->pins, t.region, view->key) == 0) {
                view->data = data;
                view->len = len;
                view->region = t.region;
                payloads[n] = NULL;
                types[n] = type;
                n++;
                again = 0;
                ip_ring_advance(&t, len);
                continue;
            }
            /* Every slot taken by live readers: a copy, as get() makes. */
        }
        /* A message with out-of-band buffers lands in a writable receive
         * buffer: the receiver's object lies over its buffers, writable as
         * the sender's were (ip_deserialize). */
        PyObject *b;
        uint8_t *dst = NULL;
        if (type == IP_REC_OOB)
            b = ip_recv_buffer_new(len, &dst);
        else if (len >= IP_NOGIL_COPY)
            b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
        else
            b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
        if (b != NULL && (type == IP_REC_OOB || len >= IP_NOGIL_COPY)) {
            if (dst == NULL)
                dst = (uint8_t *)PyBytes_AS_STRING(b);
            ip_bulk_copy(dst, data, len);
        }
        if (b == NULL) {
            failed = 1; /* the record stays in the ring */
            break;
        }
        payloads[n] = b;
        types[n] = type;
        n++;
        again = 0;
        ip_ring_advance(&t, len);
    }
    ip_ring_consume_commit(v, &t);
    if (failed && n == 0)
        return -1;
    if (failed)
        PyErr_Clear(); /* what was taken is returned; the error comes back next call */
    return n;
}

typedef struct {
    ip_channel_t *ch;
    Py_ssize_t max;
    uint64_t max_len;
    PyObject **payloads;
    uint32_t *types;
    ip_view_t *view;
    Py_ssize_t taken;
    const ip_deadline_t *d;
} take_ctx;

static int take_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    take_ctx *c = arg;
    ip_ring_t *r = c->ch->view.ring;
    int locked = lock_side(c->ch, &r->cons, c->d);
    if (locked <= 0)
        return locked;
    /* Read before the ring: a shutdown seen here came after every put that
     * committed, so an empty ring below is empty for good. */
    int st = c->ch->shut ? ip_channel_shut_state(c->ch) : IP_SHUT_OPEN;
    if (st != IP_SHUT_OPEN && st != IP_SHUT_DRAIN) {
        if (st == IP_SHUT_NOW && discard_locked(c->ch) == 0)
            shut_error();
        ip_mutex_unlock(&r->cons.lock);
        return -1;
    }
    Py_ssize_t n = take_records(c->ch, c->max, c->max_len, c->payloads, c->types, c->view, watch,
                                watch_val);
    ip_mutex_unlock(&r->cons.lock);
    if (n < 0)
        return -1;
    if (n == 0 && st == IP_SHUT_DRAIN) {
        shut_error();
        return -1;
    }
    if (n == 0) {
        /* Nothing there: the owner may know that nothing ever will be. */
        if (before_sleep && c->ch->eof && c->ch->eof(c->ch->owner) < 0)
            return -1;
        if (before_sleep) {
            give_back_idle(c->ch);
            ip_recv_buffers_trim();
        }
        return 0;
    }
    c->taken = n;
    if (c->ch->maxsize)
        ip_event_signal(&r->get_ev, (int)n);
    if (c->ch->emptied && ip_channel_size(c->ch) == 0 && c->ch->emptied(c->ch->owner) < 0)
        return -1; /* with c->taken records all the same */
    return 1;
}

Py_ssize_t ip_channel_take(ip_channel_t *ch, Py_ssize_t max, uint64_t max_len, PyObject **payloads,
                           uint32_t *types, const ip_deadline_t *d)
{
    return ip_channel_take_view(ch, max, max_len, payloads, types, NULL, d);
}

Py_ssize_t ip_channel_take_view(ip_channel_t *ch, Py_ssize_t max, uint64_t max_len,
                                PyObject **payloads, uint32_t *types, ip_view_t *view,
                                const ip_deadline_t *d)
{
    take_ctx c = {ch, max, max_len, payloads, types, view, 0, d};
    int rc = ip_wait_for(&ch->view.ring->put_ev, d, take_attempt, &c);
    if (c.taken > 0)
        return c.taken;
    return rc == IP_WAIT_TIMEOUT ? 0 : -1;
}

typedef struct {
    ip_channel_t *ch;
} ready_ctx;

static int ready_attempt(void *arg, int before_sleep, const uint64_t **watch, uint64_t *watch_val)
{
    ip_channel_t *ch = ((ready_ctx *)arg)->ch;
    (void)before_sleep;
    if (ch->check && ch->check(ch->owner) < 0)
        return -1;
    if (ip_channel_size(ch) > 0)
        return 1;
    /* End of stream counts as ready: recv() would not block. */
    if (ch->eof && ch->eof(ch->owner) < 0) {
        PyErr_Clear();
        return 1;
    }
    *watch = &ch->view.ring->prod.count;
    *watch_val = ld(&ch->view.ring->prod.count);
    return 0;
}

int ip_channel_wait_ready(ip_channel_t *ch, const ip_deadline_t *d)
{
    ready_ctx c = {ch};
    return ip_wait_for(&ch->view.ring->put_ev, d, ready_attempt, &c);
}
