"""Device prefetch: same batches, same order, and checkpoints hold the consumed batch's position."""
import dataclasses
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.data import pipeline as P
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.loop import LoopConfig, run_loop
from jaxsr.train.prefetch import Prefetcher


def _batches(seed=0) -> P.Batches:
    rng = np.random.default_rng(seed)
    records = [{"lr": rng.integers(0, 256, (6, 6, 3), dtype=np.uint8),
                "hr": rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)} for _ in range(5)]
    return P.Batches(P.paired_loader(records, batch_size=2, hr_patch=4, scale=2, seed=seed))


class Counting:
    """Host batches 0, 1, 2, ... (each {'x': (2,) int32}); position = batches read so far;
    raises `error` when batch number `fail_at` is asked for."""

    def __init__(self, fail_at=None, error=None, delay=0.0):
        self.read, self.fail_at, self.error, self.delay = 0, fail_at, error, delay
        self.threads = set()

    def __iter__(self):
        return self

    def __next__(self):
        self.threads.add(threading.get_ident())
        if self.fail_at is not None and self.read == self.fail_at:
            raise self.error
        time.sleep(self.delay)
        self.read += 1
        return {"x": np.full((2,), self.read - 1, np.int32)}

    def get_state(self):
        return {"read": self.read}


def _put(batch):
    return jax.device_put(batch)


def test_same_batches_same_order_with_the_position_after_each():
    mesh = mesh_lib.make_mesh()
    sharding = mesh_lib.batch_sharding(mesh)
    reference = _batches()
    want = []
    for _ in range(7):
        want.append((next(reference), reference.get_state()))
    source = _batches()
    feed = Prefetcher(source, lambda b: mesh_lib.put_batch(b, sharding), source.get_state,
                      count=7)
    got = list(feed)
    assert len(got) == 7
    for (batch, position), (host, state) in zip(got, want):
        assert isinstance(batch["hr"], jax.Array) and batch["hr"].sharding == sharding
        np.testing.assert_array_equal(np.asarray(batch["hr"]), host["hr"])
        np.testing.assert_array_equal(np.asarray(batch["lr"]), host["lr"])
        assert position == state
    # Exactly `count` batches were read: the source is where an unprefetched loop leaves it.
    assert source.get_state() == reference.get_state()
    with pytest.raises(StopIteration):
        next(feed)


def test_reads_ahead_by_depth_in_another_thread_and_close_stops_it():
    source = Counting()
    feed = Prefetcher(source, _put, source.get_state, count=100, depth=2)
    deadline = time.time() + 10
    while source.read < 3 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert source.read == 3  # 2 queued + 1 waiting for room, none further
    assert threading.get_ident() not in source.threads
    batch, position = next(feed)
    assert int(batch["x"][0]) == 0 and position == {"read": 1}
    feed.close()
    time.sleep(0.3)
    assert source.read <= 4 and not feed._thread.is_alive()
    with pytest.raises(StopIteration):
        next(feed)


def test_an_error_of_the_source_is_raised_where_its_batch_would_be_taken():
    error = KeyError("bad record")
    source = Counting(fail_at=3, error=error)
    feed = Prefetcher(source, _put, source.get_state, count=10)
    assert [int(next(feed)[0]["x"][0]) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError) as raised:
        next(feed)
    assert raised.value is error
    feed.close()


def test_nothing_is_read_for_zero_steps():
    source = Counting()
    feed = Prefetcher(source, _put, source.get_state, count=0)
    with pytest.raises(StopIteration):
        next(feed)
    assert source.read == 0


# ------------------------------------------------------------ through the training loop
@dataclasses.dataclass
class _State:
    step: int
    nonfinite: int
    seen: tuple


class _Checkpointer:
    directory = "memory"

    def __init__(self):
        self.saved = {}

    def save(self, step, state, data_state, last_eval, config):
        self.saved[step] = data_state

    def wait(self):
        pass

    def latest_step(self):
        return max(self.saved) if self.saved else None


class _Writer:
    def write_scalars(self, *a, **k):
        pass

    def write_images(self, *a, **k):
        pass

    def flush(self):
        pass


def _step(state, batch):
    key = np.asarray(batch["hr"]).tobytes()
    slow = state.step in (2, 5)
    if slow:  # a slow step: the prefetch thread runs ahead meanwhile
        time.sleep(0.2)
    return (_State(state.step + 1, 0, state.seen + (key,)), {"loss": jnp.float32(1.0)})


def _train(batches, start_state, num_steps, checkpointer):
    return run_loop(state=start_state, train_step=_step, batches=batches,
                    put_batch=jax.device_put, data_state=batches.get_state,
                    loop=LoopConfig(num_steps=num_steps, log_every=2, checkpoint_every=3),
                    checkpointer=checkpointer, writer=_Writer())


def test_checkpoints_hold_the_position_after_the_last_trained_batch_and_resume_exactly():
    reference, positions = _batches(), {}
    stream = []
    for k in range(1, 10):
        stream.append(np.asarray(next(reference)["hr"]).tobytes())
        positions[k] = reference.get_state()

    ckpt = _Checkpointer()
    batches = _batches()
    state, _ = _train(batches, _State(0, 0, ()), 6, ckpt)
    assert list(state.seen) == stream[:6]  # same batches, same order
    assert ckpt.saved == {3: positions[3], 6: positions[6]}  # not the prefetched ones'
    assert batches.get_state() == positions[6]  # nothing read beyond the last step

    # A run stopped after its step-3 checkpoint resumes from it with exactly batches 4..9.
    resumed = _batches()
    resumed.set_state(ckpt.saved[3])
    state, _ = _train(resumed, _State(3, 0, ()), 9, _Checkpointer())
    assert list(state.seen) == stream[3:9]
