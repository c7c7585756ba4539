"""Run every benchmark script in turn and collect their tables into one markdown file.

    .venv/bin/python benchmarks/run_all.py                       # full settings (about 30 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick               # every script's quick mode (about 2 min)
    .venv/bin/python benchmarks/run_all.py --only bench_train,bench_predict --markdown results.md

Each script runs in its own process with the options given here (``--quick``, ``--threads``,
``--repeats``, ``--backends`` ...) and writes ``<out-dir>/<script>.json``. The markdown file lists,
for every script, the exact command and its tables, ready to paste into ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
SCRIPTS = ("bench_ceiling", "bench_train", "bench_predict", "bench_finetune", "bench_shards", "bench_data",
           "parity_torch_vs_tf", "bench_synthetic")


def render_markdown(payloads: list[dict]) -> str:
    """Every script's command and tables as markdown."""
    lines = []
    for p in payloads:
        m = p["machine"]
        lines += [f"### {p['benchmark']}", "", f"Command: `{p['command']}`", "",
                  f"Machine: {m['nproc']} cores ({m['cpu']}), load average at the end {m['load_average_1_5_15']}, "
                  f"threads {p['settings']['threads']}; {m['date']}", ""]
        for title, table in p["tables"].items():
            lines += [f"**{title}**", "", table, ""]
        for note in p.get("notes", []):
            lines += [f"- {note}"]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(SCRIPTS)}")
    parser.add_argument("--out-dir", default=str(HERE / "results"), help="folder of the JSON results")
    parser.add_argument("--markdown", default=None, help="also write all tables to this markdown file")
    args, passthrough = parser.parse_known_args(argv)
    scripts = SCRIPTS if args.only is None else tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in scripts if s not in SCRIPTS]
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose from {', '.join(SCRIPTS)}")
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payloads, failed = [], []
    for name in scripts:
        extra = list(passthrough)
        if name in ("bench_shards", "bench_synthetic") and any(a.startswith("--backends") for a in extra):
            # shards exist only in TensorFlow, the generator uses no framework: keep their own backend lists
            drop = [i for i, a in enumerate(extra) if a.startswith("--backends")]
            for i in reversed(drop):
                del extra[i: i + (1 if "=" in extra[i] else 2)]
        out = out_dir / f"{name}.json"
        cmd = [sys.executable, str(HERE / f"{name}.py"), *extra, "--out", str(out)]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd)
        print(f"== {name}: exit {proc.returncode} after {time.perf_counter() - start:.0f} s", flush=True)
        if proc.returncode != 0 or not out.exists():
            failed.append(name)
            continue
        payloads.append(json.loads(out.read_text()))
    if args.markdown:
        pathlib.Path(args.markdown).write_text(render_markdown(payloads))
        print(f"markdown written to {args.markdown}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
