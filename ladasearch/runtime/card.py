"""The model card (README.md) of an exported folder: what the model is, how it was compressed, what it scores,
what it costs, and how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..compress.methods import get_method
from ..summary import own_task
from .packing import Packed

if TYPE_CHECKING:  # export imports this module to write the card
    from .export import ExportRecord

_MIB = 1024 * 1024
TEACHER_METHOD = "dense"  # the ratios' method of the teacher's record (``export-model --teacher``): nothing done


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def student_dev_score(s) -> float | None:
    """The student's dev score: measured for the chosen model (``dev_score``), or its score when that was on dev."""
    return s.dev_score if s.dev_score is not None else s.score if s.score_split == "dev" else None


def method_as_built(s) -> str:
    """What was done to the model, from its record: the factorizer and pruning score it used, the structured share,
    and whether it was distilled (a student of ``svd`` was never pruned, one of ``prune`` never factorized)."""
    if s.ratios.method == TEACHER_METHOD:
        return "none: the dense fine-tuned teacher"
    method = get_method(s.ratios.method)
    parts = []
    if method.factorizes:
        parts.append("SVD factorization" + (f" ({s.factorizer} factorizer)" if s.factorizer != "svd" else ""))
    if method.prunes:
        parts.append(f"{s.prune_score} pruning")
    if s.ratios.structure < 1:
        parts.append(f"removal of {1 - s.ratios.structure:.0%} of every layer's attention heads and FFN neurons")
    parts.append("knowledge distillation from the teacher" if s.distill else "training on the task's labels")
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def rows_of(s, split: str) -> str:
    """`` on N dev rows`` (with how they were drawn) where the record knows the count, else empty."""
    data = s.data or {}
    rows = data.get(f"{split}_rows")
    if not rows:
        return ""
    subset = split == "dev" and data.get("max_dev")
    return f" on {rows:,} {split} rows" + (" (a random subset of the dev split, `--max-dev`)" if subset else "")


def _dataset(s) -> str:
    """The card's dataset entry: the GLUE task, a hub dataset (by its id, config and dev split), or a task given by
    files or a local dataset folder (named, typed by no hub dataset)."""
    data = s.data or {}
    how = own_task(data)
    if how is None:
        return f"{{name: GLUE {s.task}, type: glue}}"
    if how == "dataset" and not data.get("dataset_folder"):
        config = f", config: {data['dataset_config']}" if data.get("dataset_config") else ""
        return f"{{name: {s.task}, type: {data['dataset']}{config}, split: {data.get('dev_split')}}}"
    return f"{{name: {s.task}, type: custom}}"


def _trained_on(s) -> str:
    data = s.data or {}
    how = own_task(data)
    if how == "files":
        return f"the task {s.task} given by files"
    if how == "dataset":
        config = f" (config {data['dataset_config']})" if data.get("dataset_config") else ""
        where = f"the dataset folder {data['dataset_folder']}" if data.get("dataset_folder") else \
            f"the Hugging Face dataset {data['dataset']}"
        return f"the task {s.task} from {where}{config}, split {data.get('train_split')}"
    return f"GLUE {s.task}"


def _front_matter(record: ExportRecord) -> str:
    s = record.summary
    library = "transformers" if record.written.runtime == "torch" else "onnx"
    return "\n".join(["---", f"library_name: {library}", "pipeline_tag: text-classification",
                      "tags: [ladasearch, " + ("baseline" if record.role == "teacher" else "ladabert, compressed")
                      + (", onnx" if library == "onnx" else "") + "]",
                      "model-index:", f"- name: {_index_name(record)}", "  results:",
                      "  - task: {type: text-classification}", f"    dataset: {_dataset(s)}",
                      f"    metrics: [{{type: {s.main_metric}, value: {_score(student_dev_score(s))}}}]", "---", ""])


def _index_name(record: ExportRecord) -> str:
    s = record.summary
    return f"{s.task}-teacher" if record.role == "teacher" else f"{s.task}-{s.achieved_factor:.1f}x-ladabert"


