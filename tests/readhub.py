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

    Dataset repos (`add_dataset`) are served the way `datasets.load_dataset` (through HfFileSystem) reads them:
    `/api/datasets/{id}[/revision/{rev}]`, `/api/datasets/{id}/tree/{rev}[/{path}]` (recursive or not),
    `POST /api/datasets/{id}/paths-info/{rev}` and `/datasets/{id}/resolve/{rev}/{file}`. A request for any
    other path is answered 404 and kept in `unknown`, so a test sees what a library asked that is not served.
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.datasets: dict[str, dict] = {}
        self.auth_seen: list[str | None] = []
        self.paths_seen: list[str] = []
        self.unknown: list[str] = []  # "METHOD path" of requests no route answers
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

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hub.auth_seen.append(self.headers.get("Authorization"))
                path = unquote(urlsplit(self.path).path)
                hub.paths_seen.append(path)
                info = re.match(r"^/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)$", path)
                if not info:
                    hub.unknown.append(f"POST {self.path}")
                    return self._error(404, "EntryNotFound")
                repo = self._dataset(info[1], info[2])
                if repo is None:
                    return None
                if "json" in (self.headers.get("Content-Type") or ""):
                    wanted = json.loads(body or b"{}").get("paths", [])
                else:
                    wanted = parse_qs(body.decode()).get("paths", [])
                wanted = [wanted] if isinstance(wanted, str) else wanted
                found = [entry for entry in _entries(repo["files"]) if entry["path"] in {w.strip("/") for w in wanted}]
                return self._send(200, json.dumps(found).encode(), {"Content-Type": "application/json"})

            def _dataset(self, repo_id, revision):
                """The dataset repo, or None once the Hub's error for a missing repo / revision was sent."""
                repo = hub.datasets.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound")
                    return None
                if (revision or "main") not in ("main", repo["sha"]):
                    self._error(404, "RevisionNotFound")
                    return None
                return repo

            def _dataset_get(self, path):
                """Answer a dataset GET (True), or False when the path is not a dataset route."""
                api = re.match(r"^/api/datasets/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(?:/(.*))?)?$", path)
                resolve = re.match(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if not api and not resolve:
                    return False
                repo_id, revision = (api[1], api[3]) if api else (resolve[1], resolve[2])
                repo = self._dataset(repo_id, revision)
                if repo is None:
                    return True
                if api and api[2] == "tree":
                    query = parse_qs(urlsplit(self.path).query)
                    recursive = (query.get("recursive") or ["false"])[0].lower() == "true"
                    prefix = (api[4] or "").strip("/")
                    listing = [entry for entry in _entries(repo["files"])
                               if (not prefix or entry["path"].startswith(prefix + "/"))
                               and (recursive or "/" not in entry["path"][len(prefix) + 1 if prefix else 0:])]
                    if prefix and not listing:
                        self._error(404, "EntryNotFound")
                        return True
                    self._send(200, json.dumps(listing).encode(), {"Content-Type": "application/json"})
                    return True
                if api:
                    info = {"id": repo_id, "sha": repo["sha"], "private": False, "gated": False, "disabled": False,
                            "siblings": [{"rfilename": name} for name in sorted(repo["files"])],
                            "cardData": repo["card"], "tags": []}
                    self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
                    return True
                data = repo["files"].get(resolve[3])
                if data is None:
                    self._error(404, "EntryNotFound")
                    return True
                headers = {"X-Repo-Commit": repo["sha"], "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                           "Accept-Ranges": "bytes"}
                ranged = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if ranged and self.command == "GET":
                    start = int(ranged[1])
                    end = min(int(ranged[2]) if ranged[2] else len(data) - 1, len(data) - 1)
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    self._send(206, data[start:end + 1], headers)
                    return True
                self._send(200, data, headers)
                return True

            def do_GET(self):  # noqa: N802
                hub.auth_seen.append(self.headers.get("Authorization"))
                path = unquote(urlsplit(self.path).path)
                hub.paths_seen.append(path)
                if self._dataset_get(path):
                    return None
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
                if repo_id is None:
                    hub.unknown.append(f"{self.command} {self.path}")
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

    def add_dataset(self, repo_id: str, files: dict[str, bytes], *, card: dict | None = None) -> str:
        """A public dataset repo of these files (a README.md with `configs:` front matter names its configs)."""
        sha = hashlib.sha1(("dataset:" + repo_id).encode()).hexdigest()
        self.datasets[repo_id] = {"files": dict(files), "sha": sha, "card": card or {}}
        return sha


def _entries(files: dict[str, bytes]) -> list[dict]:
    """The Hub's tree entries for a repo's files: every file and every folder above one, sorted by path."""
    entries = {}
    for name, data in files.items():
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            entries[folder] = {"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest(),
                               "size": 0}
        entries[name] = {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
    return [entries[path] for path in sorted(entries)]
