"""Objectives: agreement with naive references, the expected values on collapsed / Gaussian embeddings,
learning on a toy problem, float32 computation under autocast and with bf16 inputs, V > 2, validation."""
import math

import pytest
import torch
import torch.nn.functional as F

from utils.losses import (
    LOSSES, dino_cross_entropy, dino_teacher_probabilities, epps_pulley_grid, get_loss, lejepa, lejepa_terms, nt_xent,
    sigreg, sigreg_null_level, vicreg, vicreg_terms,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small tensors: see tests/conftest.py


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noisy_views(views: int = 2, batch: int = 64, dim: int = 32, noise: float = 0.3, seed: int = 0) -> torch.Tensor:
    """(V, B, D): V noisy copies of B random embeddings."""
    g = gen(seed)
    base = torch.randn(batch, dim, generator=g)
    return torch.stack([base + noise * torch.randn(batch, dim, generator=g) for _ in range(views)])


# ----------------------------------------------------------------------------------------------------------
# NT-Xent
# ----------------------------------------------------------------------------------------------------------

def naive_nt_xent(z: torch.Tensor, temperature: float, decoupled: bool = False) -> float:
    """Loop-by-loop NT-Xent in float64 straight from the definition: for each anchor and each of its
    positives, -log exp(s(a, p) / t) / sum_{k != a} exp(s(a, k) / t); averaged over positives, then anchors.
    decoupled (DCL): the denominator sums over the negatives only (k not a view of the anchor's image)."""
    views, batch, _ = z.shape
    flat = z.double().reshape(views * batch, -1)
    total = 0.0
    for a in range(views * batch):
        sims = [F.cosine_similarity(flat[a], flat[k], dim=0).item() / temperature for k in range(views * batch)]
        positives = [k for k in range(views * batch) if k != a and k % batch == a % batch]
        candidates = [k for k in range(views * batch) if k != a and not (decoupled and k in positives)]
        denominator = sum(math.exp(sims[k]) for k in candidates)
        total += sum(-math.log(math.exp(sims[p]) / denominator) for p in positives) / len(positives)
    return total / (views * batch)


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("decoupled", [False, True])
def test_nt_xent_matches_a_naive_reference(views, decoupled):
    z = noisy_views(views=views, batch=12, dim=8, noise=1.0, seed=1)
    assert nt_xent(z, temperature=0.2, decoupled=decoupled).item() == pytest.approx(
        naive_nt_xent(z, 0.2, decoupled), rel=1e-5)


def test_dcl_is_nt_xent_minus_the_positive_term_on_a_hand_computed_example():
    # Two images, two views, unit vectors in the plane at known angles, temperature 0.5.
    # Rows: a0 (image 0, view 0), a1 (image 1, view 0), b0 (image 0, view 1), b1 (image 1, view 1).
    angle = {"a0": 0.0, "a1": math.pi / 2, "b0": math.pi / 3, "b1": math.pi}
    unit = {k: (math.cos(v), math.sin(v)) for k, v in angle.items()}
    z = torch.tensor([[unit["a0"], unit["a1"]], [unit["b0"], unit["b1"]]])      # (V=2, B=2, D=2)
    t = 0.5
    cos = lambda p, q: math.cos(angle[p] - angle[q])                               # noqa: E731
    positive = {"a0": "b0", "b0": "a0", "a1": "b1", "b1": "a1"}
    nt, dcl = 0.0, 0.0
    for anchor in angle:
        others = [k for k in angle if k != anchor]
        negatives = [k for k in others if k != positive[anchor]]
        pos = math.exp(cos(anchor, positive[anchor]) / t)
        neg = sum(math.exp(cos(anchor, k) / t) for k in negatives)
        nt += -math.log(pos / (pos + neg)) / 4
        dcl += -math.log(pos / neg) / 4
        # DCL = NT-Xent minus the positive's share of the denominator, anchor by anchor.
        assert -math.log(pos / neg) == pytest.approx(-math.log(pos / (pos + neg)) - math.log(1 + pos / neg))
    assert nt_xent(z, temperature=t).item() == pytest.approx(nt, rel=1e-6)
    assert nt_xent(z, temperature=t, decoupled=True).item() == pytest.approx(dcl, rel=1e-6)
    # The hand-computed numbers themselves (a0: positive at 60 degrees, negatives at 90 and 180 degrees):
    # a0's DCL term is -cos(60)/t + log(exp(cos(90)/t) + exp(cos(180)/t)) = -1 + log(1 + e^-2).
    assert -math.log(math.exp(cos("a0", "b0") / t) / (1 + math.exp(-2))) == pytest.approx(-1 + math.log(1 + math.exp(-2)))


def test_dcl_is_below_nt_xent_and_needs_other_images():
    z = noisy_views(views=3, batch=16, dim=8, seed=30)
    assert nt_xent(z, decoupled=True) < nt_xent(z)           # the positives' share of the denominator is > 0
    with pytest.raises(ValueError, match="decoupled=True needs negatives"):
        nt_xent(torch.randn(3, 1, 4), decoupled=True)        # one image: no negatives at all
    with pytest.raises(ValueError, match="decoupled must be True or False"):
        nt_xent(z, decoupled=1)


def test_nt_xent_is_invariant_to_rescaling():
    z = noisy_views(seed=2)
    torch.testing.assert_close(nt_xent(z * 7.5), nt_xent(z), rtol=1e-6, atol=1e-6)


def test_nt_xent_prefers_aligned_views():
    aligned = noisy_views(noise=0.05, seed=3)
    unrelated = torch.randn(2, 64, 32, generator=gen(3))
    assert nt_xent(aligned) < 0.2 * nt_xent(unrelated)
    # Random directions: about log(2B - 1) + 1 / (2 D temperature^2) (spread of the negative logits).
    expected = math.log(127) + 1 / (2 * 32 * 0.5 ** 2)
    assert nt_xent(unrelated, temperature=0.5).item() == pytest.approx(expected, rel=0.03)


# ----------------------------------------------------------------------------------------------------------
# VICReg
# ----------------------------------------------------------------------------------------------------------

def reference_vicreg_two_views(x, y, sim=25.0, var=25.0, cov=1.0):
    """The official two-view VICReg, written independently (float64)."""
    x, y = x.double(), y.double()
    n, d = x.shape
    repr_loss = F.mse_loss(x, y)
    x, y = x - x.mean(0), y - y.mean(0)
    std_x, std_y = torch.sqrt(x.var(0) + 1e-4), torch.sqrt(y.var(0) + 1e-4)
    std_loss = F.relu(1 - std_x).mean() / 2 + F.relu(1 - std_y).mean() / 2
    cov_x, cov_y = x.T @ x / (n - 1), y.T @ y / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool)
    cov_loss = cov_x[off].pow(2).sum() / d + cov_y[off].pow(2).sum() / d
    return (sim * repr_loss + var * std_loss + cov * cov_loss).item()


