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
        std::vector<std::string> contents;
        std::vector<cd::Reason> reasons(n);
        std::string digests(n * cd::kDigestSize, '\0');
        {
          py::gil_scoped_release release;
          cd::ReadAndFilterFiles(paths, options, num_threads, &contents, reasons.data(),
                                 reinterpret_cast<uint8_t*>(digests.data()));
        }
        py::list docs(n);
        for (size_t i = 0; i < n; ++i) {
          PyObject* doc;
          if (reasons[i] != cd::Reason::kKeep) {
            doc = Py_NewRef(Py_None);
          } else if (as_text) {  // valid UTF-8 already checked: decoding cannot fail
            doc = PyUnicode_DecodeUTF8(contents[i].data(),
                                       static_cast<Py_ssize_t>(contents[i].size()), "strict");
          } else {
            doc = PyBytes_FromStringAndSize(contents[i].data(),
                                            static_cast<Py_ssize_t>(contents[i].size()));
          }
          if (doc == nullptr) throw py::error_already_set();
          std::string().swap(contents[i]);  // free as we go: peak is one copy, not two
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
