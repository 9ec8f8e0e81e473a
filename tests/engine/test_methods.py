"""Training methods: losses by hand, the optimisation step, and that each family learns."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_volsr.engine.methods.gan import GANMethod, image_gradient_l1
from napari_volsr.engine.methods.supervised import SupervisedMethod
from napari_volsr.engine.nets import rcan, resnet_gan, srunet
from napari_volsr.engine.nets.resnet_gan import PatchDiscriminator, ResNetGenerator


def _smooth_volumes(n, shape, sigma=2.0, seed=0):
    """Gaussian-filtered noise, each volume min-max normalised to 0..1."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, *shape, generator=generator)
    radius = int(3 * sigma)
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = kernel / kernel.sum()
    for axis in range(3):
        view = [1, 1, 1, 1, 1]
        view[2 + axis] = -1
        pad = [0] * 6
        pad[4 - 2 * axis : 6 - 2 * axis] = [radius, radius]  # F.pad lists the last axis first
        x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel.view(view))
    low = x.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
    high = x.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
    return (x - low) / (high - low)


@pytest.fixture(scope="module")
def sr_batch():
    """A z-factor 2 pair: the input slice is the mean of two target slices (slab grid)."""
    target = _smooth_volumes(2, (16, 16, 16))
    return {"input": target.unflatten(2, (8, 2)).mean(dim=3), "target": target}


def _eval_loss(method, batch, key=None):
    method.eval()
    with torch.no_grad():
        out = method(batch)
    return (out if key is None else out[key]).item()


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(before, module):
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


# -- supervised ---------------------------------------------------------------------------

LEARNERS = [
    # (family, loss, lr, steps): tiny presets, a few seconds of CPU each.
    (rcan.RCAN, rcan.PRESETS, "mae", 3e-3, 40),
    (srunet.SRUNet, srunet.PRESETS, "cubic_weighted", 3e-3, 100),
    (ResNetGenerator, resnet_gan.PRESETS, "mae", 1e-3, 100),
]


@pytest.mark.parametrize(
    ("cls", "presets", "loss", "lr", "steps"), LEARNERS, ids=["rcan", "srunet", "resnet_gan"]
)
def test_supervised_family_learns(sr_batch, cls, presets, loss, lr, steps):
    torch.manual_seed(0)
    method = SupervisedMethod(cls(3, z_factor=2, **presets["tiny"]), loss=loss)
    before = _eval_loss(method, sr_batch)
    method.configure_optimizers(lr)
    for _ in range(steps):
        logs = method.training_step(sr_batch)
    after = _eval_loss(method, sr_batch)
    assert isinstance(logs["loss"], float)
    assert after < before / 5, f"loss {before:.4g} -> {after:.4g}"


class _Fixed(nn.Module):
    """A 'network' that always predicts the same tensor."""

    def __init__(self, prediction, z_factor=1):
        super().__init__()
        self.prediction = prediction
        self.z_factor = z_factor
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.prediction + 0 * self.weight


def _row(*values, axis=4):
    shape = [1, 1, 1, 1, 1]
    shape[axis] = len(values)
    return torch.tensor(values, dtype=torch.float32).view(shape)


def test_cubic_weighted_by_hand_without_upsampling():
    # E = (input - target)^2 = [0, 1, 4, 0], max 4: weights [0.5, 0.625, 1, 0.5].
    # (prediction - target)^2 = [1, 0, 1, 1]: weighted mean (0.5 + 0 + 1 + 0.5) / 4.
    batch = {"input": _row(0, 0, 0, 0), "target": _row(0, 1, 2, 0)}
    method = SupervisedMethod(_Fixed(_row(1, 1, 1, 1)), loss="cubic_weighted")
    assert method(batch).item() == pytest.approx(0.5)
    assert SupervisedMethod(method.net, loss="mse")(batch).item() == pytest.approx(0.75)


def test_cubic_weighted_by_hand_with_upsampling():
    # Cubic interpolation of a constant is that constant: E = [0, 4, 0, 1], max 4,
    # weights [0.5, 1, 0.5, 0.625]; (0 - target)^2 = [1, 9, 1, 0]: (0.5 + 9 + 0.5) / 4.
    batch = {"input": _row(1, 1, axis=2), "target": _row(1, 3, 1, 0, axis=2)}
    method = SupervisedMethod(_Fixed(torch.zeros(1, 1, 4, 1, 1), z_factor=2), "cubic_weighted")
    assert method(batch).item() == pytest.approx(2.5)


