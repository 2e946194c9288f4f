"""Stealth metrics between clean images and their poisoned / triggered versions (docs/metrics.md, "Stealth").

All take uint8 ``(n, 3, H, W)`` tensors (what is actually stored) and return one value per image.
PSNR uses data range 1 and is capped at 100 dB for identical images; SSIM is scikit-image's with the
channel axis and data range 1; LPIPS is the AlexNet variant with inputs scaled to [-1, 1].

LPIPS needs torchvision's AlexNet weights. hashbench never downloads them: when the file is missing,
LPIPS is reported as missing (``None``), never as 0, and the reason is said once.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .data import to_float

log = logging.getLogger("hashbench")
PSNR_CAP_DB = 100.0
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def psnr(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    mse = (to_float(clean) - to_float(other)).pow(2).flatten(1).mean(dim=1).double()
    value = 10.0 * torch.log10(1.0 / mse)
    return value.clamp(max=PSNR_CAP_DB)


def ssim(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    from skimage.metrics import structural_similarity

    a = to_float(clean).permute(0, 2, 3, 1).numpy()
    b = to_float(other).permute(0, 2, 3, 1).numpy()
    values = [structural_similarity(x, y, channel_axis=-1, data_range=1.0) for x, y in zip(a, b)]
    return torch.tensor(values, dtype=torch.float64)


def linf(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return (to_float(clean) - to_float(other)).abs().flatten(1).amax(dim=1).double()


def l2(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return (to_float(clean) - to_float(other)).flatten(1).norm(dim=1).double()


def alexnet_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


_lpips_cache: dict[str, nn.Module | None] = {}
_lpips_warned = False


def lpips_missing_reason() -> str | None:
    """Why LPIPS cannot run here, or None when it can."""
    path = alexnet_weights_path()
    if not path.is_file():
        return (
            f"LPIPS needs torchvision's AlexNet weights at {path}; copy {ALEXNET_FILE} there "
            f"(or set TORCH_HOME) to enable it. LPIPS is reported as missing."
        )
    return None


def load_lpips(device: torch.device | str = "cpu") -> nn.Module | None:
    """The LPIPS (AlexNet) network in eval mode, or None when its weights are not on disk.

    The backbone weights are read by hashbench with ``weights_only=True``; the lpips package's own
    linear-layer weights ship inside that package.
    """
    global _lpips_warned
    key = str(device)
    if key in _lpips_cache:
        return _lpips_cache[key]
    reason = lpips_missing_reason()
    if reason is not None:
        if not _lpips_warned:
            log.warning(reason)
            _lpips_warned = True
        _lpips_cache[key] = None
        return None
    import lpips
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    alexnet = torchvision.models.alexnet()
    alexnet.load_state_dict(torch.load(alexnet_weights_path(), map_location="cpu", weights_only=True))
    for stage in (net.net.slice1, net.net.slice2, net.net.slice3, net.net.slice4, net.net.slice5):
        for index, module in stage.named_children():
            module.load_state_dict(alexnet.features[int(index)].state_dict())
    net = net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    _lpips_cache[key] = net
    return net


def lpips_distance(
    clean: torch.Tensor, other: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 256
) -> torch.Tensor | None:
    net = load_lpips(device)
    if net is None:
        return None
    out = []
    with torch.no_grad():
        for start in range(0, len(clean), batch_size):
            a = to_float(clean[start : start + batch_size]).to(device) * 2 - 1
            b = to_float(other[start : start + batch_size]).to(device) * 2 - 1
            out.append(net(a, b).flatten().double().cpu())
    return torch.cat(out)


def stealth_report(clean: torch.Tensor, other: torch.Tensor, device: torch.device | str = "cpu") -> dict:
    """Mean PSNR, SSIM, LPIPS (None when unavailable), L∞ and L2 over a set of image pairs."""
    if len(clean) == 0:
        return {"psnr": None, "ssim": None, "lpips": None, "linf": None, "l2": None, "count": 0}
    lp = lpips_distance(clean, other, device)
    return {
        "psnr": float(psnr(clean, other).mean()),
        "ssim": float(ssim(clean, other).mean()),
        "lpips": None if lp is None else float(lp.mean()),
        "linf": float(linf(clean, other).mean()),
        "l2": float(l2(clean, other).mean()),
        "count": int(len(clean)),
    }


