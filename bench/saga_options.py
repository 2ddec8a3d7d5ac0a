"""``python -m bench.saga``'s settings: the defaults, ``--quick``'s, and the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bench.sweep import LADDER

DEFAULT_ORDERS = 2000
DEFAULT_WARMUP = 1000
DEFAULT_STEP_S = 30.0
DEFAULT_IDLE_S = 20.0
DEFAULT_BISECTIONS = 2
RAW_RATE = 100.0  # the raw pipe's steady rate, for its CPU per 1,000 messages
QUICK_STEP_S = 5.0
QUICK_IDLE_S = 3.0
QUICK_WARMUP = 200
QUICK_ORDERS = 300
QUICK_LADDER: tuple[float, ...] = (10, 50, 100, 200, 300)
LAYOUT_RATES: tuple[float, ...] = (100,)  # --layout cluster: issue 18's rate


@dataclass(frozen=True)
class Options:
    backends: tuple[str, ...] = ("sqlite", "postgres")
    step_s: float = DEFAULT_STEP_S
    idle_s: float = DEFAULT_IDLE_S
    ladder: tuple[float, ...] = LADDER
    bisections: int = DEFAULT_BISECTIONS
    warmup: int = DEFAULT_WARMUP
    burst: int = DEFAULT_ORDERS  # 0: no burst figure
    raw_rate: float = RAW_RATE
    tracing: bool = True
    consumer_batch: int | None = None
    secure: bool = False
    layout: str = "single"  # cluster: bench.saga_cluster, both layouts side by side
    providers: bool = False  # also the first backend with payments and shipping calling out


def parse_args(argv: list[str] | None, description: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.saga", description=description)
    parser.add_argument(
        "--database", choices=("sqlite", "postgres", "both"), default=None,
        help="the services' database: SQLite files, a durable PostgreSQL, or one after the "
        "other (default both; --quick: sqlite)",
    )  # fmt: skip
    parser.add_argument(
        "--layout", choices=("single", "cluster"), default="single",
        help="cluster: the single node (1 broker, POSTs to orders) and issue 18's layout (3 "
        "brokers, 2 instances of each service, POSTs through the gateway) side by side, on "
        "PostgreSQL, at each of --rates (default 100)",
    )  # fmt: skip
    parser.add_argument(
        "--step-seconds", type=float, default=None, metavar="S",
        help=f"how long each offered rate is held (default {DEFAULT_STEP_S:g}; --quick: "
        f"{QUICK_STEP_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--rates", default=None, metavar="R[,R...]",
        help="the ladder of offered rates the capacity search climbs (default "
        f"{','.join(f'{r:g}' for r in LADDER)}); 10, 50, 100 and 200 are always measured "
        "when listed",
    )  # fmt: skip
    counts = {  # flag -> (metavar, help); default None: the settings below choose
        "--bisections": ("K", f"steps between the last pass and the first fail (default "
                         f"{DEFAULT_BISECTIONS})"),
        "--orders": ("N", f"orders published at once for the burst figure (default "
                     f"{DEFAULT_ORDERS})"),
        "--warmup": ("N", f"orders through the saga before anything is timed (default "
                     f"{DEFAULT_WARMUP})"),
        "--consumer-batch": ("B", "CONSUMER_BATCH for the services (default: the services' "
                             "own default)"),
    }  # fmt: skip
    for flag, (metavar, text) in counts.items():
        parser.add_argument(flag, type=int, default=None, metavar=metavar, help=text)
    switches = {
        "--no-burst": "skip the burst figure (orders published at once)",
        "--no-tracing": "TRACE_EXPORTER=none instead of the shipped OTLP export (to a sink "
        "that drops)",
        "--quick": "a smoke run: SQLite, short steps, a short ladder, no bisection",
        "--secure": "on a secured broker (SASL_SSL, SCRAM-SHA-512, the catalogue's ACLs): each "
        "service as its own principal, the load, the watch and the raw pipe as admin",
        "--providers": "then the first backend again with payments and shipping calling the "
        "payment provider and carrier stand-ins (no faults), reported beside it",
        "--json": "print JSON instead of tables",
    }
    for flag, text in switches.items():
        parser.add_argument(flag, action="store_true", help=text)
    args = parser.parse_args(argv)
    try:
        ladder = (
            tuple(float(r) for r in args.rates.split(",") if r.strip())
            if args.rates
            else (
                LAYOUT_RATES if args.layout == "cluster" else QUICK_LADDER if args.quick else LADDER
            )
        )
    except ValueError:
        parser.error(f"--rates: comma-separated numbers, got {args.rates!r}")
    if not ladder or min(ladder) <= 0:
        parser.error("--rates must be positive")
    quick = args.quick
    database = args.database or (
        "postgres" if args.layout == "cluster" else "sqlite" if quick else "both"
    )
    burst = 0 if args.no_burst else (args.orders or (QUICK_ORDERS if quick else DEFAULT_ORDERS))
    args.opts = Options(
        backends=("sqlite", "postgres") if database == "both" else (database,),
        step_s=args.step_seconds or (QUICK_STEP_S if quick else DEFAULT_STEP_S),
        idle_s=QUICK_IDLE_S if quick else DEFAULT_IDLE_S,
        ladder=ladder if args.layout == "cluster" else tuple(sorted(ladder)),
        bisections=args.bisections if args.bisections is not None else (0 if quick else 2),
        warmup=args.warmup or (QUICK_WARMUP if quick else DEFAULT_WARMUP),
        burst=burst,
        tracing=not args.no_tracing,
        consumer_batch=args.consumer_batch,
        secure=args.secure,
        layout=args.layout,
        providers=args.providers,
    )
    if args.opts.step_s <= 0 or args.opts.warmup < 1:
        parser.error("--step-seconds and --warmup must be positive")
    return args
