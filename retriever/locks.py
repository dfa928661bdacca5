"""Locks that keep writes and re-indexing of one home apart, across processes.

Two lock files in the home (fcntl.flock, so a killed process never leaves a lock behind): writers
share `write.lock`; a re-index holds `reindex.lock` and `write.lock` exclusively. Reads take no lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

WRITE_LOCK, REINDEX_LOCK = "write.lock", "reindex.lock"
LOCK_WAIT_S = 60.0
"""How long a write waits for a brief exclusive hold (another process's clean-up on open)."""


class HomeLocks:
    def __init__(self, home: Path, busy: Callable[[str], Exception]):
        """`busy(message)` makes the error raised when the home is busy (the store's StoreError)."""
        self.home, self._busy = Path(home), busy

    def _fd(self, name: str, mode: int) -> int | None:
        """A descriptor holding flock `mode` on home/name, or None if another holder is in the way.

        Each hold opens its own descriptor: flock conflicts between descriptors even within one
        process, so two stores (or threads) of one process exclude each other too.
        """
        fd = os.open(self.home / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            return None

    def reindex_running(self) -> bool:
        fd = self._fd(REINDEX_LOCK, fcntl.LOCK_EX)
        if fd is None:
            return True
        os.close(fd)
        return False

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Shared hold for adding or deleting documents; refused while a re-index runs."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while (fd := self._fd(WRITE_LOCK, fcntl.LOCK_SH)) is None:
            if self.reindex_running():
                raise self._busy(f"a re-index is running in {self.home}; add or delete documents when it is done")
            if time.monotonic() > deadline:
                raise self._busy(f"the knowledge base in {self.home} stayed busy; try again")
            time.sleep(0.05)  # another process's clean-up on open: brief
        try:
            yield
        finally:
            os.close(fd)

    @contextmanager
    def exclusive_if_idle(self) -> Iterator[bool]:
        """Yields whether the home was idle (no write, no re-index) and is now held exclusively."""
        fd = self._fd(WRITE_LOCK, fcntl.LOCK_EX)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the home for a re-index: no other re-index, no document added or deleted."""
        reindex_fd = self._fd(REINDEX_LOCK, fcntl.LOCK_EX)
        if reindex_fd is None:
            raise self._busy(f"a re-index is already running in {self.home}")
        try:
            write_fd = self._fd(WRITE_LOCK, fcntl.LOCK_EX)
            if write_fd is None:
                raise self._busy(f"documents are being added or deleted in {self.home}; re-index when that is done")
            try:
                yield
            finally:
                os.close(write_fd)
        finally:
            os.close(reindex_fd)


__all__ = ["HomeLocks", "REINDEX_LOCK", "WRITE_LOCK"]
