// lstmcpp._core: the only file that knows Python. It converts arrays, checks their shapes
// (so the core is never handed a buffer of the wrong size, even when _core is called
// directly), allocates the outputs, and releases the GIL around each call into the core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/blas.h"
#include "kernels/kernels.h"
#include "core/model.h"
#include "core/cpu_caches.h"
#include "core/pool.h"
#include "core/quantized_model.h"
#include "core/time_loop.h"
#include "weights/dense.h"
#include "training/training.h"

namespace py = pybind11;
using lstmcpp::Cache;
using lstmcpp::Config;
using lstmcpp::Model;

namespace {

template <class T>
using Array = py::array_t<T, py::array::c_style>;
using Lengths = py::array_t<int32_t, py::array::c_style>;

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t k = 0; k < a.ndim(); ++k) s += (k ? ", " : "") + std::to_string(a.shape(k));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string shape_of(std::initializer_list<int64_t> dims) {
    std::string s = "(";
    size_t k = 0;
    for (int64_t d : dims) s += (k++ ? ", " : "") + std::to_string(d);
    return s + (dims.size() == 1 ? ",)" : ")");
}

// (an initializer list, not a vector: a stream's step allocates nothing)
void require_shape(const py::array& a, std::initializer_list<int64_t> dims, const char* name) {
    bool ok = a.ndim() == static_cast<py::ssize_t>(dims.size());
    py::ssize_t k = 0;
    for (int64_t d : dims) ok = ok && a.shape(k++) == d;
    if (!ok)
        throw py::value_error(std::string(name) + ": expected shape " + shape_of(dims) +
                              ", got " + shape_of(a));
}

// The Python layer converts every argument; here an array is only checked and borrowed (a
// pybind11 array_t argument would go through PyArray_FromAny on every call, ~0.5 us each).
template <class T>
Array<T> ready(py::handle obj, const char* name) {
    if (!Array<T>::check_(obj))
        throw py::type_error(std::string(name) + ": expected a C-contiguous numpy array of " +
                             std::string(py::str(py::dtype::of<T>())));
    return py::reinterpret_borrow<Array<T>>(obj);
}

template <class T>
std::optional<Array<T>> ready_or_none(py::handle obj, const char* name) {
    if (obj.is_none()) return std::nullopt;
    return ready<T>(obj, name);
}

template <class T>
const T* data_or_null(const std::optional<Array<T>>& a) {
    return a ? a->data() : nullptr;
}

// The models' constructors' arguments, as the core's Config (which checks them when a model is made).
Config make_config(int64_t input_size, int64_t hidden_size, int64_t num_layers, int64_t proj_size, bool bias,
                   bool bidirectional, bool peepholes, double cell_clip, double proj_clip, bool reverse,
                   bool coupled_input_forget, bool layer_norm, int64_t mogrify_rounds, int64_t mogrify_rank) {
    Config c;
    c.input_size = input_size;
    c.hidden_size = hidden_size;
    c.num_layers = num_layers;
    c.proj_size = proj_size;
    c.bias = bias;
    c.bidirectional = bidirectional;
    c.peepholes = peepholes;
    c.cell_clip = cell_clip;
    c.proj_clip = proj_clip;
    c.reverse = reverse;
    c.coupled_input_forget = coupled_input_forget;
    c.layer_norm = layer_norm;
    c.mogrify_rounds = mogrify_rounds;
    c.mogrify_rank = mogrify_rank;
    return c;
}

// obj as it is: a C-contiguous array of T, or a TypeError naming it (nothing converted or copied).
template <class T>
py::array_t<T, py::array::c_style> exact_array(py::handle obj, const char* name, const char* what) {
    using Exact = py::array_t<T, py::array::c_style>;
    if (!Exact::check_(obj)) throw py::type_error(std::string(name) + ": expected a C-contiguous array of " + what);
    return py::reinterpret_borrow<Exact>(obj);
}

// One step of a model from state (h, c) into (h, c), y_t into y, for B sequences: each layer reads
// its slice of h and c at its start and writes it at its end, so in place is safe.
template <class T>
void one_step(const lstmcpp::Model<T>& m, T* y, T* h, T* c, const T* x, int64_t B) {
    m.forward(y, h, c, nullptr, x, h, c, nullptr, {}, 1, B, nullptr);
}
template <class Storage>
void one_step(const lstmcpp::QuantizedModel<Storage>& m, float* y, float* h, float* c, const float* x, int64_t B) {
    m.forward(y, h, c, x, h, c, nullptr, 1, B, nullptr);
}

// What a step reads as x: x itself, or, when x and out share memory (s.step(y, out=y) feeding a
// stream its own output), a copy in this thread's buffer: a step's threads write their parts of
// out while the others, or a thread doing a late worker's share, still read x.
template <class T>
const T* input_apart_from_output(const T* x, int64_t nx, const T* out, int64_t nout) {
    const auto begin = reinterpret_cast<std::uintptr_t>(x), end = reinterpret_cast<std::uintptr_t>(x + nx);
    const auto out_begin = reinterpret_cast<std::uintptr_t>(out), out_end = reinterpret_cast<std::uintptr_t>(out + nout);
    if (end <= out_begin || out_end <= begin) return x;
    thread_local std::vector<T> copy;
    copy.assign(x, x + nx);
    return copy.data();
}

