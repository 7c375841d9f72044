// CPU compute kernels for the JAX model: XLA FFI handlers handed to jax as capsules.
#include <pybind11/pybind11.h>

#include "linalg/dense.h"
#include "xla_ffi/dense_ffi.h"

namespace py = pybind11;

void InitKernels(py::module_& m) {
  m.def(
      "xla_ffi_targets",
      [] {
        py::dict targets;
        targets["codegen_core_dense"] = py::capsule(reinterpret_cast<void*>(&CodegenDenseCpu));
        return targets;
      },
      "XLA FFI handlers for jax.ffi.register_ffi_target(name, capsule, platform='cpu').");
  m.def("dense_uses_avx2", &codegen::linalg::DenseUsesAvx2,
        "True when the dense kernel runs its AVX2 + FMA path on this CPU.");
}
