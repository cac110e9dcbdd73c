/* ListCore: a list in a shared heap (heap.c).
 *
 * The list is an array of item offsets; every item holds one serialized
 * value and never changes.  Setting an element swaps one offset.  Appends
 * fill the array's spare room and then publish the new length with one
 * logged store; anything that shifts elements (insert, delete, slices,
 * reordering) builds a new array and switches to it, so a process killed
 * half-way leaves the old array untouched.
 */
#include "interproc.h"

#include <string.h>

#define LFLD(h, f) ((h)->off + offsetof(ip_obj_t, f))

static inline ip_obj_t *LOBJ(ip_handle_t *h)
{
    return IP_HOFF(h->heap, h->off);
}

static inline uint64_t *arr(ip_heap_t *hp, ip_obj_t *o)
{
    return IP_HOFF(hp, o->items);
}

static int lenter(ip_handle_t *h)
{
    if (ip_handle_check(h) < 0)
        return -1;
    ip_deadline_t d = {.infinite = 1};
    if (ip_heap_enter(h->heap, &d) != 0)
        return -1;
    if (ip_heap_obj(h->heap, h->off, IP_OBJ_LIST, h->oid) == NULL) {
        ip_heap_leave(h->heap);
        PyErr_SetString(ip_SegmentError, "shared list is corrupt or was freed");
        return -1;
    }
    return 0;
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
    ip_litem_t *it = IP_HOFF(hp, item);
    if (ip_value_drop(hp, it->vtype, (uint8_t *)(it + 1)) < 0)
        return -1;
    return ip_heap_free_later(hp, item);
}

static PyObject *copy_litem(ip_heap_t *hp, uint64_t item, int *kind)
{
    ip_litem_t *it = IP_HOFF(hp, item);
    return ip_value_copy(hp, it->vtype, (uint8_t *)(it + 1), it->vlen, kind);
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

/* Replaces elements [start, stop) with k new values.  Under the lock. */
static int replace(ip_handle_t *h, uint64_t start, uint64_t stop, const ip_value_t *vals, Py_ssize_t k)
{
    ip_heap_t *hp = h->heap;
    uint64_t n = LOBJ(h)->used;
    if (stop > n)
        stop = n;
    if (start > stop)
        start = stop;
    uint64_t newlen = n - (stop - start) + (uint64_t)k;
    uint64_t *fresh = PyMem_Malloc((k ? (size_t)k : 1) * sizeof *fresh);
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int rc = -1;
    for (Py_ssize_t i = 0; i < k; i++)
        if ((fresh[i] = new_litem(hp, &vals[i])) == 0)
            goto out;
    ip_obj_t *o = LOBJ(h);
    if (start == n && newlen <= o->cap) {
        memcpy(arr(hp, o) + n, fresh, (size_t)k * sizeof *fresh); /* beyond the length: unpublished */
        rc = ip_heap_set(hp, LFLD(h, used), newlen);
        goto out;
    }
    uint64_t cap = newlen > o->cap ? (o->cap * 2 > newlen ? o->cap * 2 : newlen + newlen / 8) : o->cap;
    if (cap < 4)
        cap = 4;
    uint64_t na = ip_heap_alloc(hp, cap * sizeof(uint64_t));
    if (na == 0)
        goto out;
    o = LOBJ(h);
    uint64_t *old = o->items ? arr(hp, o) : NULL, *dst = IP_HOFF(hp, na);
    if (start)
        memcpy(dst, old, start * sizeof *dst);
    memcpy(dst + start, fresh, (size_t)k * sizeof *dst);
    if (n > stop)
        memcpy(dst + start + k, old + stop, (n - stop) * sizeof *dst);
    uint64_t old_arr = o->items;
    for (uint64_t i = start; i < stop; i++)
        if (retire_litem(hp, ((uint64_t *)IP_HOFF(hp, old_arr))[i]) < 0)
            goto out;
    if (ip_heap_set(hp, LFLD(h, items), na) < 0 || ip_heap_set(hp, LFLD(h, cap), cap) < 0
        || ip_heap_set(hp, LFLD(h, used), newlen) < 0 || ip_heap_free_later(hp, old_arr) < 0)
        goto out;
    rc = 0;
out:
    PyMem_Free(fresh);
    return rc;
}

static int normalize_index(PyObject *index, Py_ssize_t *out)
{
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

/* Under the lock: resolves a negative index against the length.  Out of
 * range: -1 with IndexError(msg), the lock left. */
static int in_range(ip_handle_t *h, Py_ssize_t *i, const char *msg)
{
    Py_ssize_t n = (Py_ssize_t)LOBJ(h)->used;
    if (*i < 0)
        *i += n;
    if (*i < 0 || *i >= n) {
        ip_heap_leave(h->heap);
        PyErr_SetString(PyExc_IndexError, msg);
        return -1;
    }
    return 0;
}

static PyObject *ListCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return ip_handle_new(type, args, kwds, IP_OBJ_LIST);
}

static Py_ssize_t ListCore_len(ip_handle_t *h)
{
    if (ip_handle_check(h) < 0)
        return -1;
    return (Py_ssize_t)__atomic_load_n(&LOBJ(h)->used, __ATOMIC_RELAXED);
}

/* Values at start, start+step, ... (count of them), read under one hold. */
static PyObject *read_range(ip_handle_t *h, PyObject *slice)
{
    if (lenter(h) < 0)
        return NULL;
    ip_heap_t *hp = h->heap;
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(slice, &start, &stop, &step) < 0) {
        ip_heap_leave(hp);
        return NULL;
    }
    Py_ssize_t count = PySlice_AdjustIndices((Py_ssize_t)LOBJ(h)->used, &start, &stop, step);
    PyObject *out = PyList_New(count);
    int *kinds = PyMem_Malloc((count ? (size_t)count : 1) * sizeof(int));
    if (out == NULL || kinds == NULL) {
        ip_heap_leave(hp);
        Py_XDECREF(out);
        PyMem_Free(kinds);
        return PyErr_NoMemory();
    }
    int any_late = 0;
    for (Py_ssize_t i = 0, j = start; i < count; i++, j += step) {
        PyObject *c = copy_litem(hp, arr(hp, LOBJ(h))[j], &kinds[i]);
        if (c == NULL) {
            ip_heap_leave(hp);
            Py_DECREF(out);
            PyMem_Free(kinds);
            return NULL;
        }
        any_late |= kinds[i];
        PyList_SET_ITEM(out, i, c);
    }
    ip_heap_leave(hp);
    for (Py_ssize_t i = 0; any_late && i < count; i++) {
        if (kinds[i] == IP_COPY_DONE)
            continue;
        PyObject *v = ip_value_finish(hp, Py_NewRef(PyList_GET_ITEM(out, i)), kinds[i]);
        if (v == NULL) {
            Py_DECREF(out);
            PyMem_Free(kinds);
            return NULL;
        }
        PyList_SetItem(out, i, v);
    }
    PyMem_Free(kinds);
    return out;
}

