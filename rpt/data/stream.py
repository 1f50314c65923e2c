"""An endless, deterministic, rank-sharded, resumable stream of item indices: epochs over [0, num_items),
each shuffled with (seed, epoch). The same walk as `SampleStream` (samples_io.py), for data whose items
are not next-token samples: RLVR questions (questions.py) and NTP token windows (windows.py).

Every rank walks the same global sequence: next_indices(k) on all ranks consumes the next k * world_size
items, rank r taking those at offsets r, r + world_size, ... The state is the global position, so a
checkpoint resumes exactly, also with another world size.
"""
import numpy as np


class IndexStream:
    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if num_items <= 0:
            raise ValueError(f"a stream needs at least one item, got {num_items}")
        self.num_items, self.rank, self.world_size, self.seed, self.shuffle = num_items, rank, world_size, seed, shuffle
        self.position = 0  # global index into the endless sequence of epochs
        self._orders: dict[int, np.ndarray] = {}

    @property
    def epoch(self) -> int:
        return self.position // self.num_items

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            order = (np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(self.num_items)
                     if self.shuffle else np.arange(self.num_items))
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}  # keep at most two
            self._orders[epoch] = order
        return self._orders[epoch]

    def next_indices(self, count: int) -> list[int]:
        """This rank's next `count` item indices (the global batch is count * world_size)."""
        indices = []
        for step in range(count):
            epoch, offset = divmod(self.position + step * self.world_size + self.rank, self.num_items)
            indices.append(int(self._order(epoch)[offset]))
        self.position += count * self.world_size
        return indices

    def state_dict(self) -> dict:
        return {"seed": self.seed, "shuffle": self.shuffle, "num_items": self.num_items, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "shuffle", "num_items"):
            if state[key] != getattr(self, key):
                raise ValueError(f"data state was saved with {key}={state[key]!r}, this stream has "
                                 f"{getattr(self, key)!r}: not the same data or stream settings")
        self.position = int(state["position"])
