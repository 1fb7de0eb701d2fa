"""The likelihoods p(x|z) a VAE can use, one record each: every other module reads these records.

A record says how to score data (`log_density`, a true log-density in nats so that numbers
compare across latent dimensions), what to draw in pictures (`mean`, E[x|z]), whether the
prepare stage binarises the inputs for it, what the report says about it, and which model.*
parameters it reads beyond the network's. params.py (the choices of model.likelihood), vae.py,
data/preparation.py and report/markdown.py all look likelihoods up here, so adding one is one `register_likelihood` call.

This module imports no torch at import time (params.py reads it, and `--help` and validation
must answer at once); the functions import it when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vaebic.errors import VaebicError


@dataclass(frozen=True)
class Likelihood:
    """One p(x|z).

    log_density(model, decoded, x): log p(x|z) in nats, summed over pixels, from the decoder's
        output (float32); x broadcasts over leading sample dimensions of decoded.
    mean(decoded): E[x|z], the pixel means that pictures show.
    binarised: the prepare stage binarises the inputs statically (grey levels p -> 1 with
        probability p); otherwise it keeps grey levels in [0, 1].
    text: the report's sentence on what p(x|z) is.
    params: the model.* parameters it reads beyond the network's (their Fields are in params.SCHEMA).
    add_parameters(model): registers its own parameters or buffers on a new VAE (a Gaussian's sigma).
    describe(meta, params): the report's sentence refined by the prepared data's meta record and the
        values of `params`; by default `text`.
    log_density_for(model, x): log_density against one x as a function of the decoder's output
        (float32, or bf16 under autocast), for scoring many samples of z against the same x; by
        default log_density through VAE.log_likelihood.
    """

    name: str
    log_density: Callable
    mean: Callable
    binarised: bool
    text: str
    params: tuple[str, ...] = ()
    add_parameters: Callable | None = None
    describe: Callable | None = None
    log_density_for: Callable | None = None

    def report_text(self, meta: dict, params: dict) -> str:
        return self.describe(self, meta, params) if self.describe else self.text


LIKELIHOODS: dict[str, Likelihood] = {}


def register_likelihood(likelihood: Likelihood) -> Likelihood:
    """Add a likelihood (or replace one of the same name); model.likelihood accepts its name at once."""
    LIKELIHOODS[likelihood.name] = likelihood
    return likelihood


def get_likelihood(name: str) -> Likelihood:
    """The record of a likelihood; a VaebicError names the known ones when there is none."""
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise VaebicError(f"unknown likelihood {name!r}; known: {', '.join(LIKELIHOODS)}") from None


def _sigmoid_mean(decoded):
    import torch

    return torch.sigmoid(decoded)


def _bernoulli(model, decoded, x):
    from vaebic.model import objectives

    return objectives.bernoulli_log_likelihood(decoded, x)


def _bernoulli_for(model, x):
    """Binary x (what the prepare stage writes for this likelihood): the sign-flip form, one pass
    fewer per pixel; any other x: the Bernoulli form, as log_density."""
    from vaebic.model import objectives

    signs = objectives.binary_signs(x)
    if signs is None:
        return lambda decoded: model.log_likelihood(decoded, x)
    return lambda decoded: objectives.binary_log_likelihood(decoded, signs)


def _bernoulli_text(self: Likelihood, meta: dict, params: dict) -> str:
    if meta.get("binarization", "").startswith("none"):  # binary inputs, used as they are
        return "Bernoulli (binary cross-entropy summed over pixels) on binary pixels, used as they are (the inputs are 0/1)"
    return self.text


def _gaussian(model, decoded, x):
    from vaebic.model import objectives

    log_sigma = model.log_sigma
    if model.calibrated and model.training:  # sigma's maximum-likelihood value for this batch
        log_sigma = objectives.batch_log_sigma(decoded, x)
    return objectives.gaussian_log_likelihood(decoded, x, log_sigma)


def _gaussian_sigma(model) -> None:
    """One scalar log sigma: a parameter (learned), a buffer set by calibrate_sigma when training
    ends and per batch while training (optimal), or a buffer holding a fixed number."""
    import math

    import torch
    from torch import nn

    sigma = model.config.gaussian_sigma
    if sigma == "learned":
        model.log_sigma = nn.Parameter(torch.zeros(()))
    elif sigma == "optimal":
        model.register_buffer("log_sigma", torch.zeros(()))
    else:
        model.register_buffer("log_sigma", torch.tensor(math.log(float(sigma))))


SIGMA_TEXT = {
    "optimal": (
        "; sigma calibrated (Rybkin, Daniilidis & Levine 2021): sigma^2 = the mean squared error of the reconstructions, "
        "per batch in training, then of the whole training split, one scalar counted in k; each model's final sigma is "
        "in the table's `sigma` column"
    ),
    "learned": (
        "; sigma learned (one scalar, counted in k) by gradient: it converges slowly, so short runs end far from their fit; "
        "each model's final sigma is in the table's `sigma` column"
    ),
}


def _gaussian_text(self: Likelihood, meta: dict, params: dict) -> str:
    sigma = params.get("gaussian_sigma")
    return self.text + SIGMA_TEXT.get(sigma, f"; sigma fixed at {sigma} (not counted in k)")


def _continuous_bernoulli(model, decoded, x):
    from vaebic.model import objectives

    return objectives.continuous_bernoulli_log_likelihood(decoded, x)


def _continuous_bernoulli_mean(decoded):
    import torch

    return torch.distributions.ContinuousBernoulli(logits=decoded).mean


register_likelihood(
    Likelihood(
        "bernoulli",
        _bernoulli,
        _sigmoid_mean,
        binarised=True,
        text="Bernoulli (binary cross-entropy summed over pixels) on statically binarised pixels",
        describe=_bernoulli_text,
        log_density_for=_bernoulli_for,
    )
)
register_likelihood(
    Likelihood(
        "gaussian",
        _gaussian,
        _sigmoid_mean,
        binarised=False,
        text="Gaussian N(x; mean(z), sigma^2 I) on grey levels in [0, 1], constants included",
        params=("gaussian_sigma",),
        add_parameters=_gaussian_sigma,
        describe=_gaussian_text,
    )
)
register_likelihood(
    Likelihood(
        "continuous_bernoulli",
        _continuous_bernoulli,
        _continuous_bernoulli_mean,
        binarised=False,
        text="continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) on grey levels in [0, 1], normaliser included",
    )
)
