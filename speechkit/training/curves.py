"""Training curves as PNG from a run's history (matplotlib, an optional dependency, imported when called)."""

from __future__ import annotations

from pathlib import Path

from speechkit.errors import ConfigError


def plot_history(history: list[dict], out: str | Path) -> Path:
    """Loss per global step (one colour per stage) and dev scores per evaluation, side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting training curves needs matplotlib: pip install matplotlib") from None
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(12, 4.5))
    stages = list(dict.fromkeys(e["stage"] for e in history if "loss" in e))
    for stage in stages:
        points = [(e["global_step"], e["loss"]) for e in history if e.get("stage") == stage and "loss" in e]
        ax_loss.plot(*zip(*points, strict=True), label=stage)
    ax_loss.set(xlabel="step", ylabel="training loss (nats/token)", yscale="log", title="training loss")
    ax_loss.legend()
    series: dict[str, list[tuple[int, float]]] = {}
    for entry in history:
        for task, scores in entry.get("dev", {}).items():
            for key, value in scores.items():
                series.setdefault(f"{task} {key}", []).append((entry["global_step"], value))
    for name, points in sorted(series.items()):
        ax_dev.plot(*zip(*points, strict=True), marker="o", label=name)
    ax_dev.set(xlabel="step", ylabel="WER/CER % (asr), BLEU (ast)", title="dev scores")
    if series:
        ax_dev.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
