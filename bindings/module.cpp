// The codegen_core._core extension module: registers one submodule area per file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void InitBpe(py::module_& m);
void InitDedup(py::module_& m);
void InitFilters(py::module_& m);
void InitKernels(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "Native core of codegen_core (tokenizer, dedup, CPU kernels). Use the Python wrappers instead.";
  InitBpe(m);
  InitDedup(m);
  InitFilters(m);
  InitKernels(m);
}
