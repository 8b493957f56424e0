"""What an S3 resumable upload keeps of itself, and how this host's processes take turns
with it: the state record (:class:`UploadRecord`, stored as JSON at
``PREFIX/.gridserve/uploads/<id>.json``), the part-size rule, and :class:`HostLocks`. The
operations are :mod:`gridserve.storage.s3uploads`'s.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gridserve.storage.base import CorruptFile, utc
from gridserve.storage.resumable import UploadConflict, UploadLocked, UploadState

UPLOADS = ".gridserve/uploads/"
UPLOAD_DATA = ".gridserve/upload-data/"
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024**3
UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class UploadRecord:
    """The stored state of one upload: :class:`UploadState` and where its bytes are (the
    multipart upload's id and the ETags of its full parts; the tail is what the offset says
    is past them). ``generation``: a random token renewed by every committed append: it names
    the tail object (so a state names exactly the tail its append wrote) and keys the running
    digests (so a process trusts its digests only while the state is still its own commit).
    ``staged``: the multipart upload was completed onto the staging key."""

    state: UploadState
    part_size: int
    multipart: str | None = None
    parts: list[str] = field(default_factory=list)  # ETags of parts 1..n, each part_size bytes
    staged: bool = False
    generation: str = ""

    @property
    def tail_length(self) -> int:
        return self.state.offset - len(self.parts) * self.part_size

    @property
    def tail_name(self) -> str:
        return f"tail-{self.state.offset}-{self.generation}"

    @property
    def digests_key(self) -> str:
        """What :class:`RunningDigests` knows this commit's digests by."""
        return f"{self.state.id}.{self.generation}"

    def to_json(self) -> bytes:
        s = self.state
        return json.dumps(
            {
                "v": 1,
                "name": s.name,
                "length": s.length,
                "offset": s.offset,
                "created": s.created_at.isoformat(),
                "expires": s.expires_at.isoformat(),
                "owner": s.owner,
                "metadata": s.metadata,
                "head": base64.b64encode(s.head).decode(),
                "part_size": self.part_size,
                "multipart": self.multipart,
                "parts": self.parts,
                "staged": self.staged,
                "generation": self.generation,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, upload_id: str, data: bytes) -> UploadRecord:
        try:
            d = json.loads(data)
            state = UploadState(
                id=upload_id,
                name=str(d["name"]),
                length=None if d["length"] is None else int(d["length"]),
                offset=int(d["offset"]),
                created_at=utc(datetime.fromisoformat(d["created"])),
                expires_at=utc(datetime.fromisoformat(d["expires"])),
                owner=str(d["owner"]),
                metadata={str(k): str(v) for k, v in dict(d["metadata"]).items()},
                head=base64.b64decode(d["head"]),
            )
            return cls(
                state,
                int(d["part_size"]),
                d["multipart"],
                [str(etag) for etag in d["parts"]],
                bool(d["staged"]),
                str(d["generation"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CorruptFile(f"upload {upload_id}: unreadable state") from exc


class HostLocks:
    """Non-blocking exclusive locks by name, for the tasks of this process (a set) and the
    processes of this host (``flock`` on ``<directory>/<scope><name>.lock``, removed on release
    while held; a taker checks that the file it locked is still the one at the path).
    ``scope`` keeps the locks of different storages sharing a directory apart."""

    def __init__(self, directory: Path, scope: str = "") -> None:
        self.directory = directory
        self.scope = scope
        self._held: set[str] = set()

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        if name in self._held:
            raise UploadLocked(name)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / f"{self.scope}{name}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UploadLocked(name) from exc
                raise
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed it meanwhile: lock the new one
        self._held.add(name)
        try:
            yield
        finally:
            self._held.discard(name)
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)


def host_locks(directory: str | None, identity: str) -> HostLocks:
    """The upload locks of the storage named by ``identity`` (endpoint, bucket, prefix), in
    ``directory`` or by default in one directory of this user under the temporary directory,
    shared by every storage (the scope, a digest of ``identity``, keeps them apart)."""
    scope = hashlib.sha256(identity.encode()).hexdigest()[:24] + "-"
    if directory:
        return HostLocks(Path(directory), scope)
    return HostLocks(Path(tempfile.gettempdir()) / f"gridserve-{os.getuid()}-s3-uploads", scope)


def part_size_for(length: int | None, part_size: int) -> int:
    """The part size of an upload of ``length`` bytes: ``part_size``, or more when that would
    take more than 10,000 parts (an S3 limit). UploadConflict beyond S3's largest object."""
    if length is None:
        return part_size
    size = max(part_size, math.ceil(length / MAX_PARTS))
    if size > MAX_PART_SIZE:
        raise UploadConflict(f"{length} bytes is more than S3 stores in one object")
    return size
