"""Content-addressed blobs. `BlobStore`: files `<root>/<sha[:2]>/<sha>`, written atomically (the embedded
store). `store/s3.py` keeps them in an S3-compatible bucket, keyed per org, behind the same calls."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class BlobStore:
    """Blob files on a local (or shared) disk. `org_id` is accepted for the port's sake: files are
    content-addressed across orgs (a sha names the same bytes in every org)."""

    direct_uploads = False  # presigned_put hands out URLs (an object store)

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, org_id: str | None = None) -> str:
        sha = hashlib.sha256(data).hexdigest()
        target = self.path_for(sha)
        if target.exists():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: a reader never sees a half-written blob.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def exists(self, sha256: str, org_id: str | None = None) -> bool:
        return self.path_for(sha256).is_file()

    def read(self, sha256: str, org_id: str | None = None) -> bytes:
        return self.path_for(sha256).read_bytes()

    def size(self, sha256: str, org_id: str | None = None) -> int:
        return self.path_for(sha256).stat().st_size

    def presigned_get(
        self, sha256: str, org_id: str, *, filename: str, content_type: str, disposition: str, ttl: int
    ) -> str | None:
        """A URL the object store itself serves, when there is one (`None`: the API serves the file)."""
        return None

    def presigned_put(self, sha256: str, org_id: str, *, size: int, ttl: int) -> str | None:
        """A URL a reporter uploads a file of `size` bytes whose SHA-256 is `sha256` to, straight into the
        object store, for `ttl` seconds (`None`: there is no object store; upload through the API)."""
        return None

    def read_upload(self, sha256: str, org_id: str, *, max_bytes: int) -> bytes | None:
        """The bytes uploaded through `presigned_put` (None: nothing uploaded under that sha256)."""
        return None

    def drop_upload(self, sha256: str, org_id: str) -> None:
        """Remove an uploaded file once ingested (or found not to match its sha256)."""
