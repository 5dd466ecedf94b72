"""Tasks given by a dataset id (--dataset): local folders in the hub layout (CSV, Parquet, configs and split
names), the hub path (offline: an id redirected to a folder), bad data through the CLI, and a compress run whose
export finds the dev split again."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ladasearch.cli.commands import main
from ladasearch.config import DataConfig
from ladasearch.data import DatasetTask, FileTask, dataset_task_name, load_task
from ladasearch.errors import LadaError

WORDS = ("a fine film", "dull and slow", "truly moving", "a waste of time", "warm and funny", "badly acted")


def _reviews(n, offset=0):
    """Rows whose label follows the text: even rows positive, odd rows negative."""
    return [{"text": f"{WORDS[(i + offset) % len(WORDS)]} number {i + offset}",
             "label": "positive" if (i + offset) % 2 == 0 else "negative"} for i in range(n)]


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _folder(root, layout, train, dev, test=None):
    """A dataset folder as the hub lays one out: ``csv`` (train.csv, validation.csv, test.csv at the top) or
    ``parquet`` (data/<split>-00000-of-00001.parquet)."""
    for split, rows in (("train", train), ("validation", dev), ("test", test)):
        if rows is not None:
            name = f"{split}.csv" if layout == "csv" else f"data/{split}-00000-of-00001.parquet"
            _write(root / name, rows)
    return root


def _card(root, text):
    (root / "README.md").write_text("---\n" + text.strip() + "\n---\n")
    return root


@pytest.mark.parametrize("layout", ["csv", "parquet"])
def test_folder_with_string_labels(tmp_path, layout):
    # the test split has no labels at all: a split the task does not name is never read
    root = _folder(tmp_path / "reviews", layout, _reviews(40), _reviews(12, offset=100),
                   [{"text": "unlabelled"}])
    data = load_task("reviews", dataset=DatasetTask("reviews", str(root)), val_size=0.25)
    assert data.task.label_names == ("negative", "positive") and data.task.dev_splits == ("validation",)
    assert (data.task.main_metric, data.task.is_regression, data.train.text_b) == ("accuracy", False, None)
    assert (len(data.train), len(data.val), len(data.dev)) == (30, 10, 12)
    rows = dict(zip(data.train.text_a + data.val.text_a, data.train.labels + data.val.labels))
    assert rows == {r["text"]: int(r["label"] == "positive") for r in _reviews(40)}
    assert data.dev.labels == tuple(int(r["label"] == "positive") for r in _reviews(12, offset=100))
    assert data.source == f"dataset {root}, train split train, dev split validation"
    assert data.val_source == "10 rows carved from train (stratified, seed 0)"


def test_config_and_split_names_of_a_pair_task(tmp_path):
    root = tmp_path / "nli"
    names = ("entailment", "neutral", "contradiction")

    def pairs(n, offset):
        return [{"premise": f"premise {i + offset}", "hypothesis": f"hypothesis {i + offset}",
                 "gold": names[(i + offset) % 3]} for i in range(n)]

    _write(root / "pairs" / "fit.jsonl", pairs(30, 0))
    _write(root / "pairs" / "check.jsonl", pairs(9, 100))
    _write(root / "pairs" / "tune.jsonl", pairs(6, 200))
    _write(root / "other" / "train.csv", _reviews(4))
    _card(root, """
configs:
- config_name: other
  data_files:
  - split: train
    path: other/train.csv
- config_name: pairs
  data_files:
  - split: fit
    path: pairs/fit.jsonl
  - split: check
    path: pairs/check.jsonl
  - split: tune
    path: pairs/tune.jsonl
