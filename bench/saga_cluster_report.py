"""``python -m bench.saga --layout cluster``'s tables: the two layouts side by side with the
cluster's ratio to the single node, where the CPU goes by group, and each layout's processes."""

from __future__ import annotations

from typing import Any

GROUPS = (
    "brokers",
    "services",
    "gateway",
    "postgres",
    "stand-ins",
    "others (not ours)",
)
TOP_PROCESSES = 12


def _ratio(new: float | None, old: float | None) -> str:
    if new is None or old is None or old == 0:
        return "-"
    return f"x{new / old:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _row(label: str, single: str, cluster: str, ratio: str = "") -> str:
    return f"| {label} | {single} | {cluster} | {ratio} |"


def _step_rows(rate: float, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    la, lb = a["latency_ms"], b["latency_ms"]
    ca, cb = a["cpu"], b["cpu"]
    rows = [
        _row(
            f"{rate:g}/s offered: done/s",
            f"{a['completion_rate']:g} ({a['why']})",
            f"{b['completion_rate']:g} ({b['why']})",
            _ratio(b["completion_rate"], a["completion_rate"]),
        ),
        _row(
            "p50 / p99 ms (scheduled -> OrderCompleted)",
            f"{_ms(la.get('p50'))} / {_ms(la.get('p99'))}",
            f"{_ms(lb.get('p50'))} / {_ms(lb.get('p99'))}",
            _ratio(lb.get("p99"), la.get("p99")),
        ),
        _row(
            "POST answered p50 / p99 ms (retries included)",
            f"{_ms(a['post_ms'].get('p50'))} / {_ms(a['post_ms'].get('p99'))}",
            f"{_ms(b['post_ms'].get('p50'))} / {_ms(b['post_ms'].get('p99'))}",
            _ratio(b["post_ms"].get("p99"), a["post_ms"].get("p99")),
        ),
        _row(
            "answers; orders refused (503/429) and retried",
            f"{a['posts']}; {a['orders_refused_once_or_more']}",
            f"{b['posts']}; {b['orders_refused_once_or_more']}",
        ),
        _row(
            "stack cores; CPU ms/saga",
            f"{ca['stack_cores']:.2f}; {ca['stack_ms_per_unit']:.1f}",
            f"{cb['stack_cores']:.2f}; {cb['stack_ms_per_unit']:.1f}",
            _ratio(cb["stack_ms_per_unit"], ca["stack_ms_per_unit"]),
        ),
    ]
    for group in GROUPS:
        ga, gb = a["groups"].get(group), b["groups"].get(group)
        if ga is None and gb is None:
            continue
        ga = ga or {"ms_per_saga": 0.0, "cores": 0.0}
        gb = gb or {"ms_per_saga": 0.0, "cores": 0.0}
        rows.append(
            _row(
                f"  {group}: CPU ms/saga (cores)",
                f"{ga['ms_per_saga']:.2f} ({ga['cores']:.2f})",
                f"{gb['ms_per_saga']:.2f} ({gb['cores']:.2f})",
                _ratio(gb["ms_per_saga"], ga["ms_per_saga"]) if ga["ms_per_saga"] else "-",
            )
        )
    hops_a = {h["hop"]: h for h in a.get("stages", {}).get("hops", [])}
    for hop in b.get("stages", {}).get("hops", []):
        other = hops_a.get(hop["hop"])
        if other is None or not hop.get("n") or not other.get("n"):
            continue
        rows.append(
            _row(
                f"  hop {hop['hop']}: p50 / p99 ms",
                f"{_ms(other.get('p50'))} / {_ms(other.get('p99'))}",
                f"{_ms(hop.get('p50'))} / {_ms(hop.get('p99'))}",
                _ratio(hop.get("p50"), other.get("p50")),
            )
        )
    rows.append(
        _row(
            "  the load generator (not counted): cores",
            f"{_process(ca, 'bench (this process)')['cores']:.2f}",
            f"{_process(cb, 'bench (this process)')['cores']:.2f}",
        )
    )
    return rows


def _process(cpu: dict[str, Any], name: str) -> dict[str, Any]:
    for row in cpu["processes"]:
        if row["process"] == name:
            return dict(row)
    return {"cores": 0.0, "cpu_s_per_1000": 0.0}


def _raw_rows(a: dict[str, Any], b: dict[str, Any], saga: tuple[float, float]) -> list[str]:
    sa, sb = a["raw"]["steady"], b["raw"]["steady"]
    la, lb = sa["latency_ms"], sb["latency_ms"]
    rate = sa["rate"]
    ms_a, ms_b = sa["layout_ms_per_chain"], sb["layout_ms_per_chain"]
    return [
        _row(
            f"raw 6-hop pipe at {rate:g}/s: done/s; p50 / p99 ms",
            f"{sa['completion_rate']:g}; {_ms(la.get('p50'))} / {_ms(la.get('p99'))}",
            f"{sb['completion_rate']:g}; {_ms(lb.get('p50'))} / {_ms(lb.get('p99'))}",
            _ratio(lb.get("p99"), la.get("p99")),
        ),
        _row(
            "raw pipe: cores; CPU ms/chain (brokers' ms)",
            f"{sa['layout_cores']:.2f}; {ms_a:.1f} ({sa['groups']['brokers']['ms_per_saga']:.1f})",
            f"{sb['layout_cores']:.2f}; {ms_b:.1f} ({sb['groups']['brokers']['ms_per_saga']:.1f})",
            _ratio(ms_b, ms_a),
        ),
        _row(
            "saga CPU ms/saga over raw CPU ms/chain",
            _ratio(saga[0], ms_a),
            _ratio(saga[1], ms_b),
        ),
    ]


def _processes(name: str, step: dict[str, Any]) -> list[str]:
    cpu = step["cpu"]
    rows = sorted(cpu["processes"], key=lambda r: -float(r["cpu_s"]))[:TOP_PROCESSES]
    text = ", ".join(f"{r['process']} {r['cpu_s_per_1000']:.2f}" for r in rows)
    return [f"{name} at {step['rate']:g}/s, CPU ms per saga by process: {text}"]


def _at_rate(layout: dict[str, Any], rate: float) -> dict[str, Any]:
    """The step at the raw pipe's rate (the ratio compares like with like), else the last."""
    steps = layout["steps"]
    return next((st for st in steps if st["rate"] == rate), steps[-1])


def render(result: dict[str, Any]) -> str:
    a, b = result["layouts"]["single"], result["layouts"]["cluster"]
    opts = result["options"]
    lines = [
        f"bench.saga --layout cluster: PostgreSQL (durable), tracing "
        f"{'as shipped' if opts['tracing'] else 'off'}, {opts['step_s']:g} s per rate, "
        f"warm-up {opts['warmup']} orders; {result['elapsed_s']:.0f} s",
        "",
        _row("", "single node", "cluster", "cluster / single"),
        "| --- | --- | --- | --- |",
        _row(
            "layout",
            f"{len(a['brokers'])} broker (RF {a['replication_factor']}), "
            f"{len(a['instances'])} processes, POST to orders",
            f"{len(b['brokers'])} brokers (RF {b['replication_factor']}), "
            f"{len(b['instances'])} processes, POST through the gateway",
        ),
        _row(
            "idle stack cores",
            f"{a['idle']['stack_cores']:.2f}",
            f"{b['idle']['stack_cores']:.2f}",
            _ratio(b["idle"]["stack_cores"], a["idle"]["stack_cores"]),
        ),
    ]
    for sa, sb in zip(a["steps"], b["steps"], strict=True):
        lines += _step_rows(sa["rate"], sa, sb)
    at = _at_rate(a, a["raw"]["steady"]["rate"]), _at_rate(b, b["raw"]["steady"]["rate"])
    lines += _raw_rows(a, b, (at[0]["cpu"]["stack_ms_per_unit"], at[1]["cpu"]["stack_ms_per_unit"]))
    others = [st["cpu"]["others_cores"] for lay in (a, b) for st in lay["steps"]]
    lines += ["", f"others' CPU (cores, worst step): {max(others):.2f}"]
    if max(others) > 0.1:
        lines.append("NOISY: other processes used CPU during a step; repeat the run")
    lines.append("")
    for step_a, step_b in zip(a["steps"], b["steps"], strict=True):
        lines += _processes("single", step_a) + _processes("cluster", step_b)
    return "\n".join(lines)


if __name__ == "__main__":  # the table again from a run's --json: python -m ... FILE.json
    import json
    import sys
    from pathlib import Path

    print(render(json.loads(Path(sys.argv[1]).read_text())))
