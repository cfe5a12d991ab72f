"""Blobs in an S3-compatible bucket (`--blob-url s3://bucket/prefix`), through boto3.

Keys are `<prefix>/orgs/<org>/blobs/<sha[:2]>/<sha>`: content-addressed within an org, so an org's
objects can be listed, exported or deleted on their own. Endpoint, region and credentials come from the
standard AWS settings (`AWS_ENDPOINT_URL`, `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, …); presigned URLs
carry the host of `MOLAR_S3_PUBLIC_URL` when clients reach the store at another address than the server.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from molar_mcp.store.blobs import BlobStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def parse_blob_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` → `(bucket, prefix)` (prefix without slashes at either end)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"blob URL must look like s3://bucket/prefix, not {url!r}")
    return parsed.netloc, parsed.path.strip("/")


@functools.lru_cache(maxsize=1)
def _session() -> Any:
    import boto3

    # One session: its loaders cache the service model, so later clients are cheap to make.
    return boto3.session.Session()


def s3_client(endpoint_url: str | None = None) -> S3Client:
    from botocore.config import Config

    config = Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
    client: S3Client = _session().client("s3", endpoint_url=endpoint_url, config=config)
    return client


class S3BlobStore(BlobStore):
    direct_uploads = True

    def __init__(self, url: str, scratch: Path, *, client: S3Client | None = None) -> None:
        # `root` is local scratch space only (temp files); no blob lives there.
        super().__init__(scratch)
        self.url = url
        self.bucket, self.prefix = parse_blob_url(url)
        self.client = client or s3_client(os.environ.get("AWS_ENDPOINT_URL"))
        public = os.environ.get("MOLAR_S3_PUBLIC_URL")
        self.public_client = s3_client(public) if public else self.client

    def key(self, sha256: str, org_id: str | None) -> str:
        if org_id is None:
            raise ValueError("blobs in an object store are kept per org: give the org")
        base = f"{self.prefix}/" if self.prefix else ""
        return f"{base}orgs/{org_id}/blobs/{sha256[:2]}/{sha256}"

    def put(self, data: bytes, org_id: str | None = None) -> str:
        sha = hashlib.sha256(data).hexdigest()
        # One PUT: S3 makes an object visible whole or not at all (no half-written blob), and writing
        # the same content twice is harmless.
        self.client.put_object(Bucket=self.bucket, Key=self.key(sha, org_id), Body=data)
        return sha

    def exists(self, sha256: str, org_id: str | None = None) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(sha256, org_id))
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    def read(self, sha256: str, org_id: str | None = None) -> bytes:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256, org_id))
        except ClientError as exc:
            if _status(exc) == 404:
                raise FileNotFoundError(sha256) from exc
            raise
        data: bytes = obj["Body"].read()
        return data

    def size(self, sha256: str, org_id: str | None = None) -> int:
        head = self.client.head_object(Bucket=self.bucket, Key=self.key(sha256, org_id))
        return int(head["ContentLength"])

    def presigned_get(
        self, sha256: str, org_id: str, *, filename: str, content_type: str, disposition: str, ttl: int
    ) -> str | None:
        safe = filename.replace('"', "").replace("\\", "")
        url: str = self.public_client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.key(sha256, org_id),
                "ResponseContentType": content_type,
                "ResponseContentDisposition": f'{disposition}; filename="{safe}"',
            },
            ExpiresIn=ttl,
        )
        return url

    def upload_key(self, sha256: str, org_id: str) -> str:
        """Where a reporter's direct upload lands: beside the org's blobs, never among them (its bytes are
        checked against the sha256 when an ingest takes it)."""
        base = f"{self.prefix}/" if self.prefix else ""
        return f"{base}orgs/{org_id}/uploads/{sha256[:2]}/{sha256}"

    def presigned_put(self, sha256: str, org_id: str, *, size: int, ttl: int) -> str | None:
        url: str = self.public_client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": self.upload_key(sha256, org_id), "ContentLength": size},
            ExpiresIn=ttl,
        )
        return url

    def read_upload(self, sha256: str, org_id: str, *, max_bytes: int) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.upload_key(sha256, org_id))
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        body = obj["Body"]
        data: bytes = body.read(max_bytes + 1)
        body.close()
        return data

    def drop_upload(self, sha256: str, org_id: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.upload_key(sha256, org_id))

    def check(self) -> None:
        """Raise unless the bucket answers (readiness)."""
        self.client.head_bucket(Bucket=self.bucket)

    def scratch_file(self) -> Any:
        return tempfile.NamedTemporaryFile(dir=self.root)


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", {}) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
