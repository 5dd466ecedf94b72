"""The paper's Table 2, for our trials: which reduction factors reach each target, and how well.

One row per trial (``best_per_group`` keeps the best trial of each source, task and target):

    factorizer, prune_score   the compression plug-ins (``compress.registry``) the trial used
    target      the target reduction factor
    achieved    teacher parameters / student parameters (the counting rule of compress.accounting)
    embedding   reduction factor of the word embedding (1 / embedding ratio)
    svd         matrix factorization: 1 / svd ratio
    weight      weight pruning: 1 / weight ratio
    encoder     svd x weight: the encoder matrices' overall factor
    structure   heads and FFN neurons: 1 / share kept (empty where none were removed, as in the paper; a
                table with no structured trial has no such column)
    rank_embedding, rank_encoder_min, rank_encoder_median   SVD ranks by the matrices' recorded group
                (empty where not factorized)
    params, teacher_params
    score       the summary's own score (the last round's, at the target size), on the split ``split`` names:
                val for a search trial or a `compress` run (every choice is made on it), dev for older runs
    dev_score   the dev score: measured only for a chosen model (a search's best trial, a `compress` output)
    teacher_score (on dev), score_vs_teacher (dev score / teacher score)
    outcome     how the trial ended (``summary.OUTCOMES``): completed, stopped_at_target, stopped_before_target,
                failed, interrupted

``best_per_group`` ranks by the score at the target size (val), never by the dev score.

Formats: md, csv, json (raw numbers), latex (booktabs).
"""

from __future__ import annotations

import csv
import io
import json
import statistics

from ..errors import LadaError
from .records import LoadedTrial

FORMATS = ("md", "csv", "json", "latex")
COLUMNS = ("source", "task", "method", "factorizer", "prune_score", "target", "achieved", "embedding", "svd",
           "weight", "encoder", "structure", "rank_embedding", "rank_encoder_min", "rank_encoder_median", "params",
           "teacher_params", "metric", "split", "score", "dev_score", "teacher_score", "score_vs_teacher", "outcome")
HEADERS = {
    "source": "Source", "task": "Task", "method": "Method", "factorizer": "Factorizer", "prune_score": "Prune score",
    "target": "Target", "achieved": "Overall",
    "embedding": "Embedding", "svd": "Matrix fact.", "weight": "Weight pruning", "encoder": "Encoder",
    "structure": "Structure",
    "rank_embedding": "Emb. rank", "rank_encoder_min": "Enc. rank min", "rank_encoder_median": "Enc. rank median",
    "params": "Params", "teacher_params": "Teacher params", "metric": "Metric", "split": "Scored on",
    "score": "Score", "dev_score": "Dev score", "teacher_score": "Teacher (dev)", "score_vs_teacher": "Dev/teacher",
    "outcome": "Outcome",
}
FACTORS = ("target", "achieved", "embedding", "svd", "weight", "encoder", "structure")
TEXT_COLUMNS = ("source", "task", "method", "factorizer", "prune_score", "metric", "split", "outcome")


def row_of(trial: LoadedTrial) -> dict:
    """The table row of one trial (columns: see the module docstring)."""
    summary = trial.summary
    embedding_ranks = [m.rank for m in summary.matrices if m.group == "embedding" and m.rank is not None]
    encoder_ranks = sorted(m.rank for m in summary.matrices if m.group == "encoder" and m.rank is not None)
    factors = summary.ratios.reduction_factors()
    score, teacher_score = summary.score, summary.teacher_score
    dev = summary.dev_score if summary.dev_score is not None else score if summary.score_split == "dev" else None
    return {
        "source": trial.label, "task": summary.task, "method": summary.ratios.method,
        "factorizer": summary.factorizer, "prune_score": summary.prune_score, "target": summary.target,
        "achieved": summary.achieved_factor, **{k: factors[k] for k in ("embedding", "svd", "weight", "encoder")},
        "structure": factors.get("structure"),
        "rank_embedding": embedding_ranks[0] if embedding_ranks else None,
        "rank_encoder_min": encoder_ranks[0] if encoder_ranks else None,
        "rank_encoder_median": statistics.median(encoder_ranks) if encoder_ranks else None,
        "params": summary.student_params.total, "teacher_params": summary.teacher_params.total,
        "metric": summary.main_metric, "split": summary.score_split, "score": score, "dev_score": dev,
        "teacher_score": teacher_score, "score_vs_teacher": dev / teacher_score if dev is not None and teacher_score
        else None, "outcome": summary.outcome,
    }


def _rank(trial: LoadedTrial) -> float | None:
    """The score at the target size (None: stopped before it); a summary without a target, its score."""
    summary = trial.summary
    return summary.score_at_target if summary.target is not None else summary.score


def best_per_group(trials: list[LoadedTrial]) -> list[LoadedTrial]:
    """The best trial of each (source, task, target) by its score at the target size (val; never dev)."""
    best: dict[tuple, LoadedTrial] = {}
    for t in trials:
        if _rank(t) is None:
            continue
        key = (t.label, t.summary.task, t.summary.target)
        if key not in best or _rank(t) > _rank(best[key]):
            best[key] = t
    return list(best.values())


def ratio_table(trials: list[LoadedTrial], best_only: bool = True) -> list[dict]:
    """Rows (see the module docstring), sorted by task, target, then score (best first)."""
    rows = [row_of(t) for t in (best_per_group(trials) if best_only else trials)]
    rows.sort(key=lambda r: (r["task"] or "", r["target"] or 0.0, -(r["score"] or 0.0), r["source"] or ""))
    return rows


def _cell(column: str, value, latex: bool = False) -> str:
    if value is None:
        return "" if not latex else "--"
    if column in FACTORS:
        return f"{value:.2f}x" if not latex else f"{value:.2f}$\\times$"
    if column in ("score", "dev_score", "teacher_score", "score_vs_teacher"):
        return f"{value:.4f}"
    if column in ("params", "teacher_params"):
        return f"{value:,}" if not latex else f"{value:,}".replace(",", "{,}")
    if column == "rank_encoder_median":
        return f"{value:g}"
    text = str(value)
    if latex:
        for char in "\\&%$#_{}":
            text = text.replace(char, "\\" + char)
    return text


def _columns(rows: list[dict], columns: tuple[str, ...] | None) -> tuple[str, ...]:
    """The requested columns, or every column that has a value in some row."""
    if columns is not None:
        unknown = [c for c in columns if c not in COLUMNS]
        if unknown:
            raise LadaError(f"unknown table column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
        return tuple(columns)
    return tuple(c for c in COLUMNS if any(r.get(c) is not None for r in rows))


def format_table(rows: list[dict], fmt: str = "md", columns: tuple[str, ...] | None = None) -> str:
    """Render rows of ``ratio_table`` as md, csv, json or latex."""
    if fmt not in FORMATS:
        raise LadaError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    cols = _columns(rows, columns)
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in cols} for r in rows], indent=2, default=float) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(cols), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: "" if r.get(c) is None else r[c] for c in cols})
        return out.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(HEADERS[c] for c in cols) + " |",
                 "|" + "|".join("---" if c in TEXT_COLUMNS else "---:" for c in cols)
                 + "|"]
        lines += ["| " + " | ".join(_cell(c, r.get(c)) for c in cols) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    align = "".join("l" if c in TEXT_COLUMNS else "r" for c in cols)
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(HEADERS[c] for c in cols) + " \\\\", "\\midrule"]
    lines += [" & ".join(_cell(c, r.get(c), latex=True) for c in cols) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
