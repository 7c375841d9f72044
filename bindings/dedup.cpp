// pybind11 bindings for csrc/dedup (near-duplicate detection). Only conversion lives here:
// Python str/bytes and numpy arrays in, numpy arrays out; the GIL is released around every
// bulk computation; std::invalid_argument from the core surfaces as ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dedup/lsh.h"
#include "dedup/minhash.h"
#include "dedup/near_dedup.h"
#include "dedup/shingle.h"

namespace py = pybind11;
namespace dd = codegen::dedup;

namespace {

// Views into the UTF-8 buffers of str (cached by CPython on the object) or bytes objects
// (immutable). `owners` holds a reference to every object, so the views stay valid for the
// whole bound call, including the part without the GIL, even if another thread mutates the
// caller's list meanwhile. Destroy a DocViews only with the GIL held.
struct DocViews {
  explicit DocViews(const py::sequence& docs);
  std::vector<std::string_view> views;
  std::vector<py::object> owners;
};

DocViews::DocViews(const py::sequence& docs) {
  views.reserve(docs.size());
  owners.reserve(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    py::object item = docs[i];
    if (PyUnicode_Check(item.ptr())) {
      Py_ssize_t size = 0;
      const char* data = PyUnicode_AsUTF8AndSize(item.ptr(), &size);
      if (data == nullptr) {
        PyErr_Clear();
        throw std::invalid_argument("document " + std::to_string(i) +
                                    " is not encodable as UTF-8 (lone surrogate?)");
      }
      views.emplace_back(data, static_cast<size_t>(size));
    } else if (PyBytes_Check(item.ptr())) {
      views.emplace_back(PyBytes_AS_STRING(item.ptr()),
                         static_cast<size_t>(PyBytes_GET_SIZE(item.ptr())));
    } else {
      throw std::invalid_argument("document " + std::to_string(i) + " must be str or bytes, got " +
                                  std::string(py::str(py::type::handle_of(item).attr("__name__"))));
    }
    owners.push_back(std::move(item));
  }
}

template <typename T>
py::array_t<T> Require2D(const py::array& arr, const char* name, py::ssize_t cols = -1) {
  if (!arr.dtype().is(py::dtype::of<T>())) {
    throw std::invalid_argument(std::string(name) + " must have dtype " +
                                std::string(py::str(py::dtype::of<T>())) + ", got " +
                                std::string(py::str(arr.dtype())));
  }
  if (arr.ndim() != 2 || (cols >= 0 && arr.shape(1) != cols)) {
    throw std::invalid_argument(std::string(name) + " must be a 2-D array" +
                                (cols >= 0 ? " with " + std::to_string(cols) + " columns" : ""));
  }
  return py::array_t<T, py::array::c_style>::ensure(arr);  // copies only if not contiguous
}

template <typename T>
py::array_t<T> Require1D(const py::array& arr, const char* name, py::ssize_t size) {
  if (!arr.dtype().is(py::dtype::of<T>())) {
    throw std::invalid_argument(std::string(name) + " must have dtype " +
                                std::string(py::str(py::dtype::of<T>())));
  }
  if (arr.ndim() != 1 || arr.shape(0) != size) {
    throw std::invalid_argument(std::string(name) + " must be a 1-D array of length " +
                                std::to_string(size));
  }
  return py::array_t<T, py::array::c_style>::ensure(arr);
}

std::vector<dd::DocPair> PairsFrom(const py::array& pairs) {
  auto p = Require2D<uint32_t>(pairs, "pairs", 2);
  std::vector<dd::DocPair> out(static_cast<size_t>(p.shape(0)));
  const uint32_t* d = p.data();
  for (size_t k = 0; k < out.size(); ++k) out[k] = {d[2 * k], d[2 * k + 1]};
  return out;
}

py::array_t<uint32_t> PairsTo(const std::vector<dd::DocPair>& pairs) {
  py::array_t<uint32_t> out({static_cast<py::ssize_t>(pairs.size()), py::ssize_t{2}});
  uint32_t* d = out.mutable_data();
  for (size_t k = 0; k < pairs.size(); ++k) {
    d[2 * k] = pairs[k].first;
    d[2 * k + 1] = pairs[k].second;
  }
  return out;
}

dd::Scheme SchemeFrom(const std::string& name) {
  if (name == "permutations") return dd::Scheme::kPermutations;
  if (name == "oph") return dd::Scheme::kOnePermutation;
  throw std::invalid_argument("scheme must be 'permutations' or 'oph', got '" + name + "'");
}

py::array_t<double> ToArray(const std::vector<double>& v) {
  py::array_t<double> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

}  // namespace

void InitDedup(py::module_& m) {
  m.def(
      "minhash_params",
      [](int num_perm, uint64_t seed) {
        const dd::MinHasher hasher(num_perm, seed);
        const auto a = hasher.a(), b = hasher.b();
        py::array_t<uint64_t> pa(static_cast<py::ssize_t>(a.size())),
            pb(static_cast<py::ssize_t>(b.size()));
        std::copy(a.begin(), a.end(), pa.mutable_data());
        std::copy(b.begin(), b.end(), pb.mutable_data());
        return py::make_tuple(pa, pb);
      },
      py::arg("num_perm"), py::arg("seed"),
      "(a, b) uint64 arrays of the hash family h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32.");

  m.def(
      "shingle_set",
      [](const py::object& doc, int ngram) {
        const DocViews docs(py::make_tuple(doc));
        std::vector<uint32_t> set;
        {
          py::gil_scoped_release release;
          dd::ShingleScratch scratch;
          dd::SortedShingleSet(docs.views[0], dd::ShingleOptions{ngram}, &scratch, &set);
        }
        py::array_t<uint32_t> out(static_cast<py::ssize_t>(set.size()));
        std::copy(set.begin(), set.end(), out.mutable_data());
        return out;
      },
      py::arg("doc"), py::arg("ngram"), "Sorted uint32 shingle hashes of one document.");

  m.def(
      "minhash_signatures",
      [](const py::sequence& docs, int num_perm, uint64_t seed, int ngram, int num_threads,
         const std::string& scheme) {
        const dd::MinHasher hasher(num_perm, seed, SchemeFrom(scheme));
        const DocViews held(docs);
        const auto& views = held.views;
        const auto n = static_cast<py::ssize_t>(views.size());
        py::array_t<uint32_t> sigs({n, static_cast<py::ssize_t>(num_perm)});
        py::array_t<uint32_t> sizes(n);
        uint32_t* sig_ptr = sigs.mutable_data();
        uint32_t* size_ptr = sizes.mutable_data();
        {
          py::gil_scoped_release release;
          dd::ComputeSignatures(views, dd::ShingleOptions{ngram}, hasher, num_threads, sig_ptr,
                                size_ptr);
        }
        return py::make_tuple(sigs, sizes);
      },
      py::arg("docs"), py::arg("num_perm"), py::arg("seed"), py::arg("ngram"),
      py::arg("num_threads"), py::arg("scheme") = "permutations",
      "(signatures uint32 [n, num_perm], shingle-set sizes uint32 [n]) of str/bytes documents.");

  m.def(
      "lsh_optimal_params",
      [](double threshold, int num_perm, double fp_weight, double fn_weight) {
        dd::LshParams p;
        {
          py::gil_scoped_release release;
          p = dd::OptimalLshParams(threshold, num_perm, fp_weight, fn_weight);
        }
        return std::make_pair(p.bands, p.rows);
      },
      py::arg("threshold"), py::arg("num_perm"), py::arg("fp_weight"), py::arg("fn_weight"),
      "(bands, rows) minimising fp_weight * FP area + fn_weight * FN area (as datasketch).");
  m.def(
      "lsh_error_areas",
      [](double threshold, int bands, int rows) {
        return dd::LshErrorAreas(threshold, bands, rows);
      },
      py::arg("threshold"), py::arg("bands"), py::arg("rows"));

  m.def(
      "band_keys",
      [](const py::array& sigs_in, int bands, int rows, int num_threads) {
        auto sigs = Require2D<uint32_t>(sigs_in, "signatures");
        const auto n = static_cast<size_t>(sigs.shape(0));
        const int num_perm = static_cast<int>(sigs.shape(1));
        if (bands < 1 || rows < 1 || bands > num_perm || rows > num_perm ||
            bands * rows > num_perm) {
          throw std::invalid_argument("LSH bands * rows must be in [1, num_perm=" +
                                      std::to_string(num_perm) + "]");
        }
        py::array_t<uint64_t> keys({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(bands)});
        const uint32_t* s = sigs.data();
        uint64_t* k = keys.mutable_data();
        {
          py::gil_scoped_release release;
          dd::ComputeBandKeys(s, n, num_perm, dd::LshParams{bands, rows}, num_threads, k);
        }
        return keys;
      },
      py::arg("signatures"), py::arg("bands"), py::arg("rows"), py::arg("num_threads"),
      "uint64 [n, bands] LSH band keys; concatenate them across shards before clustering.");

  m.def(
      "candidate_pairs",
      [](const py::array& keys_in, const py::object& skip_in, size_t max_bucket,
         int num_threads) {
        auto keys = Require2D<uint64_t>(keys_in, "band_keys");
        const auto n = static_cast<size_t>(keys.shape(0));
        const int bands = static_cast<int>(keys.shape(1));
        py::array_t<uint8_t> skip;
        const uint8_t* skip_ptr = nullptr;
        if (!skip_in.is_none()) {
          skip = Require1D<uint8_t>(skip_in.cast<py::array>(), "skip", keys.shape(0));
          skip_ptr = skip.data();
        }
        std::vector<dd::DocPair> pairs;
        {
          py::gil_scoped_release release;
          pairs = dd::CandidatePairs(keys.data(), n, bands, skip_ptr, max_bucket, num_threads);
        }
        return PairsTo(pairs);
      },
      py::arg("band_keys"), py::arg("skip"), py::arg("max_bucket"), py::arg("num_threads"),
      "uint32 [m, 2] sorted candidate pairs (i < j) sharing at least one band key.");

  m.def(
      "signature_similarity",
      [](const py::array& sigs_in, const py::array& pairs_in, int num_threads) {
        auto sigs = Require2D<uint32_t>(sigs_in, "signatures");
        const auto pairs = PairsFrom(pairs_in);
        std::vector<double> sim;
        {
          py::gil_scoped_release release;
          sim = dd::SignatureSimilarity(sigs.data(), static_cast<size_t>(sigs.shape(0)),
                                        static_cast<int>(sigs.shape(1)), pairs, num_threads);
        }
        return ToArray(sim);
      },
      py::arg("signatures"), py::arg("pairs"), py::arg("num_threads"));

  m.def(
      "exact_jaccard",
      [](const py::sequence& docs, const py::array& pairs_in, int ngram, int num_threads) {
        const DocViews held(docs);
        const auto& views = held.views;
        const auto pairs = PairsFrom(pairs_in);
        std::vector<double> sim;
        {
          py::gil_scoped_release release;
          sim = dd::ExactJaccard(views, dd::ShingleOptions{ngram}, pairs, num_threads);
        }
        return ToArray(sim);
      },
      py::arg("docs"), py::arg("pairs"), py::arg("ngram"), py::arg("num_threads"));

  m.def(
      "cluster_roots",
      [](size_t n, const py::array& pairs_in, const py::object& keep_in) {
        const auto pairs = PairsFrom(pairs_in);
        py::array_t<uint8_t> keep;
        const uint8_t* keep_ptr = nullptr;
        if (!keep_in.is_none()) {
          keep = Require1D<uint8_t>(keep_in.cast<py::array>(), "keep",
                                    static_cast<py::ssize_t>(pairs.size()));
          keep_ptr = keep.data();
        }
        std::vector<uint32_t> roots;
        {
          py::gil_scoped_release release;
          roots = dd::ClusterRoots(n, pairs, keep_ptr);
        }
        py::array_t<uint32_t> out(static_cast<py::ssize_t>(roots.size()));
        std::copy(roots.begin(), roots.end(), out.mutable_data());
        return out;
      },
      py::arg("n"), py::arg("pairs"), py::arg("keep"),
      "uint32 [n]: the smallest document index of each document's cluster.");
}
