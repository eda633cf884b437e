"""The in-model front end: log-mel against librosa on real bird recordings, in PyTorch and in ONNX Runtime; image
normalization; the ONNX graph uses only ops TensorRT runs and keeps its nodes under /frontend/."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeav.contract import AudioContract, ImageContract, InputContract
from edgeav.timebase import s_to_ns
from edgeav.train.models import FRONTEND_NODE_PREFIX, Frontend, ImageNormalize, LogMel, mel_filterbank

DB_TOL = 0.05  # dB, on every bin above -80 dB
DB_FLOOR = -80.0


def _librosa_db(wave: np.ndarray, c: AudioContract, top_db: float | None = None) -> np.ndarray:
    """librosa's log-mel with the contract's parameters: (n_mels, frames) dB."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=wave,
        sr=c.sample_rate_hz,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=c.n_mels,
        fmin=c.fmin_hz,
        fmax=c.fmax_hz,
    )
    return librosa.power_to_db(mel, ref=1.0, amin=c.log_floor, top_db=top_db)


@pytest.fixture(scope="module")
def bird_windows(shared_data) -> np.ndarray:
    """The first 5 s of every bird recording, decoded and resampled to 16 kHz by edgeav's own media reader
    (zero-padded when shorter): (N, 80000) float32."""
    from edgeav.train.data.media import decode_audio

    c = AudioContract()
    files = sorted((shared_data / "birds" / "recordings").glob("*/*"))
    if not files:
        pytest.skip(f"no recordings under {shared_data / 'birds' / 'recordings'}")
    out = []
    for f in files:
        y = decode_audio(f, c.sample_rate_hz, max_duration_ns=s_to_ns(c.window_s))
        out.append(np.pad(y, (0, c.window_samples - y.shape[0])) if y.shape[0] < c.window_samples else y)
    return np.stack(out).astype(np.float32)


