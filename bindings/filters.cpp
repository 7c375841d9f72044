// pybind11 bindings for csrc/data/filters (the file filters and the exact-dedup content
// hash). Conversion only: str/bytes/paths in; reason codes, digests and contents out. The
// GIL is released around reading, filtering and hashing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/parallel.h"
#include "data/filters.h"
#include "data/walk.h"

namespace py = pybind11;
namespace cd = codegen::data;

namespace {

cd::FilterOptions Options(uint64_t max_file_bytes, double max_mean_line_length,
                          double max_line_length, double max_digit_fraction) {
  cd::FilterOptions o;
  o.max_file_bytes = max_file_bytes;
  o.max_mean_line_length = max_mean_line_length;
  o.max_line_length = max_line_length;
  o.max_digit_fraction = max_digit_fraction;
  return o;
}

// os.fsencode of a str (surrogate escapes back to bytes), or the bytes themselves.
std::string FsEncode(const py::handle& item) {
  if (PyBytes_Check(item.ptr())) {
    return std::string(PyBytes_AS_STRING(item.ptr()),
                       static_cast<size_t>(PyBytes_GET_SIZE(item.ptr())));
  }
  auto raw = py::reinterpret_steal<py::object>(PyUnicode_EncodeFSDefault(item.ptr()));
  if (!raw) throw py::error_already_set();
  return std::string(PyBytes_AS_STRING(raw.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(raw.ptr())));
}

// New references to bytes objects being filled; released (with the GIL held) on exit.
struct OwnedBuffers {
  explicit OwnedBuffers(size_t n) : items(n, nullptr) {}
  ~OwnedBuffers() {
    for (PyObject* item : items) Py_XDECREF(item);
  }
  OwnedBuffers(const OwnedBuffers&) = delete;
  OwnedBuffers& operator=(const OwnedBuffers&) = delete;
  std::vector<PyObject*> items;
};

py::bytes AsBytes(const void* data, size_t size) {
  return py::reinterpret_steal<py::bytes>(
      PyBytes_FromStringAndSize(static_cast<const char*>(data), static_cast<Py_ssize_t>(size)));
}

}  // namespace

