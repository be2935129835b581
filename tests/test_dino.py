import numpy as np
import torch
import torch.nn.functional as F

from conftest import section
from pipeline.backbone import dino
from pipeline.backbone.factory import create_backbone


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
    """Seed 0: a tiny DINO (student, teacher, loss) on tiny_backbone() and one fixed multi-crop batch of 8 images:
    2 global crops of 32 px and 2 local crops of 16 px."""
    torch.manual_seed(0)
    cfg = section("pretrain", out_dim=32, hidden_dim=32, bottleneck_dim=8, global_crop_size=32, local_crop_size=16,
                  local_crops=2)
    student, teacher, loss_fn = dino.build(tiny_backbone(), cfg)
    glob, local = dino.multicrop_transforms(cfg)
    crops = dino.make_crops(torch.rand(8, 3, 40, 40), glob, local, 2)
    return student, teacher, loss_fn, crops


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    student, teacher, loss_fn, crops = tiny_dino()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    assert [c.shape[-1] for c in crops] == [32, 32, 16, 16]
    losses = [dino.train_step(student, teacher, loss_fn, opt, crops, 0.04, 0.9, 3.0, False) for _ in range(15)]
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
