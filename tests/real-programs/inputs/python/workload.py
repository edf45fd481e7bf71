"""Workload for CPython 3.12 on WASI (tests/real-programs).

Reads /data/corpus.txt and /data/config.json, exercises a broad slice of the
interpreter and its standard library, writes /out/report.json and
/out/words.csv, prints a summary to stdout and a note to stderr, and exits 3.
Everything here is deterministic: no clocks, no unseeded randomness, no
directory-order or hash-order dependence (PYTHONHASHSEED is also pinned).
"""
import base64, bisect, collections, csv, dataclasses, decimal, fractions, functools
import hashlib, heapq, json, math, os, random, re, statistics, struct
import sys, zlib

config = json.load(open("/data/config.json"))
text = open("/data/corpus.txt", encoding="utf-8").read()

words = re.findall(r"[a-zà-ÿ']+", text.lower())
counts = collections.Counter(words)
top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: config["top"]]

# Arbitrary precision: pi to N digits with Machin's formula in Decimal.
decimal.getcontext().prec = config["pi_digits"] + 10
def arctan_inv(x):
    x = decimal.Decimal(x)
    total = term = 1 / x
    n, sign, x2 = 1, 1, x * x
    eps = decimal.Decimal(10) ** -(decimal.getcontext().prec + 2)
    while True:
        term /= x2
        n += 2
        sign = -sign
        delta = term / n
        if delta < eps:
            break
        total += sign * delta
    return total
pi = 4 * (4 * arctan_inv(5) - arctan_inv(239))
pi_str = str(pi)[: config["pi_digits"] + 2]

# Big integers, fractions, floats.
fact = math.factorial(500)
harmonic = sum(fractions.Fraction(1, k) for k in range(1, 60))
rng = random.Random(config["seed"])
floats = [rng.gauss(0, 1) for _ in range(2000)]

# A small graph problem: Dijkstra over a seeded random graph.
graph = collections.defaultdict(list)
for _ in range(3000):
    a, b, w = rng.randrange(400), rng.randrange(400), rng.randint(1, 50)
    graph[a].append((b, w))
    graph[b].append((a, w))
dist = {0: 0}
heap = [(0, 0)]
while heap:
    d, u = heapq.heappop(heap)
    if d > dist.get(u, math.inf):
        continue
    for v, w in graph[u]:
        if d + w < dist.get(v, math.inf):
            dist[v] = d + w
            heapq.heappush(heap, (d + w, v))

@dataclasses.dataclass(frozen=True)
class Primes:
    limit: int
    @functools.cached_property
    def sieve(self):
        s = bytearray([1]) * (self.limit + 1)
        s[0:2] = b"\0\0"
        for i in range(2, math.isqrt(self.limit) + 1):
            if s[i]:
                s[i * i :: i] = bytearray(len(s[i * i :: i]))
        return [i for i, f in enumerate(s) if f]
primes = Primes(200_000).sieve

packed = struct.pack("<%dd" % 16, *floats[:16])
compressed = zlib.compress(text.encode("utf-8"), 9)

report = {
    "argv": sys.argv[1:],
    "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith("WORKLOAD_")},
    "words": len(words),
    "distinct": len(counts),
    "top": top,
    "pi": pi_str,
    "fact500_digits": len(str(fact)),
    "fact500_sha256": hashlib.sha256(str(fact).encode()).hexdigest(),
    "harmonic59": [harmonic.numerator % 10**12, harmonic.denominator % 10**12],
    "gauss_mean": round(statistics.fmean(floats), 12),
    "gauss_stdev": round(statistics.stdev(floats), 12),
    "gauss_median": statistics.median(floats),
    "dijkstra_reached": len(dist),
    "dijkstra_sum": sum(dist.values()),
    "primes": [len(primes), primes[-1], bisect.bisect(primes, 100_000)],
    "packed_b64": base64.b64encode(packed).decode(),
    "zlib_len": len(compressed),
    "zlib_crc32": zlib.crc32(compressed),
    "blake2b": hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest(),
    "md5": hashlib.md5(compressed).hexdigest(),
    "listdir": sorted(os.listdir("/data")),
}
with open("/out/report.json", "w") as f:
    json.dump(report, f, indent=1, ensure_ascii=False)
    f.write("\n")
with open("/out/words.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["word", "count", "first_offset"])
    for word, n in sorted(counts.items()):
        w.writerow([word, n, text.lower().find(word)])

print(f"{report['words']} words, {report['distinct']} distinct")
print("top:", ", ".join(f"{w}={n}" for w, n in top))
print("pi:", pi_str[:50] + "...", "(%d digits)" % config["pi_digits"])
print("report sha256:", hashlib.sha256(open("/out/report.json", "rb").read()).hexdigest())
print("stdin:", sys.stdin.read().strip() or "<empty>")
print("warning: exiting with status", config["exit_code"], file=sys.stderr)
sys.exit(config["exit_code"])