// Whether obj is a numpy.ndarray itself, not a subclass's instance (Stream.step's lean path takes
// only those; the Python layer decides about the rest).
bool plain_ndarray(py::handle obj) {
    static PyTypeObject* const ndarray =
        reinterpret_cast<PyTypeObject*>(py::object(py::module_::import("numpy").attr("ndarray")).release().ptr());
    return Py_TYPE(obj.ptr()) == ndarray;
}

// One step of a stream, in place (Stream.step's lean path): B sequences in lockstep, h (D*L, B, P)
// and c (D*L, B, H), x_t (B, I), out (B, D*P); or one unbatched sequence, h (D*L, P), c (D*L, H),
// x_t (I,), out (D*P,). h and c are read as the state and overwritten with the next one. x_t and
// out plain numpy arrays, every array C-contiguous of the model's dtype, as given (nothing
// converted, so nothing copied); everything is checked before the state is touched, so the
// Python layer checks nothing first.
template <class T, class Net>
void step_in_place(const Net& self, py::handle x_obj, py::handle h_obj, py::handle c_obj, py::handle y_obj) {
    const char* dtype = "the model's dtype";
    if (!plain_ndarray(x_obj) || !plain_ndarray(y_obj)) throw py::type_error("x_t, out: expected numpy arrays");
    const auto x = exact_array<T>(x_obj, "x_t", dtype), h = exact_array<T>(h_obj, "h", dtype),
               c = exact_array<T>(c_obj, "c", dtype), y = exact_array<T>(y_obj, "out", dtype);
    const Config& cfg = self.config();
    const int64_t L = cfg.num_layers, D = cfg.directions(), H = cfg.hidden_size, P = cfg.output_size(), I = cfg.input_size;
    int64_t B = 1;
    if (h.ndim() == 2) {  // one unbatched sequence
        require_shape(h, {D * L, P}, "h");
        require_shape(c, {D * L, H}, "c");
        require_shape(x, {I}, "x_t");
        require_shape(y, {D * P}, "out");
    } else {
        if (h.ndim() != 3) throw py::value_error("h: expected shape (D*L, B, P), got " + shape_of(h));
        B = h.shape(1);
        require_shape(h, {D * L, B, P}, "h");
        require_shape(c, {D * L, B, H}, "c");
        require_shape(x, {B, I}, "x_t");
        require_shape(y, {B, D * P}, "out");
    }
    if (!y.writeable() || !h.writeable() || !c.writeable()) throw py::value_error("out, h, c: expected writeable arrays");
    T* hp = const_cast<T*>(h.data());
    const T* xp = input_apart_from_output(x.data(), x.size(), y.data(), y.size());
    py::gil_scoped_release release;
    one_step(self, const_cast<T*>(y.data()), hp, const_cast<T*>(c.data()), xp, B);
}

// One batched step of a stream pool (StreamPool.step): the states of streams ids (n) gathered
// from h_all (L, capacity, P) and c_all (L, capacity, H), stepped with x (n x I values), y_t
// into out (n x P values), and scattered back. Arrays as step_in_place takes them; ids int64 in
// 0..capacity-1, none twice (checked here too: a repeated id would scatter two results to one row).
template <class T, class Net>
void pool_step(const Net& self, py::handle ids_obj, py::handle x_obj, py::handle h_obj, py::handle c_obj,
               py::handle y_obj) {
    const char* dtype = "the model's dtype";
    const auto ids = exact_array<int64_t>(ids_obj, "ids", "int64");
    const auto x = exact_array<T>(x_obj, "x", dtype), h = exact_array<T>(h_obj, "h", dtype),
               c = exact_array<T>(c_obj, "c", dtype), y = exact_array<T>(y_obj, "out", dtype);
    const Config& cfg = self.config();
    const int64_t L = cfg.num_layers, H = cfg.hidden_size, P = cfg.output_size(), n = ids.size();
    if (cfg.bidirectional || cfg.reverse) throw py::value_error("a pool steps one-direction forward models only");
    if (h.ndim() != 3) throw py::value_error("h: expected shape (L, capacity, P), got " + shape_of(h));
    const int64_t capacity = h.shape(1);
    require_shape(h, {L, capacity, P}, "h");
    require_shape(c, {L, capacity, H}, "c");
    if (x.size() != n * cfg.input_size)
        throw py::value_error("x: expected " + std::to_string(n * cfg.input_size) + " values, got " + shape_of(x));
    if (y.size() != n * P) throw py::value_error("out: expected " + std::to_string(n * P) + " values, got " + shape_of(y));
    if (!y.writeable() || !h.writeable() || !c.writeable()) throw py::value_error("out, h, c: expected writeable arrays");
    // each id's mark, in this thread's buffer (cleared again below: a step allocates nothing)
    thread_local std::vector<char> seen;
    if (static_cast<int64_t>(seen.size()) < capacity) seen.assign(capacity, 0);
    const auto unmark = [&](int64_t marked) {
        for (int64_t k = 0; k < marked; ++k) seen[ids.data()[k]] = 0;
    };
    for (int64_t k = 0; k < n; ++k) {
        const int64_t id = ids.data()[k];
        if (id < 0 || id >= capacity) {
            unmark(k);
            throw py::value_error("ids: every id must be in 0.." + std::to_string(capacity - 1) + ", got " + std::to_string(id));
        }
        if (seen[id]) {
            unmark(k);
            throw py::value_error("ids: each id at most once a step (a stream advances by one step)");
        }
        seen[id] = 1;
    }
    unmark(n);
    T* h_all = const_cast<T*>(h.data());
    T* c_all = const_cast<T*>(c.data());
    T* out = const_cast<T*>(y.data());
    const T* xp = input_apart_from_output(x.data(), x.size(), y.data(), y.size());
    py::gil_scoped_release release;
    lstmcpp::pool_step_in_chunks(n, L, capacity, P, H, cfg.input_size, ids.data(), h_all, c_all, xp, out,
                                 [&](T* y_rows, T* h_rows, T* c_rows, const T* x_rows, int64_t rows) {
                                     one_step(self, y_rows, h_rows, c_rows, x_rows, rows);
                                 });
}

