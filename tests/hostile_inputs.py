"""The hostile-input table: every input kprune refuses, how it is built, the command it is
given to, and the exact line it answers with. tests/test_hostile_inputs.py runs each row;
docs/reliability.md shows the table (`python -m tests.hostile_inputs` prints it).

A row's ``make(root)`` builds its input under the shared ``root`` (a tiny teacher, a pruned
folder and a CSV task are there already) and returns the command line: ``kprune ...``
arguments, or ``["stage:sample", ...]`` for the sample stage's entry point. ``{d}`` in a
message stands for ``root``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tests.helpers import sentiment_frame


@dataclass(frozen=True)
class Row:
    group: str
    what: str
    make: Callable[[Path], list[str]]
    message: str


def _good() -> pd.DataFrame:
    return sentiment_frame(60)


def _file(root: Path, name: str, data: str | bytes) -> Path:
    path = root / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _csv_rows(rows) -> str:
    return "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)


def evaluate(root: Path, task: Path | str, model: str = "teacher", *extra: str) -> list[str]:
    out = root / "out" / f"{Path(str(task)).name}-{model.replace('/', '_')}.json"
    return [
        "evaluate",
        str(root / model) if not model.startswith("hub:") else model[4:],
        "--task",
        str(task),
        "--out",
        str(out),
        "--max-length",
        "16",
        *extra,
    ]


def prune(root: Path, *args: str, model: str = "teacher") -> list[str]:
    out = root / "out" / ("pruned-" + "-".join(a.strip("-/") for a in args)[:60].replace("/", "_"))
    return [
        "prune",
        str(root / model),
        "--task",
        str(root / "s.csv"),
        "--out",
        str(out),
        "--tokens",
        "300",
        "--max-length",
        "16",
        *args,
    ]


def data(name: str, content: str | bytes | Callable[[Path], Path], *extra: str):
    """A data-file row's builder: the file (or what ``content(root)`` builds), evaluated."""

    def make(root: Path) -> list[str]:
        path = content(root) if callable(content) else _file(root, name, content)
        return evaluate(root, path, "teacher", *extra)

    return make


def _folder(splits: dict[str, pd.DataFrame], name: str):
    def build(root: Path) -> Path:
        folder = root / "in" / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, df in splits.items():
            df.to_csv(folder / f"{split}.csv", index=False)
        return folder

    return build


def _unseen_dev() -> pd.DataFrame:
    dev = _good()
    dev.loc[dev.index[:3], "label"] = 7
    return dev


def _symlink_loop(root: Path) -> Path:
    path = root / "in" / "loop.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_symlink():
        os.symlink(path, path)
    return path


def _directory(root: Path) -> Path:
    path = root / "in" / "adir.csv"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.csv", _good().to_csv(index=False))
    return buf.getvalue()


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    _good().to_parquet(buf)
    return buf.getvalue()


def model(edit: Callable[[Path], None], name: str, source: str = "teacher"):
    """A model-folder row's builder: a copy of ``source`` changed by ``edit``, evaluated."""

    def make(root: Path) -> list[str]:
        folder = root / "models" / name
        if not folder.exists():
            shutil.copytree(root / source, folder)
            edit(folder)
        return evaluate(root, root / "s.csv", f"models/{name}")

    return make


def _drop_weights(folder: Path) -> None:
    for f in folder.glob("*.safetensors"):
        f.unlink()


def _truncate(keep: int | None):
    def edit(folder: Path) -> None:
        weights = folder / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: keep if keep is not None else len(data) // 2])

    return edit


def _config(**changes):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _config_text(text: str):
    def edit(folder: Path) -> None:
        (folder / "config.json").write_text(text)

    return edit


def _bigger_tokenizer(folder: Path) -> None:
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    for i in range(50):
        vocab[f"extra{i}"] = len(vocab)
    (folder / "tokenizer.json").write_text(json.dumps(spec))


def _no_tokenizer(folder: Path) -> None:
    for f in folder.glob("*"):
        if "token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json"):
            f.unlink()


