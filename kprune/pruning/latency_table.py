"""Latency tables: what a pruned model costs on a runtime, predicted from its kept units.

Every encoder layer of a model has the same shape, so one table per sublayer kind serves all
layers: ``attention[h]``, the milliseconds one attention sublayer with ``h`` kept heads adds,
for h = 0..H, and ``ffn[n]``, what one FFN sublayer with ``n`` kept neurons adds (measured at
a grid of counts, linear in between). ``base`` is the model with every sublayer empty
(embeddings, the empty layers' residual LayerNorms, the classifier). A mask set's predicted
latency is

    base + sum over layers of attention[h_l] + ffn[n_l]

and nothing else (``predict_ms``). The entries are measured on shaped copies of the model
(``measure_table``): the model with every layer keeping h heads and no neurons, or n neurons
and no heads, timed in pairs with the model of empty layers, the difference divided by the
number of layers; what noise is left is removed by making each table non-decreasing (pooled
adjacent violators). Empty sublayers cost 0 by construction.

``LatencyCost`` is the table as K-prune's mask search uses it (``kprune.pruning.search``):
units are ranked by knowledge per unit of latency (the slope of the table's linear part),
and the budget is charged exactly what the table says, the first unit of a sublayer paying
its fixed cost and the units inside a flat stretch of the table paying nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from kprune.atomic import write_json
from kprune.deploy.latency import Runtime, latency_ms, runner
from kprune.errors import KPruneError
from kprune.models.adapters import get_adapter
from kprune.pruning.masks import Masks

FFN_POINTS = 16  # FFN counts measured between 0 and N (plus n = 1)


def _isotonic(values: list[float]) -> list[float]:
    """The closest non-decreasing sequence (least squares, pooled adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    out: list[float] = []
    for mean, weight in blocks:
        out.extend([mean] * int(weight))
    return out


@dataclass(frozen=True)
class LatencyTable:
    """Measured sublayer latencies of one model shape on one runtime (ms)."""

    runtime: dict  # Runtime's fields
    layers: int
    heads: int
    neurons: int
    base_ms: float  # every sublayer empty
    attention_ms: list[float]  # [H + 1]: h kept heads, attention_ms[0] = 0
    ffn_counts: list[int]  # increasing, from 0 to N
    ffn_ms: list[float]  # at ffn_counts, ffn_ms[0] = 0
    dense_ms: float  # the whole model, measured
    key: str = ""  # what the table was measured for (``table_key``)

    def attention(self, heads: torch.Tensor) -> torch.Tensor:
        """ms of attention sublayers keeping ``heads`` heads (a tensor of counts)."""
        table = torch.tensor(self.attention_ms, dtype=torch.float64)
        return table[heads.long()]

    def ffn(self, neurons: torch.Tensor) -> torch.Tensor:
        """ms of FFN sublayers keeping ``neurons`` neurons (linear between measured counts)."""
        xs = torch.tensor(self.ffn_counts, dtype=torch.float64)
        ys = torch.tensor(self.ffn_ms, dtype=torch.float64)
        n = neurons.double().clamp(0, self.neurons)
        i = torch.searchsorted(xs, n, right=True).clamp(1, len(xs) - 1)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (n - x0) / (x1 - x0)

    def encoder_ms(self, masks: Masks) -> float:
        """ms the kept units of ``masks`` add to ``base_ms``."""
        return float(
            self.attention(masks.heads.sum(1)).sum() + self.ffn(masks.neurons.sum(1)).sum()
        )

    def predict_ms(self, masks: Masks) -> float:
        """The predicted latency of the model pruned to ``masks``."""
        return self.base_ms + self.encoder_ms(masks)

    @property
    def predicted_dense_ms(self) -> float:
        return self.predict_ms(Masks.ones(self.layers, self.heads, self.neurons))

    def target_ms(self, speedup: float = 0.0, latency_ms: float = 0.0) -> float:
        """The latency a search aims at: ``latency_ms``, or the predicted dense latency over
        ``speedup``. One line if it is below what the empty encoder costs."""
        target = latency_ms or self.predicted_dense_ms / speedup
        if target < self.base_ms:
            dense = self.predicted_dense_ms
            raise KPruneError(
                f"target latency {target:.3g} ms is below what the model costs with every head "
                f"and neuron pruned ({self.base_ms:.3g} ms on {Runtime(**self.runtime).key}; "
                f"dense {dense:.3g} ms, at most {dense / self.base_ms:.3g}x faster); "
                "ask for a smaller speed-up or a larger --latency-ms"
            )
        return target

    def save(self, path: Path) -> Path:
        write_json(Path(path), asdict(self))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise KPruneError(f"latency table {path} does not exist; check the path") from None
        except (ValueError, TypeError) as exc:
            raise KPruneError(
                f"{path} is not a kprune latency table ({exc}); measure it again "
                "(kprune latency MODEL --out FILE)"
            ) from None


@dataclass(frozen=True)
class LatencyCost:
    """A latency table as the mask search charges it (the FLOPs model's counterpart)."""

    table: LatencyTable

    @property
    def head(self) -> float:
        """Ranking cost of one head: the slope of the attention table past its first head."""
        t, h = self.table.attention_ms, self.table.heads
        return max((t[h] - t[1]) / (h - 1), 1e-9) if h > 1 else max(t[1], 1e-9)

    @property
    def neuron(self) -> float:
        """Ranking cost of one neuron: the slope of the FFN table past its first neuron."""
        n = self.table.neurons
        y = self.table.ffn(torch.tensor([1.0, float(n)]))
        return max(float(y[1] - y[0]) / max(n - 1, 1), 1e-12)

    def of_masks(self, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        return float(
            self.table.attention(head_mask.sum(-1).reshape(-1)).sum()
            + self.table.ffn(neuron_mask.sum(-1).reshape(-1)).sum()
        )

    def whole(self, masks: Masks) -> float:
        return self.of_masks(torch.ones_like(masks.heads), torch.ones_like(masks.neurons))

    def kept(self, masks: Masks) -> float:
        return self.of_masks(masks.heads, masks.neurons) / self.whole(masks)

    def budget(self, target_ms: float) -> float:
        """What the encoder's units may cost for the model to run in ``target_ms``."""
        return target_ms - self.table.base_ms

    def flat(self, kind: str) -> int:
        """How many units of a sublayer cost no more than its first (the table's flat part)."""
        if kind == "head":
            t = self.table.attention_ms
            return max(i for i in range(1, len(t)) if t[i] <= t[1])
        counts = torch.arange(1, self.table.neurons + 1, dtype=torch.float64)
        y = self.table.ffn(counts)
        return int((y <= y[0]).sum())

    def charges(self, sublayer: torch.Tensor, is_head: torch.Tensor) -> torch.Tensor:
        """What the budget is charged for each candidate unit taken in the given order:
        ``sublayer`` and ``is_head`` say whose unit each one is; the j-th unit taken from a
        sublayer costs the table's step from j - 1 to j kept units."""
        ids = sublayer * 2 + (~is_head).long()
        order_in = torch.zeros_like(ids)
        for u in torch.unique(ids):
            where = ids == u
            order_in[where] = torch.arange(1, int(where.sum()) + 1)
        heads = self.table.attention(torch.where(is_head, order_in, 0))
        heads_before = self.table.attention(torch.where(is_head, order_in - 1, 0))
        neurons = self.table.ffn(torch.where(is_head, 0, order_in))
        neurons_before = self.table.ffn(torch.where(is_head, 0, order_in - 1))
        return torch.where(is_head, heads - heads_before, neurons - neurons_before)


# How entries are timed (``measure_table``); a new method makes cached tables stale.
METHOD = "paired-full-depth"


def table_key(model: nn.Module, rt: Runtime, ffn_points: int = FFN_POINTS) -> str:
    """What a table depends on: the model's shape and family (its config without weights),
    the runtime setting, the FFN counts timed, the library versions that compute it and the
    CPU."""
    config = {
        k: v
        for k, v in model.config.to_dict().items()
        if k not in ("_name_or_path", "transformers_version", "id2label", "label2id")
    }
    versions = {"torch": torch.__version__}
    if rt.name != "torch":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    blob = json.dumps(
        {
            "config": config,
            "runtime": asdict(rt),
            "ffn_points": ffn_points,
            "method": METHOD,
            "versions": versions,
            "cpu": _cpu_name(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _layer_list(model: nn.Module) -> nn.ModuleList:
    first = get_adapter(model).layers(model)[0]
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and module[0] is first:
            return module
    raise KPruneError(f"cannot find the encoder layers of {type(model).__name__}")


def _shaped(model: nn.Module, layers: int, heads: int, neurons: int) -> nn.Module:
    """A copy of ``model`` with its first ``layers`` layers, each keeping its first ``heads``
    heads and ``neurons`` neurons (physically pruned); ``model`` is left as it was."""
    from kprune.pruning.surgery import prune_model

    full = _layer_list(model)
    dropped = list(full)[layers:]
    for _ in dropped:  # out of the model while it is copied: not copied
        del full[len(full) - 1]
    try:
        copied = copy.deepcopy(model)
    finally:
        full.extend(dropped)
    copied = copied.cpu().eval()
    copied.config.num_hidden_layers = layers
    _, h_all, _, _, n_all = get_adapter(model).dims(model)
    masks = Masks(torch.zeros(layers, h_all), torch.zeros(layers, n_all))
    masks.heads[:, :heads] = 1
    masks.neurons[:, :neurons] = 1
    return prune_model(copied, masks)


def _elapsed_ms(forward: Callable[[], object]) -> float:
    t = time.perf_counter()
    forward()
    return (time.perf_counter() - t) * 1000


def measure_table(
    model: nn.Module,
    rt: Runtime,
    repeats: int = 10,
    progress: bool = False,
    ffn_points: int = FFN_POINTS,
    warmup: int = 2,
) -> LatencyTable:
    """The latency table of ``model``'s shape on ``rt``, timed on CPU copies (``model`` is not
    changed or moved).

    Each entry is timed on a full-depth copy whose every layer has that shape, paired with
    the empty copy: ``repeats`` rounds each time both (in alternating order), and the entry is
    the median of the rounds' differences divided by the number of layers. Pairing cancels
    the machine's drift between entries; full depth multiplies a sublayer's cost by the
    number of layers against the same timer noise, and times it among neighbours as the
    pruned model will run it."""
    from tqdm.auto import tqdm

    layers, heads, _, _, neurons = get_adapter(model).dims(model)
    counts = sorted({0, 1, *(round(neurons * i / ffn_points) for i in range(ffn_points + 1))})
    points = [*((h, 0) for h in range(1, heads + 1)), *((0, n) for n in counts[1:])]
    bar = tqdm(total=len(points) + 1, desc=f"latency table {rt.key}", disable=not progress)
    empty_times: list[float] = []
    with runner(_shaped(model, layers, 0, 0), rt) as empty:

        def per_layer(shape: tuple[int, int]) -> float:
            with runner(_shaped(model, layers, *shape), rt) as forward:
                for _ in range(warmup):
                    empty()
                    forward()
                diffs = []
                for r in range(repeats):
                    if r % 2:
                        ms = _elapsed_ms(forward)
                        base = _elapsed_ms(empty)
                    else:
                        base = _elapsed_ms(empty)
                        ms = _elapsed_ms(forward)
                    empty_times.append(base)
                    diffs.append(ms - base)
            bar.update()
            return max(statistics.median(diffs), 0.0) / layers

        one = {p: per_layer(p) for p in points}
    dense_ms = latency_ms(_shaped(model, layers, heads, neurons), rt, repeats, warmup)
    bar.update()
    bar.close()
    attention = _isotonic([0.0, *(one[(h, 0)] for h in range(1, heads + 1))])
    ffn = _isotonic([0.0, *(one[(0, n)] for n in counts[1:])])
    return LatencyTable(
        runtime=asdict(rt),
        layers=layers,
        heads=heads,
        neurons=neurons,
        base_ms=statistics.median(empty_times),
        attention_ms=[0.0, *attention[1:]],
        ffn_counts=counts,
        ffn_ms=[0.0, *ffn[1:]],
        dense_ms=dense_ms,
        key=table_key(model, rt, ffn_points),
    )


def cached_table(
    model: nn.Module,
    rt: Runtime,
    cache: str | Path,
    repeats: int = 10,
    progress: bool = False,
    ffn_points: int = FFN_POINTS,
) -> LatencyTable:
    """The table of ``model`` on ``rt`` from the folder ``cache`` (measured and saved there on
    the first call for this model shape, runtime, FFN counts, library versions and CPU)."""
    key = table_key(model, rt, ffn_points)
    path = Path(cache) / f"{rt.key}-{key}.json"
    if path.exists():
        table = LatencyTable.load(path)
        if table.key == key:
            return table
    table = measure_table(model, rt, repeats, progress, ffn_points)
    table.save(path)
    return table
