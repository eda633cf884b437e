"""CFN-SR (emotion) as a fusion head: audio self-attention + the cross-modal tanh-add-softmax block with the video
residual. Registered in `edgeav.train.models.heads.HEADS` as "cfnsr" (uses the maps); see heads.py for the interface."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from edgeav.train.models.heads import HEADS, Branches, classifier_mlp


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block written with plain matmuls (exports to any ONNX opset, no fused kernels)."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3,B,h,T,dh)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, h, T, dh)
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim), dim=-1)  # (B, h, T, T)
        ctx = torch.matmul(attn, v).transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        x = x + self.drop(self.proj(ctx))
        return x + self.drop(self.mlp(self.norm2(x)))  # (B, T, D)


class CFNSRHead(nn.Module):
    """CFN-SR (emotion): audio self-attention for feature selection, then the cross-modal block with the video residual.

    Audio. The paper runs a 1D CNN over MFCCs and transformer self-attention blocks over its time steps; here the
    audio backbone's map averaged over frequency is the time sequence:
        tokens = mean_f(F_aud)^T                      (B, ta, Da)
        x_a    = mean_t(SA^depth(W_in tokens))        (B, d)     pre-norm self-attention blocks, then time mean
    Video. The paper's 3D-CNN features C x S x H x W; here one frame (S = 1), the image map's N = hi * wi positions:
        X_v                                           (B, N, Di)
    Cross-modal block (the paper's equations):
        q   = tanh(W_v X_v + b + W_a x_a)             (B, N, Di)  W_v: Di x Di, b: Di, W_a: d x Di (x_a broadcast over N)
        X_o = softmax_N(q) (x) X_v (+) X_v            (B, N, Di)  attention over the N positions, per channel,
                                                                  times X_v, plus X_v (the residual keeps the video)
    pooled over N: the attended term sums (its weights sum to 1, a weighted mean), the residual term averages:
        x_o = sum_N(softmax_N(q) (x) X_v) + mean_N(X_v)  (B, Di)
    Classifier: y = W_c [x_o ; x_a]                   (B, Di + d) -> (B, C)
    """

    def __init__(
        self,
        audio_dim: int,
        image_dim: int,
        num_classes: int,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.audio_in = nn.Linear(audio_dim, dim)  # W_in
        self.audio_blocks = nn.Sequential(*[SelfAttentionBlock(dim, heads) for _ in range(depth)])
        self.w_v = nn.Linear(image_dim, image_dim)  # W_v, b
        self.w_a = nn.Linear(dim, image_dim, bias=False)  # W_a
        self.classifier = classifier_mlp(image_dim + dim, num_classes, dropout)  # W_c

    def forward(self, b: Branches) -> torch.Tensor:
        tokens = b.audio_map.mean(dim=2).transpose(1, 2)  # (B, ta, Da)
        x_a = self.audio_blocks(self.audio_in(tokens)).mean(dim=1)  # (B, d)
        x_v = b.image_map.flatten(2).transpose(1, 2)  # (B, N, Di)
        q = torch.tanh(self.w_v(x_v) + self.w_a(x_a).unsqueeze(1))  # (B, N, Di)
        x_o = (torch.softmax(q, dim=1) * x_v).sum(dim=1) + x_v.mean(dim=1)  # (B, Di) attended + residual
        return self.classifier(torch.cat([x_o, x_a], dim=1))  # (B, Di + d) -> (B, C)


@HEADS.register("cfnsr", uses="maps", paper="CFN-SR")
def cfnsr(audio_dim: int, image_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    return CFNSRHead(audio_dim, image_dim, num_classes, **kw)