def test_vicreg_matches_the_reference_for_two_views():
    z = noisy_views(batch=32, dim=16, noise=0.5, seed=4) * 0.5  # std < 1: the variance term is active
    assert vicreg(z).item() == pytest.approx(reference_vicreg_two_views(z[0], z[1]), rel=1e-5)


def test_vicreg_averages_the_two_view_loss_over_pairs_for_more_views():
    z = noisy_views(views=4, batch=32, dim=16, noise=0.5, seed=5) * 0.5
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    expected = sum(reference_vicreg_two_views(z[i], z[j]) for i, j in pairs) / len(pairs)
    assert vicreg(z).item() == pytest.approx(expected, rel=1e-5)


def test_vicreg_terms_react_to_collapse_and_correlation():
    collapsed = torch.ones(2, 64, 16) * torch.randn(1, 1, 16, generator=gen(6))
    terms = vicreg_terms(collapsed)
    assert terms["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), abs=1e-5)  # std = sqrt(0 + eps)
    assert terms["invariance"].item() == 0.0

    # Standardised per dimension (unbiased std exactly 1) and whitened: variance and covariance vanish.
    x = torch.randn(256, 16, generator=gen(7), dtype=torch.float64)
    x = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(x.T @ x / 255)
    white = (x @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T).float()
    terms = vicreg_terms(torch.stack([white, white]))
    assert terms["variance"].item() == 0.0
    assert terms["covariance"].item() < 1e-8

    # Duplicated dimensions are perfectly correlated: covariance > 0.
    duplicated = torch.cat([white[:, :8], white[:, :8]], dim=1)
    assert vicreg_terms(torch.stack([duplicated, duplicated]))["covariance"].item() > 0.1


def test_vicreg_is_the_weighted_sum_of_its_terms():
    z = noisy_views(views=3, seed=8)
    t = vicreg_terms(z)
    expected = 2 * t["invariance"] + 3 * t["variance"] + 0.5 * t["covariance"]
    torch.testing.assert_close(vicreg(z, sim_weight=2, var_weight=3, cov_weight=0.5), expected)


# ----------------------------------------------------------------------------------------------------------
# SIGReg
# ----------------------------------------------------------------------------------------------------------

def paper_sigreg(x: torch.Tensor, directions: torch.Tensor, num_points: int, t_max: float) -> float:
    """The LeJEPA paper's Algorithm 1 literally: complex ECF on the full grid linspace(-t_max, t_max),
    torch.trapz, times N, mean over slices (float64)."""
    x, directions = x.double(), directions.double()
    t = torch.linspace(-t_max, t_max, num_points, dtype=torch.float64)
    phi = torch.exp(-0.5 * t ** 2)
    ecf = torch.exp(1j * (x @ directions).unsqueeze(-1) * t).mean(0)           # (S, T)
    err = (ecf - phi).abs().square() * phi
    return (torch.trapz(err, t, dim=1) * x.shape[0]).mean().item()


@pytest.mark.parametrize("num_points, t_max", [(17, 5.0), (16, 3.0), (3, 2.0)])
def test_sigreg_equals_the_paper_algorithm_on_the_full_grid(num_points, t_max):
    x = torch.randn(200, 24, generator=gen(9)) * 1.3 + 0.2
    ours = sigreg(x, num_slices=32, num_points=num_points, t_max=t_max, generator=gen(10))
    directions = torch.randn(24, 32, generator=gen(10))                        # the same draw as sigreg's
    directions = directions / directions.norm(dim=0, keepdim=True)
    assert ours.item() == pytest.approx(paper_sigreg(x, directions, num_points, t_max), rel=1e-4)


def test_sigreg_null_level_is_the_closed_form():
    # Trapezoid on 17 points of [-5, 5] vs the integral over the real line: sqrt(2 pi) - sqrt(2 pi / 3).
    assert sigreg_null_level() == pytest.approx(math.sqrt(2 * math.pi) - math.sqrt(2 * math.pi / 3), abs=1e-5)
    assert sigreg_null_level() == pytest.approx(1.059423, abs=1e-6)
    t, w = epps_pulley_grid(17, 5.0)
    assert len(t) == 9 and t[0] == 0 and t[-1] == 5.0
    assert w.sum().item() == pytest.approx(10.0)  # the weights integrate 1 over [-5, 5]


@pytest.mark.parametrize("n", [64, 512])
def test_sigreg_on_gaussian_samples_is_near_its_null_level_for_any_batch_size(n):
    g = gen(11)
    values = torch.stack([sigreg(torch.randn(n, 64, generator=g), generator=g) for _ in range(30)])
    # One draw has a standard deviation of about 0.1 (256 slices), so the mean of 30 is within ~0.02.
    assert values.mean().item() == pytest.approx(sigreg_null_level(), abs=0.08)


def test_sigreg_is_large_on_collapsed_and_non_gaussian_embeddings():
    g, null = gen(12), sigreg_null_level()
    n, d = 512, 64
    point = torch.randn(1, d, generator=g)
    cases = {
        "all zero": torch.zeros(n, d),
        "all rows equal": point.expand(n, d),
        "wrong scale": 5.0 * torch.randn(n, d, generator=g),
        # Cauchy coordinates stay Cauchy under projection (heavy tails that the CLT does not wash out).
        "heavy tails": torch.distributions.Cauchy(0.0, 1.0).sample((n, d)),
        # Two tight clusters along one direction: bimodal in every projection that sees that direction.
        "two clusters": torch.sign(torch.randn(n, 1, generator=g)) * 3.0 * point / point.norm()
        + 0.05 * torch.randn(n, d, generator=g),
    }
    for name, x in cases.items():
        assert sigreg(x, generator=g).item() > 50 * null, name


def test_sigreg_resamples_directions_each_call_and_is_reproducible():
    x = torch.rand(128, 16, generator=gen(13))
    g = gen(14)
    first, second = sigreg(x, generator=g), sigreg(x, generator=g)
    assert first.item() != second.item()
    assert sigreg(x, generator=gen(14)).item() == first.item()


def test_sigreg_of_stacked_views_is_the_mean_over_views_with_shared_directions():
    z = noisy_views(views=3, batch=64, dim=16, seed=15)
    batched = sigreg(z, generator=gen(16))
    separate = torch.stack([sigreg(z[v], generator=gen(16)) for v in range(3)]).mean()
    torch.testing.assert_close(batched, separate)


# ----------------------------------------------------------------------------------------------------------
# LeJEPA
# ----------------------------------------------------------------------------------------------------------

def test_lejepa_combines_invariance_to_global_centres_and_sigreg():
    z = noisy_views(views=4, batch=64, dim=16, seed=17)  # 2 global + 2 local views
    centres = z[:2].mean(0)
    invariance = ((z - centres) ** 2).mean()
    regulariser = torch.stack([sigreg(z[v], generator=gen(18)) for v in range(4)]).mean()
    expected = 0.9 * invariance + 0.1 * regulariser
    torch.testing.assert_close(lejepa(z, lambd=0.1, num_global=2, generator=gen(18)), expected)
    terms = lejepa_terms(z, num_global=2, generator=gen(18))
    torch.testing.assert_close(terms["invariance"], invariance)
    torch.testing.assert_close(terms["sigreg"], regulariser)


def test_lejepa_invariance_is_zero_for_identical_views():
    z = torch.randn(1, 64, 16, generator=gen(19)).expand(3, -1, -1)
    assert lejepa_terms(z, num_global=2)["invariance"].item() == 0.0


# ----------------------------------------------------------------------------------------------------------
# DINO: centred, sharpened teacher targets and the cross-entropy to the student's other views
# ----------------------------------------------------------------------------------------------------------

def test_dino_teacher_probabilities_are_centred_and_sharpened():
    logits = torch.tensor([[[1.0, 0.0, -1.0]]])                                  # (G=1, B=1, K=3)
    center = torch.tensor([0.5, 0.0, 0.0])
    probs = dino_teacher_probabilities(logits, center, temperature=0.25)
    expected = torch.softmax(torch.tensor([0.5, 0.0, -1.0]) / 0.25, dim=0)      # centred, then / temperature
    torch.testing.assert_close(probs[0, 0], expected)
    # A lower temperature sharpens: the top prototype takes more of the mass.
    assert dino_teacher_probabilities(logits, center, temperature=0.1)[0, 0, 0] > probs[0, 0, 0]
    # Centring by the logits themselves leaves a uniform target (what centring alone would collapse to).
    torch.testing.assert_close(dino_teacher_probabilities(logits, logits[0, 0], temperature=0.1)[0, 0],
                               torch.full((3,), 1 / 3))


def test_dino_cross_entropy_matches_a_loop_over_view_pairs():
    g = gen(31)
    student, teacher = torch.randn(4, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)   # V=4, G=2
    targets = dino_teacher_probabilities(teacher, torch.zeros(5), temperature=0.04)
    terms = []
    for t_view in range(2):
        for s_view in range(4):
            if s_view == t_view:
                continue                                   # a view never predicts its own target
            for i in range(3):
                log_p = torch.log_softmax(student[s_view, i].double() / 0.1, dim=0)
                terms.append(-(targets[t_view, i].double() * log_p).sum().item())
    assert dino_cross_entropy(student, targets, temperature=0.1).item() == pytest.approx(
        sum(terms) / len(terms), rel=1e-5)
    assert len(terms) == 2 * 3 * 3                          # 2 teacher views x 3 other views x 3 images


def test_dino_cross_entropy_is_the_target_entropy_when_the_student_agrees():
    probs = torch.softmax(torch.randn(2, 4, 6, generator=gen(32)), dim=-1)
    student = torch.log(probs) * 0.1                        # softmax(student / 0.1) == probs
    # Both views agree with both targets: each cross-entropy equals the entropy of the target.
    same = torch.cat([probs[:1], probs[:1]])
    entropy = -(same[0] * same[0].log()).sum(-1).mean()
    assert dino_cross_entropy(torch.cat([student[:1], student[:1]]), same, temperature=0.1).item() == \
        pytest.approx(entropy.item(), rel=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: dino_teacher_probabilities(torch.randn(2, 3), torch.zeros(3)), r"\(G, B, K\)"),
    (lambda: dino_teacher_probabilities(torch.randn(1, 2, 3), torch.zeros(4)), "center must be"),
    (lambda: dino_teacher_probabilities(torch.randn(1, 2, 3), torch.zeros(3), temperature=0.0), "temperature"),
    (lambda: dino_cross_entropy(torch.randn(2, 3, 4), torch.rand(2, 3, 5)), "teacher_probs must be"),
    (lambda: dino_cross_entropy(torch.randn(1, 3, 4), torch.rand(1, 3, 4)), "V >= 2"),
    (lambda: dino_cross_entropy(torch.randn(2, 3, 4), torch.rand(3, 3, 4)), "G <= V"),
    (lambda: dino_cross_entropy(torch.randn(2, 3, 4), torch.rand(1, 3, 4), temperature=-1.0), "temperature"),
])
def test_dino_pieces_validate_their_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------------------------------------
# All objectives: learning, precision, V > 2
# ----------------------------------------------------------------------------------------------------------

