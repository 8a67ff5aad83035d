"""Batched augmentation on the training device, with independent random parameters for every sample.

Per-sample PIL augmentation on the CPU makes an epoch take minutes. Here a batch of images that already lives
on the training device (uint8, NHWC, rows of the device-resident data set) becomes augmented float views in a
handful of batched kernels. Unlike torchvision's batch transforms, which draw ONE set of parameters for the
whole batch, every sample gets its own crop, flip, jitter factors, grayscale/blur/solarize coin flips and sigma.

Pipeline of one view (SimCLR / BYOL family), in this fixed order:

    1. random resized crop + horizontal flip   one grid_sample (bilinear) with a per-sample affine map
    2. colour jitter, with probability jitter_p brightness -> contrast -> saturation -> hue, per-sample factors
    3. random grayscale, with probability gray_p
    4. Gaussian blur, with probability blur_p  per-sample sigma, separable depthwise convolution
    5. solarize, with probability solarize_p   x >= 0.5 -> 1 - x

torchvision's ColorJitter applies its four operations in a random order per call; we use the fixed order
b, c, s, h (the order torchvision lists them in). Each colour operation follows torchvision's formula for a
single factor and clamps to [0, 1] after itself, as torchvision does, so a sample's jittered image equals
torchvision.transforms.v2.functional.adjust_*(image, factor) applied in that order (tested).

Typical use (what utils/steps.training_step does each step):

    cfgs = default_views(n_global=2)                       # BYOL-style asymmetric pair of 64-px views
    g = torch.Generator(device=images.device).manual_seed(0)
    v1, v2 = make_views(images[idx], cfgs, generator=g)    # each (B, 3, 64, 64) float32 in [0, 1]

All randomness comes from the given torch.Generator (on the images' device), so a run that saves and
restores the generator state resumes with exactly the same views. Nothing here synchronises the host with
the device (no .item(), no host->device copies of Python lists), so on CUDA the augmentation is queued
asynchronously like the model's kernels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.data import as_model_input

# ITU-R 601-2 luma weights, the ones torchvision's rgb_to_grayscale uses (r * 0.2989 + g * 0.587 + b * 0.114).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# Crop proposals drawn per sample; the first that fits inside the image is used (torchvision also tries 10).
CROP_TRIES = 10


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


# ---- Configuration

@dataclass(frozen=True)
class ViewConfig:
    """How to draw one augmented view. Frozen (hashable, safe to share between views and runs).

    Defaults are chosen for the course's 64x64 images (the usual values were tuned for 224 px):
      - crop_scale (0.2, 1.0): the 224-px default (0.08, 1.0) would keep 18x18 px of a 64-px image, too little
        content to match to the other view; 0.2 keeps >= 29x29 px (MoCo v2 / many small-image SSL setups).
      - colour jitter 0.4 / 0.4 / 0.4 / 0.1 with p=0.8, grayscale p=0.2: the BYOL / MoCo v2 strengths;
        colour statistics do not depend on resolution, so these carry over unchanged.
      - blur_sigma (0.1, 0.6) px: BYOL blurs with sigma in (0.1, 2.0) px at 224 px, i.e. up to ~1% of the image
        width; the same fraction of a 64-px image is ~0.6 px. A larger sigma would wipe out most of what a
        64-px image still shows. The kernel radius is ceil(3 * sigma_max) (2 here: a 5-tap kernel).
      - blur_p 0.5 (SimCLR), solarize_p 0 (off unless asked; default_views turns it on for BYOL's view 2)."""
    size: int = 64                                    # output side S in pixels (e.g. 32 for multi-crop views)
    crop_scale: tuple[float, float] = (0.2, 1.0)      # (min, max) crop area, fraction of the image's, in (0, 1]
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # (min, max) width / height of the crop, drawn log-uniformly
    flip_p: float = 0.5                               # probability of a horizontal flip
    jitter_p: float = 0.8                             # probability of colour jitter (all four factors at once)
    brightness: float = 0.4                           # strengths x of brightness, contrast and saturation:
    contrast: float = 0.4                             # factor ~ U[max(0, 1 - x), 1 + x] (torchvision)
    saturation: float = 0.4
    hue: float = 0.1                                  # shift ~ U[-hue, hue], in [0, 0.5] (fraction of the circle)
    gray_p: float = 0.2                               # probability of grayscale (3 equal channels)
    blur_p: float = 0.5                               # probability of a Gaussian blur, with a sigma drawn
    blur_sigma: tuple[float, float] = (0.1, 0.6)      # uniformly in (min, max) output pixels
    solarize_p: float = 0.0                           # probability of solarizing (x >= 0.5 -> 1 - x)

    def __post_init__(self):
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):      # stored as float pairs, e.g. from lists
            value = getattr(self, name)
            _require(isinstance(value, (tuple, list)) and len(value) == 2,
                     f"ViewConfig.{name} must be a (min, max) pair, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        _require(_is_int(self.size, 1),
                 f"ViewConfig.size must be a positive int (output side in pixels), got {self.size!r}")
        (scale_lo, scale_hi), (ratio_lo, ratio_hi) = self.crop_scale, self.crop_ratio
        _require(0.0 < scale_lo <= scale_hi <= 1.0,
                 f"ViewConfig.crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        _require(0.0 < ratio_lo <= ratio_hi,
                 f"ViewConfig.crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            p = getattr(self, name)
            _require(0.0 <= p <= 1.0, f"ViewConfig.{name} is a probability and must be in [0, 1], got {p}")
        for name in ("brightness", "contrast", "saturation"):
            _require(not getattr(self, name) < 0, f"ViewConfig.{name} must be >= 0, got {getattr(self, name)}")
        _require(0.0 <= self.hue <= 0.5,
                 f"ViewConfig.hue must be in [0, 0.5] (fraction of the hue circle), got {self.hue}")
        sigma_lo, sigma_hi = self.blur_sigma
        _require(0.0 < sigma_lo <= sigma_hi,
                 f"ViewConfig.blur_sigma must satisfy 0 < min <= max, got {self.blur_sigma}")
        if self.blur_p > 0 and self.blur_radius >= self.size:
            raise ValueError(f"ViewConfig.blur_sigma max {sigma_hi} needs a kernel radius of {self.blur_radius} px, "
                             f"which does not fit in size={self.size} (reflect padding needs radius < size)")

    def describe(self) -> str:
        """One line: "64 px, crop 20-100% of the area; probability of flip 0.5, colour jitter 0.8 (...), ..."."""
        lo, hi = self.crop_scale
        return (f"{self.size} px, crop {lo * 100:.0f}-{hi * 100:.0f}% of the area; probability of flip "
                f"{self.flip_p:g}, colour jitter {self.jitter_p:g} (strengths {self.brightness:g}, {self.contrast:g}, "
                f"{self.saturation:g}, {self.hue:g}), grayscale {self.gray_p:g}, blur {self.blur_p:g}, solarize "
                f"{self.solarize_p:g}")

    @property
    def blur_radius(self) -> int:
        """Half-width of the blur kernel: 3 sigma of the largest sigma (the kernel has 2 * radius + 1 taps)."""
        return max(1, math.ceil(3.0 * self.blur_sigma[1]))


def default_views(n_global: int = 2, n_local: int = 0, local_size: int = 32,
                  strength: float = 1.0, crop_min_scale: float = 0.2) -> list[ViewConfig]:
    """The view recipe used for training: n_global 64-px views, then n_local small multi-crop views.

    Global views follow BYOL's asymmetric pair (Grill et al. 2020): view 1 is always blurred and never
    solarized, view 2 is rarely blurred (p=0.1) and sometimes solarized (p=0.2); with more than two global
    views the two recipes alternate. Local views (Caron et al. 2020, multi-crop) are small crops,
    crop_scale (0.05, 0.4), resized to local_size px, blurred half of the time. The global views do not
    change when local views are added, so n_local is a clean ablation.

    strength scales the colour jitter (brightness, contrast, saturation, hue; hue capped at 0.5):
    0 disables it, 1 is the BYOL strength, 2 is close to SimCLR's (0.8, 0.8, 0.8, 0.2).
    crop_min_scale is the smallest crop area of a global view (fraction of the image): crops that miss the
    object leave two views that share only background, which teaches background matching.

    Returns a list of n_global + n_local ViewConfig, global ones first (losses.lejepa relies on that order)."""
    _require(_is_int(n_global, 1), f"n_global must be an int >= 1, got {n_global!r}")
    _require(_is_int(n_local, 0), f"n_local must be an int >= 0, got {n_local!r}")
    _require(strength >= 0, f"strength must be >= 0, got {strength!r}")
    _require(0 < crop_min_scale <= 1, f"crop_min_scale must be in (0, 1], got {crop_min_scale!r}")
    jitter = dict(brightness=0.4 * strength, contrast=0.4 * strength, saturation=0.4 * strength,
                  hue=min(0.1 * strength, 0.5))
    crop = dict(crop_scale=(crop_min_scale, 1.0))
    view_1 = ViewConfig(blur_p=1.0, solarize_p=0.0, **crop, **jitter)
    view_2 = ViewConfig(blur_p=0.1, solarize_p=0.2, **crop, **jitter)
    global_views = [view_1 if i % 2 == 0 else view_2 for i in range(n_global)]
    local_view = ViewConfig(size=local_size, crop_scale=(0.05, 0.4), blur_p=0.5, solarize_p=0.0, **jitter)
    return global_views + [local_view] * n_local


# ---- Per-sample parameters

@dataclass
class ViewParams:
    """Random parameters of one view, one entry per sample (all tensors on the images' device)."""
    crop_size: torch.Tensor     # (n, 2) float: crop width, height as fractions of the image's, in (0, 1]
    crop_center: torch.Tensor   # (n, 2) float: crop centre x, y as fractions of the image's, in [0, 1]
    flip: torch.Tensor          # (n,) bool: mirror left-right
    jitter: torch.Tensor        # (n,) bool: apply the colour jitter (its factors are drawn for every sample)
    brightness: torch.Tensor    # (n,) float: multiplicative factors (1 = unchanged), as are the next two
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor           # (n,) float: hue shift in [-0.5, 0.5] (0 = unchanged)
    gray: torch.Tensor          # (n,) bool: convert to grayscale
    blur: torch.Tensor          # (n,) bool: apply the Gaussian blur with this sample's sigma
    sigma: torch.Tensor         # (n,) float: blur standard deviation in output pixels
    solarize: torch.Tensor      # (n,) bool: solarize

    def __len__(self) -> int:
        return self.flip.shape[0]


def _uniform(low: float, high: float, shape, generator, device) -> torch.Tensor:
    """Uniform draws in [low, high) (exactly low when low == high)."""
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _coin(p: float, n: int, generator, device) -> torch.Tensor:
    """(n,) bool, each True with probability p (never True for p=0, always for p=1)."""
    return torch.rand(n, generator=generator, device=device) < p


def _sample_crops(n: int, scale, ratio, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random resized crop boxes, as torchvision's RandomResizedCrop draws them.

    Area fraction ~ U(scale), aspect ratio ~ logU(ratio); of CROP_TRIES proposals per sample the first that
    fits in the image is kept (vectorised rejection sampling). If none fits (only possible when the area is
    close to 1 and the ratio far from 1), the box is clamped to the image side. The centre is then uniform
    over the positions that keep the box inside the image. Returns (crop_size (n, 2), crop_center (n, 2))."""
    area = _uniform(scale[0], scale[1], (n, CROP_TRIES), generator, device)
    log_ratio = _uniform(math.log(ratio[0]), math.log(ratio[1]), (n, CROP_TRIES), generator, device)
    aspect = torch.exp(log_ratio)
    width, height = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (width <= 1.0) & (height <= 1.0)
    first_fit = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index 0 when nothing fits
    width = width.gather(1, first_fit).squeeze(1).clamp(max=1.0)
    height = height.gather(1, first_fit).squeeze(1).clamp(max=1.0)
    size = torch.stack([width, height], dim=1)
    center = size / 2 + (1.0 - size) * torch.rand(n, 2, generator=generator, device=device)
    return size, center


def _jitter_factor(amount: float, n: int, generator, device) -> torch.Tensor:
    """torchvision ColorJitter's factor range for brightness/contrast/saturation: U[max(0, 1 - a), 1 + a]."""
    return _uniform(max(0.0, 1.0 - amount), 1.0 + amount, n, generator, device)


def sample_view_params(n: int, cfg: ViewConfig, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> ViewParams:
    """Draw independent parameters for n samples from `generator` (None: torch's default generator).
    Every parameter is drawn for every sample, in a fixed order, whatever the probabilities, so the
    generator advances by the same amount for any config of the same n (reproducible, resumable)."""
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"the generator is on {generator.device} but the images are on {device}: create it with "
                         f"torch.Generator(device=images.device)")
    crop_size, crop_center = _sample_crops(n, cfg.crop_scale, cfg.crop_ratio, generator, device)
    return ViewParams(     # keyword arguments are evaluated left to right: this is the order of the draws
        crop_size=crop_size, crop_center=crop_center,
        flip=_coin(cfg.flip_p, n, generator, device), jitter=_coin(cfg.jitter_p, n, generator, device),
        brightness=_jitter_factor(cfg.brightness, n, generator, device),
        contrast=_jitter_factor(cfg.contrast, n, generator, device),
        saturation=_jitter_factor(cfg.saturation, n, generator, device),
        hue=_uniform(-cfg.hue, cfg.hue, n, generator, device),
        gray=_coin(cfg.gray_p, n, generator, device), blur=_coin(cfg.blur_p, n, generator, device),
        sigma=_uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], n, generator, device),
        solarize=_coin(cfg.solarize_p, n, generator, device))