def _ratio_table(record: ExportRecord) -> list[str]:
    r = record.summary.ratios
    factors = r.reduction_factors()
    return ["| | embedding | SVD | weight (pruning) | encoder |", "| --- | --- | --- | --- | --- |",
            f"| retention ratio | {r.embedding:.4f} | {r.svd:.4f} | {r.weight:.4f} | {r.encoder:.4f} |",
            f"| reduction factor | {factors['embedding']:.2f}x | {factors['svd']:.2f}x | {factors['weight']:.2f}x "
            f"| {factors['encoder']:.2f}x |"]


def _size_lines(record: ExportRecord) -> list[str]:
    s = record.summary
    lines = [f"- Stored non-zero parameters: {s.student_params.total:,} (teacher {s.teacher_params.total:,}): "
             f"**{s.achieved_factor:.2f}x** smaller" + (f", target {s.target:g}x" if s.target else "") + ".",
             f"- `{record.written.model_file}`: {record.file_bytes / _MIB:.2f} MiB on disk"
             + (f" (teacher's weights file {record.teacher_file_bytes / _MIB:.2f} MiB, "
                f"{record.teacher_file_bytes / record.file_bytes:.2f}x larger)" if record.teacher_file_bytes else "")
             + ". " + _packed_line(record.written.packed)]
    return lines


def _packed_line(packed: Packed | None) -> str:
    if packed is None or not packed.tensors:
        return "No matrix has enough zeros for packing to make it smaller: every entry is stored."
    return (f"{packed.tensors} pruned matrices are stored packed, their non-zero entries and one bit per entry "
            f"({packed.dense_bytes / _MIB:.2f} MiB dense, {packed.packed_bytes / _MIB:.2f} MiB packed); loading "
            f"unpacks them.")


def _cost_lines(record: ExportRecord) -> list[str]:
    if not record.latency and record.memory is None:
        return ["Not measured (exported with `--no-measure`)."]
    lines = []
    if record.latency:
        first, m = record.latency[0], record.machine or {}
        where = f" on {m['cpu']} ({m['cpu_count']} logical CPUs, load {m['loadavg'][0]:.2f})" if m else ""
        lines += [f"Latency in {first.runtime}, {first.threads} CPU thread(s), sequence length {first.seq_len}, "
                  f"{first.timing.runs} timed runs{where}: the median, the interquartile range (how much the runs "
                  f"spread) and the fastest run:", "", "| batch | median ms | IQR ms | min ms |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {x.batch} | {x.timing.median_ms:.2f} | {_iqr(x.timing)} | {x.timing.min_ms:.2f} |"
                  for x in record.latency]
        lines.append("")
    if record.memory is not None:
        m = record.memory
        lines.append(f"Deployment memory: a fresh {m.runtime} process that loads this folder and classifies one "
                     f"batch ({m.batch} x {m.seq_len} tokens) peaks at **{m.peak_bytes / _MIB:.1f} MiB** resident "
                     f"({m.baseline_bytes / _MIB:.1f} MiB of it is the runtime after its imports, "
                     f"{m.model_bytes / _MIB:.1f} MiB loading the model code, weights and tokenizer and running the "
                     f"batch).")
    return lines


def _iqr(timing) -> str:
    return "n/a" if timing.q1_ms is None else f"{timing.q1_ms:.2f}-{timing.q3_ms:.2f}"


def _score_lines(record: ExportRecord) -> list[str]:
    s, w = record.summary, record.written
    chosen_on = f" (chosen on the validation split, where it scored {_score(s.score)}{rows_of(s, 'val')})" \
        if s.score_split == "val" else ""
    who = "the dense teacher" if record.role == "teacher" else "the compressed student"
    lines = [f"- Dev {s.main_metric} of {who}: **{_score(student_dev_score(s))}**"
             f"{rows_of(s, 'dev')}{chosen_on}"
             + ("." if record.role == "teacher" else f"; teacher: {_score(s.teacher_score)}.")]
    if w.onnx_check is not None:
        lines.append(f"- The fp32 ONNX graph matches the PyTorch model to {w.onnx_check.worst:.1e} (max |logit "
                     f"difference|, on sentence pairs and on single sentences).")
    if w.quantized_check is not None:
        lines.append(f"- The int8 graph's logits differ from the PyTorch model's by up to "
                     f"{w.quantized_check.worst:.2g} (int8 rounding).")
    if w.gate is not None:
        g = w.gate
        lines.append(f"- int8 accuracy gate: dev {g.metric} {g.before:.4f} (fp32 ONNX) -> {g.after:.4f} (int8) on "
                     f"{g.rows} rows of {g.data}: a drop of **{g.drop:.2f} points** (allowed: {g.max_drop:g}).")
    return lines