""")
    cfg = DataConfig("nli", dataset=str(root), dataset_config="pairs", train_split="fit", dev_split="check",
                     val_split="tune", text_column="premise", text_pair_column="hypothesis", label_column="gold",
                     metric="matthews")
    data = load_task(cfg.task, dev_split=cfg.dev_split, dataset=cfg.dataset_task(), val_size=0.25)
    assert data.task.label_names == ("contradiction", "entailment", "neutral")
    assert (data.task.main_metric, data.task.metrics, data.task.dev_splits) == ("mcc", ("mcc", "accuracy"),
                                                                                ("check",))
    # the validation split is read as given, and train is used whole (no rows carved)
    assert (len(data.train), len(data.val), len(data.dev)) == (30, 6, 9)
    assert data.val_source == f"split tune of dataset {root} (pairs)"
    assert data.dev.text_b[0] == "hypothesis 100" and data.val.text_a[0] == "premise 200"
    sorted_ids = {"contradiction": 0, "entailment": 1, "neutral": 2}
    assert data.dev.labels == tuple(sorted_ids[r["gold"]] for r in pairs(9, 100))
    assert dataset_task_name(None, str(root), "pairs") == "nli-pairs"
    assert dataset_task_name(None, "stanfordnlp/sst2") == "sst2" and dataset_task_name("My Task", "x") == "My-Task"


def test_regression_and_class_label_names(tmp_path):
    datasets = pytest.importorskip("datasets")

    scores = [{"text": f"pair {i}", "score": i / 4} for i in range(12)]
    root = _folder(tmp_path / "sim", "parquet", scores[:8], scores[8:])
    reg = load_task("sim", dataset=DatasetTask("sim", str(root), label_column="score"), val_size=2)
    assert reg.task.is_regression and (reg.task.main_metric, reg.task.num_labels) == ("pearson", 1)
    assert reg.dev.labels == (2.0, 2.25, 2.5, 2.75)

    # a class-label column (declared in the Parquet schema, as the hub writes it) is read by its class names,
    # then numbered in sorted order as text labels are: pos, neg -> neg 0, pos 1
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["pos", "neg"])})
    labelled = tmp_path / "labelled"
    for split, ids in (("train", [0, 1, 0, 1, 1, 0]), ("validation", [1, 0])):
        table = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(len(ids))], "label": ids},
                                           features=features)
        (labelled / "data").mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(labelled / "data" / f"{split}-00000-of-00001.parquet"))
    data = load_task("l", dataset=DatasetTask("l", str(labelled)))
    assert data.task.label_names == ("neg", "pos")
    assert data.train.labels == (1, 0, 1, 0, 0, 1) and data.dev.labels == (0, 1)
    # the same split as a file: the same code, the same classes
    files = FileTask("f", str(labelled / "data" / "train-00000-of-00001.parquet"),
                     str(labelled / "data" / "validation-00000-of-00001.parquet"))
    as_files = load_task("f", files=files)
    assert (as_files.task.label_names, as_files.train.labels) == (data.task.label_names, data.train.labels)
    # -1, a class-label column's "no label" (the hub's test splits), is an empty label
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, -1]}, features=features).to_parquet(
        str(labelled / "data" / "test-00000-of-00001.parquet"))
    with pytest.raises(LadaError, match=r"dev split 'test' of dataset '.*labelled', row 2: label column 'label' is "
                                        r"empty"):
        load_task("l", dataset=DatasetTask("l", str(labelled), dev_split="test"))


def test_fingerprints_follow_the_files_of_the_splits_read(tmp_path):
    root = _folder(tmp_path / "r", "csv", _reviews(20), _reviews(6, offset=50))
    spec = DatasetTask("r", str(root))
    first = load_task("r", dataset=spec)
    assert load_task("r", dataset=spec).fingerprint == first.fingerprint
    _write(root / "validation.csv", _reviews(6, offset=60))  # dev changed: the teacher's key did not
    second = load_task("r", dataset=spec)
    assert second.train_fingerprint == first.train_fingerprint and second.fingerprint != first.fingerprint
    _write(root / "test.csv", _reviews(3))  # a split not read changes nothing
    assert load_task("r", dataset=spec).fingerprint == second.fingerprint
    moved = tmp_path / "elsewhere" / "r"
    shutil.copytree(root, moved)
    assert load_task("r", dataset=DatasetTask("r", str(moved))).fingerprint == second.fingerprint
    rows = _reviews(20)
    rows[3]["text"] = rows[3]["text"].upper()
    _write(root / "train.csv", rows)
    assert load_task("r", dataset=spec).train_fingerprint != first.train_fingerprint
    assert load_task("r", dataset=DatasetTask("r", str(moved), metric="mcc")).train_fingerprint != \
        load_task("r", dataset=DatasetTask("r", str(moved))).train_fingerprint


def test_a_hub_id_is_keyed_by_its_fingerprint(tmp_path, monkeypatch):
    """The hub path without the hub: the id is read from a local copy, so what is checked is how a hub id is
    named, cached and keyed (the id, config, split and the rows' fingerprint; no file hash)."""
    datasets = pytest.importorskip("datasets")
    from ladasearch.data import dataset as dataset_module

    root = _folder(tmp_path / "copy", "parquet", _reviews(20), _reviews(6, offset=50))
    seen = []

    def redirected(real):
        def call(path, *args, cache_dir=None, **kwargs):
            seen.append((path, cache_dir))
            return real(str(root) if path == "someone/reviews" else path, *args,
                        cache_dir=str(tmp_path / "hub-cache"), **kwargs)
        return call

    monkeypatch.setattr(dataset_module, "dataset_folder", lambda dataset: None)
    monkeypatch.setattr(datasets, "load_dataset_builder", redirected(datasets.load_dataset_builder))
    monkeypatch.setattr(datasets, "load_dataset", redirected(datasets.load_dataset))
    spec = DatasetTask("reviews", "someone/reviews")
    data = load_task("reviews", dataset=spec)
    assert data.source == "dataset hub:someone/reviews, train split train, dev split validation"
    assert data.task.label_names == ("negative", "positive") and len(data.dev) == 6
    # hub downloads go to the datasets cache (cache_dir None), not a throw-away folder
    assert seen and all(path == "someone/reviews" and cache is None for path, cache in seen)
    assert load_task("reviews", dataset=spec).fingerprint == data.fingerprint
    assert load_task("reviews", dataset=DatasetTask("reviews", "someone/reviews", dev_split="train",
                                                    train_split="validation")).fingerprint != data.fingerprint


def test_data_config_round_trip_and_mlflow_params(tmp_path):
    from ladasearch.search.driver import file_params

    root = _folder(tmp_path / "r", "csv", _reviews(20), _reviews(6, offset=50))
    cfg = DataConfig("r", dataset=str(root), label_column="label")
    assert cfg.train_split == "train" and cfg.dataset_task().dev_split == "validation"
    assert DataConfig(**json.loads(json.dumps(asdict(cfg)))) == cfg  # a search spec gives the task back
    task = load_task(cfg.task, dataset=cfg.dataset_task()).task
    assert file_params(cfg, task) == {"data.dataset": str(root), "data.train_split": "train",
                                      "data.dev_split": "validation", "data.label_column": "label",
                                      "data.labels": "negative,positive", "data.metric": "accuracy",
                                      "data.regression": False}


def test_the_card_names_a_hub_dataset():
    from ladasearch.runtime.card import _dataset, _trained_on

    hub = SimpleNamespace(task="imdb", data={"dataset": "stanfordnlp/imdb", "dataset_config": "plain_text",
                                             "train_split": "train", "dev_split": "test", "dataset_folder": None})
    assert _dataset(hub) == "{name: imdb, type: stanfordnlp/imdb, config: plain_text, split: test}"
    assert _trained_on(hub) == "the task imdb from the Hugging Face dataset stanfordnlp/imdb (config plain_text), " \
                               "split train"
    folder = SimpleNamespace(task="r", data={**hub.data, "dataset": "r", "dataset_config": None,
                                             "dataset_folder": "/d/r"})
    assert _dataset(folder) == "{name: r, type: custom}"
    assert _trained_on(folder) == "the task r from the dataset folder /d/r, split train"


# --- bad data and bad options: one `error:` line and exit code 2 through the CLI ------------------------------

def _bad_cases(tmp_path):
    good = _folder(tmp_path / "good", "csv", _reviews(20), _reviews(6, offset=50), _reviews(4, offset=80))
    cases = {}

    def case(name, folder, extra=(), fragments=()):
        cases[name] = (str(folder), list(extra), fragments)

    case("missing column", good, ["--text-column", "sentence"],
         (f"train split 'train' of dataset '{good}' has no column 'sentence' (--text-column); columns found: "
          "'text', 'label'",))
    header = _folder(tmp_path / "header", "csv", _reviews(6), _reviews(3))
    (header / "train.csv").write_text("text,label\n")
    case("empty split", header, (), (f"train split 'train' of dataset '{header}' has no data rows",))
    one = _folder(tmp_path / "one", "parquet", [{"text": f"t{i}", "label": "pos"} for i in range(5)], _reviews(3))
    case("single class", one, (), ("has a single class ('pos') in column 'label'; a classifier needs at least 2",))
    unseen = _folder(tmp_path / "unseen", "csv", _reviews(10), [{"text": "a", "label": "negative"},
                                                                {"text": "b", "label": "great"}])
    case("dev label not in train", unseen, (),
         (f"dev split 'validation' of dataset '{unseen}' has label(s) not in the train split: 'great'; train "
          "classes: 'negative', 'positive'",))
    mixed = _folder(tmp_path / "mixed", "csv", [{"text": f"t{i}", "label": ["pos", "1"][i % 2]} for i in range(6)],
                    _reviews(3))
    case("mixed labels", mixed, (), ("label column 'label' mixes numbers", "and text", "'pos'"))
    case("missing split", good, ["--dev-split", "dev"],
         (f"dataset '{good}' has no split 'dev' (--dev-split); splits found: 'train', 'validation', 'test'",))
    case("missing val split", good, ["--val-split", "tune"], ("has no split 'tune' (--val-split)",))
    configs = _card(_folder(tmp_path / "configs", "csv", _reviews(6), _reviews(3)), """
configs:
- config_name: main
  data_files:
  - split: train
    path: train.csv
  - split: validation
    path: validation.csv
""")
    case("unknown config", configs, ["--dataset-config", "nope"],
         ("cannot read dataset", "(config 'nope')", "'nope' not found", "'main'"))
    case("not a folder nor an id", "no such/place!", (),
         ("dataset 'no such/place!' is no folder here and no hub id (NAME or OWNER/NAME)",))
    case("a file", good / "train.csv", (), ("train.csv' is a file; give a dataset folder or a hub id",))
    empty = tmp_path / "nothing"
    empty.mkdir()
    case("a folder without data", empty, (), ("cannot read dataset", "EmptyDatasetError"))
    case("train as dev", good, ["--dev-split", "train"], ("the dev split is the train split 'train'",))
    case("val as dev", good, ["--val-split", "validation"], ("the validation split is the dev split",))
    case("dev file", good, ["--dev-file", "x.csv"],
         ("data.dev_file (--dev-file) is not for a task given by a dataset",))
    case("val file", good, ["--val-file", "x.csv"],
         ("data.val_file (--val-file) is not for a task given by a dataset: give --val-split",))
    case("with train file", good, ["--train-file", "x.csv"], ("give --train-file or --dataset, not both",))
    case("data dir", good, ["--data-dir", str(tmp_path)], ("give --dataset or --data-dir, not both",))
    case("val split and size", good, ["--val-split", "test", "--val-size", "5"],
         ("give --val-split or --val-size, not both",))
    return cases


BAD = ["missing column", "empty split", "single class", "dev label not in train", "mixed labels", "missing split",
       "missing val split", "unknown config", "not a folder nor an id", "a file", "a folder without data",
       "train as dev", "val as dev", "dev file", "val file", "with train file", "data dir", "val split and size"]


def _one_error_line(result, fragments):
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _compress(*args):
    return ["compress", *args, "--target", "5x", "--embedding-ratio", "0.2", "--svd-ratio", "0.8"]


@pytest.mark.parametrize("name", BAD)
def test_bad_data_cli_one_line(tmp_path, cache_dir, tiny_cli_model, name):
    folder, extra, fragments = _bad_cases(tmp_path)[name]
    result = CliRunner().invoke(main, _compress("--dataset", folder, *extra, "--model", str(tiny_cli_model)))
    _one_error_line(result, fragments)


@pytest.mark.parametrize("args, message", [
    (["--task", "sst2", "--val-split", "tune"], "data.val_split (--val-split) is for a task given by a dataset"),
    (["--task", "sst2", "--dataset-config", "c"], "data.dataset_config (--dataset-config) is for a task given by"),
    (["--task", "sst2", "--label-column", "y"], "data.label_column (--label-column) is for a task given by files "
                                                "or a dataset"),
    ([], "Missing option '--task' (a GLUE task) or '--train-file' / '--dataset'"),
])
def test_dataset_options_without_a_dataset(args, message):
    _one_error_line(CliRunner().invoke(main, _compress(*args)), (message,))


def test_hub_unreachable_or_unknown_is_one_line(tmp_path, monkeypatch, cache_dir, tiny_cli_model, hub_offline):
    datasets = hub_offline
    monkeypatch.chdir(tmp_path)  # "nobody/nothing" is no folder here
    result = CliRunner().invoke(main, _compress("--dataset", "nobody/nothing", "--model", str(tiny_cli_model)))
    _one_error_line(result, ("cannot load dataset 'nobody/nothing' from the Hugging Face hub (ConnectionError: ",
                             "'nobody/nothing' is no folder here"))

    def unknown(*args, **kwargs):
        raise datasets.exceptions.DatasetNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub or "
                                                       "cannot be accessed.")

    monkeypatch.setattr(datasets, "load_dataset_builder", unknown)
    result = CliRunner().invoke(main, _compress("--dataset", "nobody/nothing", "--model", str(tiny_cli_model)))
    _one_error_line(result, ("from the Hugging Face hub (DatasetNotFoundError: Dataset 'nobody/nothing' doesn't "
                             "exist on the Hub",))


