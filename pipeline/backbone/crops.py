"""DINO's multi-crop augmentation made for a whole batch at once, on the batch's device.

`batched_crops` gives every image its own random parameters, as `dino.multicrop_transforms` (torchvision v2,
image by image) does, but makes all crops of a batch with a handful of tensor ops: one `roi_align` for the
random resized crops, `torch.where` for the flips, per-image factors broadcast for the colour jitter, one
grouped convolution for the Gaussian blurs. It follows torchvision's RandomResizedCrop, ColorJitter,
RandomGrayscale and GaussianBlur, with these departures (pretrain.crops: per_image keeps torchvision's):

- Resizing: `roi_align(aligned=True)` samples the box bilinearly; with `sampling_ratio=0` it averages
  ceil(box side / crop side) samples per output pixel and axis, a box filter standing in for torchvision's
  antialiased (triangle-filter) downscaling. Upscaling (1 sample) is torch's bilinear resize of the box, except
  at the box's edge, where roi_align reads the image's pixels beyond the box (torchvision crops first, then
  repeats the crop's edge pixels).
- Colour jitter: brightness, contrast, saturation, hue always in this order (torchvision draws a random order per
  image), and the hue shift is a rotation of the chroma plane in YIQ by 2 pi hue, luma kept (torchvision shifts
  H in HSV, value kept): the two turn colours the same way by about the same angle, not to the same values.
- Random draws come from one torch.Generator on the batch's device, in a fixed order whatever the probabilities,
  so a seed gives the same crops on the same device (CPU and CUDA generators give different streams).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from pipeline.backbone.factory import MEAN, STD

GRAY = (0.2989, 0.587, 0.114)  # luma weights of torchvision's rgb_to_grayscale
# RGB -> YIQ (FCC NTSC); its inverse is computed, so the hue rotation by 0 is the identity up to rounding.
YIQ = ((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135))


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, device=device)


def resized_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                       g: torch.Generator, device: torch.device, tries: int = 10) -> torch.Tensor:
    """n RandomResizedCrop boxes in an image of height x width, as torchvision's RandomResizedCrop.get_params
    draws them (area share uniform in `scale`, aspect ratio log-uniform in `ratio`, the first of `tries` draws that
    fits, else the centre crop clipped to `ratio`), all n at once -> (n, 4) float (x1, y1, x2, y2) pixel edges:
    integer boxes covering pixels x1..x2-1, y1..y2-1 (roi_align's aligned=True coordinates)."""
    area = _uniform(g, (n, tries), scale[0], scale[1], device) * (height * width)
    logr = _uniform(g, (n, tries), math.log(ratio[0]), math.log(ratio[1]), device)
    pos = torch.rand((n, 2), generator=g, device=device)
    w = torch.round(torch.sqrt(area * torch.exp(logr)))
    h = torch.round(torch.sqrt(area / torch.exp(logr)))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting try (0 where none fits)
    w, h, any_ok = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], ok.any(dim=1)
    in_ratio = width / height  # the fallback, as torchvision: the whole image clipped to the ratio range
    fw, fh = float(width), float(height)
    if in_ratio < min(ratio):
        fh = float(round(fw / min(ratio)))
    elif in_ratio > max(ratio):
        fw = float(round(fh * max(ratio)))
    w, h = torch.where(any_ok, w, fw), torch.where(any_ok, h, fh)
    # torchvision: randint(0, size - side + 1) for a fitting draw; the fallback is centred
    y = torch.where(any_ok, torch.floor(pos[:, 0] * (height - h + 1)).clamp(max=height - h), (height - h) // 2)
    x = torch.where(any_ok, torch.floor(pos[:, 1] * (width - w + 1)).clamp(max=width - w), (width - w) // 2)
    return torch.stack([x, y, x + w, y + h], dim=1)


def color_jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor,
                 hue: torch.Tensor) -> torch.Tensor:
    """Per-image colour jitter of (N, 3, H, W) float [0, 1] with (N,) factors (1 = unchanged) and hue shifts (in
    turns, 0 = unchanged), applied in this order, clamped to [0, 1] after each, as torchvision's adjust_* are."""
    gray_w = x.new_tensor(GRAY).view(1, 3, 1, 1)
    f = brightness.view(-1, 1, 1, 1)
    x = (x * f).clamp(0, 1)
    mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)  # the grayscale image's mean
    f = contrast.view(-1, 1, 1, 1)
    x = (f * x + (1 - f) * mean).clamp(0, 1)
    gray = (x * gray_w).sum(1, keepdim=True)
    f = saturation.view(-1, 1, 1, 1)
    x = (f * x + (1 - f) * gray).clamp(0, 1)
    yiq = x.new_tensor(YIQ)
    turn = -2 * math.pi * hue  # this sense of rotation moves red towards green for hue > 0, as HSV does
    cos, sin = torch.cos(turn), torch.sin(turn)
    rot = torch.zeros(len(x), 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = torch.linalg.inv(yiq) @ rot @ yiq  # (N, 3, 3): RGB -> YIQ, rotate I/Q, back
    return torch.einsum("nij,njhw->nihw", m, x).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-image Gaussian blur of (N, C, H, W) with (N,) sigmas: torchvision's kernel (taps at -k//2..k//2,
    normalised) and reflect padding, as one separable grouped convolution over all N * C channels."""
    n, c, hh, ww = x.shape
    half = kernel_size // 2
    t = torch.linspace(-half, half, kernel_size, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma.to(x.dtype).view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (N * C, k)
    y = F.pad(x.reshape(1, n * c, hh, ww), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, hh, ww)


def batched_crops(batch: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator, copies: int = 1,
                  ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5, jitter_p: float = 0.8,
                  jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.2), gray_p: float = 0.2,
                  blur_p: float = 0.0, blur_sigma: tuple[float, float] = (0.1, 1.5), blur_kernel: int = 5,
                  sampling_ratio: int = 0, normalize: bool = True) -> torch.Tensor:
    """`copies` augmented crops of every image: (B, 3, H, W) float [0, 1] -> (copies * B, 3, size, size), copy-major
    (rows k*B..(k+1)*B-1 hold copy k of images 0..B-1), each with its own random parameters drawn from `g` (a
    generator on batch's device): RandomResizedCrop(size, scale, ratio), horizontal flip (p flip_p), ColorJitter
    (brightness, contrast, saturation, hue = `jitter`) with p jitter_p, grayscale with p gray_p, Gaussian blur
    (kernel blur_kernel, sigma uniform in blur_sigma) with p blur_p, then Normalize(MEAN, STD) if `normalize`.

    The draws do not depend on the probabilities (a flip is drawn even when flip_p is 0), so two calls with
    generators in the same state and different probabilities crop the same boxes. `sampling_ratio`: roi_align's
    samples per output pixel and axis (0: adaptive, ceil(box side / size); see the module docstring).
    """
    b, _, height, width = batch.shape
    n, dev = copies * b, batch.device
    boxes = resized_crop_boxes(n, height, width, scale, ratio, g, dev)
    u = torch.rand((n, 5), generator=g, device=dev)  # flip, jitter, gray, blur: apply or not; spare
    bri, con, sat, hue = jitter
    factors = torch.stack([_uniform(g, (n,), max(0.0, 1 - bri), 1 + bri, dev),
                           _uniform(g, (n,), max(0.0, 1 - con), 1 + con, dev),
                           _uniform(g, (n,), max(0.0, 1 - sat), 1 + sat, dev),
                           _uniform(g, (n,), -hue, hue, dev)])
    sigma = _uniform(g, (n,), blur_sigma[0], blur_sigma[1], dev)
    index = torch.arange(b, device=dev, dtype=batch.dtype).repeat(copies)
    x = roi_align(batch, torch.cat([index[:, None], boxes.to(batch.dtype)], dim=1), output_size=size,
                  spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    x = torch.where((u[:, 0] < flip_p).view(-1, 1, 1, 1), x.flip(-1), x)
    if jitter_p > 0:
        x = torch.where((u[:, 1] < jitter_p).view(-1, 1, 1, 1), color_jitter(x, *factors), x)
    if gray_p > 0:
        gray = (x * x.new_tensor(GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
        x = torch.where((u[:, 2] < gray_p).view(-1, 1, 1, 1), gray, x)
    if blur_p > 0:
        x = torch.where((u[:, 3] < blur_p).view(-1, 1, 1, 1), gaussian_blur(x, sigma, blur_kernel), x)
    if normalize:
        x = (x - x.new_tensor(MEAN).view(1, 3, 1, 1)) / x.new_tensor(STD).view(1, 3, 1, 1)
    return x