def test_mel_filterbank_is_librosas():
    import librosa

    for c in (
        AudioContract(),
        AudioContract(
            sample_rate_hz=22_050,
            n_fft=1024,
            n_mels=128,
            fmin_hz=0.0,
            fmax_hz=11_025.0,
            win_length=1024,
            hop_length=256,
        ),
    ):
        ours = mel_filterbank(c.sample_rate_hz, c.n_fft, c.n_mels, c.fmin_hz, c.fmax_hz)
        ref = librosa.filters.mel(sr=c.sample_rate_hz, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin_hz, fmax=c.fmax_hz)
        assert ours.shape == ref.shape == (c.n_mels, 1 + c.n_fft // 2)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)


@pytest.mark.data
def test_logmel_matches_librosa_on_bird_recordings(bird_windows):
    c = AudioContract()
    with torch.no_grad():
        ours = LogMel(c)(torch.from_numpy(bird_windows))[:, 0].numpy()  # (N, M, frames)
    assert ours.shape == (len(bird_windows), c.n_mels, c.n_frames)
    worst, n_bins, n_above = 0.0, 0, 0
    for wave, got in zip(bird_windows, ours):
        ref = _librosa_db(wave, c)
        assert ref.shape == got.shape
        above = ref > DB_FLOOR
        worst = max(worst, float(np.abs(got - ref)[above].max(initial=0.0)))
        n_bins += ref.size
        n_above += int(above.sum())
    print(
        f"log-mel vs librosa on {len(bird_windows)} bird windows: max |dB diff| = {worst:.3g} "
        f"over {n_above} of {n_bins} bins above {DB_FLOOR} dB"
    )
    assert n_above > 0.5 * n_bins  # the comparison covers most of the spectrogram
    assert worst <= DB_TOL


@pytest.mark.data
def test_logmel_top_db_matches_librosa(bird_windows):
    c = AudioContract(top_db=60.0)
    with torch.no_grad():
        ours = LogMel(c)(torch.from_numpy(bird_windows[:4]))[:, 0].numpy()
    for wave, got in zip(bird_windows[:4], ours):
        ref = _librosa_db(wave, c, top_db=60.0)
        assert float(got.max() - got.min()) <= 60.0 + 1e-3
        above = ref > DB_FLOOR
        assert float(np.abs(got - ref)[above].max()) <= DB_TOL


class _Wrap(nn.Module):
    """Holds the front end as `frontend` the way the classifier does, so the node names are /frontend/..."""

    def __init__(self, contract: InputContract) -> None:
        super().__init__()
        self.frontend = Frontend(contract)

    def forward(self, audio: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frontend(audio, image)


@pytest.mark.data
def test_frontend_exports_to_onnx_and_matches_in_onnxruntime(bird_windows, tmp_path):
    import onnx
    import onnxruntime as ort

    contract = InputContract(image=ImageContract(height_px=64, width_px=64))
    wrap = _Wrap(contract).eval()
    audio = torch.from_numpy(bird_windows[:6])
    image = torch.randint(0, 256, (6, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    path = tmp_path / "frontend.onnx"
    torch.onnx.export(
        wrap,
        (audio, image),
        str(path),
        input_names=["audio", "image"],
        output_names=["logmel", "image_norm"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"audio": {0: "batch"}, "image": {0: "batch"}},
    )
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"Conv", "MatMul", "Log"} <= ops  # STFT as Conv1d, mel as MatMul, log
    assert not ops & {"DFT", "STFT", "MelWeightMatrix"}  # TensorRT runs none of these
    assert all(n.name.startswith(FRONTEND_NODE_PREFIX) for n in proto.graph.node if n.op_type != "Constant"), [
        n.name for n in proto.graph.node if not n.name.startswith(FRONTEND_NODE_PREFIX)
    ][:5]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_mel, got_img = sess.run(None, {"audio": audio.numpy(), "image": image.numpy()})
    with torch.no_grad():
        ref_mel, ref_img = wrap(audio, image)
    c = contract.audio
    for wave, g in zip(bird_windows[:6], got_mel[:, 0]):
        lib = _librosa_db(wave, c)
        above = lib > DB_FLOOR
        assert float(np.abs(g - lib)[above].max()) <= DB_TOL  # ONNX Runtime vs librosa
    above = ref_mel.numpy() > DB_FLOOR
    ort_vs_torch = float(np.abs(got_mel - ref_mel.numpy())[above].max())
    print(f"front end ONNX Runtime vs PyTorch: max |dB diff| = {ort_vs_torch:.3g}")
    assert ort_vs_torch <= 1e-2
    np.testing.assert_allclose(got_img, ref_img.numpy(), atol=1e-5)


def test_frame_count_follows_the_contract():
    for window_s in (1.0, 2.5, 5.0):
        c = AudioContract(window_s=window_s)
        with torch.no_grad():
            out = LogMel(c)(torch.zeros(2, c.window_samples))
        assert out.shape == (2, 1, c.n_mels, c.n_frames)
        assert torch.equal(out, torch.full_like(out, 10.0 * np.log10(c.log_floor)))  # silence sits on the floor


def test_image_normalization_is_the_contracts():
    c = ImageContract()
    img = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    got = ImageNormalize(c)(img)
    mean = torch.tensor(c.mean).view(1, 3, 1, 1)
    std = torch.tensor(c.std).view(1, 3, 1, 1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, (img.float() / 255.0 - mean) / std, atol=1e-5, rtol=1e-6)


def test_a_hook_on_the_logmel_module_sees_and_changes_what_the_backbone_gets():
    """Training's SpecAugment hooks `model.frontend.audio`: it must run once per forward, see (B, 1, M, frames), and
    its returned tensor must be what the audio backbone gets."""
    from edgeav.train.models import build_model, named_arch

    contract = InputContract(audio=AudioContract(window_s=1.0), image=ImageContract(height_px=64, width_px=64))
    model = build_model({**named_arch("edgeav-small"), "contract": contract.model_dump(mode="json")}, 3).eval()
    seen = []

    def hook(module, inputs, output):
        seen.append(tuple(output.shape))
        return torch.zeros_like(output) - 100.0  # everything silent

    g = torch.Generator().manual_seed(0)
    audio = 0.3 * torch.randn(2, contract.audio.window_samples, generator=g)
    image = torch.randint(0, 256, (2, 3, 64, 64), generator=g, dtype=torch.uint8)
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    with torch.no_grad():
        plain = model(audio, image, mask).logits_audio
        handle = model.frontend.audio.register_forward_hook(hook)
        hooked = model(audio, image, mask).logits_audio
        silent = model(torch.zeros_like(audio), image, mask).logits_audio  # hooked too
        handle.remove()
    assert seen == [(2, 1, contract.audio.n_mels, contract.audio.n_frames)] * 2
    assert not torch.allclose(plain, hooked)
    torch.testing.assert_close(hooked, silent)  # whatever the audio, the backbone got the hook's output
