"""Tests for ladasearch.data: task specs, local GLUE TSV loading, hub errors, metrics."""

from __future__ import annotations

import collections
import functools
import math
import os
import pathlib
import warnings

import numpy as np
import pytest
from conftest import GLUE_DIR

from ladasearch.data import (
    ENV_DATA_DIR,
    TASKS,
    Split,
    TaskData,
    compute_metrics,
    get_task,
    load_task,
    main_score,
    resolve_data_dir,
)
from ladasearch.errors import LadaError

DATA = GLUE_DIR  # conftest: the shared GLUE folder
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"GLUE data not found at {DATA}")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)


@functools.lru_cache(maxsize=None)
def _load(task: str, dev_split: str | None = None) -> TaskData:
    return load_task(task, DATA, dev_split=dev_split)


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- task specs


@pytest.mark.parametrize(
    "alias, name",
    [("sst2", "sst2"), ("SST-2", "sst2"), ("SST2", "sst2"), ("MNLI", "mnli"), ("sts-b", "stsb"),
     ("STS-B", "stsb"), ("CoLA", "cola"), (" qqp ", "qqp"), ("Mrpc", "mrpc"), ("rte", "rte"),
     ("qnli", "qnli")],
)
def test_get_task_aliases(alias, name):
    assert get_task(alias) is TASKS[name]


def test_task_table():
    assert set(TASKS) == {"sst2", "mnli", "qnli", "qqp", "mrpc", "rte", "cola", "stsb"}
    metrics = {t.name: t.main_metric for t in TASKS.values()}
    assert metrics == {"sst2": "accuracy", "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy",
                       "qqp": "f1", "mrpc": "f1", "cola": "mcc", "stsb": "pearson"}
    assert TASKS["stsb"].num_labels == 1 and TASKS["stsb"].is_regression
    assert TASKS["mnli"].num_labels == 3
    assert TASKS["mnli"].dev_splits == ("dev_matched", "dev_mismatched")
    assert all(t.dev_splits == ("dev",) for t in TASKS.values() if t.name != "mnli")
    assert TASKS["qqp"].glue_dir == "QQP" and TASKS["cola"].glue_dir == "CoLA"


@pytest.mark.parametrize("task, names", [
    ("sst2", ("negative", "positive")), ("mnli", ("entailment", "neutral", "contradiction")),
    ("qnli", ("entailment", "not_entailment")), ("qqp", ("not_duplicate", "duplicate")),
    ("mrpc", ("not_equivalent", "equivalent")), ("rte", ("entailment", "not_entailment")),
    ("cola", ("unacceptable", "acceptable")), ("stsb", ()),
])
def test_label_names_match_the_head(task, names):
    spec = TASKS[task]
    assert spec.label_names == names
    assert spec.num_labels == max(1, len(names)) and len(spec.tsv_labels) == len(names)
    assert spec.main_metric in spec.metrics


@needs_data
@pytest.mark.parametrize("task", ["sst2", "mnli", "rte"])
def test_tsv_labels_read_as_class_ids(task):
    data = _load(task)
    assert set(data.train.labels) == set(range(TASKS[task].num_labels))


@pytest.mark.parametrize("bad", ["wnli", "mnli-m", "", "sst"])
def test_get_task_unknown(bad):
    with pytest.raises(LadaError) as exc:
        get_task(bad)
    msg = _one_line(exc)
    assert repr(bad) in msg and "sst2" in msg and "stsb" in msg and "mnli" in msg


# --------------------------------------------------------------------------- real local data

# task -> (train rows, dev rows, train label counts, dev label counts)
COUNTS = {
    "sst2": (67349, 872, {0: 29780, 1: 37569}, {0: 428, 1: 444}),
    "mnli": (10471, 9815, {0: 3565, 1: 3470, 2: 3436}, {0: 3479, 1: 3123, 2: 3213}),
    "qnli": (10293, 5463, {0: 5173, 1: 5120}, {0: 2702, 1: 2761}),
    "mrpc": (3668, 408, {0: 1194, 1: 2474}, {0: 129, 1: 279}),
    "rte": (2490, 277, {0: 1249, 1: 1241}, {0: 146, 1: 131}),
    "cola": (8551, 1043, {0: 2528, 1: 6023}, {0: 322, 1: 721}),
    "stsb": (5749, 1500, None, None),
}


