"""What every stage entry point shares: logging set-up, `key=value` parsing, exit codes, and a
clean stop on SIGINT / SIGTERM (temporary files removed, finished items kept)."""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import errno
import inspect
import io
import logging
import signal
import sqlite3
import sys
import tempfile
import threading
import tokenize
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig, TrainConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.idt.settings import IDTConfig

log = logging.getLogger("stages")
EXIT_OK, EXIT_FAILED_ITEMS, EXIT_USAGE = 0, 1, 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)      # exit 128 + signal number: 130, 143
# Every stage accepts every stage's keys (one ARGS for all `make` targets) and uses its own
# and its upstream stages' configs: stage k gets the first k.
CONFIGS = (ExtractConfig, DescriptorConfig, EvaluateConfig, IDTConfig, TrainConfig)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread like Ctrl-C, so that every `finally` runs on
    the way out (atomic_path removes its temporary file, the stage lock is released)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Stopped` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(argv: list[str] | None, uses: int, body: Callable[..., int], *, writes: bool = True) -> int:
    """Parse `argv` into all CONFIGS, call `body(*first `uses` configs) -> exit code`;
    errors become log messages and a non-zero exit code. SIGINT / SIGTERM stop the stage
    cleanly: 130 / 143, with what was finished kept for a rerun. A stage that `writes` checks
    first that cache_root is writable (exit 2 before any work)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(argv, CONFIGS[:uses]), end="")
        return EXIT_OK
    try:
        parsed: list[Any] = parse_overrides(argv, *CONFIGS)[:uses]
        if writes:
            check_writable(parsed[0].cache_root)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    try:
        with stop_on_signals():
            return body(*parsed)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        log.error("stopped by %s: temporary files removed, finished items kept; rerun the same "
                  "command to resume", signal.Signals(signum).name)
        return 128 + signum
    except sqlite3.Error as exc:
        log.error("the results ledger %s cannot be used (%s): it must be a writable SQLite file "
                  "written by this tool; pass ledger=<another file> or move that one away",
                  ledger_path(argv), exc)
        return EXIT_USAGE
    except (ValueError, RuntimeError, OSError, LookupError) as exc:
        log.error("%s%s", exc, demo_hint(parsed[0], exc))
        return EXIT_USAGE


def results_table(folder, stem: str, results: dict, ecfg, vcfg) -> str:
    """The paper table of a (possibly cached) evaluation or training, its rows named as this run
    names them (name= labels, it keys nothing): a cached run's results.md holds the name of the
    run that computed it."""
    from pipeline.core.cache import read_json
    from pipeline.learn.scoring import ledger_of
    from pipeline.results.tables import paper_table
    stored = read_json(Path(folder) / f"{stem}.json").get("method")
    if stored == results.get("method"):
        return (Path(folder) / f"{stem}.md").read_text()
    records = ledger_of(ecfg, vcfg).records(config_key=results["config_key"])
    return paper_table([{**r, "method": results["method"]} for r in records]) if records else ""


def demo_hint(ecfg, exc: BaseException) -> str:
    """The demo set runs with weights=none: say so when a run on it fails over weights."""
    if getattr(ecfg, "dataset", "") == "synthetic" and getattr(ecfg, "weights", "none") != "none" \
            and "weight" in str(exc).lower():
        return ("\n(the demo set runs with weights=none, as `make demo` passes it: its classes "
                "differ only in motion, which the flow stream of a randomly initialised I3D "
                "separates, and no flow checkpoint needs to be found or downloaded)")
    return ""


def ledger_path(argv: list[str]) -> Path:
    """The ledger the run used: ledger= or <cache_root>/ledger.sqlite (for error messages)."""
    try:
        ecfg, _, vcfg = parse_overrides(argv, *CONFIGS)[:3]
        return Path(vcfg.ledger or Path(ecfg.cache_root) / "ledger.sqlite")
    except ValueError:
        return Path("cache/ledger.sqlite")


def check_writable(cache_root: str) -> None:
    """Refuse before any work when cache_root cannot be written (read-only, not a folder)."""
    root = Path(cache_root).absolute()
    while not root.exists() and root.parent != root:  # creates nothing: the nearest folder
        root = root.parent                            # that exists must take a new file
    try:
        if not root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder")
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ValueError(f"cache_root={cache_root} is not writable ({exc.strerror or exc}); "
                         f"give a writable folder (cache_root=...) or fix its permissions") from None


def field_comments(cls: type) -> dict[str, str]:
    """field name -> the comment beside it in the dataclass source (with the comment lines that
    continue it below), read with tokenize: the one-line meaning and unit of each key."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    comments: dict[str, list[str]] = {}
    line_field: dict[int, str] = {}
    current, last_row = None, -1
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in names \
                and tok.start[0] not in line_field:
            current = line_field[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and current is not None:
            row, col = tok.start
            text = tok.string.lstrip("#").strip()
            if row in line_field:
                comments.setdefault(line_field[row], []).append(text)
                last_row = row
            elif col > 4 and row == last_row + 1:           # a continuation line below it
                comments.setdefault(current, []).append(text)
                last_row = row
    return {k: " ".join(v) for k, v in comments.items()}


def help_text(argv: list[str], classes: tuple[type, ...]) -> str:
    """Every key of `classes`: its default (the dataset preset's when dataset= is given) and its
    meaning and unit, from the comment beside the field."""
    from pipeline.extract.settings import PRESETS
    dataset = next((a.partition("=")[2].lower() for a in argv if a.startswith("dataset=")), None)
    preset = PRESETS.get(dataset, {}) if dataset else {}
    lines = ["Settings are key=value (Python literals; bare words are strings), shared by all "
             "stages.\n"]
    if dataset:
        lines.append(f"Defaults shown for dataset={dataset}"
                     + (f" (its preset sets {', '.join(sorted(preset))})" if preset else
                        " (no preset)") + ".\n")
    for cls in classes:
        lines.append(f"\n{cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}\n")
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            default = (f.default_factory() if f.default is dataclasses.MISSING
                       and f.default_factory is not dataclasses.MISSING else f.default)
            mark = ""
            if f.name in preset:
                default, mark = preset[f.name], " (preset)"
            lines.append(f"  {f.name}={default!r}{mark}\n")
            if comments.get(f.name):
                lines.append(f"      {comments[f.name]}\n")
    return "".join(lines)


def report(stage: str, result) -> int:
    """Log where a stage wrote and a summary of failures; the exit code for it."""
    log.info("%s: %s (%d items done, %d computed now%s)", stage, result.folder, result.done,
             result.computed, ", nothing to do" if result.skipped_run else "")
    warnings = getattr(result, "warnings", {})
    if warnings:
        log.warning("%s: %d items done with a warning (listed in %s/manifest.json):", stage,
                    len(warnings), result.folder)
        for item_id, warning in list(warnings.items())[:20]:
            log.warning("  %s: %s", item_id, warning)
    if result.failures:
        log.error("%s: %d items failed (listed in %s/manifest.json); rerun to retry them:",
                  stage, len(result.failures), result.folder)
        for item_id, reason in list(result.failures.items())[:20]:
            log.error("  %s: %s", item_id, reason)
        return EXIT_FAILED_ITEMS
    return EXIT_OK


def own_options(argv: list[str], options: dict) -> tuple[dict, list[str]]:
    """(a command's own keys -> values, the other tokens for the shared parse): keys that no
    stage's settings hold (e.g. report_video=, a=), their values read as the shared parser reads
    them (a Python literal string, or else the bare word)."""
    own = {a.partition("=")[0]: _literal(a.partition("=")[2]) for a in argv
           if a.partition("=")[0] in options}
    return own, [a for a in argv if a.partition("=")[0] not in options]


def _literal(text: str) -> str:
    """A key's value as the shared parser reads it: a Python literal, or else a bare word."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else text
