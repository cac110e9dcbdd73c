/* ListCore: a list in a shared heap (heap.c).
 *
 * The list is an array of item offsets; every item holds one serialized
 * value and never changes.  Setting an element swaps one offset.  Appends
 * fill the array's spare room and then publish the new length with one
 * logged store; anything that shifts elements (insert, delete, slices,
 * reordering) builds a new array and switches to it, so a process killed
 * half-way leaves the old array untouched.
 *
 * Indices and slices are converted (user __index__ methods run) before the
 * lock; under it the array is read once into a checked view (lview), every
 * item through ip_litem_read() or ip_litem_copy(), and values are copied
 * out to be decoded after the lock.
 */
#include "interproc.h"

#include <string.h>

#define LFLD(op, f) ((op)->off + offsetof(ip_obj_t, f))

/* The list's array as read once under the lock and checked.  After an
 * allocation (the heap may have moved) lview_moved() remakes its pointer. */
typedef struct {
    uint64_t *arr; /* NULL: no array yet */
    uint64_t items, used, cap;
} lview_t;

static int lview(const ip_op_t *op, lview_t *v)
{
    ip_heap_t *hp = op->hp;
    ip_obj_t *o = ip_op_obj(op);
    if (o == NULL || IP_LOAD(o->type) != IP_OBJ_LIST) {
        PyErr_SetString(ip_SegmentError, "shared list is corrupt or was freed");
        return -1;
    }
    v->items = IP_LOAD(o->items);
    v->used = IP_LOAD(o->used);
    v->cap = IP_LOAD(o->cap);
    v->arr = NULL;
    if (v->items == 0) {
        v->cap = 0;
        return v->used ? ip_heap_corrupt("a list counts items it has no array for") : 0;
    }
    if (v->used > v->cap)
        return ip_heap_corrupt("bad list array");
    if (!ip_layout_is(op->seen, v->items, v->cap, 0, 0)) {
        uint64_t room = ip_heap_block(hp, v->items);
        if (room == 0)
            return -1;
        if (v->cap > room / sizeof(uint64_t))
            return ip_heap_corrupt("bad list array");
        ip_layout_set(op->seen, v->items, v->cap, 0, 0);
    }
    v->arr = IP_HOFF(hp, v->items);
    return 0;
}

/* After an allocation, which may have moved the heap but changes no
 * container: the view's array as the heap is mapped now.  Its offset was
 * checked against a mapping that can only have grown. */
static void lview_moved(const ip_op_t *op, lview_t *v)
{
    if (v->arr != NULL)
        v->arr = IP_HOFF(op->hp, v->items);
}

static uint64_t new_litem(ip_heap_t *hp, const ip_value_t *v)
{
    uint64_t off = ip_heap_alloc(hp, sizeof(ip_litem_t) + v->p.len);
    if (off == 0 || ip_value_hold(hp, v) < 0)
        return 0;
    ip_litem_t *it = IP_HOFF(hp, off);
    memset(it, 0, sizeof *it);
    it->vlen = v->p.len;
    it->vtype = (uint8_t)v->p.type;
    ip_value_write(v, (uint8_t *)(it + 1));
    return off;
}

static int retire_litem(ip_heap_t *hp, uint64_t item)
{
    ip_item_t it;
    if (ip_litem_read(hp, item, &it) < 0 || ip_value_drop(hp, it.vtype, it.val, it.vlen) < 0)
        return -1;
    return ip_heap_free_later(hp, item);
}

