"""The training step of an MLP VAE with its backward pass written out.

On a CPU at the default sizes (784 -> 400 -> 2d, batch 128), autograd's bookkeeping costs about
a sixth of a step: about 425 dispatched operations for forward and backward, where the
arithmetic needs about 50. This step runs the same arithmetic as
``elbo_terms`` + ``backward()``, with every gradient in closed form:

    loss = (sum_n KL_n - sum_n log p(x_n|z_n)) / N,     z = mu + exp(logvar / 2) * eps
    dloss/dlogits = -dlog p(x|z)/dlogits / N             (Bernoulli: (sigmoid(l) - x) / N)
    dloss/dmu     = dloss/dz + mu / N
    dloss/dlogvar = dloss/dz * eps * std / 2 + (exp(logvar) - 1) / (2 N)

and for each linear layer y = a W^T + b (ReLU between layers): dW = g^T a, db = sum_n g, and
g_a = (g W) * [a > 0] (the ReLU's backward from vaebic.fit.torch_fast). The weight gradients are
written into the parameters' ``.grad`` tensors in place (no allocation per step). Likelihoods other than the Bernoulli get dlog p/dlogits (and the
learned Gaussian sigma's gradient) from autograd on that one small function.

``tests/test_mlp_step.py`` checks every gradient against autograd in float64.
"""

from __future__ import annotations

import torch
from torch import nn

from vaebic.fit import torch_fast
from vaebic.model.objectives import bernoulli_log_likelihood, kl_standard_normal, stable_sigmoid


def supports(model, precision: str, compile: bool) -> bool:
    """True where this step applies: an MLP, not compiled (else autograd does the backward)."""
    return model.config.architecture == "mlp" and precision in ("float32", "bfloat16") and not compile


def _linears(seq: nn.Sequential) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.weight, m.bias) for m in seq if isinstance(m, nn.Linear)]


def _forward(layers, h: torch.Tensor) -> list[torch.Tensor]:
    """The input and every layer's output (after its ReLU, none after the last)."""
    acts = [h]
    for i, (w, b) in enumerate(layers):
        h = torch.addmm(b, h, w.t())
        if i < len(layers) - 1:
            h.relu_()
        acts.append(h)
    return acts


def _backward(layers, params, acts: list[torch.Tensor], g: torch.Tensor, input_grad: bool, relu_backward) -> torch.Tensor | None:
    """Writes dW and db of every layer into the float32 .grad of params from g = dloss/d(output)
    (layers: the weights in the precision the matrix multiplies run in); returns dloss/d(input) if asked.
    relu_backward(g, a): g through a ReLU whose output was a (vaebic.fit.torch_fast.relu_backward)."""
    for i in reversed(range(len(layers))):
        w = layers[i][0]
        grad_w, grad_b = params[i][0].grad, params[i][1].grad
        a = acts[i]
        if g.dtype == grad_w.dtype:
            torch.mm(g.t(), a, out=grad_w)
        else:  # bf16: the product rounded to bf16, as autocast's backward leaves it, then widened
            grad_w.copy_(torch.mm(g.t(), a))
        torch.sum(g, 0, dtype=grad_b.dtype, out=grad_b)
        if i > 0:
            g = relu_backward(torch.mm(g, w), a)  # ReLU: a > 0 where it passed
        elif input_grad:
            return torch.mm(g, w)
    return None


class MLPStep:
    """step(x, eps) -> tensor([sum_n log p(x_n|z_n), sum_n KL_n]), and the gradients of the mean
    -ELBO in every parameter's .grad, as ``elbo_terms`` and ``loss.backward()`` would leave them.

    eps: the standard normal draws, shape (1, N, d) as the training loop makes them.
    precision 'bfloat16' runs the matrix multiplies (forward and backward) in bf16, as bf16
    autocast does: the weights are cast once per step; mu, logvar, z, the likelihood, the KL and
    the gradients that enter .grad are float32.
    """

    def __init__(self, model, precision: str = "float32"):
        self.model = model
        self.enc, self.dec = _linears(model.encoder), _linears(model.decoder)
        self.low = torch.bfloat16 if precision == "bfloat16" else None
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        self.bernoulli = model.config.likelihood == "bernoulli"
        sigma = getattr(model, "log_sigma", None)
        self.learned_sigma = sigma if isinstance(sigma, nn.Parameter) else None
        self.relu_backward = torch_fast.relu_backward(next(model.parameters()).device)

    def _cast(self, layers):
        return layers if self.low is None else [(w.to(self.low), b.to(self.low)) for w, b in layers]

    def _in(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.low is None else t.to(self.low)

    def _out(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.low is None else t.float()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        n, eps = len(x), eps.reshape(len(x), -1)
        enc_w, dec_w = self._cast(self.enc), self._cast(self.dec)
        enc = _forward(enc_w, self._in(x.flatten(1)))
        mu, logvar = self._out(enc[-1]).chunk(2, dim=-1)
        std = torch.exp(0.5 * logvar)
        z = torch.addcmul(mu, std, eps)
        dec = _forward(dec_w, self._in(z))
        log_px, g_logits = self._likelihood(self._out(dec[-1]), x, n)
        kl = kl_standard_normal(mu, logvar).sum()
        g_z = self._out(_backward(dec_w, self.dec, dec, self._in(g_logits), input_grad=True, relu_backward=self.relu_backward))
        g_mu = g_z.add(mu, alpha=1.0 / n)
        g_logvar = (g_z * eps * std).add_(torch.exp(logvar) - 1.0, alpha=1.0 / n).mul_(0.5)
        _backward(enc_w, self.enc, enc, self._in(torch.cat((g_mu, g_logvar), dim=1)), input_grad=False, relu_backward=self.relu_backward)
        return torch.stack((log_px, kl))

    def _likelihood(self, logits: torch.Tensor, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_n log p(x_n|z_n), and dloss/dlogits (and the learned sigma's gradient into its .grad)."""
        if self.bernoulli:
            return bernoulli_log_likelihood(logits, x).sum(), (stable_sigmoid(logits) - x).mul_(1.0 / n)
        with torch.enable_grad():
            leaf = logits.detach().requires_grad_()
            inputs = [leaf] if self.learned_sigma is None else [leaf, self.learned_sigma]
            log_px = self.model.log_likelihood(leaf, x).sum()
            grads = torch.autograd.grad(log_px, inputs)
        if self.learned_sigma is not None:
            self.learned_sigma.grad.copy_(grads[1]).mul_(-1.0 / n)
        return log_px.detach(), grads[0].mul_(-1.0 / n)
