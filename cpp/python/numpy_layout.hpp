// numpy_layout.hpp: does a NumPy array still have the memory, shape, strides, dtype and
// writeability a plan imported? Read from the array object itself, in nanoseconds, so the steady
// path need not ask Python for p.shape and p.flags (about 150 ns a param).
//
// The fields are those of NumPy's PyArrayObject_fields and the first bytes of PyArray_Descr:
// every NumPy extension compiles NumPy's accessor macros against this layout, so NumPy keeps it
// (1.x and 2.x alike). Only objects whose type is numpy.ndarray (or a subclass) are read.
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>
#include <vector>

#include "adamcore/core.hpp"

namespace adamcore::binding {

namespace numpy_abi {
struct Descr {  // PyArray_Descr's head: the same in NumPy 1.x and 2.x
    PyObject_HEAD
    PyTypeObject* typeobj;
    char kind, type, byteorder;
};
struct Array {  // PyArrayObject_fields' head
    PyObject_HEAD
    char* data;
    int nd;
    Py_ssize_t* dimensions;
    Py_ssize_t* strides;  // in bytes
    PyObject* base;
    Descr* descr;
    int flags;
};
constexpr int c_contiguous = 0x0001;  // NPY_ARRAY_C_CONTIGUOUS
constexpr int aligned = 0x0100;       // NPY_ARRAY_ALIGNED
constexpr int writeable = 0x0400;     // NPY_ARRAY_WRITEABLE
}  // namespace numpy_abi

// numpy.ndarray, looked up once (NumPy is imported by then: adamcore imports it).
inline PyTypeObject* ndarray_type() {
    static PyTypeObject* type = reinterpret_cast<PyTypeObject*>(
        nanobind::object(nanobind::module_::import_("numpy").attr("ndarray")).release().ptr());
    return type;
}

// The core's dtype of a NumPy dtype it takes (float16 'e', float32 'f', float64 'd', in native
// byte order), or false; bfloat16 is no built-in NumPy dtype.
inline bool numpy_dtype(const numpy_abi::Descr* d, DType& out) {
    if (d->byteorder == (PY_LITTLE_ENDIAN ? '>' : '<')) return false;
    switch (d->type) {
        case 'e': out = DType::float16; return true;
        case 'f': out = DType::float32; return true;
        case 'd': out = DType::float64; return true;
        default: return false;
    }
}

// True where obj is a NumPy array, writeable, over exactly the memory, shape, strides and dtype
// (native byte order) of ref.
inline bool numpy_matches(PyObject* obj, const ArrayRef& ref) {
    if (!PyObject_TypeCheck(obj, ndarray_type())) return false;
    const auto* a = reinterpret_cast<const numpy_abi::Array*>(obj);
    if (!(a->flags & numpy_abi::writeable) || a->data != ref.data || a->nd != ref.ndim)
        return false;
    DType dtype;
    if (!numpy_dtype(a->descr, dtype) || dtype != ref.dtype) return false;
    const int64_t itemsize = ref.dtype == DType::float16 ? 2 : ref.dtype == DType::float32 ? 4 : 8;
    int64_t contiguous = itemsize;  // for refs without strides (C-contiguous)
    for (int k = a->nd - 1; k >= 0; --k) {
        if (a->dimensions[k] != ref.shape[k]) return false;
        const int64_t stride = ref.strides ? ref.strides[k] * itemsize : contiguous;
        if (a->strides[k] != stride && a->dimensions[k] > 1) return false;
        contiguous *= ref.shape[k];
    }
    return true;
}

// obj as the core's ArrayRef, read from the array object, where it is a C-contiguous, aligned
// NumPy array of float16, float32 or float64 in native byte order (what grads nearly always
// are): the steady step's import of its grads, ~0.02 us against ~0.18 us through nanobind's
// DLPack import. False for anything else, which the caller imports through nanobind. The
// shape is copied to the end of `shapes` (reserved by the caller so that it never reallocates:
// a reshape of the array by another thread while the GIL is released cannot move it); the
// caller keeps obj alive while the ArrayRef is used.
inline bool numpy_grad_ref(PyObject* obj, ArrayRef& out, std::vector<int64_t>& shapes) {
    if (!PyObject_TypeCheck(obj, ndarray_type())) return false;
    const auto* a = reinterpret_cast<const numpy_abi::Array*>(obj);
    constexpr int needed = numpy_abi::c_contiguous | numpy_abi::aligned;
    if ((a->flags & needed) != needed || !numpy_dtype(a->descr, out.dtype)) return false;
    if (shapes.size() + static_cast<size_t>(a->nd) > shapes.capacity()) return false;
    out.data = a->data;
    out.ndim = a->nd;
    const size_t first = shapes.size();
    shapes.insert(shapes.end(), a->dimensions, a->dimensions + a->nd);
    out.shape = shapes.data() + first;
    out.strides = nullptr;  // C-contiguous
    return true;
}

}  // namespace adamcore::binding
