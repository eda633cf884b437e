"""Self-describing artifacts: the manifest every checkpoint, ONNX file, engine and bundle carries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgeav.contract import InputContract

MANIFEST_FORMAT_VERSION = 1


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk_bytes)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactManifest(BaseModel):
    """What an artifact is: labels, input contract, architecture keys, precision, lineage, metrics."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = Field(MANIFEST_FORMAT_VERSION, ge=1, description="Manifest schema version.")
    kind: str = Field(..., description="checkpoint | onnx | engine | bundle")
    labels: list[str] = Field(..., min_length=1, description="Class names, in logit order.")
    contract: InputContract = Field(default_factory=InputContract, description="Input contract.")
    arch: dict[str, Any] = Field(default_factory=dict, description="Architecture keys that rebuild the model.")
    precision: str = Field("fp32", description="fp32 | fp16 | int8")
    parent_sha256: str | None = Field(None, description="sha256 of the artifact this one was made from.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Metrics it was validated with.")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Stage-specific details (quantization form, tools)."
    )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArtifactManifest:
        return cls.model_validate(json.loads(text))
