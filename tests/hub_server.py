"""A loopback stand-in for the Hugging Face Hub: enough of its HTTP API for huggingface_hub's own client to create
model repos, commit to them and download from them, so that tests push and load models by repo id offline.

Served (model repos only, branch `main` or a commit id as revision):
    POST /api/repos/create                              create a repo (409 when it exists)
    POST /api/validate-yaml                             a README's metadata: YAML, and a model-index the client parses
    POST /api/models/{repo}/preupload/{rev}             upload mode per file: "lfs" or "regular"
    POST /{repo}.git/info/lfs/objects/batch             LFS batch API: where to PUT each new object
    PUT  /lfs/{sha256}                                   an LFS object's bytes (checked against its sha256)
    POST /api/models/{repo}/commit/{rev}                 an ndjson commit (files inline, LFS files by oid)
    GET  /api/models/{repo}[/revision/{rev}]            model info (sha, private, siblings)
    HEAD/GET /{repo}/resolve/{rev}/{path}               a file, with the headers huggingface_hub reads

Writes need `Authorization: Bearer <token>` with a token of the repo's namespace; reading a private repo too.
Errors carry the `X-Error-Code`/`X-Error-Message` headers the client turns into its exceptions. Blobs are stored
by sha256 and each repo's commits (every commit's whole file list) as JSON under `root`, so tests read exactly
what each commit held. Uploads go through the LFS protocol: set `HF_HUB_DISABLE_XET=1` in the client.
"""

import base64
import hashlib
import json
import re
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from huggingface_hub import RepoCard
from huggingface_hub.repocard_data import model_index_to_eval_results

REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
# Files the Hub's default .gitattributes stores in LFS (a subset), and any file over the Hub's 10 MB limit.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".model", ".npy")
LFS_MIN_SIZE = 10 * 1024 * 1024


def is_lfs(path, size):
    """Whether the Hub stores a file of this name and size in LFS."""
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