// A model class's stream entry points: step (Stream.step) and pool_step (StreamPool.step).
template <class T, class Class>
void bind_steps(Class& cls) {
    using Net = typename Class::type;
    cls.def("step", [](const Net& self, py::handle x, py::handle h, py::handle c, py::handle out) {
           step_in_place<T>(self, x, h, c, out);
       }, py::arg("x"), py::arg("h"), py::arg("c"), py::arg("out"),
       "One step in place: out = y_t, (h, c) advanced; no array converted or allocated.")
        .def("pool_step", [](const Net& self, py::handle ids, py::handle x, py::handle h, py::handle c,
                             py::handle out) { pool_step<T>(self, ids, x, h, c, out); },
             py::arg("ids"), py::arg("x"), py::arg("h"), py::arg("c"), py::arg("out"),
             "One batched step of the pool's streams ids: their states gathered from (h, c), stepped, scattered back.");
}

// A forward call's inputs, checked against the model's configuration: x (T,B,I), or with an
// embedding (V,I) token ids (T,B) into it; h0 (D*L,B,P), c0 (D*L,B,H) and lengths (B) or None.
template <class T>
struct ForwardArgs {
    std::optional<Array<T>> x_, embedding_, h0_, c0_;
    std::optional<Lengths> ids_, lengths_;
    lstmcpp::TokenInput<T> tokens_;
    int64_t steps = 0, batch = 0;

    ForwardArgs(const Config& c, py::handle x_obj, py::handle h0_obj, py::handle c0_obj, py::handle lengths_obj,
                py::handle embedding_obj) {
        embedding_ = ready_or_none<T>(embedding_obj, "embedding");
        if (embedding_) ids_ = ready<int32_t>(x_obj, "ids");
        else x_ = ready<T>(x_obj, "x");
        h0_ = ready_or_none<T>(h0_obj, "h0");
        c0_ = ready_or_none<T>(c0_obj, "c0");
        lengths_ = ready_or_none<int32_t>(lengths_obj, "lengths");
        const int64_t L = c.num_layers, D = c.directions(), H = c.hidden_size, P = c.output_size();
        if (embedding_) {
            if (ids_->ndim() != 2) throw py::value_error("ids: expected shape (T, B), got " + shape_of(*ids_));
            if (embedding_->ndim() != 2) throw py::value_error("embedding: expected shape (V, " + std::to_string(c.input_size) + "), got " + shape_of(*embedding_));
            require_shape(*embedding_, {embedding_->shape(0), c.input_size}, "embedding");
            steps = ids_->shape(0);
            batch = ids_->shape(1);
            tokens_ = {ids_->data(), embedding_->data(), embedding_->shape(0)};
        } else {
            if (x_->ndim() != 3) throw py::value_error("x: expected shape (T, B, " + std::to_string(c.input_size) + "), got " + shape_of(*x_));
            steps = x_->shape(0);
            batch = x_->shape(1);
            require_shape(*x_, {steps, batch, c.input_size}, "x");
        }
        if (h0_) require_shape(*h0_, {D * L, batch, P}, "h0");
        if (c0_) require_shape(*c0_, {D * L, batch, H}, "c0");
        if (lengths_) require_shape(*lengths_, {batch}, "lengths");
    }
    const T* x() const { return x_ ? x_->data() : nullptr; }
    const T* h0() const { return data_or_null(h0_); }
    const T* c0() const { return data_or_null(c0_); }
    const int32_t* lengths_data() const { return lengths_ ? lengths_->data() : nullptr; }
    const lstmcpp::TokenInput<T>* tokens_or_null() const { return embedding_ ? &tokens_ : nullptr; }
};

