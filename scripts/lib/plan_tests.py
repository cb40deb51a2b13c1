#!/usr/bin/env python3
"""Which tests a test setup selects in a meson build tree, and whether their programs were built.

    scripts/lib/plan_tests.py build/gcc-asan gcc_asan

Prints `SUITES <suites of the selected tests>`, then `RUN <name>` per selected test whose program
exists and `UNBUILT <name>` per selected test whose program is missing (its build failed): meson
test refuses to start when a selected program is missing, so scripts/test then names the built ones.
The selection is meson's own (`meson test --list --setup`: the setup's exclude_suites).
"""
import json
import os
import subprocess
import sys


def main(builddir, setup):
    listed = subprocess.run(["meson", "test", "-C", builddir, "--no-rebuild", "--list", "--setup", setup],
                            capture_output=True, text=True).stdout.splitlines()
    # `meson test --list` prints `project:suite / name` (or `name` when there is one suite).
    names = {l.rsplit(" / ", 1)[-1] for l in listed if l.strip()}
    tests = json.loads(subprocess.run(["meson", "introspect", "--tests", builddir],
                                      capture_output=True, text=True, check=True).stdout)
    suites, run, unbuilt = [], [], []
    for t in tests:
        if t["name"] not in names:
            continue
        for s in t.get("suite", []):
            s = s.split(":")[-1]
            if s not in suites:
                suites.append(s)
        prog = t["cmd"][0] if t.get("cmd") else ""
        (run if os.path.exists(prog) else unbuilt).append(t["name"])
    print("SUITES " + " ".join(suites))
    for n in run:
        print("RUN " + n)
    for n in unbuilt:
        print("UNBUILT " + n)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
