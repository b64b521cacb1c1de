"""Streaming training chunks from prepared shards (``model/train/prepare.py``).

A rank reads its own shards (``shards[rank::world]``; all of them when there are fewer shards
than ranks) in a seeded order that changes every pass, holding ``buffer`` shards in memory at
a time and drawing samples at random from them, so memory does not grow with the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.train.dataset import ChunkSet
from model.train.prepare import Shard, shard_paths
from stream.errors import InputError


class ShardStream:
    def __init__(self, paths: Sequence[str], rank: int = 0, world: int = 1, seed: int = 0, buffer: int = 4) -> None:
        if not paths:
            raise InputError("no training shards: the prepared dataset kept no clip (see its manifest.json)")
        self.paths = list(paths[rank::world]) if len(paths) >= world else list(paths)
        self.rng = np.random.default_rng([seed, rank])
        self.buffer = max(1, buffer)
        self._order: list[str] = []
        self._pool: list[ChunkSet] = []
        self._left: list[np.ndarray] = []  # per pooled shard: indices not yet drawn

    @classmethod
    def from_dirs(cls, dirs: Sequence[str], **kwargs: int) -> ShardStream:
        return cls([p for d in dirs for p in shard_paths(d)], **kwargs)  # type: ignore[arg-type]

    def _refill(self) -> None:
        while len(self._pool) < min(self.buffer, len(self.paths)):
            if not self._order:
                self._order = [self.paths[i] for i in self.rng.permutation(len(self.paths))]
            cs = Shard.load(self._order.pop()).chunks()
            self._pool.append(cs)
            self._left.append(self.rng.permutation(len(cs)))

    def next(self, n: int) -> ChunkSet:
        """``n`` chunks drawn from the pooled shards (a spent shard is replaced by the next)."""
        rows: list[tuple[int, int]] = []
        picked: list[ChunkSet] = []
        for _ in range(n):
            self._refill()
            k = int(self.rng.integers(len(self._pool)))
            i, self._left[k] = int(self._left[k][0]), self._left[k][1:]
            picked.append(self._pool[k])
            rows.append((len(picked) - 1, i))
            if self._left[k].size == 0:
                self._pool.pop(k)
                self._left.pop(k)
        fields = ChunkSet.__dataclass_fields__
        return ChunkSet(*(np.stack([getattr(picked[p], f)[i] for p, i in rows]) for f in fields))