OBJECTIVES = {
    "ntxent": lambda z, g: nt_xent(z, temperature=0.2),
    "dcl": lambda z, g: nt_xent(z, temperature=0.2, decoupled=True),
    "vicreg": lambda z, g: vicreg(z),
    "lejepa": lambda z, g: lejepa(z, lambd=0.05, num_slices=64, generator=g),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_each_objective_decreases_when_training_a_small_encoder(name):
    # Data with low-dimensional structure (8 latent factors in 32 dims) seen through two noisy views.
    objective = OBJECTIVES[name]
    torch.manual_seed(0)
    g = gen(20)
    data = torch.randn(256, 8, generator=g) @ torch.randn(8, 32, generator=g)
    encoder = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    optimizer = torch.optim.Adam(encoder.parameters(), lr=3e-3)

    def views(seed):
        noise = torch.Generator().manual_seed(seed)
        return torch.stack([data + 0.5 * torch.randn(data.shape, generator=noise) for _ in range(2)])

    def evaluate():
        with torch.no_grad():
            return objective(encoder(views(999)), gen(999)).item()  # fixed views and slices

    before = evaluate()
    for step in range(60):
        loss = objective(encoder(views(step)), gen(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bfloat16_inputs_agree_with_float32(name):
    objective = OBJECTIVES[name]
    z = noisy_views(views=3, batch=64, dim=32, seed=21)
    full = objective(z, gen(22))
    half = objective(z.bfloat16(), gen(22))
    assert half.dtype == torch.float32
    # bf16 rounds z itself by up to 0.4%; the losses, computed in float32, move by about as much.
    assert half.item() == pytest.approx(full.item(), rel=2e-2)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_objectives_compute_in_float32_inside_autocast(name):
    # The training loop calls the objective under autocast: a bf16 matmul inside would change the value.
    objective = OBJECTIVES[name]
    z = noisy_views(views=2, batch=64, dim=32, seed=23)
    outside = objective(z, gen(24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = objective(z, gen(24))
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, outside, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_reach_bfloat16_embeddings_for_more_than_two_views(name):
    z = noisy_views(views=5, batch=32, dim=16, seed=25).bfloat16().requires_grad_()
    loss = OBJECTIVES[name](z, gen(26))
    assert torch.isfinite(loss)
    loss.backward()
    assert z.grad.dtype == torch.bfloat16 and torch.isfinite(z.grad.float()).all() and z.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------
# Registry and validation
# ----------------------------------------------------------------------------------------------------------

def test_registry_names_the_three_objectives():
    assert set(LOSSES) == {"ntxent", "vicreg", "lejepa"}
    assert get_loss("ntxent") is nt_xent and get_loss("vicreg") is vicreg and get_loss("lejepa") is lejepa


def test_unknown_loss_names_list_the_known_ones():
    with pytest.raises(ValueError, match="lejepa, ntxent, vicreg"):
        get_loss("simclr")
    with pytest.raises(KeyError, match="lejepa, ntxent, vicreg"):
        LOSSES["simclr"]


@pytest.mark.parametrize("call, message", [
    (lambda: nt_xent(torch.randn(2, 8, 4), temperature=0.0), "temperature"),
    (lambda: nt_xent(torch.randn(8, 4)), r"\(V, B, D\)"),
    (lambda: nt_xent(torch.randn(1, 8, 4)), "at least 2 views"),
    (lambda: vicreg(torch.randn(2, 1, 4)), "batch of at least 2"),
    (lambda: vicreg(torch.randn(2, 8, 4), sim_weight=-1.0), "sim_weight"),
    (lambda: vicreg_terms(torch.randn(2, 8, 4), eps=0.0), "eps"),
    (lambda: sigreg(torch.randn(8), generator=None), "float tensor"),
    (lambda: sigreg(torch.randn(8, 4), num_slices=0), "num_slices"),
    (lambda: sigreg(torch.randn(8, 4), num_points=1), "num_points"),
    (lambda: sigreg(torch.randn(8, 4), t_max=-1.0), "t_max"),
    (lambda: lejepa(torch.randn(2, 8, 4), lambd=1.5), "lambd"),
    (lambda: lejepa(torch.randn(2, 8, 4), num_global=3), "num_global"),
    (lambda: lejepa(torch.randn(2, 8, 4), num_global=0), "num_global"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_hyper_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        nt_xent(torch.randn(2, 8, 4), 0.5)
