"""Stage bench_profile: where one measurement pass spends its time (torch.profiler).

One full-depth measurement pass (forward through every sublayer from cached inputs, backward
to the unit masks, K_rep sums) over a sample of the demo teacher, timed and profiled by
operator. Prints the pass's seconds, tokens per second, the achieved matmul rate and the
operator table; docs/speed.md quotes it.

    python -m bench.profile                       # rt teacher, 10K tokens, float32
    python -m bench.profile --dtype bfloat16 --tokens 30000
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace

from kprune.config import PASS_TOKENS
from kprune.entry import run_main
from kprune.pruning.knowledge import MeasureSpec


def profile_pass(args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from kprune.config import PruneConfig
    from kprune.data.sample import materialise, task_sample
    from kprune.data.tasks import load_task
    from kprune.models.adapters import get_adapter
    from kprune.models.checkpoint import load_model
    from kprune.models.loading import frozen, load_tokenizer
    from kprune.pruning.knowledge import measure

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    model = frozen(load_model(args.teacher), cpu)
    task = load_task(args.task, args.data_dir)
    cfg = PruneConfig(tokens=args.tokens, batch_size=args.batch_size)
    data = task_sample(model, load_tokenizer(args.teacher), task, cfg.sample, cpu)
    adapter = get_adapter(model)
    sample = materialise(model, adapter, data, args.batch_size, cpu)
    measured = copy.deepcopy(model).to(getattr(torch, args.dtype))
    views = [adapter.view(layer) for layer in adapter.layers(measured)]
    spec = replace(MeasureSpec.of(cfg, task.spec.kind), pass_tokens=args.pass_tokens)
    dims = adapter.dims(model)

    def one_pass():
        return measure(views, lambda h: adapter.logits(measured, h), sample, 0, dims, spec)

    one_pass()  # warm-up
    t0 = time.perf_counter()
    one_pass()
    seconds = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        one_pass()
    layers, heads, head_dim, hidden, neurons = dims
    padded = sum(b.valid.numel() for b in sample.batches)
    per_token = layers * (4 * hidden * heads * head_dim + 2 * hidden * neurons) * 2
    mm = sum(
        e.self_cpu_time_total for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm")
    )
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(
        f"{args.dtype} pass over {sample.n_tokens} tokens ({padded} with padding), "
        f"batch {args.batch_size}, pass tokens {args.pass_tokens}, {args.threads} threads: "
        f"{seconds:.2f} s, "
        f"{sample.n_tokens / seconds:.0f} tokens/s; "
        f"matmuls {100 * mm / total:.0f}% of operator time at "
        f"{2 * per_token * padded / (mm / 1e6 * seconds / (total / 1e6)) / 1e9:.0f} GFLOP/s "
        "(forward + backward to the inputs)"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--teacher", default="data/teachers/minilm-l6/rt")
    p.add_argument("--task", default="rt")
    p.add_argument("--data-dir", default="data/tasks")
    p.add_argument("--tokens", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--pass-tokens",
        type=int,
        default=PASS_TOKENS,
        help="padded tokens per autograd pass, as prune's --pass-tokens (0: whole batches)",
    )
    p.add_argument("--rows", type=int, default=15, help="operators shown")
    args = p.parse_args(argv)
    return run_main(lambda: profile_pass(args))


if __name__ == "__main__":
    sys.exit(main())