/* Serializes a sequence's values before the lock: bad input fails here. */
static ip_value_t *values_init(ip_handle_t *h, PyObject *seq, Py_ssize_t *n)
{
    PyObject *fast = PySequence_Fast(seq, "values must be iterable");
    if (fast == NULL)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    ip_value_t *v = PyMem_Calloc(*n ? (size_t)*n : 1, sizeof *v);
    if (v == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        if (ip_value_init(h->heap, &v[i], PySequence_Fast_GET_ITEM(fast, i)) < 0) {
            for (Py_ssize_t j = 0; j < i; j++)
                ip_value_clear(&v[j]);
            PyMem_Free(v);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return v;
}

static void values_clear(ip_value_t *v, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        ip_value_clear(&v[i]);
    PyMem_Free(v);
}

/* Switches the list to array `na` of `cap` entries and length `used`,
 * freeing the old one after the commit. */
static int switch_array(const ip_op_t *op, const lview_t *old, uint64_t na, uint64_t cap, uint64_t used)
{
    ip_heap_t *hp = op->hp;
    if (ip_heap_set(hp, LFLD(op, items), na) < 0 || ip_heap_set(hp, LFLD(op, cap), cap) < 0
        || ip_heap_set(hp, LFLD(op, used), used) < 0 || ip_heap_free_later(hp, old->items) < 0)
        return -1;
    return 0;
}

/* Replaces elements [start, stop) with k new values.  Under the lock. */
static int replace(const ip_op_t *op, uint64_t start, uint64_t stop, const ip_value_t *vals, Py_ssize_t k)
{
    ip_heap_t *hp = op->hp;
    lview_t v;
    if (lview(op, &v) < 0)
        return -1;
    uint64_t n = v.used;
    if (stop > n)
        stop = n;
    if (start > stop)
        start = stop;
    uint64_t newlen = n - (stop - start) + (uint64_t)k;
    uint64_t few[8];
    uint64_t *fresh = k <= 8 ? few : PyMem_Malloc((size_t)k * sizeof *fresh);
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int rc = -1;
    for (Py_ssize_t i = 0; i < k; i++)
        if ((fresh[i] = new_litem(hp, &vals[i])) == 0)
            goto out;
    lview_moved(op, &v);
    if (start == n && newlen <= v.cap) {
        /* Beyond the length: unpublished.  An empty list may have no array
         * at all (v.arr NULL), and memcpy must not see NULL even for 0. */
        if (k > 0)
            memcpy(v.arr + n, fresh, (size_t)k * sizeof *fresh);
        rc = ip_heap_set(hp, LFLD(op, used), newlen);
        goto out;
    }
    uint64_t cap = newlen > v.cap ? (v.cap * 2 > newlen ? v.cap * 2 : newlen + newlen / 8) : v.cap;
    if (cap < 4)
        cap = 4;
    if (cap > IP_HEAP_ALLOC_MAX / sizeof(uint64_t)) {
        PyErr_SetString(PyExc_MemoryError, "list too long for a shared heap");
        goto out;
    }
    uint64_t na = ip_heap_alloc(hp, cap * sizeof(uint64_t));
    if (na == 0)
        goto out;
    lview_moved(op, &v);
    uint64_t *dst = IP_HOFF(hp, na);
    if (start)
        memcpy(dst, v.arr, start * sizeof *dst);
    memcpy(dst + start, fresh, (size_t)k * sizeof *dst);
    if (n > stop)
        memcpy(dst + start + k, v.arr + stop, (n - stop) * sizeof *dst);
    for (uint64_t i = start; i < stop; i++)
        if (retire_litem(hp, IP_LOAD(v.arr[i])) < 0)
            goto out;
    rc = switch_array(op, &v, na, cap, newlen);
out:
    if (fresh != few)
        PyMem_Free(fresh);
    return rc;
}

static int normalize_index(PyObject *index, Py_ssize_t *out)
{
    if (PyLong_CheckExact(index)) {
        /* The common case, without the generic conversion's calls; an int
         * too large falls through to it for its IndexError. */
        Py_ssize_t i = PyLong_AsSsize_t(index);
        if (i != -1 || !PyErr_Occurred()) {
            *out = i;
            return 0;
        }
        PyErr_Clear();
    }
    if (!PyIndex_Check(index)) {
        PyErr_Format(PyExc_TypeError, "list indices must be integers or slices, not %.200s",
                     Py_TYPE(index)->tp_name);
        return -1;
    }
    Py_ssize_t i = PyNumber_AsSsize_t(index, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred())
        return -1;
    *out = i;
    return 0;
}

/* Resolves a negative index against the length n: 0, or -2 when out of
 * range (IndexError is raised after the lock). */
static int in_range(uint64_t n, Py_ssize_t *i)
{
    if (*i < 0)
        *i += (Py_ssize_t)n;
    return *i < 0 || (uint64_t)*i >= n ? -2 : 0;
}

/* Ends an operation that copied `c` out (rc 0) or failed (rc -1: rolled
 * back; rc -2: IndexError `msg`), and returns the value. */
static PyObject *finish_one(ip_op_t *op, int rc, ip_copy_t *c, const char *msg)
{
    ip_heap_t *hp = op->hp;
    if (rc == 0 && ip_copy_count(hp, c, 1) < 0) {
        ip_copy_discard(hp, c, 1);
        rc = -1;
    }
    ip_op_end(op, rc != -1);
    PyObject *res = NULL;
    if (rc == -2)
        PyErr_SetString(PyExc_IndexError, msg);
    else if (rc == 0)
        res = ip_copy_finish(hp, c);
    ip_op_done(op);
    return res;
}

static PyObject *ListCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return ip_handle_new(type, args, kwds, IP_OBJ_LIST);
}

/* Values at start, start+step, ... copied under one hold, decoded after. */
static PyObject *read_range(ip_handle_t *h, PyObject *slice)
{
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(slice, &start, &stop, &step) < 0) /* runs __index__: before the lock */
        return NULL;
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0)
        return NULL;
    ip_heap_t *hp = op.hp;
    ip_copy_t *cs = NULL;
    Py_ssize_t count = 0, got = 0;
    lview_t v;
    int ok = lview(&op, &v) == 0;
    if (ok) {
        count = PySlice_AdjustIndices((Py_ssize_t)v.used, &start, &stop, step);
        if ((cs = PyMem_Calloc(count ? (size_t)count : 1, sizeof *cs)) == NULL) {
            PyErr_NoMemory();
            ok = 0;
        }
    }
    for (Py_ssize_t j = start; ok && got < count; j += step) {
        ok = ip_litem_copy(hp, IP_LOAD(v.arr[j]), &cs[got]) == 0;
        if (ok)
            got++;
    }
    if (ok && ip_copy_count(hp, cs, got) < 0)
        ok = 0;
    if (!ok && cs != NULL)
        ip_copy_discard(hp, cs, got);
    ip_op_end(&op, 1);
    PyObject *out = ok ? ip_copy_finish_all(hp, cs, got, 1) : NULL;
    PyMem_Free(cs);
    ip_op_done(&op);
    return out;
}

