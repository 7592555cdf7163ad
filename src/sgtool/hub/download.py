"""Resumable HTTP downloads into a `.part` file, including Google Drive's confirmation step.

A dropped connection is resumed with `Range: bytes=N-` (guarded by `If-Range` with the ETag the
first response carried, so a file that changed upstream restarts from zero instead of being
spliced). Google Drive answers large files with an HTML "can't scan for viruses" page: the
real download URL comes from its `download_warning` cookie, its download form, or a `confirm=`
link; any other HTML page is an error, never a checkpoint.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from html import unescape
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from urllib.request import HTTPCookieProcessor, Request, build_opener

from .. import __version__
from ..errors import SgtoolError
from ..utils.records import read_json

CHUNK = 1 << 20
TIMEOUT_S = 60.0          # per socket operation: a stalled connection fails instead of hanging
RETRIES = 5               # resumptions after a dropped connection within one call
BACKOFF_S = 1.0           # first pause before retrying; doubles, capped at 16 s
MAX_CONFIRM_HOPS = 3      # Google Drive needs one; more means we are going round in circles
MAX_PAGE_BYTES = 2 << 20  # how much of an HTML answer we read to look for a confirm token


class DownloadError(SgtoolError):
    """The server could not give us the file (network, HTTP status, truncated transfer)."""


class HtmlPageError(DownloadError):
    """The server answered with a web page instead of the file; nothing of it is kept."""


class IntegrityError(DownloadError):
    """A complete download whose size or SHA-256 is wrong; nothing of it is kept."""


def fetch_to_part(url: str, part: Path, expected_size: int | None = None, progress=None, label: str = "") -> None:
    """Download `url` into `part`, resuming what is already there; returns once `part` is complete.

    `progress` is a rich Progress (or None). Raises DownloadError / HtmlPageError.
    """
    meta_path = part.with_name(part.name + ".json")
    meta = _read_meta(meta_path)
    if part.exists() and meta.get("url") != url:
        part.unlink()  # a partial file from another URL cannot be continued safely
    jar = CookieJar()
    opener = build_opener(HTTPCookieProcessor(jar))
    request_url, hops, failures = url, 0, 0
    task = progress.add_task(label or part.stem, total=expected_size) if progress is not None else None
    while True:
        start = part.stat().st_size if part.exists() else 0
        if expected_size is not None and start == expected_size:
            return
        headers = {"User-Agent": f"sgtool/{__version__}", "Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
            if meta.get("etag"):
                headers["If-Range"] = meta["etag"]
        try:
            response = opener.open(Request(request_url, headers=headers), timeout=TIMEOUT_S)
        except HTTPError as exc:
            if exc.code == 416 and start:
                if _content_range_total(exc) == start:
                    return  # the partial file was already complete (interrupted before its rename)
                part.unlink()  # our partial file is longer than the remote one: start again
                failures += 1
                if failures > RETRIES:
                    raise DownloadError(f"{url}: the server refuses to resume (HTTP 416)") from None
                continue
            failures += 1
            if exc.code not in _TRANSIENT_STATUS or failures > RETRIES:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            _pause(failures)
            continue
        except (URLError, OSError, http.client.HTTPException) as exc:
            failures += 1
            if failures > RETRIES or _is_permanent(exc):
                raise DownloadError(f"{url}: {_reason(exc)}") from None
            _pause(failures)
            continue
        with response:
            if "text/html" in response.headers.get("Content-Type", "").lower():
                page = response.read(MAX_PAGE_BYTES)
                next_url = drive_confirm_url(response.geturl(), page, jar)
                if next_url is None or hops >= MAX_CONFIRM_HOPS:
                    raise HtmlPageError(f"{url} returned an HTML page ({describe_page(page)}) instead of the "
                                        "checkpoint; it was not cached")
                request_url, hops = next_url, hops + 1
                continue
            resumed = response.status == 206
            if resumed and _content_range_start(response) != start:
                part.unlink()
                failures += 1
                if failures > RETRIES:
                    raise DownloadError(f"{url}: the server resumed at the wrong offset")
                continue
            if not resumed:
                start = 0  # the server sent the whole file (no range support, or it changed)
            total = _total_size(response, start)
            if expected_size is not None and total is not None and total != expected_size:
                raise IntegrityError(f"{url} offers {total} bytes but the registry expects {expected_size}; "
                                     "the file changed upstream or the URL is wrong")
            meta = {"url": url, "etag": response.headers.get("ETag"),
                    "last_modified": response.headers.get("Last-Modified")}
            meta_path.write_text(json.dumps(meta))
            if task is not None:
                progress.update(task, total=total, completed=start)
            received = start
            try:
                with open(part, "ab" if resumed else "wb") as out:
                    while block := _read_block(response):
                        try:
                            out.write(block)
                        except OSError as exc:  # disk full, permissions: retrying will not help
                            raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
                        received += len(block)
                        if task is not None:
                            progress.update(task, completed=received)
            except _ConnectionLost as lost:
                exc = lost.__cause__
                failures += 1
                if failures > RETRIES:
                    raise DownloadError(f"{url}: connection lost after {received} bytes ({_reason(exc)}); "
                                        "run the command again to resume") from None
                _pause(failures)
                continue
        if total is not None and received < total:
            # http.client returns a short body without raising when the server hangs up early.
            failures += 1
            if failures > RETRIES:
                raise DownloadError(f"{url}: connection lost after {received} of {total} bytes; "
                                    "run the command again to resume")
            _pause(failures)
            continue
        return


class _ConnectionLost(Exception):
    pass


def _read_block(response) -> bytes:
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as exc:
        raise _ConnectionLost() from exc


def drive_confirm_url(url: str, page: bytes, jar: CookieJar) -> str | None:
    """The URL that actually downloads a Google Drive file, from its warning page; None if not such a page."""
    for cookie in jar:
        if cookie.name.startswith("download_warning"):
            return _with_query(url, confirm=cookie.value)
    text = page.decode("utf-8", "replace")
    form = re.search(r"<form\b[^>]*\bid=[\"']download-form[\"'][^>]*>(.*?)</form>", text, re.S | re.I)
    if form:
        action = re.search(r"\baction=[\"']([^\"']+)[\"']", form.group(0), re.I)
        fields = []
        for tag in re.findall(r"<input\b[^>]*>", form.group(1), re.I):
            name = re.search(r"\bname=[\"']([^\"']*)[\"']", tag, re.I)
            value = re.search(r"\bvalue=[\"']([^\"']*)[\"']", tag, re.I)
            if name:
                fields.append((unescape(name.group(1)), unescape(value.group(1)) if value else ""))
        if action and fields:
            return urljoin(url, unescape(action.group(1))) + "?" + urlencode(fields)
    link = re.search(r"href=[\"']([^\"']*[?&](?:amp;)?confirm=[0-9A-Za-z_\-]+[^\"']*)[\"']", text)
    if link:
        return urljoin(url, unescape(link.group(1)))
    return None


def describe_page(page: bytes) -> str:
    """A short human reason for an HTML answer: Drive's quota page, a sign-in wall, or its title."""
    text = page.decode("utf-8", "replace")
    lowered = text.lower()
    if "quota" in lowered or "too many users have viewed or downloaded" in lowered:
        return "Google Drive's download quota for this file is used up; try again in a day or download it by hand"
    if "accounts.google.com" in lowered and "signin" in lowered:
        return "the file needs a Google sign-in"
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.S | re.I)
    return f"title {unescape(title.group(1)).strip()[:80]!r}" if title else "no title"


def _with_query(url: str, **params) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _content_range_start(response) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _content_range_total(response) -> int | None:
    match = re.match(r"bytes\s+[\d*-]+/(\d+)", response.headers.get("Content-Range", "") or "")
    return int(match.group(1)) if match else None


def _total_size(response, start: int) -> int | None:
    total = _content_range_total(response)
    if total is not None:
        return total
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _read_meta(path: Path) -> dict:
    try:
        meta = read_json(path)
    except (FileNotFoundError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


_TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)


def _is_permanent(exc: BaseException) -> bool:
    """No network, unknown host, nobody listening: retrying within this call will not help."""
    inner = getattr(exc, "reason", exc)
    return isinstance(inner, (socket.gaierror, ConnectionRefusedError))


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None)
    if isinstance(inner, BaseException):
        exc = inner
    if isinstance(exc, socket.timeout):
        return f"no data for {TIMEOUT_S:g} s"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host name (no network or DNS)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _pause(failures: int) -> None:
    if BACKOFF_S > 0:
        time.sleep(min(BACKOFF_S * 2 ** (failures - 1), 16.0))