@needs_data
@pytest.mark.parametrize("task", sorted(COUNTS))
def test_local_counts(task):
    n_train, n_dev, train_counts, dev_counts = COUNTS[task]
    data = _load(task)
    assert data.task is TASKS[task]
    assert (len(data.train), len(data.dev)) == (n_train, n_dev)
    assert data.source.startswith(str(DATA / TASKS[task].glue_dir))
    assert "held out" not in data.source
    if train_counts is not None:
        assert dict(collections.Counter(data.train.labels)) == train_counts
        assert dict(collections.Counter(data.dev.labels)) == dev_counts
        assert all(type(x) is int for x in data.dev.labels)
    single = task in ("sst2", "cola")
    for split in (data.train, data.dev):
        assert (split.text_b is None) == single
        assert len(split.text_a) == len(split.labels)
        assert all(isinstance(s, str) and s for s in split.text_a)


@needs_data
def test_stsb_scores_are_floats_0_to_5():
    data = _load("stsb")
    for split in (data.train, data.dev):
        assert all(type(x) is float for x in split.labels)
        assert min(split.labels) == 0.0 and max(split.labels) == 5.0
    assert data.dev.labels[:2] == (5.0, 4.75)
    assert data.dev.text_a[0] == "A man with a hard hat is dancing."


@needs_data
def test_first_rows_read_by_header_name():
    mnli = _load("mnli")
    assert mnli.dev.text_a[0] == "The new rights are nice enough"
    assert mnli.dev.text_b[0] == "Everyone really likes the newest benefits "
    assert mnli.dev.labels[0] == 1  # neutral
    mrpc = _load("mrpc")  # header starts with a BOM before 'Quality'
    assert mrpc.dev.text_a[0].startswith("He said the foodservice pie business")
    assert mrpc.dev.labels[0] == 1
    cola = _load("cola")  # no header: source, label, orig_label, sentence
    assert cola.dev.text_a[0] == "The sailors rode the breeze clear of the rocks."
    assert cola.dev.labels[0] == 1


@needs_data
def test_sample_train_is_noted_in_source():
    assert "train.sample.tsv" in _load("qnli").source
    assert "train.sample.tsv" not in _load("rte").source


@needs_data
def test_qqp_dev_held_out_from_train():
    data = _load("qqp")
    assert len(data.train) + len(data.dev) == 33164
    assert len(data.dev) == round(33164 * 0.05) == 1658
    assert "dev held out from train" in data.source
    train_rows = set(zip(data.train.text_a, data.train.text_b))
    dev_rows = list(zip(data.dev.text_a, data.dev.text_b))
    assert not train_rows.intersection(dev_rows)
    counts = collections.Counter(data.train.labels) + collections.Counter(data.dev.labels)
    assert dict(counts) == {0: 20881, 1: 12283}
    again = load_task("qqp", DATA, seed=123)  # hold-out does not depend on the seed
    assert again.dev == data.dev and again.train == data.train


@needs_data
def test_mnli_dev_splits():
    assert load_task("mnli", DATA, dev_split="dev_matched").dev == _load("mnli").dev
    with pytest.raises(LadaError) as exc:
        load_task("mnli", DATA, dev_split="dev_mismatched")
    msg = _one_line(exc)
    assert "dev_mismatched.tsv" in msg and str(DATA / "MNLI") in msg


@needs_data
@pytest.mark.parametrize("task, bad", [("mnli", "dev"), ("rte", "dev_matched"), ("sst2", "test")])
def test_invalid_dev_split(task, bad):
    with pytest.raises(LadaError) as exc:
        load_task(task, DATA, dev_split=bad)
    msg = _one_line(exc)
    assert repr(bad) in msg and TASKS[task].dev_splits[0] in msg


@needs_data
@pytest.mark.parametrize("task", ["rte", "mrpc"])
def test_root_or_task_folder(task):
    via_root = _load(task)
    via_folder = load_task(task, DATA / TASKS[task].glue_dir)
    via_str = load_task(task, str(DATA / TASKS[task].glue_dir))
    assert via_root == via_folder == via_str


@needs_data
def test_task_folder_of_another_task_is_rejected():
    with pytest.raises(LadaError) as exc:
        load_task("rte", DATA / "SST-2")
    assert "'RTE' not found under" in _one_line(exc)


