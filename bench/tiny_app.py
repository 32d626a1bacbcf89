"""A do-nothing web service for the benchmark stacks: answers 200 on every path."""
import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((os.environ["LIFEBOAT_BIND"], int(os.environ["PORT"])), Handler).serve_forever()
