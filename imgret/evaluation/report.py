"""An evaluation as a table for the terminal, and as evaluation.json + evaluation.png."""

from __future__ import annotations

from pathlib import Path

from ..core.atomic import atomic_path, write_json
from .evaluate import Evaluation

__all__ = ["format_table", "write_evaluation"]


def format_table(ev: Evaluation, per_class: bool = True) -> str:
    """The overall row and one row per class, as aligned text."""
    head = f"{'class':16s} " + " ".join(f"{m:>9s}" for m in ev.metrics)
    rows = [head, f"{'all':16s} " + " ".join(f"{ev.overall[m]:9.4f}" for m in ev.metrics)]
    if per_class:
        for label, vals in ev.per_class.items():
            rows.append(f"{label[:16]:16s} " + " ".join(f"{vals[m]:9.4f}" for m in ev.metrics))
    return "\n".join(rows)


def write_evaluation(ev: Evaluation, out_dir: str | Path) -> dict[str, Path]:
    """evaluation.json and evaluation.png (precision-recall curve, per-class bars) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "evaluation.json", "png": out / "evaluation.png"}
    write_json(files["json"], ev.to_dict())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    ax1.plot(ev.curve["recall"], ev.curve["precision"], marker=".")
    ax1.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
            title=f"{ev.model} ({ev.mode})")  # fmt: skip
    ax1.grid(alpha=0.3)
    main = ev.metrics[0]
    labels = list(ev.per_class)
    ax2.bar(range(len(labels)), [ev.per_class[c][main] for c in labels], color="tab:blue")
    ax2.axhline(ev.overall[main], color="k", lw=1, ls="--", label=f"all: {ev.overall[main]:.3f}")
    ax2.set_xticks(range(len(labels)))
    ax2.set_xticklabels(labels, rotation=90, fontsize=7 if len(labels) > 20 else 9)
    ax2.set(ylabel=main, ylim=(0, 1), title=f"{main} per class, {ev.benchmark}")
    ax2.legend()
    fig.tight_layout()
    with atomic_path(files["png"]) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return files
