// steady_watch.hpp: the Python objects a steady step must find as its plan left them
// (adamcore/_steady.py), checked and advanced in C in the same call as the step.
//
// A step of adamcore.Adam over NumPy params used to make ~15 Python and 5 native calls that each
// looked at every param, state dict or step counter again; after a large step (or a forward and
// backward pass) all of those objects are out of the caches, and each look cost a cache miss.
// Here each object is touched once per step, and all of them are prefetched first so that their
// misses overlap instead of queueing one behind the other.
#pragma once

#include <nanobind/nanobind.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"

namespace adamcore::binding {

namespace nb = nanobind;

// The items of a list or tuple (borrowed), or nullptr for anything else.
inline PyObject** sequence_items(PyObject* seq, Py_ssize_t* size) {
    if (!PyList_Check(seq) && !PyTuple_Check(seq)) return nullptr;
    *size = PySequence_Fast_GET_SIZE(seq);
    return PySequence_Fast_ITEMS(seq);
}

inline void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }

// d[key] (borrowed) for a dict d, or nullptr where absent; raises what the lookup raised (a key
// whose __eq__ raises)
inline PyObject* dict_lookup(PyObject* d, PyObject* key) {
    PyObject* value = PyDict_GetItemWithError(d, key);
    if (value == nullptr && PyErr_Occurred()) throw nb::python_error();
    return value;
}

class SteadyWatch {
public:
    // params: the param objects; keys: each one's key in the optimizer's state mapping; dicts:
    // their state dicts; array_keys: per param, the keys of the state arrays in its dict, whose
    // objects are `arrays`, param after param; step_key: the key of the Python int step counter.
    SteadyWatch(const nb::list& params, const nb::list& keys, const nb::list& dicts,
                const nb::list& array_keys, const nb::list& arrays, const nb::str& step_key)
        : step_key_(step_key) {
        const size_t n = params.size();
        if (keys.size() != n || dicts.size() != n || array_keys.size() != n)
            throw Error(ErrorKind::invalid_value, "watch(): one key, dict and key tuple per param");
        first_.push_back(0);
        for (size_t i = 0; i < n; ++i) {
            params_.push_back(nb::borrow(params[i]));
            keys_.push_back(nb::borrow(keys[i]));
            nb::handle d = dicts[i];
            if (!PyDict_Check(d.ptr()))
                throw Error(ErrorKind::invalid_value, "watch(): a state is not a dict");
            dicts_.push_back(nb::borrow(d));
            for (nb::handle key : nb::tuple(nb::borrow(array_keys[i])))
                array_keys_.push_back(nb::borrow(key));
            first_.push_back(array_keys_.size());
            steps_.push_back(nb::borrow(d[step_key]));
        }
        if (arrays.size() != array_keys_.size())
            throw Error(ErrorKind::invalid_value, "watch(): one array per state key");
        for (nb::handle a : arrays) arrays_.push_back(nb::borrow(a));
    }

    size_t size() const { return params_.size(); }

    // True where `params` (a list or tuple) holds the watched param objects in order, and the
    // mapping `state` holds, under each param's key, the watched dict with the watched arrays and
    // step counter. A lookup that raises (a key whose __eq__ raises) propagates.
    bool unchanged(nb::handle params, nb::handle state) const {
        Py_ssize_t n = 0;
        PyObject** items = sequence_items(params.ptr(), &n);
        if (items == nullptr || static_cast<size_t>(n) != size() || !PyDict_Check(state.ptr()))
            return false;
        // Independent misses, issued together: the objects, then what they point to (the dicts'
        // key tables, the params' shapes and strides, read next by the layout check).
        for (size_t i = 0; i < size(); ++i) {
            prefetch(params_[i].ptr());
            prefetch(dicts_[i].ptr());
            prefetch(steps_[i].ptr());
        }
        for (size_t i = 0; i < size(); ++i) {
            const char* table = reinterpret_cast<const char*>(
                reinterpret_cast<PyDictObject*>(dicts_[i].ptr())->ma_keys);
            prefetch(table);
            prefetch(table + 64);
        }
        for (size_t i = 0; i < size(); ++i) {
            if (items[i] != params_[i].ptr()) return false;
            PyObject* d = dict_lookup(state.ptr(), keys_[i].ptr());
            if (d != dicts_[i].ptr()) return false;
            for (size_t j = first_[i]; j < first_[i + 1]; ++j)
                if (dict_lookup(d, array_keys_[j].ptr()) != arrays_[j].ptr()) return false;
            if (dict_lookup(d, step_key_.ptr()) != steps_[i].ptr()) return false;
        }
        return true;
    }

