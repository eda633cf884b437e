"""Core pieces every stage relies on: time arithmetic, registries, the input contract, manifests."""

from __future__ import annotations

import pytest

from edgeav.contract import AudioContract, InputContract
from edgeav.errors import UnknownNameError
from edgeav.manifest import ArtifactManifest
from edgeav.registry import Registry
from edgeav.timebase import NS_PER_S, ns_for_samples, s_to_ns, samples_for_ns


def test_samples_and_ns_round_trip_without_drift() -> None:
    # an hour of 0.5 s hops at 16 kHz and 44.1 kHz: summing per-hop conversions equals the whole conversion
    for rate in (16_000, 44_100, 48_000):
        hop_ns = s_to_ns(0.5)
        total = sum(samples_for_ns(hop_ns, rate) for _ in range(7200))
        assert total == samples_for_ns(3600 * NS_PER_S, rate)
    assert samples_for_ns(NS_PER_S, 16_000) == 16_000
    assert ns_for_samples(1, 3) == 333_333_333  # rounds half up on integers
    assert ns_for_samples(2, 3) == 666_666_667


def test_registry_unknown_name_lists_valid_names() -> None:
    r: Registry[int] = Registry("widget")

    @r.register("a")
    def _a() -> int:
        return 1

    assert r.create("a") == 1
    with pytest.raises(UnknownNameError) as e:
        r.create("b")
    assert "unknown widget 'b'" in str(e.value) and "a" in str(e.value)
    with pytest.raises(ValueError):
        r.register("a")(_a)


def test_contract_shapes_and_validation() -> None:
    c = InputContract()
    assert c.shapes(2) == {"audio": (2, 80_000), "image": (2, 3, 224, 224), "mask": (2, 2)}
    with pytest.raises(ValueError):
        AudioContract(sample_rate_hz=16_000, fmax_hz=9_000)


def test_manifest_round_trip() -> None:
    m = ArtifactManifest(kind="onnx", labels=["a", "b"], precision="int8", metrics={"acc": 0.9})
    assert ArtifactManifest.from_json(m.to_json()) == m
    with pytest.raises(ValueError):
        ArtifactManifest.model_validate({"kind": "onnx", "labels": ["a"], "bogus": 1})