template <class T>
void bind_model(py::module_& m, const char* model_name, const char* cache_name) {
    using M = Model<T>;
    using C = Cache<T>;

    py::class_<C>(m, cache_name, "What forward keeps for backward (opaque).")
        .def_property_readonly("model_id", [](const C& c) { return c.model_id; })
        .def_property_readonly("steps", [](const C& c) { return c.steps; })
        .def_property_readonly("batch", [](const C& c) { return c.batch; });

    py::class_<M> cls(m, model_name, "The C++ LSTM: flat parameters and gradients, forward, backward.");
    cls.def(py::init([](int64_t input_size, int64_t hidden_size, int64_t num_layers,
                         int64_t proj_size, bool bias, bool bidirectional, bool peepholes,
                         double cell_clip, double proj_clip, bool reverse, bool coupled_input_forget, bool layer_norm,
                         int64_t mogrify_rounds, int64_t mogrify_rank) {
                 return new M(make_config(input_size, hidden_size, num_layers, proj_size, bias, bidirectional,
                                          peepholes, cell_clip, proj_clip, reverse, coupled_input_forget, layer_norm,
                                          mogrify_rounds, mogrify_rank));
             }),
             py::arg("input_size"), py::arg("hidden_size"), py::arg("num_layers") = 1,
             py::arg("proj_size") = 0, py::arg("bias") = true, py::arg("bidirectional") = false,
             py::arg("peepholes") = false, py::arg("cell_clip") = 0.0, py::arg("proj_clip") = 0.0,
             py::arg("reverse") = false, py::arg("coupled_input_forget") = false, py::arg("layer_norm") = false,
             py::arg("mogrify_rounds") = 0, py::arg("mogrify_rank") = 0)
        .def_property_readonly("id", &M::id)
        .def("layout",
             [](const M& self) {
                 py::list out;
                 for (const auto& e : self.layout())
                     out.append(py::make_tuple(e.name, py::tuple(py::cast(e.shape)), e.offset));
                 return out;
             },
             "[(name, shape, offset)] of every parameter in the flat buffer, PyTorch's order.")
        // Views of the model's own memory; the view keeps the model alive.
        .def_property_readonly("params", [](py::object self) {
            M& model = self.cast<M&>();
            return Array<T>({model.num_params()}, {sizeof(T)}, model.params(), self);
        })
        .def_property_readonly("grads", [](py::object self) {
            M& model = self.cast<M&>();
            return Array<T>({model.num_params()}, {sizeof(T)}, model.grads(), self);
        })
        .def(
            "forward",
            [](const M& self, py::handle x_obj, py::handle h0_obj, py::handle c0_obj,
               py::handle lengths_obj, const py::list& dropout_masks, bool keep_cache,
               py::handle embedding_obj) {
                const ForwardArgs<T> args(self.config(), x_obj, h0_obj, c0_obj, lengths_obj, embedding_obj);
                const Config& c = self.config();
                const int64_t L = c.num_layers, D = c.directions(), H = c.hidden_size, P = c.output_size();
                const int64_t steps = args.steps, B = args.batch;
                std::vector<const T*> masks;
                for (py::handle item : dropout_masks) {
                    const Array<T> mask = ready<T>(item, "dropout mask");  // kept alive by the list
                    require_shape(mask, {steps, B, D * P}, "dropout mask");
                    masks.push_back(mask.data());
                }
                Array<T> y({steps, B, D * P}), h_n({D * L, B, P}), c_n({D * L, B, H});
                std::unique_ptr<C> cache(keep_cache ? new C() : nullptr);
                {
                    py::gil_scoped_release release;
                    self.forward(y.mutable_data(), h_n.mutable_data(), c_n.mutable_data(), cache.get(), args.x(),
                                 args.h0(), args.c0(), args.lengths_data(), masks, steps, B, args.tokens_or_null());
                }
                py::object cache_obj = cache ? py::cast(std::move(cache)) : py::none();
                return py::make_tuple(y, h_n, c_n, cache_obj);
            },
            py::arg("x"), py::arg("h0") = py::none(), py::arg("c0") = py::none(),
            py::arg("lengths") = py::none(), py::arg("dropout_masks") = py::list(),
            py::arg("keep_cache") = false, py::arg("embedding") = py::none())
        .def(
            "backward",
            [](M& self, const C& cache, py::handle dy_obj, py::handle dh_n_obj, py::handle dc_n_obj) {
                const Array<T> dy = ready<T>(dy_obj, "dy");
                const std::optional<Array<T>> dh_n = ready_or_none<T>(dh_n_obj, "dh_n");
                const std::optional<Array<T>> dc_n = ready_or_none<T>(dc_n_obj, "dc_n");
                const Config& c = self.config();
                const int64_t L = c.num_layers, D = c.directions(), H = c.hidden_size,
                              P = c.output_size(), steps = cache.steps, B = cache.batch;
                if (cache.model_id != self.id())
                    throw py::value_error("cache: it was made by another model's forward");
                require_shape(dy, {steps, B, D * P}, "dy");
                if (dh_n) require_shape(*dh_n, {D * L, B, P}, "dh_n");
                if (dc_n) require_shape(*dc_n, {D * L, B, H}, "dc_n");
                // dx: the gradient of x (T,B,I), or for token input of the embedding (V,I)
                Array<T> dx = cache.vocab > 0 ? Array<T>({cache.vocab, c.input_size}) : Array<T>({steps, B, c.input_size});
                Array<T> dh0({D * L, B, P}), dc0({D * L, B, H});
                {
                    py::gil_scoped_release release;
                    self.backward(dx.mutable_data(), dh0.mutable_data(), dc0.mutable_data(), cache,
                                  dy.data(), data_or_null(dh_n), data_or_null(dc_n));
                }
                return py::make_tuple(dx, dh0, dc0);
            },
            py::arg("cache"), py::arg("dy"), py::arg("dh_n") = py::none(),
            py::arg("dc_n") = py::none());
    bind_steps<T>(cls);
}

