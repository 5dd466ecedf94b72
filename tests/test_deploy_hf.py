"""`export-model --format hf`: the folder plain transformers loads gives the student's logits, or refuses loudly."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import ladasearch
from conftest import build_tiny, hf_shapes
from ladasearch.cli.commands import main
from ladasearch.compress import compress_step, count_parameters, make_plan, solve
from ladasearch.runtime.export import DevData, ExportSettings, export_model
from ladasearch.runtime.formats import Timed
from ladasearch.serialize import layer_structure, save_compressed
from ladasearch.summary import ParamRecord, RatioRecord, TrialSummary

TEXTS = ["the movie is good", "a bad movie , not good at all", "good"]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "is", "good", "bad", "a", "not", "at", "all",
         ","] + [f"w{i}" for i in range(985)]
NO_MEASURE = ExportSettings(measure=False)


def tiny_tokenizer():
    """A WordPiece tokenizer over the tiny model's 1000-token vocabulary (no download)."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})


def _params(counts) -> ParamRecord:
    return ParamRecord(counts.embedding, counts.encoder, counts.dense)


def _trained(student, ratios):
    """Two compression rounds with optimizer steps between, so pruned ``_orig`` entries hold values."""
    plans = make_plan(student, ratios)
    inputs = tiny_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    for fraction in (0.5, 1.0):
        compress_step(student, plans, fraction)
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
        student.train()
        for _ in range(2):
            student(**inputs).logits.pow(2).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    return student.eval()


def ratios_for_method(method: str, counts):
    """Ratios of a tiny model per case; 'merged': SVD ratio 1, so every factorized linear layer costs more
    multiply-adds than its dense merge and the export stores it merged."""
    from conftest import feasible_ratios

    if method == "merged":
        return solve(counts, 1.5, embedding=0.5, svd=1.0)
    return feasible_ratios(counts, 5.0, method)


METHODS = ("hybrid", "svd", "prune", "merged")


def make_source(folder, method: str, task: str = "sst2", num_labels: int = 2):
    """A saved tiny compressed student (``save_compressed`` with its record and tokenizer) and its teacher."""
    teacher = build_tiny(0, num_labels=num_labels)
    counts = count_parameters(teacher)
    ratios = ratios_for_method(method, counts)
    student = _trained(copy.deepcopy(teacher), ratios)
    student_counts = count_parameters(student)
    summary = TrialSummary(
        task=task, main_metric="accuracy", ratios=RatioRecord(ratios.method, ratios.embedding, ratios.svd,
                                                              ratios.weight),
        achieved_factor=counts.total / student_counts.total, teacher_params=_params(counts),
        student_params=_params(student_counts), matrices=(), score=0.625, metrics={"accuracy": 0.625}, history=(),
        target=round(counts.total / student_counts.total, 2), teacher_score=0.75, model="tiny-bert")
    save_compressed(student, folder, summary, tiny_tokenizer())
    return folder


@pytest.fixture(scope="module", params=METHODS)
def source(request, tmp_path_factory):
    """(method, folder) of a saved tiny student."""
    return request.param, make_source(tmp_path_factory.mktemp(f"src_{request.param}") / "student", request.param)


@pytest.fixture(scope="module")
def hybrid_source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src") / "student", "hybrid")


def student_logits(folder, inputs):
    with torch.no_grad():
        return ladasearch.load(folder).eval()(**inputs).logits


