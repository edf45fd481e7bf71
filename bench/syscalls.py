#!/usr/bin/env python3
"""Lists the system calls the sandboxed child makes once it runs guest-facing code: everything
a task of the child's thread group calls after the child's unshare(CLONE_NEWCGROUP), the last
step before the seccomp filter goes on. Runs each command under strace -f; prints the union.

Usage: bench/syscalls.py WRUN -- ARGS [ ;; ARGS ...]  (each ARGS is one `wrun` invocation)
"""
import collections, re, subprocess, sys, tempfile

LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]")

def trace(cmd):
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(["strace", "-f", "-qq", "-o", out.name, *cmd],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lines = out.read().splitlines()
    child, started, seen = None, set(), collections.Counter()
    tasks = set()
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        pid, name = m.group(1), m.group(2)
        if child is None and "unshare(CLONE_NEWCGROUP" in line:
            child = pid
            tasks.add(pid)
            continue
        if child is None:
            continue
        if pid in tasks:
            seen[name] += 1
            if name in ("clone", "clone3") and "CLONE_THREAD" in line:
                r = re.search(r"= (\d+)$", line)
                if r:
                    tasks.add(r.group(1))
        elif "resumed" in line and pid in tasks:
            seen[name] += 1
    return seen

def main():
    wrun = sys.argv[1]
    rest = sys.argv[3:] if sys.argv[2] == "--" else sys.argv[2:]
    runs, current = [], []
    for word in rest:
        if word == ";;":
            runs.append(current); current = []
        else:
            current.append(word)
    if current:
        runs.append(current)
    total = collections.Counter()
    for args in runs:
        seen = trace([wrun, *args])
        print(f"{' '.join(args)}: {' '.join(sorted(seen))}", file=sys.stderr)
        total.update(seen)
    for name in sorted(total):
        print(name)

main()
