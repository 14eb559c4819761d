"""Per-call cost of the Python binding: N lb.get()s to one upstream, median and mean in us."""
import statistics
import sys
import time

import switchyard

config, n = sys.argv[1], int(sys.argv[2])
with switchyard.Balancer.from_file(config) as lb:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        r = lb.get("bench", "/")
        samples.append((time.perf_counter() - t) * 1e6)
        assert r.status == 200
    print("python median %.1f us, mean %.1f us" % (statistics.median(samples), statistics.mean(samples)))
