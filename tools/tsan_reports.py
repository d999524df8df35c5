#!/usr/bin/env python3
"""Sorts the daemon's ThreadSanitizer reports (tools/tsan.sh).

Debian's libcaf_core is not built with ThreadSanitizer, so the atomics that
carry a message from its sender to the actor that handles it are invisible
to TSan: every object handed over in a message (an append request, a lock
state, a string) shows as a race between the thread that made it and the
actor that reads it. Such a report is a *hand-off through CAF* when

  * both accesses run inside CAF (a frame in libcaf_core or of CAF's own
    functions, such as making a message in anon_send, or a thread CAF
    created: its workers, detached actors, the multiplexer); or
  * one runs inside CAF and the other runs on the thread that allocated the
    memory (a transport or Paho thread that built the message it sends); or
  * the write frees an actor's own memory (its control block, which holds
    the actor) as CAF drops the last strong reference: libcaf_core counts
    references with atomics TSan cannot see, so every earlier access by a
    thread that held a reference (a scoped_actor's, say) shows as a race.
    A use after that free is reported by TSan as such, not as a race.

Every other report fails the run: races between the daemon's own threads
(libcoap's, the BLE thread, Paho's, the main thread), on objects that live
longer than one message (made by a third thread, or not on the heap), lock
inversions, use after free, signal misuse. What this cannot see: races
between two actors on an object they share outside messages; the thread
model (docs/design.md, decision 55) rules those out by construction.

Usage: tsan_reports.py FILE...   (exit 1 when any report is not a hand-off)
"""
import re
import sys
from collections import Counter

ACCESS = re.compile(r"^(Atomic |Previous )?(atomic )?(read|write|Read|Write)\b")
BY_THREAD = re.compile(r" by (main thread|thread T\d+)")
THREAD = re.compile(r"^Thread (T\d+)(?: '([^']*)')?")
LOCATION = re.compile(r"^Location is heap block .* allocated by (main thread|thread T\d+)")


def sections(block):
    """(header, frames) for each part of one report."""
    out = []
    for part in re.split(r"\n  (?=\S)", block):
        lines = part.split("\n")
        out.append((lines[0].strip(), [l.strip() for l in lines[1:] if l.strip().startswith("#")]))
    return out


def in_caf(frames):
    """A frame of libcaf_core, or of CAF's own code compiled into the daemon
    from its headers (making, sending or destroying a message)."""
    return any("libcaf_core" in f or re.match(r"#\d+ (caf::|_ZN3caf)", f) for f in frames)


def frees_an_actor(frames):
    """The access is CAF freeing an actor's control block (the last strong
    reference dropped)."""
    return (len(frames) >= 2 and "operator delete" in frames[0]
            and "intrusive_ptr<caf::actor_control_block>::~intrusive_ptr" in frames[1])


def classify(block):
    """'handoff', or a short reason why the report counts."""
    first = block.strip().split("\n")[0]
    if "data race" not in first:
        return "not a data race: " + first.replace("WARNING: ThreadSanitizer: ", "")
    parts = sections(block)
    if any(ACCESS.match(head) and frees_an_actor(frames) for head, frames in parts):
        return "handoff"
    caf_threads = set()
    for head, frames in parts:
        m = THREAD.match(head)
        if m and (in_caf(frames) or (m.group(2) or "").startswith("caf.")):
            caf_threads.add("thread " + m.group(1))
    accesses, allocator = [], None
    for head, frames in parts:
        if ACCESS.match(head):
            m = BY_THREAD.search(head)
            thread = m.group(1) if m else "?"
            accesses.append((thread, in_caf(frames) or thread in caf_threads))
        m = LOCATION.match(head)
        if m:
            allocator = m.group(1)
    if len(accesses) < 2:
        return "a race without two accesses"
    (t1, caf1), (t2, caf2) = accesses[:2]
    if caf1 and caf2:
        return "handoff"
    if caf1 != caf2:
        other = t2 if caf1 else t1
        if allocator == other:
            return "handoff"
        return f"between an actor and {other} on memory it did not make"
    return f"between {t1} and {t2}, neither in an actor"


def main(paths):
    counts = Counter()
    failing = []
    for path in paths:
        with open(path, errors="replace") as f:
            text = f.read()
        for block in text.split("==================\n"):
            if "WARNING: ThreadSanitizer" not in block:
                continue
            verdict = classify(block)
            counts[verdict] += 1
            if verdict != "handoff":
                failing.append((path, verdict, block))
    handoffs = counts.pop("handoff", 0)
    print(f"tsan: {handoffs} reports are hand-offs through CAF's mailbox (invisible to TSan: "
          f"libcaf_core is not instrumented); {sum(counts.values())} are not")
    for path, verdict, block in failing:
        print(f"\n--- {path}: {verdict}\n{block.strip()}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