// A quantized model's class, but for how its matrices are given (set_matrix: per format).
template <class Storage>
py::class_<lstmcpp::QuantizedModel<Storage>> bind_quantized_model(py::module_& m, const char* name, const char* doc) {
    using Q = lstmcpp::QuantizedModel<Storage>;
    py::class_<Q> cls(m, name, doc);
    cls.def(py::init([](int64_t input_size, int64_t hidden_size, int64_t num_layers, int64_t proj_size, bool bias,
                        bool bidirectional, bool peepholes, double cell_clip, double proj_clip, bool reverse,
                        bool coupled_input_forget, bool layer_norm, int64_t mogrify_rounds, int64_t mogrify_rank) {
                return new Q(make_config(input_size, hidden_size, num_layers, proj_size, bias, bidirectional, peepholes,
                                         cell_clip, proj_clip, reverse, coupled_input_forget, layer_norm,
                                         mogrify_rounds, mogrify_rank));
            }),
            py::arg("input_size"), py::arg("hidden_size"), py::arg("num_layers") = 1, py::arg("proj_size") = 0,
            py::arg("bias") = true, py::arg("bidirectional") = false, py::arg("peepholes") = false,
            py::arg("cell_clip") = 0.0, py::arg("proj_clip") = 0.0, py::arg("reverse") = false,
            py::arg("coupled_input_forget") = false, py::arg("layer_norm") = false, py::arg("mogrify_rounds") = 0,
            py::arg("mogrify_rank") = 0)
        .def("set_vector",
             [](Q& self, int64_t cell, const std::string& name, py::handle values_obj) {
                 const Array<float> values = ready<float>(values_obj, name.c_str());
                 self.set_vector(cell, name, values.data(), values.size());
             },
             py::arg("cell"), py::arg("name"), py::arg("values"))
        .def_property_readonly("nbytes", &Q::nbytes)
        .def(
            "forward",
            [](const Q& self, py::handle x_obj, py::handle h0_obj, py::handle c0_obj, py::handle lengths_obj,
               py::handle embedding_obj) {
                const ForwardArgs<float> args(self.config(), x_obj, h0_obj, c0_obj, lengths_obj, embedding_obj);
                const Config& c = self.config();
                const int64_t L = c.num_layers, D = c.directions(), H = c.hidden_size, P = c.output_size();
                Array<float> y({args.steps, args.batch, D * P}), h_n({D * L, args.batch, P}), c_n({D * L, args.batch, H});
                {
                    py::gil_scoped_release release;
                    self.forward(y.mutable_data(), h_n.mutable_data(), c_n.mutable_data(), args.x(), args.h0(),
                                 args.c0(), args.lengths_data(), args.steps, args.batch, args.tokens_or_null());
                }
                return py::make_tuple(y, h_n, c_n);
            },
            py::arg("x"), py::arg("h0") = py::none(), py::arg("c0") = py::none(), py::arg("lengths") = py::none(),
            py::arg("embedding") = py::none());
    bind_steps<float>(cls);
    return cls;
}

template <class T>
using Exact = py::array_t<T, py::array::c_style>;

// out (M,N) = x (M,K) W^T by a quantized matrix's all-rows product.
template <class Matrix>
Array<float> multiply_rows(const Matrix& W, py::handle x_obj) {
    const Array<float> x = ready<float>(x_obj, "x");
    if (x.ndim() != 2 || x.shape(1) != W.cols)
        throw py::value_error("x: expected shape (M, " + std::to_string(W.cols) + "), got " + shape_of(x));
    Array<float> out({x.shape(0), W.rows});
    py::gil_scoped_release release;
    if (x.shape(0) > 0) W.multiply_rows(out.mutable_data(), x.data(), x.shape(0), 0.0f);
    return out;
}

