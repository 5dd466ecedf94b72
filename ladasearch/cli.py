"""The `ladasearch` command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli_common import data_config, data_options, method_option, teacher_config, train_config, train_options, \
    user_errors


@click.group()
@click.version_option(package_name="ladasearch")
def main():
    """Find the best LadaBERT compression of a BERT classifier at a target size, and produce it."""


@main.command()
@data_options
@train_options
@method_option
@click.option("--target", required=True, help="Reduction factor, e.g. 10x.")
@click.option("--embedding-ratio", type=float, default=None, help="Share of the word embedding kept, in (0, 1].")
@click.option("--svd-ratio", type=float, default=None, help="Share of each encoder matrix kept as SVD factors.")
@click.option("--weight-ratio", type=float, default=None, help="Share of factor entries kept by pruning.")
@click.option("--paper-ratios", is_flag=True, help="Use the paper's Table 2 embedding and SVD ratios.")
@click.option("--out", default=None, help="Output folder (default compressed/<task>-<target>x).")
@user_errors
def compress(**kw):
    """Compress once with given ratios (two of them; the third is solved from the budget)."""
    from .api import compress_once

    out = Path(kw["out"] or f"compressed/{kw['task']}-{kw['target'].rstrip('xX')}x")
    summary = compress_once(
        data_cfg=data_config(kw), model=kw["model"], teacher_path=kw["teacher_path"],
        teacher_cfg=teacher_config(kw), train_cfg=train_config(kw), target=kw["target"], method=kw["method"],
        embedding=kw["embedding_ratio"], svd=kw["svd_ratio"], weight=kw["weight_ratio"],
        paper=kw["paper_ratios"], out=out, device=kw["device"], cache_dir=kw["cache_dir"], log=click.echo)
    click.echo(f"saved {out} (achieved {summary['achieved_factor']:.3f}x, dev {summary['main_metric']} "
               f"{summary['score']:.4f}, teacher {summary['teacher_score']:.4f})")
    click.echo(json.dumps({k: summary[k] for k in ("ratios", "achieved_factor", "score")}, default=float))


if __name__ == "__main__":
    main()