def test_cubic_weighted_guards_perfect_interpolation():
    # E == 0 everywhere: weights fall back to 0.5, not NaN.
    batch = {"input": _row(1, 2, 3), "target": _row(1, 2, 3)}
    method = SupervisedMethod(_Fixed(_row(2, 3, 4)), loss="cubic_weighted")
    assert method(batch).item() == pytest.approx(0.5)


def test_supervised_interface(sr_batch):
    torch.manual_seed(0)
    net = rcan.RCAN(3, z_factor=2, **rcan.PRESETS["tiny"])
    method = SupervisedMethod(net)
    (optimizer,) = method.configure_optimizers()
    assert method.optimizers == [optimizer]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 1e-4
    before = _params(net)
    logs = method.training_step(sr_batch)
    assert set(logs) == {"loss"} and math.isfinite(logs["loss"])
    assert not _same(before, net)
    method.train()
    out = method.predict(sr_batch["input"])
    assert out.shape == sr_batch["target"].shape and not out.requires_grad
    assert method.training  # predict restores the mode it found


def test_supervised_rejects_unknown_loss():
    with pytest.raises(ValueError, match="loss"):
        SupervisedMethod(nn.Identity(), loss="huber")


# -- GAN ----------------------------------------------------------------------------------


def _gan(adversarial="vanilla", d_condition=False, **kwargs):
    torch.manual_seed(0)
    generator = ResNetGenerator(3, z_factor=2, **resnet_gan.PRESETS["tiny"])
    d_channels = 2 if d_condition else 1
    discriminator = PatchDiscriminator(3, in_channels=d_channels, channels=4, n_layers=2)
    return GANMethod(generator, discriminator, adversarial, d_condition=d_condition, **kwargs)


def test_gan_content_loss_falls_with_adversarial_on(sr_batch):
    method = _gan("vanilla")
    before = _eval_loss(method, sr_batch, "content")
    method.configure_optimizers(1e-3)
    for _ in range(100):
        logs = method.training_step(sr_batch)
    after = _eval_loss(method, sr_batch, "content")
    assert math.isfinite(logs["adversarial"]) and math.isfinite(logs["d_loss"])
    assert after < before / 5, f"content {before:.4g} -> {after:.4g}"


@pytest.mark.parametrize("adversarial", ["vanilla", "lsgan", "wgangp"])
@pytest.mark.parametrize("d_condition", [False, True])
def test_adversarial_term_reaches_generator(sr_batch, adversarial, d_condition):
    method = _gan(adversarial, d_condition)
    losses = method(sr_batch)
    assert {"g_loss", "d_loss", "content", "adversarial", "gp"} <= set(losses)
    params = list(method.generator.parameters())
    grads = torch.autograd.grad(losses["adversarial"], params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_generator_step_leaves_discriminator_unchanged(sr_batch):
    method = _gan("vanilla")
    d_before, g_before = _params(method.discriminator), _params(method.generator)
    logs = method.generator_step(sr_batch, warmup=False)
    assert logs["adversarial"] > 0
    assert _same(d_before, method.discriminator)
    assert all(p.grad is None for p in method.discriminator.parameters())
    assert not _same(g_before, method.generator)
    assert all(p.requires_grad for p in method.discriminator.parameters())  # restored


def test_training_step_updates_both_and_warmup_only_the_generator(sr_batch):
    method = _gan("lsgan")
    g_opt, d_opt = method.configure_optimizers()
    for opt in (g_opt, d_opt):
        assert opt.param_groups[0]["lr"] == 2e-4
        assert opt.param_groups[0]["betas"] == (0.5, 0.999)
    d_before = _params(method.discriminator)
    logs = method.training_step(sr_batch, warmup=True)
    assert _same(d_before, method.discriminator)
    assert math.isnan(logs["d_loss"]) and math.isfinite(logs["content"])
    logs = method.training_step(sr_batch)
    assert not _same(d_before, method.discriminator)
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    assert logs["g_loss"] == pytest.approx(100 * logs["content"] + logs["adversarial"])


def test_wgangp_penalty_is_finite_and_non_negative(sr_batch):
    method = _gan("wgangp", d_condition=True)
    losses = method(sr_batch)
    gp = losses["gp"].item()
    assert math.isfinite(gp) and gp >= 0
    d_loss = losses["d_loss"].item()
    assert d_loss == pytest.approx(losses["d_fake"].item() - losses["d_real"].item() + 10 * gp)
    assert math.isfinite(method.training_step(sr_batch)["gp"])


def test_image_gradient_penalty(sr_batch):
    target = sr_batch["target"]
    assert image_gradient_l1(target, target).item() == 0
    assert image_gradient_l1(target + 3.0, target).item() == pytest.approx(0, abs=1e-6)
    assert image_gradient_l1(torch.zeros_like(target), target).item() > 0
    method = _gan(gradient_weight=2.0)
    losses = method(sr_batch)
    expected = 100 * losses["content"] + losses["adversarial"] + 2 * losses["gradient"]
    assert losses["gradient"] > 0
    assert losses["g_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_gan_predict_uses_generator_in_eval_mode(sr_batch):
    method = _gan()
    out = method.predict(sr_batch["input"])
    method.generator.eval()
    with torch.no_grad():
        assert torch.equal(out, method.generator(sr_batch["input"]))
    assert not out.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"adversarial": "hinge"}, "adversarial"),
        ({"content_weight": -1.0}, "content_weight"),
        ({"gp_weight": math.nan}, "gp_weight"),
    ],
)
def test_gan_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        _gan(**kwargs)


