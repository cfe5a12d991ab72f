"""Screenshots a model can see: an `ImageContent` block, bounded in pixels and bytes, beside a resource
link to the full image.

How it is bounded: the image gets at most a quarter of `max_tokens` as a vision model counts an image
(width × height / 750 tokens, the common rule; 500 tokens = about 700×530 pixels), taken from what the
rest of the answer can spare (its step events and failed events): `get_trace` fits the rest with the
whole share set aside, then with the smallest image worth sending (100 tokens, about 320×240), then with
none, and keeps the first fit that still holds the artifacts and steps the rest holds at the full budget;
the image then gets what is left. It is scaled down (never up) to that and to a long side of at most
1,024 pixels, and encoded as JPEG; a JPEG still above 150 KB is encoded again smaller. The whole answer
(text, structured content, links, image) stays within `max_tokens`, and says what was shown (the
original and shown size; the full image is the resource link) or why nothing was.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

from mcp.types import ImageContent, ResourceLink
from PIL import Image, UnidentifiedImageError

from molar_mcp.client import ApiClientError, TraceClient
from molar_mcp.mcp.tokens import estimate_tokens
from molar_mcp.models import ArtifactRef

PIXELS_PER_TOKEN = 750
IMAGE_BUDGET_SHARE = 4  # an image costs at most max_tokens // 4
IMAGE_MAX_SIDE = 1024
IMAGE_MAX_BYTES = 150_000
SOURCE_MAX_BYTES = 8 * 1024 * 1024  # larger screenshots are left as links: decoding them costs too much
MIN_IMAGE_TOKENS = 100  # below this (about 320×240) an image shows too little to be worth its cost
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
Image.MAX_IMAGE_PIXELS = 40_000_000  # a decompression bomb is refused, not decoded


@dataclass(frozen=True)
class Screenshot:
    block: ImageContent
    link: ResourceLink
    note: str  # for the text: what was shown and how
    omitted: str  # for `omitted`: what was cut and the full image's URI
    tokens: int


def image_tokens(max_tokens: int) -> int:
    """The most an image may cost in an answer of `max_tokens`."""
    return max_tokens // IMAGE_BUDGET_SHARE


def vision_tokens(width: int, height: int) -> int:
    return math.ceil(width * height / PIXELS_PER_TOKEN)


def is_screenshot(artifact: ArtifactRef) -> bool:
    return artifact.kind == "screenshot" or artifact.content_type.lower() in IMAGE_TYPES


def pick_screenshot(artifacts: list[ArtifactRef]) -> ArtifactRef | None:
    """The screenshot worth showing: the first one (the store keeps artifacts in rank order, the test
    runner's failure screenshot before frames taken from the trace)."""
    return next((a for a in artifacts if is_screenshot(a) and 0 < a.size <= SOURCE_MAX_BYTES), None)


def decode(data: bytes) -> Image.Image:
    """`data` decoded as an RGB image. Raises ValueError when it is none (or a decompression bomb)."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc


def bounded_jpeg(image: Image.Image, token_budget: int) -> tuple[bytes, tuple[int, int]]:
    """`image` as a JPEG within `token_budget` vision tokens, IMAGE_MAX_SIDE and IMAGE_MAX_BYTES.
    Returns (jpeg, shown size)."""
    width, height = original = image.size
    scale = min(1.0, IMAGE_MAX_SIDE / max(width, height), math.sqrt(token_budget * PIXELS_PER_TOKEN / (width * height)))
    quality = 80
    while True:
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        shown = image if size == original else image.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        shown.save(out, format="JPEG", quality=quality, optimize=True)
        jpeg = out.getvalue()
        if len(jpeg) <= IMAGE_MAX_BYTES or size == (1, 1):
            return jpeg, size
        if quality > 50:
            quality -= 15
        else:
            scale *= 0.75


def _uri(trace_id: str, artifact: ArtifactRef) -> str:
    return f"molar://traces/{trace_id}/blobs/{artifact.sha256}"


def screenshot_link(trace_id: str, artifact: ArtifactRef) -> ResourceLink:
    return ResourceLink(
        type="resource_link",
        uri=_uri(trace_id, artifact),
        name=artifact.name or "screenshot",
        mime_type=artifact.content_type,
        size=artifact.size,
    )


def _notes(trace_id: str, artifact: ArtifactRef, how: str) -> tuple[str, str]:
    """What was shown, for the text and for `omitted`; the full image is the answer's resource link. The
    text does not repeat the file's name: it is what the run recorded, shown only inside the artifacts fence
    (and in the structured content's `omitted`, which is data). An answer shows at most one screenshot."""
    name = artifact.name or "screenshot"
    return (
        f"The failure screenshot {how}; the full image is its resource link.",
        f"screenshot {name} {how}; full size: the resource link {name}",
    )


def _how(original: tuple[int, int], shown: tuple[int, int]) -> str:
    if shown == original:
        return f"shown at its recorded size {shown[0]}×{shown[1]} (as JPEG)"
    return f"shown downscaled from {original[0]}×{original[1]} to {shown[0]}×{shown[1]} JPEG"


@dataclass(frozen=True)
class ReadScreenshot:
    """A screenshot read and decoded (or why not), to be shown at the room the rest of the answer leaves."""

    trace_id: str
    artifact: ArtifactRef
    image: Image.Image | None
    reason: str  # why it is not shown, when `image` is None

    @property
    def link(self) -> ResourceLink:
        return screenshot_link(self.trace_id, self.artifact)

    def overhead(self, *, with_link: bool = True) -> int:
        """Tokens the answer spends around the image: the notes (in the text and in `omitted`) and, unless
        the answer already links the file, the link; for an unreadable file, the line saying so."""
        link = estimate_tokens(self.link.model_dump_json(by_alias=True, exclude_none=True)) if with_link else 0
        if self.image is None:
            return estimate_tokens(self.reason) + link + 4
        in_text, in_omitted = _notes(self.trace_id, self.artifact, _how((99999, 99999), (9999, 9999)))
        return estimate_tokens(in_text) + estimate_tokens(in_omitted) + link + 8

    def reserves(self, max_tokens: int) -> list[int]:
        """What to set aside before the rest of the answer is fitted, most first: the image's whole share,
        the smallest image worth sending, no image (the line saying why); each with the overhead."""
        if self.image is None:
            return [self.overhead()]
        line = estimate_tokens(self.no_room(max_tokens)) + 2
        return [self.overhead() + image_tokens(max_tokens), self.overhead() + MIN_IMAGE_TOKENS, line]

    def no_room(self, max_tokens: int) -> str:
        return f"The failure screenshot not shown: no room at max_tokens={max_tokens} (raise it to see it)"

    def show(self, room: int, max_tokens: int) -> Screenshot | str:
        """The image within `room` tokens (at most its share of `max_tokens`), or the line saying why not."""
        if self.image is None:
            return self.reason
        budget = min(room, image_tokens(max_tokens))
        if budget < MIN_IMAGE_TOKENS:
            return self.no_room(max_tokens)
        jpeg, shown = bounded_jpeg(self.image, budget)
        block = ImageContent(type="image", data=base64.b64encode(jpeg).decode("ascii"), mime_type="image/jpeg")
        note, omitted = _notes(self.trace_id, self.artifact, _how(self.image.size, shown))
        return Screenshot(block, self.link, note, omitted, vision_tokens(*shown))


async def read_screenshot(client: TraceClient, trace_id: str, artifact: ArtifactRef) -> ReadScreenshot:
    """Fetch and decode a screenshot artifact of the trace whose UUID is `trace_id`."""
    try:
        data, _ = await client.fetch_signed(await client.blob_url(trace_id, artifact.sha256))
        image = decode(data)
    except (ApiClientError, ValueError) as exc:
        reason = f"The failure screenshot not shown ({str(exc)[:80]}); the file is its resource link"
        return ReadScreenshot(trace_id, artifact, None, reason)
    return ReadScreenshot(trace_id, artifact, image, "")