# ---- Operations, each on a whole batch with per-sample parameters. x: (n, 3, H, W) float in [0, 1].

def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) NHWC (or uint8 NCHW) -> float32 (B, 3, H, W) in [0, 1], divided by 255 like the
    grader's ToTensor(); float (B, 3, H, W) in [0, 1] passes through (as float32)."""
    shape = tuple(images.shape)
    _require(images.ndim == 4, f"images must be a batch (B, H, W, 3) uint8 or (B, 3, H, W) float, got {shape}")
    if images.dtype == torch.uint8:
        _require(shape[-1] == 3 or shape[1] == 3, f"uint8 images must be (B, H, W, 3) or (B, 3, H, W), got {shape}")
        return as_model_input(images)   # NHWC as a channels_last NCHW view, no copy
    _require(images.is_floating_point(), f"images must be uint8 or floating point, got {images.dtype}")
    _require(shape[1] == 3, f"float images must be NCHW (B, 3, H, W) in [0, 1], got {shape}")
    return images.float()


def crop_flip(x: torch.Tensor, params: ViewParams, size: int) -> torch.Tensor:
    """Resized crop + horizontal flip in one bilinear resampling. (n, 3, H, W) -> (n, 3, size, size).

    In grid_sample's normalised coordinates (align_corners=False: -1 and 1 are the outer edges of the image),
    output pixel centre u maps to input coordinate  scale * u + shift  per axis, with scale = the crop's side
    fraction (negated for a flip) and shift = 2 * centre - 1: F.affine_grid's per-sample affine map, built here
    from exact pixel centres u = (2j + 1) / size - 1 (affine_grid's linspace rounds them), so the identity crop
    and the flip are bit-exact for power-of-two sizes. Boxes lie inside the image: 'border' padding only absorbs
    rounding. Bilinear sampling does not antialias; that matters only for large crops shrunk to small views."""
    n = x.shape[0]
    centres = (2.0 * torch.arange(size, device=x.device, dtype=torch.float32) + 1.0) / size - 1.0  # (S,)
    x_scale = torch.where(params.flip, -params.crop_size[:, 0], params.crop_size[:, 0])          # (n,)
    y_scale = params.crop_size[:, 1]
    shift = 2.0 * params.crop_center - 1.0                                                       # (n, 2)
    grid_x = x_scale[:, None] * centres + shift[:, 0:1]                                          # (n, S)
    grid_y = y_scale[:, None] * centres + shift[:, 1:2]                                          # (n, S)
    grid = torch.stack([grid_x[:, None, :].expand(n, size, size),                                # x varies along
                        grid_y[:, :, None].expand(n, size, size)], dim=-1)                       # columns, y rows
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> (n, 1, H, W) luma with torchvision's ITU-R 601-2 weights (same operation order)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n, 1, 1, 1), to broadcast one value per sample over an image batch."""
    return values.view(-1, 1, 1, 1)


