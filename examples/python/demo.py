"""switchyard from Python: two local providers, one failing, and a balancer in front.

    cargo build --release
    PYTHONPATH=bindings/python python3 examples/python/demo.py
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import switchyard


def serve(status):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b'{"price": 101.25}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return "http://127.0.0.1:%d" % httpd.server_address[1]


config = {
    "services": {
        "stocks": {
            "providers": [
                {"name": "flaky", "base_url": serve(503), "tier": 1, "endpoints": {"quote": "/quote/{symbol}"}},
                {"name": "steady", "base_url": serve(200), "tier": 2, "endpoints": {"quote": "/v1/{symbol}"}},
            ]
        }
    }
}

with switchyard.Balancer(config) as lb:
    answered = 0
    for _ in range(10):
        r = lb.get("stocks", "quote", params={"symbol": "AAPL"}, priority="high", timeout=5)
        print(r.status, r.provider, r.json())
        answered += r.status == 200
    try:
        lb.get("stocks", "news")
    except switchyard.UnknownEndpoint as e:
        print("as expected:", e)
    print("circuit of flaky:", lb.circuit("flaky")["state"])
    print("answered %d of 10" % answered)
