"""Fusion-head registry: the fusions of the papers edgeav is built on, behind one interface.

Interface. A head is built as `HEADS.create(name, audio_dim=Da, image_dim=Di, num_classes=C, **kwargs)` and called
as `head(b: Branches) -> (B, C)` fused logits, where `Branches` carries everything the model computed per modality
(the missing modality's maps and embeddings are already zero, and its auxiliary logits too):

    audio_map    (B, Da, fa, ta)  audio backbone's last map, (frequency, time)
    image_map    (B, Di, hi, wi)  image backbone's last map
    audio_emb    (B, Da)          pooled audio embedding
    image_emb    (B, Di)          pooled image embedding
    audio_logits (B, C)           auxiliary audio-only classifier
    image_logits (B, C)           auxiliary image-only classifier
    mask         (B, 2)           [audio_present, image_present]

Each head declares what it reads (`uses` in the registry meta): "maps" (csim, hdmf, hdmf_static, cfnsr),
"embeddings" (concat, fbfm, linear_f1..f3), "logits" (late_avg, late_prod, linear_f4..f6). `shared_2d` is a head
over one shared encoder (meta `shared_encoder=True`): the model builds the side-by-side canvas [spectrogram | image],
runs the encoder once, and hands the head the two halves of its map as audio_map / image_map (and their pooled
embeddings), so Da = Di = the encoder's width.

Each head's docstring gives its paper's equations with the tensor shapes, and the forward repeats the shapes where
they are computed. What the papers report is in ../shared/DESIGN.md.

When a modality is missing the model does not trust the fused output: it falls back to the present modality's
auxiliary logits (see `edgeav.train.models.model`). Heads need not handle the mask themselves.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from edgeav.registry import Registry

HEADS: Registry[nn.Module] = Registry("fusion head")


class Branches(NamedTuple):
    audio_map: torch.Tensor  # (B, Da, fa, ta)
    image_map: torch.Tensor  # (B, Di, hi, wi)
    audio_emb: torch.Tensor  # (B, Da)
    image_emb: torch.Tensor  # (B, Di)
    audio_logits: torch.Tensor  # (B, C)
    image_logits: torch.Tensor  # (B, C)
    mask: torch.Tensor  # (B, 2)

    @classmethod
    def masked(
        cls,
        audio_map: torch.Tensor,
        image_map: torch.Tensor,
        audio_emb: torch.Tensor,
        image_emb: torch.Tensor,
        mask: torch.Tensor,
    ) -> Branches:
        """The branches with a missing modality's maps and embedding zeroed (mask (B, 2): audio, image present),
        logits left empty (B, 0): what `forward_head` takes, from the backbones or from cached features."""
        m_a, m_i = mask[:, 0:1], mask[:, 1:2]  # (B, 1) each
        empty = mask[:, :0]  # (B, 0)
        return cls(
            audio_map * m_a.view(-1, 1, 1, 1),
            image_map * m_i.view(-1, 1, 1, 1),
            audio_emb * m_a,
            image_emb * m_i,
            empty,
            empty,
            mask,
        )


def create_head(name: str, audio_dim: int, image_dim: int, num_classes: int, **kwargs: Any) -> nn.Module:
    return HEADS.create(name, audio_dim=audio_dim, image_dim=image_dim, num_classes=num_classes, **kwargs)


def classifier_mlp(dim: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))


# --------------------------------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------------------------------


class ConcatHead(nn.Module):
    """Concatenation baseline; the joint-modeling scenes paper's classifier (concat + MLP 512-128-64-C):

        z = [LN_a(z_a) ; LN_i(z_i)]                         (B, Da + Di)
        y = W_4 relu(W_3 relu(W_2 relu(W_1 z)))             (B, Da + Di) -> 512 -> 128 -> 64 -> (B, C)
    with dropout before each hidden layer. The per-modality LayerNorms put both embeddings on one scale: branches
    trained apart (two-phase) differ in scale by far (measured on 12 GRID test clips: mean |z_i| 26 for a
    MobileNetV3 trained from scratch vs |z_a| 0.36 for the audio CNN, ~70x), and without them the larger one drowns
    the other."""

    def __init__(
        self,
        audio_dim: int,
        image_dim: int,
        num_classes: int,
        hidden: tuple[int, ...] = (512, 128, 64),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.norm_audio = nn.LayerNorm(audio_dim)
        self.norm_image = nn.LayerNorm(image_dim)
        layers: list[nn.Module] = []
        d = audio_dim + image_dim
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        layers += [nn.Linear(d, num_classes)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, b: Branches) -> torch.Tensor:
        z = torch.cat([self.norm_audio(b.audio_emb), self.norm_image(b.image_emb)], dim=1)  # (B, Da + Di)
        return self.mlp(z)  # (B, C)


class LateAverageHead(nn.Module):
    """Late fusion baseline, the mean of the unimodal class probabilities, as log-probabilities (no parameters):

    y = log((softmax(l_a) + softmax(l_i)) / 2)          (B, C), l_a, l_i the auxiliary logits (B, C)"""

    def __init__(self, audio_dim: int, image_dim: int, num_classes: int, **_: Any) -> None:
        super().__init__()

    def forward(self, b: Branches) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(b.audio_logits, 1), F.log_softmax(b.image_logits, 1)], 0)  # (2, B, C)
        return torch.logsumexp(logp, dim=0) - math.log(2.0)  # (B, C) log of the mean probability


class LateProductHead(nn.Module):
    """Late fusion baseline, the product of the unimodal probabilities (no parameters):

    y = log softmax(l_a) + log softmax(l_i)             (B, C)"""

    def __init__(self, audio_dim: int, image_dim: int, num_classes: int, **_: Any) -> None:
        super().__init__()

    def forward(self, b: Branches) -> torch.Tensor:
        return F.log_softmax(b.audio_logits, 1) + F.log_softmax(b.image_logits, 1)  # (B, C)


# --------------------------------------------------------------------------------------------------------------------
# HD-MF (fine-grained birds): CSIM, FBFM (MFB), DAGFU
# --------------------------------------------------------------------------------------------------------------------


class CSIM(nn.Module):
    """HD-MF's cross-modal spatial interaction module (CSIM).

        a    = interp_N(mean_f(F_aud))                      (B, Da, ta) -> (B, Da, N)   N = H * W, linear in time
        A    = reshape(a)                                   (B, Da, H, W)  the pseudo-spatial audio map
        Q    = W_q F_img, K = W_k A, V = W_v A              (B, N, d), (B, d, N), (B, N, d)  1x1 convs
        attn = softmax(Q K / sqrt(d))                       (B, N, N)   each image position over the N audio ones
        F    = F_img + gamma * W_o (attn V)                 (B, Di, H, W)  W_o a 1x1 conv back to Di channels
    gamma is learnable and starts at 0, so the block starts as the identity on the image map.
    """

    def __init__(self, audio_dim: int, image_dim: int, attn_dim: int = 64) -> None:
        super().__init__()
        self.q = nn.Conv2d(image_dim, attn_dim, 1)
        self.k = nn.Conv2d(audio_dim, attn_dim, 1)
        self.v = nn.Conv2d(audio_dim, attn_dim, 1)
        self.out = nn.Conv2d(attn_dim, image_dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.scale = 1.0 / math.sqrt(attn_dim)

    def forward(self, image_map: torch.Tensor, audio_map: torch.Tensor) -> torch.Tensor:
        B, _, H, W = image_map.shape
        seq = audio_map.mean(dim=2)  # (B, Da, ta) time sequence
        seq = F.interpolate(seq, size=H * W, mode="linear", align_corners=False)  # (B, Da, N)
        pseudo = seq.reshape(B, -1, H, W)  # (B, Da, H, W) pseudo-spatial audio map
        q = self.q(image_map).flatten(2).transpose(1, 2)  # (B, N, d)
        k = self.k(pseudo).flatten(2)  # (B, d, N)
        v = self.v(pseudo).flatten(2).transpose(1, 2)  # (B, N, d)
        attn = torch.softmax(torch.matmul(q, k) * self.scale, dim=-1)  # (B, N, N)
        ctx = torch.matmul(attn, v).transpose(1, 2).reshape(B, -1, H, W)  # (B, d, H, W)
        return image_map + self.gamma * self.out(ctx)  # (B, Di, H, W)


class FBFM(nn.Module):
    """HD-MF's factorized bilinear fusion module (FBFM), i.e. multi-modal factorized bilinear pooling (MFB):

        j = (U^T z_a) (.) (V^T z_i)                         (B, o*k)   z_a = GAP F_aud (B, Da), z_i = GAP F_img (B, Di)
        z = SumPool_k(j)                                    (B, o)     sum over the k factors of each output
        z = sign(z) sqrt(|z| + eps);  z = z / ||z||_2       (B, o)     power and L2 normalization (MFB)
    U: (Da, o*k), V: (Di, o*k), with dropout on j."""

    def __init__(
        self, audio_dim: int, image_dim: int, out_dim: int = 256, factors: int = 5, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.out_dim, self.factors = out_dim, factors
        self.u = nn.Linear(audio_dim, out_dim * factors)
        self.v = nn.Linear(image_dim, out_dim * factors)
        self.drop = nn.Dropout(dropout)

    def forward(self, audio_emb: torch.Tensor, image_emb: torch.Tensor) -> torch.Tensor:
        joint = self.drop(self.u(audio_emb) * self.v(image_emb))  # (B, o*k) Hadamard product
        z = joint.reshape(-1, self.out_dim, self.factors).sum(dim=2)  # (B, o) sum over the k factors
        z = torch.sign(z) * torch.sqrt(torch.abs(z) + 1e-8)  # (B, o) power normalization
        return F.normalize(z, dim=1)  # (B, o)


class CSIMHead(nn.Module):
    """HD-MF ablation, CSIM alone: y = W_c GAP(CSIM(F_img, F_aud))     (B, Di) -> (B, C)."""

    def __init__(
        self, audio_dim: int, image_dim: int, num_classes: int, attn_dim: int = 64, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.csim = CSIM(audio_dim, image_dim, attn_dim)
        self.classifier = classifier_mlp(image_dim, num_classes, dropout)

    def forward(self, b: Branches) -> torch.Tensor:
        f = self.csim(b.image_map, b.audio_map).mean(dim=(2, 3))  # (B, Di)
        return self.classifier(f)  # (B, C)


class FBFMHead(nn.Module):
    """HD-MF ablation, FBFM alone: y = W_c MFB(GAP F_aud, GAP F_img)   (B, o) -> (B, C)."""

    def __init__(
        self,
        audio_dim: int,
        image_dim: int,
        num_classes: int,
        fusion_dim: int = 256,
        factors: int = 5,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.fbfm = FBFM(audio_dim, image_dim, fusion_dim, factors)
        self.classifier = classifier_mlp(fusion_dim, num_classes, dropout)

    def forward(self, b: Branches) -> torch.Tensor:
        return self.classifier(self.fbfm(b.audio_emb, b.image_emb))  # (B, o) -> (B, C)


class HDMFHead(nn.Module):
    """HD-MF: CSIM (spatial) + FBFM (global), joined by the DAGFU gate (`hdmf`) or statically (`hdmf_static`).

        f_s = LN(W_s GAP(CSIM(F_img, F_aud)))               (B, d)     spatial branch
        f_g = LN(MFB(z_a, z_i))                             (B, d)     global branch
    DAGFU (dynamic adaptive gated fusion unit):
        g = sigmoid(W_g [f_s ; f_g])                        (B, 2d) -> (B, d)
        f = g (.) f_s + (1 - g) (.) f_g                     (B, d)
    static (the paper's "static CSIM+FBFM" ablation):
        f = [f_s ; f_g]                                     (B, 2d)
    y = W_c f                                               (B, C)
    The LayerNorms put the unnormalized spatial feature and the L2-normalized MFB on one scale before the gate.
    """

    def __init__(
        self,
        audio_dim: int,
        image_dim: int,
        num_classes: int,
        fusion_dim: int = 256,
        factors: int = 5,
        attn_dim: int = 64,
        dropout: float = 0.2,
        gated: bool = True,
    ) -> None:
        super().__init__()
        self.gated = gated
        self.csim = CSIM(audio_dim, image_dim, attn_dim)
        self.spatial_proj = nn.Sequential(nn.Linear(image_dim, fusion_dim), nn.LayerNorm(fusion_dim))
        self.fbfm = FBFM(audio_dim, image_dim, fusion_dim, factors)
        self.global_norm = nn.LayerNorm(fusion_dim)
        self.gate = nn.Linear(2 * fusion_dim, fusion_dim) if gated else None
        self.classifier = classifier_mlp(fusion_dim if gated else 2 * fusion_dim, num_classes, dropout)

    def forward(self, b: Branches) -> torch.Tensor:
        f_s = self.spatial_proj(self.csim(b.image_map, b.audio_map).mean(dim=(2, 3)))  # (B, d)
        f_g = self.global_norm(self.fbfm(b.audio_emb, b.image_emb))  # (B, d)
        both = torch.cat([f_s, f_g], dim=1)  # (B, 2d)
        if self.gate is None:
            return self.classifier(both)  # (B, C)
        g = torch.sigmoid(self.gate(both))  # (B, d) DAGFU gate
        return self.classifier(g * f_s + (1.0 - g) * f_g)  # (B, C)


# --------------------------------------------------------------------------------------------------------------------
# two-phase fusions (scenes): f1..f3 on embeddings, f4..f6 on logits; then a dense layer
# --------------------------------------------------------------------------------------------------------------------


class TwoPhaseLinearFusion(nn.Module):
    """Two-phase scenes paper, phase II: a fusion layer + a dense layer over the frozen unimodal outputs e_a, e_i:
    the embeddings (B, Da), (B, Di) for f1-f3, the C-d auxiliary logits (B, C) for f4-f6 (the paper's 10-d ones).

    The paper fuses several embeddings per modality (audio front ends, image CNNs); here each modality has one, so
    "per-modality sum" is that one embedding. Sizes that differ are zero-padded to D = max(Da, Di) for the sums.

    f1, f4 "elementwise": h = w_a (.) e_a + w_i (.) e_i       w_a, w_i in R^D: a weight per embedding element  (B, D)
    f2, f5 "modality":    h = alpha_a e_a + alpha_i e_i        alpha = softmax(beta), beta in R^2: one weight per
                                                               modality, after its sum                         (B, D)
    f3, f6 "concat":      h = [w_a (.) e_a ; w_i (.) e_i]      the per-modality sums kept apart                (B, Da + Di)
    y = W h + b                                                the dense layer                                 (B, C)
    Phase I/II itself (train each branch alone, then freeze) is the training loop's; see `freeze_backbones`.
    """

    def __init__(self, audio_dim: int, image_dim: int, num_classes: int, mode: str, on: str) -> None:
        super().__init__()
        self.mode, self.on = mode, on
        da, di = (num_classes, num_classes) if on == "logits" else (audio_dim, image_dim)
        self.da, self.di, self.d = da, di, max(da, di)
        if mode == "modality":
            self.beta = nn.Parameter(torch.zeros(2))
            out = self.d
        else:
            self.w_a = nn.Parameter(torch.ones(self.d if mode == "elementwise" else da))
            self.w_i = nn.Parameter(torch.ones(self.d if mode == "elementwise" else di))
            out = self.d if mode == "elementwise" else da + di
        self.dense = nn.Linear(out, num_classes)

    def _pad(self, e: torch.Tensor) -> torch.Tensor:
        return e if e.shape[1] == self.d else F.pad(e, (0, self.d - e.shape[1]))  # (B, D)

    def forward(self, b: Branches) -> torch.Tensor:
        e_a, e_i = (b.audio_logits, b.image_logits) if self.on == "logits" else (b.audio_emb, b.image_emb)
        if self.mode == "elementwise":
            h = self.w_a * self._pad(e_a) + self.w_i * self._pad(e_i)  # (B, D)
        elif self.mode == "modality":
            alpha = torch.softmax(self.beta, dim=0)  # (2,)
            h = alpha[0] * self._pad(e_a) + alpha[1] * self._pad(e_i)  # (B, D)
        else:
            h = torch.cat([self.w_a * e_a, self.w_i * e_i], dim=1)  # (B, Da + Di)
        return self.dense(h)  # (B, C)


# --------------------------------------------------------------------------------------------------------------------
# shared encoder (emotion): one 2D encoder over [spectrogram | image]
# --------------------------------------------------------------------------------------------------------------------


class SharedCanvasHead(nn.Module):
    """Shared 2D encoder (emotion paper): one encoder over the face and the mel spectrogram side by side.

    The model builds the canvas and runs the encoder (`SharedAVClassifier`):
        X = [resize_HxW(BN(logmel)) x3 channels | image]     (B, 3, H, 2W)
        F = encoder(X)                                       (B, D, h, w2); audio half F_a, image half F_i
    and this head classifies the pooled canvas:
        y = W_c (GAP F_a + GAP F_i) / 2                      (B, D) -> (B, C)
    which is GAP F when w2 is even (equal halves); with an odd w2 the image half holds the middle column."""

    def __init__(self, audio_dim: int, image_dim: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.classifier = classifier_mlp(image_dim, num_classes, dropout)

    def forward(self, b: Branches) -> torch.Tensor:
        return self.classifier(0.5 * (b.audio_emb + b.image_emb))  # (B, D) -> (B, C)


# --------------------------------------------------------------------------------------------------------------------
# registrations
# --------------------------------------------------------------------------------------------------------------------


@HEADS.register("concat", uses="embeddings", paper="baseline / joint modeling (concat + MLP)")
def concat(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    return ConcatHead(audio_dim, image_dim, num_classes, **kw)


@HEADS.register("late_avg", uses="logits", paper="baseline (late fusion, mean of probabilities)")
def late_avg(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    return LateAverageHead(audio_dim, image_dim, num_classes, **kw)


@HEADS.register("late_prod", uses="logits", paper="baseline (late fusion, product of probabilities)")
def late_prod(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    return LateProductHead(audio_dim, image_dim, num_classes, **kw)


@HEADS.register("fbfm", uses="embeddings", paper="HD-MF (FBFM / MFB)")
def fbfm(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    return FBFMHead(audio_dim, image_dim, num_classes, **kw)


@HEADS.register("csim", uses="maps", paper="HD-MF (CSIM)")
def csim(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    return CSIMHead(audio_dim, image_dim, num_classes, **kw)


@HEADS.register("hdmf", uses="maps", paper="HD-MF (CSIM + FBFM + DAGFU)")
def hdmf(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    return HDMFHead(audio_dim, image_dim, num_classes, gated=True, **kw)


@HEADS.register("hdmf_static", uses="maps", paper="HD-MF (static CSIM + FBFM, no gate)")
def hdmf_static(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    return HDMFHead(audio_dim, image_dim, num_classes, gated=False, **kw)


def _register_two_phase(index: int, mode: str, on: str) -> None:
    def factory(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
        return TwoPhaseLinearFusion(audio_dim, image_dim, num_classes, mode=mode, on=on, **kw)

    HEADS.register(f"linear_f{index}", uses=on, paper=f"two-phase scenes (f{index}: {mode} on {on})")(factory)


for _i, (_mode, _on) in enumerate(
    [
        ("elementwise", "embeddings"),
        ("modality", "embeddings"),
        ("concat", "embeddings"),
        ("elementwise", "logits"),
        ("modality", "logits"),
        ("concat", "logits"),
    ],
    start=1,
):
    _register_two_phase(_i, _mode, _on)


@HEADS.register("shared_2d", uses="embeddings", paper="shared 2D encoder (emotion)", shared_encoder=True)
def shared_2d(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    return SharedCanvasHead(audio_dim, image_dim, num_classes, **kw)
