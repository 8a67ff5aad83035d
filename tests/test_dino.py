"""DINO's head, centre and settings; its loss falls when a toy student learns with an EMA teacher."""
import pytest
import torch

from utils.dino import DinoHead, SelfDistillation
from utils.ema import ModelEMA


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small tensors: see tests/conftest.py


class ToyEncoder(torch.nn.Module):
    """(B, 32) -> (features, projection (B, 8)), the (h, z) contract of ImageEncoder.forward."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))

    def forward(self, x):
        z = self.net(x)
        return z, z


def build(num_prototypes=16, **settings):
    student = torch.nn.ModuleDict({"encoder": ToyEncoder(), "head": DinoHead(8, num_prototypes=num_prototypes)})
    ema = ModelEMA(student, buffers="own")
    return student, ema, SelfDistillation(student["head"], ema.model, num_global=2, **settings)


def test_head_gives_cosine_similarities_to_unit_prototypes():
    head = DinoHead(8, num_prototypes=5)
    z = torch.randn(3, 4, 8)
    logits = head(z)
    assert logits.shape == (3, 4, 5) and logits.abs().max() <= 1 + 1e-6
    assert head(z * 10).allclose(logits, atol=1e-6)                       # invariant to the projection's scale
    unit = torch.nn.functional.normalize(head.prototypes[0].detach(), dim=0)
    assert head(unit)[0].item() == pytest.approx(1.0, abs=1e-6)          # a prototype matches itself
    with torch.autocast("cpu", dtype=torch.bfloat16):                    # the training loop runs it so on a GPU
        inside = head(z.bfloat16())
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, head(z.bfloat16().float()))


def test_centre_follows_the_teacher_mean_logit_with_its_momentum():
    _, _, distiller = build(num_prototypes=3, center_momentum=0.75)
    logits = torch.tensor([[[4.0, 0.0, -4.0], [0.0, 0.0, 0.0]]])          # (G=1, B=2, K=3): mean (2, 0, -2)
    distiller.update_center(logits)
    torch.testing.assert_close(distiller.center, torch.tensor([0.5, 0.0, -0.5]))    # 0.25 * mean
    distiller.update_center(logits)
    torch.testing.assert_close(distiller.center, torch.tensor([0.875, 0.0, -0.875]))
    saved = distiller.state_dict()
    _, _, other = build(num_prototypes=3)
    other.load_state_dict(saved)
    torch.testing.assert_close(other.center, distiller.center)


def test_self_distillation_loss_falls_on_a_toy_problem():
    """Three noisy views of points from 4 clusters: the student learns to match the teacher's centred and
    sharpened assignments (the loss, on fixed views, falls from 1.07 to 0.02 in 80 steps on this seed)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 32, generator=g) * 3
    data = centres[torch.arange(256) % 4] + torch.randn(256, 32, generator=g)
    student, ema, distiller = build()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)

    def views(seed):
        noise = torch.Generator().manual_seed(seed)
        return [data + 0.5 * torch.randn(data.shape, generator=noise) for _ in range(3)]   # 2 global + 1 local

    def loss_of(views_):
        z = torch.stack([student["encoder"](v)[1] for v in views_])
        with torch.no_grad():
            teacher_z = torch.stack([distiller.teacher_encoder(v)[1] for v in views_[:2]])
        return distiller.loss(z, teacher_z)

    def evaluate():
        with torch.no_grad():
            return loss_of(views(999))[0].item()

    before = evaluate()
    for step in range(80):
        loss, teacher_logits = loss_of(views(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        distiller.update_center(teacher_logits)
        ema.update(student, momentum=0.9)
    after = evaluate()
    assert after < 0.8 * before, (before, after)
    # No collapse: the teacher gives each cluster a prototype of its own (measured: 4 distinct, one per cluster).
    with torch.no_grad():
        assigned = distiller.teacher["head"](distiller.teacher_encoder(data)[1]).argmax(-1)
    per_cluster = [torch.mode(assigned[torch.arange(256) % 4 == c]).values.item() for c in range(4)]
    assert len(set(per_cluster)) == 4, per_cluster
    # The teacher moved towards the student but is not a copy of it.
    teacher_w, student_w = ema.model["encoder"].net[0].weight, student["encoder"].net[0].weight
    assert not torch.equal(teacher_w, student_w)


@pytest.mark.parametrize("settings, message", [
    (dict(teacher_temperature=0.0), "teacher_temperature must be a finite number > 0"),
    (dict(student_temperature=float("inf")), "student_temperature must be a finite number > 0"),
    (dict(teacher_temperature=0.2, student_temperature=0.1), "teacher_temperature .* must be below"),
    (dict(center_momentum=1.0), r"center_momentum must be in \[0, 1\)"),
    (dict(center_momentum=-0.1), "center_momentum"),
])
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        build(**settings)


def test_head_and_teacher_are_checked():
    student, ema, _ = build()
    with pytest.raises(ValueError, match="num_prototypes must be an int >= 2"):
        DinoHead(8, num_prototypes=1)
    with pytest.raises(ValueError, match="teacher must be a ModuleDict"):
        SelfDistillation(student["head"], ema.model["encoder"])
    with pytest.raises(ValueError, match="head must be a DinoHead"):
        SelfDistillation(torch.nn.Linear(8, 4), ema.model)
