"""A local HTTP server that speaks the part of the Hub API a push uses, and records every request.

The Hub is unreachable here, so publish tests point `HF_ENDPOINT` (or `HfApi(endpoint=...)`) at this
server and drive the real `huggingface_hub` upload code against it: repo creation, the preupload
call, the legacy LFS batch + PUT (run with `HF_HUB_DISABLE_XET=1`; xet needs the Hub's CAS
servers) and the commit. The server stores what it received so a test can check file names,
sizes and bytes, and scan everything it saw for a token.

It also takes Jobs (`run_job`: POST /api/jobs/<namespace>, `inspect_job`: GET /api/jobs/<namespace>/<id>): a job
request is recorded as sent (image, command, flavour, timeout, volumes, environment, secrets) and nothing runs;
a test plays the Job itself and moves its stage with `FakeHub.set_job_stage`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".png", ".zip")


@dataclass
class HubRecord:
    """What the fake Hub has seen: created repos, committed files (path → bytes) and raw requests."""

    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id → {"namespace", "spec", "stage"}


class _HubHandler(BaseHTTPRequestHandler):
    """The request handler; `_handler_for` binds it to one server's record and lock."""

    protocol_version = "HTTP/1.1"
    record: HubRecord
    lock: threading.Lock

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        return

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: bytes) -> None:
        with self.lock:
            self.record.requests.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
            )

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._record(b"")
        if self.path.startswith("/api/whoami"):
            self._reply(200, {"type": "user", "name": "tester", "auth": {"accessToken": {"role": "write"}}})
            return
        if self.path.startswith("/api/jobs/"):
            job_id = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            with self.lock:
                job = self.record.jobs.get(job_id)
            if job is not None:
                self._reply(200, _job_info(job_id, job))
                return
        self._reply(404, {"error": "not found"}, {"X-Error-Code": "RepoNotFound"})

    def do_PUT(self) -> None:  # noqa: N802
        body = self._body()
        self._record(body)
        if self.path.startswith("/lfs-upload/"):
            oid = self.path.rsplit("/", 1)[-1]
            if hashlib.sha256(body).hexdigest() != oid:
                self._reply(400, {"error": "sha256 mismatch"})
                return
            with self.lock:
                self.record.lfs_objects[oid] = body
            self._reply(200, {})
            return
        self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        self._record(body)
        path = self.path.split("?", 1)[0]
        if path == "/api/repos/create":
            self._create_repo(body)
        elif path == "/api/validate-yaml":  # the Hub checks a README's card metadata before a commit
            self._reply(200, {"errors": [], "warnings": []})
        elif path.startswith("/api/models/") and "/preupload/" in path:
            self._preupload(body)
        elif path.endswith(".git/info/lfs/objects/batch"):
            self._lfs_batch(body)
        elif path.startswith("/api/jobs/") and path.count("/") == 3:
            self._run_job(path.rsplit("/", 1)[-1], body)
        elif path.startswith("/api/models/") and "/commit/" in path:
            repo_id = path[len("/api/models/") :].split("/commit/")[0]
            self._commit(repo_id, body)
        else:
            self._reply(404, {"error": "not found"})

    def _create_repo(self, body: bytes) -> None:
        request = json.loads(body or b"{}")
        repo_id = f"{request.get('organization') or 'tester'}/{request['name']}"
        with self.lock:
            self.record.repos[repo_id] = request
            self.record.files.setdefault(repo_id, {})
        self._reply(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id, "id": repo_id})

    def _preupload(self, body: bytes) -> None:
        """Tell the client which files go through LFS (by suffix, as the Hub's .gitattributes would)."""
        files = json.loads(body)["files"]
        modes = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                "shouldIgnore": False,
                "oid": None,
            }
            for f in files
        ]
        self._reply(200, {"files": modes})

    def _lfs_batch(self, body: bytes) -> None:
        """Send every LFS object to this server's own upload URL (the basic transfer adapter)."""
        objects = json.loads(body)["objects"]
        host = self.headers["Host"]
        actions = [
            {
                "oid": o["oid"],
                "size": o["size"],
                "actions": {"upload": {"href": f"http://{host}/lfs-upload/{o['oid']}"}},
            }
            for o in objects
        ]
        self._reply(200, {"transfer": "basic", "objects": actions})

    def _commit(self, repo_id: str, body: bytes) -> None:
        added: dict[str, bytes] = {}
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            value = entry.get("value", {})
            if entry.get("key") == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif entry.get("key") == "lfsFile":
                blob = self.record.lfs_objects.get(value["oid"])
                if blob is None or len(blob) != value["size"]:
                    self._reply(422, {"error": f"LFS object for {value['path']} was never uploaded"})
                    return
                added[value["path"]] = blob
        with self.lock:
            self.record.files.setdefault(repo_id, {}).update(added)
        self._reply(200, {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/1", "commitOid": "1" * 40})


    def _run_job(self, namespace: str, body: bytes) -> None:
        """Record a job request as the client sent it and answer as the Jobs API does (stage SCHEDULING)."""
        with self.lock:
            job_id = f"job{len(self.record.jobs) + 1:021d}"
            self.record.jobs[job_id] = {"namespace": namespace, "spec": json.loads(body or b"{}"), "stage": "SCHEDULING"}
            job = self.record.jobs[job_id]
        self._reply(200, _job_info(job_id, job))


def _job_info(job_id: str, job: dict[str, Any]) -> dict[str, Any]:
    """A Jobs API answer for a recorded job; secrets come back as names only, as the Hub shows them."""
    spec = job["spec"]
    return {
        "id": job_id, "createdAt": "2026-01-01T00:00:00.000Z", "spaceId": spec.get("spaceId"),
        "dockerImage": spec.get("dockerImage"), "command": spec.get("command"), "arguments": spec.get("arguments"),
        "environment": spec.get("environment"), "secrets": {name: None for name in spec.get("secrets", {})},
        "flavor": spec.get("flavor"), "labels": spec.get("labels"), "volumes": spec.get("volumes"),
        "status": {"stage": job["stage"], "message": None},
        "owner": {"id": "0" * 24, "name": job["namespace"], "type": "user"},
    }


def _handler_for(record: HubRecord, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to one server's record and lock (http.server makes one handler per request)."""
    return type("Handler", (_HubHandler,), {"record": record, "lock": lock})


class FakeHub:
    """Context manager: `with FakeHub() as hub: HfApi(endpoint=hub.url, ...)`; then inspect `hub.record`."""

    def __init__(self) -> None:
        self.record = HubRecord()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self.record, self._lock))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_job_stage(self, job_id: str, stage: str) -> None:
        """Move a recorded job on (RUNNING, COMPLETED, ERROR, …), standing in for the Jobs scheduler."""
        with self._lock:
            self.record.jobs[job_id]["stage"] = stage

    def forget_job(self, job_id: str) -> None:
        """Drop a recorded job, as the Hub does with a deleted one or one past its retention: it answers 404."""
        with self._lock:
            del self.record.jobs[job_id]

    def everything_seen(self) -> bytes:
        """All request lines, headers and bodies, for scanning (e.g. that a token appears only in auth headers)."""
        chunks = []
        for request in self.record.requests:
            chunks.append(request["path"].encode())
            chunks.append(json.dumps({k: v for k, v in request["headers"].items() if k.lower() != "authorization"}).encode())
            chunks.append(request["body"])
        return b"\n".join(chunks)
