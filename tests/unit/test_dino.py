import numpy as np
import torch
import torch.nn.functional as F

from conftest import section
from pipeline.backbone import crops, dino
from pipeline.backbone.factory import create_backbone
from pipeline.config import replace


def test_dino_loss_is_cross_entropy_over_pairs_of_different_views():
    torch.manual_seed(0)
    s = [torch.randn(3, 5) for _ in range(3)]  # 2 global + 1 local
    t = [torch.randn(3, 5) for _ in range(2)]
    loss_fn = dino.DINOLoss(5, student_temp=0.1, center_momentum=0.9)
    center = torch.randn(1, 5)
    loss_fn.center.copy_(center)
    got = loss_fn(s, t, teacher_temp=0.04)
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # (teacher view, student view), never the same view
    want = sum((-F.softmax((t[a] - center) / 0.04, -1) * F.log_softmax(s[b] / 0.1, -1)).sum(-1).mean()
               for a, b in pairs) / 4
    assert torch.isclose(got, want)
    assert torch.allclose(loss_fn.center, 0.9 * center + 0.1 * torch.cat(t).mean(0, keepdim=True))


def test_head_outputs_are_cosines_with_unit_prototypes():
    head = dino.DINOHead(8, 16, 32, 4, use_bn=True)
    out = head(torch.randn(6, 8))
    assert out.shape == (6, 16) and out.abs().max() <= 1 + 1e-6


def test_schedules_warm_up_then_decay():
    s = dino.cosine_schedule(1.0, 0.0, 10, warmup_steps=3)
    assert np.allclose(s[:3], [0, 0.5, 1.0]) and np.isclose(s[3], 1.0) and s[-1] < 0.05
    temps = dino.teacher_temp_schedule(section("pretrain", epochs=5, warmup_teacher_temp_epochs=3,
                                               warmup_teacher_temp=0.02, teacher_temp=0.04), 5)
    assert np.allclose(temps, [0.02, 0.03, 0.04, 0.04, 0.04])