    // d[step_key] += 1 for every watched dict (counters checked by `unchanged` just before).
    // Done before the kernel, while the dicts are in the caches (after it, each is a miss);
    // undo() puts the previous counters back if the kernel then refuses the step. Consecutive
    // dicts whose counters are equal ints get one new int object (ints are immutable): a
    // group's params then share one counter, made once a step instead of once a param.
    void advance() {
        nb::object one = nb::int_(1);
        previous_ = steps_;
        PyObject* last = nullptr;  // the counter object last advanced, and what it became
        nb::object last_next;
        for (size_t i = 0; i < size(); ++i) {
            nb::object next = same_int(steps_[i].ptr(), last)
                                  ? last_next
                                  : nb::steal(PyNumber_Add(steps_[i].ptr(), one.ptr()));
            last = steps_[i].ptr();
            last_next = next;
            if (!next.is_valid() || PyDict_SetItem(dicts_[i].ptr(), step_key_.ptr(), next.ptr())) {
                nb::python_error error;  // fetched, so that undo() can call into Python
                undo(i);
                throw error;
            }
            steps_[i] = std::move(next);
        }
    }

    // a is b, or both are ints of one value (counters made apart, by the general step)
    static bool same_int(PyObject* a, PyObject* b) {
        if (a == b) return true;
        if (b == nullptr || !PyLong_CheckExact(a) || !PyLong_CheckExact(b)) return false;
        const int equal = PyObject_RichCompareBool(a, b, Py_EQ);
        if (equal < 0) PyErr_Clear();  // (exact ints compare without error)
        return equal == 1;
    }

    // The counters as they were before advance(), in the first `count` dicts (all by default).
    void undo(size_t count = SIZE_MAX) noexcept {
        for (size_t i = 0; i < std::min(count, size()); ++i) {
            if (PyDict_SetItem(dicts_[i].ptr(), step_key_.ptr(), previous_[i].ptr()) != 0)
                PyErr_WriteUnraisable(dicts_[i].ptr());  // memory exhausted: nothing to do
            steps_[i] = previous_[i];
        }
    }

private:
    std::vector<nb::object> params_, keys_, dicts_, steps_, array_keys_, arrays_;
    std::vector<nb::object> previous_;  // the counters before the last advance()
    std::vector<size_t> first_;  // param i's state keys and arrays: [first_[i], first_[i + 1])
    nb::object step_key_;
};

// The param groups of a steady plan and the hyperparameters last built from them: while every
// value a step reads from a group (lr, betas, ... under `keys`) is the very object it was, the
// cached hyperparameters hold, and only the step number moves. Each group's step count is kept
// here. A key that is absent is watched as absent (the value `absent`).
class GroupWatch {
public:
    GroupWatch(const std::vector<size_t>& indices, const nb::list& groups, const nb::tuple& keys,
               const nb::list& values, nb::handle absent,
               const std::vector<adamcore_hparams>& hparams, const std::vector<int64_t>& steps)
        : indices_(indices), absent_(nb::borrow(absent)), hparams_(hparams), steps_(steps) {
        const size_t n = indices.size();
        if (groups.size() != n || hparams.size() != n || steps.size() != n ||
            values.size() != n * keys.size())
            throw Error(ErrorKind::invalid_value, "watch_groups(): one entry per group");
        for (nb::handle g : groups) groups_.push_back(nb::borrow(g));
        for (nb::handle k : keys) keys_.push_back(nb::borrow(k));
        for (nb::handle v : values) values_.push_back(nb::borrow(v));
    }

