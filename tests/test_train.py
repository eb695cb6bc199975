"""Pruning and CMR schedules against the formulas written out, and the schedule applied to a model."""

import pytest

torch = pytest.importorskip("torch")
from dkp_deploy.nn import DopedLinear, DopedLSTMLM  # noqa: E402
from dkp_deploy.train import DopingSchedule, cmr_rate, cubic_density, train  # noqa: E402


def test_cubic_density_matches_zhu_gupta() -> None:
    # s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, t0 = 100, n dt = 800, dt = 50, s_i = 0, s_f = 0.95
    kw = {"final_density": 0.05, "start_step": 100, "end_step": 900, "frequency": 50}
    for step, sparsity in [
        (0, 0.0),
        (99, 0.0),
        (100, 0.0),
        (149, 0.0),  # between pruning steps the target holds
        (150, 0.95 * (1 - (1 - 50 / 800) ** 3)),
        (500, 0.95 * (1 - 0.5**3)),
        (520, 0.95 * (1 - 0.5**3)),
        (899, 0.95 * (1 - (1 - 750 / 800) ** 3)),
        (900, 0.95),
        (10_000, 0.95),
    ]:
        assert cubic_density(step, **kw) == pytest.approx(1 - sparsity, abs=1e-12), step
    assert cubic_density(300, final_density=0.1, start_step=0, end_step=600, initial_density=0.5) == pytest.approx(
        0.1 + 0.4 * 0.5**3
    )


def test_cmr_schedules() -> None:
    kw = {"initial": 0.7, "start_step": 200, "end_step": 1000, "frequency": 1, "final_density": 0.05}
    for step in (0, 199, 200, 600, 1000, 5000):
        assert cmr_rate(step, schedule="constant", **kw) == 0.7
    lin = {0: 0.7, 199: 0.7, 200: 0.7, 400: 0.7 * 0.75, 600: 0.35, 999: 0.7 / 800, 1000: 0.0, 3000: 0.0}
    for step, want in lin.items():
        assert cmr_rate(step, schedule="linDec", **kw) == pytest.approx(want, abs=1e-12), step
    for step in (0, 199):
        assert cmr_rate(step, schedule="expDec", **kw) == 0.7
    for step in (200, 400, 600, 999):  # proportional to the density of W_s while pruning
        density = 0.05 + 0.95 * (1 - (step - 200) / 800) ** 3
        assert cmr_rate(step, schedule="expDec", **kw) == pytest.approx(0.7 * density, abs=1e-12), step
    assert cmr_rate(1000, schedule="expDec", **kw) == 0.0
    with pytest.raises(ValueError, match="schedule"):
        cmr_rate(0, schedule="cosine", **kw)


def test_schedule_step_sets_every_doped_layer() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(DopedLinear(8, 12), torch.nn.ReLU(), DopedLinear(12, 4, structure="lmf", rank=2))
    sched = DopingSchedule(final_density=0.1, start_step=10, end_step=50, frequency=10, cmr=0.6)
    state = sched.step(model, 0)
    assert state == {"density": 1.0, "cmr": 0.6}
    assert all(m.nnz == m.mask.numel() and m.cmr == 0.6 for m in (model[0], model[2]))
    for step in (20, 30, 55):
        state = sched.step(model, step)
        d = 0.1 + 0.9 * (1 - min(step - 10, 40) / 40) ** 3
        assert state["density"] == pytest.approx(d)
        assert model[0].nnz == round(d * 96) and model[2].nnz == round(d * 48)
        assert model[0].cmr == pytest.approx(0.6 * max(0.0, 1 - (step - 10) / 40))
    with pytest.raises(ValueError):
        DopingSchedule(final_density=0.1, start_step=5, end_step=5)


def test_train_loop_prunes_and_learns() -> None:
    torch.manual_seed(0)
    lm = DopedLSTMLM(12, 8, 8, 1, cmr=0.5)
    seq = torch.arange(60).remainder(12).reshape(-1, 1).repeat(1, 4)  # a cyclic sequence: easy to learn
    batches = [seq[i : i + 9] for i in range(0, 48, 4)] * 5

    def loss_fn(model, batch):
        logits, _ = model(batch[:-1])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 12), batch[1:].reshape(-1))

    sched = DopingSchedule(final_density=0.2, start_step=5, end_step=40, frequency=5, cmr=0.5)
    opt = torch.optim.Adam(lm.parameters(), lr=0.03)
    losses = train(lm, batches, loss_fn, opt, schedule=sched, max_grad_norm=5.0, progress=False)
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    cell = lm.lstm.cells[0]
    assert cell.nnz == round(0.2 * cell.mask.numel()) and cell.cmr == 0.0
    assert torch.all(cell.W_s[~cell.mask] == 0)


def test_train_lr_at_sets_lr_each_step_and_broadcast_is_noop_without_distributed() -> None:
    from dkp_deploy.train import broadcast_masks, is_main_process

    torch.manual_seed(0)
    layer = DopedLinear(8, 8, structure="none")
    seen: list[float] = []
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    orig = opt.step

    def step(*a, **k):  # record the lr the optimiser steps with
        seen.append(opt.param_groups[0]["lr"])
        return orig(*a, **k)

    opt.step = step  # type: ignore[method-assign]
    batches = [torch.randn(4, 8) for _ in range(3)]
    train(layer, batches, lambda m, x: m(x).pow(2).mean(), opt, lr_at=lambda t: 0.1 * (t + 1), progress=False)
    assert seen == pytest.approx([0.1, 0.2, 0.3])
    mask = layer.mask.clone()
    broadcast_masks(layer)
    assert torch.equal(layer.mask, mask) and is_main_process()
