"""Figures of finished runs (learning curves in the spirit of the paper's Fig. 1, memorisation under label noise as its
Fig. 4) and their best / final / diff table: every plot of the project is drawn here."""

import matplotlib

matplotlib.use("Agg")  # files only: no display on training boxes or CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

PANELS = (
    ("robust accuracy (%)", (("train_adv_acc", "train", "--"), ("test_pgd_acc", "test PGD", "-"))),
    ("clean accuracy (%)", (("train_clean_acc", "train", "--"), ("test_clean_acc", "test", "-"))),
    ("gradient norm ||grad_w L||", (("grad_norm", "", "-"),)),
    ("learning rate", (("lr", "", "-"),)),
)
MARKED_EPOCHS = 40  # a run this short gets a marker per epoch: a line alone draws nothing for a one-epoch run


def plot_per_epoch(ax, epochs, values, *args, **kwargs):
    """One per-epoch curve: markers on short runs, whole epochs on the x axis (missing values, null in the JSON
    files, left out)."""
    values = [float("nan") if v is None else v for v in values]
    marker = "o" if len(epochs) <= MARKED_EPOCHS else None
    ax.plot(epochs, values, *args, marker=marker, markersize=3, **kwargs)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: one tick, not 0.95 .. 1.05


def plot_curves(runs: dict, path, panels=PANELS):
    """One page of per-epoch curves; ``runs`` maps a run's name to its metrics history (list of rows); ``panels``:
    (title, ((metrics key, label, line style), ...)) per panel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, series) in zip(axes, panels):
        for i, (name, history) in enumerate(runs.items()):
            for key, label, style in series:
                rows = [row for row in history if row[key] is not None]  # test columns: evaluated epochs only
                plot_per_epoch(
                    ax,
                    [row["epoch"] for row in rows],
                    [row[key] for row in rows],
                    style,
                    color=f"C{i}",
                    label=" ".join(filter(None, (name, label))),
                )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_noise_memorization(results, path, wrong_rates=None):
    """The paper's Fig. 4 per noise rate: adversarial training accuracy on the untouched portion (labels kept) and
    the share of the corrupted portion whose corrupted label is predicted (memorised), per label strategy.
    ``wrong_rates``: noise rate -> realised wrong-label rate, shown in the titles."""
    wrong_rates = wrong_rates or {}
    rates = sorted({run.noise for run, _ in results if run.noise})
    fig, axes = plt.subplots(2, len(rates), figsize=(4.2 * len(rates), 6.6), squeeze=False)
    for col, rate in enumerate(rates):
        for i, (run, m) in enumerate((r, m) for r, m in results if r.noise == rate):
            epochs = [row["epoch"] for row in m.history]
            for ax, key in zip(axes[:, col], ("train_adv_acc_untouched", "train_adv_memorized_corrupted")):
                plot_per_epoch(ax, epochs, [row[key] for row in m.history], color=f"C{i}", label=run.row)
        realised = f" ({wrong_rates[rate]:.1%} wrong)" if rate in wrong_rates else ""
        axes[0, col].set_title(f"{rate:.0%} noise{realised}: untouched portion", fontsize=9)
        axes[1, col].set_title(f"{rate:.0%} noise{realised}: corrupted portion", fontsize=9)
    for row, ylabel in enumerate(("adversarial accuracy (%)", "predicts the corrupted label (%)")):
        for ax in axes[row]:
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_table(summaries: dict) -> str:
    """Markdown: the paper's Best / Final / Diff columns for clean and PGD accuracy, and the engine and precision
    each run trained with, one row per run."""
    lines = [
        "| run | clean best | clean final | clean diff | PGD best | PGD final | PGD diff | best epoch | trained with |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        c, p = s["test_clean_acc"], s["test_pgd_acc"]
        lines.append(
            f"| {name} | {c['best']:.1f} | {c['final']:.1f} | {c['diff']:+.1f} | "
            f"{p['best']:.1f} | {p['final']:.1f} | {p['diff']:+.1f} | {s['best_epoch']} | "
            f"{s['engine']} {s['precision']} |"
        )
    return "\n".join(lines)