void InitFilters(py::module_& m) {
  m.def(
      "filter_reason_names",
      []() {
        std::vector<std::string> names;
        for (int r = 0; r < cd::kNumReasons; ++r) {
          names.emplace_back(cd::ReasonName(static_cast<cd::Reason>(r)));
        }
        return names;
      },
      "The reason of each code filter_documents/read_filter_files return ('' = keep).");

  m.def(
      "filter_documents",
      [](const py::sequence& docs, uint64_t max_file_bytes, double max_mean_line_length,
         double max_line_length, double max_digit_fraction, int num_threads) {
        const size_t n = docs.size();
        std::vector<std::string_view> views;
        std::vector<uint8_t> text_only(n, 0);
        std::vector<py::object> owners;  // keep every buffer alive while the GIL is released
        views.reserve(n);
        owners.reserve(n);
        for (size_t i = 0; i < n; ++i) {
          py::object item = docs[i];
          if (PyUnicode_Check(item.ptr())) {
            text_only[i] = 1;
            Py_ssize_t size = 0;
            const char* data = PyUnicode_AsUTF8AndSize(item.ptr(), &size);
            if (data == nullptr) {  // lone surrogates: encode them as Python's surrogatepass
              PyErr_Clear();
              item = py::reinterpret_steal<py::object>(
                  PyUnicode_AsEncodedString(item.ptr(), "utf-8", "surrogatepass"));
              if (!item) throw py::error_already_set();
              data = PyBytes_AS_STRING(item.ptr());
              size = PyBytes_GET_SIZE(item.ptr());
            }
            views.emplace_back(data, static_cast<size_t>(size));
          } else if (PyBytes_Check(item.ptr())) {
            views.emplace_back(PyBytes_AS_STRING(item.ptr()),
                               static_cast<size_t>(PyBytes_GET_SIZE(item.ptr())));
          } else {
            throw std::invalid_argument(
                "document " + std::to_string(i) + " must be str or bytes, got " +
                std::string(py::str(py::type::handle_of(item).attr("__name__"))));
          }
          owners.push_back(std::move(item));
        }
        const auto options = Options(max_file_bytes, max_mean_line_length, max_line_length,
                                     max_digit_fraction);
        std::vector<cd::Reason> reasons(n);
        std::string digests(n * cd::kDigestSize, '\0');
        {
          py::gil_scoped_release release;
          cd::FilterDocuments(views, text_only.data(), options, num_threads, reasons.data(),
                              reinterpret_cast<uint8_t*>(digests.data()));
        }
        return py::make_tuple(AsBytes(reasons.data(), n), AsBytes(digests.data(), digests.size()));
      },
      py::arg("docs"), py::arg("max_file_bytes"), py::arg("max_mean_line_length"),
      py::arg("max_line_length"), py::arg("max_digit_fraction"), py::arg("num_threads"),
      "(reason codes: bytes [n], digests: bytes [16 n]) of str (content checks) or bytes "
      "(byte-level checks too) documents; a dropped document's digest is 16 zero bytes.");

  m.def(
      "read_filter_files",
      [](const py::sequence& paths_in, uint64_t max_file_bytes, double max_mean_line_length,
         double max_line_length, double max_digit_fraction, int num_threads, bool as_text) {
        const size_t n = paths_in.size();
        std::vector<std::string> paths;
        paths.reserve(n);
        for (size_t i = 0; i < n; ++i) paths.push_back(FsEncode(paths_in[i]));
        const auto options = Options(max_file_bytes, max_mean_line_length, max_line_length,
                                     max_digit_fraction);
        std::vector<cd::Reason> reasons(n);
        std::vector<uint64_t> sizes(n);
        std::string digests(n * cd::kDigestSize, '\0');
        auto* digest_ptr = reinterpret_cast<uint8_t*>(digests.data());
        {
          py::gil_scoped_release release;
          codegen::ParallelFor(n, 64, num_threads, [&](size_t begin, size_t end) {
            cd::DirCache dirs;  // inputs come directory by directory
            for (size_t i = begin; i < end; ++i) {
              reasons[i] = cd::StatFile(paths[i], options.max_file_bytes, &sizes[i], &dirs);
            }
          });
        }
        // Files are read straight into bytes objects made for their stat() size: no copy.
        OwnedBuffers bufs(n);
        std::vector<char*> data(n, nullptr);
        for (size_t i = 0; i < n; ++i) {
          if (reasons[i] != cd::Reason::kKeep) continue;
          bufs.items[i] = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(sizes[i]));
          if (bufs.items[i] == nullptr) throw py::error_already_set();
          data[i] = PyBytes_AS_STRING(bufs.items[i]);
        }
        std::vector<uint8_t> changed(n, 0);  // size differs from stat's: read again below
        {
          py::gil_scoped_release release;
          codegen::ParallelFor(n, 32, num_threads, [&](size_t begin, size_t end) {
            cd::DirCache dirs;
            std::vector<std::string_view> views(end - begin);
            std::vector<cd::Reason> hashed(end - begin, cd::Reason::kUnreadable);
            for (size_t i = begin; i < end; ++i) {
              if (reasons[i] != cd::Reason::kKeep) continue;
              const cd::Reason read = cd::ReadExact(paths[i], sizes[i], data[i], &dirs);
              if (read == cd::Reason::kTooLarge) {
                changed[i] = 1;
              } else if (read != cd::Reason::kKeep) {
                reasons[i] = read;
              } else {
                views[i - begin] = std::string_view(data[i], static_cast<size_t>(sizes[i]));
                reasons[i] = hashed[i - begin] = cd::BytesReason(views[i - begin], options);
              }
            }
            // Hashed together: several documents at a time (csrc/data/blake2b.h).
            cd::DigestKept(views.data(), hashed.data(), end - begin,
                           digest_ptr + cd::kDigestSize * begin);
          });
        }
        for (size_t i = 0; i < n; ++i) {  // rare: the file changed between stat and read
          if (!changed[i]) continue;
          std::string doc;
          {
            py::gil_scoped_release release;
            reasons[i] = cd::ReadFileBytes(paths[i], options.max_file_bytes, &doc);
            if (reasons[i] == cd::Reason::kKeep) reasons[i] = cd::BytesReason(doc, options);
            if (reasons[i] == cd::Reason::kKeep) {
              cd::ContentDigest(doc, digest_ptr + cd::kDigestSize * i);
            }
          }
          Py_CLEAR(bufs.items[i]);
          if (reasons[i] != cd::Reason::kKeep) continue;
          bufs.items[i] = PyBytes_FromStringAndSize(doc.data(), static_cast<Py_ssize_t>(doc.size()));
          if (bufs.items[i] == nullptr) throw py::error_already_set();
        }
        py::list docs(n);
        for (size_t i = 0; i < n; ++i) {
          PyObject* doc;
          if (reasons[i] != cd::Reason::kKeep) {
            Py_CLEAR(bufs.items[i]);
            doc = Py_NewRef(Py_None);
          } else if (as_text) {  // valid UTF-8 already checked: decoding cannot fail
            doc = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(bufs.items[i]),
                                       PyBytes_GET_SIZE(bufs.items[i]), "strict");
            Py_CLEAR(bufs.items[i]);
            if (doc == nullptr) throw py::error_already_set();
          } else {
            doc = bufs.items[i];
            bufs.items[i] = nullptr;  // the list owns it now
          }
          PyList_SET_ITEM(docs.ptr(), static_cast<Py_ssize_t>(i), doc);
        }
        return py::make_tuple(AsBytes(reasons.data(), n), AsBytes(digests.data(), digests.size()),
                              docs);
      },
      py::arg("paths"), py::arg("max_file_bytes"), py::arg("max_mean_line_length"),
      py::arg("max_line_length"), py::arg("max_digit_fraction"), py::arg("num_threads"),
      py::arg("as_text"),
      "(reason codes: bytes [n], digests: bytes [16 n], docs: list of str (as_text) or bytes, "
      "None where dropped) of whole files read, filtered and hashed off the GIL.");

  m.def(
      "walk_files",
      [](const py::object& root, const py::object& prefix, const py::sequence& exclude_in)
          -> py::object {
        const std::string root_b = FsEncode(root), prefix_b = FsEncode(prefix);
        std::vector<std::string> exclude;
        for (size_t i = 0; i < exclude_in.size(); ++i) exclude.push_back(FsEncode(exclude_in[i]));
        std::vector<std::string> paths;
        bool ok;
        {
          py::gil_scoped_release release;
          ok = cd::WalkFiles(root_b, prefix_b, exclude, &paths);
        }
        if (!ok) return py::none();
        py::list out(paths.size());
        for (size_t i = 0; i < paths.size(); ++i) {
          PyObject* path = PyUnicode_DecodeFSDefaultAndSize(
              paths[i].data(), static_cast<Py_ssize_t>(paths[i].size()));
          if (path == nullptr) throw py::error_already_set();
          PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), path);
        }
        return std::move(out);
      },
      py::arg("root"), py::arg("prefix"), py::arg("exclude_dirs"),
      "Files under root in sorted os.walk order (followlinks=False, exclude_dirs skipped), "
      "each as prefix + relative path; None if a name is not valid UTF-8.");
}