static PyObject *ListCore_subscript(ip_handle_t *h, PyObject *index)
{
    if (PySlice_Check(index))
        return read_range(h, index);
    Py_ssize_t i;
    if (normalize_index(index, &i) < 0)
        return NULL;
    if (lenter(h) < 0 || in_range(h, &i, "list index out of range") < 0)
        return NULL;
    ip_heap_t *hp = h->heap;
    int kind;
    PyObject *c = copy_litem(hp, arr(hp, LOBJ(h))[i], &kind);
    ip_heap_leave(hp);
    if (c == NULL)
        return NULL;
    return ip_value_finish(hp, c, kind);
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
    int rc = lenter(h);
    if (rc == 0 && (rc = in_range(h, &i, "list assignment index out of range")) == 0) {
        ip_heap_t *hp = h->heap;
        if (value) {
            uint64_t item = new_litem(hp, &v);
            uint64_t old = item ? arr(hp, LOBJ(h))[i] : 0;
            rc = item == 0 || ip_heap_set(hp, LOBJ(h)->items + (uint64_t)i * 8, item) < 0
                         || retire_litem(hp, old) < 0
                     ? -1 : 0;
        } else {
            rc = replace(h, (uint64_t)i, (uint64_t)i + 1, NULL, 0);
        }
        if (rc < 0)
            ip_heap_abort(hp);
        else
            ip_heap_leave(hp);
    }
    if (value)
        ip_value_clear(&v);
    return rc;
}

