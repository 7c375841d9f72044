// CPU compute kernels for the JAX model: XLA FFI handlers handed to jax as capsules.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "linalg/dense.h"
#include "linalg/reduce.h"
#include "linalg/stream.h"
#include "xla_ffi/dense_ffi.h"
#include "xla_ffi/reduce_ffi.h"

namespace py = pybind11;

void InitKernels(py::module_& m) {
  m.def(
      "xla_ffi_targets",
      [] {
        py::dict targets;
        targets["codegen_core_dense"] = py::capsule(reinterpret_cast<void*>(&CodegenDenseCpu));
        targets["codegen_core_sum_squares"] =
            py::capsule(reinterpret_cast<void*>(&CodegenSumSquaresCpu));
        targets["codegen_core_transpose"] =
            py::capsule(reinterpret_cast<void*>(&CodegenTransposeCpu));
        targets["codegen_core_row_logsumexp"] =
            py::capsule(reinterpret_cast<void*>(&CodegenRowLogSumExpCpu));
        return targets;
      },
      "XLA FFI handlers for jax.ffi.register_ffi_target(name, capsule, platform='cpu').");
  m.def("dense_uses_avx2", &codegen::linalg::DenseUsesAvx2,
        "True when the dense kernel runs its AVX2 + FMA path on this CPU.");
  m.def("reduce_uses_avx2", &codegen::linalg::ReduceUsesAvx2,
        "True when the sum-of-squares, transpose and row log-sum-exp kernels run their AVX2 paths\n"
        "on this CPU.");
  m.def(
      "stream_read",
      [](const py::array& buffer, int num_threads, int reps) {
        if (!(buffer.flags() & py::array::c_style)) {
          throw std::invalid_argument("stream_read: buffer must be a C-contiguous array");
        }
        if (num_threads < 0) {
          throw std::invalid_argument("stream_read: num_threads must be >= 0 (0: all cores), got " +
                                      std::to_string(num_threads));
        }
        const void* data = buffer.data();
        const auto bytes = static_cast<size_t>(buffer.nbytes());
        codegen::linalg::StreamReadResult result;
        {
          // `buffer` holds a reference for the whole call, so the memory stays valid.
          py::gil_scoped_release release;
          result = codegen::linalg::StreamRead(data, bytes, num_threads, reps);
        }
        return py::make_tuple(result.checksum, result.seconds);
      },
      py::arg("buffer"), py::arg("num_threads") = 0, py::arg("reps") = 5,
      "STREAM-style read bandwidth: `reps` timed passes that read every byte of a C-contiguous\n"
      "array once with num_threads threads (0: all cores; AVX2 loads where the CPU has them).\n"
      "Returns (checksum, seconds per pass): the sum mod 2**64 of the bytes as little-endian\n"
      "64-bit words (last partial word zero-padded), and each pass's wall time; bytes read per\n"
      "second is buffer.nbytes / seconds.");
}
