"""Benchmark sizes per device: small on a CPU, the GPU targets' sizes (docs/performance.md) on a GPU."""
from __future__ import annotations

import sys

import torch

# model name -> (batch, resolution) per device; GPU: bf16, batch 256, 224 px (the GPU targets, docs/performance.md).
# vit_small is patched with wfkern's default ViT placement (every linear layer of each block); vit_small_qkv with
# the paper's (the qkv projections only), the placement of the GPU numbers measured before that default.
MODEL_SIZES = {
    "cpu": {"resnet18": (32, 64), "vit_small": (32, 64), "vit_small_qkv": (32, 64)},
    "cuda": {"resnet18": (256, 224), "resnet50": (256, 224), "vit_small": (256, 224), "vit_small_qkv": (256, 224)},
}
QKV_ONLY = "_qkv"  # a model name ending so is patched with gate_mlp="qkv"
DTYPE = {"cpu": torch.float32, "cuda": torch.bfloat16}
ROUNDS = {"cpu": dict(rounds=15, warmup_rounds=3), "cuda": dict(rounds=50, warmup_rounds=10)}
NUM_CLASSES = 10


def build_model(name: str, resolution: int):
    import torchvision

    if name == "resnet18":
        return torchvision.models.resnet18(num_classes=NUM_CLASSES)
    if name == "resnet50":
        return torchvision.models.resnet50(num_classes=NUM_CLASSES)
    if name.removesuffix(QKV_ONLY) == "vit_small":
        import timm

        return timm.create_model("vit_small_patch16_224", num_classes=NUM_CLASSES, img_size=resolution)
    raise ValueError(name)


def prepare_device(device: str, threads, prog: str) -> bool:
    """Apply --threads; False (with a message) when CUDA is asked for and no GPU is visible."""
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: no CUDA GPU is visible to torch", file=sys.stderr)
        return False
    return True


def make_workload(name: str, device: str):
    """(plain model, WF model with random gates, input batch, mixed labels) for a benchmark."""
    import wfkern

    batch, resolution = MODEL_SIZES[device][name]
    torch.manual_seed(0)
    model = build_model(name, resolution).eval().to(device, DTYPE[device]).requires_grad_(False)
    placement = "qkv" if name.endswith(QKV_ONLY) else None
    # frozen like the plain model: the floor is bwd-to-input only
    wf = wfkern.patch(model, NUM_CLASSES, gate_mlp=placement)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.normal_(0, 3)
    x = torch.randn(batch, 3, resolution, resolution, device=device, dtype=DTYPE[device])
    labels = torch.randint(-1, NUM_CLASSES, (batch,), device=device)
    return model, wf, x, labels


def materialized(wf, x, labels):
    """Per-sample weights W * gate[label] built explicitly and vmapped: the naive way, for contrast."""
    import wfkern
    from torch.func import functional_call

    plain = wfkern.bake(wf, forget=-1).eval()
    params = {k: v.detach() for k, v in plain.named_parameters()}
    buffers = dict(plain.named_buffers())
    per_sample = {}
    def gates(alpha):
        return torch.where((labels >= 0)[:, None], torch.sigmoid(alpha.detach()[labels.clamp_min(0)]), 1.0)

    for name, layer in wf.wf_layers().items():
        prefix = f"{name}.in_proj_" if layer.kind == "mha" else f"{name}."
        for suffix, alpha in (("weight", layer.alpha_w), ("bias", layer.alpha_b)):
            if alpha is None:
                continue
            tensor = params.pop(prefix + suffix)
            sample_gates = gates(alpha).to(tensor.dtype)
            per_sample[prefix + suffix] = tensor[None] * sample_gates.view(*sample_gates.shape,
                                                                           *([1] * (tensor.dim() - 1)))

    def one(sample_params, xi):
        return functional_call(plain, ({**params, **sample_params}, buffers), (xi[None],))[0]

    return lambda: torch.vmap(one)(per_sample, x)
