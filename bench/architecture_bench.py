"""Serving cost of candidate patch networks, before anything is trained.

The serving budget (≥ 2,000 patches/s on 2 cores) decides which networks are
worth training. Each candidate is built with random weights, exported to ONNX
and scored through ONNX Runtime exactly as serving runs it (fp32,
``--threads`` threads, batches of ``--batch``), in one process and in
alternation, so the ratios against the bundled ``deep`` network are measured
on the same machine at the same time.

Candidates: bcd's ``deep`` (the bundled network) and ``original`` cnn; two
widened ``deep`` variants; an EfficientNet-style network of inverted
residual (MBConv) blocks with squeeze-and-excitation, sized for 50×50 input;
ResNet-18 with the compact stem; and EfficientNet-Lite0 (the ImageNet
transfer-learning network of ``image-classification``) upsampling the patch
to 64 and 96 px inside its graph.

    .venv/bin/python bench/architecture_bench.py [--seconds 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import time
import warnings

import numpy as np
import torch
from torch import nn

from bcd.algorithms.efficientnet import EfficientNetLite
from bcd.algorithms.models import DeepCNN, SmallCNN, UpsampledInput, build_resnet


class _MBConv(nn.Module):
    """Inverted residual: 1×1 expand → 3×3 depthwise → squeeze-excite → 1×1 project."""

    def __init__(self, inputs: int, outputs: int, expand: int, stride: int) -> None:
        super().__init__()
        hidden = inputs * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inputs, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
        ]
        self.body = nn.Sequential(*layers)
        squeezed = max(4, inputs // 4)
        self.excite = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(hidden, squeezed, 1),
            nn.SiLU(),
            nn.Conv2d(squeezed, hidden, 1),
            nn.Sigmoid(),
        )
        self.project = nn.Sequential(
            nn.Conv2d(hidden, outputs, 1, bias=False), nn.BatchNorm2d(outputs)
        )
        self.residual = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.body(x)
        out = self.project(hidden * self.excite(hidden))
        return x + out if self.residual else out


def mbconv_net(num_classes: int = 2) -> nn.Module:
    """EfficientNet-B0-like blocks for 50×50 patches (stages at 50, 25, 13 and 7 px)."""
    blocks = [
        (16, 16, 1, 1),
        (16, 24, 6, 2),
        (24, 24, 6, 1),
        (24, 40, 6, 2),
        (40, 40, 6, 1),
        (40, 80, 6, 2),
        (80, 80, 6, 1),
    ]
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.SiLU(),
        *(_MBConv(*block) for block in blocks),
        nn.Conv2d(80, 256, 1, bias=False),
        nn.BatchNorm2d(256),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(256, num_classes),
    )


def candidates() -> dict[str, nn.Module]:
    return {
        "deep 16-32-64-64-128 (bundled)": DeepCNN(),
        "deep 16-32-64-64-256": DeepCNN(widths=(16, 32, 64, 64, 256)),
        "deep 24-48-96-96-128": DeepCNN(widths=(24, 48, 96, 96, 128)),
        "original cnn": SmallCNN(),
        "MBConv (EfficientNet-style)": mbconv_net(),
        "ResNet-18, compact stem": build_resnet(18, 2, "compact"),
        "EfficientNet-Lite0 @ 64 px": UpsampledInput(
            EfficientNetLite("efficientnet-lite0"), (64, 64)
        ),
        "EfficientNet-Lite0 @ 96 px": UpsampledInput(
            EfficientNetLite("efficientnet-lite0"), (96, 96)
        ),
    }


def to_session(model: nn.Module, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 50, 50),),
            buffer,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per candidate and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    torch.manual_seed(0)
    batch = np.random.default_rng(0).normal(size=(args.batch, 3, 50, 50)).astype(np.float32)
    sessions = {}
    for name, model in candidates().items():
        parameters = sum(p.numel() for p in model.parameters())
        sessions[name] = (to_session(model, args.threads), parameters)
        sessions[name][0].run(None, {"images": batch})  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, (session, _) in sessions.items():
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < args.seconds:
                session.run(None, {"images": batch})
                done += args.batch
            rates[name].append(done / (time.perf_counter() - started))
    baseline = float(np.median(rates["deep 16-32-64-64-128 (bundled)"]))
    print(f"ONNX Runtime fp32, {args.threads} threads, batch {args.batch}; median of {args.rounds}")
    print(f"{'network':34} {'parameters':>11} {'patches/s':>10} {'× deep':>7}")
    for name, (_, parameters) in sessions.items():
        rate = float(np.median(rates[name]))
        print(f"{name:34} {parameters:>11,} {rate:>10,.0f} {rate / baseline:>7.2f}")


if __name__ == "__main__":
    main()
