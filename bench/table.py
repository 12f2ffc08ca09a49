"""Markdown tables: one row per contender, then our ratio to each peer."""

from __future__ import annotations

from bench.measure import Contender


def fmt_rate(size_bytes: int | None, seconds: float) -> str:
    if not size_bytes or seconds <= 0:
        return ""
    return f"{size_bytes / seconds / 1e6:,.0f} MB/s"


def results_table(contenders: list[Contender], size_bytes: int | None = None) -> str:
    lines = [
        "| contender | wall median (min-max) | CPU median (user+sys) | peak RSS | throughput |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in contenders:
        walls = [s.wall for s in c.samples]
        name = f"**{c.name}**" if c.ours else c.name
        lines.append(
            f"| {name} | {c.median_wall():.2f} s ({min(walls):.2f}-{max(walls):.2f}) | {c.median_cpu():.2f} s "
            f"| {c.peak_rss_mib():.0f} MiB | {fmt_rate(size_bytes, c.median_wall())} |"
        )
    return "\n".join(lines)


def ratio_table(contenders: list[Contender], targets: dict[tuple[str, str], float] | None = None) -> str:
    """Rows: our variants; columns: each peer; cells: ours / peer (median wall). A target, where
    one applies to that pair, is shown beside the ratio with whether it is met."""
    targets = targets or {}
    ours = [c for c in contenders if c.ours]
    peers = [c for c in contenders if not c.ours]
    if not ours or not peers:
        return ""
    lines = ["| ours / peer (median wall) | " + " | ".join(p.name for p in peers) + " |", "|---|" + "---:|" * len(peers)]
    for o in ours:
        cells = []
        for p in peers:
            ratio = o.median_wall() / p.median_wall()
            cell = f"{ratio:.2f}x"
            target = targets.get((o.name, p.name))
            if target is not None:
                cell += f" (target <= {target:.1f}x: {'met' if ratio <= target else 'missed'})"
            cells.append(cell)
        lines.append(f"| {o.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