# --- end to end: compress from a dataset folder, then export it with the int8 gate reading its dev split --------

def test_compress_dataset_folder_then_export_finds_the_dev_split(tiny_cli_model, tmp_path, cache_dir, monkeypatch):
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    from ladasearch.runtime.export import DevData
    from ladasearch.runtime.scoring import load_dev

    work = tmp_path / "work"
    _folder(work / "reviews", "parquet", _reviews(40), _reviews(10, offset=100), [{"text": "unlabelled"}])
    monkeypatch.chdir(work)  # the dataset given as a relative folder; the export runs from elsewhere
    out, runner = tmp_path / "out", CliRunner()
    result = runner.invoke(main, ["compress", "--dataset", "reviews", "--model", str(tiny_cli_model), "--val-size",
                                  "8", "--target", "5x", "--embedding-ratio", "0.19", "--svd-ratio", "0.8",
                                  "--teacher-steps", "2", "--rounds", "1", "--steps-per-round", "1", "--final-steps",
                                  "1", "--batch-size", "8", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "reviews" and summary["main_metric"] == "accuracy"
    data = summary["data"]
    assert (data["dataset"], data["dataset_folder"], data["dataset_config"], data["train_split"], data["dev_split"],
            data["val_split"]) == ("reviews", str(work / "reviews"), None, "train", "validation", None)
    assert (data["labels"], data["metric"], data["regression"], data["data_dir"]) == (
        ["negative", "positive"], "accuracy", False, None)
    assert (data["train_rows"], data["val_rows"], data["dev_rows"]) == (32, 8, 10)
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}

    # the export reads the dev split alone: the train split may be gone
    (work / "reviews" / "data" / "train-00000-of-00001.parquet").unlink()
    monkeypatch.chdir(tmp_path)
    int8 = tmp_path / "int8"
    result = runner.invoke(main, ["export-model", str(out), "--format", "onnx-int8", "--out", str(int8),
                                  "--max-drop", "100", "--max-length", "32", "--no-measure"])
    assert result.exit_code == 0, (result.output, result.exception)
    record = json.loads((int8 / "ladasearch_export.json").read_text())
    assert record["labels"] == ["negative", "positive"] and record["int8_gate"]["rows"] == 10
    card = (int8 / "README.md").read_text()
    assert f"the task reviews from the dataset folder {work / 'reviews'}, split train" in card
    assert "{name: reviews, type: custom}" in card

    loaded = load_dev(DevData(max_dev=None).for_summary(SimpleNamespace(task="reviews", data=data)),
                      AutoTokenizer.from_pretrained(tiny_cli_model))
    assert loaded.rows == 10 and loaded.source == f"dataset {work / 'reviews'}, dev split validation"
    moved = _folder(tmp_path / "moved", "csv", _reviews(4), [{"review": "fine", "y": "positive"}])
    cfg = DevData(max_dev=None, dataset=str(moved), text_column="review", label_column="y").for_summary(
        SimpleNamespace(task="reviews", data=data))
    assert load_dev(cfg, AutoTokenizer.from_pretrained(tiny_cli_model)).rows == 1
    with pytest.raises(LadaError, match="--dev-file is for a model trained on a task given by files; reviews is "
                                        "given by a dataset"):
        DevData(dev_file="x.csv").for_summary(SimpleNamespace(task="reviews", data=data))
    with pytest.raises(LadaError, match="--dataset is for a model trained on a task given by a dataset; sst2 is a "
                                        "GLUE task"):
        DevData(dataset="x").for_summary(SimpleNamespace(task="sst2", data={}))
