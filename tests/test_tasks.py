import pandas as pd
import pytest

from kprune.data.splits import clean, stratified_split
from kprune.data.tasks import Fields, load_task
from kprune.errors import KPruneError


def test_unknown_task_name():
    with pytest.raises(KPruneError, match="unknown task 'imdb'; use one of rt, sms-spam"):
        load_task("imdb")


def test_missing_path(tmp_path):
    with pytest.raises(KPruneError, match="does not exist"):
        load_task(str(tmp_path / "nope.csv"))


def test_registered_task_not_prepared(tmp_path):
    with pytest.raises(KPruneError, match="task 'rt' is not prepared"):
        load_task("rt", data_root=tmp_path)


def test_missing_label_column(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "stars": [1, 2, 3]}).to_csv(path, index=False)
    with pytest.raises(KPruneError, match="no label column found .*pass --label-field NAME"):
        load_task(str(path))
    with pytest.raises(KPruneError, match="no 'target2' label column"):
        load_task(str(path), fields=Fields(label="target2"))


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(KPruneError, match="is empty"):
        load_task(str(empty))
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(KPruneError, match="has no rows"):
        load_task(str(header_only))


def test_one_example(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("text,label\nhello,1\n")
    with pytest.raises(KPruneError, match="single label value"):
        load_task(str(path))


def test_local_file_is_split_and_labels_encoded(sentiment_csv):
    task = load_task(str(sentiment_csv))
    assert task.spec.kind == "classification" and task.spec.num_labels == 2
    sizes = {k: len(v) for k, v in task.splits.items()}
    assert sizes["train"] > sizes["dev"] > 0 and sizes["test"] > 0
    assert set(task.split("train")["label"].unique()) == {0, 1}


def test_folder_with_string_labels_and_custom_fields(tmp_path):
    for split in ("train", "dev"):
        pd.DataFrame(
            {
                "review": ["good one", "bad one", "fine", "meh"],
                "verdict": ["pos", "neg", "pos", "neg"],
            }
        ).to_json(tmp_path / f"{split}.jsonl", orient="records", lines=True)
    task = load_task(str(tmp_path), fields=Fields(text="review", label="verdict"))
    assert task.spec.label_names == ("neg", "pos")
    assert task.split("train")["label"].tolist() == [1, 0, 1, 0]
    assert task.split("test") is task.split("dev")


def test_regression_is_inferred(tmp_path):
    path = tmp_path / "r.parquet"
    pd.DataFrame(
        {"sentence": [f"s{i}" for i in range(50)], "score": [i / 7 for i in range(50)]}
    ).to_parquet(path)
    task = load_task(str(path))
    assert task.spec.kind == "regression" and task.spec.metric == "spearman"


def test_clean_drops_empty_and_duplicates():
    df = pd.DataFrame({"text": ["a", " a ", "", None, "b"], "label": [1, 0, 1, 1, 0]})
    out = clean(df)
    assert out["text"].tolist() == ["a", "b"]
    assert out["label"].tolist() == [1, 0]


def test_stratified_split_is_seeded_and_keeps_class_shares():
    df = pd.DataFrame(
        {"text": [f"t{i}" for i in range(1000)], "label": [int(i % 10 == 0) for i in range(1000)]}
    )
    a = stratified_split(df, "classification", seed=3)
    b = stratified_split(df, "classification", seed=3)
    c = stratified_split(df, "classification", seed=4)
    assert a["train"]["text"].tolist() == b["train"]["text"].tolist()
    assert a["train"]["text"].tolist() != c["train"]["text"].tolist()
    for part in a.values():
        assert abs(part["label"].mean() - 0.1) < 0.01
    assert sum(len(p) for p in a.values()) == 1000
    assert set(a["train"]["text"]).isdisjoint(a["test"]["text"])


def test_regression_split_is_stratified_on_bins():
    df = pd.DataFrame(
        {"text": [f"t{i}" for i in range(1000)], "label": [i / 10 for i in range(1000)]}
    )
    parts = stratified_split(df, "regression", seed=0)
    for part in parts.values():
        assert abs(part["label"].median() - 50) < 8


def _snli_raw(folder, n_train=300, n_test=60):
    """SNLI-shaped raw files: premise, hypothesis, gold label ('-' where annotators
    disagreed), the training subset and the official test set."""
    import json

    labels = ("entailment", "neutral", "contradiction", "-")
    folder.mkdir(parents=True)
    for name, n in (("snli_train.jsonl", n_train), ("snli_test.jsonl", n_test)):
        rows = [
            {"sentence1": f"{name[5:9]} premise {i}", "sentence2": f"hypothesis {i % 7}",
             "gold_label": labels[i % 4], "pairID": str(i)}
            for i in range(n)
        ]  # fmt: skip
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_snli_keeps_the_official_test_set_and_carves_a_stratified_dev_from_train(tmp_path):
    from kprune.data.prepare import prepare_all

    _snli_raw(tmp_path / "extra" / "snli")
    sizes = prepare_all(tmp_path / "raw", tmp_path / "tasks", ["snli"], 0, tmp_path / "extra")
    task = load_task("snli", tmp_path / "tasks")
    assert task.spec.pair and task.spec.num_labels == 3 and task.spec.metric == "accuracy"
    test, train, dev = task.split("test"), task.split("train"), task.split("dev")
    assert len(test) == 45 and test["text"].str.startswith("test").all()  # '-' pairs dropped
    assert len(train) + len(dev) == 225 and not train["text"].str.startswith("test").any()
    assert abs(len(dev) - 22.5) <= 1  # a tenth, every class in it
    assert sorted(dev["label"].unique()) == [0, 1, 2]
    assert set(train["text_pair"]) <= {f"hypothesis {i}" for i in range(7)}
    assert sizes == {"snli": {"train": len(train), "dev": len(dev), "test": 45}}
    again = prepare_all(tmp_path / "raw", tmp_path / "t2", ["snli"], 0, tmp_path / "extra")
    assert again == sizes  # seeded


def test_snli_before_its_fetch_says_how_to_fetch(tmp_path):
    from kprune.data.prepare import prepare_all

    with pytest.raises(KPruneError, match="run `kprune fetch --task snli`"):
        prepare_all(tmp_path / "raw", tmp_path / "tasks", ["snli"], 0, tmp_path / "extra")
