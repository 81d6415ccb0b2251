"""Kill-anywhere harness (`make chaos`): every stage is SIGKILLed at seeded random moments and rerun
to completion; each time no item may be partial, the output must equal an uninterrupted run's,
nothing finished may be recomputed and no temporary file may be left. Exits 1 on any fault.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import tests.fakes as fakes  # noqa: E402 - registers fake_counting; arm_chaos
from pipeline.cache import TEMPORARY, h5_valid  # noqa: E402
from pipeline.datasets.synthetic import MOTIONS, render_video, write_video  # noqa: E402
from stages import descriptors, evaluate, extract  # noqa: E402

# JSON keys that differ between runs of identical output: when and with what it was written, the
# item files' mtimes, and the settings as given (backend, workers...; what changes output is keyed)
VOLATILE = {"written", "versions", "files", "config", "upstream_config"}


@dataclasses.dataclass
class Stage:
    name: str
    main: Callable[[list[str]], int]
    args: list[str]
    owns: tuple[str, ...]                   # folders under cache_root this stage writes
    kills: int = 0
    completed: int = 0
    checked: int = 0
    partial: int = 0
    mismatches: int = 0
    recomputed: int = 0
    leftover: int = 0
    mid_run: int = 0                        # kills that left some items finished, not all
    swept: int = 0                          # temporary files kills left (the reruns remove them)


def make_dataset(root: Path) -> None:
    """3 classes x 4 lossless 12-frame videos at 32 px, and one AVI cut short (its header claims
    more frames than it holds: done with a warning)."""
    rng = np.random.default_rng(0)
    for name in ("move_right", "move_up", "rotate_cw"):
        for k in range(4):
            (root / name).mkdir(parents=True, exist_ok=True)
            video = render_video(MOTIONS[name], rng, frames=12, size=32)
            write_video(root / name / f"{name}_{k}.avi", video, fps=25, codec="FFV1")
    whole = root.parent / "whole.avi"
    write_video(whole, render_video(MOTIONS["move_up"], rng, frames=40, size=32), fps=25, codec="FFV1")
    data = whole.read_bytes()
    (root / "move_up" / "move_up_cut.avi").write_bytes(data[: int(len(data) * 0.6)])


def run_child(main: Callable[[list[str]], int], args: list[str], kill_at: int, log: Path
              ) -> tuple[int, int]:
    """Run `main(args)` in a forked child (its own process group, output to `log`), armed to
    SIGKILL its group at its kill_at-th call (0: never). Returns (exit status, -9 when killed;
    the calls it made, when it finished). Forking skips ~5 s of imports per run."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.close(read)
            os.setpgid(0, 0)
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.environ.pop("CHAOS_KILL_AT", None)
            if kill_at:
                os.environ["CHAOS_KILL_AT"] = str(kill_at)        # worker processes arm on import
            calls = fakes.arm_chaos(kill_at)
            code = main(args)
            os.write(write, str(calls[0]).encode())
        except BaseException:  # noqa: BLE001 - reported in the log, exit 70
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as fh:
        calls = int(fh.read() or 0)
    try:
        os.killpg(pid, signal.SIGKILL)      # worker processes a finished run left idle
    except (ProcessLookupError, PermissionError):
        pass
    return os.waitstatus_to_exitcode(status), calls


def files_of(cache: Path, stage: Stage) -> list[Path]:
    return sorted(p for own in stage.owns for p in (cache / own).rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def is_item(path: Path) -> bool:
    return "items" in path.parts or path.parent.name == "splits"


def fingerprint(path: Path) -> str:
    """A hash of what a file holds: HDF5 datasets (values, shapes, attributes) and attributes;
    JSON without the keys that differ between identical runs; other files' bytes."""
    h = hashlib.sha256()
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            def add(name, obj):
                h.update(name.encode())
                if isinstance(obj, h5py.Dataset):
                    values = np.asarray(obj[()])
                    h.update(json.dumps(values.tolist(), default=str).encode() if values.dtype.kind in "OSUV"
                             else values.tobytes() + str(values.shape).encode())
                h.update(json.dumps({k: np.asarray(v).tolist() for k, v in sorted(obj.attrs.items())},
                                    default=str).encode())
            add("/", f)
            f.visititems(add)
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in VOLATILE}
        h.update(json.dumps(data, sort_keys=True).encode())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def snapshot(cache: Path, stage: Stage) -> dict[str, str]:
    return {str(p.relative_to(cache)): fingerprint(p) for p in files_of(cache, stage)}