void bind_quantized_models(py::module_& m) {
    using Int8Array = Exact<int8_t>;
    bind_quantized_model<lstmcpp::Int8Weights>(m, "QuantizedModelInt8", "The C++ LSTM with int8 matrices, for inference.")
        .def("set_matrix",
             [](lstmcpp::QuantizedModel<lstmcpp::Int8Weights>& self, int64_t cell, const std::string& name,
                py::handle q_obj, py::handle scales_obj) {
                 if (!Int8Array::check_(q_obj)) throw py::type_error(name + ": expected a C-contiguous int8 array");
                 const Int8Array q = py::reinterpret_borrow<Int8Array>(q_obj);
                 const Array<float> scales = ready<float>(scales_obj, "scales");
                 if (q.ndim() != 2) throw py::value_error(name + ": expected a 2-D array, got " + shape_of(q));
                 require_shape(scales, {q.shape(0)}, "scales");
                 self.matrix(cell, name, q.shape(0), q.shape(1)).assign(q.data(), scales.data(), q.shape(0), q.shape(1));
             },
             py::arg("cell"), py::arg("name"), py::arg("q"), py::arg("scales"));
    bind_quantized_model<lstmcpp::Bf16Weights>(m, "QuantizedModelBf16", "The C++ LSTM with bfloat16 matrices, for inference.")
        .def("set_matrix",
             [](lstmcpp::QuantizedModel<lstmcpp::Bf16Weights>& self, int64_t cell, const std::string& name,
                py::handle bits_obj) {
                 if (!Exact<uint16_t>::check_(bits_obj))
                     throw py::type_error(name + ": expected a C-contiguous uint16 array of bfloat16 bits");
                 const Exact<uint16_t> bits = py::reinterpret_borrow<Exact<uint16_t>>(bits_obj);
                 if (bits.ndim() != 2) throw py::value_error(name + ": expected a 2-D array, got " + shape_of(bits));
                 self.matrix(cell, name, bits.shape(0), bits.shape(1)).assign(bits.data(), bits.shape(0), bits.shape(1));
             },
             py::arg("cell"), py::arg("name"), py::arg("bits"));
    bind_quantized_model<lstmcpp::CodebookWeights>(m, "QuantizedModelCodebook",
                                                   "The C++ LSTM with codebook matrices, for inference.")
        .def("set_matrix",
             [](lstmcpp::QuantizedModel<lstmcpp::CodebookWeights>& self, int64_t cell, const std::string& name,
                py::handle idx_obj, py::handle books_obj, int64_t rows_per_book) {
                 if (!Exact<uint8_t>::check_(idx_obj))
                     throw py::type_error(name + ": expected a C-contiguous uint8 array of indices");
                 const Exact<uint8_t> idx = py::reinterpret_borrow<Exact<uint8_t>>(idx_obj);
                 const Array<float> books = ready<float>(books_obj, "books");
                 if (idx.ndim() != 2) throw py::value_error(name + ": expected a 2-D array, got " + shape_of(idx));
                 if (books.ndim() != 2 || rows_per_book < 1 || idx.shape(0) % rows_per_book != 0)
                     throw py::value_error("books: expected shape (rows / rows_per_book, 16 or 256), got " + shape_of(books));
                 require_shape(books, {idx.shape(0) / rows_per_book, books.shape(1)}, "books");
                 self.matrix(cell, name, idx.shape(0), idx.shape(1))
                     .assign(idx.data(), books.data(), idx.shape(0), idx.shape(1), rows_per_book, books.shape(1));
             },
             py::arg("cell"), py::arg("name"), py::arg("indices"), py::arg("books"), py::arg("rows_per_book"));

    // One matrix in a quantized format, for the layers around the LSTM (a model's large Linear):
    // multiply(x) = x (M,K) W^T, as the format's all-rows product makes it.
    py::class_<lstmcpp::Int8Weights>(m, "QuantizedMatrixInt8", "One int8 matrix (N,K): multiply(x) = x W^T.")
        .def(py::init([](py::handle q_obj, py::handle scales_obj) {
                 if (!Int8Array::check_(q_obj)) throw py::type_error("q: expected a C-contiguous int8 array");
                 const Int8Array q = py::reinterpret_borrow<Int8Array>(q_obj);
                 const Array<float> scales = ready<float>(scales_obj, "scales");
                 if (q.ndim() != 2) throw py::value_error("q: expected a 2-D array, got " + shape_of(q));
                 require_shape(scales, {q.shape(0)}, "scales");
                 auto* w = new lstmcpp::Int8Weights();
                 w->assign(q.data(), scales.data(), q.shape(0), q.shape(1));
                 return w;
             }),
             py::arg("q"), py::arg("scales"))
        .def("multiply", [](const lstmcpp::Int8Weights& w, py::handle x) { return multiply_rows(w.view(), x); }, py::arg("x"));
    py::class_<lstmcpp::Bf16Weights>(m, "QuantizedMatrixBf16", "One bfloat16 matrix (N,K): multiply(x) = x W^T.")
        .def(py::init([](py::handle bits_obj) {
                 if (!Exact<uint16_t>::check_(bits_obj)) throw py::type_error("bits: expected a C-contiguous uint16 array");
                 const Exact<uint16_t> bits = py::reinterpret_borrow<Exact<uint16_t>>(bits_obj);
                 if (bits.ndim() != 2) throw py::value_error("bits: expected a 2-D array, got " + shape_of(bits));
                 auto* w = new lstmcpp::Bf16Weights();
                 w->assign(bits.data(), bits.shape(0), bits.shape(1));
                 return w;
             }),
             py::arg("bits"))
        .def("multiply", [](const lstmcpp::Bf16Weights& w, py::handle x) { return multiply_rows(w.view(), x); }, py::arg("x"));

    // The int8 kernels alone (for testing their integers against the NumPy reference), in the
    // integers' own terms: q as int16 values (the kernels hold q + 128 as bytes), W row-major.
    m.def("quantize_rows_f32", [](const Array<float>& a) {
        if (a.ndim() != 2) throw py::value_error("a: expected a 2-D array, got " + shape_of(a));
        const int64_t M = a.shape(0), K = a.shape(1), Kp = (K + 15) / 16 * 16;
        std::vector<uint8_t> bytes(M * Kp);
        Array<float> scale({M});
        lstmcpp::kernels_f32().quantize_rows(bytes.data(), Kp, scale.mutable_data(), a.data(), K, M, K);
        py::array_t<int16_t> q({M, Kp});
        for (int64_t i = 0; i < M * Kp; ++i) q.mutable_data()[i] = static_cast<int16_t>(bytes[i] - 128);
        return py::make_tuple(q, scale);
    }, py::arg("a"), "The float32 kernels' activation quantization: (q (M, K rounded up to 16) int16, scales (M)).");
    m.def("gemm_nt_s8_f32", [](const Exact<int16_t>& q, const Array<float>& a_scale, const Int8Array& w,
                               const Array<float>& w_scale, int64_t first_row, int64_t rows) {
        if (q.ndim() != 2) throw py::value_error("q: expected a 2-D array, got " + shape_of(q));
        if (w.ndim() != 2) throw py::value_error("w: expected a 2-D array, got " + shape_of(w));
        // q's rows padded as a product's own activations are (to 64: whole AMX tiles), or to 16
        // (which a tile's kernel must not read past: it leaves them to VNNI's)
        const int64_t M = q.shape(0), N = w.shape(0), K = w.shape(1), Kp = q.shape(1);
        if (Kp != (K + 15) / 16 * 16) require_shape(q, {M, (K + 63) / 64 * 64}, "q");
        require_shape(a_scale, {M}, "a_scale");
        require_shape(w_scale, {N}, "w_scale");
        if (first_row < 0 || rows < 0 || first_row + rows > N)
            throw py::value_error("first_row, rows: expected a range inside the " + std::to_string(N) + " rows of w");
        std::vector<uint8_t> bytes(M * Kp);
        for (int64_t i = 0; i < M * Kp; ++i) {
            if (q.data()[i] < -127 || q.data()[i] > 127) throw py::value_error("q: expected values in [-127, 127]");
            bytes[i] = static_cast<uint8_t>(q.data()[i] + 128);
        }
        lstmcpp::Int8Weights weights;
        weights.assign(w.data(), w_scale.data(), N, K);
        Array<float> C({M, rows});
        lstmcpp::kernels_f32().gemm_nt_s8(C.mutable_data(), rows, bytes.data(), Kp, a_scale.data(), weights.view().view,
                                          first_row, M, rows, 0.0f);
        return C;
    }, py::arg("q"), py::arg("a_scale"), py::arg("w"), py::arg("w_scale"), py::arg("first_row"), py::arg("rows"),
       "The float32 kernels' int8 product of rows first_row ..+rows of w (N,K): C = (q w^T) * a_scale[m] * w_scale[n], "
       "q (M, K rounded up to 16 or to 64) in [-127, 127].");
}

