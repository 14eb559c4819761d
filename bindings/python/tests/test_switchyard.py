"""The Python binding against local HTTP servers: answers, every error kind, threads."""

import json
import os
import re
import socket
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import switchyard

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, *args):
        pass

    def do_GET(self):
        fault = self.server.fault
        if fault == "hang":
            time.sleep(5)
            return
        if self.server.delay:
            time.sleep(self.server.delay)
        status = 503 if fault == "503" else 200
        body = b'{"ok": true, "path": "%s"}' % self.path.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Multi", "a")
        self.send_header("X-Multi", "b")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


class Server:
    def __init__(self, fault=None, delay=0.0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.fault = fault
        self.httpd.delay = delay
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def provider(name, url, tier=1):
    return {"name": name, "base_url": url, "tier": tier, "endpoints": {"quote": "/quote"}}


class BindingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.servers = {
            "good1": Server(),
            "bad": Server("503"),
            "good2": Server(),
            "gone": Server("503"),
            "hang": Server("hang"),
            "slow": Server(delay=0.05),
        }
        u = {k: v.url for k, v in cls.servers.items()}
        cls.config = {
            "defaults": {"retry": {"base_delay_ms": 20, "max_backoff_ms": 50}},
            "services": {
                "s": {"providers": [provider("good1", u["good1"]), provider("bad", u["bad"]), provider("good2", u["good2"], 2)]},
                "dead": {"providers": [provider("gone", u["gone"])]},
                "slow": {"providers": [provider("hang", u["hang"])]},
                "lag": {"pool": {"max_connections": 16}, "providers": [provider("lagging", u["slow"])]},
                "capped": {"quota": {"per_day": 2}, "providers": [provider("free", u["good1"])]},
                "kept": {
                    "endpoints": {"quote": {"cache_ttl_ms": 60000}},
                    "providers": [dict(provider("shaped", u["good2"]), shape={"quote": {"where": "/path"}})],
                },
            },
        }
        cls.lb = switchyard.Balancer(cls.config)

    @classmethod
    def tearDownClass(cls):
        cls.lb.close()
        for s in cls.servers.values():
            s.stop()

    def test_answers_skip_the_failing_provider(self):
        for _ in range(20):
            r = self.lb.get("s", "quote", params={"symbol": "AAPL"}, priority="high", timeout=5)
            self.assertEqual(r.status, 200)
            self.assertIn(r.provider, ("good1", "good2"))
            self.assertEqual(r.json()["path"], "/quote?symbol=AAPL")
            self.assertIn("ok", r.text)
            self.assertIsInstance(r.body, bytes)
            self.assertEqual(r.headers["content-type"], "application/json")
            self.assertEqual(r.headers["CONTENT-TYPE"], "application/json")
            self.assertEqual(r.headers["x-multi"], "a, b")
            self.assertIn("Content-Type", r.headers)
            self.assertGreater(r.latency, 0)

    def test_shaped_and_cached_answers_say_so(self):
        first = self.lb.get("kept", "quote", params={"symbol": "K"})
        self.assertFalse(first.from_cache)
        self.assertEqual(first.json(), {"where": "/quote?symbol=K"})
        self.assertEqual(json.loads(first.raw_body)["path"], "/quote?symbol=K")
        again = self.lb.get("kept", "quote", params={"symbol": "K"})
        self.assertTrue(again.from_cache)
        self.assertEqual((again.body, again.raw_body, again.attempts), (first.body, first.raw_body, 0))
        plain = self.lb.get("s", "quote", params={"symbol": "AAPL"})
        self.assertIs(plain.raw_body, plain.body, "no shape: the same bytes")
        self.assertFalse(plain.from_cache)
        svc = self.lb.metrics()["services"]["kept"]
        self.assertEqual((svc["cache_hits"], svc["cache_misses"]), (1, 1))

    def test_explain_names_the_pick_without_sending(self):
        before = self.lb.metrics()["services"]["s"]["requests"]
        e = self.lb.explain("s", "quote", params={"symbol": "AAPL"})
        self.assertIn(e["pick"], ("good1", "bad", "good2"))
        names = [c["provider"] for c in e["candidates"]]
        self.assertEqual(names, ["good1", "bad", "good2"])
        self.assertTrue(any(c["skipped"] and c["skipped"].startswith("tier 2") for c in e["candidates"]) or e["pick"] == "good2")
        self.assertEqual(self.lb.metrics()["services"]["s"]["requests"], before, "nothing was sent")
        with self.assertRaises(switchyard.UnknownService):
            self.lb.explain("nope", "quote")

    def test_on_event_hears_attempts_and_circuit_changes(self):
        lb = switchyard.Balancer({"services": {"e": {"providers": [provider("e1", self.servers["good1"].url)]}}})
        try:
            seen = []
            got = threading.Event()

            def hear(event):
                seen.append(event)
                if event["type"] == "circuit":
                    got.set()

            lb.on_event(hear)
            lb.on_event(lambda event: 1 / 0)  # a failing subscriber stops nothing
            for _ in range(3):
                self.assertEqual(lb.get("e", "quote").status, 200)
            lb.force_open("e1")
            self.assertTrue(got.wait(5))
            attempts = [e for e in seen if e["type"] == "attempt"]
            self.assertGreaterEqual(len(attempts), 3)
            self.assertEqual((attempts[0]["provider"], attempts[0]["ok"], attempts[0]["status"]), ("e1", True, 200))
            circuit = [e for e in seen if e["type"] == "circuit"][0]
            self.assertEqual((circuit["provider"], circuit["to"]), ("e1", "open"))
            self.assertIn("dropped", lb.metrics()["events"])
        finally:
            lb.close()

    def test_every_error_kind_maps_to_its_exception(self):
        with self.assertRaises(switchyard.UnknownService) as e:
            self.lb.get("bonds", "quote")
        self.assertEqual(e.exception.code, 3)
        with self.assertRaises(switchyard.UnknownEndpoint):
            self.lb.get("s", "dividends")
        with self.assertRaises(switchyard.AllProvidersFailed) as e:
            self.lb.get("dead", "quote")
        attempts = e.exception.attempts
        self.assertEqual(len(attempts), 3)
        self.assertEqual(set(attempts[0]), {"provider", "kind", "status", "elapsed_ms", "message"})
        self.assertEqual((attempts[0]["provider"], attempts[0]["kind"], attempts[0]["status"]), ("gone", "status", 503))
        with self.assertRaises(TimeoutError) as e:
            self.lb.get("slow", "quote", timeout=0.3)
        self.assertIsInstance(e.exception, switchyard.Timeout)
        with self.assertRaises(switchyard.ConfigError) as e:
            switchyard.Balancer.from_string('[defaults]\nstrategy = "fastest"\n')
        self.assertIn("defaults.strategy", str(e.exception))
        with self.assertRaises(ValueError):
            self.lb.get("s", "quote", priority="urgent")
        with self.assertRaises(switchyard.InvalidArgument):
            self.lb.get("s", "quote", timeout=-1)
        with self.assertRaises(switchyard.InvalidArgument):
            self.lb.request("s", "quote", method="FETCH")
        with self.assertRaises(switchyard.InvalidArgument):
            self.lb.get("s", "quote", headers={"bad name": "x"})
        with self.assertRaises(switchyard.InvalidArgument):
            self.lb.circuit("nope")
        for _ in range(2):
            self.assertEqual(self.lb.get("capped", "quote").status, 200)
        with self.assertRaises(switchyard.QuotaExhausted) as e:
            self.lb.get("capped", "quote")
        self.assertEqual(e.exception.code, 12)
        self.assertIn("free quota used up, frees up in", str(e.exception))
        [wait] = e.exception.waits
        self.assertEqual((wait["provider"], wait["reason"]), ("free", "quota"))
        self.assertGreater(wait["frees_in_ms"], 0)
        quota = self.lb.metrics()["services"]["capped"]["providers"]["free"]["quota"]["per_day"]
        self.assertEqual((quota["limit"], quota["used"]), (2, 2))
        for cls in (switchyard.QueueFull, switchyard.NoHealthyProvider, switchyard.ShuttingDown,
                    switchyard.ResponseTooLarge, switchyard.InternalError, switchyard.QuotaExhausted):
            self.assertTrue(issubclass(cls, switchyard.Error))

    def test_exception_codes_match_the_header(self):
        header = open(os.path.join(ROOT, "include", "switchyard.h")).read()
        codes = {name: int(n) for name, n in re.findall(r"#define SY_ERR_(\w+) (\d+)", header)}
        names = {
            "INVALID_ARGUMENT": switchyard.InvalidArgument, "CONFIG": switchyard.ConfigError,
            "UNKNOWN_SERVICE": switchyard.UnknownService, "UNKNOWN_ENDPOINT": switchyard.UnknownEndpoint,
            "QUEUE_FULL": switchyard.QueueFull, "TIMEOUT": switchyard.Timeout,
            "NO_HEALTHY_PROVIDER": switchyard.NoHealthyProvider,
            "ALL_PROVIDERS_FAILED": switchyard.AllProvidersFailed, "SHUTTING_DOWN": switchyard.ShuttingDown,
            "RESPONSE_TOO_LARGE": switchyard.ResponseTooLarge, "INTERNAL": switchyard.InternalError,
            "QUOTA_EXHAUSTED": switchyard.QuotaExhausted,
        }
        self.assertEqual(set(codes), set(names))
        for name, cls in names.items():
            self.assertEqual(cls.code, codes[name], name)

    def test_sixteen_threads_run_concurrently(self):
        results, errors = [], []

        def work():
            try:
                for _ in range(4):
                    results.append(self.lb.get("lag", "quote").status)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(16)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        took = time.monotonic() - started
        self.assertEqual(errors, [])
        self.assertEqual(results, [200] * 64)
        # 64 calls of 50 ms each: about 3.2 s one at a time, about 0.2 s on 16 connections.
        self.assertLess(took, 1.6, "calls did not run concurrently: %.2f s" % took)

    def test_submit_returns_a_future(self):
        futures = [self.lb.submit("s", "quote") for _ in range(20)]
        self.assertTrue(all(f.result(timeout=10).status == 200 for f in futures))
        failing = self.lb.submit("dead", "quote")
        with self.assertRaises(switchyard.AllProvidersFailed):
            failing.result(timeout=10)

    def test_metrics_circuit_prometheus_and_operators(self):
        self.lb.get("s", "quote")
        m = self.lb.metrics()
        p = m["services"]["s"]["providers"]["good1"]
        for key in ("requests", "successes", "failures", "in_flight", "max_connections", "latency_ms", "circuit"):
            self.assertIn(key, p)
        for key in ("avg", "min", "max", "p50", "p99"):
            self.assertIn(key, p["latency_ms"])
        self.assertIn(m["services"]["s"]["providers"]["bad"]["circuit"]["state"], ("closed", "open", "half_open"))
        self.lb.force_open("good2")
        self.assertEqual(self.lb.circuit("good2")["state"], "open")
        self.lb.reset_circuit("good2")
        self.assertEqual(self.lb.circuit("good2")["state"], "closed")
        self.assertIn("switchyard_requests_total", self.lb.prometheus())
        self.lb.set_strategy("s", "round_robin")
        with self.assertRaises(switchyard.InvalidArgument):
            self.lb.set_strategy("s", "fastest")

    def test_config_from_string_file_and_closed_balancers(self):
        url = self.servers["good1"].url
        toml = '[[services.x.providers]]\nname = "p"\nbase_url = "%s"\n' % url
        with switchyard.Balancer.from_string(toml) as lb:
            self.assertEqual(lb.get("x", "/ping").status, 200)
        with self.assertRaises(switchyard.ShuttingDown):
            lb.get("x", "/ping")
        with self.assertRaises(switchyard.ShuttingDown):
            lb.metrics()
        json_text = '{"services": {"x": {"providers": [{"name": "p", "base_url": "%s"}]}}}' % url
        with switchyard.Balancer.from_string(json_text, format=None) as lb:
            self.assertEqual(lb.request("x", "/ping", method="POST", body="hi").status, 200)
        with self.assertRaises(switchyard.ConfigError) as e:
            switchyard.Balancer.from_file("/nonexistent/switchyard.toml")
        self.assertIn("/nonexistent/switchyard.toml", str(e.exception))

    def test_dashboard_serves_status_json(self):
        import json
        import urllib.request
        url = self.lb.serve_dashboard("127.0.0.1:0")
        self.assertRegex(url, r"^http://127\.0\.0\.1:\d+/$")
        with urllib.request.urlopen(url + "status.json", timeout=5) as r:
            status = json.load(r)
        self.assertIn("s", status["services"])
        with self.assertRaises(switchyard.InvalidArgument):
            self.lb.serve_dashboard("0.0.0.0:0")

    def test_timeouts_out_of_range_are_invalid_arguments(self):
        for bad in (1e300, float("inf"), float("nan"), 0, -1, 86_400.5, True, "5"):
            with self.assertRaises(switchyard.InvalidArgument, msg=repr(bad)):
                self.lb.get("s", "quote", timeout=bad)
        self.assertEqual(self.lb.get("s", "quote", timeout=switchyard.MAX_TIMEOUT).status, 200)

    def test_status_messages_and_errors_are_never_empty(self):
        self.assertEqual(switchyard.status_message(0), "success")
        self.assertEqual(switchyard.status_message(6), "the request's deadline passed")
        self.assertEqual(switchyard.status_message(999), "an unknown status")
        with self.assertRaises(switchyard.InvalidArgument):
            switchyard.status_message(-1)
        with self.assertRaises(switchyard.InvalidArgument) as caught:
            self.lb.get("s", "quote", priority=7)
        self.assertTrue(str(caught.exception))

    def test_circuit_listeners_hear_changes_and_may_call_the_balancer(self):
        lb = switchyard.Balancer(self.config)
        heard = []
        done = threading.Event()

        def listener(event):
            heard.append((event["provider"], event["from"], event["to"]))
            lb.metrics()  # calling back in is allowed
            if len(heard) == 2:
                done.set()

        def broken(_event):
            raise RuntimeError("a listener's bug must not reach the native thread")

        lb.on_circuit_change(broken)
        lb.on_circuit_change(listener)
        lb.force_open("good1")
        lb.reset_circuit("good1")
        self.assertTrue(done.wait(5))
        self.assertEqual(heard, [("good1", "closed", "open"), ("good1", "open", "closed")])
        with self.assertRaises(switchyard.InvalidArgument):
            lb.on_circuit_change(42)
        r = lb.get("s", "quote")
        self.assertGreaterEqual(r.queue_wait, 0.0)
        lb.close()

    def test_close_waits_for_calls_in_flight_on_other_threads(self):
        for _ in range(5):
            lb = switchyard.Balancer(self.config)
            outcomes, stop = [], threading.Event()

            def caller():
                while not stop.is_set():
                    try:
                        lb.get("lag", "quote")
                        outcomes.append("ok")
                    except switchyard.ShuttingDown:
                        outcomes.append("closed")
                        return
                    except switchyard.Error as e:  # any other kind is a finding
                        outcomes.append(type(e).__name__)
                        return

            threads = [threading.Thread(target=caller) for _ in range(16)]
            for t in threads:
                t.start()
            time.sleep(0.05)
            lb.close()
            stop.set()
            for t in threads:
                t.join(10)
                self.assertFalse(t.is_alive())
            self.assertTrue(set(outcomes) <= {"ok", "closed"}, outcomes)
            with self.assertRaises(switchyard.ShuttingDown):
                lb.metrics()
            lb.close()

    def test_values_are_never_changed_silently(self):
        bad = [
            dict(headers={"X-A": None}),
            dict(headers={"X-A": 5}),
            dict(headers={"X-A": "a\x01b"}),
            dict(headers={"Content-Length": "3"}),
            dict(headers=[("X-A", "b")]),
            dict(params={"symbol": None}),
            dict(params={"symbol": True}),
            dict(params={"symbol": float("nan")}),
            dict(params={1: "x"}),
            dict(params="symbol=X"),
            dict(body=12),
            dict(priority=True),
            dict(priority=None),
            dict(idempotent="yes"),
        ]
        for kwargs in bad:
            with self.assertRaises(switchyard.InvalidArgument, msg=repr(kwargs)):
                self.lb.get("s", "quote", **kwargs)
        with self.assertRaises(switchyard.InvalidArgument):
            self.lb.get(None, "quote")
        with self.assertRaises(switchyard.InvalidArgument):
            self.lb.get("s", 7)
        self.assertEqual(self.lb.get("s", "quote", params={"n": 5, "x": 1.5}).status, 200)

    def test_version(self):
        self.assertRegex(switchyard.version(), r"^\d+\.\d+\.\d+")


if __name__ == "__main__":
    unittest.main()
