"""Where an ONNX graph spends its time in ONNX Runtime: kernel time per operator type.

Runs the graph on random token ids (batch x length, all attended) with ONNX Runtime's
profiler on, ``--threads`` intra-op threads, and prints each operator type's share and
milliseconds per run (the first run, a warm-up, is left out). Time it with the cores to itself.

  python -m bench.ort_profile data/deploy/rt-0.6-100000/onnx/model.int8.onnx
  python -m bench.ort_profile model.onnx --batch 1 --length 128 --runs 20
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

from kprune.entry import run_main
from kprune.errors import KPruneError


def _vocab_size(path) -> int:
    """Rows of the word-embedding table that ``input_ids`` indexes."""
    import onnx

    graph = onnx.load(str(path)).graph
    sizes = {t.name: t.dims[0] for t in graph.initializer if t.dims}
    for n in graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == "input_ids":
            return int(sizes.get(n.input[0], 2))
    return 2


def profile(path: str | Path, batch: int, length: int, runs: int, threads: int) -> list[tuple]:
    """(operator type, share of kernel time, ms per run), largest first."""
    import numpy as np
    import onnxruntime as ort

    if not Path(path).is_file():
        raise KPruneError(f"{path} does not exist; export a model first (kprune export)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feed = {}
        for i in session.get_inputs():
            if i.name == "input_ids":
                feed[i.name] = rng.integers(0, _vocab_size(path), (batch, length), dtype=np.int64)
            elif i.name == "attention_mask":
                feed[i.name] = np.ones((batch, length), dtype=np.int64)
            else:
                feed[i.name] = np.zeros((batch, length), dtype=np.int64)
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs_at = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )[1:]  # the first run warms up
    totals: collections.Counter = collections.Counter()
    for e in events:
        node = e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
        if node and any(start <= e["ts"] <= end for start, end in runs_at):
            totals[e["args"]["op_name"]] += e["dur"]
    measured = max(1, len(runs_at))
    whole = sum(totals.values()) or 1
    return [(op, d / whole, d / measured / 1000) for op, d in totals.most_common()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.ort_profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("graph", help="an .onnx file")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    def go() -> None:
        rows = profile(args.graph, args.batch, args.length, args.runs, args.threads)
        total = sum(ms for _, _, ms in rows)
        print(f"{args.graph}: batch {args.batch} x {args.length}, {args.threads} threads")
        for op, share, ms in rows:
            if share >= 0.001:
                print(f"  {op:28s} {100 * share:5.1f} %  {ms:8.1f} ms/run")
        print(f"  {'all kernels':28s} {100.0:5.1f} %  {total:8.1f} ms/run")

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