class HubError(Exception):
    def __init__(self, status, message, code=None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Hub:
    """The repos and blobs under `root`; `tokens` maps each valid token to its user name."""

    def __init__(self, root, tokens):
        self.root, self.tokens = Path(root), dict(tokens)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def repo_file(self, repo_id):
        return self.root / "repos" / f"{repo_id}.json"

    def repo(self, repo_id):
        """{"private": bool, "commits": [{"oid", "message", "files": {path: sha256}}]}, oldest commit first."""
        path = self.repo_file(repo_id)
        if not path.exists():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return json.loads(path.read_text())

    def save_repo(self, repo_id, repo):
        path = self.repo_file(repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(repo, indent=1))

    def blob(self, sha256):
        return self.root / "blobs" / sha256

    def store_blob(self, data):
        sha256 = hashlib.sha256(data).hexdigest()
        self.blob(sha256).write_bytes(data)
        return sha256

    def user(self, authorization):
        """The user a `Bearer` token belongs to, None without a token; 401 for an unknown token."""
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def check_write(self, repo_id, user):
        if user is None or repo_id.split("/")[0] != user:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")

    def readable(self, repo_id, user):
        repo = self.repo(repo_id)
        if repo["private"] and user != repo_id.split("/")[0]:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")  # as the Hub hides private repos
        return repo

    def commit_at(self, repo, revision):
        if revision == "main":
            return repo["commits"][-1]
        for commit in repo["commits"]:
            if commit["oid"] == revision:
                return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def files(self, repo_id, commit=-1):
        """{path: bytes} of a repo at one of its commits (default: the last), for tests."""
        files = self.repo(repo_id)["commits"][commit]["files"]
        return {path: self.blob(sha256).read_bytes() for path, sha256 in files.items()}

    def commits(self, repo_id):
        return self.repo(repo_id)["commits"]

    def create(self, body, user):
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        repo_id = f"{body.get('organization') or user}/{body['name']}"
        self.check_write(repo_id, user)
        with self.lock:
            if self.repo_file(repo_id).exists():
                raise HubError(409, "You already created this model repo")
            gitattributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
            self.save_repo(repo_id, {"private": body.get("visibility") == "private", "commits": []})
            self.commit(repo_id, "initial commit", [("file", {"path": ".gitattributes", "bytes": gitattributes.encode()})])
        return repo_id

    def commit(self, repo_id, message, operations):
        """Apply `operations` ((key, value) pairs of the ndjson payload) to the last commit; returns the new oid."""
        repo = self.repo(repo_id)
        files = dict(repo["commits"][-1]["files"]) if repo["commits"] else {}
        for key, value in operations:
            if key == "file":
                files[value["path"]] = self.store_blob(value.get("bytes") or base64.b64decode(value["content"]))
            elif key == "lfsFile":
                if not self.blob(value["oid"]).exists():
                    raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = value["oid"]
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: s for p, s in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        parent = repo["commits"][-1]["oid"] if repo["commits"] else ""
        oid = hashlib.sha1(json.dumps([parent, message, files], sort_keys=True).encode()).hexdigest()
        repo["commits"].append({"oid": oid, "message": message, "files": files})
        self.save_repo(repo_id, repo)
        return oid


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

    def log_message(self, format, *args):  # the server's log is `requests`, not stderr
        pass

    @property
    def hub(self):
        return self.server.hub

    def do_HEAD(self):
        self.route("HEAD")

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def routes(self):
        """(method, pattern, handler) triples; the first match serves the request."""
        return (
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})", self.lfs_upload),
            ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", self.commit),
            ("GET", rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?", self.model_info),
            ("GET", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve),
            ("HEAD", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve),
        )

    def route(self, method):
        self._body = None  # one handler serves every request of a keep-alive connection
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append((method, path))
        try:
            for allowed, pattern, handler in self.routes():
                match = re.fullmatch(pattern, path)
                if allowed == method and match:
                    return handler(**match.groupdict())
            raise HubError(404, f"{method} {path} is not served by this test Hub")
        except Exception as err:  # a bug here must reach the test as an answer, not a dropped connection
            if not isinstance(err, HubError):
                self.server.errors.append(traceback.format_exc())
                err = HubError(500, f"test Hub failure: {err!r}")
            self.body()  # read what was sent, so the connection stays usable
            headers = {"X-Error-Message": err.message, **({"X-Error-Code": err.code} if err.code else {})}
            self.reply(err.status, {"error": err.message}, headers)

    def body(self):
        """The request's bytes (Content-Length or chunked); read at most once."""
        if self._body is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                self._body = b"".join(chunks)
            else:
                self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def reply(self, status, payload=b"", headers=None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def user(self):
        return self.hub.user(self.headers.get("Authorization"))

    def url(self, path):
        return f"http://{self.server.server_address[0]}:{self.server.server_address[1]}{path}"

    def create_repo(self):
        repo_id = self.hub.create(json.loads(self.body()), self.user())
        self.reply(200, {"url": self.url(f"/{repo_id}"), "name": repo_id})

    def validate_yaml(self):
        """400 with the Hub's `errors` list when the README's metadata is not a YAML mapping or its model-index does
        not parse back into evaluation results."""
        content = json.loads(self.body())["content"]
        try:
            metadata = RepoCard(content).data.to_dict()
            if "model-index" in metadata:
                model_index_to_eval_results(metadata["model-index"])
        except Exception as err:  # whatever the parsers raise is the error the Hub would report
            raise HubError(400, f"Invalid metadata: {err}") from None
        self.reply(200, {"errors": [], "warnings": [] if metadata else [{"message": "empty or missing yaml metadata"}]})

    def preupload(self, repo, rev):
        self.hub.check_write(repo, self.user())
        self.hub.repo(repo)
        files = json.loads(self.body())["files"]
        modes = [{"path": f["path"], "shouldIgnore": False,
                  "uploadMode": "lfs" if is_lfs(f["path"], f["size"]) else "regular"}
                 for f in files]
        self.reply(200, {"files": modes})

    def lfs_batch(self, repo):
        self.hub.check_write(repo, self.user())
        objects = [{"oid": o["oid"], "size": o["size"], "authenticated": True,
                    **({} if self.hub.blob(o["oid"]).exists() else
                       {"actions": {"upload": {"href": self.url(f"/lfs/{o['oid']}")}}})}
                   for o in json.loads(self.body())["objects"]]
        self.reply(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_upload(self, oid):
        data = self.body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"the uploaded bytes do not hash to {oid}")
        self.hub.store_blob(data)
        self.reply(200)

    def commit(self, repo, rev):
        self.hub.check_write(repo, self.user())
        lines = [json.loads(line) for line in self.body().splitlines() if line.strip()]
        header, operations = lines[0]["value"], [(line["key"], line["value"]) for line in lines[1:]]
        with self.hub.lock:
            oid = self.hub.commit(repo, header["summary"], operations)
        self.reply(200, {"commitUrl": self.url(f"/{repo}/commit/{oid}"), "commitOid": oid, "pullRequestUrl": None})

    def model_info(self, repo, rev=None):
        info = self.hub.readable(repo, self.user())
        commit = self.hub.commit_at(info, rev or "main")
        self.reply(200, {"id": repo, "modelId": repo, "sha": commit["oid"], "private": info["private"],
                         "siblings": [{"rfilename": path} for path in sorted(commit["files"])], "tags": []})

    def resolve(self, repo, rev, path):
        commit = self.hub.commit_at(self.hub.readable(repo, self.user()), rev)
        if path not in commit["files"]:
            raise HubError(404, f"{path} does not exist at {rev}", "EntryNotFound")
        sha256 = commit["files"][path]
        data = self.hub.blob(sha256).read_bytes()
        headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit["oid"], "ETag": f'"{sha256}"'}
        if is_lfs(path, len(data)):
            headers.update({"X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data))})
        self.reply(200, data, headers)


class HubServer(ThreadingHTTPServer):
    """The test Hub on 127.0.0.1 at a free port, served from a thread: `with HubServer(root, tokens) as hub:`;
    `hub.endpoint` is the value for HF_ENDPOINT, `hub.requests` every (method, path) received,
    `hub.errors` the tracebacks of requests the server failed on."""

    daemon_threads = True

    def __init__(self, root, tokens):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hub = Hub(root, tokens)
        self.requests, self.errors = [], []
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