class _Payload:
    """Unpickling this runs a shell command: the file a hostile checkpoint would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickled_code(folder: Path) -> None:
    import torch

    _drop_weights(folder)
    torch.save({"x": _Payload(folder / "PWNED")}, folder / "pytorch_model.bin")


def _record_drops_a_head(folder: Path) -> None:
    record = json.loads((folder / "kprune.json").read_text())
    layer = next(i for i, h in enumerate(record["kept"]["heads"]) if h)
    record["kept"]["heads"][layer] = record["kept"]["heads"][layer][1:]
    (folder / "kprune.json").write_text(json.dumps(record))


def _weights_edited(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    name = next(k for k in tensors if k.endswith("classifier.weight"))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _extra_weights(folder: Path) -> None:
    shutil.copy(folder / "model.safetensors", folder / "zz-extra.safetensors")


def params(name: str, text: str | None):
    """A params-file row's builder: the sample stage run with this params file."""

    def make(root: Path) -> list[str]:
        path = root / "in" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is not None:
            path.write_text(text)
        return [
            "stage:sample",
            "--params",
            str(path),
            "--teacher",
            str(root / "teacher"),
            "--task",
            str(root / "s.csv"),
            "--out",
            str(root / "out" / "sample.safetensors"),
        ]

    return make


def cli(*args: str, model: str = "teacher"):
    return lambda root: prune(root, *(a.replace("{d}", str(root)) for a in args), model=model)


LATIN1 = ("text,label\n" + "".join(f"café {i},{i % 2}\n" for i in range(40))).encode("latin-1")
BAD_JSONL = "\n".join(
    json.dumps({"text": t, "label": int(y)}) for t, y in _good().values[:20]
).encode()[:-9]
SUFFIXES = "('.parquet', '.csv', '.tsv', '.json', '.jsonl')"
FAMILIES = "bert, distilbert, mpnet, roberta, xlm-roberta"
METHODS = ", ".join(
    f"'{m}'"
    for m in [
        "kprune",
        "kprune-no-pred",
        "kprune-no-rep",
        "kprune-no-kpms",
        "kprune-no-tune",
        "kprune-paper-pred",
        "kprune-fisher-pred",
        "kprune-exact-rep",
        "kprune-oneshot",
        "kprune-remeasure-layer",
        "kprune-bf16",
        "kwon",
        "magnitude",
        "random",
    ]
)

