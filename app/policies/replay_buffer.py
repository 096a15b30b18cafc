"""A preallocated ring buffer of transitions for off-policy RL agents."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.policies._codec import decode_array, decode_generator, encode_array, encode_generator

Batch = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class ReplayBuffer:
    """Transitions ``(state, action, reward, next_state, done)`` in numpy
    arrays allocated once; when full, each new transition overwrites the
    oldest. :meth:`sample` draws a batch uniformly, with replacement, from a
    private generator seeded by ``seed``.

    Memory: ``capacity * (2 * state_dim * itemsize + itemsize + 9)`` bytes —
    100,000 transitions of 12 float32 features take 10.9 MB.

    Snapshots (:meth:`to_dict`) hold the arrays as base64, 4/3 of their raw
    bytes: 14.5 MB for that full buffer. ``to_dict(max_items=n)`` keeps only
    the ``n`` most recent transitions (in order), which bounds a snapshot's
    size but means the restored buffer samples differently from the original.

    >>> buf = ReplayBuffer(capacity=3, state_dim=2, seed=0)
    >>> for t in range(5):
    ...     buf.push([t, t], action=t % 2, reward=float(t), next_state=[t + 1, t + 1], done=t == 4)
    >>> len(buf), buf.transitions()[2].tolist()  # the 3 most recent rewards
    (3, [2.0, 3.0, 4.0])
    >>> states, actions, rewards, next_states, dones = buf.sample(4)
    >>> states.shape, sorted(set(rewards.tolist())) <= [2.0, 3.0, 4.0]
    ((4, 2), True)
    >>> ReplayBuffer.from_dict(buf.to_dict()).sample(4)[2].tolist() == buf.sample(4)[2].tolist()
    True
    """

    def __init__(
        self,
        capacity: int,
        state_dim: int,
        seed: int | np.random.SeedSequence | None = None,
        dtype: Any = np.float32,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if state_dim < 1:
            raise ValueError("state_dim must be at least 1")
        self.capacity = int(capacity)
        self.state_dim = int(state_dim)
        self.dtype = np.dtype(dtype)
        self._states = np.zeros((self.capacity, self.state_dim), self.dtype)
        self._next_states = np.zeros((self.capacity, self.state_dim), self.dtype)
        self._actions = np.zeros(self.capacity, np.int64)
        self._rewards = np.zeros(self.capacity, self.dtype)
        self._dones = np.zeros(self.capacity, np.bool_)
        self._size = 0
        self._pos = 0  # where the next transition goes
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays."""
        return sum(
            a.nbytes
            for a in (self._states, self._next_states, self._actions, self._rewards, self._dones)
        )

    def push(self, state: Any, action: int, reward: float, next_state: Any, done: bool) -> None:
        i = self._pos
        self._states[i] = state
        self._next_states[i] = next_state
        self._actions[i] = action
        self._rewards[i] = reward
        self._dones[i] = done
        self._pos = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement:
        ``(states, actions, rewards, next_states, dones)``."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self._at(self._rng.integers(0, self._size, size=batch_size))

    def _at(self, idx: np.ndarray) -> Batch:
        """The transitions at physical indices ``idx`` (copies)."""
        return (
            self._states[idx],
            self._actions[idx],
            self._rewards[idx],
            self._next_states[idx],
            self._dones[idx],
        )

    def _order(self) -> np.ndarray:
        """Physical indices of the stored transitions, oldest first."""
        if self._size < self.capacity:
            return np.arange(self._size)
        return (np.arange(self.capacity) + self._pos) % self.capacity

    def transitions(self) -> Batch:
        """Every stored transition, oldest first (copies)."""
        return self._at(self._order())

    def _refill(self, batch: Batch) -> None:
        """Replace the contents by ``batch`` (oldest first, at most ``capacity``)."""
        n = len(batch[1])
        self._states[:n], self._actions[:n], self._rewards[:n] = batch[0], batch[1], batch[2]
        self._next_states[:n], self._dones[:n] = batch[3], batch[4]
        self._size = n
        self._pos = n % self.capacity

    def remove_action(self, action: int) -> None:
        """Drop the transitions of ``action`` and renumber the higher actions
        down by one (an arm was removed from the agent)."""
        s, a, r, s2, d = self.transitions()
        keep = a != action
        a = a[keep]
        a[a > action] -= 1
        self._refill((s[keep], a, r[keep], s2[keep], d[keep]))

    # -- snapshots ------------------------------------------------------------------------------
    def to_dict(self, max_items: int | None = None) -> dict[str, Any]:
        """A JSON-able copy: the arrays (base64), the write position and the
        sampling generator. With ``max_items`` below the size, only the most
        recent ``max_items`` transitions are kept."""
        arrays: Batch
        if max_items is not None and self._size > max_items:
            n = max(0, max_items)
            s, a, r, s2, d = self.transitions()
            arrays = (
                s[len(a) - n :],
                a[len(a) - n :],
                r[len(a) - n :],
                s2[len(a) - n :],
                d[len(a) - n :],
            )
            pos = n % self.capacity
        else:
            n = self._size
            arrays = (
                self._states[:n],
                self._actions[:n],
                self._rewards[:n],
                self._next_states[:n],
                self._dones[:n],
            )
            pos = self._pos
        names = ("states", "actions", "rewards", "next_states", "dones")
        return {
            "capacity": self.capacity,
            "state_dim": self.state_dim,
            "dtype": self.dtype.str,
            "size": n,
            "pos": pos,
            "rng": encode_generator(self._rng),
        } | {name: encode_array(arr) for name, arr in zip(names, arrays, strict=True)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReplayBuffer:
        buf = cls(d["capacity"], d["state_dim"], dtype=np.dtype(d["dtype"]))
        buf.load_dict(d)
        return buf

    def load_dict(self, d: dict[str, Any]) -> None:
        """Load :meth:`to_dict`'s contents into this buffer (same capacity,
        state_dim and dtype)."""
        if (d["capacity"], d["state_dim"], np.dtype(d["dtype"])) != (
            self.capacity,
            self.state_dim,
            self.dtype,
        ):
            raise ValueError(
                f"replay buffer of capacity {d['capacity']}, state_dim {d['state_dim']}, "
                f"dtype {d['dtype']} does not fit one of capacity {self.capacity}, "
                f"state_dim {self.state_dim}, dtype {self.dtype.str}"
            )
        n = int(d["size"])
        self._states[:n] = decode_array(d["states"])
        self._actions[:n] = decode_array(d["actions"])
        self._rewards[:n] = decode_array(d["rewards"])
        self._next_states[:n] = decode_array(d["next_states"])
        self._dones[:n] = decode_array(d["dones"])
        self._size = n
        self._pos = int(d["pos"])
        self._rng = decode_generator(d["rng"])
