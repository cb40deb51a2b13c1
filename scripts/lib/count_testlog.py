#!/usr/bin/env python3
"""Count one meson testlog.json the way scripts/test does.

    scripts/lib/count_testlog.py build/gcc-release/meson-logs/testlog.json

`passed`/`failed` count meson tests (EXPECTEDFAIL passes; SKIP is neither). `skipped` counts skipped
items: every distinct `RTDEFER-SKIPPED: <what>: <why>` line a test printed, and at least one for a
test that skipped as a whole (exit 77). Prints each failure with the tail of its output, an
`@problem FAILED <test> (<result>)` line per failure (scripts/test lists them under `problems:`),
each skipped item with its reason, then `@counts PASSED FAILED SKIPPED` as the last line.
"""
import json
import sys

MARK = "RTDEFER-SKIPPED: "


def main(path):
    passed = failed = skipped = 0
    fails, skips, notes = [], [], []
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if not line.strip():
            continue
        d = json.loads(line)
        r = d.get("result")
        out = (d.get("stdout") or "") + (d.get("stderr") or "")
        items = []
        for l in out.splitlines():
            if l.startswith(MARK) and l[len(MARK):].strip() not in items:
                items.append(l[len(MARK):].strip())
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            if not items:
                items.append("exit 77 without an RTDEFER-SKIPPED line (no reason given)")
        else:
            failed += 1
            fails.append((d["name"], r, out))
        skipped += len(items)
        skips += [(d["name"], i) for i in items]
        # A SKIP: line whose item was not listed (e.g. printed in a forked child): shown, uncounted.
        listed = {f"SKIP: {i}" for i in items}
        for l in out.splitlines():
            if l.startswith("SKIP: ") and l.strip() not in listed:
                notes.append(f"{d['name']}: {l.strip()}")
    for name, r, out in fails:
        print(f"    FAILED {name} ({r}); last lines of its output:")
        for l in out.splitlines()[-30:]:
            print("      | " + l)
        print(f"@problem FAILED {name} ({r})")
    for name, item in skips:
        print(f"    skipped: {name}: {item}")
    for n in sorted(set(notes)):
        print(f"    note: {n}")
    print(f"@counts {passed} {failed} {skipped}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
