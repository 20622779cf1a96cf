"""Renders the spike test's CSV as one PNG of three panels sharing the time axis."""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"plot: {path} has no rows")
    return rows


def col(rows, name, cast=float):
    out = []
    for r in rows:
        v = r.get(name, "")
        out.append(cast(v) if v != "" else None)
    return out


def suspended_spans(rows):
    """(start, end, reason) of each run of suspended samples."""
    spans, start, reason = [], None, ""
    for r in rows:
        t, on = float(r["t_seconds"]), r["suspended"] == "1"
        if on and start is None:
            start, reason = t, r["reason"]
        elif not on and start is not None:
            spans.append((start, t, reason))
            start = None
    if start is not None:
        spans.append((start, float(rows[-1]["t_seconds"]), reason))
    return spans


def main(path, out):
    rows = read(path)
    t = col(rows, "t_seconds")
    fig, (traffic, replicas, cpu) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    colors = {"Overload": "#f4b183", "Manual": "#c9c9c9"}
    for ax in (traffic, replicas, cpu):
        for start, end, reason in suspended_spans(rows):
            ax.axvspan(start, end, color=colors.get(reason, "#dddddd"), alpha=0.5, lw=0)
        ax.grid(alpha=0.3)

    traffic.plot(t, col(rows, "target_rate"), color="#999999", ls="--", label="page requests sent/s")
    traffic.plot(t, col(rows, "page_answers_per_second"), color="#1f77b4", label="pages answered/s")
    traffic.set_ylabel("pages per second")
    p99 = traffic.twinx()
    p99.plot(t, col(rows, "page_p99_ms"), color="#d62728", lw=1, label="page p99 (ms)")
    p99.set_ylabel("p99 ms", color="#d62728")
    lines = traffic.get_legend_handles_labels()
    more = p99.get_legend_handles_labels()
    traffic.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", fontsize=8)
    traffic.set_title("io360 on a real node: a page spike, autoscaled on live metrics")

    for tier, color in (("frontend", "#1f77b4"), ("longpoll", "#2ca02c"), ("logic", "#9467bd")):
        replicas.step(t, col(rows, f"{tier}_replicas", int), where="post", color=color, label=f"{tier} ready")
    replicas.set_ylabel("replicas")
    replicas.set_ylim(-0.2, max(col(rows, "frontend_replicas", int)) + 0.8)
    replicas.legend(loc="upper right", fontsize=8)

    cpu.plot(t, col(rows, "frontend_cpu_utilization"), color="#ff7f0e", label="frontend CPU, % of request (HPA)")
    cpu.set_ylabel("% of request")
    cpu.set_xlabel("seconds (shaded: comments suspended, orange Overload, grey Manual)")
    cpu.legend(loc="upper right", fontsize=8)

    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
