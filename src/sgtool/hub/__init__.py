"""Public checkpoints by name: the registry, a verified download cache, and name -> path resolution.

    path = resolve_checkpoint("stylegan3-r-ffhq-1024")   # downloads on first use
    path = resolve_checkpoint("my_generator.pkl")        # an existing file is returned as is

Offline (`offline=True`, or SGTOOL_OFFLINE=1) never touches the network: a missing file is one
line naming the URL, the target path and how to put the file there by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import CheckpointError, SgtoolError
from .cache import (
    cached_path,
    file_looks_like_html,
    file_sha256,
    lock_path,
    models_dir,
    part_path,
    read_record,
    record_path,
    sgtool_home,
    write_record,
)
from .download import DownloadError, HtmlPageError, IntegrityError, fetch_to_part
from .registry import (BUILTIN_GENERATOR_NAMES, KINDS, ModelEntry, find_entry, get_entry, load_registry,
                       registry_path)

OFFLINE_ENV = "SGTOOL_OFFLINE"
LOCK_TIMEOUT_S = 6 * 3600.0  # another process may be fetching a multi-GB file on a slow link

__all__ = [
    "DownloadError", "HtmlPageError", "IntegrityError", "KINDS", "ModelEntry", "cached_path", "copy_into",
    "ensure_model", "entry_for_url", "find_entry", "get_entry", "is_offline", "is_registry_reference",
    "load_registry", "manual_hint", "models_dir", "record_path", "registry_path", "resolve_checkpoint",
    "resolve_reference",
    "sgtool_home", "verify_model",
]


def is_offline(offline: bool | None = None) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def manual_hint(entry: ModelEntry) -> str:
    source = entry.page or entry.urls[0]
    return f"download it by hand from {source} and save it as {cached_path(entry)}"


def resolve_checkpoint(name_or_path, offline: bool | None = None, kind: str | None = None,
                       registry: str | os.PathLike | None = None, progress: bool | None = None) -> Path:
    """An existing file as is; a registry name (or registry URL) as its cached file, downloaded first unless offline."""
    path = Path(str(name_or_path)).expanduser()
    if path.exists():
        return path
    entry = find_entry(str(name_or_path), registry) or entry_for_url(str(name_or_path), registry)
    if entry is None:
        raise CheckpointError(f"{name_or_path} is neither an existing file nor a model registry name "
                              "(`sgtool models list` shows the names)")
    # An encoder checkpoint holds the generator it inverts into: its decoder serves wherever a generator does.
    if kind is not None and entry.kind != kind and not (kind == "generator" and entry.kind == "encoder"):
        article = "an" if entry.kind[0] in "aeiou" else "a"
        raise SgtoolError(f"{entry.name} is {article} {entry.kind} checkpoint, not a {kind}; "
                          f"`sgtool models list --kind {kind}` shows the {kind}s")
    return ensure_model(entry, offline=offline, progress=progress)


def resolve_reference(ref, kind: str | None = None) -> str:
    """What a checkpoint option names, as something to open: an existing file's path, a built-in test
    generator's name, or a registry name's cached file (downloaded first unless offline).

    The one place names are resolved; commands call it for every checkpoint setting before any work.
    """
    text = str(ref).strip()
    if not text:
        raise SgtoolError(f"the {kind or 'checkpoint'} name is empty; give a file, a registry name "
                          "(`sgtool models list`) or a built-in test model")
    path = Path(text).expanduser()
    if path.exists():
        return str(path)
    if kind in (None, "generator") and text in BUILTIN_GENERATOR_NAMES:
        return text
    entry = find_entry(text) or entry_for_url(text)
    if entry is None:
        builtins = f", or a built-in test model ({', '.join(BUILTIN_GENERATOR_NAMES)})" if kind in (None, "generator") \
            else ""
        raise CheckpointError(f"{text} does not exist and is not a model registry name; give a checkpoint file, a "
                              f"registry name (`sgtool models list{f' --kind {kind}' if kind else ''}`){builtins}")
    return str(resolve_checkpoint(text, kind=kind))


def ensure_model(entry: ModelEntry | str, offline: bool | None = None, force: bool = False,
                 progress: bool | None = None, registry: str | os.PathLike | None = None) -> Path:
    """The cached, verified file of `entry`, downloading it (resumably, under a file lock) if needed.

    `force` downloads again even if the file is cached (it replaces the old one only once verified).
    `progress`: rich bar on stderr; None = only when stderr is a terminal (else one log line).
    """
    if isinstance(entry, str):
        entry = get_entry(entry, registry)
    final = cached_path(entry)
    if final.is_file() and not force:
        return _check_cached(entry, final)
    if is_offline(offline):
        raise SgtoolError(f"{entry.name} is not in the cache and sgtool is offline (--offline or "
                          f"{OFFLINE_ENV}=1), so {entry.urls[0]} was not fetched; {manual_hint(entry)}")
    final.parent.mkdir(parents=True, exist_ok=True)
    with _download_lock(entry):
        if final.is_file() and not force:
            return _check_cached(entry, final)  # another process finished it while we waited
        failures = []
        for url in entry.urls:
            try:
                with _progress_bar(progress, entry, url) as bar:
                    fetch_to_part(url, part_path(entry), entry.size, bar, label=entry.name)
                _accept(entry, url)
                return final
            except DownloadError as exc:
                failures.append(exc)
        # The most specific failure (HTML page, checksum) is more useful than "mirror 2 timed out".
        reason = next((f for f in failures if isinstance(f, (HtmlPageError, IntegrityError))), failures[-1])
        raise type(reason)(f"could not download {entry.name}: {reason}; {manual_hint(entry)}")


def entry_for_url(url: str, registry: str | os.PathLike | None = None) -> ModelEntry | None:
    """The entry one of whose download URLs is `url` (users paste NVIDIA's NGC links)."""
    if not url.startswith(("https://", "http://")):
        return None
    return next((e for e in load_registry(registry).values() if url in e.urls), None)


def is_registry_reference(text: str, registry: str | os.PathLike | None = None) -> bool:
    """A registry name or one of its download URLs (and not an existing file)."""
    text = str(text)
    return not Path(text).exists() and (find_entry(text, registry) or entry_for_url(text, registry)) is not None


def copy_into(entry: ModelEntry, target: Path, progress: bool | None = None) -> Path:
    """Fetch `entry` through the verified cache and give `target` the same file (hard link, else copy).

    For files another library insists on finding in its own folder (torchvision's hub checkpoints).
    """
    cached = ensure_model(entry, progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(cached, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(cached, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def verify_model(entry: ModelEntry) -> dict:
    """Re-hash a cached file against the published or first-recorded SHA-256.

    status: ok | recorded (no earlier hash: this one is now the reference) | mismatch | missing.
    """
    path = cached_path(entry)
    result = {"name": entry.name, "path": str(path), "status": "missing", "sha256": None, "expected": None}
    if not path.is_file():
        return result
    record = read_record(entry)
    expected = entry.sha256 or (record or {}).get("sha256")
    size = path.stat().st_size
    expected_size = entry.size or (record or {}).get("size")
    result.update(size=size, expected=expected, basis=_basis(entry, record))
    if file_looks_like_html(path):
        result.update(status="mismatch", problem="the file is an HTML page, not a checkpoint")
        return result
    if expected_size is not None and size != expected_size:
        result.update(status="mismatch", problem=f"{size} bytes, expected {expected_size}")
        return result
    digest = file_sha256(path)
    result["sha256"] = digest
    if expected is None:
        write_record(entry, size, digest, origin="found in the cache (placed by hand)")
        result["status"] = "recorded"
    elif digest != expected:
        result.update(status="mismatch", problem=f"SHA-256 {digest} differs from the {result['basis']} one")
    else:
        if record is None:
            write_record(entry, size, digest, origin="found in the cache (placed by hand)")
        result["status"] = "ok"
    return result


def _basis(entry: ModelEntry, record: dict | None) -> str | None:
    if entry.sha256:
        return "published"
    if record:
        return f"recorded ({record.get('recorded', '?')[:10]})"
    return None


def _check_cached(entry: ModelEntry, path: Path) -> Path:
    """Cheap check on every use (size); a file nobody has hashed yet is hashed and recorded once."""
    record = read_record(entry)
    expected_size = entry.size or (record or {}).get("size")
    size = path.stat().st_size
    fix = f"run `sgtool models download {entry.name} --force`"
    if expected_size is not None and size != expected_size:
        raise IntegrityError(f"cached {path} has {size} bytes but {expected_size} are expected; {fix}")
    if record is None:
        result = verify_model(entry)
        if result["status"] == "mismatch":
            raise IntegrityError(f"cached {path} is not {entry.name}: {result['problem']}; {fix}")
    return path


def _accept(entry: ModelEntry, url: str) -> None:
    """Verify a complete `.part` and rename it into place; a bad file is deleted, never cached."""
    part = part_path(entry)
    size = part.stat().st_size

    def reject(error: DownloadError):
        part.unlink(missing_ok=True)
        part.with_name(part.name + ".json").unlink(missing_ok=True)
        raise error

    if entry.size is not None and size != entry.size:
        reject(IntegrityError(f"{url} gave {size} bytes, expected {entry.size}; the download was discarded"))
    if file_looks_like_html(part):
        reject(HtmlPageError(f"{url} returned an HTML page instead of the checkpoint; it was not cached"))
    digest = file_sha256(part)
    record = read_record(entry)
    expected = entry.sha256 or (record or {}).get("sha256")
    if expected is not None and digest != expected:
        extra = "" if entry.sha256 else (f" (if the publisher replaced the file on purpose, delete "
                                         f"{record_path(entry)} and download again)")
        reject(IntegrityError(f"{url} gave a file whose SHA-256 {digest[:16]}... does not match the "
                              f"{_basis(entry, record)} {expected[:16]}...; the download was discarded{extra}"))
    os.replace(part, cached_path(entry))
    part.with_name(part.name + ".json").unlink(missing_ok=True)
    write_record(entry, size, digest, origin=url)


@contextlib.contextmanager
def _download_lock(entry: ModelEntry):
    lock_path(entry).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(entry)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another sgtool process that is downloading {entry.file} (lock {lock.lock_file})",
              file=sys.stderr)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise DownloadError(f"gave up waiting {LOCK_TIMEOUT_S:g} s for the lock {lock.lock_file} on "
                                f"{entry.file}; is another download stuck?") from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _progress_bar(enabled: bool | None, entry: ModelEntry, url: str):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        print(f"downloading {entry.name} from {url}", file=sys.stderr)
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        yield bar
