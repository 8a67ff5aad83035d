"""Batched GPU-style augmentation: per-sample parameters, exactness of the no-op paths, agreement with
torchvision's single-image colour functions, reproducibility, validation."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from utils.augment import (
    ViewConfig, ViewParams, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, apply_view,
    color_jitter, crop_flip, default_views, gaussian_blur, hsv_to_rgb, make_view, make_views, rgb_to_grayscale,
    rgb_to_hsv, sample_view_params, solarize, to_float_nchw,
)

# Scale (1, 1) and ratio (1, 1) make the crop the whole image; with every probability 0 a view is the input.
IDENTITY = ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0,
                      blur_p=0.0, solarize_p=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small tensors: see tests/conftest.py


def smooth_images(n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    """(n, size, size, 3) uint8 images with structure at several scales (upsampled noise + fine noise), so
    that crops, blur and colour operations all have something to act on."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear",
                           align_corners=False)
    fine = torch.rand(n, 3, size, size, generator=g)
    x = (0.75 * coarse + 0.25 * fine).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_params(n: int, **overrides) -> ViewParams:
    """Parameters of an identity view for n samples, with some fields replaced."""
    params = sample_view_params(n, IDENTITY, generator(0))
    return dataclasses.replace(params, **overrides)


# ----------------------------------------------------------------------------------------------------------
# Shapes, ranges, per-sample randomness
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [64, 32])
def test_views_have_the_promised_shape_dtype_range_and_layout(size):
    images = smooth_images(8)
    view = make_view(images, ViewConfig(size=size, solarize_p=0.5, blur_p=0.5), generator(0))
    assert view.shape == (8, 3, size, size)
    assert view.dtype == torch.float32
    assert view.min() >= 0.0 and view.max() <= 1.0
    assert view.is_contiguous(memory_format=torch.channels_last)


def test_every_sample_gets_its_own_parameters():
    # 64 copies of ONE image: a batch-shared draw (torchvision's batch transforms) would give 64 equal views.
    images = smooth_images(1).expand(64, -1, -1, -1)
    cfg = ViewConfig(jitter_p=1.0)
    params = sample_view_params(64, cfg, generator(1))
    for name in ("brightness", "contrast", "saturation", "hue", "sigma"):
        assert getattr(params, name).unique().numel() == 64, name
    assert params.crop_size[:, 0].unique().numel() == 64
    assert params.crop_center[:, 1].unique().numel() == 64
    assert 0 < params.flip.sum() < 64
    views = apply_view(images, params, cfg).flatten(1)
    assert views.unique(dim=0).shape[0] == 64


def test_coin_flips_follow_their_probabilities():
    cfg = ViewConfig(flip_p=0.3, jitter_p=0.8, gray_p=0.2, blur_p=0.6, solarize_p=0.1)
    params = sample_view_params(20000, cfg, generator(2))
    for name, p in [("flip", 0.3), ("jitter", 0.8), ("gray", 0.2), ("blur", 0.6), ("solarize", 0.1)]:
        assert abs(getattr(params, name).float().mean().item() - p) < 0.02, name
    assert params.hue.abs().max() <= cfg.hue
    assert params.brightness.min() >= 0.6 and params.brightness.max() <= 1.4
    lo, hi = cfg.blur_sigma
    assert params.sigma.min() >= lo and params.sigma.max() <= hi


def test_crop_boxes_respect_scale_ratio_and_image_bounds():
    cfg = ViewConfig(crop_scale=(0.1, 0.9), crop_ratio=(0.5, 2.0))
    params = sample_view_params(20000, cfg, generator(3))
    width, height = params.crop_size.unbind(1)
    area, ratio = width * height, width / height
    assert area.min() >= 0.1 - 1e-6 and area.max() <= 0.9 + 1e-6
    assert ratio.min() >= 0.5 - 1e-5 and ratio.max() <= 2.0 + 1e-5
    low = params.crop_center - params.crop_size / 2
    high = params.crop_center + params.crop_size / 2
    assert low.min() >= -1e-6 and high.max() <= 1 + 1e-6
    # With a square ratio every proposal fits: the area is then uniform over its range (mean 0.5), not
    # piled up at one end by clamping. (Other ratios reject some large boxes, as torchvision does.)
    square = sample_view_params(20000, ViewConfig(crop_scale=(0.1, 0.9), crop_ratio=(1.0, 1.0)), generator(3))
    assert abs(square.crop_size.prod(dim=1).mean().item() - 0.5) < 0.01


