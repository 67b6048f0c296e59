"""Tiny random models and synthetic data for fast tests (no downloads)."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pandas as pd
import torch

POSITIVE = ["good", "great", "fun", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor"]
NEUTRAL = ["the", "a", "movie", "film", "is", "was", "very", "plot", "cast", "story", "and"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL


def tiny_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})


def tiny_config(
    family: str = "bert",
    num_labels: int = 2,
    layers: int = 2,
    heads: int = 4,
    hidden: int = 32,
    ffn: int = 64,
):
    from transformers import BertConfig, DistilBertConfig, MPNetConfig, RobertaConfig

    common = {"vocab_size": len(VOCAB), "num_labels": num_labels}
    if family == "bert":
        return BertConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=128,
            **common,
        )
    # RoBERTa and MPNet: positions counted from the padding id, as their tokenizers pad
    roberta_like = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "max_position_embeddings": 130,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
        **common,
    }
    if family == "roberta":
        return RobertaConfig(type_vocab_size=1, **roberta_like)
    if family == "mpnet":
        return MPNetConfig(**roberta_like)
    if family == "distilbert":
        return DistilBertConfig(
            dim=hidden,
            n_layers=layers,
            n_heads=heads,
            hidden_dim=ffn,
            max_position_embeddings=128,
            pad_token_id=0,
            **common,
        )
    raise ValueError(family)


def make_tiny_model(
    folder: Path, family: str = "bert", num_labels: int = 2, head: str = "seq", seed: int = 0, **kw
) -> Path:
    """Save a random tiny model (sequence classification or QA) with a tokenizer."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = tiny_config(family, num_labels, **kw)
    if num_labels == 1:
        cfg.problem_type = "regression"
    cls = AutoModelForQuestionAnswering if head == "qa" else AutoModelForSequenceClassification
    model = cls.from_config(cfg)
    if family == "mpnet":  # position biases as large as trained ones: a wrong column shows
        torch.nn.init.normal_(model.mpnet.encoder.relative_attention_bias.weight, std=1.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def make_tiny_teacher(
    root: Path, n: int = 240, epochs: int = 3, lr: float = 3e-3, task=None, **model_kw
) -> Path:
    """A tiny BERT briefly fine-tuned in ``root/teacher`` (returned): on ``task``, or on ``n``
    synthetic sentiment rows written to ``root/s.csv``."""
    from kprune.config import FinetuneConfig
    from kprune.data.tasks import load_task
    from kprune.train.finetune import finetune

    make_tiny_model(root / "base", **model_kw)
    if task is None:
        sentiment_frame(n).to_csv(root / "s.csv", index=False)
        task = load_task(str(root / "s.csv"))
    cfg = FinetuneConfig(epochs=epochs, batch_size=16, lr=lr, max_length=16, warmup_ratio=0.0)
    finetune(str(root / "base"), task, root / "teacher", cfg, device="cpu", progress=False)
    return root / "teacher"


def make_headless(folder: Path) -> Path:
    """A base encoder (no task head) saved as if it were a classifier, with its tokenizer."""
    import json

    from transformers import BertModel

    BertModel(tiny_config()).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    (folder / "config.json").write_text(json.dumps(config))
    tiny_tokenizer().save_pretrained(folder)
    return folder


def sentiment_frame(n: int = 200, seed: int = 0, regression: bool = False) -> pd.DataFrame:
    """Synthetic, learnable sentiment: the label follows the polar words in the text."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pos = rng.random() < 0.5
        polar = POSITIVE if pos else NEGATIVE
        words = rng.sample(NEUTRAL, 4) + rng.sample(polar, rng.randint(1, 3))
        rng.shuffle(words)
        score = (1.0 if pos else -1.0) * (1 + rng.random())
        rows.append((" ".join(words), score if regression else int(pos)))
    return pd.DataFrame(rows, columns=["text", "label"]).drop_duplicates("text")


def write_task(root: Path, name: str = "rt", n: int = 300) -> Path:
    """A prepared registered task (train/dev/test Parquet) under ``root``; returns ``root``."""
    from kprune.data.splits import stratified_split

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, part in stratified_split(sentiment_frame(n), "classification").items():
        part.to_parquet(folder / f"{split}.parquet")
    return root


def write_rt_project(root: Path, epochs: int = 2) -> Path:
    """``root/tasks`` (a prepared rt task) and ``root/teachers/rt`` (a tiny teacher fine-tuned
    on it): the layout the benchmark tools read. Returns ``root``."""
    from kprune.data.tasks import load_task

    write_task(root / "tasks")
    teacher = make_tiny_teacher(root, epochs=epochs, task=load_task("rt", root / "tasks"))
    (root / "teachers").mkdir()
    teacher.rename(root / "teachers" / "rt")
    return root


def make_pruned_folders(root: Path, cases) -> list[tuple[str, str]]:
    """For each (family, head, labels): a random tiny 3-layer model, pruned to 2, 0 and 3
    heads (layer 1 also loses every neuron) and saved by ``save_pruned``; (folder, head)."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    from kprune.models.checkpoint import save_pruned
    from kprune.pruning.masks import Masks
    from kprune.pruning.surgery import prune_model

    folders = []
    for i, (family, head, labels) in enumerate(cases):
        src = make_tiny_model(root / f"dense{i}", family, labels, head=head, seed=i, layers=3)
        cls = AutoModelForQuestionAnswering if head == "qa" else AutoModelForSequenceClassification
        model = cls.from_pretrained(src).eval()
        g = torch.Generator().manual_seed(i)
        masks = Masks(
            torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]]),
            (torch.rand(3, 64, generator=g) > 0.4).float(),
        )
        masks.neurons[1] = 0  # layer 1: both sublayers fully pruned
        out = root / f"pruned-{family}.{head}{labels}"  # a dot in the name, as in rt-0.6
        save_pruned(prune_model(model, masks), out, masks, tiny_tokenizer())
        folders.append((str(out), head))
    return folders


