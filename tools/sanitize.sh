#!/usr/bin/env bash
# Build lstmcpp with AddressSanitizer and UndefinedBehaviorSanitizer and run the core tests under
# them, once per instruction set this CPU supports (LSTMCPP_ISA; the tests that take each set in
# turn then take only that one). Any ASan or UBSan report fails
# the run (they abort the process, and print past pytest's capture: --capture=sys); so does any
# leak whose allocation passes through lstmcpp's extension (Python itself leaves memory
# allocated at exit, so leaks elsewhere are not ours). Then the team's handshakes run under
# ThreadSanitizer (tools/team_tsan.cpp).
#
#   tools/sanitize.sh                 # the reduced selection CI runs
#   tools/sanitize.sh tests/          # anything pytest takes
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet ".[test]" -C cmake.define.LSTMCPP_SANITIZE=address,undefined

selection=("$@")
if [ ${#selection[@]} -eq 0 ]; then
  selection=(tests/test_core.py tests/test_lengths.py tests/test_state.py tests/test_errors.py tests/test_threads.py
             tests/test_reliability.py tests/test_properties.py tests/test_training.py tests/test_quantized.py tests/test_streams.py
             tests/test_variants.py
             -k "not gil_is_released")
fi
runtime="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
isas=$(cd /tmp && LD_PRELOAD="$runtime" ASAN_OPTIONS=detect_leaks=0 python -c \
  "from lstmcpp import _core; print(' '.join(n for n in _core.isa_names() if _core.isa_supported(n)))")
status=0
for isa in $isas; do
  logs="$work/logs-$isa"
  mkdir -p "$logs"
  echo "sanitize: ASan + UBSan, LSTMCPP_ISA=$isa"
  if ! LD_PRELOAD="$runtime" LSTMCPP_ISA="$isa" \
      ASAN_OPTIONS="detect_leaks=1:log_path=$logs/asan:strict_string_checks=1:detect_stack_use_after_return=1" \
      LSAN_OPTIONS="exitcode=0" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
      python -m pytest -q -p no:cacheprovider --capture=sys "${selection[@]}"; then
    status=1
  fi
  python tools/sanitizer_reports.py "$logs" || status=1
done

# The team's handshakes under ThreadSanitizer (a C++ program: Python's and NumPy's own threads
# would drown its reports).
echo "sanitize: TSan, the team"
if ! g++ -std=c++17 -O1 -g -fsanitize=thread -fopenmp -Icpp tools/team_tsan.cpp cpp/core/team.cpp -o "$work/team_tsan" -lpthread \
    || ! TSAN_OPTIONS="halt_on_error=1" "$work/team_tsan"; then
  status=1
fi
rm -rf "$work"
exit $status
