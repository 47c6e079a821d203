#!/usr/bin/env bash
# Build the llama-cpp-python wheel for one llama.cpp backend into native/wheelhouse/<backend>/.
#   native/build.sh cpu      portable x86-64 baseline + AVX2/FMA/F16C (the default)
#   native/build.sh cuda     GGML_CUDA (CUDA_ARCHITECTURES="86;89" by default)
#   native/build.sh metal    macOS Metal
# `make install` calls `native/build.sh cpu` once; the wheel is then reused.
#   native/build.sh BACKEND --print-flags   only print the CMake flags (llama-server's build
#                                           uses the same ones)
# WHEELHOUSE=/abs/dir puts the wheel elsewhere (the GPU check builds into its own folder).
set -euo pipefail
cd "$(dirname "$0")"
backend="${1:-cpu}"
version="0.3.36"
python="${PYTHON:-python3}"
out="${WHEELHOUSE:-wheelhouse/${backend}}"
case "$backend" in
  cpu)
    # Not GGML_NATIVE: a native build bakes in whatever the build machine has (on CPUs with
    # AMX it also enables AMX kernels that crash in some VMs) and is not portable.
    flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    [ "$(uname -m)" = "x86_64" ] || flags="-DGGML_NATIVE=OFF"
    ;;
  cuda)
    flags="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-86;89} -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    # cuBLAS outside the toolkit (e.g. unpacked from the nvidia-cublas wheel): CUBLAS_HOME holds
    # lib/libcublas.so.13, lib/libcublasLt.so.13 and include/cublas_v2.h.
    if [ -n "${CUBLAS_HOME:-}" ]; then
      flags="$flags -DCUDA_cublas_LIBRARY=$(ls "$CUBLAS_HOME"/lib/libcublas.so* | head -1)"
      flags="$flags -DCUDA_cublasLt_LIBRARY=$(ls "$CUBLAS_HOME"/lib/libcublasLt.so* | head -1)"
      flags="$flags -DCMAKE_CUDA_FLAGS=-I$CUBLAS_HOME/include -DCMAKE_CXX_FLAGS=-I$CUBLAS_HOME/include"
    fi
    # libcuda.so comes with the GPU driver, not the toolkit. On a build machine without a driver
    # (and a toolkit without lib64/stubs) link against an empty stub with the driver's soname:
    # the real libcuda.so.1 resolves the symbols at run time, exactly as with NVIDIA's stub.
    if [ -n "${CUDA_DRIVER_LIBRARY:-}" ]; then
      flags="$flags -DCUDA_cuda_driver_LIBRARY=$CUDA_DRIVER_LIBRARY"
    elif ! ldconfig -p | grep -q 'libcuda\.so\.1' && ! ls "$(dirname "$(command -v nvcc)")"/../lib64/stubs/libcuda.so >/dev/null 2>&1; then
      stub="${TMPDIR:-/tmp}/appliance-cuda-stub/libcuda.so"
      mkdir -p "$(dirname "$stub")" && echo "" > "${stub%.so}.c"
      cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "${stub%.so}.c"
      flags="$flags -DCUDA_cuda_driver_LIBRARY=$stub"
    fi
    ;;
  metal)
    flags="-DGGML_METAL=ON -DGGML_NATIVE=OFF"
    ;;
  *)
    echo "usage: native/build.sh cpu|cuda|metal" >&2; exit 2 ;;
esac
flags="$flags -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF ${EXTRA_CMAKE_ARGS:-}"
if [ "${2:-}" = "--print-flags" ]; then
  echo "$flags"
  exit 0
fi
if ls "$out"/llama_cpp_python-${version}-*.whl >/dev/null 2>&1 && [ "$(cat "$out/FLAGS" 2>/dev/null)" = "$flags" ]; then
  echo "native: $out already holds llama-cpp-python ${version} built with: $flags"
  exit 0
fi
rm -rf "$out" && mkdir -p "$out"
echo "native: building llama-cpp-python ${version} ($backend): $flags"
# NATIVE_PIP_ARGS=-v shows each compiled target (useful to follow the long CUDA build).
CMAKE_ARGS="$flags" "$python" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python ${NATIVE_PIP_ARGS:-} \
  -w "$out" "llama-cpp-python==${version}"
echo "$flags" > "$out/FLAGS"
