"""The paper's Table 2, for our trials: which reduction factors reach each target, and how well.

One row per trial summary (``best_per_group`` keeps the best trial of each source and target):

    target      the target reduction factor
    achieved    teacher parameters / student parameters (the counting rule of compress.accounting)
    embedding   reduction factor of the word embedding (1 / embedding ratio)
    svd         matrix factorization: 1 / svd ratio
    weight      weight pruning: 1 / weight ratio
    encoder     svd x weight: the encoder matrices' overall factor
    rank_embedding, rank_encoder_min, rank_encoder_median   SVD ranks (empty where not factorized)
    params, teacher_params, score, teacher_score, score_vs_teacher (score / teacher score)

Formats: md, csv, json (raw numbers), latex (booktabs).
"""

from __future__ import annotations

import csv
import io
import json
import statistics

from ..errors import LadaError

FORMATS = ("md", "csv", "json", "latex")
COLUMNS = ("source", "task", "method", "target", "achieved", "embedding", "svd", "weight", "encoder",
           "rank_embedding", "rank_encoder_min", "rank_encoder_median", "params", "teacher_params", "metric",
           "score", "teacher_score", "score_vs_teacher")
HEADERS = {
    "source": "Source", "task": "Task", "method": "Method", "target": "Target", "achieved": "Overall",
    "embedding": "Embedding", "svd": "Matrix fact.", "weight": "Weight pruning", "encoder": "Encoder",
    "rank_embedding": "Emb. rank", "rank_encoder_min": "Enc. rank min", "rank_encoder_median": "Enc. rank median",
    "params": "Params", "teacher_params": "Teacher params", "metric": "Metric", "score": "Dev score",
    "teacher_score": "Teacher", "score_vs_teacher": "Score/teacher",
}
FACTORS = ("target", "achieved", "embedding", "svd", "weight", "encoder")


def is_embedding(name: str) -> bool:
    """Module names of a word embedding (BERT: ``bert.embeddings.word_embeddings``)."""
    last = name.rsplit(".", 1)[-1]
    return last in ("word_embeddings", "embed_tokens", "wte") or name.endswith("embeddings")


def _factor(summary: dict, key: str) -> float | None:
    factors = summary.get("reduction_factors") or {}
    if factors.get(key) is not None:
        return float(factors[key])
    ratio = (summary.get("ratios") or {}).get(key)
    return 1.0 / float(ratio) if ratio else None


def row_of(summary: dict) -> dict:
    """The table row of one trial summary."""
    if not summary.get("ratios") and not summary.get("reduction_factors"):
        raise LadaError("a summary without ratios (a trial stopped early?) has no table row")
    ranks = summary.get("ranks") or {}
    embedding_ranks = [r for n, r in ranks.items() if is_embedding(n) and r is not None]
    encoder_ranks = sorted(r for n, r in ranks.items() if not is_embedding(n) and r is not None)
    params = (summary.get("student_params") or {}).get("total")
    teacher_params = (summary.get("teacher_params") or {}).get("total")
    achieved = summary.get("achieved_factor")
    if achieved is None and params and teacher_params:
        achieved = teacher_params / params
    score, teacher_score = summary.get("score"), summary.get("teacher_score")
    source = summary.get("source") or {}
    return {
        "source": source.get("label"), "task": summary.get("task"),
        "method": (summary.get("ratios") or {}).get("method"),
        "target": float(summary["target"]) if summary.get("target") is not None else None,
        "achieved": float(achieved) if achieved is not None else None,
        "embedding": _factor(summary, "embedding"), "svd": _factor(summary, "svd"),
        "weight": _factor(summary, "weight"), "encoder": _factor(summary, "encoder"),
        "rank_embedding": embedding_ranks[0] if embedding_ranks else None,
        "rank_encoder_min": encoder_ranks[0] if encoder_ranks else None,
        "rank_encoder_median": statistics.median(encoder_ranks) if encoder_ranks else None,
        "params": params, "teacher_params": teacher_params, "metric": summary.get("main_metric"),
        "score": float(score) if score is not None else None,
        "teacher_score": float(teacher_score) if teacher_score is not None else None,
        "score_vs_teacher": float(score) / float(teacher_score) if score is not None and teacher_score else None,
    }


def best_per_group(summaries: list[dict]) -> list[dict]:
    """The best-scoring trial of each (source, task, target)."""
    best: dict[tuple, dict] = {}
    for s in summaries:
        if s.get("score") is None:
            continue
        key = ((s.get("source") or {}).get("label"), s.get("task"), s.get("target"))
        if key not in best or s["score"] > best[key]["score"]:
            best[key] = s
    return list(best.values())


def ratio_table(summaries: list[dict], best_only: bool = True) -> list[dict]:
    """Rows (see the module docstring), sorted by task, target, then score (best first)."""
    chosen = best_per_group(summaries) if best_only else [s for s in summaries if s.get("ratios")]
    rows = [row_of(s) for s in chosen]
    rows.sort(key=lambda r: (r["task"] or "", r["target"] or 0.0, -(r["score"] or 0.0), r["source"] or ""))
    return rows


def _cell(column: str, value, latex: bool = False) -> str:
    if value is None:
        return "" if not latex else "--"
    if column in FACTORS:
        return f"{value:.2f}x" if not latex else f"{value:.2f}$\\times$"
    if column in ("score", "teacher_score", "score_vs_teacher"):
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
                 "|" + "|".join("---:" if c not in ("source", "task", "method", "metric") else "---" for c in cols)
                 + "|"]
        lines += ["| " + " | ".join(_cell(c, r.get(c)) for c in cols) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    align = "".join("l" if c in ("source", "task", "method", "metric") else "r" for c in cols)
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(HEADERS[c] for c in cols) + " \\\\", "\\midrule"]
    lines += [" & ".join(_cell(c, r.get(c), latex=True) for c in cols) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
