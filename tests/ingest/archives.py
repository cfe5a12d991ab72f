"""Raw archives for ingest tests: any member, link or compression, and the bad-bundle catalogue.

`tests/bundles.py` builds well-formed bundles; this module builds the malformed ones that
docs/bundle-format.md's validation table promises to refuse. The API tests reuse the catalogue.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from molar_mcp.store import SqliteTraceStore
from molar_mcp.store.s3 import S3BlobStore
from tests.bundles import artifact_for, checkout_events, make_bundle, summary

PNG = b"\x89PNG\r\n\x1a\nnot-really-a-png"
# A small limit keeps the size cases fast; every well-formed test bundle is far below it.
SMALL_LIMIT = 100_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def noise(size: int, seed: int = 0) -> bytes:
    """Incompressible, deterministic bytes."""
    return random.Random(seed).randbytes(size)


def bundle_files(
    summary_doc: dict[str, object] | None = None, *, prefix: str = "", blobs: tuple[bytes, ...] = ()
) -> dict[str, bytes]:
    """The members of a well-formed checkout bundle, optionally under a top-level folder."""
    events = "\n".join(json.dumps(e) for e in checkout_events()) + "\n"
    files = {
        f"{prefix}summary.json": json.dumps(summary_doc or summary()).encode(),
        f"{prefix}events.ndjson": events.encode(),
    }
    for data in blobs:
        files[f"{prefix}blobs/{sha(data)}"] = data
    return files


def pack_tar(files: dict[str, bytes], *, links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """A tar.gz of `files`; `links` maps a member name to (tar type, target) for link members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pack_zip(files: dict[str, bytes], *, symlinks: dict[str, str] | None = None, deflate: bool = False) -> bytes:
    """A zip of `files`; `symlinks` maps a member name to its target (unix mode 0o120777)."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_with_corrupt_member() -> bytes:
    """A deflated zip whose first member's compressed bytes are flipped (its directory is intact)."""
    data = bytearray(pack_zip(bundle_files(summary(scenario_title="x" * 2000)), deflate=True))
    start = 30 + len("summary.json")  # local header (30 bytes) + name, then the deflate stream
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    return bytes(data)


def events_ndjson(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class BadBundle:
    """One row of the validation table: the archive, the error kind, words the message must hold."""

    name: str
    data: bytes
    kind: str
    says: str = ""


def bad_bundles() -> list[BadBundle]:
    ok_events = [json.dumps(e) for e in checkout_events()[:3]]
    other = b"not the content its name promises"
    return [
        BadBundle("not-an-archive", b"this is a plain text file\n", "unsupported_media_type"),
        BadBundle("corrupt-gzip", b"\x1f\x8b\x08\x00" + noise(200), "bad_bundle"),
        BadBundle("truncated-gzip", make_bundle()[:200], "bad_bundle"),
        BadBundle("gzip-of-not-a-tar", _gzip(b"hello, no tar here" * 40), "bad_bundle"),
        BadBundle("corrupt-zip", b"PK\x03\x04" + noise(200), "bad_bundle"),
        BadBundle("zip-with-corrupt-member", zip_with_corrupt_member(), "bad_bundle"),
        BadBundle("missing-events", make_bundle(omit=("events.ndjson",)), "validation_error", "events.ndjson"),
        BadBundle("missing-summary", make_bundle(omit=("summary.json",)), "validation_error", "summary.json"),
        BadBundle(
            "line-not-json",
            make_bundle(events_raw=events_ndjson(ok_events[0], ok_events[1], "{not json")),
            "validation_error",
            "line 3",
        ),
        BadBundle(
            "event-missing-kind",
            make_bundle(events_raw=events_ndjson(ok_events[0], '{"seq": 1, "ts": 5}')),
            "validation_error",
            "line 2: kind",
        ),
        BadBundle(
            "seq-goes-backwards",
            make_bundle(events_raw=events_ndjson(ok_events[0], ok_events[2], ok_events[1])),
            "validation_error",
            "line 3",
        ),
        BadBundle(
            "blob-hash-mismatch",
            make_bundle(extra={f"blobs/{sha(PNG)}": other}),
            "validation_error",
            sha(other),
        ),
        BadBundle(
            "artifact-names-missing-blob",
            make_bundle(summary(artifacts=[artifact_for(PNG)])),
            "validation_error",
            sha(PNG),
        ),
        BadBundle("tar-dotdot", pack_tar({**bundle_files(), "../evil": b"x"}), "unsafe_path", "../evil"),
        BadBundle("zip-dotdot", pack_zip({**bundle_files(), "a/../../evil": b"x"}), "unsafe_path"),
        BadBundle("tar-absolute", pack_tar({**bundle_files(), "/etc/x": b"x"}), "unsafe_path", "/etc/x"),
        BadBundle("zip-absolute", pack_zip({**bundle_files(), "/etc/x": b"x"}), "unsafe_path", "/etc/x"),
        BadBundle(
            "tar-symlink",
            pack_tar(bundle_files(), links={"blobs/link": (tarfile.SYMTYPE, "/etc/passwd")}),
            "unsafe_path",
            "link",
        ),
        BadBundle(
            "tar-hardlink",
            pack_tar(bundle_files(), links={"hard": (tarfile.LNKTYPE, "summary.json")}),
            "unsafe_path",
            "link",
        ),
        BadBundle("zip-symlink", pack_zip(bundle_files(), symlinks={"blobs/link": "/etc/passwd"}), "unsafe_path"),
        BadBundle(
            "too-large",
            make_bundle(extra={"padding.bin": noise(SMALL_LIMIT + 1000)}),
            "payload_too_large",
            str(SMALL_LIMIT),
        ),
        BadBundle(
            "zip-bomb",
            pack_zip({**bundle_files(), "zeros.bin": bytes(9 * SMALL_LIMIT)}, deflate=True),
            "payload_too_large",
            "expands",
        ),
    ]


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


@dataclass(frozen=True)
class Stored:
    """What a data dir holds: rows and blob files. Equal before and after a refused ingest."""

    traces: int
    events: int
    blob_files: int


def stored(store: SqliteTraceStore) -> Stored:
    """Rows in every org, and blobs, of the store on either engine."""
    with store.db.read() as conn:
        (traces,) = conn.execute("SELECT count(*) FROM traces").fetchone()
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    return Stored(traces, events, blob_count(store))


def blob_count(store: SqliteTraceStore) -> int:
    """Blob files in the data dir, or objects in the bucket."""
    blobs = store.blobs
    if isinstance(blobs, S3BlobStore):
        listed = blobs.client.list_objects_v2(Bucket=blobs.bucket, Prefix=blobs.prefix)
        return len(listed.get("Contents", []))
    return blob_file_count(store.data_dir)


def blob_file_count(data_dir: Path) -> int:
    return sum(1 for p in (data_dir / "blobs").rglob("*") if p.is_file())
