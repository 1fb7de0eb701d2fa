"""When the pick settled: each criterion's pick had training been capped at epoch e, computed
from the values models record at the epochs that improved their validation estimate."""

import math

import numpy as np
import pytest

from vaebic.selection import trajectory as t


def summary(epochs, train_elbo, val_iwae, epochs_run, stop="plateau"):
    return {
        "best_epoch": epochs[-1],
        "epochs_run": epochs_run,
        "stop_reason": stop,
        "improvements": {"epoch": epochs, "train_elbo": train_elbo, "val_iwae": val_iwae},
    }


def test_training_summary_keeps_the_improving_epochs_and_how_training_ended():
    history = [
        {"loss": 9.0, "val_iwae": -9.0, "train_elbo": -9.5},
        {"loss": 8.0, "val_iwae": -8.0, "train_elbo": -8.5},
        {"loss": 7.5, "val_iwae": -8.2},
        {"loss": 7.0, "val_iwae": -8.3},
    ]
    s = t.training_summary(history, {"best_epoch": 2, "epochs_run": 4, "stop_reason": "plateau"})
    assert s == summary([1, 2], [-9.5, -8.5], [-9.0, -8.0], 4)
    # no stopping record (patience 0 before it existed): every epoch ran to the cap, the last kept
    fixed = [{"loss": 1.0, "train_elbo": -1.0}, {"loss": 0.5, "train_elbo": -0.5}]
    assert t.training_summary(fixed, None) == summary([1, 2], [-1.0, -0.5], [None, None], 2, "cap")


def test_values_by_cap_hold_the_best_epoch_so_far_and_end_at_the_final_estimate():
    imp = {"epoch": [1, 3, 4], "train_elbo": [-10.0, -8.0, -7.5], "val_iwae": [-9.0, -8.0, -7.9]}
    got = t.values_by_cap(imp, final=-7.0, key="train_elbo", last_epoch=6)
    # final - (tracked at the last improvement - tracked at b(e)); b = 1, 1, 3, 4, 4, 4
    np.testing.assert_allclose(got, [-9.5, -9.5, -7.5, -7.0, -7.0, -7.0])
    assert t.values_by_cap({**imp, "val_iwae": [None] * 3}, -7.0, "val_iwae", 6) is None


def test_picks_by_epoch_follow_bic_aic_and_the_held_out_estimate():
    n = 1000
    # d=2 has settled by epoch 2; d=4 keeps improving until epoch 8. BIC charges d=4
    # (400 - 200) ln 1000 = 1381.6 more, 0.69 nats per example; AIC 400, 0.2 nats per example.
    models = [
        {
            "latent_dim": 2,
            "seed": 0,
            "n_params": 200,
            "train": -100.0,
            "heldout": -101.0,
            "training": summary([1, 2], [-101.0, -100.5], [-102.0, -101.5], 22),
        },
        {
            "latent_dim": 4,
            "seed": 0,
            "n_params": 400,
            "train": -98.0,
            "heldout": -100.8,
            "training": summary([1, 2, 4, 6, 8], [-103.0, -101.0, -100.5, -99.5, -99.0], [-103.0, -101.8, -101.25, -101.1, -101.0], 28),
        },
    ]
    picks = t.picks_by_epoch(models, n)
    assert all(len(p) == 28 for p in picks.values())
    # d=2 from epoch 2: BIC = 200 ln n + 200000 = 201381.6, AIC = 200400.
    # d=4 at cap 4 and 5 (b = 4): -98 - (-99 + 100.5) = -99.5 per example: BIC 201763 (2 wins), AIC 199800 (4 wins);
    # at cap 6 and 7 (b = 6): -98.5: BIC 199763 (4 wins). At the end: the reported numbers.
    assert picks["bic"] == [2] * 5 + [4] * 23 and t.stable_since(picks["bic"]) == 6
    assert picks["aic"] == [2] * 3 + [4] * 25 and t.stable_since(picks["aic"]) == 4
    # held-out: d=2 is -101.0 from epoch 2; d=4 is -100.8 - (-101.0 - val(b)): -101.05 at b = 4, -100.9 at b = 6
    assert picks["heldout"] == [2] * 5 + [4] * 23 and t.stable_since(picks["heldout"]) == 6


def test_stable_since_is_the_first_epoch_of_the_final_run_of_equal_picks():
    assert t.stable_since([2, 2, 4, 4, 3, 4, 4]) == 6
    assert t.stable_since([4, 4, 4]) == 1
    assert t.stable_since([]) is None and t.stable_since([None, None]) is None


def test_settled_flags_models_at_the_cap_and_late_changes():
    models = [
        {"training": summary([1], [-1.0], [-1.0], 100, "plateau")},
        {"training": summary([1], [-1.0], [-1.0], 60, "cap")},
    ]
    picks = {"bic": [2] * 80 + [4] * 20, "aic": [4] * 100, "heldout": [2] * 79 + [4] * 21}
    s = t.settled(picks, models)
    assert s["epochs_run_max"] == 100 and s["models_at_cap"] == 1
    assert s["pick_stable_since_epoch"] == {"bic": 81, "aic": 1, "heldout": 80}
    # the last 20% of 100 epochs are 81..100: a change at 81 is late, one at 80 is not
    assert s["pick_changed_late"] == {"bic": True, "aic": False, "heldout": False}


def test_no_validation_split_leaves_the_held_out_trajectory_out():
    models = [
        {
            "latent_dim": d,
            "seed": 0,
            "n_params": 10 * d,
            "train": -10.0 + d,
            "heldout": -10.0,
            "training": summary([1, 2], [-12.0, -11.0], [None, None], 2, "cap"),
        }
        for d in (1, 2)
    ]
    picks = t.picks_by_epoch(models, 100)
    assert picks["heldout"] == [None, None] and picks["bic"] == [2, 2]
    s = t.settled(picks, models)
    assert s["pick_stable_since_epoch"]["heldout"] is None and s["pick_changed_late"]["heldout"] is None
    assert s["models_at_cap"] == 2 and math.isclose(s["epochs_run_max"], 2)


@pytest.mark.parametrize("seeds", [1, 2])
def test_seeds_are_averaged_before_picking(seeds):
    def model(d, s, final):
        return {"latent_dim": d, "seed": s, "n_params": 0, "train": final, "heldout": final, "training": summary([1], [final], [final], 1)}

    models = [model(1, 0, -5.0), model(2, 0, -4.0)]
    if seeds == 2:
        models += [model(1, 1, -5.0), model(2, 1, -7.0)]  # d=2 means -5.5: d=1 wins
    assert t.picks_by_epoch(models, 10)["bic"] == [2 if seeds == 1 else 1]