@needs_data
def test_env_data_dir(monkeypatch):
    assert resolve_data_dir(None) is None
    monkeypatch.setenv(ENV_DATA_DIR, str(DATA))
    assert resolve_data_dir(None) == DATA
    assert load_task("rte") == _load("rte")
    monkeypatch.setenv(ENV_DATA_DIR, str(DATA / "no-such-dir"))
    assert load_task("rte", DATA / "RTE").dev == _load("rte").dev  # explicit argument wins
    with pytest.raises(LadaError) as exc:
        load_task("rte")
    msg = _one_line(exc)
    assert ENV_DATA_DIR in msg and "no-such-dir" in msg and "does not exist" in msg


@needs_data
def test_max_train_max_dev_and_fingerprint():
    full = _load("rte")
    a = load_task("rte", DATA, max_train=100, max_dev=50, seed=1)
    b = load_task("rte", DATA, max_train=100, max_dev=50, seed=1)
    c = load_task("rte", DATA, max_train=100, max_dev=50, seed=2)
    assert (len(a.train), len(a.dev)) == (100, 50)
    assert a == b
    assert a.train != c.train and a.fingerprint != c.fingerprint
    assert set(a.train.text_a) <= set(full.train.text_a)
    fps = {full.fingerprint, a.fingerprint, c.fingerprint,
           load_task("rte", DATA, max_train=101, max_dev=50, seed=1).fingerprint,
           load_task("rte", DATA, max_dev=50, seed=1).fingerprint,
           _load("mrpc").fingerprint}
    assert len(fps) == 6
    assert all(len(f) == 16 and int(f, 16) >= 0 for f in fps)
    # asking for more rows than exist is the same as asking for all of them
    big = load_task("rte", DATA, max_train=10**6, max_dev=10**6, seed=5)
    assert big == full


# --------------------------------------------------------------------------- Split.subset


def _split(n: int) -> Split:
    return Split(tuple(f"s{i}" for i in range(n)), tuple(f"t{i}" for i in range(n)),
                 tuple(i % 2 for i in range(n)))


def test_subset_deterministic():
    s = _split(100)
    a, b, c = s.subset(10, seed=0), s.subset(10, seed=0), s.subset(10, seed=1)
    assert a == b and a != c and len(a) == 10
    assert list(a.text_a) == sorted(a.text_a, key=lambda t: int(t[1:]))  # file order kept
    assert all(x[1:] == y[1:] and int(x[1:]) % 2 == lab
               for x, y, lab in zip(a.text_a, a.text_b, a.labels))
    assert s.subset(None, 0) is s and s.subset(100, 0) is s and s.subset(500, 3) is s
    single = Split(("a", "b", "c"), None, (0, 1, 0)).subset(2, 0)
    assert single.text_b is None and len(single) == 2


@pytest.mark.parametrize("bad", [0, -3])
def test_subset_invalid(bad):
    with pytest.raises(LadaError):
        _split(5).subset(bad, 0)


def test_split_length_mismatch():
    with pytest.raises(ValueError):
        Split(("a", "b"), None, (0,))


# --------------------------------------------------------------------------- malformed files


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def _rte_dir(tmp_path, train: str, dev: str | None = RTE_HEADER + "0\ta\tb\tentailment\n"):
    _write(tmp_path / "RTE" / "train.tsv", train)
    if dev is not None:
        _write(tmp_path / "RTE" / "dev.tsv", dev)
    return tmp_path


def test_small_local_files(tmp_path):
    root = _rte_dir(tmp_path, RTE_HEADER + "0\tx\ty\tnot_entailment\n1\tp\tq\tentailment\n\n")
    data = load_task("RTE", root)
    assert data.train == Split(("x", "p"), ("y", "q"), (1, 0))
    assert data.dev == Split(("a",), ("b",), (0,))
    _write(tmp_path / "CoLA" / "train.tsv", "gj04\t1\t\tGood one.\ngj04\t0\t*\tBad one one.")
    _write(tmp_path / "CoLA" / "dev.tsv", "gj04\t0\t*\tBad.\n")
    cola = load_task("cola", tmp_path)
    assert cola.train == Split(("Good one.", "Bad one one."), None, (1, 0))
    # header columns in another order, extra columns, train.sample.tsv fallback, no dev file
    _write(tmp_path / "SST-2" / "train.sample.tsv", "label\textra\tsentence\n1\tz\tgreat\n0\tz\tbad\n")
    sst = load_task("sst2", tmp_path)
    assert sst.train.labels + sst.dev.labels in ((1, 0), (0, 1)) and len(sst.dev) == 1
    assert "dev held out from train" in sst.source and "train.sample.tsv" in sst.source


