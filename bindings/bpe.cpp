// Python bindings of the BPE tokenizer (csrc/bpe). Errors become Python exceptions here;
// encode/decode release the GIL while the native code runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bpe/pretokenizer.h"
#include "bpe/tokenizer.h"
#include "bpe/unicode.h"

namespace py = pybind11;
using codegen::bpe::AddedToken;
using codegen::bpe::SpecialPolicy;
using codegen::bpe::Tokenizer;
using codegen::bpe::TokenizerSpec;

namespace {

// UTF-8 view of a Python str, valid while the str is alive. A str holding a lone surrogate
// has no UTF-8 form: Python raises UnicodeEncodeError, which propagates.
std::string_view Utf8View(const py::handle& text) {
  if (!PyUnicode_Check(text.ptr())) {
    throw py::type_error(std::string("expected str, got ") + Py_TYPE(text.ptr())->tp_name);
  }
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
  if (data == nullptr) throw py::error_already_set();
  return {data, static_cast<size_t>(size)};
}

using IdList = std::optional<std::vector<uint32_t>>;

// allowed: the special ids an encode call may produce (None = all). disallowed: the special
// ids that are an error when they are not allowed (None = every one not allowed); any other
// special token is encoded as ordinary text. The defaults of the bound methods are
// tiktoken's: nothing allowed, everything disallowed.
SpecialPolicy MakePolicy(const IdList& allowed, const IdList& disallowed) {
  SpecialPolicy policy;
  if (allowed) {
    policy.allow_all = false;
    policy.allowed = *allowed;
    std::sort(policy.allowed.begin(), policy.allowed.end());
  }
  if (disallowed) {
    policy.rejected = *disallowed;
    std::sort(policy.rejected.begin(), policy.rejected.end());
  } else {
    policy.reject_all = true;
  }
  return policy;
}

// The Python-facing tokenizer: the native one plus one Python int per id, made once, so that
// returning a list of ids shares ints instead of allocating one per token (a third of the
// time of encode() on code). Owns both.
struct BoundTokenizer {
  std::unique_ptr<Tokenizer> native;
  std::vector<py::object> ints;  // ints[id] is the Python int id

  const Tokenizer& operator*() const { return *native; }
  const Tokenizer* operator->() const { return native.get(); }

  py::list ToList(const uint32_t* ids, size_t count) const {
    py::list out(count);
    PyObject** items = reinterpret_cast<PyListObject*>(out.ptr())->ob_item;
    const py::object* table = ints.data();
    const size_t known = ints.size();
    for (size_t i = 0; i < count; ++i) {
      const uint32_t id = ids[i];
      PyObject* item;
      if (id < known) {
        item = table[id].ptr();
        Py_INCREF(item);
      } else {
        item = PyLong_FromUnsignedLong(id);
        if (item == nullptr) throw py::error_already_set();
      }
      items[i] = item;
    }
    return out;
  }
  py::list ToList(const std::vector<uint32_t>& ids) const { return ToList(ids.data(), ids.size()); }

