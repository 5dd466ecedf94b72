"""Ratio tables, plots, summary sources (folders and an MLflow store) and the export CLI commands."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest
from click.testing import CliRunner

from ladasearch.errors import LadaError
from ladasearch.report.plots import SEARCH_PLOTS
from ladasearch.report.records import LoadedTrial, Source
from ladasearch.report.sources import load_summaries
from ladasearch.report.table import format_table, ratio_table
from ladasearch.summary import MatrixRecord, ParamRecord, RatioRecord, RoundRecord, TrialSummary

RANK_NAMES = ["bert.embeddings.word_embeddings"] + [
    f"bert.encoder.layer.{i}.{part}" for i in range(2)
    for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense")] + ["bert.pooler.dense"]


def fake_summary(target: float, embedding: float, svd: float, weight: float, score: float, rounds: int = 3,
                 teacher_params: int = 1_000_000, ranks=(40, 10, 20), status: str = "completed") -> dict:
    """The summary.json of a trial: a TrialSummary with 1 embedding and 13 encoder matrices, as JSON."""
    student = round(teacher_params / (target * 1.01))
    student_params = ParamRecord(embedding=student // 3, encoder=student - student // 3 - 50_000, dense=50_000)
    emb_rank, low, high = ranks
    encoder_ranks = [low + (i * (high - low)) // 12 for i in range(13)]
    matrices = (MatrixRecord(RANK_NAMES[0], "embedding", (1000, 64), emb_rank),) + tuple(
        MatrixRecord(name, "encoder", (64, 64), rank) for name, rank in zip(RANK_NAMES[1:], encoder_ranks))
    history = tuple(RoundRecord(round=r, final=r == rounds + 1, score=score - 0.05 * (rounds + 1 - r),
                                metrics={"accuracy": score - 0.05 * (rounds + 1 - r)}, params=student_params,
                                achieved_factor=target ** (r / rounds) if r <= rounds else target * 1.01,
                                losses={"loss": 1.0 / r}, seconds=1.0) for r in range(1, rounds + 2))
    return TrialSummary(
        task="sst2", main_metric="accuracy", ratios=RatioRecord("hybrid", embedding, svd, weight),
        achieved_factor=target * 1.01, teacher_params=ParamRecord(400_000, 550_000, 50_000),
        student_params=student_params, matrices=matrices, score=score, metrics={"accuracy": score}, history=history,
        status=status, target=target, teacher_score=0.9).to_json()


SUMMARIES = [fake_summary(5.0, 0.25, 0.5, 0.4, 0.85), fake_summary(5.0, 0.2, 0.6, 0.35, 0.83),
             fake_summary(10.0, 0.1, 0.4, 0.25, 0.8, ranks=(16, 6, 12))]
TRIALS = [LoadedTrial(TrialSummary.from_json(s)) for s in SUMMARIES]


def test_table_numbers_in_every_format():
    rows = ratio_table(TRIALS)
    assert [(r["target"], r["score"]) for r in rows] == [(5.0, 0.85), (10.0, 0.8)]  # best per target
    assert len(ratio_table(TRIALS, best_only=False)) == 3
    best5 = rows[0]
    assert best5["embedding"] == pytest.approx(1 / 0.25) and best5["svd"] == pytest.approx(2.0)
    assert best5["weight"] == pytest.approx(2.5) and best5["encoder"] == pytest.approx(5.0)
    assert best5["achieved"] == pytest.approx(5.05) and best5["score_vs_teacher"] == pytest.approx(0.85 / 0.9)
    assert (best5["rank_embedding"], best5["rank_encoder_min"], best5["rank_encoder_median"]) == (40, 10, 15)

    parsed = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    assert float(parsed[1]["embedding"]) == pytest.approx(10.0)
    assert float(parsed[1]["svd"]) == pytest.approx(2.5) and float(parsed[1]["weight"]) == pytest.approx(4.0)
    assert int(parsed[1]["rank_embedding"]) == 16 and float(parsed[0]["target"]) == 5.0

    data = json.loads(format_table(rows, "json"))
    assert data[1]["weight"] == pytest.approx(4.0) and data[1]["params"] == SUMMARIES[2]["student_params"]["total"]

    md = format_table(rows, "md")
    lines = md.strip().splitlines()
    assert len(lines) == 4 and "| Target | Overall | Embedding | Matrix fact. | Weight pruning |" in lines[0]
    assert "| 5.00x | 5.05x | 4.00x | 2.00x | 2.50x | 5.00x |" in lines[2]
    assert "0.8500" in lines[2] and "10.00x" in lines[3]

    tex = format_table(rows, "latex")
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and tex.count("\\\\") == 3
    assert "4.00$\\times$" in tex and "\\bottomrule" in tex
    with pytest.raises(LadaError):
        format_table(rows, "xlsx")


def test_plots_write_pngs(tmp_path):
    from ladasearch.report.pareto import pareto_front
    from ladasearch.report.plots import learning_curves, pareto_plot, ratio_split

    assert pareto_front([(5.0, 0.8), (5.0, 0.85), (10.0, 0.8), (7.0, 0.7)]) == [1, 2]
    for fn, name in ((pareto_plot, "pareto.png"), (learning_curves, "curves.png"), (ratio_split, "split.png")):
        path = fn(TRIALS, tmp_path / "plots" / name)
        assert path == tmp_path / "plots" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(LadaError):
        pareto_plot([], tmp_path / "empty.png")


def write_folder(folder, summary):
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_summaries_from_folders(tmp_path):
    one = write_folder(tmp_path / "runs" / "sst2-5x", SUMMARIES[0])
    write_folder(tmp_path / "runs" / "sst2-10x", SUMMARIES[2])
    (tmp_path / "runs" / "notes").mkdir()
    got = load_summaries(one)
    assert len(got) == 1 and got[0].summary.score == 0.85
    assert got[0].source == Source("folder", "sst2-5x", path=str(one))
    assert sorted(s.summary.target for s in load_summaries(tmp_path / "runs")) == [5.0, 10.0]
    with pytest.raises(LadaError, match="no summary.json"):
        load_summaries(tmp_path / "runs" / "notes")
    with pytest.raises(LadaError, match="neither"):
        load_summaries(str(tmp_path / "missing"))


@pytest.mark.parametrize("key, value, message", [
    ("achieved_factor", "five", r"summary.json.achieved_factor must be float, got 'five'"),
    ("score", [0.8], r"summary.json.score must be float"),
    ("ratios", {"method": "hybrid", "embedding": 2.0, "svd": 0.5, "weight": 0.5}, r"ratios.embedding must be"),
    ("matrices", [{"name": "m", "group": "decoder", "shape": [4, 4]}], r"group 'decoder' is not one of"),
])
def test_hand_edited_summary_is_one_error_line(tmp_path, key, value, message):
    folder = write_folder(tmp_path / "edited", {**SUMMARIES[0], key: value})
    with pytest.raises(LadaError, match=message):
        load_summaries(folder)
    result = CliRunner().invoke(cli(), ["export", str(folder)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1


@pytest.mark.parametrize("points, maximize, front", [
    ([(5.0, 0.8), (5.0, 0.85), (10.0, 0.8), (7.0, 0.7)], (True, True), [1, 2]),
    ([(3.0, 0.8), (1.0, 0.7), (2.0, 0.9), (4.0, 0.9)], (False, True), [1, 2]),  # latency (lower), score
    ([(1.0, 0.5), (1.0, 0.5)], (True, True), [0, 1]),  # equal points do not dominate each other
    ([], (True, True), []),
])
def test_pareto_front(points, maximize, front):
    from ladasearch.report.pareto import pareto_front

    assert pareto_front(points, maximize) == front


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """A SQLite MLflow store with one search (parent + 2 completed trials, 1 stopped at the target, 1 stopped before
    it, 1 running)."""
    pytest.importorskip("mlflow")
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("ladasearch", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="sst2-search", tags={
        "ladasearch.role": "search", "ladasearch.search": "sst2-search", "ladasearch.task": "sst2",
        "ladasearch.target": "5.0"}).info.run_id
    at_target = fake_summary(5.0, 0.25, 0.5, 0.4, 0.5, rounds=1, status="stopped_early")  # its round 1 is at 5x
    before = fake_summary(5.0, 0.3, 0.5, 0.4, 0.45, rounds=3, status="stopped_early")
    before["history"] = before["history"][:1]  # stopped at 5 ** (1/3) = 1.7x
    # (summary, how the run ended): as MlflowTrials ends them; the last one is still running
    trials = [(SUMMARIES[0], "FINISHED"), (SUMMARIES[1], "FINISHED"), (at_target, "FINISHED"), (before, "KILLED"),
              (SUMMARIES[1], None)]
    for i, (summary, status) in enumerate(trials):
        run = client.create_run(exp, run_name=f"trial-{i}", tags={
            "ladasearch.role": "trial", "mlflow.parentRunId": parent, "ladasearch.trial_id": f"t{i}"}).info.run_id
        client.log_text(run, json.dumps(summary), "summary.json")
        if status:
            client.set_terminated(run, status)
    other = client.create_run(exp, tags={"ladasearch.role": "search", "ladasearch.search": "other"}).info.run_id
    return uri, parent, other


def test_summaries_from_mlflow(mlflow_store, monkeypatch):
    uri, parent, other = mlflow_store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    by_name = load_summaries("sst2-search", uri)
    # completed trials and the one the scheduler stopped after it reached the target: each has a score at 5x
    assert sorted(s.summary.score for s in by_name) == [0.5, 0.83, 0.85]
    assert sorted(s.summary.outcome for s in by_name) == ["completed", "completed", "stopped_at_target"]
    assert all(s.source.parent_run_id == parent and s.source.label == "sst2-search" for s in by_name)
    by_id = load_summaries(parent, uri)
    assert sorted(s.source.run_id for s in by_id) == sorted(s.source.run_id for s in by_name)
    every = load_summaries("sst2-search", uri, include_incomplete=True)  # + the one stopped before its target
    assert sorted(s.summary.outcome for s in every) == ["completed", "completed", "stopped_at_target",
                                                        "stopped_before_target"]
    assert load_summaries("other", uri) == []
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the environment variable is used without --tracking-uri
    assert len(load_summaries("sst2-search")) == 3
    with pytest.raises(LadaError, match="neither a folder"):
        load_summaries("no-such-search", uri)
    with pytest.raises(LadaError, match="not a search"):
        load_summaries(by_name[0].source.run_id, uri)
    with pytest.raises(LadaError, match="no MLflow store"):
        load_summaries("sst2-search", "sqlite:////nonexistent/dir/mlflow.db")


def cli():
    from ladasearch.cli.export import register

    @click.group()
    def main():
        pass

    return register(main)


def test_cli_export_and_report(mlflow_store, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri, parent, _ = mlflow_store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = write_folder(tmp_path / "sst2-10x", SUMMARIES[2])
    runner = CliRunner()
    result = runner.invoke(cli(), ["export", "sst2-search", str(folder), "--format", "csv", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [(r["source"], float(r["target"])) for r in rows] == [("sst2-search", 5.0), ("sst2-10x", 10.0)]

    out = tmp_path / "table.tex"
    result = runner.invoke(cli(), ["export", str(folder), "--format", "latex", "--out", str(out)])
    assert result.exit_code == 0 and out.read_text().startswith("\\begin{tabular}")

    result = runner.invoke(cli(), ["report", "sst2-search", str(folder), "--out", str(tmp_path / "report"),
                                   "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    # the files a search logs, under the same names (a report logged to the search replaces them, never adds a
    # second, different score-vs-compression plot)
    for name in ("score_vs_compression.png", "learning_curves.png", "ratio_split.png", "table.md", "table.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    logged = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(parent, "plots")}
    assert logged == {f"plots/{name}" for name in SEARCH_PLOTS}

    result = runner.invoke(cli(), ["export", "no-such-search", "--tracking-uri", uri])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    result = runner.invoke(cli(), ["measure", str(tmp_path / "nope"), str(folder)])
    assert result.exit_code == 2 and "is not a folder" in result.output