ROWS: list[Row] = [
    # -- data files -------------------------------------------------------------------------
    Row("data", "an empty file", data("empty.csv", ""), "data file {d}/in/empty.csv is empty; give it a header and rows"),
    Row("data", "a header and no rows", data("header.csv", "text,label\n"), "data file {d}/in/header.csv has no rows; give it labelled examples"),
    Row("data", "no label column", data("nolabel.csv", _good()[["text"]].to_csv(index=False)), "{d}/in/nolabel.csv: no label column found (columns: text); pass --label-field NAME"),
    Row("data", "a --label-field the file lacks", data("named.csv", _good().to_csv(index=False), "--label-field", "stars"), "{d}/in/named.csv: no 'stars' label column (columns: text, label); pass --label-field NAME"),
    Row("data", "a column named twice", data("dup.csv", "text,text,label\n" + "".join(f"{t},{t},{y}\n" for t, y in _good().values)), "data file {d}/in/dup.csv names column(s) 'text' more than once; give each column its own name"),
    Row("data", "labels of mixed types", data("mixed.csv", _csv_rows((t, y if i % 2 else ("neg", "pos")[y]) for i, (t, y) in enumerate(_good().values))), "task 'mixed' mixes numeric labels (0, 1) with named ones (neg, pos); use one kind of label"),
    Row("data", "one class only", data("oneclass.csv", _csv_rows((t, 1) for t, _ in _good().values)), "task 'oneclass' has a single label value [1]; need two or more"),
    Row("data", "a dev label unseen in train", data("unseen", _folder({"train": _good(), "dev": _unseen_dev()}, "unseen")), "{d}/in/unseen: dev label(s) 7 never occur in train; fix the labels or add train examples of them"),
    Row("data", "no row with a text (all empty or NaN)", data("notext.csv", _csv_rows(("", y) for _, y in _good().values)), "{d}/in/notext.csv: none of its 60 rows has both a non-empty text and a label; check --text-field and --label-field"),
    Row("data", "binary bytes", data("binary.csv", bytes(range(256)) * 8), "data file {d}/in/binary.csv holds binary bytes (NUL at offset 0), not text; export it as UTF-8 CSV/JSON"),
    Row("data", "a gzip with a .csv name", data("gz.csv", gzip.compress(_good().to_csv(index=False).encode(), mtime=0)), "data file {d}/in/gz.csv is gzip-compressed; unpack it (gunzip) first"),
    Row("data", "a zip with a .csv name", data("zip.csv", _zip_bytes()), "data file {d}/in/zip.csv is a zip archive; unpack it first"),
    Row("data", "Parquet with a .csv name", data("pq.csv", _parquet_bytes()), "data file {d}/in/pq.csv is a Parquet file; name it .parquet"),
    Row("data", "CSV with a .parquet name", data("csv.parquet", _good().to_csv(index=False)), "data file {d}/in/csv.parquet is not Parquet (no PAR1 header); check its name"),
    Row("data", "Latin-1 text", data("latin.csv", LATIN1), "data file {d}/in/latin.csv is not UTF-8 text (byte 0xe9 at offset 14); save it as UTF-8"),
    Row("data", "a truncated JSON Lines file", data("cut.jsonl", BAD_JSONL), "data file {d}/in/cut.jsonl: line 20 is not JSON (Unterminated string starting at: line 1 column 35 (char 34)); fix or remove it"),
    Row("data", "an unsupported file type", data("table.xlsx", "not a table"), f"{{d}}/in/table.xlsx: unsupported data file type; use one of {SUFFIXES}"),
    Row("data", "a symlink loop", data("loop.csv", _symlink_loop), "--task path {d}/in/loop.csv is a broken symlink or a symlink loop; fix the link"),
    Row("data", "a directory where a file is expected", data("adir.csv", _directory), f"folder {{d}}/in/adir.csv needs train and dev files (train.csv, dev.csv, ...; one of {SUFFIXES}); test is optional"),
    Row("data", "a folder without dev", data("nodev", _folder({"train": _good()}, "nodev")), f"folder {{d}}/in/nodev needs train and dev files (train.csv, dev.csv, ...; one of {SUFFIXES}); test is optional"),
    Row("data", "a path that does not exist", data("nowhere.csv", lambda root: root / "in" / "nowhere.csv"), "--task path {d}/in/nowhere.csv does not exist; check the path"),
    Row("data", "more classes than the model has", data("four.csv", _csv_rows((t, i % 4) for i, (t, _) in enumerate(_good().values))), "the model has 2 labels but task 'four' has 4; use the checkpoint fine-tuned on this task"),
    Row("data", "a hub data set with no network", data("hub", lambda root: "hf:glue/sst2"), "data set 'hf:glue/sst2' is no local path and the hub cannot be reached (127.0.0.1:9: Connection refused); pass a local folder or file, or check the network (HF_ENDPOINT; HF_DATASETS_OFFLINE=1 uses the cache)"),
    # -- model folders ----------------------------------------------------------------------
    Row("model", "a folder that does not exist", lambda root: evaluate(root, root / "s.csv", "missing"), "model folder {d}/missing does not exist; check the path"),
    Row("model", "a file where the folder is expected", lambda root: evaluate(root, root / "s.csv", "s.csv"), "model path {d}/s.csv is a file; pass the model folder (with config.json)"),
    Row("model", "an empty folder", model(lambda f: [p.unlink() for p in f.iterdir()], "empty"), "model folder {d}/models/empty has no config.json; is it a transformers checkpoint?"),
    Row("model", "no weights", model(_drop_weights, "noweights"), "cannot load weights of '{d}/models/noweights' (Error no file named model.safetensors, or pytorch_model.bin, found in directory {d}/models/noweights.); save the weights with the model"),
    Row("model", "truncated safetensors", model(_truncate(None), "truncated"), "weights file {d}/models/truncated/model.safetensors is truncated or padded: 48692 bytes, its header says 97384; re-save or re-download it"),
    Row("model", "safetensors cut inside its header", model(_truncate(5), "cut-header"), "weights file {d}/models/cut-header/model.safetensors is not safetensors or is cut short (5 bytes, no readable header); re-save or re-download it"),
    Row("model", "a config.json that is not JSON", model(_config_text("{not json"), "badconfig"), "{d}/models/badconfig/config.json is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); re-save the checkpoint"),
    Row("model", "a config of an unsupported family", model(_config(model_type="gpt2", architectures=["GPT2ForSequenceClassification"]), "gpt2"), f"unsupported architecture 'gpt2'; supported families: {FAMILIES} (encoder models only)"),
    Row("model", "a model type transformers does not know", model(_config(model_type="nosuchmodel"), "unknown-type"), f"unsupported architecture 'nosuchmodel'; supported families: {FAMILIES} (encoder models only)"),
    Row("model", "a base model: no classifier head", lambda root: evaluate(root, root / "s.csv", "headless"), "'{d}/headless' has no trained task head (missing classifier.bias); fine-tune it first (`kprune finetune`) or pass --allow-untrained-head"),
    Row("model", "no tokenizer files", model(_no_tokenizer, "no-tokenizer"), "model folder {d}/models/no-tokenizer has no tokenizer files (tokenizer.json, vocab.txt, vocab.json, spiece.model, sentencepiece.bpe.model); save the tokenizer with the model (tokenizer.save_pretrained)"),
    Row("model", "a tokenizer larger than the embeddings", model(_bigger_tokenizer, "big-tokenizer"), "the tokenizer of {d}/models/big-tokenizer has 76 tokens but the model embeds 26; save the tokenizer the model was trained with"),
    Row("model", "a .bin checkpoint whose pickle runs code", model(_pickled_code, "pickled-code"), "the weights of '{d}/models/pickled-code' hold Python objects besides tensors, which kprune never unpickles; convert them to safetensors where you trust the code"),
    Row("model", "a pruned folder whose kprune.json lost a head", model(_record_drops_a_head, "edited-record", "pruned"), "{d}/models/edited-record: the weights do not fit the kept units of kprune.json (size mismatch for bert.encoder.layer.0.attention.self.query.weight: copying a param with shape torch.Size([24, 32]) from checkpoint, the shape in current model is torch.Size([16, 32])); one of them was edited: prune again"),
    Row("model", "a pruned folder whose weights were edited", model(_weights_edited, "edited-weights", "pruned"), "{d}/models/edited-weights/model.safetensors fails its content hash (corrupt or truncated); prune again"),
    Row("model", "an extra unhashed weights file", model(_extra_weights, "extra-weights", "pruned"), "{d}/models/extra-weights/zz-extra.safetensors is not one of the weight files kprune.json hashes; remove it (kprune loads only the hashed weights) or prune again"),
    Row("model", "a hub name with no network", lambda root: evaluate(root, root / "s.csv", "hub:org/no-such-model"), "model 'org/no-such-model' is no local path and the hub cannot be reached (127.0.0.1:9: Connection refused); pass a local folder or file, or check the network (HF_ENDPOINT; HF_HUB_OFFLINE=1 uses the cache)"),
    # -- params.yaml ------------------------------------------------------------------------
    Row("params", "a missing params file", params("missing", None), "params file {d}/in/missing.yaml does not exist; pass --params PATH to a params.yaml"),
    Row("params", "an empty file", params("empty", ""), "params file {d}/in/empty.yaml is empty; it needs the sections of the project's params.yaml"),
    Row("params", "YAML syntax error", params("syntax", "sample:\n  tokens: [1, 2\n"), "params file {d}/in/syntax.yaml is not valid YAML: while parsing a flow sequence"),
    Row("params", "not a mapping", params("list", "- a\n- b\n"), "params file {d}/in/list.yaml must hold a mapping of sections, got <class 'list'>"),
    Row("params", "an unknown key", params("unknown-key", "sample:\n  tokenz: 1000\n"), "unknown key 'sample.tokenz' in params; known keys: batch_size, max_length, seed, tokens"),
    Row("params", "a wrong type", params("wrong-type", "sample:\n  tokens: many\n"), "'sample.tokens' must be int, got 'many'; fix params.yaml"),
    Row("params", "an out-of-range value", params("out-of-range", "sample:\n  tokens: 0\n"), "sample.tokens must be >= 1, got 0; set it in params.yaml (sample: tokens) or with --tokens"),
    Row("params", "a section that is not a mapping", params("scalar-section", "sample: 5\n"), "'sample' in params must be a mapping of keys, got 5"),
    # -- the command line -------------------------------------------------------------------
    Row("cli", "no reduction target of a latency budget", cli("--budget", "latency"), "search.budget latency needs exactly one target: --speedup or --latency-ms; set it in params.yaml (search: budget) or with --budget"),
    Row("cli", "two latency targets", cli("--budget", "latency", "--speedup", "2", "--latency-ms", "3"), "search.budget latency needs exactly one target: --speedup or --latency-ms (both were given); set it in params.yaml (search: budget) or with --budget"),
    Row("cli", "an unknown runtime", cli("--runtime", "tensorrt"), "kprune prune: argument --runtime: invalid choice: 'tensorrt' (choose from 'torch', 'ort', 'ort-int8'); see kprune prune --help"),
    Row("cli", "an unknown method", cli("--reduction", "0.5", "--method", "obs"), "kprune prune: argument --method: invalid choice: 'obs' (choose from " + METHODS + "); see kprune prune --help"),
    Row("cli", "a metric of another task kind", cli("--metric", "spearman"), "--metric spearman does not fit task 's' (classification); use one of accuracy, f1, macro-f1, mcc"),
    Row("cli", "a reduction of 1", cli("--reduction", "1.0"), "search.reduction must be in [0, 1) (fraction of FLOPs removed), got 1.0; set it in params.yaml (search: reduction) or with --reduction"),
    Row("cli", "a negative reduction", cli("--reduction", "-0.2"), "search.reduction must be in [0, 1) (fraction of FLOPs removed), got -0.2; set it in params.yaml (search: reduction) or with --reduction"),
    Row("cli", "a negative mu", cli("--reduction", "0.5", "--mu", "-2"), "search.mu must be >= 0, got -2.0; set it in params.yaml (search: mu) or with --mu"),
    Row("cli", "a negative lambda", cli("--reduction", "0.5", "--lam", "-1"), "search.lam must be >= 0, got -1.0; set it in params.yaml (search: lam) or with --lam"),
    Row("cli", "gamma of 0", cli("--reduction", "0.5", "--gamma", "0"), "measure.gamma must be > 0, got 0.0; set it in params.yaml (measure: gamma) or with --gamma"),
    Row("cli", "a latency target below the empty model", cli("--budget", "latency", "--latency-ms", "0.5", "--latency-table", "{d}/table.json"), "target latency 0.5 ms is below what the model costs with every head and neuron pruned (2 ms on torch-b32-l128-t2; dense 9.2 ms, at most 4.6x faster); ask for a smaller speed-up or a larger --latency-ms"),
    Row("cli", "a latency table of another shape", cli("--budget", "latency", "--speedup", "2", "--latency-table", "{d}/table-3-layers.json"), "the latency table is for 3 layers of 4 heads and 64 neurons, the model has 2 of 4 and 64; measure one for this model (kprune latency MODEL --out FILE)"),
    Row("cli", "a latency table that does not exist", cli("--budget", "latency", "--speedup", "2", "--latency-table", "{d}/nowhere.json"), "latency table {d}/nowhere.json does not exist; check the path"),
]  # fmt: skip


def markdown() -> str:
    """The table as docs/reliability.md shows it (``{d}`` kept as the test folder)."""
    lines = ["| input | answer (`kprune: error: ...`, exit 2) |", "|---|---|"]
    for row in ROWS:
        message = row.message.replace("|", "\\|")
        lines.append(f"| {row.group}: {row.what} | {message} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