// C (M,N) = op(A) op(B) (+ C when accumulate): the blocks around the LSTM (lstmcpp.nn) use our
// BLAS on our thread team, so a training step never wakes NumPy's BLAS threads, which would
// spin on the cores the LSTM's team needs.
template <class T>
py::object matmul(py::handle a_obj, py::handle b_obj, bool trans_a, bool trans_b, py::handle out_obj,
                  bool accumulate) {
    const Array<T> a = ready<T>(a_obj, "a"), b = ready<T>(b_obj, "b");
    if (a.ndim() != 2 || b.ndim() != 2)
        throw py::value_error("a, b: expected 2-D arrays, got shapes " + shape_of(a) + " and " + shape_of(b));
    const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
    const int64_t N = trans_b ? b.shape(0) : b.shape(1), Kb = trans_b ? b.shape(1) : b.shape(0);
    if (K != Kb)
        throw py::value_error("a, b: inner sizes differ: " + shape_of(a) + (trans_a ? "^T" : "") + " @ " +
                              shape_of(b) + (trans_b ? "^T" : ""));
    Array<T> out = out_obj.is_none() ? Array<T>({M, N}) : ready<T>(out_obj, "out");
    if (!out_obj.is_none()) require_shape(out, {M, N}, "out");
    if (out_obj.is_none() && accumulate) throw py::value_error("accumulate needs out");
    {
        py::gil_scoped_release release;
        if (K == 0) {
            if (!accumulate) std::fill(out.mutable_data(), out.mutable_data() + M * N, T(0));
        } else {
            lstmcpp::gemm_parallel<T>(lstmcpp::get_num_threads(), trans_a, trans_b, M, N, K, T(1), a.data(),
                                      a.shape(1), b.data(), b.shape(1), accumulate ? T(1) : T(0),
                                      out.mutable_data(), N);
        }
    }
    return out;
}

// (loss summed over rows, dlogits) for logits (N,V), targets (N) int32, weights (N) or None.
template <class T>
py::tuple softmax_cross_entropy(py::handle logits_obj, py::handle targets_obj, py::handle weights_obj, double scale) {
    const Array<T> logits = ready<T>(logits_obj, "logits");
    const Lengths targets = ready<int32_t>(targets_obj, "targets");
    const std::optional<Array<T>> weights = ready_or_none<T>(weights_obj, "weights");
    if (logits.ndim() != 2 || logits.shape(1) < 1)
        throw py::value_error("logits: expected shape (N, V) with V >= 1, got " + shape_of(logits));
    const int64_t N = logits.shape(0), V = logits.shape(1);
    require_shape(targets, {N}, "targets");
    if (weights) require_shape(*weights, {N}, "weights");
    Array<T> dlogits({N, V});
    double total;
    {
        py::gil_scoped_release release;
        total = lstmcpp::softmax_cross_entropy<T>(dlogits.mutable_data(), logits.data(), targets.data(),
                                                  data_or_null(weights), N, V, scale);
    }
    return py::make_tuple(total, dlogits);
}

// One Adam step in place on param, m, v (same size as grad, all C-contiguous).
template <class T>
void adam_update(py::handle p_obj, py::handle g_obj, py::handle m_obj, py::handle v_obj, double lr, double beta1,
                 double beta2, double eps, double weight_decay, bool decoupled, int64_t step) {
    Array<T> p = ready<T>(p_obj, "param"), m = ready<T>(m_obj, "m"), v = ready<T>(v_obj, "v");
    const Array<T> g = ready<T>(g_obj, "grad");
    for (const auto& [a, name] : {std::pair<const py::array*, const char*>{&g, "grad"}, {&m, "m"}, {&v, "v"}})
        if (a->size() != p.size())
            throw py::value_error(std::string(name) + ": expected " + std::to_string(p.size()) +
                                  " values (the parameter's), got " + std::to_string(a->size()));
    if (step < 1) throw py::value_error("step must be >= 1, got " + std::to_string(step));
    py::gil_scoped_release release;
    lstmcpp::adam_update<T>(p.mutable_data(), g.data(), m.mutable_data(), v.mutable_data(), p.size(),
                            {lr, beta1, beta2, eps, weight_decay, decoupled, step});
}

