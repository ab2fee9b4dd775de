"""Checkpoints written in the background (`train.async_checkpoint: true`), as torchtitan's
async checkpointing does: at the agreed step the state is copied off the live tensors (to
pinned CPU memory on CUDA, CPU memory on CPU; buffers kept from save to save), and a
thread writes it with the same
`save_checkpoint` as a synchronous save: temp file, sha256 sidecar, fsync, atomic rename,
then retention. So every guarantee of checkpoint.py holds, nothing old is deleted before the
new file is committed, and the loop is blocked only for the copy.

One write at a time: the next save (and the end of the run, and a preemption before it exits
75) first waits for the previous write to commit, and re-raises its error there (a full disk:
the same one-line error as a synchronous save).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from tubelet import distributed as dist
from tubelet.engine.checkpoint import save_checkpoint
from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")


def copy_state(state: Any, staging: dict[tuple, torch.Tensor] | None = None,
               path: tuple = ()) -> Any:
    """A copy of `state` that training can no longer change: tensors copied to CPU (pinned
    when they come from a GPU, so the copy is a fast DMA), containers rebuilt, the rest
    shared (ints, strings: immutable). With `staging`, the copies go into the buffers a
    previous save left there (same place, shape and dtype), allocated once: fresh memory
    costs a page fault per 4 KiB on first touch, several times the copy itself."""
    if torch.is_tensor(state):
        out = staging.get(path) if staging is not None else None
        if out is None or out.shape != state.shape or out.dtype != state.dtype:
            out = torch.empty(state.shape, dtype=state.dtype,
                              pin_memory=state.device.type == "cuda")
            if staging is not None:
                staging[path] = out
        return out.copy_(state.detach(), non_blocking=state.device.type == "cuda")
    if isinstance(state, dict):
        return {k: copy_state(v, staging, path + (k,)) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(copy_state(v, staging, path + (i,)) for i, v in enumerate(state))
    return state


class AsyncSaver:
    """Writes one checkpoint at a time in a background thread."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        # the copies' buffers, kept from save to save (one state's size of host memory)
        self._staging: dict[tuple, torch.Tensor] = {}

    def save(self, state: dict[str, Any], ckpt_dir: Path, *, step: int, keep_last: int,
             is_best: bool = False, done: Callable[[Path], None] | None = None) -> None:
        """Wait for the previous write, copy `state`, and write the copy in the background;
        `done(path)` runs in the thread after the commit."""
        self.wait()  # also: the staging buffers are free again
        state = copy_state(state, self._staging)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the pinned copies are complete before the thread reads

        def write() -> None:
            try:
                path = save_checkpoint(state, ckpt_dir, step=step, keep_last=keep_last,
                                       is_best=is_best)
                if done is not None:
                    done(path)
            except BaseException as e:  # noqa: BLE001 - handed to the loop at wait()
                self._error = e

        # not a daemon: an interpreter that exits still lets the commit finish
        self._thread = threading.Thread(target=write, name="tubelet-checkpoint")
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until the previous write committed; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """On an error's way out: wait for a started write to commit, and log (not raise) its
        own error, so it does not hide the one that is leaving."""
        try:
            self.wait()
        except BaseException as e:  # noqa: BLE001
            log.error("the background checkpoint write failed too: %s", e)


class CheckpointWriter:
    """What the Trainer's saves go through: rank 0 writes (synchronously with
    `save_checkpoint`, or through an `AsyncSaver`), and a write error (a full disk) is
    broadcast, so every rank raises its one line together. The broadcast is also the barrier:
    no rank runs ahead of a checkpoint it may need to resume from. `before_write` runs on rank
    0 first (the metrics rows up to this step go to disk with the checkpoint)."""

    def __init__(self, ckpt_dir: Path, *, keep_last: int, in_background: bool,
                 before_write: Callable[[], None]) -> None:
        self.ckpt_dir, self.keep_last, self.before_write = ckpt_dir, keep_last, before_write
        self._saver = AsyncSaver() if in_background else None

    def save(self, state: dict[str, Any], *, step: int, is_best: bool) -> None:
        """On every rank, with the gathered `state`; returns once it is committed (sync) or
        copied (in the background)."""
        def write() -> None:
            self.before_write()
            if self._saver is not None:  # waits for the previous write, copies, returns
                self._saver.save(state, self.ckpt_dir, step=step, is_best=is_best,
                                 keep_last=self.keep_last,
                                 done=lambda path: log.info("saved %s", path))
            else:
                log.info("saved %s", save_checkpoint(state, self.ckpt_dir, step=step,
                                                     keep_last=self.keep_last, is_best=is_best))
        _on_rank_zero(write)

    def wait(self) -> None:
        """Block until the background write (if any) committed."""
        if self._saver is not None:
            _on_rank_zero(self._saver.wait)

    def close(self) -> None:
        """On any way out of fit: let a started background write commit."""
        if self._saver is not None:
            self._saver.close()


def _on_rank_zero(work: Callable[[], None]) -> None:
    """Run `work` on rank 0; a ConfigError it raises (a full disk) is raised on every rank."""
    error = None
    if dist.is_main():
        try:
            work()
        except ConfigError as e:
            error = str(e)
    error = dist.broadcast_object(error)
    if error is not None:
        raise ConfigError(error)
