"""Draw the README's performance charts (PNG, matplotlib) from a pytest-benchmark JSON file of `make bench`.

    python benches/charts.py bench-results/latest.json docs/img

- `agent-turn-cost.png`: the agent workload's median cost of one turn against the conversation's length, log-log,
  one line per store (test_bench_agent.py);
- `throughput.png`: save and load throughput (MB/s of the corpus as JSONL) of this package against the original
  design (stdlib json), hand-written orjson and msgspec, per corpus (test_bench_codec.py).

A chart whose benches are not in the file (a run narrowed with `BENCH_ARGS=-k ...`) is not drawn, and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from report import CORPUS_ORDER, Table, agent_by_length, load_results, split_agent, split_long, split_sessions

# (impl, label, colour, line style, marker): ours in blues, the other stores in distinct warm and grey colours.
AGENT_LINES = (
    ("ours", "conversation-codec: load(last=20) + append_turn", "#1f4e9c", "-", "o"),
    ("ours-gzip", "conversation-codec, gzip", "#4f86d9", "--", "s"),
    ("ours-fernet", "conversation-codec, Fernet", "#7fb0f0", "--", "^"),
    ("ours-fullload", "conversation-codec: load() whole + append_turn", "#1f4e9c", ":", "D"),
    ("ours-nodurable", "conversation-codec, durable=False (no fsync)", "#9ecae1", "-.", "v"),
    ("original", "original design: load() + save() all", "#d62728", "-", "o"),
    ("langchain", "LangChain FileChatMessageHistory", "#ff7f0e", "-", "s"),
    ("openai-agents", "OpenAI Agents SQLiteSession, get_items(limit=20)", "#2ca02c", "-", "^"),
    ("openai-agents-fullread", "OpenAI Agents SQLiteSession, get_items() (the Runner's default)", "#2ca02c", ":", "v"),
    ("llamaindex", "LlamaIndex SimpleChatStore + persist()", "#9467bd", "-", "D"),
)
# (impl, label, colour): what each bar of the throughput chart is.
THROUGHPUT_BARS = (
    ("ours", "conversation-codec (save: durable, fsync'd)", "#1f4e9c"),
    ("ours-nodurable", "conversation-codec, durable=False", "#7fb0f0"),
    ("orjson-durable", "orjson, written durably (fsync)", "#2ca02c"),
    ("orjson", "orjson, hand-written", "#98df8a"),
    ("msgspec", "msgspec encode_lines / decode_lines", "#bcbd22"),
    ("original", "original design (stdlib json)", "#d62728"),
)
CORPUS_LABELS = {
    "sharegpt-long": "ShareGPT, one 121 MB file",
    "sharegpt-many": "ShareGPT, 17,671 files",
    "agent": "agent transcript, 57 MB",
}


def _subtitle(data: dict[str, Any]) -> str:
    context = data.get("bench_context", {})
    return (
        f"measured {str(data.get('datetime', '?'))[:16].replace('T', ' ')} UTC; {context.get('nproc', '?')} cores, "
        f"{context.get('cpu_model', '?')}, Python {context.get('python', '?')}"
    )


def agent_chart(data: dict[str, Any], agent: Table, out: Path) -> None:
    lengths = agent_by_length(agent)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    for impl, label, colour, style, marker in AGENT_LINES:
        points = [(n, row[impl]["median"]) for n, row in lengths.items() if impl in row]
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, [y * 1e3 for y in ys], style, marker=marker, color=colour, label=label, linewidth=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(lengths), [f"{n:,}" for n in lengths])
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:,g}"))
    ax.set_xlim(min(lengths) / 1.6, max(lengths) * 1.6)
    ax.set_xlabel("conversation length when the session starts (messages)")
    ax.set_ylabel("one turn, median (ms, log scale)")
    fig.suptitle("Agent workload: the cost of one turn (read the history, append 2 messages)", fontsize=12)
    fig.text(0.5, 0.925, _subtitle(data), ha="center", fontsize=8, color="#555555")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(out)
    plt.close(fig)


def throughput_chart(data: dict[str, Any], table: Table, out: Path) -> None:
    corpora = [c for c in CORPUS_ORDER if (c, "save") in table or (c, "load") in table]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5), dpi=110, sharey=False)
    width = 0.8 / len(THROUGHPUT_BARS)
    for ax, op in zip(axes, ("save", "load")):
        for k, (impl, label, colour) in enumerate(THROUGHPUT_BARS):
            xs, ys = [], []
            for j, name in enumerate(corpora):
                info = table.get((name, op), {}).get(impl)
                if info is not None:
                    xs.append(j + (k - (len(THROUGHPUT_BARS) - 1) / 2) * width)
                    ys.append(info["bytes"] / info["median"] / 1e6)
            bars = ax.bar(xs, ys, width, color=colour, label=label)
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        ax.set_xticks(range(len(corpora)), [CORPUS_LABELS.get(c, c) for c in corpora], fontsize=8)
        ax.set_ylabel("MB/s of JSONL (higher is better)")
        ax.set_title(f"{op}()", fontsize=11)
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Save and load throughput against the baselines", fontsize=12)
    fig.text(0.5, 0.915, _subtitle(data), ha="center", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.1, 1, 0.93))
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} BENCHMARK_JSON OUTPUT_FOLDER", file=sys.stderr)
        return 2
    data, table = load_results(argv[1])
    table, _ = split_long(table)
    table, _ = split_sessions(table)
    table, agent = split_agent(table)
    folder = Path(argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows, draw in (("agent-turn-cost.png", agent, agent_chart), ("throughput.png", table, throughput_chart)):
        if rows:
            draw(data, rows, folder / name)
            print(f"{folder / name}: drawn from {argv[1]}")
        else:
            print(f"{folder / name}: not drawn, {argv[1]} has none of its benches")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
