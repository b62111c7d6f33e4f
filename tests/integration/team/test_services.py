"""The services the team-deployment tests stand on start and answer: PostgreSQL and nginx."""

from __future__ import annotations

import http.server
import threading

import httpx2


def test_a_fresh_database_per_test_accepts_sql_and_is_empty(postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url) as connection:
        tables = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        version = connection.execute("SHOW server_version").fetchone()
    assert tables == (0,)
    assert int(version[0].split(".")[0]) >= 13


def test_nginx_proxies_to_a_loopback_upstream(nginx) -> None:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = f"hello {self.headers.get('X-Forwarded-For')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    try:
        proxy = nginx(f"""
  server {{
    listen 127.0.0.1:{{port}};
    location / {{ proxy_pass http://127.0.0.1:{upstream.server_port}; proxy_set_header X-Forwarded-For $remote_addr; }}
  }}""")
        reply = httpx2.get(f"http://127.0.0.1:{proxy.port}/", timeout=10)
        assert (reply.status_code, reply.text) == (200, "hello 127.0.0.1"), proxy.error_log()
    finally:
        upstream.shutdown()
        upstream.server_close()
