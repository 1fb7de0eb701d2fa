"""The VAE: an MLP encoder to (mu, log sigma^2), the reparameterised sample, an MLP decoder to
the parameters of p(x|z). Plus saving, loading and parameter counting.

Likelihoods p(x|z), each a true log-density so that numbers compare across latent dimensions:
- ``bernoulli``: the decoder gives logits; x must be binary (the pipeline binarises).
- ``gaussian``: the decoder gives the mean through a sigmoid; sigma is fixed (``gaussian_sigma``,
  a number) or one learned scalar (``gaussian_sigma: learned``, counted as a decoder parameter).
- ``continuous_bernoulli``: the decoder gives logits of a continuous Bernoulli on grey levels.

A model folder (``models/<latent_dim>-<seed>/``) holds ``weights.pt`` (a plain state dict,
loaded with ``weights_only=True``) and ``config.json`` (what is needed to rebuild the network).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from vaebic.errors import VaebicError

LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")
WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """x (N, D) -> encoder -> (mu, logvar) (N, d); z (..., d) -> decoder -> logits (..., D)."""

    def __init__(self, input_dim: int, latent_dim: int, hidden_sizes: list[int], image_shape: list[int] | None = None,
                 likelihood: str = "bernoulli", gaussian_sigma: float | str = "learned"):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise VaebicError(f"unknown likelihood {likelihood!r}; known: {', '.join(LIKELIHOODS)}")
        self.config = {
            "input_dim": int(input_dim),
            "latent_dim": int(latent_dim),
            "hidden_sizes": [int(h) for h in hidden_sizes],
            "image_shape": list(image_shape) if image_shape else [int(input_dim)],
            "likelihood": likelihood,
            "gaussian_sigma": gaussian_sigma,
        }
        self.encoder = _mlp([input_dim, *hidden_sizes, 2 * latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden_sizes), input_dim])
        if likelihood == "gaussian":
            if gaussian_sigma == "learned":
                self.log_sigma = nn.Parameter(torch.zeros(()))
            else:
                self.register_buffer("log_sigma", torch.tensor(math.log(float(gaussian_sigma))))

    @property
    def latent_dim(self) -> int:
        return self.config["latent_dim"]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of q(z|x) = N(mu, diag(exp(logvar)))."""
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Parameters of p(x|z), one per pixel (flattened): logits, or the Gaussian mean before its sigmoid."""
        return self.decoder(z)

    def log_likelihood(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats, summed over pixels, from decode(z); x broadcasts over leading sample dimensions."""
        from vaebic import objectives

        kind = self.config["likelihood"]
        if kind == "bernoulli":
            return objectives.bernoulli_log_likelihood(decoded, x)
        if kind == "gaussian":
            return objectives.gaussian_log_likelihood(decoded, x, self.log_sigma)
        return objectives.continuous_bernoulli_log_likelihood(decoded, x)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        """E[x|z] for pictures: the pixel means of p(x|z)."""
        if self.config["likelihood"] == "continuous_bernoulli":
            return torch.distributions.ContinuousBernoulli(logits=decoded).mean
        return torch.sigmoid(decoded)

    def generative_parameters(self) -> list[nn.Parameter]:
        """The parameters of p(x|z): the decoder's, and a learned Gaussian sigma."""
        extra = [self.log_sigma] if isinstance(getattr(self, "log_sigma", None), nn.Parameter) else []
        return [*self.decoder.parameters(), *extra]

    def forward(self, x: torch.Tensor):
        from vaebic.objectives import reparameterize

        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar


def count_params(model: VAE, which: str = "decoder") -> int:
    """Number of free parameters: the generative model's (decoder) or encoder and decoder (all).

    For BIC, the decoder's count is the natural k: the encoder is an inference device that
    defines no distribution over x, so its parameters are not parameters of the model p(x).
    """
    params = model.generative_parameters()
    if which == "all":
        params = [*model.encoder.parameters(), *params]
    return sum(p.numel() for p in params)


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA if available, then Apple MPS, then CPU. A named device must be available."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise VaebicError(f"train.device is '{name}' but no {name.upper()} device is available here; use 'auto' or 'cpu'")
    return torch.device(name)


def save_model(model: VAE, folder: str | Path, extra_config: dict | None = None) -> None:
    """Write weights.pt and config.json into folder (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    config = {**model.config, **(extra_config or {})}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild a VAE from a model folder; weights are loaded with weights_only=True (no pickled code)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise VaebicError(f"{folder / CONFIG_FILE}: not found; is {folder} a model folder written by the train stage?") from None
    except (OSError, ValueError) as exc:
        raise VaebicError(f"{folder / CONFIG_FILE}: unreadable or not JSON ({exc})") from None
    try:
        model = VAE(config["input_dim"], config["latent_dim"], config["hidden_sizes"], config.get("image_shape"),
                    config.get("likelihood", "bernoulli"), config.get("gaussian_sigma", "learned"))
    except (KeyError, TypeError) as exc:
        raise VaebicError(f"{folder / CONFIG_FILE}: missing or bad entry {exc}") from None
    try:
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise VaebicError(f"{folder / WEIGHTS_FILE}: not found; re-run `dvc repro` to retrain") from None
    except Exception as exc:  # corrupt, truncated, or not a plain state dict
        raise VaebicError(f"{folder / WEIGHTS_FILE}: cannot be loaded as VAE weights ({type(exc).__name__}: {exc})") from None
    return model.to(device).eval()