static PyObject *ListCore_subscript(ip_handle_t *h, PyObject *index)
{
    if (PySlice_Check(index))
        return read_range(h, index);
    Py_ssize_t i;
    if (normalize_index(index, &i) < 0)
        return NULL;
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0)
        return NULL;
    lview_t v;
    ip_copy_t c;
    int rc = lview(&op, &v) < 0 ? -1 : in_range(v.used, &i);
    if (rc == 0)
        rc = ip_litem_copy(op.hp, IP_LOAD(v.arr[i]), &c);
    return finish_one(&op, rc, &c, "list index out of range");
}

static int ListCore_ass_subscript(ip_handle_t *h, PyObject *index, PyObject *value)
{
    if (PySlice_Check(index)) {
        PyObject *r = value ? PyObject_CallMethod((PyObject *)h, "_assign_slice", "OO", index, value)
                            : PyObject_CallMethod((PyObject *)h, "_delete_slice", "O", index);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    Py_ssize_t i;
    if (normalize_index(index, &i) < 0)
        return -1;
    if (ip_handle_check(h) < 0)
        return -1;
    ip_value_t v;
    if (value && ip_value_init(h->heap, &v, value) < 0)
        return -1;
    ip_op_t op;
    int rc = ip_op_begin(h, &op);
    if (rc == 0) {
        ip_heap_t *hp = op.hp;
        lview_t lv;
        rc = lview(&op, &lv) < 0 ? -1 : in_range(lv.used, &i);
        if (rc == 0 && value) {
            uint64_t item = new_litem(hp, &v);
            uint64_t n = lv.used;
            if (item == 0 || lview(&op, &lv) < 0)
                rc = -1;
            else if (lv.used != n)
                rc = ip_heap_corrupt("a list changed under the lock");
            else {
                uint64_t old = IP_LOAD(lv.arr[i]);
                rc = ip_heap_set(hp, lv.items + (uint64_t)i * 8, item) < 0 || retire_litem(hp, old) < 0
                         ? -1 : 0;
            }
        } else if (rc == 0) {
            rc = replace(&op, (uint64_t)i, (uint64_t)i + 1, NULL, 0);
        }
        ip_op_end(&op, rc != -1);
        ip_op_done(&op);
        if (rc == -2) {
            PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
            rc = -1;
        }
    }
    if (value)
        ip_value_clear(&v);
    return rc;
}

/* Inserts values at position `at` (clamped to the length; PY_SSIZE_T_MAX
 * for the end) or replaces [at, stop), in one operation. */
static PyObject *put_values(ip_handle_t *h, Py_ssize_t at, Py_ssize_t stop, const ip_value_t *vals,
                            Py_ssize_t k)
{
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0)
        return NULL;
    /* replace() clamps both to the length under the lock. */
    uint64_t start = at < 0 ? 0 : (uint64_t)at, end = stop < 0 ? 0 : (uint64_t)stop;
    int rc = replace(&op, start, end < start ? start : end, vals, k);
    ip_op_end(&op, rc == 0);
    ip_op_done(&op);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *ListCore_append(ip_handle_t *h, PyObject *value)
{
    ip_value_t v;
    if (ip_handle_check(h) < 0 || ip_value_init(h->heap, &v, value) < 0)
        return NULL;
    PyObject *res = put_values(h, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, &v, 1);
    ip_value_clear(&v);
    return res;
}

/* Converts a bound of _replace() before the lock: None is the end. */
static int bound(PyObject *b, Py_ssize_t *out)
{
    if (b == Py_None) {
        *out = PY_SSIZE_T_MAX;
        return 0;
    }
    *out = PyLong_AsSsize_t(b);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

PyDoc_STRVAR(replace_doc, "_replace(start, stop, values)\n--\n\n"
"Replace elements [start, stop) by values, atomically.  start=None: at the\n"
"end (extend); stop=None: to the end.");

static PyObject *ListCore_replace(ip_handle_t *h, PyObject *args)
{
    PyObject *pstart, *pstop, *seq;
    Py_ssize_t start, stop, k;
    if (!PyArg_ParseTuple(args, "OOO:_replace", &pstart, &pstop, &seq))
        return NULL;
    if (ip_handle_check(h) < 0 || bound(pstart, &start) < 0 || bound(pstop, &stop) < 0)
        return NULL;
    ip_value_t *vals = values_init(h, seq, &k);
    if (vals == NULL)
        return NULL;
    PyObject *res = put_values(h, start, stop, vals, k);
    values_clear(vals, k);
    return res;
}

PyDoc_STRVAR(select_doc, "_select(indices)\n--\n\n"
"Keep the elements at `indices`, in that order (each at most once); drop\n"
"the rest.  Reorders and deletes without re-serializing anything.");

static PyObject *ListCore_select(ip_handle_t *h, PyObject *indices)
{
    PyObject *fast = PySequence_Fast(indices, "indices must be a sequence");
    if (fast == NULL)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(fast);
    uint64_t *pick = PyMem_Malloc((k ? (size_t)k : 1) * sizeof *pick);
    if (pick == NULL) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t j = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(fast, i));
        if (j == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            PyMem_Free(pick);
            return NULL;
        }
        pick[i] = j < 0 ? UINT64_MAX : (uint64_t)j;
    }
    Py_DECREF(fast);
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0) {
        PyMem_Free(pick);
        return NULL;
    }
    ip_heap_t *hp = op.hp;
    uint8_t *seen = NULL;
    lview_t v;
    int rc = lview(&op, &v);
    uint64_t n = v.used;
    if (rc == 0 && (seen = PyMem_Calloc(n ? (size_t)n : 1, 1)) == NULL) {
        PyErr_NoMemory();
        rc = -1;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < k; i++) {
        if (pick[i] >= n || seen[pick[i]])
            rc = -2;
        else
            seen[pick[i]] = 1;
    }
    uint64_t cap = k < 4 ? 4 : (uint64_t)k, na = 0;
    if (rc == 0 && ((na = ip_heap_alloc(hp, cap * sizeof(uint64_t))) == 0 || lview(&op, &v) < 0))
        rc = -1;
    if (rc == 0 && v.used != n)
        rc = ip_heap_corrupt("a list changed under the lock");
    if (rc == 0) {
        uint64_t *dst = IP_HOFF(hp, na);
        for (Py_ssize_t i = 0; i < k; i++)
            dst[i] = IP_LOAD(v.arr[pick[i]]);
        for (uint64_t j = 0; j < n && rc == 0; j++)
            if (!seen[j])
                rc = retire_litem(hp, IP_LOAD(v.arr[j]));
        if (rc == 0)
            rc = switch_array(&op, &v, na, cap, (uint64_t)k);
    }
    ip_op_end(&op, rc == 0);
    ip_op_done(&op);
    PyMem_Free(seen);
    PyMem_Free(pick);
    if (rc == -2)
        PyErr_SetString(PyExc_RuntimeError, "the list changed while it was being reordered");
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(insert_doc, "insert(index, value)\n--\n\nInsert value before index, atomically.");

