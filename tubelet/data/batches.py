"""Between the DataLoader and the model, in the main process: bad-data accounting and the
transforms that run on the device.

Datasets replace a bad sample themselves (data/datasets/base.py) and name the failed files in
each item's `bad` field. Counting happens here, in the main process, because loader workers are
separate processes whose counters nobody would see: every batch passes through `BatchStream`,
so the count is exact whatever the number of workers. Each bad file is logged once and the list
is kept in `<run dir>/bad_files.txt` (re-read on resume, so counts survive a restart). When the
distinct bad files exceed `max_bad_fraction` of a dataset's files, `BadDataError` (a user error:
exit code 2) stops the run after the list has been printed.

Under the Trainer the limit is `deferred`: a new bad file only marks the list as changed, and the
Trainer's per-step agreement (engine/guard.py) calls `agree()` on every rank at the same step
when any rank's list changed. `agree()` gathers the lists, so the limit applies to the distinct
files over all ranks, and every rank stops at the same step with exit code 2 (the whole list on
rank 0) instead of one rank raising while the others wait in a collective.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from tubelet import distributed as dist
from tubelet.data.seeding import sample_generator
from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")
BAD_FILES = "bad_files.txt"
DEVICE_SEED_SALT = 0x5EED  # device transforms draw from their own per-sample stream


class BadDataError(ConfigError):
    """Too many unreadable files: the run stops with exit code 2."""


class BadData:
    """Distinct bad files of one dataset (`split`: train or val), checked against a limit."""

    def __init__(self, *, split: str, num_files: int, max_fraction: float,
                 run_dir: Path | None, rank: int = 0) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ConfigError(f"data.max_bad_fraction: must be in [0, 1], got {max_fraction}")
        self.split, self.num_files, self.max_fraction = split, num_files, max_fraction
        # Each rank sees only its own batches, so each keeps its own list; rank 0's is the
        # plain name. Files found at startup are found by every rank alike.
        name = BAD_FILES if rank == 0 else BAD_FILES.replace(".txt", f".rank{rank}.txt")
        self.path = None if run_dir is None else Path(run_dir) / name
        self.files: dict[str, str] = {}  # path -> reason, in the order first seen
        self.substitutions = 0  # items replaced since this process started
        self.deferred = False  # True: leave the limit to `agree()` (the Trainer sets it)
        self.changed = False  # new files since the last `agree()`
        if self.path is not None and self.path.is_file():  # a resumed run keeps its count
            for line in self.path.read_text().splitlines():
                fields = line.split("\t")
                if len(fields) == 3 and fields[0] == split:
                    self.files[fields[1]] = fields[2]

    def add(self, bad: list[tuple[str, str]]) -> None:
        """Record bad files, given as (path, reason) pairs."""
        new = False
        for path, reason in bad:
            if path not in self.files:
                self.files[path] = reason
                log.warning("bad %s sample, replaced: %s", self.split, reason)
                new = True
        if new:
            self._write()
            self.changed = True
        if not self.deferred:
            self.check()

    def update(self, batch: dict[str, Any]) -> None:
        """Pop the batch's `bad` field and record what it names."""
        bad = []
        for entry in batch.pop("bad", None) or []:
            if entry:
                self.substitutions += 1
                bad += [tuple(line.split("\t", 1)) for line in entry.split("\n")]
        if bad:
            self.add(bad)

    def check(self, files: dict[str, str] | None = None, *, ranks: int = 1) -> None:
        """Raise `BadDataError` (after logging the list) when `files` (this rank's own by
        default) exceed the limit."""
        files = self.files if files is None else files
        count = len(files)
        if count <= self.max_fraction * self.num_files:
            return
        if dist.is_main():
            for reason in files.values():
                log.error("bad %s file: %s", self.split, reason)
        where = f"; the list is in {self.path}" if self.path is not None else ""
        if ranks > 1:
            where += f" ({ranks} ranks: bad_files.txt and bad_files.rank<r>.txt)"
        raise BadDataError(f"data.max_bad_fraction: {count} of {self.num_files} {self.split} "
                           f"files ({count / self.num_files:.1%}) are missing or unreadable, "
                           f"above {self.max_fraction:g}{where}")

    def agree(self) -> None:
        """A collective: every rank calls it at the same step. The distinct bad files of all
        ranks are checked against the limit, so every rank raises, or none does."""
        self.changed = False
        gathered = dist.all_gather_object(self.files)
        union: dict[str, str] = {}
        for files in gathered:
            union.update(files)
        self.check(union, ranks=len(gathered))

    def _write(self) -> None:
        if self.path is None:
            return
        others = []
        if self.path.is_file():
            others = [line for line in self.path.read_text().splitlines()
                      if not line.startswith(f"{self.split}\t")]
        lines = others + [f"{self.split}\t{p}\t{r}" for p, r in self.files.items()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.replace(self.path)


class BatchStream:
    """Iterates a DataLoader: counts bad samples, then (optionally) moves the batch to `device`
    and applies `device_transform` to each clip with a generator seeded by (seed, epoch, index),
    so a sample looks the same on resume. Looks like the loader to the Trainer."""

    def __init__(self, loader: Any, *, bad_data: BadData, device: torch.device,
                 device_transform: Callable[..., torch.Tensor] | None = None,
                 train: bool = False, seed: int = 0) -> None:
        self.loader, self.bad_data, self.device = loader, bad_data, device
        self.device_transform, self.train, self.seed = device_transform, train, seed
        self.dataset = loader.dataset
        # the train loader takes a batch sampler (it knows the epoch), the val loader a sampler
        self.sampler = loader.batch_sampler if loader.batch_size is None else loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            self.bad_data.update(batch)
            if self.device_transform is not None:
                batch = self.apply(batch)
            yield batch

    def apply(self, batch: dict[str, Any]) -> dict[str, Any]:
        epoch = getattr(self.sampler, "epoch", 0)
        nb = self.device.type == "cuda"
        video = batch["video"].to(self.device, non_blocking=nb)  # (B,C,T,H,W), usually uint8
        out = []
        for clip, index in zip(video, batch["index"].tolist()):
            g = sample_generator(self.seed ^ DEVICE_SEED_SALT, epoch, index) if self.train else None
            clip = self.device_transform(clip, generator=g)
            out.append(clip.float() / 255 if clip.dtype == torch.uint8 else clip)
        return {**batch, "video": torch.stack(out)}
