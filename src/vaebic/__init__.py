"""vaebic: choose the latent dimension of a VAE by BIC.

The library is importable without torch or mlflow being loaded; heavy modules load on use.
The one function most users need from Python is :func:`vaebic.load_model`.
"""

__version__ = "0.1.0"


def load_model(path, device="cpu"):
    """Load a trained VAE from a model folder written by the train stage (``models/<d>-<seed>/``).

    Returns the model in eval mode, with ``encode(x) -> (mu, logvar)`` and ``decode(z) -> logits``.
    """
    from vaebic.model.vae import load_model as _load

    return _load(path, device=device)
