"""Plots median decision latency against store size, for iamd and Cedar.

Reads criterion's estimates for `cargo bench --bench decision`
(target/criterion/decide/PROBE/SIZE/new/estimates.json) and the Cedar
peer results (benches/peers/results.json), writes benches/latency.png and
prints a markdown table of iamd's medians.

Usage: python3 benches/plot.py   (needs matplotlib: pip install matplotlib)
"""

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROBES = ["allow", "explicit_deny", "implicit_deny", "cross_account", "conditions", "policy_variable"]


def iamd_medians():
    out = {}
    base = ROOT / "target" / "criterion" / "decide"
    for probe in PROBES:
        for est in sorted((base / probe).glob("*/new/estimates.json")):
            size = int(est.parent.parent.name)
            out[(probe, size)] = json.loads(est.read_text())["median"]["point_estimate"]
    return out


def main():
    iamd = iamd_medians()
    peers = json.loads((ROOT / "benches" / "peers" / "results.json").read_text())
    sizes = sorted({s for (_, s) in iamd})
    fig, ax = plt.subplots(figsize=(8, 5))
    for probe in PROBES:
        xs = [s for s in sizes if (probe, s) in iamd]
        ax.plot(xs, [iamd[(probe, s)] for s in xs], marker="o", label=f"iamd {probe}")
    for engine, style in (("cedar_sliced", "--"), ("cedar", ":")):
        rows = [r for r in peers if r["engine"] == engine]
        by_size = {}
        for r in rows:
            by_size.setdefault(r["size"], []).append(r["median_ns"])
        xs = sorted(by_size)
        ys = [sorted(by_size[s])[len(by_size[s]) // 2] for s in xs]
        label = "Cedar, policies sliced by resource" if engine == "cedar_sliced" else "Cedar, whole policy set"
        ax.plot(xs, ys, style, marker="s", color="black", label=f"{label} (median of probes)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("store size (target statements)")
    ax.set_ylabel("median decision latency (ns)")
    ax.set_title("Decision latency against store size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = ROOT / "benches" / "latency.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    print()
    print("| probe | " + " | ".join(f"{s:,}" for s in sizes) + " | largest / smallest |")
    print("|---|" + "---:|" * (len(sizes) + 1))
    for probe in PROBES:
        vals = [iamd.get((probe, s)) for s in sizes]
        cells = [f"{v:.0f} ns" if v else "" for v in vals]
        ratio = f"{vals[-1] / vals[0]:.2f}x" if vals[0] and vals[-1] else ""
        print(f"| {probe} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
