"""The VAE: an MLP encoder to (mu, log sigma^2), the reparameterised sample, an MLP decoder to
the parameters of p(x|z). Plus saving, loading and parameter counting.

The likelihoods p(x|z) are records in likelihoods.py (bernoulli, gaussian, continuous_bernoulli,
and any registered there); each is a true log-density, so that numbers compare across latent
dimensions. The Gaussian's sigma is one scalar, counted in k unless fixed: ``optimal`` (the
default, a calibrated decoder, Rybkin, Daniilidis & Levine 2021: sigma^2 = the mean squared error
of the batch's reconstructions while training, then of the whole training split, stored with the
model), ``learned`` (by gradient, as a parameter; slow to converge, since every gradient on the
mean is scaled by 1/sigma^2 while sigma starts at 1), or a fixed number.

A model folder (``models/<latent_dim>-<seed>/``) holds ``weights.pt`` (a plain state dict,
loaded with ``weights_only=True``) and ``config.json`` (the VAEConfig: what is needed to rebuild
the network, and the train stage's extra record).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from vaebic.errors import VaebicError
from vaebic.model import likelihoods

WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"


@dataclass
class VAEConfig:
    """What is needed to build a VAE; config.json holds these fields in this order.

    architecture mlp: MLPs with hidden_sizes (the decoder mirrors them); conv: strided
    convolutions with conv_channels and a transposed-convolution decoder, for images
    (image_shape [C, H, W]; plain vectors of length input_dim when not given). likelihood: a
    name in likelihoods.LIKELIHOODS; gaussian_sigma: the Gaussian's sigma (optimal, learned or
    a number).
    """

    input_dim: int
    latent_dim: int
    architecture: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [400])
    conv_channels: list[int] | None = None
    image_shape: list[int] | None = None
    likelihood: str = "bernoulli"
    gaussian_sigma: float | str = "optimal"

    def __post_init__(self):
        likelihoods.get_likelihood(self.likelihood)  # an unknown name is an error now, not at the first batch
        self.input_dim, self.latent_dim = int(self.input_dim), int(self.latent_dim)
        self.hidden_sizes = [int(h) for h in self.hidden_sizes]
        self.conv_channels = [int(c) for c in (self.conv_channels or [32, 64])]
        self.image_shape = list(self.image_shape) if self.image_shape else [self.input_dim]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> VAEConfig:
        """A VAEConfig from config.json; other keys (the train stage's record) are ignored. Files
        written before a field existed rebuild the model they were written by: bernoulli, mlp, and
        a learned sigma (the only Gaussian sigma then)."""
        required = {k: config[k] for k in ("input_dim", "latent_dim", "hidden_sizes")}  # KeyError: not a model's config
        old = {"likelihood": "bernoulli", "gaussian_sigma": "learned", "architecture": "mlp"}
        known = {f.name for f in fields(cls)}
        return cls(**{**old, **{k: v for k, v in config.items() if k in known}, **required})


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def conv_strides(image_shape: list[int], n_layers: int) -> tuple[list[int], tuple[int, int]]:
    """Strides of the conv layers for this image size: 2 (halving H and W) while both are even and
    at least 4, then 1; and the (H, W) left after them."""
    _, h, w = image_shape
    strides = []
    for _ in range(n_layers):
        if h % 2 == 0 and w % 2 == 0 and h >= 4 and w >= 4:
            strides.append(2)
            h, w = h // 2, w // 2
        else:
            strides.append(1)
    return strides, (h, w)


def _conv_layer(c_in: int, c_out: int, stride: int, transposed: bool) -> nn.Module:
    # kernel 4, stride 2, padding 1 halves (or, transposed, doubles) the size exactly; kernel 3, padding 1 keeps it
    kernel = 4 if stride == 2 else 3
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    return cls(c_in, c_out, kernel, stride=stride, padding=1)


class ConvEncoder(nn.Module):
    """Flattened images (N, C*H*W) -> strided convolutions with ReLU -> linear -> (N, out_dim)."""

    def __init__(self, image_shape: list[int], channels: list[int], out_dim: int):
        super().__init__()
        self.image_shape = list(image_shape)
        strides, (h, w) = conv_strides(image_shape, len(channels))
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip([image_shape[0], *channels[:-1]], channels, strides):
            layers += [_conv_layer(c_in, c_out, stride, transposed=False), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1] * h * w, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x.reshape(len(x), *self.image_shape)).flatten(1))


class ConvDecoder(nn.Module):
    """z (..., d) -> linear with ReLU -> transposed convolutions mirroring the encoder -> (..., C*H*W)."""

    def __init__(self, image_shape: list[int], channels: list[int], latent_dim: int):
        super().__init__()
        strides, (h, w) = conv_strides(image_shape, len(channels))
        self.start = (channels[-1], h, w)
        self.head = nn.Sequential(nn.Linear(latent_dim, channels[-1] * h * w), nn.ReLU())
        outs = [*reversed(channels[:-1]), image_shape[0]]
        layers: list[nn.Module] = []
        for i, (c_in, c_out, stride) in enumerate(zip(reversed(channels), outs, reversed(strides))):
            layers.append(_conv_layer(c_in, c_out, stride, transposed=True))
            if i < len(channels) - 1:
                layers.append(nn.ReLU())
        self.convs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        out = self.convs(self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start))
        return out.reshape(*lead, -1)


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """bf16 and fp16 outputs (autocast) become float32; float32 and float64 stay as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class VAE(nn.Module):
    """x (N, D) -> encoder -> (mu, logvar) (N, d); z (..., d) -> decoder -> parameters of p(x|z) (..., D).

    Built from a VAEConfig: VAE(VAEConfig(input_dim=784, latent_dim=8, hidden_sizes=[400])).
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.likelihood = likelihoods.get_likelihood(config.likelihood)
        input_dim, latent_dim, image_shape = config.input_dim, config.latent_dim, config.image_shape
        if config.architecture == "conv":
            if len(image_shape) != 3:
                raise VaebicError(
                    f"model.architecture 'conv' needs images (C x H x W); these data are plain vectors of length {input_dim}; use 'mlp'"
                )
            self.encoder = ConvEncoder(image_shape, config.conv_channels, 2 * latent_dim)
            self.decoder = ConvDecoder(image_shape, config.conv_channels, latent_dim)
        elif config.architecture == "mlp":
            self.encoder = _mlp([input_dim, *config.hidden_sizes, 2 * latent_dim])
            self.decoder = _mlp([latent_dim, *reversed(config.hidden_sizes), input_dim])
        else:
            raise VaebicError(f"unknown architecture {config.architecture!r}; known: mlp, conv")
        if self.likelihood.add_parameters:
            self.likelihood.add_parameters(self)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def calibrated(self) -> bool:
        """A Gaussian decoder whose sigma is set to its maximum-likelihood value (gaussian_sigma: optimal)."""
        return self.config.likelihood == "gaussian" and self.config.gaussian_sigma == "optimal"

    def sigma(self) -> float | None:
        """The Gaussian decoder's sigma (None for other likelihoods)."""
        return float(torch.exp(self.log_sigma.detach())) if self.config.likelihood == "gaussian" else None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of q(z|x) = N(mu, diag(exp(logvar)))."""
        mu, logvar = _at_least_float32(self.encoder(x.flatten(1))).chunk(2, dim=-1)  # float32 even under bf16 autocast
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Parameters of p(x|z), one per pixel (flattened): logits, or the Gaussian mean before its sigmoid."""
        return self.decoder(z)

    def log_likelihood(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats, summed over pixels, from decode(z); x broadcasts over leading sample dimensions."""
        decoded = _at_least_float32(decoded)  # likelihoods in float32, also when the decoder ran in bf16 (autocast)
        return self.likelihood.log_density(self, decoded, x)

    def log_likelihood_for(self, x: torch.Tensor):
        """log p(x|z) as a function of decode(z) for this x, to score many z against the same x
        (the importance-weighted estimate): work that depends on x alone is done once, here."""
        if self.likelihood.log_density_for is not None:
            return self.likelihood.log_density_for(self, x)
        return lambda decoded: self.log_likelihood(decoded, x)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        """E[x|z] for pictures: the pixel means of p(x|z)."""
        return self.likelihood.mean(decoded)

    def generative_parameters(self) -> list[nn.Parameter]:
        """The parameters of p(x|z): the decoder's, and a learned Gaussian sigma."""
        extra = [self.log_sigma] if isinstance(getattr(self, "log_sigma", None), nn.Parameter) else []
        return [*self.decoder.parameters(), *extra]

    def forward(self, x: torch.Tensor):
        from vaebic.model.objectives import reparameterize

        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar


class EncodeDecode(nn.Module):
    """The model as the Model Registry serves it: forward(x, z) -> (mu, logvar, decoded).

    torch.export (MLflow's pickle-free 'pt2' format) keeps only forward, so encoding and decoding
    share one call: mu, logvar = encode(x) and decoded = decode(z), each with its own batch size.
    """

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, z: torch.Tensor):
        mu, logvar = self.vae.encode(x)
        return mu, logvar, self.vae.decode(z)


def count_params(model: VAE, which: str = "decoder") -> int:
    """Number of free parameters: the generative model's (decoder) or encoder and decoder (all).

    For BIC, the decoder's count is the natural k: the encoder is an inference device that
    defines no distribution over x, so its parameters are not parameters of the model p(x).
    A Gaussian sigma fitted to the data counts once (learned, or calibrated: optimal).
    """
    params = model.generative_parameters()
    if which == "all":
        params = [*model.encoder.parameters(), *params]
    return sum(p.numel() for p in params) + (1 if model.calibrated else 0)


def save_model(model: VAE, folder: str | Path, extra_config: dict | None = None) -> None:
    """Write weights.pt and config.json into folder (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    config = {**model.config.to_dict(), **(extra_config or {})}
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
        model = VAE(VAEConfig.from_dict(config))
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
