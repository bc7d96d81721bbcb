"""The benchmark suite (`make bench`): throughput against the physical limit, history scaling, memory,
and remediations end to end on real Tekton.

    .venv/bin/python -m bench [--quick] [--only throughput|history|tekton] [--out bench/results.json]

Prints one table (median of the runs, min-max) and writes every run to bench/results.json with
the machine it ran on. `--quick` is a smoke run of a few minutes with smaller sizes.
"""

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import memory, tekton_e2e, throughput
from bench.common import Figures

HERE = Path(__file__).resolve().parent

FULL = {
    "sizes": {100: 3, 500: 3},
    "paced": (10.0, 15.0),
    "history": [10, 1000, 10000],
    "samples": 8,
    "tekton": {"n": 50, "repeats": 2, "paced": (2.0, 30.0)},
}
QUICK = {
    "sizes": {100: 2},
    "paced": (10.0, 10.0),
    "history": [10, 1000],
    "samples": 5,
    "tekton": {"n": 20, "repeats": 1, "paced": None},
}


def format_table(figures: Figures) -> str:
    rows = [("figure", "median", "min - max", "runs")]
    for figure in figures:
        spread = f"{min(figure.values):.3g} - {max(figure.values):.3g}" if figure.values else ""
        rows.append((f"{figure.name} [{figure.unit}]", f"{figure.median:.3g}", spread, str(len(figure.values))))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    figures = Figures()
    details: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "throughput": []}
    began = time.monotonic()
    if args.only in (None, "throughput"):
        for n, repeats in plan["sizes"].items():
            for i in range(repeats):
                paced = plan["paced"] if n == min(plan["sizes"]) else None
                print(f"throughput N={n} run {i + 1}/{repeats}", flush=True)
                details["throughput"].append(await throughput.measure(figures, details, n, run_index=i, paced=paced))
                save_partial(args.out, figures, details)
    if args.only in (None, "history"):
        print(f"history {plan['history']}", flush=True)
        history: dict[str, Any] = {}
        await memory.run(plan["history"], plan["samples"], figures, history)
        details.setdefault("machine", history.pop("machine", None))
        details["history"] = history
    if args.only in (None, "tekton"):
        real = plan["tekton"]
        details["tekton"] = []
        for i in range(real["repeats"]):
            print(f"real Tekton burst N={real['n']} run {i + 1}/{real['repeats']}", flush=True)
            details["tekton"].append(await tekton_e2e.measure(figures, details, real["n"], real["paced"]))
            save_partial(args.out, figures, details)
    details["seconds"] = round(time.monotonic() - began, 1)
    return {"machine": details.pop("machine", None), "figures": figures.to_json(), **details, "table": figures}


def save_partial(out: Path, figures: Figures, details: dict[str, Any]) -> None:
    """Results so far, so that an interrupted suite still leaves its finished runs behind."""
    out.write_text(json.dumps({"partial": True, "figures": figures.to_json(), **details}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs (a few minutes)")
    parser.add_argument("--only", choices=["throughput", "history", "tekton"])
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    results = asyncio.run(run_suite(args))
    table = results.pop("table")
    machine = results["machine"] or {}
    print()
    print(
        f"machine: {machine.get('cores')} cores ({machine.get('cpu')}), {machine.get('memory_gib')} GiB, "
        f"Python {machine.get('python')}, kube-apiserver {machine.get('kube_apiserver')}; "
        f"suite took {results['seconds']:.0f}s"
    )
    print(format_table(table))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
