"""Deterministic bundles for tests, built in memory (format: docs/bundle-format.md)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from typing import Any

BASE_TS = 1_763_629_200_000  # 2025-11-20T09:00:00Z


def checkout_events(*, fail: bool = True) -> list[dict[str, Any]]:
    """A 7-step checkout: the webhook at step 5 answers 404 and step 7's URL assertion fails."""
    events: list[dict[str, Any]] = []

    def add(kind: str, step: int | None, **fields: Any) -> None:
        ev: dict[str, Any] = {"seq": len(events), "ts": BASE_TS + 100 * len(events), "kind": kind}
        if step is not None:
            ev["step_id"] = f"s{step}"
        ev.update(fields)
        events.append(ev)

    titles = [
        "Open shop",
        "Add to cart",
        "Apply coupon",
        "Checkout",
        "Stripe webhook",
        "Upgrade plan",
        "Verify",
    ]
    for n, title in enumerate(titles, start=1):
        add("step.start", n, message=title, payload={"title": title})
        add("network.request", n, payload={"request_id": f"r{n}", "method": "POST", "url": f"/api/step{n}"})
        status = 404 if (fail and n == 5) else 200
        add(
            "network.response",
            n,
            payload={
                "request_id": f"r{n}",
                "method": "POST",
                "url": "/api/webhooks/stripe" if n == 5 else f"/api/step{n}",
                "status": status,
                "duration_ms": 12,
                "headers": {"authorization": "Bearer sk_live_abcdefghijklmnop"},
            },
        )
        if n == 7:
            ok = not fail
            add(
                "assertion",
                n,
                ok=ok,
                message="expected url /billing?upgraded=true; got /billing?upgraded=false" if fail else "url ok",
                payload={"expected": "/billing?upgraded=true", "actual": "/billing?upgraded=false"},
            )
        if fail and n == 5:
            add("console", n, payload={"level": "error", "text": "Failed to load resource: 404"})
        add("step.end", n, ok=not (fail and n == 7), payload={"duration_ms": 100})
    return events


def summary(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": "molar-bundle/1",
        "scenario_slug": "stripe-subscription-upgrade",
        "scenario_title": "Upgrade a subscription",
        "status": "failed",
        "source": "pr",
        "code_sha": "a1b2c3d4e5",
        "failure_signature": "webhook-404",
    }
    base.update(fields)
    return base


def make_bundle(
    summary_doc: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    blobs: dict[str, bytes] | None = None,
    *,
    fmt: str = "tar.gz",
    extra: dict[str, bytes] | None = None,
    events_raw: bytes | None = None,
    omit: tuple[str, ...] = (),
) -> bytes:
    files: dict[str, bytes] = {}
    files["summary.json"] = json.dumps(summary_doc if summary_doc is not None else summary()).encode()
    if events_raw is not None:
        files["events.ndjson"] = events_raw
    else:
        evs = events if events is not None else checkout_events()
        files["events.ndjson"] = "\n".join(json.dumps(e) for e in evs).encode() + b"\n"
    for data in (blobs or {}).values():
        files[f"blobs/{hashlib.sha256(data).hexdigest()}"] = data
    files.update(extra or {})
    for name in omit:
        files.pop(name, None)
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def artifact_for(data: bytes, kind: str = "screenshot", name: str = "shot.png") -> dict[str, Any]:
    return {
        "kind": kind,
        "sha256": hashlib.sha256(data).hexdigest(),
        "name": name,
        "content_type": "image/png",
        "size": len(data),
    }
