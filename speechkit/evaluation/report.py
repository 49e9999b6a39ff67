"""Suite report: a markdown table with the paper's numbers beside ours, and PNG plots when matplotlib is
installed (``pip install 'speechkit[plot]'``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from speechkit.evaluation.runner import SetRun

log = logging.getLogger(__name__)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(suite: str, runs: list[SetRun], model: str) -> str:
    """One row per set: metric, our score, the paper's Phi-4-MM number, n, RTFx; then the means."""
    lines = [f"# {suite}: {model}", "",
             "| set | task | metric | ours | paper (Phi-4-MM) | n | RTFx | normalizer / signature |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in runs:
        s = run.score
        if s is None:
            lines.append(f"| {run.spec.name} | {run.spec.task} | – | – | {_fmt(run.spec.paper)} | 0 | – | |")
            continue
        d = s.to_dict()
        how = d.get("normalizer") or d.get("signature", "")
        cells = [run.spec.name, run.spec.task, s.metric, _fmt(s.score), _fmt(run.spec.paper), str(s.n),
                 _fmt(s.rtfx, 1), how]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    scored = [r for r in runs if r.score is not None]
    paired = [r for r in scored if r.spec.paper is not None]
    if paired:
        ours = sum(r.score.score for r in paired) / len(paired)
        paper = sum(r.spec.paper for r in paired) / len(paired)
        label = f"**mean of {len(paired)} sets with a paper number**"
        lines.append(f"| {label} | | | **{ours:.2f}** | **{paper:.2f}** | | | |")
    lines += ["", "Scores are percentages (WER/CER lower is better, BLEU higher is better). Paper numbers: "
              "arXiv 2503.01743 Tables 4-5 (internal evaluation there; see speechkit.scoring.protocols)."]
    return "\n".join(lines) + "\n"


def plot(runs: list[SetRun], out_dir: Path, title: str) -> list[Path]:
    """``scores.png`` (ours vs paper per set) and ``rtfx.png``; nothing when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: report has no plots (pip install 'speechkit[plot]')")
        return []
    scored = [r for r in runs if r.score is not None]
    names = [r.spec.name for r in scored]
    x = range(len(scored))
    written = []
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(scored)), 4))
    ax.bar([i - 0.2 for i in x], [r.score.score for r in scored], 0.4, label="ours")
    ax.bar([i + 0.2 for i in x], [r.spec.paper or 0 for r in scored], 0.4, label="paper (Phi-4-MM)")
    ax.set_xticks(list(x), names, rotation=60, ha="right")
    ax.set_ylabel(" / ".join(sorted({r.score.metric.upper() for r in scored})) + " (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    written.append(out_dir / "scores.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    timed = [r for r in scored if r.score.rtfx is not None]
    if timed:
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(timed)), 4))
        ax.bar([r.spec.name for r in timed], [r.score.rtfx for r in timed])
        ax.set_ylabel("RTFx (audio s / compute s)")
        ax.tick_params(axis="x", rotation=60)
        fig.tight_layout()
        written.append(out_dir / "rtfx.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def write_report(suite: str, runs: list[SetRun], out_dir: Path, model: str) -> Path:
    """Write ``report.md``, ``scores.json`` and the plots into ``out_dir``; returns the report path."""
    (out_dir / "scores.json").write_text(json.dumps(
        {r.spec.name: {"paper": r.spec.paper, **(r.score.to_dict() if r.score else {})} for r in runs},
        ensure_ascii=False, indent=1) + "\n", "utf-8")  # fmt: skip
    text = markdown_table(suite, runs, model)
    images = plot(runs, out_dir, f"{suite}: {model}")
    text += "".join(f"\n![{p.stem}]({p.name})\n" for p in images)
    report = out_dir / "report.md"
    report.write_text(text, "utf-8")
    return report
