#!/usr/bin/env bash
# Build the llama-cpp-python wheel for one llama.cpp backend into native/wheelhouse/<backend>/.
#   native/build.sh cpu      portable x86-64 baseline + AVX2/FMA/F16C (the default)
#   native/build.sh cuda     GGML_CUDA (CUDA_ARCHITECTURES="86;89" by default)
#   native/build.sh metal    macOS Metal
# `make install` calls `native/build.sh cpu` once; the wheel is then reused.
set -euo pipefail
cd "$(dirname "$0")"
backend="${1:-cpu}"
version="0.3.36"
python="${PYTHON:-python3}"
out="wheelhouse/${backend}"
case "$backend" in
  cpu)
    # Not GGML_NATIVE: a native build bakes in whatever the build machine has (on CPUs with
    # AMX it also enables AMX kernels that crash in some VMs) and is not portable.
    flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    [ "$(uname -m)" = "x86_64" ] || flags="-DGGML_NATIVE=OFF"
    ;;
  cuda)
    flags="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-86;89} -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    ;;
  metal)
    flags="-DGGML_METAL=ON -DGGML_NATIVE=OFF"
    ;;
  *)
    echo "usage: native/build.sh cpu|cuda|metal" >&2; exit 2 ;;
esac
flags="$flags -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF ${EXTRA_CMAKE_ARGS:-}"
if ls "$out"/llama_cpp_python-${version}-*.whl >/dev/null 2>&1 && [ "$(cat "$out/FLAGS" 2>/dev/null)" = "$flags" ]; then
  echo "native: $out already holds llama-cpp-python ${version} built with: $flags"
  exit 0
fi
rm -rf "$out" && mkdir -p "$out"
echo "native: building llama-cpp-python ${version} ($backend): $flags"
CMAKE_ARGS="$flags" "$python" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
  -w "$out" "llama-cpp-python==${version}"
echo "$flags" > "$out/FLAGS"
