"""One replica: the model follower, requests of all clients tagged together in bounded batches, the routes.

`deploy.application()` wraps this class as a Ray Serve deployment with a FastAPI ingress (the app is
built on the replica by `__serve_build_asgi_app__`, so importing this module needs neither Ray nor
FastAPI). Tagging runs in a thread: the replica's event loop keeps accepting requests for the next
batch while one is tagged.
"""

from __future__ import annotations

import asyncio
import functools
import os

import torch

from .api import build_api
from .config import ServeConfig
from .follow import Follower, Loaded, Registry, load, parse_model_uri


def count_texts(requests: list[list[str]]) -> int:
    """A batch's size is the number of texts in it, not of requests."""
    return sum(len(texts) for texts in requests)


class BioNERServer:
    """A Ray Serve replica serving the Tagger of the model `cfg.model` names (see deploy.application)."""

    async def __init__(self, cfg: ServeConfig):
        from ray import serve  # lazy (platform/README.md)

        self.cfg = cfg
        # Ray gives the replica cpus_per_replica CPUs; torch would otherwise start one thread per core.
        torch.set_num_threads(max(1, int(cfg.cpus_per_replica or os.cpu_count() or 1)))
        ref = parse_model_uri(cfg.model)
        self.follower = Follower(
            ref,
            Registry(cfg.tracking_uri),
            check_alias=cfg.check_alias,
            retry_s=cfg.poll_s,
            loader=functools.partial(load, precision=cfg.precision),
        )
        await self.follower.start()
        self._poller = (
            asyncio.get_running_loop().create_task(self.follower.poll_forever(cfg.poll_s)) if ref.follows else None
        )
        self._tag = serve.batch(
            max_batch_size=cfg.max_batch_texts, batch_wait_timeout_s=cfg.batch_wait_s, batch_size_fn=count_texts
        )(self._tag_batch)
        self.replica = serve.get_replica_context().replica_id.unique_id

    async def _tag_batch(self, requests: list[list[str]]) -> list[tuple[list[list[dict]], Loaded]]:
        """All the texts of the batch's requests in one call of the Tagger (it sorts them by length)."""
        flat = [t for texts in requests for t in texts]
        # The alias is read while the current model tags, off the batch's critical path. When the read
        # names another version (the first batch after a promotion), that version tags the batch again.
        fresh = asyncio.ensure_future(self.follower.fresh())
        model = self.follower.current
        entities = await asyncio.to_thread(model.tagger.entities, flat)
        chosen = await fresh
        if chosen is not model:
            model, entities = chosen, await asyncio.to_thread(chosen.tagger.entities, flat)
        out, i = [], 0
        for texts in requests:
            out.append((entities[i : i + len(texts)], model))
            i += len(texts)
        return out

    async def predict(self, texts: list[str]) -> tuple[list[list[dict]], Loaded]:
        """One list of entities per text, and the model that found them."""
        if not texts:
            return [], self.follower.current
        return await self._tag(texts)

    def model_info(self) -> dict:
        cfg = self.cfg
        return {
            **self.follower.info(),
            "replica": self.replica,
            "check_alias": cfg.check_alias,
            "poll_s": cfg.poll_s,
            "limits": {
                "max_texts": cfg.max_texts,
                "max_chars": cfg.max_chars,
                "max_batch_texts": cfg.max_batch_texts,
                "batch_wait_s": cfg.batch_wait_s,
            },
        }

    def check_health(self) -> None:
        """Serve calls this every few seconds; raising makes it replace the replica."""
        if self._poller is not None and self._poller.done():
            why = "cancelled" if self._poller.cancelled() else repr(self._poller.exception())
            raise RuntimeError(f"the poll of {self.cfg.model} stopped: {why}")

    def __serve_build_asgi_app__(self):
        return build_api(self)