def _usage(record: ExportRecord) -> list[str]:
    if record.written.runtime == "torch":
        return ["```python", "from transformers import AutoModelForSequenceClassification, pipeline", "",
                'model = AutoModelForSequenceClassification.from_pretrained("PATH", trust_remote_code=True)',
                'classify = pipeline("text-classification", model="PATH", trust_remote_code=True)',
                'classify("a gripping, beautifully acted film")', "```", "",
                "`trust_remote_code=True` runs `modeling_ladasearch.py` from this folder (it imports only torch and "
                f"transformers; read it first). Its model type `{record.model_type}` is not built into transformers, "
                "so loading without the flag raises an error instead of building a model with random weights."]
    opset = record.written.opset
    return ["```python", "import numpy as np, onnxruntime as ort", "from transformers import AutoTokenizer", "",
            'tokenizer = AutoTokenizer.from_pretrained("PATH")',
            f'session = ort.InferenceSession("PATH/{record.written.model_file}")',
            'enc = tokenizer(["a gripping, beautifully acted film"], return_tensors="np")',
            'feed = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}',
            'logits = session.run(["logits"], feed)[0]', "```", "",
            f"ONNX opset {opset}. Inputs {_names(record.inputs)} (int64, dynamic batch and sequence axes), all "
            "listed by `session.get_inputs()`"
            + (": feed the tokenizer's `token_type_ids` (for a sentence pair its second segment is 1; zeros for "
               "single sentences)" if "token_type_ids" in record.inputs else "")
            + ". Output `logits` (batch x labels). Label names are in `config.json` (`id2label`)."]


def _names(names: tuple[str, ...]) -> str:
    quoted = [f"`{n}`" for n in names]
    return ", ".join(quoted[:-1]) + f" and {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _teacher_card(record: ExportRecord, labels: str) -> list[str]:
    s = record.summary
    return [_front_matter(record), f"# {s.task} classifier: the dense teacher (the baseline)", "",
            f"The {s.model or 'BERT'} classifier fine-tuned on {_trained_on(s)}, not compressed: the model the "
            f"students of {record.origin} were compressed from, exported as `{record.format}` so that they can be "
            f"compared with it in the same runtime. Labels: {labels}.", "",
            "## Size", "", f"- Parameters: {s.teacher_params.total:,} (dense).",
            f"- `{record.written.model_file}`: {record.file_bytes / _MIB:.2f} MiB on disk.", "",
            "## Scores", "", *_score_lines(record), "", "## Cost", "", *_cost_lines(record), "",
            "## Use", "", *_usage(record), ""]


def render_card(record: ExportRecord) -> str:
    s = record.summary
    labels = ", ".join(f"{i}: {n}" for i, n in enumerate(record.labels))
    if record.role == "teacher":
        return "\n".join(_teacher_card(record, labels))
    parts = [_front_matter(record), f"# {s.task} classifier compressed {s.achieved_factor:.2f}x with LadaBERT", "",
             f"A {s.model or 'BERT'} classifier fine-tuned on {_trained_on(s)} and compressed with LadaBERT "
             f"({s.ratios.method}: {method_as_built(s)}) by ladasearch. "
             f"Exported as `{record.format}` from {record.origin}. Labels: {labels}.", "",
             "## Compression", "", *_ratio_table(record), "", *_size_lines(record), "",
             "## Scores", "", *_score_lines(record), "", "## Cost", "", *_cost_lines(record), "",
             "## Use", "", *_usage(record), ""]
    return "\n".join(parts)


def write_card(record: ExportRecord, folder: str | Path) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render_card(record))
    return path