    // True where `groups` (the front end's list) still holds each watched group at its index
    // and every watched value is unchanged; then hparams() holds for the next step.
    bool unchanged(nb::handle groups) const {
        if (!PyList_Check(groups.ptr())) return false;
        const size_t k = keys_.size();
        for (size_t g = 0; g < groups_.size(); ++g) {
            if (indices_[g] >= static_cast<size_t>(PyList_GET_SIZE(groups.ptr())) ||
                PyList_GET_ITEM(groups.ptr(), indices_[g]) != groups_[g].ptr())
                return false;
            for (size_t j = 0; j < k; ++j) {
                PyObject* value = dict_lookup(groups_[g].ptr(), keys_[j].ptr());
                if ((value ? value : absent_.ptr()) != values_[g * k + j].ptr()) return false;
            }
        }
        return true;
    }

    // The cached hyperparameters with the next step's number (1-based) in each group.
    std::vector<adamcore_hparams> next() const {
        std::vector<adamcore_hparams> out = hparams_;
        for (size_t g = 0; g < out.size(); ++g) out[g].step = steps_[g] + 1;
        return out;
    }

    void advance() { for (int64_t& s : steps_) ++s; }
    const std::vector<int64_t>& steps() const { return steps_; }
    size_t size() const { return groups_.size(); }

private:
    std::vector<size_t> indices_;
    std::vector<nb::object> groups_, keys_, values_;
    nb::object absent_;  // what values_ holds for a key the group lacked
    std::vector<adamcore_hparams> hparams_;
    std::vector<int64_t> steps_;
};

// ---- claims: two optimizers stepping one param from two threads (adamcore/_memory.py) -------
// `claims` is a Python list of frozensets of addresses, one per step in progress. Checking and
// appending in one native call holding the GIL makes the claim atomic without a lock.

inline bool disjoint(PyObject* a, PyObject* b) {
    if (PySet_GET_SIZE(a) > PySet_GET_SIZE(b)) std::swap(a, b);
    nb::object it = nb::steal(PyObject_GetIter(a));
    if (!it.is_valid()) throw nb::python_error();
    while (PyObject* item = PyIter_Next(it.ptr())) {
        const int found = PySet_Contains(b, item);
        Py_DECREF(item);
        if (found != 0) {
            if (found < 0) throw nb::python_error();
            return false;
        }
    }
    if (PyErr_Occurred()) throw nb::python_error();
    return true;
}

inline void claim(nb::list claims, nb::handle addresses, const std::string& who) {
    if (!PyAnySet_Check(addresses.ptr()))
        throw Error(ErrorKind::invalid_value, "claim(): the addresses are a frozenset");
    for (nb::handle held : claims)
        if (!disjoint(held.ptr(), addresses.ptr()))
            throw Error(ErrorKind::internal,
                        who + ": another optimizer is stepping a parameter of this one in another "
                              "thread right now; two optimizers that share a parameter must not "
                              "step at the same time (one update would be lost). Nothing was "
                              "updated");
    claims.append(addresses);
}

// release() where no exception may leave (a destructor): an error is reported as unraisable
inline void release_quietly(const nb::list& claims, nb::handle addresses) noexcept;

inline void release(nb::list claims, nb::handle addresses) {
    const Py_ssize_t n = PyList_GET_SIZE(claims.ptr());
    for (Py_ssize_t i = 0; i < n; ++i)
        if (PyList_GET_ITEM(claims.ptr(), i) == addresses.ptr()) {
            if (PySequence_DelItem(claims.ptr(), i) != 0) throw nb::python_error();
            return;
        }
    for (Py_ssize_t i = 0; i < n; ++i) {  // an equal set (a caller that rebuilt it)
        const int equal = PyObject_RichCompareBool(PyList_GET_ITEM(claims.ptr(), i),
                                                   addresses.ptr(), Py_EQ);
        if (equal < 0) throw nb::python_error();
        if (equal) {
            if (PySequence_DelItem(claims.ptr(), i) != 0) throw nb::python_error();
            return;
        }
    }
}

inline void release_quietly(const nb::list& claims, nb::handle addresses) noexcept {
    try {
        release(claims, addresses);
    } catch (nb::python_error& e) {
        e.discard_as_unraisable("adamcore: releasing a claim");
    } catch (...) {
    }
}

}  // namespace adamcore::binding
