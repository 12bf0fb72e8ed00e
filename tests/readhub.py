"""A local HTTP server answering the read side of the Hub API (model info, file tree, resolve with ranges, gating).

Shared by the Hub tests and the UI tests through the `read_hub` fixture (conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


class ReadHub:
    """A local HTTP server answering the read side of the Hub API the way huggingface.co does.

    Model search, model info, the file tree, and `resolve` URLs (HEAD, GET and Range GETs for safetensors headers), with the
    Hub's error codes (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). Records every request's
    Authorization header so tests can check which token went out.
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.auth_seen: list[str | None] = []
        self.paths_seen: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                return

            def _send(self, status, body=b"", headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status, code):
                self._send(status, json.dumps({"error": code}).encode(),
                           {"X-Error-Code": code, "Content-Type": "application/json"})

            def do_HEAD(self):  # noqa: N802
                self.do_GET()

            def do_GET(self):  # noqa: N802
                hub.auth_seen.append(self.headers.get("Authorization"))
                path = unquote(urlsplit(self.path).path)
                hub.paths_seen.append(path)
                if path == "/api/models":  # search: ids containing the query, as many as asked
                    query = parse_qs(urlsplit(self.path).query)
                    needle = (query.get("search") or [""])[0].lower()
                    limit = int((query.get("limit") or ["1000"])[0])
                    found = [{"id": r, "modelId": r, "private": False} for r in sorted(hub.repos) if needle in r.lower()]
                    return self._send(200, json.dumps(found[:limit]).encode(), {"Content-Type": "application/json"})
                check = re.match(r"^/api/models/([^/]+/[^/]+)/auth-check$", path)
                if check:  # HfApi.auth_check: may this token read the repo?
                    repo = hub.repos.get(check[1])
                    if repo is None:
                        return self._error(404, "RepoNotFound")
                    if repo["gated"] and self.headers.get("Authorization") != "Bearer hf_granted":
                        return self._error(403, "GatedRepo")
                    return self._send(200, b"{}", {"Content-Type": "application/json"})
                api = re.match(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(?:/.*)?)?$", path)
                resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                repo_id = api[1] if api else resolve[1] if resolve else None
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound")
                revision = (api[3] if api else resolve[2]) or "main"
                if revision not in ("main", repo["sha"]):
                    return self._error(404, "RevisionNotFound")
                if api and api[2] == "tree":
                    listing = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                               for name, data in sorted(repo["files"].items())]
                    return self._send(200, json.dumps(listing).encode(), {"Content-Type": "application/json"})
                if api:
                    info = {"id": repo_id, "modelId": repo_id, "sha": repo["sha"], "private": False,
                            "gated": "manual" if repo["gated"] else False,
                            "siblings": [{"rfilename": name} for name in sorted(repo["files"])],
                            "cardData": {"license": repo["license"]}, "tags": [f"license:{repo['license']}"]}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
                if repo["gated"] and self.headers.get("Authorization") != "Bearer hf_granted":
                    return self._error(403, "GatedRepo")
                data = repo["files"].get(resolve[3])
                if data is None:
                    return self._error(404, "EntryNotFound")
                headers = {"X-Repo-Commit": repo["sha"], "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                           "Accept-Ranges": "bytes"}
                ranged = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if ranged and self.command == "GET":
                    start = int(ranged[1])
                    end = min(int(ranged[2]) if ranged[2] else len(data) - 1, len(data) - 1)
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    return self._send(206, data[start:end + 1], headers)
                return self._send(200, data, headers)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo_id: str, folder: Path | None = None, *, gated: bool = False, license: str = "apache-2.0",
            extra: dict[str, bytes] | None = None) -> str:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder else {}
        files.update(extra or {})
        sha = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = {"files": files, "gated": gated, "license": license, "sha": sha}
        return sha