def _blend(image: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend with a per-sample factor: factor * image + (1 - factor) * other, clamped to [0, 1]."""
    f = _per_sample(factor)
    return (image * f + other * (1.0 - f)).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x * factor, clamped (torchvision adjust_brightness). factor: (n,)."""
    return (x * _per_sample(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean of the image's grayscale version (torchvision adjust_contrast). factor: (n,)."""
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale image (torchvision adjust_saturation). factor: (n,)."""
    return _blend(x, rgb_to_grayscale(x), factor)


def _hue_value_chroma(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, 3, H, W) RGB in [0, 1] -> hue in sixths of the circle (in [-1, 5)), value = max, chroma = max - min;
    each (n, 1, H, W). Standard hexcone model; ties resolve to red, then green (as in torchvision / Pillow)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    value = x.amax(dim=1, keepdim=True)
    chroma = value - x.amin(dim=1, keepdim=True)
    # Measured from the dominant channel: (g - b) / c around red, 2 + (b - r) / c around green, 4 + (r - g) / c
    # around blue. Gray pixels (c = 0) have g - b = 0 and get hue 0 without a special case or a NaN.
    numerator = torch.where(value == r, g - b, torch.where(value == g, (b - r) + 2.0 * chroma,
                                                           (r - g) + 4.0 * chroma))
    hue_sixths = numerator / torch.where(chroma > 0, chroma, 1.0)
    return hue_sixths, value, chroma


def _rgb_from_hue_value_chroma(hue_sixths: torch.Tensor, value: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Inverse of _hue_value_chroma, branch-free (no gather, slow on GPUs); hue in sixths, any real number.
    Channel c = V - C * clamp(min(k, 4 - k), 0, 1) with k = (n_c + hue) mod 6 and n = (5, 3, 1) for (R, G, B)."""
    n_c = torch.arange(5.0, 0.0, -2.0, device=value.device, dtype=value.dtype).view(1, 3, 1, 1)  # on device
    k = torch.remainder(n_c + hue_sixths, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return value - chroma * ramp


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) RGB in [0, 1] -> (n, 3, H, W) HSV in [0, 1] (hue as a fraction of the circle, in [0, 1)).
    Gray pixels get hue 0 and saturation 0 (as in torchvision)."""
    hue_sixths, value, chroma = _hue_value_chroma(x)
    hue = torch.remainder(hue_sixths / 6.0, 1.0)
    saturation = chroma / torch.where(value > 0, value, 1.0)
    return torch.cat([hue, saturation, value], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) HSV in [0, 1] -> RGB in [0, 1]."""
    hue, saturation, value = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    return _rgb_from_hue_value_chroma(6.0 * hue, value, value * saturation)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` (n,) fractions of the circle in HSV space (torchvision adjust_hue).
    A hue rotation keeps value V and chroma C = V * S, so it is computed as rgb(hue + shift, V, C) without
    forming S or wrapping the hue to [0, 1) twice: fewer full-image passes than rgb -> hsv -> rgb."""
    hue_sixths, value, chroma = _hue_value_chroma(x)
    return _rgb_from_hue_value_chroma(hue_sixths + 6.0 * _per_sample(shift), value, chroma)


def color_jitter(x: torch.Tensor, params: ViewParams, cfg: ViewConfig) -> torch.Tensor:
    """Brightness -> contrast -> saturation -> hue with per-sample factors on the samples where params.jitter,
    others unchanged. Operations whose range is empty in cfg (e.g. hue=0) are skipped (a Python-level check)."""
    out = x
    if cfg.brightness > 0:
        out = adjust_brightness(out, params.brightness)
    if cfg.contrast > 0:
        out = adjust_contrast(out, params.contrast)
    if cfg.saturation > 0:
        out = adjust_saturation(out, params.saturation)
    if cfg.hue > 0:
        out = adjust_hue(out, params.hue)
    return torch.where(_per_sample(params.jitter), out, x)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(n,) sigmas -> (n, 2 * radius + 1) normalised 1-D Gaussian kernels (torchvision's formula)."""
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
    return kernel / kernel.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each sample with its own sigma: a separable depthwise convolution over the batch folded into
    channels (groups = n * 3), reflect padding as in torchvision. (n, 3, H, W) -> (n, 3, H, W).
    On CUDA, cuDNN may run this convolution in TF32 (~1e-3 relative error): irrelevant for an augmentation."""
    n, c, h, w = x.shape
    kernel = gaussian_kernels(sigma, radius).repeat_interleave(c, dim=0)  # (n * c, taps): same kernel per channel
    taps = kernel.shape[1]
    padded = F.pad(x, (radius,) * 4, mode="reflect").reshape(1, n * c, h + 2 * radius, w + 2 * radius)
    rows = F.conv2d(padded, kernel.view(n * c, 1, 1, taps), groups=n * c)
    both = F.conv2d(rows, kernel.view(n * c, 1, taps, 1), groups=n * c)
    return both.view(n, c, h, w)


def solarize(x: torch.Tensor) -> torch.Tensor:
    """x >= 0.5 -> 1 - x (torchvision solarize with threshold 0.5), written as min(x, 1 - x): bit-identical to
    torchvision's where(x >= 0.5, 1 - x, x) (1 - x is exact there) in two vectorised passes instead of three."""
    return torch.minimum(x, 1.0 - x)


# ---- Views

def apply_view(images: torch.Tensor, params: ViewParams, cfg: ViewConfig) -> torch.Tensor:
    """Apply drawn parameters: images (B, H, W, 3) uint8 or (B, 3, H, W) float in [0, 1]
    -> (B, 3, cfg.size, cfg.size) float32 in [0, 1], contiguous in channels_last memory format.

    Each probabilistic operation is computed for the whole batch and selected per sample with torch.where:
    branch-free (no host sync, no per-sample loop), and a sample an operation skips stays bit-for-bit unchanged."""
    x = to_float_nchw(images)
    _require(len(params) == x.shape[0], f"params were drawn for {len(params)} samples but the batch has {x.shape[0]}")
    x = crop_flip(x, params, cfg.size)
    if cfg.jitter_p > 0:
        x = color_jitter(x, params, cfg)
    if cfg.gray_p > 0:
        x = torch.where(_per_sample(params.gray), rgb_to_grayscale(x).expand_as(x), x)
    if cfg.blur_p > 0:
        x = torch.where(_per_sample(params.blur), gaussian_blur(x, params.sigma, cfg.blur_radius), x)
    if cfg.solarize_p > 0:
        x = torch.where(_per_sample(params.solarize), solarize(x), x)
    # Bilinear weights and blur kernels sum to 1 only up to rounding (values like 1.0000002 appear): clamp so
    # that the promise "in [0, 1]" holds exactly. In place on a tensor this function created.
    return x.clamp_(0.0, 1.0).contiguous(memory_format=torch.channels_last)


def make_view(images: torch.Tensor, cfg: ViewConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """One augmented view with fresh per-sample parameters.
    images: (B, H, W, 3) uint8 or (B, 3, H, W) float in [0, 1], on the training device.
    generator: a torch.Generator on the same device (None: torch's default generator).
    Returns (B, 3, S, S) float32 in [0, 1], channels_last, S = cfg.size."""
    x = to_float_nchw(images)
    return apply_view(x, sample_view_params(x.shape[0], cfg, generator, x.device), cfg)


def make_views(images: torch.Tensor, cfgs, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """One view per config (e.g. default_views()), each with its own independent parameters.
    images: (B, H, W, 3) uint8 or (B, 3, H, W) float in [0, 1]. Returns [(B, 3, S_i, S_i)] float32 in [0, 1].
    The conversion to float is done once for all views."""
    cfgs = list(cfgs)
    _require(bool(cfgs), "make_views needs at least one ViewConfig")
    x = to_float_nchw(images)
    return [make_view(x, cfg, generator) for cfg in cfgs]