template <class F>
py::array_t<float> apply_f32(const Array<float>& x, F f) {
    Array<float> y(x.size());
    f(y.mutable_data(), x.data(), static_cast<int64_t>(x.size()));
    return y;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "lstmcpp's C++ core (private; use the lstmcpp package).";
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const py::builtin_exception&) {
            throw;  // pybind11's own (value_error, type_error) translate themselves
        } catch (const std::invalid_argument& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        } catch (const std::length_error& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        } catch (const std::runtime_error& e) {
            PyErr_SetString(PyExc_RuntimeError, e.what());
        }
    });
    bind_model<float>(m, "ModelF32", "CacheF32");
    bind_model<double>(m, "ModelF64", "CacheF64");
    bind_quantized_models(m);

    m.def("matmul_f32", &matmul<float>, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
          py::arg("trans_b") = false, py::arg("out") = py::none(), py::arg("accumulate") = false);
    m.def("matmul_f64", &matmul<double>, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
          py::arg("trans_b") = false, py::arg("out") = py::none(), py::arg("accumulate") = false);
    m.def("softmax_cross_entropy_f32", &softmax_cross_entropy<float>, py::arg("logits"), py::arg("targets"),
          py::arg("weights") = py::none(), py::arg("scale") = 1.0);
    m.def("softmax_cross_entropy_f64", &softmax_cross_entropy<double>, py::arg("logits"), py::arg("targets"),
          py::arg("weights") = py::none(), py::arg("scale") = 1.0);
    m.def("adam_update_f32", &adam_update<float>, py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"),
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("decoupled"), py::arg("step"));
    m.def("adam_update_f64", &adam_update<double>, py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"),
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("decoupled"), py::arg("step"));
    m.def("set_num_threads", &lstmcpp::set_num_threads, py::arg("n"));
    m.def("get_num_threads", &lstmcpp::get_num_threads);
    m.def("set_min_work_per_thread", &lstmcpp::set_min_work_per_thread, py::arg("macs"),
          "Testing switch: 1 runs every time loop on the whole thread team; negative restores the default (32768).");
    m.def("set_starvation_patience", &lstmcpp::set_starvation_patience, py::arg("nanoseconds"),
          "Testing switch: a time loop's team counts as starved after a wait this long at a step's barrier "
          "(0: any wait); negative restores the default.");
    m.def("set_workers_absent", &lstmcpp::set_workers_absent, py::arg("absent"),
          "Testing switch: while True, workers join no product, pool step or time loop that can run without them.");
    m.def("starved_calls", &lstmcpp::starved_calls, "Time loops that finished on one thread, their team starved.");
    m.def("team_recently_starved", &lstmcpp::team_recently_starved,
          "Whether teams run on the calling thread alone for now, a team having been found starved.");
    m.def("team_starved_for", &lstmcpp::team_starved_for,
          "Seconds that teams run alone after the latest starvation (0: none since the patience switch was last set).");
    m.def("set_step_tuning", &lstmcpp::set_step_tuning, py::arg("on"),
          "Testing switch: whether one-step calls choose between their team and one thread by timing both "
          "(the default), or always take their team; either forgets the times measured so far.");
    m.def("steps_alone", &lstmcpp::steps_alone, "One-step calls that ran on one thread by that choice.");
    m.def("workers_told_to_rest", &lstmcpp::workers_told_to_rest,
          "Whether idle workers sleep at once for now (a one-step call ran alone by choice within the last millisecond).");
    m.def("worker_rests", &lstmcpp::worker_rests,
          "Times idle workers were told to sleep at once (one-step calls alone by choice, at their start and end).");
    m.def("set_worker_delay", &lstmcpp::set_worker_delay, py::arg("nanoseconds"),
          "Testing switch: the worker waits this long before each share it runs (0: none).");
    m.def("set_pack_min_rows", &lstmcpp::set_pack_min_rows, py::arg("rows"),
          "Testing switch: the fewest rows (steps x batch) whose per-step products pack their weights (default 128).");
    m.def("set_sweep_from_bytes", &lstmcpp::set_sweep_from_bytes, py::arg("bytes"),
          "Testing switch: a thread whose step reads more than this many bytes of weights reads them backward "
          "every other step (0: always; negative: half of a core's L2, the default).");
    m.def("isa_in_use", &lstmcpp::isa_in_use);
    m.def("scheme_kernels", [] {
        const auto& K = lstmcpp::kernels_f32();
        py::dict out;
        out["float32"] = std::string(K.name) + ": row-dot and packed tiles";
        out["int8"] = K.int8_products;
        out["bf16"] = K.bf16_products;
        out["codebook4"] = K.codebook_products;
        out["codebook8"] = K.codebook_products;
        return out;
    }, "What runs the per-step products of each weight format, with the float32 kernels in use.");
    m.def("isa_supported", [](const std::string& name) { return lstmcpp::isa_supported(name.c_str()); });
    m.def("isa_names", [] {
        std::vector<std::string> names;
        for (const char* const* n = lstmcpp::isa_names(); *n; ++n) names.emplace_back(*n);
        return names;
    }, "Every kernel set's name, from the plainest to the widest (isa_supported says which this CPU runs).");
    m.def("set_isa", [](const std::string& name) { return lstmcpp::set_isa(name.c_str()); });
    m.def("blas_config", [] { return std::string(lstmcpp::blas_config()); });
    m.def("cache_sizes", [] {
        const auto& c = lstmcpp::cache_sizes();
        py::dict out;
        out["L1d"] = c.l1d;
        out["L2"] = c.l2;
        out["L3"] = c.l3;
        return out;
    }, "The data caches a core sees, in bytes (0: unknown), read at run time.");
    m.def("sigmoid_f32", [](const Array<float>& x) {
        return apply_f32(x, lstmcpp::kernels_f32().sigmoid);
    }, "The float32 kernels' sigmoid, flat (for measuring its error).");
    m.def("tanh_f32", [](const Array<float>& x) {
        return apply_f32(x, lstmcpp::kernels_f32().tanh);
    }, "The float32 kernels' tanh, flat (for measuring its error).");
}
