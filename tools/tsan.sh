#!/usr/bin/env bash
# ThreadSanitizer: the unit tests, then the delivery, access, commands and BLE
# integration suites against the daemon built with -fsanitize=thread. The
# daemon's reports go to files and are sorted by tools/tsan_reports.py (why:
# there); any report that is not a hand-off through CAF's mailbox fails the
# run. About 20 minutes on 2 cores with a fresh build. Not part of
# tools/test.sh.
#   tools/tsan.sh                 everything
#   tools/tsan.sh test_access     one integration suite
set -euo pipefail
cd "$(dirname "$0")/.."
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(test_delivery test_access test_commands test_ble)
bash tools/install-deps.sh
cmake --preset tsan >/dev/null
cmake --build --preset tsan
ctest --preset tsan
logs=$(mktemp -d /tmp/lockbridge-tsan-XXXXXX)
export LOCKBRIDGE_BUILD="$PWD/build-tsan"
export LOCKBRIDGE_TEST_TIME_SCALE=5
# The test's own tools (checker, lock simulator) are built with TSan too; they
# report nothing. The daemon writes its reports under $logs.
export TSAN_OPTIONS="report_bugs=0"
export LOCKBRIDGE_GATEWAY_TSAN_OPTIONS="log_path=$logs/lockbridge halt_on_error=0 history_size=4 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"
failed=0
for suite in "${suites[@]}"; do
  echo "tsan: $suite"
  /usr/bin/python3 -W ignore "tests/integration/$suite.py" || failed=1
done
shopt -s nullglob
reports=("$logs"/lockbridge.*)
if [ ${#reports[@]} -gt 0 ]; then
  /usr/bin/python3 tools/tsan_reports.py "${reports[@]}" || failed=1
else
  echo "tsan: no report from the daemon"
fi
echo "tsan: reports kept in $logs"
exit $failed
