"""A zip archive read safely: paths checked, links refused, expansion bounded, members read on demand."""

from __future__ import annotations

import io
import zipfile
import zlib

from molar_mcp.ingest.bundle import BundleError, _safe_name

MAX_MEMBERS = 50_000


def is_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


class SafeZip:
    """The members of a zip, by normalised name. `read` decompresses one member when asked.

    The declared sizes of all members together must stay under `max_expanded` (a zip bomb is refused
    before anything is decompressed); zipfile never yields more than a member's declared size.
    """

    def __init__(self, data: bytes, *, label: str, max_expanded: int, max_members: int = MAX_MEMBERS) -> None:
        self.label = label
        if not is_zip(data):
            raise BundleError("unsupported_media_type", f"{label} is not a zip archive")
        try:
            self._zf = zipfile.ZipFile(io.BytesIO(data))
            infos = self._zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise BundleError("bad_bundle", f"{label} is a corrupt or truncated zip archive: {exc}") from exc
        if len(infos) > max_members:
            raise BundleError("payload_too_large", f"{label} has {len(infos)} files; the limit is {max_members}")
        self._infos: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = _safe_name(info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise BundleError("unsafe_path", f"{label}: archive path {info.filename!r} is a link")
            if info.is_dir():
                continue
            total += info.file_size
            if total > max_expanded:
                raise BundleError(
                    "payload_too_large",
                    f"{label} expands past {max_expanded} bytes (a zip bomb, or a trace too large to ingest)",
                )
            self._infos[name] = info
        self.expanded_size = total

    @property
    def names(self) -> list[str]:
        return list(self._infos)

    def has(self, name: str) -> bool:
        return name in self._infos

    def size(self, name: str) -> int:
        return self._infos[name].file_size

    def read(self, name: str) -> bytes:
        info = self._infos.get(name)
        if info is None:
            raise BundleError("validation_error", f"{self.label} has no {name}")
        try:
            return self._zf.read(info)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError, zlib.error) as exc:
            raise BundleError("bad_bundle", f"{self.label}: cannot read {name}: {exc}") from exc
