"""What every stage entry point shares: logging set-up, `key=value` parsing, exit codes, and a
clean stop on SIGINT / SIGTERM (temporary files removed, finished items kept)."""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
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


def run(argv: list[str] | None, uses: int, body: Callable[..., int]) -> int:
    """Parse `argv` into all CONFIGS, call `body(*first `uses` configs) -> exit code`;
    errors become log messages and a non-zero exit code. SIGINT / SIGTERM stop the stage
    cleanly: 130 / 143, with what was finished kept for a rerun."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        for cls in CONFIGS[:uses]:
            print(f"{cls.__name__}: {cls.__doc__}")
            for name, field in cls.__dataclass_fields__.items():
                print(f"  {name}={field.default!r}" if not callable(field.default_factory)
                      else f"  {name}={field.default_factory()!r}")
        return EXIT_OK
    try:
        parsed: list[Any] = parse_overrides(argv, *CONFIGS)[:uses]
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
    except (ValueError, RuntimeError, OSError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE


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
