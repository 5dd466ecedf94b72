"""Tasks given by files (--train-file/--dev-file): formats, labels, pairs, regression, bad data, and a compress run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import asdict

import pytest
from click.testing import CliRunner

from ladasearch.cli.commands import main
from ladasearch.config import DataConfig
from ladasearch.data import FileTask, load_task, read_tsv
from ladasearch.data.tasks import get_task
from ladasearch.errors import LadaError


def _rows(glue_dir, task, name, n, offset=0):
    split = read_tsv(glue_dir / get_task(task).glue_dir / name, get_task(task))
    names = get_task(task).label_names
    return [{"text": split.text_a[i], **({"pair": split.text_b[i]} if split.text_b is not None else {}),
             "label": names[split.labels[i]]} for i in range(offset, offset + n)]


def _write(path, rows):
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",",
                                    **({"quoting": csv.QUOTE_NONE, "escapechar": None, "quotechar": None}
                                       if suffix == ".tsv" else {}))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _sst2_files(glue_dir, tmp_path, suffix, n_train=40, n_dev=12):
    train = _write(tmp_path / f"reviews.train{suffix}", _rows(glue_dir, "sst2", "train.tsv", n_train))
    dev = _write(tmp_path / f"reviews.dev{suffix}", _rows(glue_dir, "sst2", "dev.tsv", n_dev))
    return train, dev


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_string_labels_every_format(glue_dir, tmp_path, suffix):
    train, dev = _sst2_files(glue_dir, tmp_path, suffix)
    data = load_task("reviews", files=FileTask("reviews", str(train), str(dev)), val_size=0.25)
    glue = read_tsv(glue_dir / "SST-2" / "train.tsv", get_task("sst2"))
    assert data.task.name == "reviews" and data.task.label_names == ("negative", "positive")
    assert (data.task.main_metric, data.task.metrics, data.task.is_regression) == ("accuracy", ("accuracy",), False)
    assert len(data.train) == 30 and len(data.val) == 10 and len(data.dev) == 12
    # sorted names: negative -> 0, positive -> 1, the GLUE ids
    rows = dict(zip(data.train.text_a + data.val.text_a, data.train.labels + data.val.labels))
    assert rows == dict(zip(glue.text_a[:40], glue.labels[:40]))
    assert data.train.text_b is None


def test_pair_task_three_classes(glue_dir, tmp_path):
    train = _write(tmp_path / "nli.csv", _rows(glue_dir, "mnli", "train.sample.tsv", 60))
    dev = _write(tmp_path / "nli_dev.csv", _rows(glue_dir, "mnli", "dev_matched.tsv", 15))
    cfg = DataConfig("nli", train_file=str(train), dev_file=str(dev), text_pair_column="pair", metric="matthews")
    data = load_task(cfg.task, files=cfg.files(), val_size=10)
    assert data.task.label_names == ("contradiction", "entailment", "neutral")
    assert (data.task.main_metric, data.task.metrics) == ("mcc", ("mcc", "accuracy"))
    assert len(data.train) == 50 and len(data.val) == 10 and len(data.dev) == 15
    mnli = read_tsv(glue_dir / "MNLI" / "dev_matched.tsv", get_task("mnli"))
    assert data.dev.text_b == mnli.text_b[:15]
    glue_names = get_task("mnli").label_names
    assert [data.task.label_names[i] for i in data.dev.labels] == [glue_names[i] for i in mnli.labels[:15]]


def test_integer_labels_and_regression(tmp_path):
    rows = [{"text": f"row {i}", "label": [3, 7, 5][i % 3]} for i in range(12)]
    ints = load_task("x", files=FileTask("x", str(_write(tmp_path / "i.jsonl", rows)),
                                         str(_write(tmp_path / "i_dev.jsonl", rows[:4]))))
    assert ints.task.label_names == ("3", "5", "7") and ints.train.labels[:3] == (0, 2, 1)
    scores = [{"text": f"row {i}", "score": i / 4} for i in range(12)]
    reg = load_task("y", files=FileTask("y", str(_write(tmp_path / "r.csv", scores)),
                                        str(_write(tmp_path / "r_dev.csv", scores[:5])), label_column="score"))
    assert reg.task.is_regression and reg.task.num_labels == 1
    assert (reg.task.main_metric, reg.task.metrics) == ("pearson", ("pearson", "spearman"))
    assert reg.dev.labels == (0.0, 0.25, 0.5, 0.75, 1.0)
    # integers scored by a correlation are a regression too
    corr = load_task("z", files=FileTask("z", str(tmp_path / "i.jsonl"), str(tmp_path / "i_dev.jsonl"),
                                         metric="spearman"))
    assert corr.task.is_regression and corr.task.main_metric == "spearman" and corr.dev.labels[:2] == (3.0, 7.0)


def test_recorded_labels_rebuild_the_task_from_dev_alone(glue_dir, tmp_path):
    train, dev = _sst2_files(glue_dir, tmp_path, ".csv")
    full = load_task("r", files=FileTask("r", str(train), str(dev)))
    alone = load_task("r", files=FileTask("r", None, str(dev), label_names=("negative", "positive")))
    assert alone.task == full.task and alone.dev == full.dev and len(alone.train) == 0
    # the recorded order wins over the file's: the ids the model was trained on
    flipped = load_task("r", files=FileTask("r", None, str(dev), label_names=("positive", "negative")))
    assert flipped.dev.labels == tuple(1 - x for x in full.dev.labels)


def test_fingerprint_follows_the_content(glue_dir, tmp_path):
    train, dev = _sst2_files(glue_dir, tmp_path, ".csv")
    spec = FileTask("r", str(train), str(dev))
    first = load_task("r", files=spec)
    assert load_task("r", files=spec).train_fingerprint == first.train_fingerprint
    rows = _rows(glue_dir, "sst2", "train.tsv", 40)
    rows[3]["text"] = rows[3]["text"].upper()
    _write(train, rows)
    assert load_task("r", files=spec).train_fingerprint != first.train_fingerprint
    other_column = load_task("r", files=FileTask("r", str(train), str(dev), text_column="label", label_column="label"))
    assert other_column.train_fingerprint != load_task("r", files=spec).train_fingerprint
    # a moved copy keeps its key (the teacher fine-tuned on it is found again)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / train.name).write_bytes(train.read_bytes())
    assert load_task("r", files=FileTask("r", str(moved / train.name), str(dev))).train_fingerprint == \
        load_task("r", files=spec).train_fingerprint


def test_data_config_checks_and_old_specs(tmp_path):
    with pytest.raises(LadaError, match="needs --dev-file"):
        DataConfig("x", train_file="a.csv")
    with pytest.raises(LadaError, match="data.metric \\(--metric\\) is for a task given by files"):
        DataConfig("sst2", metric="f1")
    with pytest.raises(LadaError, match="metric 'bleu' is unknown; allowed: accuracy, f1, mcc, pearson, spearman"):
        DataConfig("x", train_file="a.csv", dev_file="b.csv", metric="bleu")
    cfg = DataConfig("x", train_file="a.csv", dev_file="b.csv", metric="matthews", labels=["b", "a"])
    assert cfg.metric == "mcc" and cfg.labels == ("b", "a")
    assert DataConfig(**json.loads(json.dumps(asdict(cfg)))) == cfg
    # a spec written before these fields existed still loads
    old = {"task": "sst2", "data_dir": None, "max_length": 64, "max_train": None, "max_dev": None, "dev_split": None,
           "seed": 0, "val_size": 0.1, "val_file": None, "val_rule": None}
    assert DataConfig(**old).files() is None


# --- bad data: LadaError from the loader and one line, exit code 2, through the CLI ---------------------------

def _bad_cases(tmp_path, glue_dir):
    good_train, good_dev = _sst2_files(glue_dir, tmp_path, ".csv")
    cases = {}

    def case(name, train=good_train, dev=good_dev, extra=(), fragments=()):
        cases[name] = (str(train), str(dev), list(extra), fragments)

    case("missing column", extra=["--text-column", "sentence"],
         fragments=("has no column 'sentence' (--text-column); columns found: 'text', 'label'",))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    case("empty file", train=empty, fragments=("train file", "empty.csv' is empty"))
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    case("header only", train=header, fragments=("header.csv' has no data rows",))
    one = _write(tmp_path / "one.csv", [{"text": f"t{i}", "label": "pos"} for i in range(5)])
    case("single class", train=one, fragments=("has a single class ('pos') in column 'label'",))
    unseen = _write(tmp_path / "unseen.csv", [{"text": "a", "label": "negative"}, {"text": "b", "label": "great"}])
    case("dev label not in train", dev=unseen,
         fragments=("dev file", "label(s) not in the train file: 'great'; train classes: 'negative', 'positive'",))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"\x00\x01 not parquet at all")
    case("unparseable", train=garbage, fragments=("cannot read train file", "as PARQUET"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": \n')
    case("unparseable json", train=broken, fragments=("cannot read train file", "as JSONL"))
    mixed = _write(tmp_path / "mixed.csv", [{"text": f"t{i}", "label": ["pos", "1"][i % 2]} for i in range(6)])
    case("mixed labels", train=mixed, fragments=("label column 'label' mixes numbers", "and text", "'pos'"))
    case("missing file", train=tmp_path / "nope.csv", fragments=("train file", "nope.csv' does not exist",))
    odd = tmp_path / "rows.xlsx"
    odd.write_text("x")
    case("extension", train=odd, fragments=("unsupported extension '.xlsx'; allowed: .csv, .tsv, .json, .jsonl, "
                                            ".parquet",))
    return cases


BAD = ["missing column", "empty file", "header only", "single class", "dev label not in train", "unparseable",
       "unparseable json", "mixed labels", "missing file", "extension"]


@pytest.mark.parametrize("name", BAD)
def test_bad_data_loader(glue_dir, tmp_path, name):
    train, dev, extra, fragments = _bad_cases(tmp_path, glue_dir)[name]
    column = extra[1] if extra else "text"
    with pytest.raises(LadaError) as err:
        load_task("bad", files=FileTask("bad", train, dev, text_column=column))
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.parametrize("name", BAD)
def test_bad_data_cli_one_line(glue_dir, tmp_path, cache_dir, tiny_cli_model, name):
    train, dev, extra, fragments = _bad_cases(tmp_path, glue_dir)[name]
    result = CliRunner().invoke(main, ["compress", "--train-file", train, "--dev-file", dev, *extra, "--model",
                                       str(tiny_cli_model), "--target", "5x", "--embedding-ratio", "0.2",
                                       "--svd-ratio", "0.8"])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args, message", [
    (["--train-file", "a.csv"], "needs --dev-file"),
    (["--task", "sst2", "--metric", "f1"], "data.metric (--metric) is for a task given by files"),
    ([], "Missing option '--task' (a GLUE task) or '--train-file'"),
])
def test_option_misuse(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ladasearch.cli", "compress", "--target", "5x", *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


# --- end to end: compress from a CSV with string labels, then export it -----------------------------------------

def test_compress_csv_string_labels_then_export(glue_dir, tiny_cli_model, tmp_path, cache_dir):
    train = _write(tmp_path / "reviews.csv", _rows(glue_dir, "sst2", "train.tsv", 40))
    dev = _write(tmp_path / "reviews_dev.csv", _rows(glue_dir, "sst2", "dev.tsv", 10))
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(main, ["compress", "--train-file", str(train), "--dev-file", str(dev), "--model",
                                  str(tiny_cli_model), "--val-size", "8", "--target", "5x", "--embedding-ratio",
                                  "0.19", "--svd-ratio", "0.8", "--teacher-steps", "2", "--rounds", "1",
                                  "--steps-per-round", "1", "--final-steps", "1", "--batch-size", "8",
                                  "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "reviews" and summary["main_metric"] == "accuracy"
    data = summary["data"]
    assert (data["train_file"], data["dev_file"], data["labels"], data["metric"], data["regression"]) == (
        str(train), str(dev), ["negative", "positive"], "accuracy", False)
    assert (data["train_rows"], data["val_rows"], data["dev_rows"], data["data_dir"]) == (32, 8, 10, None)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}

    exported = tmp_path / "hf"
    result = runner.invoke(main, ["export-model", str(out), "--format", "hf", "--out", str(exported),
                                  "--no-measure"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads((exported / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    record = json.loads((exported / "ladasearch_export.json").read_text())
    assert record["task"] == "reviews" and record["labels"] == ["negative", "positive"]
    card = (exported / "README.md").read_text()
    assert "fine-tuned on the task reviews given by files" in card and "{name: reviews, type: custom}" in card
    assert "Labels: 0: negative, 1: positive." in card


def test_int8_gate_scorer_rebuilds_the_task_from_the_record(glue_dir, tmp_path, tiny_cli_model):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from ladasearch.runtime.export import DevData
    from ladasearch.runtime.scoring import load_dev

    train, dev = _sst2_files(glue_dir, tmp_path, ".jsonl")
    record = {"train_file": str(tmp_path / "gone.jsonl"), "dev_file": str(dev), "text_column": None,
              "text_pair_column": None, "label_column": None, "labels": ["negative", "positive"], "metric": "f1"}
    summary = SimpleNamespace(task="reviews", data=record)
    cfg = DevData(max_dev=5).for_summary(summary)
    assert (cfg.task, cfg.labels, cfg.metric, cfg.max_dev) == ("reviews", ("negative", "positive"), "f1", 5)
    loaded = load_dev(cfg, AutoTokenizer.from_pretrained(tiny_cli_model))  # the train file is gone: not read
    assert loaded.task.label_names == ("negative", "positive") and loaded.task.main_metric == "f1"
    assert loaded.rows == 5 and "reviews.dev.jsonl" in loaded.source
    moved = tmp_path / "moved.csv"
    _write(moved, [{"review": r["text"], "y": r["label"]} for r in _rows(glue_dir, "sst2", "dev.tsv", 7)])
    cfg = DevData(max_dev=None, dev_file=str(moved), text_column="review", label_column="y").for_summary(summary)
    assert load_dev(cfg, AutoTokenizer.from_pretrained(tiny_cli_model)).rows == 7
    with pytest.raises(LadaError, match="--dev-file is for a model trained on a task given by files"):
        DevData(dev_file="x.csv").for_summary(SimpleNamespace(task="sst2", data={"train_file": None}))
    assert DevData().for_summary(SimpleNamespace(task="sst2", data={})).files() is None


def test_mlflow_params_of_a_file_task(glue_dir, tmp_path):
    from ladasearch.search.driver import file_params

    train, dev = _sst2_files(glue_dir, tmp_path, ".csv")
    cfg = DataConfig("reviews", train_file=str(train), dev_file=str(dev), label_column="label")
    task = load_task(cfg.task, files=cfg.files()).task
    assert file_params(cfg, task) == {"data.train_file": str(train), "data.dev_file": str(dev),
                                      "data.label_column": "label", "data.labels": "negative,positive",
                                      "data.metric": "accuracy", "data.regression": False}
    assert file_params(DataConfig("sst2"), task) == {}


def test_compress_regression_jsonl_then_int8_gate(glue_dir, tiny_cli_model, tmp_path, cache_dir):
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    from conftest import build_tiny

    model_dir = tmp_path / "tiny1"  # a regression head: one output
    tokenizer = AutoTokenizer.from_pretrained(tiny_cli_model)
    build_tiny(0, vocab_size=tokenizer.vocab_size, hidden_size=32, num_attention_heads=2, intermediate_size=64,
               num_labels=1).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = [{"a": r["text"], "b": r["pair"], "score": round(0.37 * (i % 11), 2)}
            for i, r in enumerate(_rows(glue_dir, "mnli", "train.sample.tsv", 40))]
    train = _write(tmp_path / "sim.jsonl", rows[:30])
    dev = _write(tmp_path / "sim_dev.jsonl", rows[30:])
    out, runner = tmp_path / "out", CliRunner()
    result = runner.invoke(main, ["compress", "--task", "my sim", "--train-file", str(train), "--dev-file", str(dev),
                                  "--text-column", "a", "--text-pair-column", "b", "--label-column", "score",
                                  "--metric", "spearman", "--model", str(model_dir), "--val-size", "6",
                                  "--target", "5x", "--embedding-ratio", "0.19", "--svd-ratio", "0.8",
                                  "--teacher-steps", "1", "--rounds", "1", "--steps-per-round", "1", "--final-steps",
                                  "0", "--batch-size", "8", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "my-sim" and summary["main_metric"] == "spearman"
    assert (summary["data"]["labels"], summary["data"]["regression"]) == ([], True)
    assert set(summary["dev_metrics"]) == {"spearman", "pearson"}
    int8 = tmp_path / "int8"
    result = runner.invoke(main, ["export-model", str(out), "--format", "onnx-int8", "--out", str(int8),
                                  "--max-drop", "100", "--max-length", "48", "--no-measure"])
    assert result.exit_code == 0, (result.output, result.exception)
    gate = json.loads((int8 / "ladasearch_export.json").read_text())["int8_gate"]
    assert gate["metric"] == "spearman" and gate["rows"] == 10
    assert json.loads((int8 / "ladasearch_export.json").read_text())["labels"] == ["score"]


def test_val_file_of_a_file_task(glue_dir, tmp_path):
    train, dev = _sst2_files(glue_dir, tmp_path, ".csv")
    val = _write(tmp_path / "val.parquet", _rows(glue_dir, "sst2", "train.tsv", 6, offset=100))
    spec = FileTask("r", str(train), str(dev))
    data = load_task("r", files=spec, val_file=str(val), val_size=0.25)
    assert (len(data.train), len(data.val)) == (40, 6) and data.val_source == f"file {val}"
    assert data.val.text_a[0] == _rows(glue_dir, "sst2", "train.tsv", 1, offset=100)[0]["text"]
    assert data.train_fingerprint != load_task("r", files=spec, val_size=0.25).train_fingerprint
    bad = _write(tmp_path / "bad_val.csv", [{"text": "x", "label": "meh"}])
    with pytest.raises(LadaError, match=r"validation file .*bad_val.csv' has label\(s\) not in the train file: 'meh'"):
        load_task("r", files=spec, val_file=str(bad))


@pytest.mark.ray
def test_search_on_a_file_task_records_it_and_the_best_model_has_the_names(glue_dir, tiny_dir, tmp_path,
                                                                          monkeypatch):
    from mlflow.tracking import MlflowClient

    from ladasearch.config import TeacherConfig, TrainConfig
    from ladasearch.search import SavedSearch, SearchConfig, SearchSettings, SearchSpace, run_search

    monkeypatch.chdir(tmp_path)
    train, dev = _sst2_files(glue_dir, tmp_path, ".tsv", n_train=60, n_dev=16)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = SearchConfig(name="own", target=5.0, num_samples=2, max_concurrent=1, storage=str(tmp_path / "runs"),
                       tracking_uri=uri)
    data = DataConfig("reviews", train_file=str(train), dev_file=str(dev), val_size=12)
    settings = SearchSettings(data, str(tiny_dir), cfg, SearchSpace.load("ratios"), TeacherConfig(steps=2),
                              TrainConfig(rounds=1, steps_per_round=1, final_steps=1), cache_dir=str(tmp_path / "c"))
    outcome = run_search(settings, log=lambda s: None)
    assert outcome.best is not None and outcome.best.task == "reviews"
    assert outcome.best.data["labels"] == ["negative", "positive"] and outcome.best.data["train_rows"] == 48
    config = json.loads((outcome.best_model / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert SavedSearch.read(cfg.spec_file).settings.data == data  # the spec gives the file task back
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("ladasearch").experiment_id],
                                "tags.`ladasearch.role` = 'search'")[0]
    assert parent.data.params["data.train_file"] == str(train) and parent.data.params["data.labels"] == \
        "negative,positive"
    assert parent.data.tags["ladasearch.task"] == "reviews"
