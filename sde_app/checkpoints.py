"""Checkpoints that never lose work: atomic writes, a checksum, and a fallback chain.

Layout of `<workdir>/checkpoints/`:
  checkpoint.pt          the resume checkpoint (latest), written every `checkpoint_freq` steps
  checkpoint.prev.pt     the resume checkpoint before it (the fallback)
  snapshot_<step>.pt     numbered snapshots, every `snapshot_freq` steps (kept)
  <name>.damaged[.k]     a file found damaged, moved aside (never deleted, never rotated over a
                         good one)

Every file is written to a temporary file in the same directory, flushed and fsynced, then moved
into place with `os.replace` (atomic on POSIX), and the directory is fsynced: a crash or SIGKILL
at any moment leaves either the old file or the new one, never a half-written file under a real
name. A file holds {"format", "sha256", "state"}; the checksum covers every tensor's bytes,
dtype and shape and every other value of `state`, so a file that loads but was damaged (or
truncated in a way the zip reader tolerates) is still caught. Files are read with
`torch.load(weights_only=True)`: states hold only tensors, numbers, strings, lists and dicts.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

FORMAT = "score-sde-checkpoint/1"
RESUME_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"
SNAPSHOT_RE = re.compile(r"^snapshot_(\d+)\.pt$")
# Test hook: seconds to sleep after the temporary file is written, before it is moved into place,
# so that tests can SIGKILL a run in the middle of a checkpoint write.
SLOW_WRITE_ENV = "SCORE_SDE_TEST_CHECKPOINT_SLEEP"

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or whose checksum does not match."""


class DamagedCheckpointsError(ValueError):
    """Checkpoints exist but none is intact: a run must not silently start again from step 0.

    Attributes: `folder`, `files` (the damaged files); the message says what to do after `fix`.
    """

    def __init__(self, folder: Path, files: List[Path], fix: str = "restore a good checkpoint into that folder"):
        self.folder, self.files = folder, files
        names = ", ".join(p.name for p in files)
        super().__init__(f"every checkpoint in {folder} is damaged ({names}); nothing to resume from: {fix}")

    def with_fix(self, fix: str) -> "DamagedCheckpointsError":
        return DamagedCheckpointsError(self.folder, self.files, fix)


