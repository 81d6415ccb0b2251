"""The content identity of input files (videos, IDT text files): a BLAKE2b digest of their bytes;
and the fast content checksums (xxh3) of the files stages write and read back (at the end).

Caches name what an item was computed from by this digest, not by the file's mtime: a dataset
copied to another disk or machine (new mtimes, same bytes) keeps every cached item, and an edited
file of the same size is still seen. Hashing reads each file once per machine: digests are
memoised in a small SQLite file (`HOT_DIGEST_MEMO`, default
`$XDG_CACHE_HOME/hot-pipeline/core/digests.sqlite`) keyed by (real path, device, inode, size, mtime_ns,
ctime_ns), so an untouched file is never read again; any write (or a restored mtime) changes
ctime, and the file is hashed anew.
The memo is only a shortcut: where it cannot be opened or written (read-only home, a full disk)
the digest is computed without it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)
_CONNECTION: tuple[int, str, sqlite3.Connection] | None = None      # (pid, path, connection)


def memo_path() -> Path:
    if os.environ.get("HOT_DIGEST_MEMO"):
        return Path(os.environ["HOT_DIGEST_MEMO"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hot-pipeline" / "digests.sqlite"


def _memo() -> sqlite3.Connection | None:
    """This process's connection to the memo (a forked worker opens its own), or None."""
    global _CONNECTION
    path = str(memo_path())
    if _CONNECTION is not None and _CONNECTION[:2] == (os.getpid(), path):
        return _CONNECTION[2]
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE IF NOT EXISTS digests (key TEXT PRIMARY KEY, digest TEXT)")
    except (sqlite3.Error, OSError) as exc:
        log.debug("digest memo %s unusable (%s); hashing without it", path, exc)
        return None
    _CONNECTION = (os.getpid(), path, con)
    return con


def file_digest(path: str | os.PathLike) -> str:
    """The hex BLAKE2b-128 digest of the file's bytes (memoised; see the module docstring).
    Raises OSError when the file cannot be read."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = f"{real}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    con = _memo()
    if con is not None:
        try:
            row = con.execute("SELECT digest FROM digests WHERE key = ?", (key,)).fetchone()
            if row:
                return row[0]
        except sqlite3.Error:
            con = None
    with open(real, "rb") as f:
        value = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    if con is not None:
        try:
            con.execute("INSERT OR REPLACE INTO digests VALUES (?, ?)", (key, value))
        except sqlite3.Error as exc:
            log.debug("digest memo not written (%s)", exc)
    return value


# --------------------------------------------------------------------------------------------
# content checksums of the files stages write and read back (docs/reliability.md)
# --------------------------------------------------------------------------------------------
CHECKSUM = "xxh3"                  # xxh3-128: a fast non-cryptographic hash (~10 GB/s a core)
READ_BYTES = 8 << 20


def new_hasher(algorithm: str = CHECKSUM):
    """A fresh hasher with update(bytes-like) and hexdigest(): "xxh3" (xxhash's XXH3-128) or
    "sha256" (the seals of item files written before xxh3)."""
    if algorithm == "xxh3":
        import xxhash
        return xxhash.xxh3_128()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"checksum algorithm {algorithm!r} is unknown; known: xxh3, sha256")


def checksum_algorithm(stored: str) -> str:
    """The algorithm of a stored checksum: "xxh3:<hex>" or a bare sha256 hex (older seals)."""
    return stored.split(":", 1)[0] if ":" in stored else "sha256"


def content_checksum(data) -> str:
    """"xxh3:<hex>" of bytes, or of a binary file object's remaining bytes (read in 8 MiB
    blocks: constant memory)."""
    h = new_hasher(CHECKSUM)
    if isinstance(data, (bytes, bytearray, memoryview)):
        h.update(data)
    else:
        for block in iter(lambda: data.read(READ_BYTES), b""):
            h.update(block)
    return f"{CHECKSUM}:{h.hexdigest()}"