static PyObject *ListCore_insert(ip_handle_t *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "insert expected 2 arguments, got %zd", nargs);
        return NULL;
    }
    Py_ssize_t i;
    if (normalize_index(args[0], &i) < 0)
        return NULL;
    ip_value_t v;
    if (ip_handle_check(h) < 0 || ip_value_init(h->heap, &v, args[1]) < 0)
        return NULL;
    ip_op_t op;
    PyObject *res = NULL;
    if (ip_op_begin(h, &op) == 0) {
        lview_t lv;
        int rc = lview(&op, &lv);
        if (rc == 0) {
            Py_ssize_t n = (Py_ssize_t)lv.used;
            Py_ssize_t at = i < 0 ? (i + n < 0 ? 0 : i + n) : (i > n ? n : i);
            rc = replace(&op, (uint64_t)at, (uint64_t)at, &v, 1);
        }
        ip_op_end(&op, rc == 0);
        ip_op_done(&op);
        if (rc == 0)
            res = Py_NewRef(Py_None);
    }
    ip_value_clear(&v);
    return res;
}

static PyObject *ListCore_pop(ip_handle_t *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "pop expected at most 1 argument, got %zd", nargs);
        return NULL;
    }
    Py_ssize_t i = -1;
    if (nargs == 1 && normalize_index(args[0], &i) < 0)
        return NULL;
    ip_op_t op;
    if (ip_op_begin(h, &op) < 0)
        return NULL;
    ip_heap_t *hp = op.hp;
    lview_t v;
    ip_copy_t c;
    int rc = lview(&op, &v);
    const char *msg = "pop index out of range";
    if (rc == 0 && v.used == 0) {
        rc = -2;
        msg = "pop from empty list";
    }
    if (rc == 0)
        rc = in_range(v.used, &i);
    if (rc == 0) {
        uint64_t item = IP_LOAD(v.arr[i]);
        rc = ip_litem_copy(hp, item, &c);
        if (rc == 0) {
            if ((uint64_t)i == v.used - 1)
                rc = ip_heap_set(hp, LFLD(&op, used), (uint64_t)i) < 0 || retire_litem(hp, item) < 0 ? -1 : 0;
            else
                rc = replace(&op, (uint64_t)i, (uint64_t)i + 1, NULL, 0);
            if (rc < 0)
                ip_copy_discard(hp, &c, 1);
        }
    }
    return finish_one(&op, rc, &c, msg);
}

