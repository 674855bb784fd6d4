"""Obscura from Python: private image similarity search over secret-shared images.

The client runs in this process, as the ``obscura`` command does: it logs in at the keepers,
searches without any node seeing the image or its hash, and rebuilds images from any k nodes.
It shares the cluster directory and its session with the command line::

    import obscura

    cluster = obscura.Cluster("/tmp/demo")
    cluster.login("admin", "correct horse battery staple")
    report = cluster.index("photos/")                      # files or folders
    for m in cluster.search("query.jpg", top=5):
        print(m.distance, m.file, m.id)
    picture = cluster.get(report.indexed[0].id, image=True)  # a PIL image (bytes without image=True)
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import os
from typing import Union

from ._obscura import Cluster as _Native
from ._obscura import ObscuraError

__all__ = ["Cluster", "Match", "Indexed", "Skipped", "IndexReport", "Login", "ObscuraError"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class Match:
    """A stored image close to the query."""

    id: str
    """The image id (32 hex digits)."""
    distance: int
    """Hamming distance between the two perceptual hashes (0 is the same picture)."""
    file: str | None
    """The file it was indexed from, where this client indexed it."""


@dataclasses.dataclass(frozen=True)
class Indexed:
    path: str
    id: str


@dataclasses.dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class IndexReport:
    indexed: list[Indexed]
    skipped: list[Skipped]
    recovered: list[str]
    """Images an interrupted run had committed and never reported."""
    ledger_error: str | None
    """Set when the images were indexed but the ledger did not take their registrations."""
    warnings: list[str]
    """What went wrong on the way without stopping it (a keeper replaced, a node the ledger
    missed, the file names not kept)."""


@dataclasses.dataclass(frozen=True)
class Login:
    user: str
    keepers: list[int]
    expires: datetime.datetime
    """When the first of the sessions ends (aware, UTC)."""


def _files(paths: tuple[PathLike, ...]) -> list[str]:
    """Files, with folders walked in name order (hidden entries left out)."""
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
        else:
            out.append(p)
    return out


def _image_bytes(image) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if hasattr(image, "save") and hasattr(image, "size"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    with open(os.fspath(image), "rb") as f:
        return f.read()


class Cluster:
    """A cluster, through its directory (made by ``obscura cluster init``, or a user's copy)."""

    def __init__(self, directory: PathLike):
        self.directory = os.fspath(directory)
        self._native = _Native(self.directory)

    def __repr__(self) -> str:
        return f"obscura.Cluster({self.directory!r})"

    @property
    def user(self) -> str | None:
        """The account logged in, if any."""
        return self._native.user()

    def login(self, user: str, password: str) -> Login:
        """Log in with every keeper that answers (OPAQUE: the password never leaves this process)."""
        name, keepers, expires_at = self._native.login(user, password)
        expires = datetime.datetime.fromtimestamp(expires_at, tz=datetime.timezone.utc)
        return Login(name, list(keepers), expires)

    def logout(self) -> str | None:
        """End the sessions at the keepers; who was logged out."""
        return self._native.logout()

    def index(self, *paths: PathLike) -> IndexReport:
        """Share image files (and folders, walked) among the nodes. Data owner only."""
        files = _files(paths)
        indexed, skipped, recovered, ledger_error, warnings = self._native.index(files)
        return IndexReport(
            [Indexed(files[i], id) for i, id in indexed],
            [Skipped(files[i], why) for i, why in skipped],
            list(recovered),
            ledger_error,
            list(warnings),
        )

    def search(self, image, top: int = 10, max_distance: int = 10) -> list[Match]:
        """The stored images closest to ``image`` (a path, the file's bytes, or a PIL image)."""
        found = self._native.search(_image_bytes(image), top, max_distance)
        return [Match(id, distance, file) for id, distance, file in found]

    def get(self, id: str, image: bool = False):
        """Rebuild image ``id`` from any k nodes: the file's bytes, or with ``image=True`` a
        PIL image (Pillow must be installed)."""
        data = self._native.get(id)
        if not image:
            return data
        from PIL import Image

        return Image.open(io.BytesIO(data))