  // Encodes with the GIL released and builds the result from the ids in place (no vector).
  template <typename Build>
  py::object EncodeTo(std::string_view text, const SpecialPolicy& policy, Build&& build) const {
    py::object result;
    py::gil_scoped_release release;
    // The UTF-8 of a str is valid (a lone surrogate has none: Utf8View raised already).
    native->EncodeAndConsume(
        text, policy,
        [&](const uint32_t* ids, size_t count) {
          py::gil_scoped_acquire acquire;
          result = build(ids, count);
        },
        codegen::bpe::Utf8::kKnownValid);
    return result;
  }
};

using IdArray = py::array_t<uint32_t, py::array::c_style>;

// Token ids from a Python list/tuple of int or a 1-D numpy integer array, checked: a
// non-int element is a TypeError naming its index, an id outside uint32 a ValueError.
std::vector<uint32_t> IdsFromPython(const py::handle& ids) {
  std::vector<uint32_t> out;
  if (py::isinstance<py::array>(ids)) {
    const auto arr = py::reinterpret_borrow<py::array>(ids);
    if (arr.ndim() != 1 || (arr.dtype().kind() != 'i' && arr.dtype().kind() != 'u')) {
      throw py::type_error("ids must be a 1-D integer array, got " +
                           std::string(py::str(arr.dtype())) + " with " +
                           std::to_string(arr.ndim()) + " dimensions");
    }
    const auto wide = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    if (!wide) throw py::error_already_set();
    out.resize(static_cast<size_t>(wide.size()));
    const int64_t* data = wide.data();
    for (size_t i = 0; i < out.size(); ++i) {
      if (data[i] < 0 || data[i] > UINT32_MAX) {
        throw std::invalid_argument("unknown token id " + std::to_string(data[i]) +
                                    " at position " + std::to_string(i));
      }
      out[i] = static_cast<uint32_t>(data[i]);
    }
    return out;
  }
  if (!PyList_Check(ids.ptr()) && !PyTuple_Check(ids.ptr())) {
    throw py::type_error(std::string("ids must be a list or tuple of int or a numpy array, got ") +
                         Py_TYPE(ids.ptr())->tp_name);
  }
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(ids);
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
  out.resize(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = items[i];
    if (!PyLong_Check(item) || PyBool_Check(item)) {
      throw py::type_error("ids[" + std::to_string(i) + "] must be int, got " +
                           Py_TYPE(item)->tp_name);
    }
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(item, &overflow);
    if (overflow != 0 || v < 0 || v > UINT32_MAX) {
      throw std::invalid_argument("unknown token id " + std::string(py::str(item)) +
                                  " at position " + std::to_string(i));
    }
    out[static_cast<size_t>(i)] = static_cast<uint32_t>(v);
  }
  return out;
}

// Checked ids -> the bytes they stand for, with the GIL released while concatenating.
std::string DecodeIds(const Tokenizer& tok, const py::handle& ids, bool skip_special) {
  const std::vector<uint32_t> v = IdsFromPython(ids);
  py::gil_scoped_release release;
  return tok.DecodeBytes(v.data(), v.size(), skip_special);
}

std::unique_ptr<BoundTokenizer> MakeTokenizer(const py::list& vocab, const py::list& merges,
                                         const py::list& added_tokens, bool add_prefix_space,
                                         bool use_regex, bool ignore_merges) {
  TokenizerSpec spec;
  spec.options.add_prefix_space = add_prefix_space;
  spec.options.use_regex = use_regex;
  spec.options.ignore_merges = ignore_merges;
  spec.vocab.reserve(vocab.size());
  for (const auto& item : vocab) {
    const auto pair = item.cast<std::pair<std::string, int64_t>>();
    if (pair.second < 0 || pair.second > UINT32_MAX) {
      throw std::invalid_argument("vocab token '" + pair.first + "' has invalid id " +
                                  std::to_string(pair.second));
    }
    spec.vocab.emplace_back(pair.first, static_cast<uint32_t>(pair.second));
  }
  spec.merges.reserve(merges.size());
  for (const auto& item : merges) spec.merges.push_back(item.cast<std::pair<std::string, std::string>>());
  for (const auto& item : added_tokens) {
    const auto t = item.cast<py::tuple>();
    if (t.size() != 6) throw std::invalid_argument("added token tuples have 6 fields");
    AddedToken token;
    token.content = t[0].cast<std::string>();
    const auto id = t[1].cast<int64_t>();
    if (id < 0 || id > UINT32_MAX) {
      throw std::invalid_argument("added token '" + token.content + "' has invalid id " +
                                  std::to_string(id));
    }
    token.id = static_cast<uint32_t>(id);
    token.special = t[2].cast<bool>();
    token.lstrip = t[3].cast<bool>();
    token.rstrip = t[4].cast<bool>();
    token.normalized = t[5].cast<bool>();
    spec.added_tokens.push_back(std::move(token));
  }
  auto bound = std::make_unique<BoundTokenizer>();
  {
    py::gil_scoped_release release;
    bound->native = std::make_unique<Tokenizer>(spec);
  }
  bound->ints.reserve(bound->native->VocabSize());
  for (uint32_t id = 0; id < bound->native->VocabSize(); ++id) bound->ints.push_back(py::int_(id));
  return bound;
}

}  // namespace

