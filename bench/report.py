"""Prints one table of the figures `make bench` wrote to var/bench/*.json (run last by `make bench`)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

BENCH = Path("var/bench")


def load(name: str) -> dict | None:
    path = BENCH / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    rows: list[tuple[str, str]] = []
    chain = load("chain")
    if chain:
        for name, r in chain["runs"].items():
            lat = r["latency_s"]
            offered = "all at once" if r["offered_per_s"] is None else f"{r['offered_per_s']:g}/s offered"
            rows.append(
                (
                    f"end to end, {name} ({r['deletions']} deletions, {offered})",
                    f"{r['throughput_per_s']:.2f} deletions/s; p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s, "
                    f"p99 {lat['p99']:.2f} s; per deletion {r['mongo_per_deletion_total']:.1f} MongoDB commands, "
                    f"{r['kafka_per_deletion_total']:.1f} Kafka records, {r['cpu_s_per_deletion_total']:.3f} CPU s",
                )
            )
        raw = chain["raw_store_limit"]
        rows.append(("raw store limit, same work without lethe", f"{raw['throughput_per_s']:.2f} subjects/s"))
        rows.append(("lethe at saturation / raw store limit", f"{chain['ratio_to_raw']:.2f}"))
        best = chain["highest_rate_with_p99_within_2s"]
        rows.append(("highest offered rate with p99 <= 2 s", "none" if best is None else f"{best:g}/s"))
        rows.append(("people seeded", f"{chain['people']:,} in {chain['seeding_s']:.0f} s"))
        rss = ", ".join(f"{k} {v}" for k, v in chain["peak_rss_mib"].items())
        rows.append(("peak RSS per service (MiB)", rss))
    purger = load("purger")
    if purger:
        sizes = purger["purge_s_by_collection_size"]
        rows.append(
            (
                f"nightly purge of {purger['tagged_records']} tagged records",
                ", ".join(f"{int(k):,} docs {v:.2f} s" for k, v in sizes.items())
                + f"; ratio {purger['ratio_largest_to_smallest']:.2f}",
            )
        )
    liveread = load("liveread")
    if liveread:
        alone, during = liveread["alone"]["latency_s"], liveread["during_purge"]["latency_s"]
        rows.append(
            (
                f"live reader p99, {liveread['documents']:,} docs, purge of {liveread['tagged_records']:,}",
                f"alone {alone['p99'] * 1000:.1f} ms, during the purge {during['p99'] * 1000:.1f} ms "
                f"(ratio {liveread['p99_ratio']:.2f}, target <= {liveread['target_ratio']:.2f})",
            )
        )
    if not rows:
        print("no figures in var/bench/ yet: run `make bench`")
        return
    print(f"\nlethe benchmarks on {platform.node()} ({os.cpu_count()} cores, {platform.machine()}):")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


if __name__ == "__main__":
    main()
