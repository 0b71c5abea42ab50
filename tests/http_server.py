"""A real HTTP server on localhost, for the tests of IO-bound stages.

``GET /echo/X?delay=S`` answers ``X`` after ``S`` seconds; ``/fail/X`` answers
500; ``/flaky/X`` fails the first request for each ``X`` and answers the next;
``/after/K`` answers ``K`` once the server has served ``K`` other requests (504
if that takes over 10 s).
The server counts the requests it is serving at once (``peak``) and has served
(``served``), so a test can see how many calls a stage really had in flight.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once

    def __init__(self, announce=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.announce = announce  # print "running" when this many are served at once
        self.lock = threading.Lock()
        self.served_more = threading.Condition(self.lock)
        self.active = 0
        self.peak = 0
        self.served = 0
        self.seen = set()  # what /flaky/ has failed once
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()

    def reset(self):
        with self.lock:
            self.active = self.peak = self.served = 0
            self.seen.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connections

    def do_GET(self):  # the name http.server calls
        server = self.server
        with server.lock:
            server.active += 1
            server.peak = max(server.peak, server.active)
            if server.active == server.announce:
                print("running", flush=True)
        try:
            status, body = self._answer(server)
        finally:
            # done before the client can read the answer: it may send its next
            # request at once, which must not find this one still counted
            with server.lock:
                server.active -= 1
                server.served += 1
                server.served_more.notify_all()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, server):
        url = urlparse(self.path)
        kind, _, value = url.path.strip("/").partition("/")
        delay = float(parse_qs(url.query).get("delay", ["0"])[0])
        if delay:
            time.sleep(delay)
        status = 200
        if kind == "fail":
            status = 500
        elif kind == "flaky":
            with server.lock:
                first = value not in server.seen
                server.seen.add(value)
            status = 500 if first else 200
        elif kind == "after":
            with server.lock:
                if not server.served_more.wait_for(lambda: server.served >= int(value), 10):
                    status = 504
        elif kind == "stats":
            value = f"{server.served} {server.peak}"
        return status, value.encode()

    def log_message(self, *args):  # quiet
        pass
