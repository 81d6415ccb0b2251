"""Content-keyed stage folders, atomic per-item writes, validation, manifests and locks (the
resumable loop that uses them is pipeline.core.runner).

A stage's output lives in `<cache_root>/<stage>/<dataset>/<slug>-<key12>/`: `items/<id>.h5`
(one file per video, written to a temporary name, sealed and renamed into place) and `manifest.json`
(written last). The key is a sha256 over everything that changes the output (DVC's run cache).
Every file a stage reads back carries a checksum of its content (docs/reliability.md): HDF5 files
a digest of their data (`seal`), JSON files a "checksum" key (`write_json`/`read_json`), binary
files (npz, state dicts) a checksum recorded in the JSON written after them (`file_checksum`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import h5py
import numpy as np

from pipeline.core.digests import content_checksum, new_hasher, checksum_algorithm

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
HOST = platform.node()
# temporary names: .<name>.tmp-<pid>[-<thread>][@<host>] (older runs wrote .<name>.tmp-<pid>)
TEMPORARY = re.compile(r"^\..+\.tmp-(?P<pid>\d+)(?:-\d+)?(?:@(?P<host>.+))?$")


class StageError(RuntimeError):
    """A stage cannot run (missing upstream output, a held lock, ...); says what to do."""


class CorruptFileError(StageError):
    """A file a stage reads back does not match the checksum it was written with (or cannot be
    parsed, or holds NaN/Inf): the message names the file and what to do."""

    def __init__(self, path: str | os.PathLike, why: str, remedy: str = ""):
        self.path = Path(path)
        super().__init__(f"{path}: {why}" + (f"; {remedy}" if remedy else ""))


_WARNED: set[str] = set()


def warn_damaged(path: str | os.PathLike, why: str, remedy: str) -> None:
    """Log once per process that `path` is damaged and what happens to it."""
    key = f"{path}|{why}"
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning("%s is damaged (%s): %s", path, why, remedy)


def canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return canonical(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return canonical(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def digest(obj: Any) -> str:
    """sha256 hex of the canonical JSON of `obj`."""
    text = json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stage_key(stage: str, version: int, params: dict, *, upstream: Iterable[str] = (),
              weights: dict | None = None) -> str:
    """sha256 hex of a canonical JSON of what determines an item's output: never the set of
    items, nor what only selects or labels them (splits); each item file carries its source."""
    return digest({"stage": stage, "version": version, "params": params,
                   "upstream": sorted(upstream), "weights": weights})


def stage_dir(cache_root: str | os.PathLike, stage: str, dataset: str, slug: str, key: str) -> Path:
    return Path(cache_root) / stage / dataset / f"{slug}-{key[:12]}"


def temporary_name(path: Path) -> Path:
    """The temporary file beside `path` of this writer: `.<name>.tmp-<pid>-<thread>@<host>`, so
    a sweep can tell whether its writer is still alive (`writer_alive`)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_native_id()}@{HOST}")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host is running (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def writer_alive(tmp: Path) -> bool:
    """Whether the writer of temporary file `tmp` may still be writing it: its pid is alive on
    this host, or it ran on another host (which cannot be checked from here)."""
    match = TEMPORARY.match(tmp.name)
    if match is None:
        return True
    host = match["host"]
    return (host is not None and host != HOST) or pid_alive(int(match["pid"]))


def sweep_temporary(folder: Path, *, pattern: str = ".*.tmp-*", before: float | None = None
                    ) -> list[Path]:
    """Remove the temporary files under `folder` (recursively, names matching `pattern`) that a
    killed writer left: never one whose writer is alive (`writer_alive`), nor one modified at or
    after `before` (a time.time(), e.g. the start of the run that sweeps). Returns the removed."""
    removed = []
    for tmp in Path(folder).rglob(pattern):
        if not TEMPORARY.match(tmp.name) or writer_alive(tmp):
            continue
        with contextlib.suppress(FileNotFoundError):
            if before is None or tmp.stat().st_mtime < before:
                tmp.unlink()
                removed.append(tmp)
    if removed:
        log.info("%s: removed %d temporary files left by killed runs", folder, len(removed))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


