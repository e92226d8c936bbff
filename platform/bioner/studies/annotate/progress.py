"""Progress of a job: a bar over input bytes on a terminal (its ETA from bytes, documents and documents/s
beside it), else a line now and then (a Ray job's log)."""

from __future__ import annotations

import sys
import time

LOG_EVERY_S = 30.0


class Progress:
    """A bar over input bytes on a terminal (ETA from bytes); else a line now and then."""

    def __init__(self, total: int, initial: int, enabled: bool, say):
        self.say, self.total, self.done = say, total, initial
        self.bar = None
        self.last = time.perf_counter()
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm  # lazy (platform/README.md)

            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="annotate",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self.enabled = enabled

    def update(self, size: int, docs: int, rate: float, shards_done: int, shards: int) -> None:
        self.done += size
        if self.bar is not None:
            self.bar.set_postfix_str(f"{docs:,} docs, {rate:.1f} docs/s", refresh=False)
            self.bar.update(size)
        elif self.enabled and (time.perf_counter() - self.last >= LOG_EVERY_S or shards_done == shards):
            self.last = time.perf_counter()
            self.say(
                f"annotate: {shards_done}/{shards} shards, {human(self.done)} of {human(self.total)}, "
                f"{docs:,} documents, {rate:.1f} documents/s"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