def test_hf_folder_gives_the_students_logits(source, tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline

    method, source = source
    out = tmp_path / "hf"
    record = export_model(source, "hf", out, NO_MEASURE, log=lambda _: None)
    inputs = tiny_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    want = student_logits(source, inputs)

    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    with torch.no_grad():
        got = model(**inputs).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    assert model.config._attn_implementation == "sdpa"
    assert type(model).__name__ == "LadaBertForSequenceClassification"

    classify = pipeline("text-classification", model=str(out), trust_remote_code=True, function_to_apply="none",
                        top_k=None)
    for text, row in zip(TEXTS, classify(TEXTS)):
        scores = {r["label"]: r["score"] for r in row}
        assert set(scores) == {"negative", "positive"}
        single = student_logits(source, tiny_tokenizer()([text], return_tensors="pt"))[0]
        assert scores["negative"] == pytest.approx(float(single[0]), abs=1e-5)
        assert scores["positive"] == pytest.approx(float(single[1]), abs=1e-5)

    # masks folded into stored values: no mask tensors, and exactly the unmerged factorized layers listed
    tensors = load_file(str(out / "model.safetensors"))
    assert not any("mask" in k or "::" in k for k in tensors)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "ladasearch_bert"
    assert config["auto_map"]["AutoModelForSequenceClassification"] == \
        "modeling_ladasearch.LadaBertForSequenceClassification"
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    ranks = {n: v["rank"] for n, v in layer_structure(ladasearch.load(source)).items() if v["rank"] is not None}
    listed = {n: v["rank"] for n, v in config["factorized"].items()}
    packed = config["ladasearch_packed"]
    shapes = hf_shapes(out)
    if method == "merged":  # every factorized linear layer is cheaper dense: only the embedding stays factorized
        assert set(listed) == {"bert.embeddings.word_embeddings"} and len(ranks) > 1
        assert shapes["bert.encoder.layer.0.attention.self.query.weight"] == (64, 64)
    else:
        assert listed == ranks
    for name, rank in listed.items():
        assert shapes[f"{name}.A"][1] == rank
    # pruned matrices are stored packed, and only they: a packed tensor is its non-zeros and one bit per entry
    assert bool(packed) == (method != "svd")  # every other case prunes
    for name, entry in packed.items():
        assert name not in tensors
        values, bits = tensors[name + "_packed_values"], tensors[name + "_packed_bits"]
        numel = int(torch.tensor(entry["shape"]).prod())
        assert values.numel() == entry["nnz"] < numel and bits.numel() == (numel + 7) // 8
        assert int(torch.count_nonzero(values)) == entry["nnz"]
    dense = {k: v for k, v in model.state_dict().items() if k in shapes}
    assert set(dense) == set(shapes)
    assert all(int(torch.count_nonzero(v)) == packed[k]["nnz"] for k, v in dense.items() if k in packed)
    assert model.config.ladasearch_packed == {}  # loaded dense: saved again, it is a plain folder
    assert (out / "modeling_ladasearch.py").is_file() and (out / "tokenizer_config.json").is_file()
    assert record.labels == ("negative", "positive")
    # the modeling file imports nothing of ladasearch
    assert "ladasearch." not in (out / "modeling_ladasearch.py").read_text().replace("ladasearch_bert", "")


def test_loading_without_trust_remote_code_raises(hybrid_source, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic
    from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

    monkeypatch.setattr(dynamic, "TIME_OUT_REMOTE_CODE", 0)  # no interactive prompt, as in CI or a service
    out = export_model(hybrid_source, "hf", tmp_path / "hf", NO_MEASURE, log=lambda _: None).folder
    for load in (AutoConfig.from_pretrained, AutoModelForSequenceClassification.from_pretrained,
                 lambda path: pipeline("text-classification", model=str(path))):
        with pytest.raises(ValueError, match="trust_remote_code"):
            load(out)


def test_label_names_follow_the_task(tmp_path):
    folder = make_source(tmp_path / "mnli", "hybrid", task="mnli", num_labels=3)
    export_model(folder, "hf", tmp_path / "hf", NO_MEASURE, log=lambda _: None)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    assert config["label2id"] == {"entailment": 0, "neutral": 1, "contradiction": 2}


def test_card_reports_ratios_scores_size_latency_and_memory(hybrid_source, tmp_path):
    settings = ExportSettings(timed=Timed(batches=(1, 4), seq_len=16, runs=2, threads=1))
    record = export_model(hybrid_source, "hf", tmp_path / "hf", settings, log=lambda _: None)
    card = (tmp_path / "hf" / "README.md").read_text()
    ratios = record.summary.ratios
    assert f"| retention ratio | {ratios.embedding:.4f} | {ratios.svd:.4f} | {ratios.weight:.4f} |" in card
    assert "Dev accuracy of the compressed student: **0.6250**" in card and "teacher: 0.7500" in card
    assert f"**{record.summary.achieved_factor:.2f}x** smaller" in card
    assert f"{record.file_bytes / 2**20:.2f} MiB" in card
    assert record.file_bytes == (tmp_path / "hf" / "model.safetensors").stat().st_size
    assert [(x.batch, x.seq_len) for x in record.latency] == [(1, 16), (4, 16)]
    assert all(x.timing.median_ms > 0 for x in record.latency)
    assert record.memory.peak_bytes > record.memory.baseline_bytes > 0
    assert f"peaks at **{record.memory.peak_bytes / 2**20:.1f} MiB**" in card
    assert "trust_remote_code=True" in card
    saved = json.loads((tmp_path / "hf" / "ladasearch_export.json").read_text())
    assert saved["memory"]["peak_rss_bytes"] == record.memory.peak_bytes
    assert saved["labels"] == ["negative", "positive"]


def test_source_by_search_name_and_parent_run_id(hybrid_source, tmp_path):
    from ladasearch.tracking import SearchTags, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    parent = tracker.start_search("tiny-search", SearchTags(), {})
    tracker.log_artifacts(parent, hybrid_source, "best_model")
    inputs = tiny_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    want = student_logits(hybrid_source, inputs)
    for source in ("tiny-search", parent):
        out = tmp_path / f"hf-{len(source)}"
        record = export_model(source, "hf", out, ExportSettings(measure=False, tracking_uri=uri), log=lambda _: None)
        assert record.origin == f"search tiny-search (MLflow run {parent})"
        from ladasearch.runtime.hf import load_hf_folder

        with torch.no_grad():
            assert torch.allclose(load_hf_folder(out)(**inputs).logits, want, atol=1e-5, rtol=0)


def _one_error_line(result, *fragments):
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["{missing}", "--format", "hf"], ("no such folder",)),
    (["{file}", "--format", "hf"], ("is a file",)),
    (["{plain}", "--format", "hf"], ("not a ladasearch model folder",)),
    (["{source}", "--format", "tflite"], ("unknown export format 'tflite'", "hf, onnx, onnx-int8")),
    (["no-such-search", "--format", "hf", "--tracking-uri", "sqlite:///{tmp}/none.db"], ("no MLflow store",)),
])
def test_bad_source_or_format_is_one_error_line(hybrid_source, tmp_path, args, fragments):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "plain").mkdir()
    names = {"missing": tmp_path / "nope" / "x", "file": tmp_path / "file.txt", "plain": tmp_path / "plain",
             "source": hybrid_source, "tmp": tmp_path}
    args = [a.format(**names) for a in args]
    result = CliRunner().invoke(main, ["export-model", *args, "--out", str(tmp_path / "out"), "--no-measure"])
    _one_error_line(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_folder_and_refuses_a_non_empty_out(hybrid_source, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export-model", str(hybrid_source), "--format", "hf", "--out", str(out),
                                       "--no-measure"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"wrote {out} (hf): model.safetensors" in result.output
    assert "Not measured" in (out / "README.md").read_text()
    again = CliRunner().invoke(main, ["export-model", str(hybrid_source), "--format", "hf", "--out", str(out),
                                      "--no-measure"])
    _one_error_line(again, "is not empty", "--overwrite")
    forced = CliRunner().invoke(main, ["export-model", str(hybrid_source), "--format", "hf", "--out", str(out),
                                       "--no-measure", "--overwrite"])
    assert forced.exit_code == 0, (forced.output, forced.exception)


def test_modeling_file_is_assembled_from_the_training_layers():
    import ast
    import sys

    import ladasearch.nn.layers as layers
    import ladasearch.nn.packed as packed
    import ladasearch.nn.units as units
    from ladasearch.runtime import modeling_ladasearch
    from ladasearch.runtime.hf import modeling_source

    text = modeling_source()
    tree = ast.parse(text)
    imported = {(n.module if isinstance(n, ast.ImportFrom) else n.names[0].name).split(".")[0]
                for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    # torch, transformers and the standard library only: the folder works wherever those two are installed
    assert {"torch", "transformers"} <= imported
    assert imported - {"torch", "transformers"} <= set(sys.stdlib_module_names)
    defined = [n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
    assert len(defined) == len(set(defined))  # nothing twice
    made = {c.__name__ for pair in modeling_ladasearch.EXPORTED.values() for c in pair}  # by lada_classes
    own = [n for m in (layers, units, packed, modeling_ladasearch) for n, v in vars(m).items()
           if getattr(v, "__module__", None) == m.__name__ and isinstance(v, type | type(modeling_source))
           and n not in made]
    assert sorted(own) == sorted(defined)
    namespace: dict = {}
    exec(compile(text, "modeling_ladasearch.py", "exec"), namespace)
    # every family's pair exists at module level, where config.json's auto_map names it
    assert made <= set(namespace) and {"LadaRobertaForSequenceClassification", "LadaDebertaV2Config"} <= made
    config = namespace["LadaBertConfig"](hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=16, vocab_size=50,
                                         factorized={"bert.encoder.layer.0.intermediate.dense":
                                                     {"kind": "linear", "rank": 3}})
    model = namespace["LadaBertForSequenceClassification"](config)
    dense = model.get_submodule("bert.encoder.layer.0.intermediate.dense")
    assert type(dense).__name__ == "FactorizedLinear" and dense.A.shape == (16, 3)


@pytest.mark.parametrize("method, built, absent", [
    ("hybrid", "hybrid: SVD factorization, magnitude pruning and knowledge distillation from the teacher", None),
    ("svd", "svd: SVD factorization and knowledge distillation from the teacher", "pruning"),
    ("prune", "prune: magnitude pruning and knowledge distillation from the teacher", "SVD"),
])
def test_card_states_the_method_as_built(method, built, absent, tmp_path):
    folder = make_source(tmp_path / "student", method)
    record = export_model(folder, "hf", tmp_path / "hf", NO_MEASURE, log=lambda _: None)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert f"({built}) by ladasearch" in card
    if absent:
        assert absent not in card.split("by ladasearch")[0]
    saved = json.loads((tmp_path / "hf" / "ladasearch_export.json").read_text())
    assert saved["method"] == method and saved["method_as_built"] == built.split(": ", 1)[1]
    assert record.machine is None and saved["machine"] is None  # --no-measure: nothing timed, no machine


def test_card_and_record_say_which_rows_each_score_came_from(tmp_path):
    from ladasearch.serialize import saved_summary

    folder = make_source(tmp_path / "student", "hybrid")
    summary = saved_summary(folder).with_(score_split="val", score=0.8125, dev_score=0.6875,
                                          data={"dev_rows": 300, "val_rows": 1000, "max_dev": 300})
    save_compressed(ladasearch.load(folder), tmp_path / "scored", summary, tiny_tokenizer())
    settings = ExportSettings(timed=Timed(batches=(1,), seq_len=8, runs=4, threads=1))
    export_model(tmp_path / "scored", "hf", tmp_path / "hf", settings, log=lambda _: None)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert ("Dev accuracy of the compressed student: **0.6875** on 300 dev rows (a random subset of the dev split, "
            "`--max-dev`) (chosen on the validation split, where it scored 0.8125 on 1,000 val rows)") in card
    saved = json.loads((tmp_path / "hf" / "ladasearch_export.json").read_text())
    assert (saved["dev_score"], saved["dev_rows"], saved["score"], saved["score_split"], saved["score_rows"]) == \
        (0.6875, 300, 0.8125, "val", 1000)
    # latency with its spread, threads and the machine it was measured on
    timing = saved["latency"][0]
    assert timing["q1_ms"] <= timing["median_ms"] <= timing["q3_ms"] and timing["runs"] == 4
    assert saved["machine"]["cpu_count"] >= 1 and saved["machine"]["cpu"]
    assert "| batch | median ms | IQR ms | min ms |" in card and "1 CPU thread(s)" in card
    assert f"{saved['machine']['cpu_count']} logical CPUs" in card


def test_export_model_times_on_the_librarys_thread_count_by_default():
    from ladasearch.cli.deploy import export_model_command

    threads = next(p for p in export_model_command.params if p.name == "threads")
    assert threads.default == Timed().threads == ExportSettings().timed.threads == 1


@pytest.fixture(scope="module")
def taught_source(tmp_path_factory):
    """A saved tiny student whose record names its teacher folder (a plain transformers folder, as the teacher
    cache writes it) and the teacher's dev score."""
    from ladasearch.serialize import saved_summary

    root = tmp_path_factory.mktemp("taught")
    teacher_dir = root / "teacher"
    build_tiny(0).save_pretrained(teacher_dir)
    tiny_tokenizer().save_pretrained(teacher_dir)
    folder = make_source(root / "plain", "hybrid")
    summary = saved_summary(folder).with_(teacher=str(teacher_dir), teacher_score=0.75,
                                          teacher_metrics={"accuracy": 0.75}, data={"dev_rows": 40})
    save_compressed(ladasearch.load(folder), root / "student", summary, tiny_tokenizer())
    return root / "student", teacher_dir


@pytest.mark.parametrize("fmt", ["hf", "onnx", "onnx-int8"])
def test_export_model_teacher_writes_the_dense_baseline(taught_source, fmt, tmp_path, glue_dir):
    student, teacher_dir = taught_source
    out = tmp_path / fmt
    gate = ["--data-dir", str(glue_dir), "--max-dev", "40", "--max-drop", "100"] if fmt == "onnx-int8" else []
    run = CliRunner().invoke(main, ["export-model", str(student), "--teacher", "--format", fmt, "--out", str(out),
                                    "--no-measure", *gate])
    assert run.exit_code == 0, (run.output, run.exception)
    assert f"the teacher of {student}" in run.output
    saved = json.loads((out / "ladasearch_export.json").read_text())
    assert (saved["role"], saved["achieved_factor"], saved["dev_score"], saved["method_as_built"]) == \
        ("teacher", 1.0, 0.75, "none: the dense fine-tuned teacher")
    card = (out / "README.md").read_text()
    assert "the dense teacher (the baseline)" in card and "Dev accuracy of the dense teacher: **0.7500** on 40 dev rows." \
        in card and "LadaBERT" not in card.split("## Use")[0]
    inputs = tiny_tokenizer()(TEXTS, TEXTS[::-1], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = build_tiny(0)(**inputs).logits
    if fmt == "hf":
        from transformers import AutoModelForSequenceClassification

        got = _logits_of(AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True), inputs)
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(out / saved["model_file"]), providers=["CPUExecutionProvider"])
        feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
        got = torch.from_numpy(session.run(["logits"], feed)[0])
    assert torch.allclose(got, want, atol=1e-4 if fmt != "onnx-int8" else 0.5, rtol=0)  # int8: rounding only
    if fmt == "onnx-int8":
        assert saved["int8_gate"]["rows"] == 40
    # the teacher holds every parameter: its file is the larger one
    student_record = export_model(student, fmt, tmp_path / "student",
                                  ExportSettings(max_drop=100.0, dev=DevData(data_dir=str(glue_dir), max_dev=40),
                                                 measure=False), log=lambda _: None)
    assert student_record.file_bytes < saved["file_bytes"]


def test_export_model_teacher_needs_the_recorded_teacher(hybrid_source, tmp_path):
    run = CliRunner().invoke(main, ["export-model", str(hybrid_source), "--teacher", "--format", "hf", "--out",
                                    str(tmp_path / "hf"), "--no-measure"])
    assert run.exit_code == 2, (run.output, run.exception)
    assert "records its teacher at None, which is not a model folder here" in run.output
    assert not (tmp_path / "hf").exists()


def _logits_of(model, inputs):
    with torch.no_grad():
        return model.eval()(**inputs).logits
