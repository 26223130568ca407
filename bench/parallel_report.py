"""The `parallel` section's table and target checks (issue #15), from its records."""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

__all__ = ["summarize", "render_parallel", "parallel_targets"]


def _median_time(values: list[float | None]) -> float | None:
    """The median, an unreached target counting as infinitely late; None when half or more never reached it."""
    if not values:
        return None
    middle = statistics.median(math.inf if v is None else v for v in values)
    return None if math.isinf(middle) else middle


def _ratio(stock: list[float | None], ours: list[float | None]) -> float:
    """Median time to target, stock's over ours (inf: ours reached it, stock's median did not; 0: the reverse)."""
    ours_t, stock_t = _median_time(ours), _median_time(stock)
    if ours_t is None:
        return 0.0
    return math.inf if stock_t is None else stock_t / ours_t


def _ratio_interval(stock: list[float | None], ours: list[float | None], draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval of `_ratio`: each side's seeds resampled with replacement, `draws` times."""
    rng = random.Random(seed)
    ratios = sorted(_ratio(rng.choices(stock, k=len(stock)), rng.choices(ours, k=len(ours))) for _ in range(draws))
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws) - 1]


def _block_ratios(stock: list[dict[str, Any]], ours: list[dict[str, Any]], size: int) -> list[float]:
    """`_ratio` over seeds [0, size), [size, 2 size), ...: what a `size`-seed benchmark would have said."""
    by_seed = {r["seed"]: r["time_to_target"] for r in stock}, {r["seed"]: r["time_to_target"] for r in ours}
    seeds = sorted(set(by_seed[0]) & set(by_seed[1]))
    blocks = [seeds[i : i + size] for i in range(0, len(seeds) - size + 1, size)]
    return [_ratio([by_seed[0][s] for s in b], [by_seed[1][s] for s in b]) for b in blocks]


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (algorithm, M), in the records' order: medians over the seeds."""
    keys: list[tuple[str, int]] = []
    for r in records:
        if (r["algorithm"], r["M"]) not in keys:
            keys.append((r["algorithm"], r["M"]))
    rows = []
    for algorithm, m in keys:
        runs = [r for r in records if r["algorithm"] == algorithm and r["M"] == m]
        closest = [r["closest_running"] for r in runs if r["closest_running"] is not None]
        rows.append({
            "algorithm": algorithm,
            "M": m,
            "seeds": len(runs),
            "budget": runs[0]["budget"],
            "utilisation": statistics.median(r["utilisation"] for r in runs),
            "utilisation_min": min(r["utilisation"] for r in runs),
            "time_to_target": _median_time([r["time_to_target"] for r in runs]),
            "reached": sum(r["time_to_target"] is not None for r in runs),
            "best_at_budget": statistics.median(r["best_at_budget"] for r in runs),
            "trials": statistics.median(r["trials"] for r in runs),
            "closest_running": min(closest) if closest else None,
        })
    return rows


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def render_parallel(records: list[dict[str, Any]], table: Any) -> str:
    """The section's table; `table(header, rows)` formats it as the other sections do."""
    rows = [
        [s["algorithm"], str(s["M"]), "one iteration" if s["budget"] is None else str(s["budget"]),
         f"{_f(s['utilisation'], '{:.3f}')} ({_f(s['utilisation_min'], '{:.3f}')})",
         f"{_f(s['time_to_target'], '{:.1f}')} ({s['reached']}/{s['seeds']})", _f(s["best_at_budget"], "{:.3f}"),
         _f(s["trials"], "{:.0f}"), _f(s["closest_running"], "{:.2f}")]
        for s in summarize(records)
    ]
    target = records[0]["target"] if records else None
    return (
        f"Parallel search, simulated (Hartmann-3 learning curves; medians over seeds; target {target})\n\n"
        + table(["algorithm", "M", "budget (epochs)", "utilisation (worst seed)", "time to target (reached)", "best at budget",
                 "trials", "closest running (steps)"], rows)
    )


def parallel_targets(records: list[dict[str, Any]], add: Any) -> None:
    """Issue #15's targets: `add(name, value, bound, met)` for each."""
    def runs(algorithm: str, m: int) -> list[dict[str, Any]]:
        return [r for r in records if r["algorithm"] == algorithm and r["M"] == m]

    for m in (16, 64):
        asha = runs("asha", m)
        if asha:
            worst = min(r["utilisation"] for r in asha)
            add(f"asha utilisation at M={m} (worst seed)", worst, ">= 0.95", worst >= 0.95)
        for name, label in (("stock_hyperband", "as many iterations as the budget allows"), ("stock_hyperband_1it", "one iteration")):
            stock = runs(name, m)
            if stock:
                utilisation = statistics.median(r["utilisation"] for r in stock)
                add(f"stock Hyperband utilisation at M={m}, {label} (median)", utilisation, "(reference)", None)
    asha, stock = runs("asha", 16), runs("stock_hyperband", 16)
    if asha and stock:
        ratio = _ratio([r["time_to_target"] for r in stock], [r["time_to_target"] for r in asha]) or None
        add(f"asha time to target at M=16: stock Hyperband's / asha's (medians over {len(asha)} seeds)", ratio, ">= 1.5x",
            None if ratio is None else ratio >= 1.5)
        low, high = _ratio_interval([r["time_to_target"] for r in stock], [r["time_to_target"] for r in asha])
        add("  its 95% bootstrap interval", f"{low:.2f}-{high:.2f}", "(reference)", None)
        blocks = _block_ratios(stock, asha, 5)
        if len(blocks) > 1:
            add(f"  the same ratio over each block of 5 seeds ({len(blocks)} blocks)", f"{min(blocks):.2f}-{max(blocks):.2f}", "(reference)", None)
        # The benchmark's objective is minimised: a gap <= 0 is no worse.
        gap = statistics.median(r["best_at_budget"] for r in asha) - statistics.median(r["best_at_budget"] for r in stock)
        add("asha best at budget at M=16 minus stock Hyperband's (medians; lower is better)", gap, "<= 0", gap <= 0)
    ours = {r["seed"]: r for r in runs("our_bayesian", 16)}
    stock_b = {r["seed"]: r for r in runs("stock_bayesian", 16)}
    seeds = sorted(set(ours) & set(stock_b))
    if seeds:
        wins = sum(ours[s]["best_at_budget"] <= stock_b[s]["best_at_budget"] for s in seeds)
        need = math.ceil(0.8 * len(seeds))
        add("our Bayesian best at budget no worse than stock's at M=16 (seeds)", f"{wins}/{len(seeds)}", f">= {need}/{len(seeds)}", wins >= need)
    closest = [r["closest_running"] for r in records if r["algorithm"] == "our_bayesian" and r["closest_running"] is not None]
    if closest:
        add("our Bayesian: closest two running trials, any M (steps)", min(closest), ">= 1", min(closest) >= 1 - 1e-9)
    stock_closest = [r["closest_running"] for r in records if r["algorithm"] == "stock_bayesian" and r["closest_running"] is not None]
    if stock_closest:
        add("stock Bayesian: closest two running trials, any M (steps)", min(stock_closest), "(reference)", None)