def test_fingerprint_tracks_file_changes(tmp_path):
    root = _rte_dir(tmp_path, RTE_HEADER + "0\tx\ty\tentailment\n")
    first = load_task("rte", root)
    assert load_task("rte", root).fingerprint == first.fingerprint
    _write(root / "RTE" / "train.tsv", RTE_HEADER + "0\tx\ty\tentailment\n1\tu\tv\tentailment\n")
    os.utime(root / "RTE" / "train.tsv", ns=(1, 1))
    assert load_task("rte", root).fingerprint != first.fingerprint


@pytest.mark.parametrize("val", [None, "file"])
def test_a_copied_or_touched_data_folder_keeps_its_keys(tmp_path, val):
    """The keys of a teacher and its caches follow the rows, not the files' paths or times: a data folder copied
    again (a new checkout, a re-mounted share) must find the teacher fine-tuned on the same rows, so that a
    resume does not fine-tune it again."""
    rows = RTE_HEADER + "0\tx\ty\tentailment\n1\tu\tv\tnot_entailment\n2\tp\tq\tentailment\n"
    first_root, second_root = _rte_dir(tmp_path / "a", rows), _rte_dir(tmp_path / "b", rows)
    for root in (first_root, second_root):
        _write(root / "val.tsv", RTE_HEADER + "9\tm\tn\tentailment\n")
    os.utime(second_root / "RTE" / "train.tsv", ns=(1, 1))
    os.utime(second_root / "val.tsv", ns=(1, 1))
    keys = [load_task("rte", root, val_file=root / "val.tsv" if val else None, val_size=None if val else 1)
            for root in (first_root, second_root)]
    assert (keys[0].train_fingerprint, keys[0].fingerprint) == (keys[1].train_fingerprint, keys[1].fingerprint)
    _write(second_root / "RTE" / "train.tsv", rows.replace("\tu\t", "\tw\t"))
    changed = load_task("rte", second_root, val_file=second_root / "val.tsv" if val else None,
                        val_size=None if val else 1)
    assert changed.train_fingerprint != keys[0].train_fingerprint


@pytest.mark.parametrize(
    "train, expected",
    [
        ("", ["train.tsv", "empty"]),
        (RTE_HEADER, ["train.tsv", "no data rows"]),
        ("index\tsentence1\tlabel\n0\ta\tentailment\n",
         ["train.tsv", "line 1", "'sentence2'", "'index', 'sentence1', 'label'"]),
        (RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\tmaybe\n",
         ["train.tsv", "line 3", "'maybe'", "entailment, not_entailment"]),
        (RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\n",
         ["train.tsv", "line 3", "at least 4", "found 3"]),
    ],
    ids=["empty", "header-only", "missing-column", "bad-label", "too-few-fields"],
)
def test_malformed_train(tmp_path, train, expected):
    root = _rte_dir(tmp_path, train)
    with pytest.raises(LadaError) as exc:
        load_task("rte", root)
    msg = _one_line(exc)
    for part in expected:
        assert part in msg


@pytest.mark.parametrize(
    "task, folder, text, expected",
    [
        ("stsb", "STS-B", "sentence1\tsentence2\tscore\na\tb\tfive\n", ["line 2", "'five'"]),
        ("cola", "CoLA", "gj04\t2\t\tA sentence.\n", ["line 1", "'2'", "0, 1"]),
        ("cola", "CoLA", "gj04\t1\tA sentence.\n", ["line 1", "found 3"]),
        ("mnli", "MNLI", "sentence1\tsentence2\tgold_label\na\tb\t-\n",
         ["line 2", "'-'", "entailment, neutral, contradiction"]),
        ("mrpc", "MRPC", "\ufeffQuality\t#1 String\n1\ta\n", ["'#2 String'", "'Quality'"]),
    ],
)
def test_malformed_other_tasks(tmp_path, task, folder, text, expected):
    _write(tmp_path / folder / "train.tsv", text)
    with pytest.raises(LadaError) as exc:
        load_task(task, tmp_path)
    msg = _one_line(exc)
    for part in expected + [str(tmp_path / folder / "train.tsv")]:
        assert part in msg