def readable(path: Path) -> bool:
    """An item file must be valid (complete, sealed data intact); any other output must open."""
    try:
        if path.suffix == ".h5":
            if is_item(path):
                return h5_valid(path)
            fingerprint(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        return True
    except Exception:  # noqa: BLE001 - unreadable is the finding
        return False


def temporaries(cache: Path) -> list[Path]:
    return [p for p in cache.rglob(".*") if TEMPORARY.match(p.name)]


def trial(stage: Stage, cache: Path, reference: dict[str, str], status: int, kill_at: int,
          log: Path) -> bool:
    """Reset the stage's folders, kill a run at call `kill_at`, rerun to completion, check.
    False when the run finished before the kill (no kill landed)."""
    for own in stage.owns:
        shutil.rmtree(cache / own, ignore_errors=True)
    killed, _ = run_child(stage.main, stage.args, kill_at, log)
    if killed != -9:
        return False
    stage.kills += 1
    outputs = files_of(cache, stage)
    bad = [p for p in outputs if not readable(p)]
    stage.partial += len(bad)
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs
                if is_item(p) and p not in bad}
    stage.mid_run += 0 < len(finished) < sum(1 for k in reference if is_item(Path(k)))
    stage.swept += len(temporaries(cache))
    done, _ = run_child(stage.main, stage.args, 0, log)
    stage.completed += done == status
    now = snapshot(cache, stage)
    stage.checked += len(reference)
    differ = [k for k in reference.keys() | now.keys() if reference.get(k) != now.get(k)]
    stage.mismatches += len(differ)
    stage.recomputed += sum(1 for p, stamp in finished.items()
                            if not p.exists() or (p.stat().st_ino, p.stat().st_mtime_ns) != stamp)
    left = temporaries(cache)
    stage.leftover += len(left)
    if bad or differ or left or done != status:
        print(f"  {stage.name}, kill at call {kill_at}: exit {done} (expected {status}); "
              f"partial {[str(p) for p in bad]}, differing {sorted(differ)[:5]}, "
              f"left {[str(p) for p in left]}; log: {log}", flush=True)
        shutil.copy(log, log.with_suffix(f".{stage.name.split()[0]}-{kill_at}.log"))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per stage (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default a temporary folder")
    opts = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    cache, videos, log = work / "cache", work / "data" / "videos", work / "run.log"
    shutil.rmtree(cache, ignore_errors=True)
    if not videos.is_dir():
        make_dataset(videos)
    common = [f"root={str(videos)!r}", "dataset=folder", f"cache_root={str(cache)!r}",
              "backbone=fake_counting", "layer=stats", "weights=none", "streams=('rgb','flow')",
              "flow_backbone=fake_counting_flow", "flow=farneback", "lengths=(4,8)", "strides=(2,4)",
              "steps=((1,2),(1,))", "size=32", "batch_size=4", "sketch_dim=8"]
    stages = [Stage("extract", extract.main, common, ("features", "flow")),
              Stage("extract (processes)", extract.main, common + ["backend=processes", "workers=2"],
                    ("features", "flow")),
              Stage("descriptors", descriptors.main, common, ("descriptors",)),
              Stage("evaluate", evaluate.main, common, ("evaluate",))]
    rng = np.random.default_rng(opts.seed)
    references, ok = {}, True
    for stage in stages:                    # uninterrupted runs: the reference output
        if stage.name == "extract (processes)":
            continue
        status, calls = run_child(stage.main, stage.args, 0, log)
        if status not in (0, 1):
            print(f"{stage.name}: the uninterrupted run failed (exit {status}); see {log}")
            print(log.read_text()[-3000:])
            return 1
        references[stage.name] = (snapshot(cache, stage), status, calls)
    for stage in stages:
        reference, status, calls = references[stage.name.split()[0]]
        if stage.name == "extract (processes)":   # its own count of calls in the driver
            for own in stage.owns:
                shutil.rmtree(cache / own, ignore_errors=True)
            got, calls = run_child(stage.main, stage.args, 0, log)
            if got != status or snapshot(cache, stage) != reference:
                print(f"{stage.name}: the uninterrupted run differs from the serial one; see {log}")
                ok = False
        started, attempts = time.time(), 0
        while stage.kills < opts.kills and attempts < 3 * opts.kills:
            attempts += 1
            trial(stage, cache, reference, status, int(rng.integers(1, calls + 1)), log)
        print(f"  {stage.name}: {stage.kills} kills in {time.time() - started:.0f} s ({calls} calls "
              f"per run); {stage.mid_run} left some items finished and not all, the kills left "
              f"{stage.swept} temporary files", flush=True)
    print(f"\n{'stage':<22}{'kills':>6}{'completed':>11}{'files checked':>15}{'partial':>9}"
          f"{'mismatches':>12}{'recomputed':>12}{'leftover tmp':>14}")
    for s in stages:
        print(f"{s.name:<22}{s.kills:>6}{s.completed:>11}{s.checked:>15}{s.partial:>9}"
              f"{s.mismatches:>12}{s.recomputed:>12}{s.leftover:>14}")
        ok &= (s.kills == opts.kills and s.completed == s.kills
               and not (s.partial or s.mismatches or s.recomputed or s.leftover))
    if opts.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print("chaos: OK" if ok else "chaos: FAILED (every kill must land and complete; partial, "
          "mismatches, recomputed and leftover tmp must be 0)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
