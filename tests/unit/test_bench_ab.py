"""bench/ab.py's figures and table, and bench/cpu.py's /proc readers (the one CPU reader)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench import ab, cpu


def _saga_doc() -> dict[str, object]:
    def step(rate: float, ms: float, p99: float, others: float) -> dict[str, object]:
        return {"rate": rate, "latency_ms": {"p99": p99},
                "cpu": {"stack_ms_per_unit": ms, "others_cores": others}}  # fmt: skip

    steps = [step(10, 95.5, 120, 0.01), step(100, 18.0, 600, 0.04), step(50, 36, 300, 0.02)]
    sweep = {"capacity": 20.0, "steps": steps}
    return {"backends": {"sqlite": {"sweep": sweep, "idle": {"stack_cores": 0.12}}}}


def test_saga_figures_are_read_from_its_json() -> None:
    got = ab.BENCHES["saga"].figures(_saga_doc())
    assert got == {
        "capacity sagas/s": 20.0,
        "CPU ms/saga at 10/s": 95.5,
        "p99 ms at 10/s": 120,
        "CPU ms/saga at 100/s": 18.0,
        "p99 ms at 100/s": 600,
        "idle stack cores": 0.12,
        "others' cores (max step)": 0.04,
    }


def test_table_gives_runs_means_and_the_change() -> None:
    old: list[ab.Figures] = [{"replay events/s": 100.0}, {"replay events/s": 110.0}]
    new: list[ab.Figures] = [{"replay events/s": 99.75}, {"replay events/s": None}]
    runs = {"replay": {"old": old, "new": new}}
    lines = ab.table(("aa51f13", "db4f179"), runs).splitlines()
    assert lines[0].startswith("| benchmark | figure | old aa51f13 runs | new db4f179 runs")
    assert lines[2] == "| replay | replay events/s | 100, 110 | 99.8, - | 105 | 99.8 | -5.0% |"


def test_an_unknown_benchmark_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ab.main(["HEAD", "HEAD", "--only", "bench,sagas"])
    assert exc.value.code == 2
    assert "--only: unknown sagas" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads Linux's /proc")
def test_cpu_readers_see_a_child_burning_cpu() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.process_time()\n"
         "while time.process_time() - t < 0.3: pass\nimport sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while (cpu.process_s(child.pid) or 0.0) < 0.25:
            assert time.monotonic() < deadline, "the child's CPU time never reached 0.25 s"
            time.sleep(0.05)  # polling a condition with a deadline
        main_thread = cpu.main_thread_s(child.pid)
        assert main_thread is not None and main_thread >= 0.25
        tree = cpu.tree_s(os.getpid())
        assert tree is not None and tree >= cpu.process_s(child.pid)  # type: ignore[operator]
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    assert cpu.process_s(child.pid) is None  # gone: None, not an error
    assert cpu.machine_busy_s() > 0 and cpu.self_s() > 0
