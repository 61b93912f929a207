"""Run every benchmark script, print one markdown table, write the JSON beside it.

Each ``benchmarks/*.py`` (except this file) runs as its own subprocess with a timeout;
its last stdout line that parses as a JSON object is its result. The convention the
scripts follow is in ``benchmarks/README.md``: figures are numeric (or boolean) values,
nested keys are shown dotted (``"4096": {"p95_ms": 9}`` -> ``4096.p95_ms``), and an
optional ``"targets"`` dict maps figures to ``"<= 16"``-style conditions. Scripts without
targets still report their figures (target column "-").

    python benchmarks/run_all.py                      # all scripts, 30 min each at most
    python benchmarks/run_all.py --only predict paint --timeout 600
    python benchmarks/run_all.py --args "predict=--sizes 1024 --repeats 1"

Writes ``benchmarks/out/results.json`` and ``results.md`` (and a time-stamped copy of
the JSON). Exit status 1 when a target fails or a script errors, so CI can gate on it.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out"
MAX_FIGURES = 25  # per script without "targets"/"report": keeps the table readable
SKIP_KEYS = {"targets", "report", "benchmark", "threads", "cpus", "repeats", "seed"}
_OPS = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
    "!=": operator.ne,
}
_COND = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")


def scripts(only: list[str] | None = None) -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name)
    found = [p for p in found if not p.name.startswith("_")]
    if only:
        found = [p for p in found if p.stem in only]
    return found


def last_json(stdout: str) -> dict[str, Any] | None:
    """The last line of stdout that is a JSON object (scripts may log before it)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


LONG_SCRIPTS = {"instances": 2700.0, "lr_suggestion": 2400.0}  # seconds they need at least


def run_script(path: Path, timeout: float, extra: list[str]) -> dict[str, Any]:
    """Run one script; never raises: failures become an ``error`` in the record."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    record: dict[str, Any] = {"script": path.name, "args": extra}
    # Own session: on timeout the whole group goes, including scripts' own subprocesses.
    proc = subprocess.Popen(
        [sys.executable, str(path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        record.update(error=f"timed out after {timeout:g} s", seconds=round(timeout, 1))
        return record
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["returncode"] = proc.returncode
    result = last_json(stdout)
    if result is None:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        record["error"] = f"exit {proc.returncode}, no JSON line: " + " | ".join(tail)
    else:
        record["result"] = result
        if "error" in result:
            record["error"] = str(result["error"])
        elif proc.returncode != 0:
            record["error"] = f"exit {proc.returncode}"
    return record


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Numeric and boolean leaves by dotted path (lists by index)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        if isinstance(value, (bool, int, float)) and prefix:
            out[prefix] = value
        return out
    for key, sub in items:
        if not prefix and key in SKIP_KEYS:
            continue
        out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return float(text)


def check(value: Any, target: Any) -> bool | None:
    """True/False for a target like ``"<= 16"`` (a bare number means ``==``);
    None when the target cannot be read."""
    if isinstance(target, bool) or isinstance(target, (int, float)):
        return value == target
    m = _COND.match(str(target))
    try:
        if m:
            op, ref = _OPS[m.group(1)], _parse_value(m.group(2))
        else:
            op, ref = operator.eq, _parse_value(str(target))
        if isinstance(value, float) and math.isnan(value):
            return False
        return bool(op(value, ref))
    except (TypeError, ValueError):
        return None


def rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows of one script: targeted figures first, then the others."""
    name = record["script"].removesuffix(".py")
    result = record.get("result") or {}
    name = str(result.get("benchmark", name))
    if "error" in record and not result:
        return [{"benchmark": name, "figure": "error", "value": record["error"],
                 "target": "-", "pass": False}]  # fmt: skip
    figures = flatten(result)
    targets = result.get("targets") if isinstance(result.get("targets"), dict) else {}
    chosen = list(targets)
    report = result.get("report")
    if isinstance(report, list):
        chosen += [f for f in report if f not in chosen]
    if not chosen:
        chosen = list(figures)[:MAX_FIGURES]
    out = []
    if "error" in record:
        out.append({"benchmark": name, "figure": "error", "value": record["error"],
                    "target": "-", "pass": False})  # fmt: skip
    for fig in chosen:
        target = targets.get(fig)
        if fig not in figures:
            value, ok = "missing", (False if target is not None else None)
        else:
            value = figures[fig]
            ok = check(value, target) if target is not None else None
        out.append({"benchmark": name, "figure": fig, "value": value,
                    "target": "-" if target is None else str(target), "pass": ok})  # fmt: skip
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(all_rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    mark = {True: "pass", False: "**FAIL**", None: "-"}
    lines = [
        f"Machine: {machine['summary']}",
        "",
        "| benchmark | figure | value | target | pass |",
        "|---|---|---:|---|---|",
    ]
    for r in all_rows:
        value = _fmt(r["value"]).replace("|", "\\|")
        lines.append(
            f"| {r['benchmark']} | {r['figure']} | {value} | {r['target']} | {mark[r['pass']]} |"
        )
    return "\n".join(lines) + "\n"


def machine_info() -> dict[str, Any]:
    """Where the numbers came from: the README quotes the table with this line."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    info["summary"] = (
        f"{info['cpu']}, {info['cpus']} logical CPUs"
        + (f", {info['gpu']}" if "gpu" in info else ", no GPU")
        + f"; Python {info['python']}"
        + (f", torch {info['torch']}" if "torch" in info else "")
    )
    return info


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="script stems to run")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per script")
    ap.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help='extra arguments for one script, e.g. "predict=--sizes 1024"',
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the results")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _parse_args(argv)
    extra: dict[str, list[str]] = {}
    for item in a.args:
        name, _, rest = item.partition("=")
        extra[name.removesuffix(".py")] = shlex.split(rest)
    todo = scripts(a.only)
    if not todo:
        print("no benchmark scripts found", file=sys.stderr)
        return 1
    records = []
    for path in todo:
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        # instances.py trains three 10-minute runs: more than the default 30 minutes
        timeout = max(a.timeout, LONG_SCRIPTS.get(path.stem, 0.0))
        rec = run_script(path, timeout, extra.get(path.stem, []))
        print(f"  {rec.get('seconds')} s" + (f", {rec['error']}" if "error" in rec else ""),
              file=sys.stderr, flush=True)  # fmt: skip
        records.append(rec)
    machine = machine_info()
    table_rows = [r for rec in records for r in rows(rec)]
    table = markdown(table_rows, machine)
    print(table)
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    payload = {"created": stamp, "machine": machine, "scripts": records, "rows": table_rows}
    text = json.dumps(payload, indent=2, default=str)
    (a.out / "results.json").write_text(text)
    (a.out / f"results-{stamp}.json").write_text(text)
    (a.out / "results.md").write_text(table)
    print(f"wrote {a.out / 'results.json'} and results.md", file=sys.stderr)
    failed = any(r["pass"] is False for r in table_rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