def test_crop_geometry_selects_the_intended_pixels():
    # A half-size box centred at (x=0.25, y=0.75) is the bottom-left quadrant; at 32 px output its sample
    # points fall exactly on input pixel centres, so the crop is an exact copy (checks x/y order and signs).
    images = smooth_images(2)
    x = to_float_nchw(images)
    params = with_params(2, crop_size=torch.tensor([[0.5, 0.5]] * 2), crop_center=torch.tensor([[0.25, 0.75]] * 2))
    out = crop_flip(x, params, size=32)
    torch.testing.assert_close(out, x[:, :, 32:, :32], atol=1e-6, rtol=0)


def test_identity_config_returns_the_input_exactly():
    images = smooth_images(6)
    out = make_view(images, IDENTITY, generator(4))
    assert torch.equal(out, to_float_nchw(images))


def test_flip_is_an_exact_mirror():
    images = smooth_images(6)
    out = make_view(images, dataclasses.replace(IDENTITY, flip_p=1.0), generator(5))
    assert torch.equal(out, to_float_nchw(images).flip(-1))


def test_crop_grid_is_the_affine_grid_of_the_per_sample_theta():
    # crop_flip builds its sampling grid directly; it must be what F.affine_grid makes of theta.
    images = smooth_images(16)
    x = to_float_nchw(images)
    params = sample_view_params(16, ViewConfig(), generator(16))
    sx = torch.where(params.flip, -params.crop_size[:, 0], params.crop_size[:, 0])
    sy = params.crop_size[:, 1]
    tx, ty = (2 * params.crop_center - 1).unbind(1)
    zero = torch.zeros(16)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(theta, [16, 3, 48, 48], align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(crop_flip(x, params, 48), expected, atol=1e-5, rtol=0)


def test_uint8_nhwc_and_float_nchw_inputs_give_the_same_views():
    images = smooth_images(8)
    as_float = images.permute(0, 3, 1, 2).float().div(255).contiguous()
    cfgs = default_views(2, 1)
    from_uint8 = make_views(images, cfgs, generator(6))
    from_float = make_views(as_float, cfgs, generator(6))
    for a, b in zip(from_uint8, from_float):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_same_seed_same_views_different_seed_different_views():
    images = smooth_images(8)
    cfgs = default_views(2)
    first = make_views(images, cfgs, generator(7))
    again = make_views(images, cfgs, generator(7))
    other = make_views(images, cfgs, generator(8))
    for a, b, c in zip(first, again, other):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)
    # The two views of one call differ from each other (independent draws).
    assert not torch.allclose(first[0], first[1])


def test_generator_state_resumes_the_same_stream():
    images = smooth_images(4)
    g = generator(9)
    make_view(images, ViewConfig(), g)
    state = g.get_state()
    expected = make_view(images, ViewConfig(), g)
    g.set_state(state)
    assert torch.equal(make_view(images, ViewConfig(), g), expected)


def test_no_generator_uses_the_global_seed():
    images = smooth_images(4)
    torch.manual_seed(123)
    a = make_view(images, ViewConfig())
    torch.manual_seed(123)
    b = make_view(images, ViewConfig())
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------------------
# Colour operations agree with torchvision, image by image, with that image's factor
# ----------------------------------------------------------------------------------------------------------

def float_images(n: int, seed: int = 10) -> torch.Tensor:
    x = to_float_nchw(smooth_images(n, seed))
    x[0, :, :4, :4] = 0.5  # gray pixels (max == min) exercise the hue special case
    x[1, :, :4, :4] = 1.0
    return x


@pytest.mark.parametrize("ours, theirs, low, high", [
    (adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
    (adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
    (adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
])
def test_blend_operations_match_torchvision_per_sample(ours, theirs, low, high):
    x = float_images(6)
    factors = torch.linspace(low, high, 6)
    out = ours(x, factors)
    for i in range(6):
        torch.testing.assert_close(out[i], theirs(x[i], float(factors[i])), atol=1e-5, rtol=0)


def test_hue_matches_torchvision_per_sample():
    x = float_images(6)
    shifts = torch.tensor([-0.5, -0.3, -0.01, 0.0, 0.2, 0.5])
    out = adjust_hue(x, shifts)
    for i in range(6):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], float(shifts[i])), atol=1e-4, rtol=0)