void InitBpe(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::length_error& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  py::class_<BoundTokenizer>(m, "BPETokenizer", R"doc(
Byte-level BPE tokenizer (native). Build it through codegen_core.Tokenizer, which loads
tokenizer.json / vocab.json + merges.txt and validates them; this class trusts its input
only as far as the checks in csrc/bpe go (they raise ValueError naming the bad entry).
)doc")
      .def(py::init(&MakeTokenizer), py::arg("vocab"), py::arg("merges"),
           py::arg("added_tokens"), py::arg("add_prefix_space") = false,
           py::arg("use_regex") = true, py::arg("ignore_merges") = false,
           "vocab: [(token, id)], merges: [(left, right)] spelled over the byte alphabet; "
           "added_tokens: [(content, id, special, lstrip, rstrip, normalized)].")
      .def(
          "encode",
          [](const BoundTokenizer& self, const py::str& text, const IdList& allowed_special,
             const IdList& disallowed_special) {
            // `text` holds a reference to the str for the whole call, so the view stays valid.
            const std::string_view view = Utf8View(text);
            const SpecialPolicy policy = MakePolicy(allowed_special, disallowed_special);
            return self.EncodeTo(view, policy, [&](const uint32_t* ids, size_t count) {
              return py::object(self.ToList(ids, count));
            });
          },
          py::arg("text"), py::arg("allowed_special") = std::vector<uint32_t>{},
          py::arg("disallowed_special") = py::none(),
          "Token ids of text. allowed_special: ids of the special tokens that may be produced "
          "(None = all); disallowed_special: ids that raise ValueError when not allowed (None = "
          "every special token not allowed); other special tokens are encoded as text.")
      .def(
          "encode_numpy",
          [](const BoundTokenizer& self, const py::str& text, const IdList& allowed_special,
             const IdList& disallowed_special) {
            const std::string_view view = Utf8View(text);
            const SpecialPolicy policy = MakePolicy(allowed_special, disallowed_special);
            return self.EncodeTo(view, policy, [&](const uint32_t* ids, size_t count) {
              IdArray out(static_cast<py::ssize_t>(count));
              std::copy(ids, ids + count, out.mutable_data());
              return py::object(std::move(out));
            });
          },
          py::arg("text"), py::arg("allowed_special") = std::vector<uint32_t>{},
          py::arg("disallowed_special") = py::none(),
          "encode() as a uint32 numpy array (no Python int per token).")
      .def(
          "encode_reference",
          [](const BoundTokenizer& self, const py::str& text, const IdList& allowed_special,
             const IdList& disallowed_special) {
            const std::string_view view = Utf8View(text);
            const SpecialPolicy policy = MakePolicy(allowed_special, disallowed_special);
            std::vector<uint32_t> ids;
            {
              py::gil_scoped_release release;
              self->EncodeReference(view, policy, &ids);
            }
            return self.ToList(ids);
          },
          py::arg("text"), py::arg("allowed_special") = std::vector<uint32_t>{},
          py::arg("disallowed_special") = py::none(),
          "encode() by the plain path (reference pre-tokenizer, uncached BPE): slow, for tests.")
      .def(
          "pre_tokenize_reference",
          [](const BoundTokenizer&, const py::str& text) {
            const std::string_view view = Utf8View(text);
            std::vector<std::pair<size_t, size_t>> pieces;
            codegen::bpe::SplitGpt2Reference(
                view, [&](size_t b, size_t e) { pieces.emplace_back(b, e); });
            return pieces;
          },
          py::arg("text"), "pre_tokenize() by the reference scanner (for tests).")
      .def(
          "encode_batch",
          [](const BoundTokenizer& self, const py::list& texts, const IdList& allowed_special,
             const IdList& disallowed_special, size_t num_threads, bool flat) -> py::object {
            // The views point into the str objects; `owners` holds a reference to each, so
            // they stay valid while the GIL is released even if another thread empties or
            // changes the caller's list meanwhile.
            std::vector<py::object> owners;
            std::vector<std::string_view> views;
            owners.reserve(texts.size());
            views.reserve(texts.size());
            for (size_t i = 0; i < texts.size(); ++i) {
              owners.push_back(texts[i]);
              try {
                views.push_back(Utf8View(owners.back()));
              } catch (py::type_error& e) {
                throw py::type_error("texts[" + std::to_string(i) + "]: " + e.what());
              }
            }
            const SpecialPolicy policy = MakePolicy(allowed_special, disallowed_special);
            if (flat) {
              Tokenizer::FlatIds out;
              {
                py::gil_scoped_release release;
                out = self->EncodeBatchFlat(views, policy, num_threads,
                                            codegen::bpe::Utf8::kKnownValid);
              }
              // The array owns the native buffer (no copy).
              // The capsule owns the array (and so a share of the pool it goes back to).
              auto held = std::make_unique<Tokenizer::OwnedIds>(std::move(out.ids));
              uint32_t* data = held->get();
              py::capsule owner(held.get(), [](void* p) {
                delete static_cast<Tokenizer::OwnedIds*>(p);
              });
              held.release();  // now the capsule's (if the capsule threw, still held's)
              IdArray ids(static_cast<py::ssize_t>(out.total), data, owner);
              py::array_t<int64_t> offsets(static_cast<py::ssize_t>(out.offsets.size()));
              std::copy(out.offsets.begin(), out.offsets.end(), offsets.mutable_data());
              return py::make_tuple(ids, offsets);
            }
            std::vector<std::vector<uint32_t>> results;
            {
              py::gil_scoped_release release;
              results = self->EncodeBatch(views, policy, num_threads);
            }
            if (!flat) {
              py::list out(results.size());
              for (size_t i = 0; i < results.size(); ++i) {
                out[i] = self.ToList(results[i]);
              }
              return std::move(out);
            }
            size_t total = 0;
            for (const auto& r : results) total += r.size();
            IdArray ids(static_cast<py::ssize_t>(total));
            py::array_t<int64_t> offsets(static_cast<py::ssize_t>(results.size() + 1));
            {
              uint32_t* dst = ids.mutable_data();
              int64_t* off = offsets.mutable_data();
              py::gil_scoped_release release;
              size_t pos = 0;
              off[0] = 0;
              for (size_t i = 0; i < results.size(); ++i) {
                std::copy(results[i].begin(), results[i].end(), dst + pos);
                pos += results[i].size();
                off[i + 1] = static_cast<int64_t>(pos);
              }
            }
            return py::make_tuple(ids, offsets);
          },
          py::arg("texts"), py::arg("allowed_special") = std::vector<uint32_t>{},
          py::arg("disallowed_special") = py::none(), py::arg("num_threads") = 0,
          py::arg("flat") = false,
          "Encodes a list of str on native threads (0 = all cores). flat=True returns "
          "(ids: uint32[total], offsets: int64[len(texts) + 1]).")
      .def(
          "decode_bytes",
          [](const BoundTokenizer& self, const py::handle& ids, bool skip_special) {
            return py::bytes(DecodeIds(*self, ids, skip_special));
          },
          py::arg("ids"), py::arg("skip_special_tokens") = false,
          "The bytes the ids stand for. ids: list/tuple of int or a 1-D integer numpy array.")
      .def(
          "decode",
          [](const BoundTokenizer& self, const py::handle& ids, bool skip_special) {
            const std::string out = DecodeIds(*self, ids, skip_special);
            PyObject* text = PyUnicode_DecodeUTF8(out.data(), static_cast<Py_ssize_t>(out.size()),
                                                  "replace");
            if (text == nullptr) throw py::error_already_set();
            return py::reinterpret_steal<py::str>(text);
          },
          py::arg("ids"), py::arg("skip_special_tokens") = false,
          "Text of ids; invalid UTF-8 becomes U+FFFD per maximal subpart, as HF does.")
      .def(
          "pre_tokenize",
          [](const BoundTokenizer&, const py::str& text) {
            const std::string_view view = Utf8View(text);
            std::vector<std::pair<size_t, size_t>> pieces;
            codegen::bpe::SplitGpt2(view, [&](size_t b, size_t e) { pieces.emplace_back(b, e); });
            return pieces;
          },
          py::arg("text"), "Byte ranges of the GPT-2 pre-tokenizer pieces of text (no added tokens).")
      .def(
          "token_to_id",
          [](const BoundTokenizer& self, const std::string& token) { return self->TokenToId(token); },
          py::arg("token"))
      .def(
          "id_to_token", [](const BoundTokenizer& self, uint32_t id) { return self->IdToToken(id); },
          py::arg("id"))
      .def(
          "is_special", [](const BoundTokenizer& self, uint32_t id) { return self->IsSpecial(id); },
          py::arg("id"))
      .def_property_readonly("vocab_size",
                             [](const BoundTokenizer& self) { return self->VocabSize(); });

  m.def(
      "unicode_classes",
      []() {
        // One byte per code point: 0 other, 1 letter, 2 number, 3 whitespace.
        py::array_t<uint8_t> out(0x110000);
        uint8_t* dst = out.mutable_data();
        for (uint32_t cp = 0; cp < 0x110000; ++cp) {
          dst[cp] = static_cast<uint8_t>(codegen::bpe::ClassOfCodepoint(cp));
        }
        return out;
      },
      "The pre-tokenizer's class table for every code point (for tests).");
}
