"""Opt-in download with an MD5 check and an atomic write (temp file next to the target, rename)."""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Union

PathLike = Union[str, os.PathLike]

_CHUNK = 1 << 20


class ChecksumError(RuntimeError):
    """A file's MD5 differs from the expected one (corrupt or wrong download)."""


def md5sum(path: PathLike) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest: PathLike, md5: str, *, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` unless a file with the right MD5 is already there.

    The bytes go to a temporary file next to `dest`, hashed on the way; only a file whose MD5
    matches is renamed onto `dest` (atomic on one file system), so `dest` is never half written.

    Args:
      url: http(s):// or file:// URL.
      dest: final path of the file; its folder is created.
      md5: expected hex MD5 (lower case).
      timeout: seconds to wait for the server.

    Returns:
      `dest` as a Path.

    Raises:
      ChecksumError: the downloaded bytes have another MD5; the temporary file is deleted and
        `dest` is left as it was.
      OSError: the download failed (urllib.error.URLError is one); no temporary file is left.
    """
    dest = Path(dest).expanduser()
    if dest.is_file() and md5sum(dest) == md5.lower():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != md5.lower():
            raise ChecksumError(
                f"MD5 of {url} is {h.hexdigest()}, expected {md5.lower()}: the download is corrupt"
                " or the file changed; nothing was written. Retry, or download it by hand."
            )
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return dest
