#!/usr/bin/env python3
"""A stand-in for SEGIP's own identity registry: the entity system behind segip's gateway.

The gateway POSTs the opened request body here with the metadata in X-Chasqui-* headers, and
seals and signs whatever this answers. Any language would do; this is the whole contract:
2xx is the reply, 4xx a refusal the consumer sees as BAD_REQUEST, 5xx a PROVIDER_ERROR.

    python3 deploy/demo_registry.py --port 8081
"""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PEOPLE = {
    "4567890": {"nombre": "Ana Mamani Quispe", "fecha_nacimiento": "1990-04-12"},
    "1234567": {"nombre": "Juan Carlos Flores", "fecha_nacimiento": "1985-11-30"},
}


class Registry(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            ci = json.loads(raw)["ci"]
            if not isinstance(ci, str):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self.answer(422, {"detail": 'persona_consulta expects {"ci": "<cedula>"}'})
            return
        person = PEOPLE.get(ci)
        if person is None:
            self.answer(200, {"ci": ci, "encontrado": False})
            return
        self.answer(200, {"ci": ci, "encontrado": True, "estado": "VIGENTE", **person})

    def log_message(self, fmt, *args):
        # One line per query, without the citizen's number.
        print("registry: %s asked for end user %s (request %s)" % (
            self.headers.get("X-Chasqui-Consumer"), self.headers.get("X-Chasqui-End-User"),
            self.headers.get("X-Chasqui-Request-Id")), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    ThreadingHTTPServer((args.host, args.port), Registry).serve_forever()


if __name__ == "__main__":
    main()