def tiny_latency_table(**changes) -> dict:
    """A latency table (kprune.pruning.latency_table) of make_tiny_model's default shape (2
    layers of 4 heads and 64 neurons), its entries made up: predicted dense 9.2 ms, empty 2."""
    table = {
        "runtime": {"name": "torch", "batch": 32, "seq_len": 128, "threads": 2},
        "layers": 2,
        "heads": 4,
        "neurons": 64,
        "base_ms": 2.0,
        "attention_ms": [0.0, 1.0, 1.2, 1.4, 1.6],
        "ffn_counts": [0, 1, 32, 64],
        "ffn_ms": [0.0, 0.5, 1.2, 2.0],
        "dense_ms": 9.2,
    }
    return {**table, **changes}


class LoopbackServer:
    """A real server process on a free loopback port over a store in ``root``: started,
    killed (with the workers it spawned: its own process group) and started again on the
    same port and store. Subclasses give the command and the health URL."""

    health = "/health"

    def __init__(self, root: Path):
        import socket

        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        import os

        return dict(os.environ)

    def start(self) -> str:
        import subprocess
        import time
        import urllib.request

        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.uri + self.health, timeout=2) as r:
                    if r.status == 200:
                        return self.uri
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{type(self).__name__} did not start")

    def kill(self, sig: int | None = None) -> None:
        """Send ``sig`` (SIGKILL by default) to the server and the workers it started."""
        import os
        import signal

        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig or signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def stop(self) -> None:
        import signal

        self.kill(signal.SIGTERM)


class MlflowServer(LoopbackServer):
    """``mlflow server`` over a SQLite store and an artifact folder in ``root``."""

    def command(self) -> list[str]:
        import sys

        exe = Path(sys.executable).parent / "mlflow"
        cmd = [str(exe), "server", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}"]
        return [*cmd, "--artifacts-destination", str(self.root / "artifacts")]


class PrefectServer(LoopbackServer):
    """``prefect server start`` with its home (and database) in ``root``; its API is
    ``uri + "/api"``."""

    health = "/api/health"

    def command(self) -> list[str]:
        import sys

        exe = Path(sys.executable).parent / "prefect"
        return [str(exe), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]

    def env(self) -> dict:
        env = {k: v for k, v in super().env().items() if not k.startswith("PREFECT_")}
        return {
            **env,
            "PREFECT_HOME": str(self.root / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
