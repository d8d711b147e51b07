"""A task's files over HTTP: list, read (with a range), properties."""

from __future__ import annotations

import os
import stat
import urllib.parse
from pathlib import Path

from starlette.responses import Response

from .. import exceptions as exc
from ..state.common import http_date, iso


class FileHandlers:
    def list_task_files(self, request, body):
        job_id, task_id = request.path_params["jobId"], request.path_params["taskId"]
        root = self.backend.task_dir(job_id, task_id)
        recursive = request.query_params.get("recursive", "").lower() == "true"
        base = f"{self._base()}/jobs/{job_id}/tasks/{task_id}/files/"
        entries = []
        for i, path in enumerate(_walk(root, recursive), start=1):
            entries.append(_FileEntry(i, path, path.relative_to(root).as_posix()))
        return self.page(request, entries, {"name": lambda f: f.name},
                         lambda f: _file_json(f, base), "files")

    def _task_file(self, request) -> tuple[Path, os.stat_result]:
        job_id, task_id = request.path_params["jobId"], request.path_params["taskId"]
        root = self.backend.task_dir(job_id, task_id)
        rel = request.path_params["filePath"]
        path = (root / rel).resolve()
        if path != root.resolve() and root.resolve() not in path.parents:
            raise exc.FileNotFound()
        try:
            st = path.stat()
        except OSError:
            raise exc.FileNotFound() from None
        return path, st

    def _file_headers(self, request, path: Path, st: os.stat_result) -> dict:
        # As recorded: no ETag, "True"/"False", the file URL percent-encoded as a whole.
        headers = self._headers(request, modified=st.st_mtime_ns // 1000)
        rel = request.path_params["filePath"]
        url = (f"{self._base()}/jobs/{request.path_params['jobId']}/tasks/"
               f"{request.path_params['taskId']}/files/{rel}")
        headers.update({
            "ocp-creation-time": http_date(st.st_ctime_ns // 1000),
            "ocp-batch-file-isdirectory": "True" if stat.S_ISDIR(st.st_mode) else "False",
            "ocp-batch-file-url": urllib.parse.quote(url, safe=""),
            "ocp-batch-file-mode": f"{stat.S_IMODE(st.st_mode) | stat.S_IFMT(st.st_mode):o}",
        })
        return headers

    def get_task_file(self, request, body):
        path, st = self._task_file(request)
        if stat.S_ISDIR(st.st_mode):
            raise exc.FileNotFound(message="The path names a directory, not a file.")
        headers = self._file_headers(request, path, st)
        start, end = 0, st.st_size - 1
        wanted = request.headers.get("ocp-range")
        if wanted and wanted.startswith("bytes="):
            lo, _, hi = wanted[6:].partition("-")
            start = int(lo) if lo else 0
            end = min(int(hi), end) if hi else end
        with open(path, "rb") as f:   # task logs are small; a range keeps big files cheap
            f.seek(start)
            data = f.read(max(0, end - start + 1))
        # Set as a header: Starlette would add "; charset=utf-8" to a text/ media type.
        headers["Content-Type"] = _content_type(path)
        return Response(data, status_code=200, headers=headers)

    def get_task_file_properties(self, request, body):
        path, st = self._task_file(request)
        headers = self._file_headers(request, path, st)
        headers["Content-Length"] = str(0 if stat.S_ISDIR(st.st_mode) else st.st_size)
        headers["Content-Type"] = _content_type(path)
        return Response(b"", status_code=200, headers=headers)


class _FileEntry:
    __slots__ = ("seq", "path", "name")

    def __init__(self, seq, path, name):
        self.seq, self.path, self.name = seq, path, name



def _walk(root: Path, recursive: bool):
    if not recursive:
        yield from sorted(root.iterdir())
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield Path(dirpath) / name



def _content_type(path: Path) -> str:
    # Recorded: the node agent serves .txt files (stdout.txt, stderr.txt) as text/plain.
    return "text/plain" if path.suffix.lower() == ".txt" else "application/octet-stream"


def _file_json(entry: _FileEntry, base: str) -> dict:
    try:
        st = entry.path.stat()
    except OSError:
        st = None
    is_dir = st is not None and stat.S_ISDIR(st.st_mode)
    body = {"name": entry.name, "url": base + urllib.parse.quote(entry.name), "isDirectory": is_dir}
    if st is not None and not is_dir:   # recorded: directories come without properties
        body["properties"] = {
            "creationTime": iso(st.st_ctime_ns // 1000), "lastModified": iso(st.st_mtime_ns // 1000),
            "contentLength": str(st.st_size), "contentType": _content_type(entry.path),
            "fileMode": f"{stat.S_IMODE(st.st_mode) | stat.S_IFMT(st.st_mode):o}",
        }
    return body

