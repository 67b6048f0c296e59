"""A runtime setting: which runtime a model will serve on, at which batch size, sequence
length and thread count (what a latency is measured for; ``kprune.deploy.latency`` times it)."""

from __future__ import annotations

from dataclasses import dataclass

from kprune.errors import KPruneError
from kprune.extras import ONNX, first_missing, missing_message

RUNTIMES = ("torch", "ort", "ort-int8")
RUNTIME_HELP = (
    "torch (fp32 torch), ort (ONNX Runtime fp32, the fused graph of kprune export) or "
    "ort-int8 (the same graph with dynamically quantized int8 weights)"
)


@dataclass(frozen=True)
class Runtime:
    """Where and how a model is timed: runtime, batch size, sequence length, threads."""

    name: str = "torch"
    batch: int = 32
    seq_len: int = 128
    threads: int = 1

    def __post_init__(self) -> None:
        if self.name not in RUNTIMES:
            raise KPruneError(f"unknown runtime '{self.name}'; use one of {', '.join(RUNTIMES)}")
        if min(self.batch, self.seq_len, self.threads) < 1:
            raise KPruneError(
                f"runtime batch, sequence length and threads must be >= 1, got {self.batch}, "
                f"{self.seq_len}, {self.threads}"
            )
        if self.name != "torch":
            missing = first_missing("onnx", "onnxscript", "onnxruntime")
            if missing:
                raise KPruneError(missing_message(ONNX, missing, f"the {self.name} runtime"))

    @property
    def key(self) -> str:
        """A short name of the setting, for file names: ``ort-int8-b32-l128-t2``."""
        return f"{self.name}-b{self.batch}-l{self.seq_len}-t{self.threads}"