CHECKSUM_KEY = "checksum"        # the key of a JSON object that holds the checksum of the rest


def json_checksum(data: Any) -> str:
    """The checksum of JSON data as parsed (the object without its CHECKSUM_KEY)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return content_checksum(text.encode())


def with_checksum(obj: Any, *, prepare: Callable[[Any], Any] = canonical) -> Any:
    """`obj` as it will be read back, a dict given a CHECKSUM_KEY over the rest (other JSON
    values are returned as they are, without one)."""
    data = json.loads(json.dumps(prepare(obj)))
    if isinstance(data, dict):
        data.pop(CHECKSUM_KEY, None)
        data[CHECKSUM_KEY] = json_checksum(data)
    return data


def write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = False) -> None:
    """Atomically write `obj` as indented JSON; a dict carries the checksum of its content
    (CHECKSUM_KEY), which read_json verifies."""
    data = with_checksum(obj)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=sort_keys) + "\n")


def read_json(path: str | os.PathLike, remedy: str = "") -> Any:
    """The JSON data of `path` without its checksum. Raises CorruptFileError naming the file
    when it cannot be parsed or its content no longer matches its checksum (a file written
    before checksums, without one, is read as it is)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise CorruptFileError(path, "not a text file (damaged)", remedy) from None
    except json.JSONDecodeError as exc:
        raise CorruptFileError(path, f"not valid JSON ({exc.msg} at line {exc.lineno})",
                               remedy) from None
    if isinstance(data, dict) and CHECKSUM_KEY in data:
        stored = data.pop(CHECKSUM_KEY)
        if stored != json_checksum(data):
            raise CorruptFileError(path, "its content does not match the checksum it was "
                                         "written with (damaged)", remedy)
    return data


def json_intact(path: str | os.PathLike, remedy: str = "it is computed again") -> bool:
    """Whether `path` exists and read_json accepts it; a damaged file is logged (naming it)
    and counts as absent, so that the stage computes it again."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        read_json(path)
        return True
    except CorruptFileError as exc:
        warn_damaged(path, str(exc).split(": ", 1)[-1], remedy)
        return False


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """A stage folder's manifest, or None when absent or damaged (then the stage looks at its
    items again and writes a new one)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except CorruptFileError as exc:
        warn_damaged(path, str(exc).split(": ", 1)[-1], "the stage checks its items again")
        return None


def file_checksum(path: str | os.PathLike) -> str:
    """The checksum of a file's bytes (one streaming pass; digests.content_checksum)."""
    with open(path, "rb") as fh:
        return content_checksum(fh)


def verify_file(path: str | os.PathLike, expected: str | None, remedy: str = "") -> None:
    """Raise CorruptFileError naming `path` when its bytes do not match `expected` (None: a
    file recorded before checksums, not checked)."""
    if expected is not None and file_checksum(path) != expected:
        raise CorruptFileError(path, "its content does not match the checksum it was written "
                                     "with (damaged)", remedy)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md
    names = ["torch", "torchvision", "pytorchvideo", "numpy", "h5py", "scikit-learn",
             "opencv-contrib-python-headless"]
    versions = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return versions


