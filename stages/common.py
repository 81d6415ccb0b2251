"""What every stage entry point shares: logging set-up, `key=value` parsing, exit codes."""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from pipeline.config import DescriptorConfig, EvaluateConfig, ExtractConfig, parse_overrides

log = logging.getLogger("stages")
EXIT_OK, EXIT_FAILED_ITEMS, EXIT_USAGE = 0, 1, 2
# Every stage accepts every stage's keys (one ARGS for all `make` targets) and uses its own
# and its upstream stages' configs: stage k gets the first k.
CONFIGS = (ExtractConfig, DescriptorConfig, EvaluateConfig)


def run(argv: list[str] | None, uses: int, body: Callable[..., int]) -> int:
    """Parse `argv` into all CONFIGS, call `body(*first `uses` configs) -> exit code`;
    errors become log messages and a non-zero exit code."""
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
        return body(*parsed)
    except (ValueError, RuntimeError, OSError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE


def report(stage: str, result) -> int:
    """Log where a stage wrote and a summary of failures; the exit code for it."""
    log.info("%s: %s (%d items done, %d computed now%s)", stage, result.folder, result.done,
             result.computed, ", nothing to do" if result.skipped_run else "")
    if result.failures:
        log.error("%s: %d items failed (listed in %s/manifest.json); rerun to retry them:",
                  stage, len(result.failures), result.folder)
        for item_id, reason in list(result.failures.items())[:20]:
            log.error("  %s: %s", item_id, reason)
        return EXIT_FAILED_ITEMS
    return EXIT_OK
