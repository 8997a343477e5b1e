"""Device prefetch: batches read, placed on the mesh and queued ahead of the train step.

    feed = Prefetcher(batches, put_batch, batches.get_state, count=num_steps - start)
    try:
        for _ in range(count):
            batch, position = next(feed)      # a placed batch, the data position after it
            state, metrics = train_step(state, batch)
            ...                               # checkpoint `position` with `state`
    finally:
        feed.close()

A background thread takes host batches from `batches`, records `data_state()` right after each
(the position a checkpoint taken after training on that batch must hold), puts the batch on the
devices with `put_batch` (an asynchronous transfer) and queues `(batch, position)`, keeping
`depth` of them ready. Reading, cropping and the transfer of the next batches thus overlap the
device step, and also the host pauses of the loop (logging, evaluation, checkpoints).

Exactness: one thread reads the batches in order, so they are the batches `batches` yields, in
the same order; it reads exactly `count` of them (never more), so after the loop `batches` is
where it was without prefetch, and the positions are those of an unprefetched loop. An exception
of `batches` (or of put_batch) is raised by `next` where that batch would have been taken.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterator of (device batch, data position right after that batch), `count` of them.

    Args:
      batches: iterator of host batches (read by one background thread only).
      put_batch: host batch -> device batch (e.g. `jaxsr.train.mesh.put_batch`).
      data_state: () -> the position of `batches` (JSON-able), called after each batch.
      count: batches to read (the loop's remaining steps); no more are taken from `batches`.
      depth: placed batches kept ready ahead of the one being trained on (>= 1).
    """

    def __init__(self, batches: Iterator[Any], put_batch: Callable[[Any], Any],
                 data_state: Callable[[], Any], count: int, depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._remaining = max(0, int(count))
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, args=(batches, put_batch, data_state, self._remaining),
            name="jaxsr-prefetch", daemon=True)
        if self._remaining:
            self._thread.start()

    def _produce(self, batches, put_batch, data_state, count: int) -> None:
        try:
            for _ in range(count):
                if self._stop.is_set():
                    return
                host = next(batches)
                position = data_state()
                if not self._offer((put_batch(host), position)):
                    return
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            self._offer(_Failure(error))

    def _offer(self, item: Any) -> bool:
        """Queues `item` unless closed first; True if queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> tuple[Any, Any]:
        if self._remaining <= 0 or self._stop.is_set():
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the prefetch thread stopped without a batch or an error")
        if isinstance(item, _Failure):
            self._remaining = 0
            raise item.error
        self._remaining -= 1
        return item

    def close(self, timeout: float = 10.0) -> None:
        """Stops the thread (after the batch it is reading, if any) and drops queued batches."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