@contextlib.contextmanager
def stage_lock(folder: Path, shard: tuple[int, int] = (1, 1)) -> Iterator[None]:
    """Hold an exclusive lock on a stage folder (on one shard of it) for the duration of a run.

    The lock file names its holder (pid, host, start time); a second run of the same stage
    refuses at once with that name. The lock goes with its process, however that ends."""
    name = ".lock" if shard == (1, 1) else f".lock-shard-{shard[0]}-of-{shard[1]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / name, "a+")
    except OSError as exc:
        raise StageError(f"cannot write to the cache folder {folder}: {exc.strerror or exc}; "
                         f"check that cache_root is writable and has free space") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "holder unknown"
            raise StageError(f"{folder} is being written by another run ({holder}); wait for it "
                             f"to finish, or stop that process") from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {HOST}, started {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def item_path(folder: Path, item_id: str) -> Path:
    return folder / "items" / f"{item_id}.h5"


def _datasets(f: h5py.File) -> list[h5py.Dataset]:
    found: list[h5py.Dataset] = []
    f.visititems(lambda name, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return found


SCAN_CHUNK_BYTES = 32 << 20   # rows of a dataset read (and hashed) at a time


def _scan(f: h5py.File, algorithm: str | None = "xxh3", finite: bool = True
          ) -> tuple[str | None, str]:
    """(why the data cannot be used or None, the digest of every dataset: name, dtype, shape,
    values and attributes; not the file's attributes, which say where it came from). Numeric
    datasets are read and hashed SCAN_CHUNK_BYTES of rows at a time (constant memory). With
    `algorithm` None, only float datasets are read (to check them finite); "sha256" is the
    digest of seals written before "xxh3" (the same byte stream)."""
    h, problem = (new_hasher(algorithm) if algorithm else None), None
    for ds in _datasets(f):
        if "starts" in ds.attrs and (ds.ndim == 0 or ds.shape[0] != len(ds.attrs["starts"])):
            problem = problem or f"{ds.name} has shape {ds.shape} for {len(ds.attrs['starts'])} windows"
        kind = ds.dtype.kind
        if h is None and (kind not in "fc" or not finite):
            continue
        attrs = json.dumps({k: np.asarray(v).tolist() for k, v in sorted(ds.attrs.items())},
                           default=str)
        if kind in "OSUV" or ds.ndim == 0 or ds.size == 0:
            values = np.asarray(ds[()])
            if finite and values.dtype.kind in "fc" and not np.isfinite(values).all():
                problem = problem or f"{ds.name} holds NaN or Inf values"
            if h is not None:
                data = (json.dumps(values.tolist(), default=str).encode()
                        if values.dtype.kind in "OSUV" else np.ascontiguousarray(values).tobytes())
                h.update(f"{ds.name}|{values.dtype.str}|{values.shape}|{attrs}|".encode() + data)
            continue
        if h is not None:
            h.update(f"{ds.name}|{ds.dtype.str}|{tuple(ds.shape)}|{attrs}|".encode())
        row = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:])))
        step = max(1, SCAN_CHUNK_BYTES // row)
        for r0 in range(0, ds.shape[0], step):
            block = np.ascontiguousarray(ds[r0:r0 + step])
            if finite and kind in "fc" and not np.isfinite(block).all():
                problem = problem or f"{ds.name} holds NaN or Inf values"
            if h is not None:
                h.update(memoryview(block).cast("B"))
    return problem, (f"{algorithm}:{h.hexdigest()}" if algorithm == "xxh3"
                     else h.hexdigest() if h is not None else "")


def data_problem(f: h5py.File) -> str | None:
    """Why the data of an item file cannot be used, or None: a float dataset holding NaN or Inf,
    a window group whose rows do not match its "starts", or data that no longer matches the
    digest it was sealed with (truncated, reshaped or edited since, see `seal`)."""
    stored = f.attrs.get("digest")
    algorithm = None if stored is None else checksum_algorithm(str(stored))
    problem, digest_now = _scan(f, algorithm, not f.attrs.get("nonfinite_ok", False))
    if problem is None and stored is not None and stored != digest_now:
        problem = "its data does not match the checksum it was written with (damaged)"
    return problem


def seal(path: Path, *, finite: bool = True, **attrs: Any) -> None:
    """Check a freshly written HDF5 file (an item, a view) and record the checksum of its data
    (and `attrs`), so that a later change to it is detected (`h5_valid`, `check_sealed`). Raises
    ValueError for data that must not be stored (NaN or Inf): such an item fails instead of
    being taken for good. finite=False: a file where NaN has a meaning (absent values)."""
    with h5py.File(path, "r+") as f:
        if not finite:
            attrs["nonfinite_ok"] = True
        problem, digest_now = _scan(f, finite=finite)
        if problem is not None:
            raise ValueError(f"{problem}; the item is not stored")
        f.attrs.update(digest=digest_now, **attrs)


REDO = "the item is computed again by the next run of its stage"


def check_sealed(path: str | os.PathLike, remedy: str) -> None:
    """Raise CorruptFileError naming `path` when a sealed HDF5 file (a view) cannot be opened,
    holds NaN/Inf or no longer matches its checksum (one pass over its data)."""
    try:
        with h5py.File(path, "r") as f:
            if "digest" not in f.attrs:
                return                       # written before checksums: not checked
            problem = data_problem(f)
    except OSError as exc:
        raise CorruptFileError(path, f"cannot be read as HDF5 ({exc})", remedy) from None
    if problem is not None:
        raise CorruptFileError(path, problem, remedy)


def sealed_intact(path: str | os.PathLike, remedy: str = "it is computed again") -> bool:
    """Whether the sealed HDF5 file `path` exists and check_sealed accepts it; a damaged one is
    logged (naming it) and counts as absent."""
    if not Path(path).is_file():
        return False
    try:
        check_sealed(path, remedy)
        return True
    except CorruptFileError as exc:
        warn_damaged(path, str(exc).split(": ", 1)[-1].split("; ")[0], remedy)
        return False


def bytes_intact(path: str | os.PathLike, recorded: dict[str, str],
                 remedy: str = "it is computed again") -> bool:
    """Whether `path` matches the checksum `recorded` holds under its name (absent: not
    recorded, accepted); a mismatch is logged, naming the file."""
    expected = recorded.get(Path(path).name)
    try:
        verify_file(path, expected, remedy)
        return True
    except (CorruptFileError, OSError) as exc:
        warn_damaged(path, "its bytes do not match the checksum recorded beside it"
                     if isinstance(exc, CorruptFileError) else str(exc), remedy)
        return False


def inspect_item(path: Path, required: Callable[[h5py.File], bool], source: str | None,
                 checksum: str | None = None) -> tuple[bool, str | None]:
    """(valid, its warning attribute or None) of an item file; see h5_valid. A file that exists
    and is complete but damaged (unreadable, or data not matching its checksum) is logged once,
    naming it. `checksum`: the file's checksum as its stage's manifest recorded it; when the
    bytes still match it (one fast pass) the data need not be read to be checked."""
    if not path.is_file():
        return False, None
    try:
        with h5py.File(path, "r") as f:
            complete = bool(f.attrs.get("complete", False))
            ok = (complete and required(f)
                  and (source is None or f.attrs.get("source") == source))
            same = ok and checksum is not None and file_checksum(path) == checksum
            problem = data_problem(f) if ok and not same else None
            if problem is not None and "checksum" in problem:
                warn_damaged(path, problem, REDO)
            warning = f.attrs.get("warning")
            return ok and problem is None, None if warning is None else str(warning)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        if not path.name.startswith("."):
            warn_damaged(path, f"cannot be read: {type(exc).__name__}: {exc}", REDO)
        return False, None


def h5_valid(path: Path, required: Callable[[h5py.File], bool] = lambda f: True,
             source: str | None = None) -> bool:
    """An item counts as done only if its file exists, opens, passes `required`, holds finite
    data matching its seal (`data_problem`) and, when `source` is given, was computed from that
    source (attribute "source", see Item.source)."""
    return inspect_item(path, required, source)[0]


@dataclasses.dataclass
class StageResult:
    """What a run did: its folder, counts and failures (id -> reason)."""

    folder: Path
    done: int
    computed: int
    failures: dict[str, str]
    skipped_run: bool = False
    warnings: dict[str, str] = dataclasses.field(default_factory=dict)   # done, with a warning

    @property
    def ok(self) -> bool:
        return not self.failures


def shard_ids(ids: list[str], shard: tuple[int, int]) -> list[str]:
    """The deterministic slice k of n (1-based) of `ids`: every n-th id from the k-th on."""
    k, n = shard
    return list(ids)[k - 1::n]


def file_stamps(folder: Path, ids: Iterable[str]) -> str:
    """A digest of the size and mtime of each item file (None when absent): a file changed since
    the manifest was written (truncated, edited, replaced) makes the stage look at its items."""
    stamps = {}
    for i in ids:
        try:
            st = item_path(folder, i).stat()
            stamps[i] = [st.st_size, st.st_mtime_ns]
        except OSError:
            stamps[i] = None
    return digest(stamps)


def recorded_files(folder: Path, ids: Iterable[str]) -> list[str]:
    """The files of a stage folder whose checksums its manifest records (paths relative to it):
    every item file, and the folder's own files besides manifests and locks (views such as
    descriptors.h5)."""
    names = [item_path(folder, i).relative_to(folder).as_posix() for i in ids]
    names += sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                    and not p.name.startswith("manifest"))
    return names


