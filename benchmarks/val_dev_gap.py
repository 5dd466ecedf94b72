"""The validation-dev gap on SST-2 under both validation rules, for the same models.

Every choice a search makes (ASHA, the sampler, the best trial, the final checkpoint) is made on validation;
the number a user reads is dev.  SST-2's train file holds the phrases of its sentences, dev only sentences, so
validation rows carved at random ("rows", the rule before) are mostly short fragments.  The "sentences" rule
(now SST-2's) carves whole sentences and drops their phrases from train.  This scores the teacher and every
student a frontier run shipped on both validation splits and on dev, and reports each gap.

    python benchmarks/val_dev_gap.py --work /tmp/frontier/sst2

With ``--teacher-steps N`` a teacher is also fine-tuned (or taken from the cache) under the "sentences" rule,
as `ladasearch run` with the same options makes it, and scored on its own validation rows and dev: the gap
without any overlap.

The frontier's models were trained under the "rows" rule, so some sentences of the "sentences" split, or their phrases,
were among their train rows; sentences whose own row was in the rows they trained on (the teacher's subset or
the final distillation's) are left out, and the phrase overlap that remains favours validation: the gap under
the new rule measured here is a lower bound of what a search run under it sees.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import replace
from pathlib import Path

import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", required=True, help="a frontier.py work folder (its parts' JSON files)")
    p.add_argument("--data-dir", default=os.environ.get("LADASEARCH_DATA_DIR") or C.DEFAULT_DATA)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="the seed both splits are carved with")
    p.add_argument("--teacher-steps", type=int, default=0, help="also fine-tune a teacher under the new rule")
    p.add_argument("--teacher-lr", type=float, default=1e-4)
    p.add_argument("--max-train", type=int, default=20000)
    p.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def splits(data_dir: str, seed: int, sizes: set[int]):
    """(rows-rule val, sentences-rule val, dev, the texts of every train row the models read) of SST-2: the
    teacher's subset and the final distillations' subsets, drawn from train as ``load_task`` draws them under
    the rows rule the models were trained with."""
    from ladasearch.data import load_task
    from ladasearch.data.tasks import get_task
    from ladasearch.data.validation import hold_out, normalized_words

    whole = load_task("sst2", data_dir)
    task = get_task("sst2")
    rows = hold_out(whole.train, replace(task, val_rule="rows"), 0.1, seed)
    seen = {normalized_words(t) for n in sizes for t in rows.train.subset(n, seed).text_a}
    sentences = hold_out(whole.train, task, 0.1, seed).val
    unseen = sentences.select([i for i, t in enumerate(sentences.text_a) if normalized_words(t) not in seen])
    return rows.val, unseen, whole.dev


def score(model, split, tokenizer, max_length: int) -> float:
    from ladasearch.data import get_task, main_score
    from ladasearch.train.evaluate import evaluate
    from ladasearch.train.features import encode

    task = get_task("sst2")
    return main_score(task, evaluate(model, encode(split, tokenizer, max_length, False), task, 64))


def measure(args) -> dict:
    import torch

    from ladasearch.models import load_classifier, load_tokenizer
    from ladasearch.serialize import load_compressed

    torch.set_num_threads(1)
    parts = [json.loads(p.read_text()) for p in sorted(Path(args.work).glob("*.json"))]
    parts = [p for p in parts if p.get("summary", {}).get("task") == "sst2"]
    teacher_dir = parts[0]["summary"]["teacher"]
    sizes = {p["summary"]["data"]["max_train"] for p in parts} | {(p["summary"].get("final") or {}).get("rows")
                                                                  for p in parts}
    rows_val, sentence_val, dev = splits(args.data_dir, args.seed, {n for n in sizes if n})
    tokenizer = load_tokenizer(teacher_dir)
    models = [("teacher (dense)", lambda: load_classifier(teacher_dir))]
    models += [(p["label"], lambda p=p: load_compressed(p["best_model"])) for p in parts]
    out = []
    for label, load in models:
        model = load()
        row = {"model": label, **{name: score(model, split, tokenizer, args.max_length)
                                  for name, split in (("val_rows", rows_val), ("val_sentences", sentence_val),
                                                      ("dev", dev))}}
        C.log(f"{label}: {row}")
        out.append(row)
    words = {name: statistics.mean(len(t.split()) for t in split.text_a)
             for name, split in (("val_rows", rows_val), ("val_sentences", sentence_val), ("dev", dev))}
    return {"rows": out, "sizes": {"val_rows": len(rows_val), "val_sentences": len(sentence_val), "dev": len(dev)},
            "mean_words": words, "seed": args.seed, "machine": C.machine(), "command": C.command_line()}


def fresh_teacher(args) -> dict:
    """A teacher fine-tuned under the sentences rule, scored on its own validation rows (never trained on, nor
    any phrase of them) and on dev; cached as `ladasearch run` with these options caches it."""
    from ladasearch.config import DataConfig, TeacherConfig
    from ladasearch.jobs.pipeline import prepare, prepare_teacher

    cfg = DataConfig(task="sst2", data_dir=args.data_dir, max_length=args.max_length, max_train=args.max_train,
                     seed=args.seed, val_size=0.1)
    prepared = prepare(cfg, "minilm")
    teacher = prepare_teacher(prepared, cfg, "minilm", TeacherConfig(steps=args.teacher_steps,
                                                                     learning_rate=args.teacher_lr, seed=args.seed),
                              "cpu", None, None, C.log)
    tokenizer = prepared.tokenizer
    return {"model": "teacher fine-tuned under the sentences rule", "path": str(teacher.path),
            "val_sentences": score(teacher.model, prepared.data.val, tokenizer, args.max_length),
            "dev": score(teacher.model, prepared.data.dev, tokenizer, args.max_length),
            "val_rows": None, "val_source": prepared.data.val_source}


def report(result: dict) -> str:
    rows, sizes, words = result["rows"], result["sizes"], result["mean_words"]
    def gap(r, key):
        return f"{100 * (r[key] - r['dev']):+.1f}" if r.get(key) is not None else ""

    table = [[r["model"], C.pct(r["val_rows"]), C.pct(r["val_sentences"]), C.pct(r["dev"]), gap(r, "val_rows"),
              gap(r, "val_sentences")] for r in rows + result.get("fresh", [])]
    gaps = {k: [100 * (r[k] - r["dev"]) for r in rows] for k in ("val_rows", "val_sentences")}
    mean = {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in gaps.items()}
    return (f"# Validation vs dev on SST-2, under both validation rules\n\n`{result['command']}`\n\n"
            f"Rows: validation by the old rule (random train rows) {sizes['val_rows']} rows, {words['val_rows']:.1f} "
            f"words on average; by the new rule (whole sentences) {sizes['val_sentences']} rows, "
            f"{words['val_sentences']:.1f} words; dev {sizes['dev']} rows, {words['dev']:.1f} words.\n\n"
            + C.md_table(["model", "val (rows rule)", "val (sentences rule)", "dev", "gap, rows rule",
                          "gap, sentences rule"], table)
            + f"\n\nGap (val - dev, points), mean ± std over the {len(rows)} models: rows rule "
              f"{mean['val_rows'][0]:+.1f} ± {mean['val_rows'][1]:.1f}, sentences rule "
              f"{mean['val_sentences'][0]:+.1f} ± {mean['val_sentences'][1]:.1f} (the frontier's models, "
              f"trained under the rows rule, so with phrase overlap under the sentences rule)."
            + "".join(f"\n\n{r['model']}: validation {r['val_source']}, {r['path']}." for r in result.get("fresh", []))
            + "\n")


def main(argv=None):
    args = parse_args(argv)
    result = measure(args)
    if args.teacher_steps:
        result["fresh"] = [fresh_teacher(args)]
    C.write_result("val_dev_gap-sst2", result, report(result), args.out_dir)
    return result


if __name__ == "__main__":
    main()