# ------------------------------------------------------------------------------------ checksum
def _update_digest(h, value: Any) -> None:
    """Feed a state (nested dicts/lists of tensors and plain values) into hash `h` in a fixed order."""
    if torch.is_tensor(value):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(b"D%d" % len(value))
        for k in sorted(value, key=repr):
            h.update(repr(k).encode())
            _update_digest(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(b"L%d" % len(value))
        for v in value:
            _update_digest(h, v)
    else:
        h.update(f"V{type(value).__name__}:{value!r}".encode())


def state_digest(state: Any) -> str:
    """SHA-256 of a checkpoint state, independent of where its tensors live."""
    h = hashlib.sha256()
    _update_digest(h, state)
    return h.hexdigest()


# ---------------------------------------------------------------------------------- read, write
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(state: Dict[str, Any], path: PathLike, *, keep_previous: Optional[PathLike] = None) -> None:
    """Write `state` to `path` atomically, with its checksum.

    Args:
      state: tensors, numbers, strings, lists and dicts only.
      path: destination.
      keep_previous: if given and `path` exists, the old file is first moved there (atomically),
        so that the last good checkpoint survives until the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "sha256": state_digest(state), "state": state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        sleep = float(os.environ.get(SLOW_WRITE_ENV, "0") or 0)
        if sleep > 0:
            time.sleep(sleep)
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def load_state(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read and verify a checkpoint written by `atomic_save`.

    Raises:
      CorruptCheckpointError: the file cannot be loaded, is not a checkpoint of this format, or
        its checksum does not match (the message says which).
      FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # any reader error means the bytes are damaged
        first = str(err).splitlines()[0].split(". ")[0] if str(err) else ""
        raise CorruptCheckpointError(f"{path} cannot be read ({type(err).__name__}: {first})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state" not in payload:
        raise CorruptCheckpointError(f"{path} is not a {FORMAT} checkpoint")
    if state_digest(payload["state"]) != payload.get("sha256"):
        raise CorruptCheckpointError(f"{path} fails its checksum (the file is damaged)")
    return payload["state"]


# ------------------------------------------------------------------------------ the directory
class CheckpointDir:
    """The checkpoints of one run (see the module docstring for the layout)."""

    def __init__(self, workdir: PathLike):
        self.dir = Path(workdir) / "checkpoints"

    @property
    def resume_path(self) -> Path:
        return self.dir / RESUME_NAME

    @property
    def previous_path(self) -> Path:
        return self.dir / PREVIOUS_NAME

    def snapshot_path(self, step: int) -> Path:
        return self.dir / f"snapshot_{step:08d}.pt"

    def snapshots(self) -> List[Tuple[int, Path]]:
        """(step, path) of the numbered snapshots, newest first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir()
                 if (m := SNAPSHOT_RE.match(p.name))]
        return sorted(found, reverse=True)

    def candidates(self) -> List[Path]:
        """Files to resume from: the resume checkpoint, its predecessor, then the snapshots newest
        first (`load_latest` picks the newest intact one of them)."""
        paths = [self.resume_path, self.previous_path] + [p for _, p in self.snapshots()]
        return [p for p in paths if p.is_file()]

    def damaged(self) -> List[Path]:
        """Files moved aside as damaged (`move_aside`)."""
        return sorted(self.dir.glob("*.damaged*")) if self.dir.is_dir() else []

    def has_checkpoint(self) -> bool:
        return bool(self.candidates())

    def remove_temporaries(self) -> None:
        """Delete temporary files left by an interrupted write."""
        if self.dir.is_dir():
            for p in self.dir.glob(".*.tmp"):
                p.unlink(missing_ok=True)

    def move_aside(self, path: Path) -> Path:
        """Rename a damaged file to `<name>.damaged` (`.damaged.1`, ... if taken); never deletes it."""
        target = path.with_name(path.name + ".damaged")
        k = 0
        while target.exists():
            k += 1
            target = path.with_name(f"{path.name}.damaged.{k}")
        os.replace(path, target)
        _fsync_dir(path.parent)
        return target

    def save_resume(self, state: Dict[str, Any]) -> Path:
        """Write the resume checkpoint, keeping the previous one as the fallback. A current resume
        checkpoint that is not a complete file is moved aside, not rotated over the fallback."""
        if self.resume_path.is_file() and not zipfile.is_zipfile(self.resume_path):
            log.warning("Damaged checkpoint %s moved aside to %s (not rotated over %s).", self.resume_path,
                        self.move_aside(self.resume_path).name, self.previous_path.name)
        atomic_save(state, self.resume_path, keep_previous=self.previous_path)
        return self.resume_path

    def save_snapshot(self, state: Dict[str, Any], step: int) -> Path:
        path = self.snapshot_path(step)
        atomic_save(state, path)
        return path

    def load_latest(self, map_location: Any = "cpu", *, move_aside: bool = False
                    ) -> Tuple[Optional[Dict[str, Any]], Optional[Path]]:
        """The newest intact checkpoint: (state, path), or (None, None) when there is none.

        The resume checkpoint is read first, its predecessor if it is damaged, then any snapshot
        newer than the one found (newest first): so a damaged `checkpoint.pt` never hides a newer
        intact snapshot. Each damaged file is reported in one line (logging.WARNING) and, with
        `move_aside` (training, whose next save would otherwise rotate it over the good
        fallback), renamed to `<name>.damaged`.

        Raises:
          DamagedCheckpointsError: checkpoints exist (or were moved aside before) but none is
            intact; the message names them.
        """
        found, damaged = None, []

        def attempt(path):
            try:
                return load_state(path, map_location), path
            except CorruptCheckpointError as err:
                damaged.append(path)
                moved = f"; moved aside to {self.move_aside(path).name}" if move_aside else ""
                log.warning("Skipping damaged checkpoint: %s%s.", err, moved)
                return None

        for path in (self.resume_path, self.previous_path):
            if path.is_file() and (found := attempt(path)) is not None:
                break
        newest = int(found[0]["step"]) if found else -1
        for step, path in self.snapshots():
            if step <= newest:
                break
            if (better := attempt(path)) is not None:
                found = better
                break
        if found is None and (damaged or self.damaged()):
            raise DamagedCheckpointsError(self.dir, self.damaged() if move_aside else damaged + self.damaged())
        if found is not None and damaged:
            log.warning("Resuming from %s at step %d (the newest intact checkpoint).", found[1].name,
                        int(found[0]["step"]))
        return found if found is not None else (None, None)