def file_checksums(folder: Path, names: Iterable[str]) -> dict[str, str | None]:
    """relative path -> file_checksum (None when absent): one streaming pass over each file."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = file_checksum(folder / name)
        except OSError:
            out[name] = None
    return out


def damaged_files(folder: Path, manifest: dict | None, *, newer_ok: bool = True) -> list[str]:
    """The files the manifest records whose bytes no longer match their checksum (or are gone),
    each logged naming it. newer_ok: a file modified after the manifest was written is not
    counted (a stage rewrote it since; its own seal is checked where it is read): only damage
    under an unchanged or restored mtime is left to this check."""
    recorded = (manifest or {}).get("checksums") or {}
    if not recorded:
        return []
    try:
        written = (folder / MANIFEST).stat().st_mtime_ns
    except OSError:
        written = None
    bad = []
    for name, expected in recorded.items():
        path = folder / name
        try:
            if newer_ok and written is not None and path.stat().st_mtime_ns > written:
                continue
            ok = file_checksum(path) == expected
        except OSError:
            ok = False
        if not ok:
            bad.append(name)
            warn_damaged(path, "its bytes do not match the checksum recorded in "
                               f"{folder / MANIFEST}" if path.exists() else "it is missing",
                         REDO if "items" in Path(name).parts else "the stage writes it again")
    return bad


def up_to_date(folder: Path, sources: dict[str, str], *, strict: bool = False,
               required: Callable[[h5py.File], bool] | None = None) -> bool:
    """True when the stage's manifest covers exactly these items from these sources, none failed
    (with `strict`, none is done with a warning either) and every item file still holds what it
    was written with: a rerun has nothing to do. Each item's data is checked against its
    checksum (one pass over it): a size-and-mtime memo would miss bit rot under a restored
    mtime; a damaged item is named and makes the stage run (which recomputes that item only).
    required: what every item file must also hold for this run (e.g. the trunk's rates that a
    windowing needs), checked on the open files."""
    manifest = read_manifest(folder)
    if (manifest is None or manifest.get("failures") or (strict and manifest.get("warnings"))
            or manifest.get("sources") != digest(sources)):
        return False
    if manifest.get("checksums"):               # every byte of every file: one hash pass
        if damaged_files(folder, manifest, newer_ok=False):
            return False
        if required is None:
            return True
        return all(_holds(item_path(folder, i), required) for i in sources)
    return all(inspect_item(item_path(folder, i), required or (lambda f: True), src)[0]
               for i, src in sources.items())        # older manifests


def _holds(path: Path, required: Callable[[h5py.File], bool]) -> bool:
    with h5py.File(path, "r") as f:
        return required(f)


def recorded_checksums(folder: Path) -> dict[str, str]:
    """relative path -> checksum of the files the folder's manifest records ({} without one)."""
    return (read_manifest(folder) or {}).get("checksums") or {}


def item_checksum(recorded: dict[str, str], folder: Path, item_id: str) -> str | None:
    return recorded.get(item_path(folder, item_id).relative_to(folder).as_posix())


def done_ids(folder: Path, sources: dict[str, str],
             required: Callable[[h5py.File], bool] = lambda f: True) -> list[str]:
    """The ids (in the order of `sources`) whose item file in `folder` is valid for its source
    (its bytes checked against the manifest's checksum, else its data against its seal)."""
    recorded = recorded_checksums(folder)
    return [i for i, src in sources.items()
            if inspect_item(item_path(folder, i), required, src,
                            item_checksum(recorded, folder, i))[0]]