static PyObject *ListCore_append(ip_handle_t *h, PyObject *value)
{
    ip_value_t v;
    if (ip_handle_check(h) < 0 || ip_value_init(h->heap, &v, value) < 0)
        return NULL;
    int rc = lenter(h);
    if (rc == 0) {
        uint64_t n = LOBJ(h)->used;
        rc = replace(h, n, n, &v, 1);
        if (rc < 0)
            ip_heap_abort(h->heap);
        else
            ip_heap_leave(h->heap);
    }
    ip_value_clear(&v);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(replace_doc, "_replace(start, stop, values)\n--\n\n"
"Replace elements [start, stop) by values, atomically.  start=None: at the\n"
"end (extend); stop=None: to the end.");

static PyObject *ListCore_replace(ip_handle_t *h, PyObject *args)
{
    PyObject *pstart, *pstop, *seq;
    if (!PyArg_ParseTuple(args, "OOO:_replace", &pstart, &pstop, &seq))
        return NULL;
    if (ip_handle_check(h) < 0)
        return NULL;
    Py_ssize_t k;
    ip_value_t *vals = values_init(h, seq, &k);
    if (vals == NULL)
        return NULL;
    if (lenter(h) < 0) {
        values_clear(vals, k);
        return NULL;
    }
    uint64_t n = LOBJ(h)->used;
    uint64_t start = n, stop = n;
    int rc = 0;
    if (pstart != Py_None) {
        Py_ssize_t s = PyLong_AsSsize_t(pstart);
        if (s == -1 && PyErr_Occurred())
            rc = -1;
        start = s < 0 ? 0 : (uint64_t)s;
    }
    if (rc == 0 && pstop != Py_None) {
        Py_ssize_t s = PyLong_AsSsize_t(pstop);
        if (s == -1 && PyErr_Occurred())
            rc = -1;
        stop = s < 0 ? 0 : (uint64_t)s;
    }
    if (rc == 0)
        rc = replace(h, start, stop, vals, k);
    if (rc < 0)
        ip_heap_abort(h->heap);
    else
        ip_heap_leave(h->heap);
    values_clear(vals, k);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
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
    if (lenter(h) < 0) {
        Py_DECREF(fast);
        return NULL;
    }
    ip_heap_t *hp = h->heap;
    uint64_t n = LOBJ(h)->used;
    uint8_t *seen = PyMem_Calloc(n ? (size_t)n : 1, 1);
    uint64_t *pick = PyMem_Malloc((k ? (size_t)k : 1) * sizeof *pick);
    int rc = -1;
    if (seen == NULL || pick == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t j = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(fast, i));
        if (j == -1 && PyErr_Occurred())
            goto out;
        if (j < 0 || (uint64_t)j >= n || seen[j]) {
            PyErr_SetString(PyExc_RuntimeError, "the list changed while it was being reordered");
            goto out;
        }
        seen[j] = 1;
        pick[i] = (uint64_t)j;
    }
    uint64_t cap = k < 4 ? 4 : (uint64_t)k;
    uint64_t na = ip_heap_alloc(hp, cap * sizeof(uint64_t));
    if (na == 0)
        goto out;
    uint64_t *dst = IP_HOFF(hp, na), *src = arr(hp, LOBJ(h));
    for (Py_ssize_t i = 0; i < k; i++)
        dst[i] = src[pick[i]];
    uint64_t old_arr = LOBJ(h)->items;
    for (uint64_t j = 0; j < n; j++)
        if (!seen[j] && retire_litem(hp, ((uint64_t *)IP_HOFF(hp, old_arr))[j]) < 0)
            goto out;
    if (ip_heap_set(hp, LFLD(h, items), na) < 0 || ip_heap_set(hp, LFLD(h, cap), cap) < 0
        || ip_heap_set(hp, LFLD(h, used), (uint64_t)k) < 0 || ip_heap_free_later(hp, old_arr) < 0)
        goto out;
    rc = 0;
out:
    if (rc < 0)
        ip_heap_abort(hp);
    else
        ip_heap_leave(hp);
    PyMem_Free(seen);
    PyMem_Free(pick);
    Py_DECREF(fast);
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
    int rc = lenter(h);
    if (rc == 0) {
        Py_ssize_t n = (Py_ssize_t)LOBJ(h)->used;
        if (i < 0)
            i = i + n < 0 ? 0 : i + n;
        if (i > n)
            i = n;
        rc = replace(h, (uint64_t)i, (uint64_t)i, &v, 1);
        if (rc < 0)
            ip_heap_abort(h->heap);
        else
            ip_heap_leave(h->heap);
    }
    ip_value_clear(&v);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
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
    if (lenter(h) < 0)
        return NULL;
    ip_heap_t *hp = h->heap;
    Py_ssize_t n = (Py_ssize_t)LOBJ(h)->used;
    if (n == 0) {
        ip_heap_leave(hp);
        PyErr_SetString(PyExc_IndexError, "pop from empty list");
        return NULL;
    }
    if (in_range(h, &i, "pop index out of range") < 0)
        return NULL;
    int kind;
    PyObject *c = copy_litem(hp, arr(hp, LOBJ(h))[i], &kind);
    int rc = c ? 0 : -1;
    if (rc == 0) {
        if (i == n - 1) {
            uint64_t item = arr(hp, LOBJ(h))[i];
            rc = ip_heap_set(hp, LFLD(h, used), (uint64_t)i) < 0 || retire_litem(hp, item) < 0 ? -1 : 0;
        } else {
            rc = replace(h, (uint64_t)i, (uint64_t)i + 1, NULL, 0);
        }
    }
    if (rc < 0) {
        Py_XDECREF(c);
        ip_heap_abort(hp);
        return NULL;
    }
    ip_heap_leave(hp);
    return ip_value_finish(hp, c, kind);
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
    .mp_length = (lenfunc)ListCore_len,
    .mp_subscript = (binaryfunc)ListCore_subscript,
    .mp_ass_subscript = (objobjargproc)ListCore_ass_subscript,
};

static PySequenceMethods ListCore_as_sequence = {
    .sq_length = (lenfunc)ListCore_len,
};

PyTypeObject ip_ListCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "interproc._core.ListCore",
    .tp_basicsize = sizeof(ip_handle_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ListCore(heap, offset, oid, counted=False)\n--\n\nThe C part of SharedList.",
    .tp_base = &ip_HandleCore_Type,
    .tp_new = ListCore_new,
    .tp_dealloc = (destructor)ip_handle_dealloc,
    .tp_traverse = (traverseproc)ip_handle_traverse,
    .tp_clear = (inquiry)ip_handle_clear,
    .tp_methods = ListCore_methods,
    .tp_as_mapping = &ListCore_as_mapping,
    .tp_as_sequence = &ListCore_as_sequence,
};
