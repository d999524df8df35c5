#!/usr/bin/env python3
"""Functions longer than 80 lines in actors/, transports/ and config/.

Runs clang-tidy's readability-function-size check (lines including blank
lines and comments, as clang-tidy counts them) over every .cpp of those
folders with the build's compile_commands.json, and compares with the
functions known to be longer (KNOWN below, each with why). It fails when a
function not listed is over the limit, or a listed one grew: the list may
only shrink. Exit 77 (skipped) when clang-tidy is not installed.

    tools/function_sizes.py BUILD_DIR
"""

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys

LIMIT = 80
FOLDERS = ("actors", "transports", "config")

# Longer than the limit today, and why they are not split yet. A function
# leaves this list when it is split; none may join it without a reason a
# reader accepts (a flat table, say).
KNOWN = {
    # Rewrites a TOML text to ASCII escapes before toml++ sees it (decision
    # 50): one flat state machine (code, comment, four kinds of string) whose
    # states all move the same position, line, column and output; split per
    # state, each piece would take and return all five, and the scanner is
    # easier to check against the TOML grammar read as one (fuzz_config runs
    # it).
    ("config/config.cpp", "to_ascii_toml"): 145,
}

WARNING = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):\d+: warning: function '(?P<name>[^']+)' "
                     r"exceeds recommended size")
NOTE = re.compile(r"note: (?P<lines>\d+) lines including whitespace and comments")


def check(source, build):
    out = subprocess.run(
        # -Wno-error: the build's -Werror would turn clang's own warnings
        # (not gcc's) into errors; real errors still fail below.
        ["clang-tidy", "-p", build, "--quiet", "--extra-arg=-Wno-error",
         "--checks=-*,readability-function-size",
         "--config={CheckOptions: [{key: readability-function-size.LineThreshold, value: %d}]}"
         % LIMIT, source],
        capture_output=True, text=True)
    found = []
    if out.returncode != 0 and " error: " in out.stdout:
        # A file clang-tidy cannot parse would otherwise pass unseen.
        first = next(l for l in out.stdout.splitlines() if " error: " in l)
        found.append(("(clang-tidy could not parse: " + first + ")", 0, -1))
        return found
    pending = None
    for line in out.stdout.splitlines():
        m = WARNING.match(line)
        if m:
            pending = (m.group("name"), int(m.group("line")))
            continue
        n = NOTE.search(line)
        if n and pending:
            found.append((pending[0], pending[1], int(n.group("lines"))))
            pending = None
    return found


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build = os.path.abspath(sys.argv[1])
    if shutil.which("clang-tidy") is None:
        print("function_sizes: clang-tidy is not installed (tools/install-deps.sh installs it)")
        return 77
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = sorted(os.path.join(f, name) for f in FOLDERS
                     for name in os.listdir(os.path.join(root, f)) if name.endswith(".cpp"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip(sources, pool.map(lambda s: check(os.path.join(root, s), build),
                                             sources)))
    failures = []
    seen = set()
    for source, found in results.items():
        for name, line, lines in found:
            key = (source, name)
            seen.add(key)
            where = f"{source}:{line} {name}: {lines} lines"
            if lines < 0:
                failures.append(f"{source}: {name}")
            elif key not in KNOWN:
                failures.append(f"{where} (over {LIMIT}; split it, or list it in "
                                f"tools/function_sizes.py with the reason)")
            elif lines > KNOWN[key]:
                failures.append(f"{where} (grew from {KNOWN[key]}; it may only shrink)")
            else:
                print(f"known: {where}")
    for key in sorted(set(KNOWN) - seen):
        print(f"split since listed (remove it from KNOWN): {key[0]} {key[1]}")
    print(f"function_sizes: {len(sources)} files, limit {LIMIT} lines, "
          f"{len(seen)} over it, {len(failures)} not allowed")
    for f in failures:
        print("FAIL " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