def tiny_backbone():
    cfg = section("backbone", name="vit_tiny_patch16_224", source="random",
                  overrides={"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2})
    return create_backbone(cfg, 32)


def tiny_dino() -> tuple:
    """Seed 0: a tiny DINO (student, teacher, loss) on tiny_backbone() and one fixed multi-crop batch of 4 images:
    2 global crops of 32 px and 2 local crops of 16 px."""
    torch.manual_seed(0)
    cfg = section("pretrain", out_dim=32, hidden_dim=32, bottleneck_dim=8, global_crop_size=32, local_crop_size=16,
                  local_crops=2)
    student, teacher, loss_fn = dino.build(tiny_backbone(), cfg)
    glob, local = dino.multicrop_transforms(cfg)
    crops = dino.make_crops(torch.rand(4, 3, 40, 40), glob, local, 2)
    return student, teacher, loss_fn, crops


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    student, teacher, loss_fn, crops = tiny_dino()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    assert [c.shape[-1] for c in crops] == [32, 32, 16, 16]
    losses = [dino.train_step(student, teacher, loss_fn, opt, crops, 0.04, 0.9, 3.0, False) for _ in range(6)]
    assert losses[-1] < losses[0]


def test_the_teacher_is_the_ema_of_the_student_with_each_steps_momentum():
    """After every step, parameter by parameter: teacher = m * teacher_before + (1 - m) * student_after, with
    that step's m; the buffers (BatchNorm statistics) are the student's."""
    student, teacher, loss_fn, crops = tiny_dino()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)
    for m in (0.9, 0.5, 0.99):  # a different momentum each step, as the cosine schedule gives
        t_before = {n: p.clone() for n, p in teacher.named_parameters()}
        s_before = {n: p.clone() for n, p in student.named_parameters()}
        dino.train_step(student, teacher, loss_fn, opt, crops, 0.04, m, 3.0, False)
        s_after = dict(student.named_parameters())
        assert t_before.keys() == s_after.keys()
        assert any((s_after[n] - s_before[n]).abs().max() > 1e-4 for n in s_after)  # the student moved
        assert any((s_after[n] - t_before[n]).abs().max() > 1e-4 for n in s_after)  # and differs from the teacher
        for n, p in teacher.named_parameters():
            want = m * t_before[n] + (1 - m) * s_after[n].detach()
            assert torch.allclose(p, want, rtol=1e-6, atol=1e-7), (m, n, (p - want).abs().max())
        for (n, b), (_, sb) in zip(teacher.named_buffers(), student.named_buffers()):
            assert torch.equal(b, sb), n


# ---------------------------------------------------------------- batched crops (pretrain.crops: batched)
def plain(**kw) -> dict:
    """batched_crops arguments with every random op off and no normalisation; `kw` overrides."""
    return {"flip_p": 0.0, "jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0, "normalize": False} | kw


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_batched_crops_give_copies_of_every_image_in_one_float_tensor():
    x = torch.rand(3, 3, 20, 24)
    out = crops.batched_crops(x, 8, (0.2, 1.0), gen(), copies=2, blur_p=0.3)
    assert out.shape == (6, 3, 8, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_each_image_and_copy_gets_its_own_random_parameters():
    x = torch.rand(1, 3, 32, 32).expand(2, 3, 32, 32)  # two identical images
    out = crops.batched_crops(x, 16, (0.1, 0.5), gen(), copies=2)
    for a in range(4):
        for b in range(a + 1, 4):
            assert (out[a] - out[b]).abs().max() > 1e-2, (a, b)


def test_each_image_draws_its_own_flip_and_grayscale():
    x = torch.rand(1, 3, 6, 6).expand(32, 3, 6, 6)
    whole = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}
    out = crops.batched_crops(x, 6, g=gen(), **plain(flip_p=0.5, **whole))
    flipped = [bool(torch.allclose(o, x[0].flip(-1), atol=1e-6)) for o in out]
    assert all(f or torch.allclose(o, x[0], atol=1e-6) for f, o in zip(flipped, out)) and 8 < sum(flipped) < 24
    out = crops.batched_crops(x, 6, g=gen(), **plain(gray_p=0.5, **whole))
    gray = [bool(torch.equal(o[0], o[1])) for o in out]
    assert 8 < sum(gray) < 24


def test_the_whole_image_upscaled_is_torch_bilinear_and_downscaled_by_2_the_2x2_mean():
    x = torch.rand(2, 3, 8, 8)
    whole = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}
    up = crops.batched_crops(x, 16, g=gen(), **plain(**whole))
    assert torch.allclose(up, F.interpolate(x, size=16, mode="bilinear", align_corners=False), atol=1e-6)
    down = crops.batched_crops(x, 4, g=gen(), **plain(**whole))  # adaptive sampling: 2 x 2 samples per pixel
    assert torch.allclose(down, F.avg_pool2d(x, 2), atol=1e-6)


def bilinear(im: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """(C, H, W) sampled at rows ys (S,) x columns xs (T,) (pixel centres at integers, clamped to the image),
    bilinearly -> (C, S, T)."""
    def taps(p, n):
        p = p.clamp(0, n - 1)
        lo = p.floor().long()
        return lo, (lo + 1).clamp(max=n - 1), p - lo
    y0, y1, wy = taps(ys, im.shape[1])
    x0, x1, wx = taps(xs, im.shape[2])
    wy, wx = wy[:, None], wx[None, :]
    return ((1 - wy) * (1 - wx) * im[:, y0][:, :, x0] + (1 - wy) * wx * im[:, y0][:, :, x1]
            + wy * (1 - wx) * im[:, y1][:, :, x0] + wy * wx * im[:, y1][:, :, x1])


def test_crops_sample_the_image_bilinearly_inside_the_drawn_boxes():
    """The boxes are drawn first from the generator; upscaled (one sample per pixel), output pixel k of a box
    x1..x2 samples the image at x1 + (k + 0.5) * (x2 - x1) / size - 0.5 (torch's bilinear resize of the box, except
    that at the box's edge it reads the pixels beyond it, where torchvision's crop-then-resize repeats the edge)."""
    x = torch.rand(4, 3, 12, 16)
    boxes = crops.resized_crop_boxes(4, 12, 16, (0.1, 0.6), (3 / 4, 4 / 3), gen(3), torch.device("cpu"))
    out = crops.batched_crops(x, 20, (0.1, 0.6), gen(3), **plain())
    k = torch.arange(20) + 0.5
    for im, (x1, y1, x2, y2), got in zip(x, boxes.tolist(), out):
        want = bilinear(im, y1 + k * (y2 - y1) / 20 - 0.5, x1 + k * (x2 - x1) / 20 - 0.5)
        assert torch.allclose(got, want, atol=1e-5)


def test_boxes_follow_torchvisions_ranges_and_fallback():
    from torchvision.transforms import RandomResizedCrop
    b = crops.resized_crop_boxes(2000, 40, 60, (0.05, 0.35), (3 / 4, 4 / 3), gen(), torch.device("cpu"))
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert torch.equal(b, b.round()) and (b[:, :2] >= 0).all() and (b[:, 2] <= 60).all() and (b[:, 3] <= 40).all()
    share = w * h / 2400
    assert share.min() > 0.04 and share.max() < 0.37 and share.max() > 0.3  # rounding of w and h moves it a bit
    assert (w / h).min() > 0.69 and (w / h).max() < 1.45
    # nothing fits (twice the image's area): torchvision's centre crop, clipped to the ratio range
    b = crops.resized_crop_boxes(3, 10, 40, (2.0, 2.0), (3 / 4, 4 / 3), gen(), torch.device("cpu"))
    i, j, hh, ww = RandomResizedCrop.get_params(torch.zeros(3, 10, 40), [2.0, 2.0], [3 / 4, 4 / 3])
    assert b.tolist() == [[j, i, j + ww, i + hh]] * 3


def test_flip_forced_is_the_mirror_of_the_unflipped_crop_with_the_same_draws():
    x = torch.rand(3, 3, 16, 16)
    kw = {"size": 8, "scale": (0.3, 1.0), "blur_p": 1.0, "jitter_p": 1.0}
    kept = crops.batched_crops(x, g=gen(5), flip_p=0.0, **kw)
    flipped = crops.batched_crops(x, g=gen(5), flip_p=1.0, **kw)
    assert torch.allclose(flipped, torch.flip(kept, dims=[-1]), atol=1e-5)
    assert not torch.allclose(flipped, kept, atol=1e-3)


def test_jitter_with_factors_1_and_hue_0_is_the_identity_and_otherwise_torchvisions_adjust_steps():
    from torchvision.transforms.v2 import functional as TF
    x = torch.rand(3, 3, 6, 6)
    one, zero = torch.ones(3), torch.zeros(3)
    assert torch.allclose(crops.color_jitter(x, one, one, one, zero), x, atol=1e-6)
    b, c, s = torch.tensor([0.6, 1.0, 1.4]), torch.tensor([1.3, 0.7, 1.0]), torch.tensor([1.0, 1.4, 0.6])
    got = crops.color_jitter(x, b, c, s, zero)
    for i in range(3):
        want = TF.adjust_brightness(x[i], float(b[i]))
        want = TF.adjust_saturation(TF.adjust_contrast(want, float(c[i])), float(s[i]))
        assert torch.allclose(got[i], want, atol=1e-5), i
    gray = x[:, :1].expand(3, 3, 6, 6)  # a grey image has no hue to turn
    assert torch.allclose(crops.color_jitter(gray, one, one, one, torch.tensor([0.2, -0.2, 0.1])), gray, atol=1e-5)
    turned = crops.color_jitter(x, one, one, one, torch.full((3,), 0.2))
    assert (turned - x).abs().max() > 0.05
    primaries = torch.eye(3).view(3, 3, 1, 1)  # red, green, blue: a third of a turn makes one another, as HSV does
    for h in (1 / 3, -1 / 3):
        got = crops.color_jitter(primaries, one, one, one, torch.full((3,), h)).flatten(1).argmax(1)
        want = torch.stack([TF.adjust_hue(p, h) for p in primaries]).flatten(1).argmax(1)
        assert got.tolist() == want.tolist() == ([1, 2, 0] if h > 0 else [2, 0, 1]), h


def test_grayscale_gives_three_equal_channels_of_the_luma():
    x = torch.rand(2, 3, 8, 8)
    out = crops.batched_crops(x, 8, (1.0, 1.0), gen(), ratio=(1.0, 1.0), **plain(gray_p=1.0))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert torch.allclose(out[:, 0], 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2], atol=1e-6)


def test_blur_is_torchvisions_gaussian_blur_image_by_image():
    from torchvision.transforms.v2 import functional as TF
    x = torch.rand(3, 3, 9, 11)
    sigma = torch.tensor([0.1, 0.7, 1.5])
    got = crops.gaussian_blur(x, sigma, 5)
    for i in range(3):
        assert torch.allclose(got[i], TF.gaussian_blur(x[i], [5, 5], [float(sigma[i])] * 2), atol=1e-6), i


def test_batched_crops_are_reproducible_from_the_seed():
    x = torch.rand(4, 3, 24, 24)
    a, b = (crops.batched_crops(x, 12, (0.2, 1.0), gen(7), copies=2, blur_p=0.5) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, crops.batched_crops(x, 12, (0.2, 1.0), gen(8), copies=2, blur_p=0.5))


def test_train_steps_lower_the_loss_on_fixed_batched_crops():
    student, teacher, loss_fn, _ = tiny_dino()
    cfg = section("pretrain", global_crop_size=32, local_crop_size=16, local_crops=2)
    views = dino.make_batched_crops(torch.rand(4, 3, 40, 40), cfg, gen())
    assert [tuple(c.shape) for c in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 2
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    losses = [dino.train_step(student, teacher, loss_fn, opt, views, 0.04, 0.9, 3.0, False) for _ in range(6)]
    assert losses[-1] < losses[0]


def test_train_dino_with_batched_crops_repeats_itself_and_differs_from_per_image_crops():
    images = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)  # one batch an epoch
    cfg = section("pretrain", epochs=2, batch_size=4, out_dim=16, hidden_dim=16, bottleneck_dim=8,
                  global_crop_size=32, local_crop_size=16, local_crops=1, stop_after_epochs=0, max_minutes=0.0)
    def run(c):
        torch.manual_seed(0)  # the same initial weights
        return dino.train_dino(tiny_backbone(), images, c, seed=0)[1]
    runs = [run(cfg) for _ in range(2)]
    per_image = run(replace(cfg, crops="per_image"))
    assert [r["loss"] for r in runs[0]] == [r["loss"] for r in runs[1]]
    assert [r["loss"] for r in runs[0]] != [r["loss"] for r in per_image]