def test_bad_dev_file(tmp_path):
    root = _rte_dir(tmp_path, RTE_HEADER + "0\ta\tb\tentailment\n", dev=RTE_HEADER + "7\tx\n")
    with pytest.raises(LadaError) as exc:
        load_task("rte", root)
    assert "dev.tsv, line 2" in _one_line(exc)


def test_missing_folders(tmp_path):
    with pytest.raises(LadaError) as exc:
        load_task("rte", tmp_path / "nope")
    msg = _one_line(exc)
    assert "nope" in msg and "does not exist" in msg
    with pytest.raises(LadaError) as exc:
        resolve_data_dir(tmp_path / "nope")
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    with pytest.raises(LadaError) as exc:
        load_task("rte", tmp_path / "glue")
    msg = _one_line(exc)
    assert "'RTE' not found under" in msg and str(tmp_path / "glue") in msg
    with pytest.raises(LadaError) as exc:
        load_task("sst2", tmp_path / "glue")  # folder present, but no train file
    assert "train.tsv" in _one_line(exc)
    _write(tmp_path / "file.txt", "x")
    with pytest.raises(LadaError) as exc:
        load_task("sst2", tmp_path / "file.txt")
    assert "not a folder" in _one_line(exc)


def test_mnli_mismatched_missing_small(tmp_path):
    header = "sentence1\tsentence2\tgold_label\n"
    _write(tmp_path / "MNLI" / "train.tsv", header + "a\tb\tneutral\nc\td\tentailment\n")
    _write(tmp_path / "MNLI" / "dev_matched.tsv", header + "e\tf\tcontradiction\n")
    assert load_task("mnli", tmp_path).dev.labels == (2,)
    with pytest.raises(LadaError) as exc:
        load_task("mnli", tmp_path, dev_split="dev_mismatched")
    msg = _one_line(exc)
    assert "dev_mismatched.tsv" in msg and str(tmp_path / "MNLI") in msg
    (tmp_path / "MNLI" / "dev_matched.tsv").unlink()
    with pytest.raises(LadaError) as exc:  # mnli dev is never held out from train
        load_task("mnli", tmp_path)
    assert "dev_matched.tsv" in _one_line(exc)


@pytest.mark.parametrize("kw", [{"max_train": 0}, {"max_dev": -1}, {"max_train": 2.5}])
def test_invalid_max(tmp_path, kw):
    root = _rte_dir(tmp_path, RTE_HEADER + "0\ta\tb\tentailment\n")
    with pytest.raises(LadaError) as exc:
        load_task("rte", root, **kw)
    assert next(iter(kw)) in _one_line(exc)


# --------------------------------------------------------------------------- hub


def test_hub_offline_error(monkeypatch, tmp_path, hub_offline):
    assert resolve_data_dir(None) is None
    with pytest.raises(LadaError) as exc:
        load_task("rte")
    msg = _one_line(exc)
    assert msg.startswith("could not load GLUE task rte from the Hugging Face hub (")
    assert msg.endswith("pass --data-dir or set LADASEARCH_DATA_DIR to a local GLUE folder")


