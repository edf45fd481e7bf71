#!/usr/bin/env python3
"""Runs a wrun command N times with WRUN_TIMINGS=1 and prints the median time of each step
(ms since main starts; step = time since the previous mark of the same process)."""
import os, statistics, subprocess, sys
from collections import defaultdict

def main():
    runs = int(os.environ.get("RUNS", "200"))
    cmd = sys.argv[1:]
    at = defaultdict(list)
    order = []
    env = dict(os.environ, WRUN_TIMINGS="1")
    for _ in range(runs):
        err = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
        for line in err.splitlines():
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[0] == "wrun-timing":
                key = (parts[2], parts[3])
                if key not in order:
                    order.append(key)
                at[key].append(float(parts[1]))
    order.sort(key=lambda k: statistics.median(at[k]))
    last = {}
    print(f"{'ms':>7} {'step':>7}  process step   (medians of {runs} runs)")
    for side, step in order:
        t = statistics.median(at[(side, step)])
        prev = last.get(side, 0.0 if side == "parent" else None)
        delta = "" if prev is None else f"{t - prev:7.3f}"
        print(f"{t:7.3f} {delta:>7}  {side:6} {step}")
        last[side] = t

main()
