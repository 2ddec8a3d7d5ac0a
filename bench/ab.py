"""``bench/ab.sh OLD NEW``: the four benchmarks on two commits, alternated, as one table.

Each side runs from a worktree of its own (``/tmp/ab-<commit>``, added detached when missing;
a directory may be given instead of a commit) with ``PYTHONPATH`` on it, so that the
benchmark, the services it starts and the ``choreo`` console script all import that side's
code. The console script is the side's own: the venv's ``choreo`` names whatever entry point
was installed last, so each side gets a venv of links (``/tmp/ab-<commit>-venv``: the repo's
interpreter and site-packages, a ``choreo`` script written from the side's pyproject).

``--pairs`` rounds, each a pair (old, then new) of every benchmark, each run a process with
``--json`` kept in ``--out``. The shared machine lock (``/work/notes/machine.lock``, taken as
``flock(1)`` takes it) is held for a pair, so that its two runs meet the same machine and
other work gets its turn between pairs. The table gives each figure's runs per side, the
mean of each side and new against old; the CPU used by other processes, where a benchmark
reports it, says whether a run was quiet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.locks import exclusive

REPO = Path(__file__).resolve().parent.parent
LOCK = Path("/work/notes/machine.lock")
PAUSE_S = 10.0  # between pairs, for others waiting for the lock
Figures = dict[str, float | None]


def _bench(doc: dict[str, Any]) -> Figures:
    out: Figures = {}
    for b in doc["benchmarks"]:
        name = b["benchmark"]
        out[f"{name} events/s"] = b["project"]["events_per_s"]
        out[f"{name} raw events/s"] = b["raw"]["events_per_s"]
        out[f"{name} / raw"] = b["ratio"]
    out["others' cores"] = doc["cpu"].get("other_cores")
    return out


def _publish(doc: dict[str, Any]) -> Figures:
    rates = doc["events_per_s"]
    return {"choreo publish events/s": rates["project"], "raw events/s": rates["raw"],
            "publish / raw": doc["ratio"]}  # fmt: skip


def _saga(doc: dict[str, Any]) -> Figures:
    backend = doc["backends"]["sqlite"]
    out: Figures = {"capacity sagas/s": backend["sweep"]["capacity"]}
    steps = {float(st["rate"]): st for st in backend["sweep"]["steps"]}
    for rate in (10.0, 100.0):
        st = steps.get(rate)
        out[f"CPU ms/saga at {rate:g}/s"] = st["cpu"]["stack_ms_per_unit"] if st else None
        out[f"p99 ms at {rate:g}/s"] = st["latency_ms"].get("p99") if st else None
    out["idle stack cores"] = backend["idle"]["stack_cores"]
    out["others' cores (max step)"] = max(st["cpu"]["others_cores"] for st in steps.values())
    return out


def _replay(doc: dict[str, Any]) -> Figures:
    return {"replay events/s": doc["replay_rate"], "raw events/s": doc["raw_rate"],
            "replay / raw": doc["ratio"]}  # fmt: skip


@dataclass(frozen=True)
class Bench:
    module: str
    args: tuple[str, ...]
    short: tuple[str, ...]  # --short: a check that the benchmark measures the same, not a figure
    figures: Callable[[dict[str, Any]], Figures]


BENCHES = {
    "bench": Bench("bench", (), ("--events", "5000", "--repeat", "1"), _bench),
    "publish": Bench("bench.publish", (), ("--events", "20000", "--repeat", "1"), _publish),
    "saga": Bench(
        "bench.saga",
        ("--database", "sqlite", "--no-burst"),
        ("--quick", "--no-burst", "--warmup", "200"),
        _saga,
    ),
    "replay": Bench("bench.replay", (), ("--events", "50000", "--repeat", "1"), _replay),
}


class AbError(Exception):
    """A side could not be set up or a run failed (named in one line)."""


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise AbError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def worktree(rev: str) -> tuple[str, Path]:
    """(label, directory) of a side: a directory as given, or a detached worktree of ``rev``."""
    given = Path(rev)
    if given.is_dir():
        head = subprocess.run(
            ["git", "-C", str(given), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"{given.name}@{head or '?'}", given.resolve()
    sha = _git("rev-parse", "--short", f"{rev}^{{commit}}")
    path = Path(f"/tmp/ab-{sha}")
    if not path.exists():
        _git("worktree", "add", "--detach", str(path), sha)
    return sha, path


def side_venv(tree: Path, label: str) -> Path:
    """The repo's venv seen through links, with the side's own ``choreo`` script."""
    venv = REPO / ".venv"
    shim = Path(f"/tmp/ab-{label.replace('/', '_')}-venv")
    (shim / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(venv / "pyvenv.cfg", shim / "pyvenv.cfg")
    for link, target in (
        (shim / "lib", venv / "lib"),
        (shim / "bin" / "python", venv / "bin" / "python"),
    ):
        if not link.is_symlink():
            link.symlink_to(target)
    scripts = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["choreo"].split(":")
    choreo = shim / "bin" / "choreo"
    choreo.write_text(
        f"#!{shim / 'bin' / 'python'}\nimport sys\nfrom {module} import {func}\n"
        f"sys.exit({func}())\n"
    )
    choreo.chmod(0o755)
    return shim / "bin" / "python"


def machine_lock() -> contextlib.AbstractContextManager[None]:
    """The shared lock of heavy work on this machine."""
    return exclusive(LOCK)


def run_one(python: Path, tree: Path, bench: Bench, short: bool, out: Path) -> Figures:
    cmd = [str(python), "-m", bench.module, *(bench.short if short else bench.args), "--json"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    out.with_suffix(".stderr").write_text(done.stderr)
    out.write_text(done.stdout)
    if done.returncode not in (0, 1):  # 1: a target missed, figures still printed
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise AbError(f"{' '.join(cmd[1:])} in {tree} exited {done.returncode}: {tail[0]}")
    return bench.figures(json.loads(done.stdout))


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def table(labels: tuple[str, str], runs: dict[str, dict[str, list[Figures]]]) -> str:
    old, new = labels
    lines = [
        f"| benchmark | figure | old {old} runs | new {new} runs | old mean | new mean | new/old |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, sides in runs.items():
        keys = list(dict.fromkeys(k for r in sides["old"] + sides["new"] for k in r))
        for key in keys:
            vals = {s: [r.get(key) for r in sides[s]] for s in ("old", "new")}
            means = {
                s: statistics.fmean([v for v in vals[s] if v is not None])
                if any(v is not None for v in vals[s])
                else None
                for s in vals
            }
            change = "-"
            if means["old"] and means["new"] is not None:
                change = f"{100 * (means['new'] / means['old'] - 1):+.1f}%"
            lines.append(
                f"| {name} | {key} | {', '.join(_fmt(v) for v in vals['old'])} | "
                f"{', '.join(_fmt(v) for v in vals['new'])} | {_fmt(means['old'])} | "
                f"{_fmt(means['new'])} | {change} |"
            )
    return "\n".join(lines)


def run_pair(
    name: str,
    i: int,
    args: argparse.Namespace,
    sides: dict[str, tuple[str, Path]],
    pythons: dict[str, Path],
    runs: dict[str, dict[str, list[Figures]]],
    out: Path,
) -> None:
    for s in ("old", "new"):
        label, tree = sides[s]
        say(f"{name}: pair {i + 1}/{args.pairs}, {s} ({label})")
        path = out / f"{name}-{s}-{i + 1}.json"
        figs = run_one(pythons[s], tree, BENCHES[name], args.short, path)
        runs[name][s].append(figs)
        say(f"{name} {s}: {json.dumps(figs)}")


def say(message: str) -> None:
    print(f"[bench.ab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/ab.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the old side: a commit, or a directory holding a checkout")
    parser.add_argument("new", help="the new side, likewise")
    parser.add_argument("--pairs", type=int, default=2, metavar="K", help="old/new pairs (2)")
    parser.add_argument(
        "--only", default=",".join(BENCHES), metavar="B[,B...]",
        help=f"which benchmarks, in this order (default {','.join(BENCHES)})",
    )  # fmt: skip
    parser.add_argument(
        "--short", action="store_true",
        help="short settings: checks that both sides measure alike, not figures to quote",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="raw JSON (/tmp)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := [n for n in names if n not in BENCHES]:
        parser.error(f"--only: unknown {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    begun = time.strftime("%Y-%m-%d %H:%M %Z")
    out = args.out or Path(f"/tmp/ab-runs-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    try:
        sides = {s: worktree(rev) for s, rev in (("old", args.old), ("new", args.new))}
        pythons = {s: side_venv(tree, label) for s, (label, tree) in sides.items()}
        runs: dict[str, dict[str, list[Figures]]] = {name: {"old": [], "new": []} for name in names}
        # Pair by pair across the benchmarks: a first pair of every figure comes early.
        for i in range(args.pairs):
            for name in names:
                say(f"{name}: pair {i + 1}/{args.pairs}, waiting for {LOCK}")
                with machine_lock():
                    run_pair(name, i, args, sides, pythons, runs, out)
                # flock is not fair: without a pause this process would take the lock straight
                # back and others waiting for it would never get their turn between pairs.
                time.sleep(PAUSE_S)
                # The table so far: an interrupted comparison keeps what it measured.
                labels = (sides["old"][0], sides["new"][0])
                (out / "table.md").write_text(table(labels, runs) + "\n")
    except AbError as exc:
        print(f"bench/ab.sh: {exc}", file=sys.stderr)
        return 2
    setting = "short" if args.short else "standard"
    print(f"old {sides['old'][0]} vs new {sides['new'][0]}, {args.pairs} pair(s), {setting} "
          f"settings, started {begun}; raw JSON in {out}")  # fmt: skip
    print(table((sides["old"][0], sides["new"][0]), runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