def test_hsv_round_trip_is_lossless():
    x = float_images(4)
    hsv = rgb_to_hsv(x)
    assert hsv.min() >= 0 and hsv.max() <= 1 and torch.isfinite(hsv).all()
    torch.testing.assert_close(hsv_to_rgb(hsv), x, atol=1e-5, rtol=0)


def test_colour_jitter_matches_torchvision_chain_in_order_b_c_s_h():
    x = float_images(6)
    cfg = ViewConfig(jitter_p=1.0, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.3)
    params = sample_view_params(6, cfg, generator(11))
    params.jitter[3] = False  # one sample without jitter must come out untouched
    out = color_jitter(x, params, cfg)
    for i in range(6):
        if i == 3:
            assert torch.equal(out[i], x[i])
            continue
        expected = TF.adjust_brightness(x[i], float(params.brightness[i]))
        expected = TF.adjust_contrast(expected, float(params.contrast[i]))
        expected = TF.adjust_saturation(expected, float(params.saturation[i]))
        expected = TF.adjust_hue(expected, float(params.hue[i]))
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=0)


def test_grayscale_and_solarize_match_torchvision():
    x = float_images(3)
    torch.testing.assert_close(rgb_to_grayscale(x), TF.rgb_to_grayscale(x, num_output_channels=1),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(solarize(x), TF.solarize(x, threshold=0.5), atol=0, rtol=0)


def test_blur_matches_torchvision_per_sample():
    x = float_images(4)
    sigma = torch.tensor([0.3, 0.6, 1.0, 1.5])
    radius = 5
    out = gaussian_blur(x, sigma, radius)
    for i in range(4):
        expected = TF.gaussian_blur(x[i], kernel_size=[2 * radius + 1] * 2, sigma=[float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Probabilistic operations touch exactly the samples drawn for them
# ----------------------------------------------------------------------------------------------------------

def total_variation(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> (n,) mean absolute difference between neighbouring pixels."""
    return (x.diff(dim=-1).abs().mean(dim=(1, 2, 3)) + x.diff(dim=-2).abs().mean(dim=(1, 2, 3)))


def test_unblurred_samples_are_unchanged_and_blurred_ones_smoother():
    images = smooth_images(32)
    cfg = dataclasses.replace(IDENTITY, blur_p=0.5, blur_sigma=(0.5, 1.0))
    params = sample_view_params(32, cfg, generator(12))
    assert 0 < params.blur.sum() < 32
    out = apply_view(images, params, cfg)
    plain = apply_view(images, params, IDENTITY)  # same crop, no blur
    keep = ~params.blur
    assert torch.equal(out[keep], plain[keep])
    assert (total_variation(out[params.blur]) < 0.9 * total_variation(plain[params.blur])).all()


def test_grayscale_and_solarize_touch_only_their_samples():
    images = smooth_images(32)
    cfg = dataclasses.replace(IDENTITY, gray_p=0.5, solarize_p=0.5)
    params = sample_view_params(32, cfg, generator(13))
    out = apply_view(images, params, cfg)
    plain = apply_view(images, params, IDENTITY)
    gray, sol = params.gray, params.solarize
    assert gray.any() and sol.any() and (~gray & ~sol).any()
    untouched = ~gray & ~sol
    assert torch.equal(out[untouched], plain[untouched])
    grayed = out[gray]
    assert torch.equal(grayed[:, 0], grayed[:, 1]) and torch.equal(grayed[:, 1], grayed[:, 2])
    assert out[sol].max() <= 0.5  # solarize maps x >= 0.5 to 1 - x <= 0.5
    assert not torch.equal(out[gray & ~sol], plain[gray & ~sol])


def test_jitter_probability_zero_strength_and_disabled_ops_leave_colours_alone():
    images = smooth_images(8)
    no_colour = dataclasses.replace(IDENTITY, jitter_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    assert torch.equal(make_view(images, no_colour, generator(14)), to_float_nchw(images))


# ----------------------------------------------------------------------------------------------------------
# View recipes
# ----------------------------------------------------------------------------------------------------------

def test_default_views_are_an_asymmetric_global_pair_plus_local_crops():
    cfgs = default_views(n_global=2, n_local=3, local_size=32)
    assert len(cfgs) == 5
    first, second, *local = cfgs
    assert (first.size, second.size) == (64, 64)
    assert first.blur_p > second.blur_p and second.solarize_p > first.solarize_p == 0.0
    assert all(c.size == 32 and c.crop_scale[1] <= 0.5 for c in local)
    views = make_views(smooth_images(4), cfgs, generator(15))
    assert [tuple(v.shape) for v in views] == [(4, 3, 64, 64)] * 2 + [(4, 3, 32, 32)] * 3


def test_strength_scales_the_colour_jitter():
    weak, strong = default_views(strength=0.5)[0], default_views(strength=2.0)[0]
    assert strong.brightness == pytest.approx(4 * weak.brightness)
    assert strong.hue == pytest.approx(4 * weak.hue)
    off = default_views(strength=0.0)[0]
    assert (off.brightness, off.contrast, off.saturation, off.hue) == (0.0, 0.0, 0.0, 0.0)
    assert default_views(strength=10.0)[0].hue == 0.5


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(crop_scale=(0.6, 0.2)), "crop_scale"),
    (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
    (dict(crop_scale=(0.2, 1.5)), "crop_scale"),
    (dict(crop_scale=(0.2,)), "crop_scale"),
    (dict(crop_ratio=(0.0, 1.0)), "crop_ratio"),
    (dict(crop_ratio=(2.0, 1.0)), "crop_ratio"),
    (dict(flip_p=1.5), "flip_p"),
    (dict(jitter_p=-0.1), "jitter_p"),
    (dict(solarize_p=2), "solarize_p"),
    (dict(brightness=-0.1), "brightness"),
    (dict(hue=0.6), "hue"),
    (dict(blur_sigma=(0.0, 1.0)), "blur_sigma"),
    (dict(blur_sigma=(2.0, 1.0)), "blur_sigma"),
    (dict(size=0), "size"),
    (dict(size=4, blur_p=0.5, blur_sigma=(1.0, 2.0)), "blur_sigma"),
])
def test_view_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViewConfig(**kwargs)


def test_view_config_accepts_lists_and_is_hashable():
    cfg = ViewConfig(crop_scale=[0.3, 1], blur_sigma=[0.1, 1])
    assert cfg.crop_scale == (0.3, 1.0) and isinstance(cfg.blur_sigma, tuple)
    assert hash(cfg) == hash(ViewConfig(crop_scale=(0.3, 1.0), blur_sigma=(0.1, 1.0)))


def test_crop_min_scale_sets_the_global_views_only():
    cfgs = default_views(n_global=2, n_local=1, crop_min_scale=0.5)
    assert [c.crop_scale for c in cfgs] == [(0.5, 1.0), (0.5, 1.0), (0.05, 0.4)]


@pytest.mark.parametrize("kwargs", [dict(n_global=0), dict(n_local=-1), dict(strength=-1.0),
                                    dict(crop_min_scale=0.0), dict(crop_min_scale=1.5)])
def test_default_views_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        default_views(**kwargs)


@pytest.mark.parametrize("images", [
    torch.rand(2, 64, 64, 3),                       # float NHWC
    torch.zeros(2, 64, 64, 4, dtype=torch.uint8),   # 4 channels
    torch.zeros(64, 64, 3, dtype=torch.uint8),      # not a batch
    torch.zeros(2, 3, 64, 64, dtype=torch.int32),   # integer but not uint8
])
def test_bad_image_batches_are_rejected(images):
    with pytest.raises(ValueError):
        make_view(images, ViewConfig())


def test_params_for_another_batch_size_are_rejected():
    params = sample_view_params(3, ViewConfig(), generator(0))
    with pytest.raises(ValueError, match="3 samples"):
        apply_view(smooth_images(4), params, ViewConfig())


def test_make_views_needs_configs():
    with pytest.raises(ValueError):
        make_views(smooth_images(2), [])
