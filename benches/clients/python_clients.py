"""One Python HTTP client under closed-loop load, for benches/languages.rs.

    python3 python_clients.py CLIENT THREADS SECONDS MAX_REQUESTS CONFIG URL[,URL...]

CLIENT is switchyard (lb.get), switchyard-submit (lb.submit(...).result()), requests (a
Session per thread), urllib3 (one shared PoolManager), httpx (one shared Client) or
http.client (a connection per thread and upstream). The peers take the URLs in turn;
switchyard takes its providers from CONFIG. Prints one JSON line: requests, errors,
elapsed_s, cpu_s (this process, every thread) and p50/p99/p999 latency in us.
"""
import http.client
import itertools
import json
import sys
import threading
import time
import urllib.parse


def main() -> None:
    client, threads, seconds, budget, config, urls = sys.argv[1:7]
    threads, seconds, budget = int(threads), float(seconds), int(budget) // int(threads)
    urls = urls.split(",")
    turn = itertools.count()  # next() on it is atomic under the GIL
    one, close = make(client, threads, config, urls, turn)
    results = []
    start_line = threading.Barrier(threads + 1)

    def worker() -> None:
        fetch = one()
        lat, ok, errors = [], 0, 0
        clock = time.perf_counter_ns
        start_line.wait()
        deadline = clock() + int(seconds * 1e9)
        while ok + errors < budget:
            t = clock()
            if t >= deadline:
                break
            try:
                good = fetch()
            except Exception:
                good = False
            lat.append(clock() - t)
            if good:
                ok += 1
            else:
                errors += 1
        results.append((ok, errors, lat))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    cpu0 = time.process_time()
    start_line.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    close()
    lat = sorted(x for _, _, l in results for x in l)

    def q(p: float) -> float:
        if not lat:
            return 0.0
        i = min(len(lat), max(1, int(-(-p * len(lat) // 1)))) - 1
        return lat[i] / 1000.0

    print(json.dumps({
        "requests": sum(r[0] for r in results),
        "errors": sum(r[1] for r in results),
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "p50_us": q(0.5),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
    }))


def make(client, threads, config, urls, turn):
    """(a factory of per-thread fetch functions, a closer) for the client named."""
    if client in ("switchyard", "switchyard-submit"):
        import switchyard

        lb = switchyard.Balancer.from_file(config)
        counter = itertools.count()
        if client == "switchyard":
            def one():
                def fetch():
                    # Each request its own, as the Rust clients do: identical ones in
                    # flight at once would share calls.
                    return lb.get("bench", "/", {"n": next(counter)}).status == 200
                return fetch
        else:
            def one():
                def fetch():
                    return lb.submit("bench", "/", {"n": next(counter)}).result().status == 200
                return fetch
        return one, lb.close
    if client == "requests":
        import requests

        def one():
            session = requests.Session()

            def fetch():
                r = session.get(urls[next(turn) % len(urls)])
                return r.status_code == 200 and r.content is not None
            return fetch
        return one, lambda: None
    if client == "urllib3":
        import urllib3

        pool = urllib3.PoolManager(maxsize=threads, block=True)

        def one():
            def fetch():
                return pool.request("GET", urls[next(turn) % len(urls)]).status == 200
            return fetch
        return one, pool.clear
    if client == "httpx":
        import httpx

        shared = httpx.Client(limits=httpx.Limits(max_connections=threads * len(urls), max_keepalive_connections=threads * len(urls)))

        def one():
            def fetch():
                r = shared.get(urls[next(turn) % len(urls)])
                return r.status_code == 200 and r.content is not None
            return fetch
        return one, shared.close
    if client == "http.client":
        parts = [urllib.parse.urlsplit(u) for u in urls]

        def one():
            conns = [http.client.HTTPConnection(p.hostname, p.port) for p in parts]

            def fetch():
                i = next(turn) % len(conns)
                conns[i].request("GET", parts[i].path or "/")
                r = conns[i].getresponse()
                return r.read() is not None and r.status == 200
            return fetch
        return one, lambda: None
    raise SystemExit(f"unknown client {client!r}")


if __name__ == "__main__":
    main()