def test_gan_checks_discriminator_channels_against_conditioning():
    generator = ResNetGenerator(3, **resnet_gan.PRESETS["tiny"])
    with pytest.raises(ValueError, match="in_channels"):
        GANMethod(generator, PatchDiscriminator(3, in_channels=1), d_condition=True)


# -- the contract -------------------------------------------------------------------------


def _methods():
    from napari_volsr.engine.methods.diffusion import DiffusionMethod
    from napari_volsr.engine.nets.diffusion_unet import PRESETS, DiffusionUNet

    torch.manual_seed(0)
    unet = DiffusionUNet(3, z_factor=2, **{**PRESETS["tiny"], "channel_mults": (1, 2)})
    return {
        "supervised": SupervisedMethod(rcan.RCAN(3, z_factor=2, **rcan.PRESETS["tiny"])),
        "gan": _gan(),
        "diffusion": DiffusionMethod(unet, val_steps=2),
    }


@pytest.mark.parametrize("kind", ["supervised", "gan", "diffusion"])
def test_every_method_keeps_the_contract(sr_batch, kind):
    from napari_volsr.engine.methods.base import TrainingMethod

    method = _methods()[kind]
    assert isinstance(method, TrainingMethod)
    optimizers = method.configure_optimizers(1e-3)
    assert method.optimizers == optimizers and method.scalers == []
    before = _params(method.network)
    logs = method.training_step(sr_batch, 0)
    assert method.main_loss in logs and math.isfinite(logs[method.main_loss])
    assert not _same(before, method.network)
    # Checkpoint state: optimizer moments survive a round trip into a fresh method.
    state = method.training_state()
    fresh = _methods()[kind]
    fresh.configure_optimizers(1e-3)
    fresh.load_state_dict(method.state_dict())
    fresh.load_training_state(state)
    for a, b in zip(fresh.optimizers, method.optimizers, strict=True):
        assert str(a.state_dict()) == str(b.state_dict())
    pred = method.validation_predict(sr_batch["input"][:1], seed=3)
    assert pred.shape == sr_batch["target"][:1].shape and not pred.requires_grad
    assert (method.ema_network is not None) == (kind == "diffusion")
    expected = method.ema_network if kind == "diffusion" else method.network
    assert method.restoring_network is expected


def test_supervised_and_gan_share_one_predict():
    from napari_volsr.engine.methods.base import TrainingMethod

    assert SupervisedMethod.predict is TrainingMethod.predict
    assert GANMethod.predict is TrainingMethod.predict
    assert GANMethod.main_loss == "g_loss" and SupervisedMethod.main_loss == "loss"


def test_gan_warms_up_for_its_first_steps(sr_batch):
    method = _gan("lsgan", warmup_steps=2)
    method.configure_optimizers()
    d_before = _params(method.discriminator)
    for step in (0, 1):
        logs = method.training_step(sr_batch, step)
        assert math.isnan(logs["d_loss"]) and _same(d_before, method.discriminator)
    logs = method.training_step(sr_batch, 2)
    assert math.isfinite(logs["d_loss"]) and not _same(d_before, method.discriminator)


def test_diffusion_validation_sample_is_seeded(sr_batch):
    method = _methods()["diffusion"]
    x = sr_batch["input"][:1]
    a, b = method.validation_predict(x, seed=5), method.validation_predict(x, seed=5)
    assert torch.equal(a, b)
    assert method.preview_options() == {"diffusion_steps": 2, "diffusion_samples": 1}