def test_hub_error_is_one_line(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def boom(*args, **kwargs):
        raise ConnectionError("network down\nretry later")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(LadaError) as exc:
        load_task("mnli")
    assert "(ConnectionError: network down retry later)" in _one_line(exc)


class _FakeTable(dict):
    pass


def test_hub_columns_and_splits(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake(path, name):
        calls.append((path, name))
        if name == "mnli":
            rows = {"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"],
                    "label": [0, 1, 2]}
            return {"train": _FakeTable(rows), "validation_matched": _FakeTable(rows),
                    "validation_mismatched": _FakeTable({k: v[:1] for k, v in rows.items()})}
        rows = {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [0.5, 4.25]}
        return {"train": _FakeTable(rows), "validation": _FakeTable(rows)}

    monkeypatch.setattr(datasets, "load_dataset", fake)
    mm = load_task("MNLI", dev_split="dev_mismatched", max_train=2, seed=3)
    assert calls == [("nyu-mll/glue", "mnli")]
    assert mm.source == "hub:nyu-mll/glue"
    assert mm.dev == Split(("p1",), ("h1",), (0,)) and len(mm.train) == 2
    assert mm.fingerprint != load_task("mnli").fingerprint
    stsb = load_task("stsb")
    assert stsb.train.labels == (0.5, 4.25) and stsb.train.text_b == ("c", "d")


# --------------------------------------------------------------------------- metrics


def test_metrics_accuracy_f1_mcc():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0], [-1.0, 1.0]])  # preds 1, 0, 1, 1
    labels = [1, 0, 0, 1]  # TP=2 TN=1 FP=1 FN=0
    assert compute_metrics(TASKS["sst2"], logits, labels) == {"accuracy": 0.75}
    mrpc = compute_metrics(TASKS["mrpc"], logits, labels)
    assert mrpc["accuracy"] == 0.75 and mrpc["f1"] == pytest.approx(0.8)  # P=2/3, R=1
    cola = compute_metrics(TASKS["cola"], logits, np.array(labels))
    assert cola["mcc"] == pytest.approx(2 / math.sqrt(3 * 2 * 1 * 2))  # (TP*TN-FP*FN)/sqrt(...)
    assert main_score(TASKS["cola"], cola) == cola["mcc"]
    assert main_score(TASKS["qqp"], mrpc) == mrpc["f1"]
    assert all(type(v) is float for m in (mrpc, cola) for v in m.values())
    # 1-D class ids are accepted too
    assert compute_metrics(TASKS["rte"], np.array([1, 0, 1, 1]), labels) == {"accuracy": 0.75}


def test_metrics_mnli_three_classes():
    logits = np.eye(3)[[0, 1, 2, 2, 0]] * 5.0
    assert compute_metrics(TASKS["mnli"], logits, [0, 1, 2, 1, 1]) == {"accuracy": 0.6}


def test_metrics_constant_predictions_are_zero_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cola = compute_metrics(TASKS["cola"], np.zeros((4, 2)) + [1.0, 0.0], [1, 0, 0, 1])
        assert cola == {"accuracy": 0.5, "mcc": 0.0}
        qqp = compute_metrics(TASKS["qqp"], np.tile([1.0, 0.0], (3, 1)), [1, 1, 0])
        assert qqp["f1"] == 0.0
        stsb = compute_metrics(TASKS["stsb"], np.full(4, 2.5), [0.0, 1.0, 2.0, 3.0])
        assert stsb == {"pearson": 0.0, "spearman": 0.0}
        assert compute_metrics(TASKS["stsb"], [1.0, 2.0], [3.0, 3.0])["pearson"] == 0.0


def test_metrics_regression():
    exact = compute_metrics(TASKS["stsb"], np.array([[1.0], [2.0], [3.0], [4.0]]), [1, 3, 2, 4])
    assert exact["pearson"] == pytest.approx(0.8) and exact["spearman"] == pytest.approx(0.8)
    skew = compute_metrics(TASKS["stsb"], np.array([1.0, 2.0, 3.0, 100.0]), [1.0, 2.0, 3.0, 4.0])
    assert skew["pearson"] == pytest.approx(149 / math.sqrt(7205 * 5))
    assert skew["spearman"] == pytest.approx(1.0)
    assert main_score(TASKS["stsb"], skew) == skew["pearson"]
    assert all(type(v) is float for v in skew.values())


@pytest.mark.parametrize(
    "task, preds, labels",
    [("sst2", np.zeros((3, 2)), [0, 1]), ("sst2", np.zeros((2, 3)), [0, 1]),
     ("stsb", np.zeros((2, 2)), [0.0, 1.0]), ("rte", [0.3, 0.7], [0, 1]), ("rte", [], [])],
)
def test_metrics_bad_input(task, preds, labels):
    with pytest.raises(LadaError):
        compute_metrics(TASKS[task], preds, labels)


def test_main_score_missing():
    with pytest.raises(LadaError) as exc:
        main_score(TASKS["mrpc"], {"accuracy": 1.0})
    assert "'f1'" in _one_line(exc) and "accuracy" in _one_line(exc)
