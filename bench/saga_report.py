"""The saga benchmark's verdicts (issue 15's targets) and its printed report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TITLES = {"sqlite": "SQLite (a file per service)", "postgres": "PostgreSQL (durable defaults)"}
NOISY_CORES = 0.10  # CPU used by processes outside the run above which figures move


def _step(backend: dict[str, Any], rate: float) -> dict[str, Any] | None:
    for st in backend["sweep"]["steps"]:
        if float(st["rate"]) == rate:
            return dict(st)
    return None


def _kept_up(step: dict[str, Any] | None) -> bool:
    """A figure at a rate counts only if the stack kept up with it (not a stopped step)."""
    return step is not None and not step["aborted"]


def _target(name: str, want: str, value: float | None, ok: bool, unit: str) -> dict[str, Any]:
    return {"target": name, "want": want, "value": value, "unit": unit, "passed": ok}


def _at_most(
    name: str, limit: float, value: float | None, step: dict[str, Any] | None, unit: str
) -> dict[str, Any]:
    """A figure at a rate: met when the stack kept up there and the figure is within limit."""
    ok = _kept_up(step) and value is not None and value <= limit
    return _target(name, f"<= {limit:g}", value, ok, unit)


def _capacity_and_p99(
    title: str, backend: dict[str, Any], least: float, p99_limit: float
) -> list[dict[str, Any]]:
    """The two targets both databases have: sustained capacity, p99 at 100 orders/s."""
    cap = float(backend["sweep"]["capacity"])
    at100 = _step(backend, 100)
    p99 = at100["latency_ms"]["p99"] if at100 else None
    return [
        _target(f"{title} sustained capacity", f">= {least:,g}", cap, cap >= least, "sagas/s"),
        _at_most(f"{title} p99 at 100 orders/s", p99_limit, p99, at100, "ms"),
    ]


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's targets for the backends that ran (a rate not measured is a miss)."""
    out = []
    sqlite = res["backends"].get("sqlite")
    if sqlite is not None:
        out += _capacity_and_p99("SQLite", sqlite, 1000, 150)
        at100 = _step(sqlite, 100)
        cores = at100["cpu"]["stack_cores"] if at100 else None
        out.append(_at_most("SQLite cores busy at 100 orders/s", 0.5, cores, at100, "cores"))
        at10 = _step(sqlite, 10)
        above = (
            round(at10["cpu"]["stack_cores"] - sqlite["idle"]["stack_cores"], 3) if at10 else None
        )
        out.append(_at_most("SQLite cores above idle at 10 orders/s", 0.1, above, at10, "cores"))
    pg = res["backends"].get("postgres")
    if pg is not None:
        out += _capacity_and_p99("PostgreSQL", pg, 500, 250)
    return out


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    indent: str = "  ",
    text_last: bool = False,
) -> list[str]:
    """Numbers right-aligned; the first column (and the last with ``text_last``) left."""
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return [
        indent
        + "  ".join(
            c.ljust(w) if i == 0 or (text_last and i == len(r) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]


def _lat(block: dict[str, Any], key: str) -> str:
    value = block["latency_ms"].get(key)
    return "-" if value is None else f"{value:,.0f}"


def _backend_lines(b: dict[str, Any]) -> list[str]:
    idle = b["idle"]
    lines = ["", f"{TITLES.get(b['backend'], b['backend'])}: {', '.join(b['services'])}"]
    rows: list[tuple[Any, ...]] = [
        ("idle", "-", "-", "-", f"{idle['stack_cores']:.2f}", f"{idle['machine_cores_busy']:.2f}",
         "-", f"{idle['others_cores']:.2f}", "")
    ]  # fmt: skip
    for st in b["sweep"]["steps"]:
        cpu = st["cpu"]
        rows.append(
            (
                f"{st['rate']:g}/s",
                f"{st['achieved_rate']:g}",
                f"{st['completion_rate']:g}",
                f"{_lat(st, 'p50')} / {_lat(st, 'p99')}",
                f"{cpu['stack_cores']:.2f}",
                f"{cpu['machine_cores_busy']:.2f}",
                f"{cpu['stack_ms_per_unit']:.1f}",
                f"{cpu['others_cores']:.2f}",
                "pass" if st["passed"] else f"FAIL: {st['why']}",
            )
        )
    header = ("offered", "sent/s", "done/s", "p50 / p99 ms", "stack cores", "machine cores",
              "CPU ms/saga", "others' cores", "")  # fmt: skip
    lines += [line.rstrip() for line in _table(header, rows, text_last=True)]
    lines.append(f"  sustained capacity: {b['sweep']['capacity']:g} orders/s")
    burst = b["burst"]
    if burst is not None:
        lines.append(
            f"  burst (secondary): {burst['n']:,} orders at once, {burst['per_s']:,.0f} sagas/s, "
            f"p50 {_lat(burst, 'p50')} ms, p99 {_lat(burst, 'p99')} ms, stack CPU "
            f"{burst['cpu_all_work']['stack_ms_per_unit']:.1f} ms/saga"
        )
    spans = b["trace_exports"]
    if spans is not None:
        lines.append(
            f"  trace exports received (and dropped) by the OTLP sink: {spans['requests']:,} "
            f"requests, {spans['bytes'] / 1e6:.1f} MB"
        )
    at100 = _step(b, 100)
    if at100 is not None:
        prows = [
            (p["process"], f"{p['cpu_s_per_1000']:.2f}", f"{p['cores']:.2f}")
            for p in at100["cpu"]["processes"]
        ]
        lines.append("  CPU per process at 100 orders/s:")
        lines += _table(("process", "CPU ms/saga", "cores"), prows, "    ")
    lines.append(f"  orders-summary at the end: {b['checked_completed']:,} COMPLETED, no other")
    return lines


def render(res: dict[str, Any]) -> str:
    opts = res["options"]
    noisy = max(
        (
            float(st["cpu"]["others_cores"])
            for b in res["backends"].values()
            for st in b["sweep"]["steps"]
        ),
        default=0.0,
    )
    lines = [
        f"choreo saga benchmark: every service of `choreo up` + the broker; tracing "
        f"{'OTLP to a dropping sink' if opts['tracing'] else 'off'}; steps of "
        f"{opts['step_s']:g}s after a {opts['warmup']:,}-order warm-up; whole run "
        f"{res['elapsed_s']:.0f}s",
        f"CPU used by other processes: up to {noisy:.2f} cores in a step"
        + (" - NOISY, repeat the run" if noisy > NOISY_CORES else " (quiet)"),
        "stack cores = the services and the broker (not the benchmark's load generator or "
        "trace sink); a step passes when completions keep up within 2% and p99 <= 250 ms",
        "broker: "
        + (
            "SECURED - SASL_SSL + SCRAM-SHA-512, ACLs; services as their own principals, "
            "the raw pipe as admin"
            if opts.get("secure")
            else "plaintext"
        ),
    ]
    for b in res["backends"].values():
        lines += _backend_lines(b)
    raw = res["raw"]
    steady = raw["steady"]
    lines += [
        "",
        f"raw 6-hop aiokafka pipe (5 processes: consume, send with acks=all, commit per batch; "
        f"values {raw['value_sizes']} bytes):",
        f"  at {steady['rate']:g}/s: p50 {_lat(steady, 'p50')} ms, p99 {_lat(steady, 'p99')} ms, "
        f"{steady['cpu']['stack_ms_per_unit']:.2f} CPU ms per message chain "
        f"({steady['cpu']['stack_cores']:.2f} cores with the broker)",
    ]
    if raw["burst"] is not None:
        lines.append(f"  burst: {raw['burst']['per_s']:,.0f} message chains/s")
    for name, b in res["backends"].items():
        at = _step(b, float(steady["rate"]))
        ratio = []
        if at is not None and steady["cpu"]["stack_ms_per_unit"] > 0:
            times = at["cpu"]["stack_ms_per_unit"] / steady["cpu"]["stack_ms_per_unit"]
            ratio.append(f"CPU per saga at {steady['rate']:g}/s = x{times:.1f} the raw pipe's")
        if b["burst"] is not None and raw["burst"] is not None:
            ratio.append(
                f"burst sagas/s = {100 * b['burst']['per_s'] / raw['burst']['per_s']:.1f}% of "
                "the raw pipe's"
            )
        if ratio:
            lines.append(f"  ratio, {name}: " + "; ".join(ratio))
    lines += ["", "targets (issue 15):"]
    trows = [
        (
            t["target"],
            f"{t['want']} {t['unit']}",
            "-" if t["value"] is None else f"{t['value']:g}",
            "PASS" if t["passed"] else "MISS",
        )
        for t in res["targets"]
    ]
    lines += _table(("", "target", "measured", ""), trows)
    return "\n".join(lines)