static PyMethodDef ListCore_methods[] = {
    {"append", (PyCFunction)ListCore_append, METH_O,
     "append(value)\n--\n\nAdd value at the end, atomically."},
    {"insert", (PyCFunction)(void (*)(void))ListCore_insert, METH_FASTCALL, insert_doc},
    {"pop", (PyCFunction)(void (*)(void))ListCore_pop, METH_FASTCALL,
     "pop(index=-1)\n--\n\nRemove and return the element at index (the last by default)."},
    {"_replace", (PyCFunction)ListCore_replace, METH_VARARGS, replace_doc},
    {"_select", (PyCFunction)ListCore_select, METH_O, select_doc},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods ListCore_as_mapping = {
    .mp_length = (lenfunc)ip_handle_len,
    .mp_subscript = (binaryfunc)ListCore_subscript,
    .mp_ass_subscript = (objobjargproc)ListCore_ass_subscript,
};

static PySequenceMethods ListCore_as_sequence = {
    .sq_length = (lenfunc)ip_handle_len,
};

PyTypeObject ip_ListCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "interproc._core.ListCore",
    .tp_basicsize = sizeof(ip_handle_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ListCore(heap, offset, oid)\n--\n\nThe C part of SharedList.",
    .tp_base = &ip_HandleCore_Type,
    .tp_new = ListCore_new,
    .tp_dealloc = (destructor)ip_handle_dealloc,
    .tp_traverse = (traverseproc)ip_handle_traverse,
    .tp_clear = (inquiry)ip_handle_clear,
    .tp_methods = ListCore_methods,
    .tp_as_mapping = &ListCore_as_mapping,
    .tp_as_sequence = &ListCore_as_sequence,
};
