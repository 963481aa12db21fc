"""A variational autoencoder on scikit-learn's 8x8 digits, trained with vitorch's SVI.

Amortized variational inference: one encoder network maps any image ``x`` to the
parameters of its approximate posterior ``q(z | x)``, so inference on an unseen image is a
single forward pass rather than an optimization. The decoder defines the likelihood
``p(x | z)``; ``vitorch.module`` registers both networks so that SVI trains them jointly.

Run it::

    python examples/vae.py --epochs 100 --out vae-out          # PNG grids in vae-out/
    python examples/vae.py --smoke                            # a few seconds

or import it (the file guards its command line) and call :func:`train_vae`.

The pixels (0..16) are scaled to [0, 1] and modelled, as in Pyro's MNIST VAE, with a
Bernoulli likelihood evaluated at those grey levels (``validate_args=False``, since they
are not all 0 or 1); the reported ELBO is therefore a cross-entropy bound, comparable
between runs and libraries but not a normalized log-likelihood.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

import torch
from torch import nn

import vitorch
import vitorch.distributions as dist
from vitorch.infer import SVI, Trace_ELBO
from vitorch.optim import Adam

IMAGE_SIDE = 8
IMAGE_DIM = IMAGE_SIDE * IMAGE_SIDE

__all__ = [
    "Encoder",
    "Decoder",
    "VAE",
    "load_digits_split",
    "minibatches",
    "test_elbo_per_image",
    "train_vae",
    "main",
]


class Encoder(nn.Module):
    """``x -> (z_loc, z_scale)``: the inference network of ``q(z | x)``."""

    def __init__(self, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(IMAGE_DIM, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.softplus(self.fc1(x.reshape(-1, IMAGE_DIM)))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class Decoder(nn.Module):
    """``z -> pixel probabilities``: the likelihood network of ``p(x | z)``."""

    def __init__(self, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, IMAGE_DIM)
        self.softplus = nn.Softplus()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc21(self.softplus(self.fc1(z))))


class VAE(nn.Module):
    """The encoder and decoder, with the vitorch ``model`` and ``guide`` that use them."""

    def __init__(self, z_dim: int = 8, hidden_dim: int = 128) -> None:
        super().__init__()
        if not isinstance(z_dim, int) or z_dim < 1:
            raise ValueError(f"z_dim must be a positive int, got {z_dim!r}")
        if not isinstance(hidden_dim, int) or hidden_dim < 1:
            raise ValueError(f"hidden_dim must be a positive int, got {hidden_dim!r}")
        self.z_dim = z_dim
        self.encoder = Encoder(z_dim, hidden_dim)
        self.decoder = Decoder(z_dim, hidden_dim)

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """``p(x, z) = p(x | z) p(z)`` with a standard normal prior on each ``z``."""
        vitorch.module("decoder", self.decoder)
        n = x.shape[0]
        with vitorch.plate("data", n):
            z_loc = x.new_zeros((n, self.z_dim))
            z_scale = x.new_ones((n, self.z_dim))
            z = vitorch.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            probs = self.decoder(z)
            vitorch.sample(
                "obs",
                dist.Bernoulli(probs, validate_args=False).to_event(1),
                obs=x.reshape(-1, IMAGE_DIM),
            )
        return probs

    def guide(self, x: torch.Tensor) -> None:
        """The amortized posterior ``q(z | x) = Normal(encoder(x))``."""
        vitorch.module("encoder", self.encoder)
        with vitorch.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            vitorch.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of each image: one encoder and one decoder pass."""
        z_loc, _ = self.encoder(x)
        return self.decoder(z_loc)

    @torch.no_grad()
    def generate(self, num_images: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Pixel probabilities of ``num_images`` draws ``z ~ p(z)`` pushed through the decoder."""
        z = torch.randn(num_images, self.z_dim, device=device)
        return self.decoder(z)


# -- data ----------------------------------------------------------------------------------
def load_digits_split(
    test_fraction: float = 1 / 6, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(train, test)`` float tensors of shape ``(n, 64)`` in [0, 1].

    The split is a seeded random permutation, so it is the same on every run.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().data, dtype=torch.get_default_dtype()) / 16.0
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    num_test = int(round(test_fraction * len(images)))
    test, train = images[order[:num_test]], images[order[num_test:]]
    return train.to(device), test.to(device)


def minibatches(
    data: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch of shuffled minibatches; the order comes from ``generator`` only."""
    order = torch.randperm(len(data), generator=generator).to(data.device)
    return [data[order[i : i + batch_size]] for i in range(0, len(data), batch_size)]


def test_elbo_per_image(svi: SVI, data: torch.Tensor, batch_size: int = 1000) -> float:
    """The ELBO of ``data`` divided by its number of images (one Monte Carlo sample each)."""
    total = 0.0
    for i in range(0, len(data), batch_size):
        total += svi.evaluate_loss(data[i : i + batch_size])
    return -total / len(data)


# -- plots ---------------------------------------------------------------------------------
def _save_grid(images: torch.Tensor, rows: int, path: str, title: str) -> None:
    # Imported here: matplotlib is an optional dependency, needed only for the pictures.
    from matplotlib.figure import Figure

    images = images.detach().cpu().reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    cols = math.ceil(len(images) / rows)
    # Light-grey gutters between the images (0 is white under the gray_r colormap).
    grid = torch.full((rows * (IMAGE_SIDE + 1) - 1, cols * (IMAGE_SIDE + 1) - 1), 0.2)
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        grid[
            r * (IMAGE_SIDE + 1) : r * (IMAGE_SIDE + 1) + IMAGE_SIDE,
            c * (IMAGE_SIDE + 1) : c * (IMAGE_SIDE + 1) + IMAGE_SIDE,
        ] = image
    fig = Figure(figsize=(cols * 0.6, rows * 0.6 + 0.5))
    ax = fig.add_subplot()
    ax.imshow(grid.numpy(), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")


def save_pictures(vae: VAE, test: torch.Tensor, out_dir: str, num: int = 16) -> list[str]:
    """Write ``reconstructions.png`` (test images over their reconstructions) and ``samples.png``."""
    os.makedirs(out_dir, exist_ok=True)
    originals = test[:num]
    recon = vae.reconstruct(originals)
    recon_path = os.path.join(out_dir, "reconstructions.png")
    _save_grid(
        torch.cat([originals, recon]),
        rows=2,
        path=recon_path,
        title="unseen test digits (top) and their reconstructions (bottom)",
    )
    samples_path = os.path.join(out_dir, "samples.png")
    _save_grid(
        vae.generate(2 * num, device=test.device),
        rows=2,
        path=samples_path,
        title="digits generated from z ~ N(0, I)",
    )
    return [recon_path, samples_path]


# -- training ------------------------------------------------------------------------------
def train_vae(
    epochs: int = 100,
    smoke: bool = False,
    out_dir: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    seed: int = 0,
    batch_size: int = 100,
    lr: float = 1e-3,
    z_dim: int = 8,
    hidden_dim: int = 128,
    num_threads: int | None = 1,
) -> dict[str, Any]:
    """Train the VAE; return a summary dict of plain data.

    Keys: ``test_elbo`` and ``train_elbo`` (per image, one value per epoch), ``epochs``,
    ``seconds`` (training time), ``num_train``/``num_test``, ``encode_seconds`` and
    ``posterior_scale_mean`` (amortized inference on all test images in one encoder
    pass), ``recon_mae`` (mean absolute pixel error of the test reconstructions), and
    ``files`` (the PNGs written, empty without ``out_dir``). ``smoke=True`` trains for at
    most 2 epochs, for tests. ``num_threads`` sets torch's CPU threads for the run (and
    restores them after): these networks are too small to gain from more than one thread,
    and on a busy machine extra threads cost far more than they give. ``None`` leaves
    torch's setting alone.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = str(device)  # also accepts a torch.device
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    if smoke:
        epochs = min(epochs, 2)
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(epochs, out_dir, device, progress, seed, batch_size, lr, z_dim, hidden_dim)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    epochs: int,
    out_dir: str | None,
    device: str,
    progress: bool,
    seed: int,
    batch_size: int,
    lr: float,
    z_dim: int,
    hidden_dim: int,
) -> dict[str, Any]:
    vitorch.set_rng_seed(seed)
    vitorch.clear_param_store()
    train, test = load_digits_split(seed=seed, device=device)
    vae = VAE(z_dim=z_dim, hidden_dim=hidden_dim).to(device)
    svi = SVI(vae.model, vae.guide, Adam({"lr": lr}), loss=Trace_ELBO())
    # A generator of its own: the batch order does not depend on the draws of the ELBO.
    batch_rng = torch.Generator().manual_seed(seed)

    from tqdm.auto import tqdm

    history_test: list[float] = []
    history_train: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc="VAE", unit="epoch", disable=not progress)
    for epoch in bar:
        epoch_loss = 0.0
        for batch in minibatches(train, batch_size, batch_rng):
            epoch_loss += svi.step(batch)
        history_train.append(-epoch_loss / len(train))
        history_test.append(test_elbo_per_image(svi, test))
        bar.set_postfix(test_elbo=f"{history_test[-1]:.2f}")
        if progress:
            bar.write(
                f"epoch {epoch:3d}  train ELBO/image {history_train[-1]:9.3f}  "
                f"test ELBO/image {history_test[-1]:9.3f}"
            )
    bar.close()
    seconds = time.perf_counter() - start

    # Amortized inference: the posteriors of every unseen image in one encoder pass.
    t0 = time.perf_counter()
    with torch.no_grad():
        z_loc, z_scale = vae.encoder(test)
    encode_seconds = time.perf_counter() - t0
    recon_mae = float((vae.reconstruct(test) - test).abs().mean())

    files = save_pictures(vae, test, out_dir) if out_dir is not None else []
    return {
        "test_elbo": history_test,
        "train_elbo": history_train,
        "epochs": epochs,
        "seconds": seconds,
        "num_train": len(train),
        "num_test": len(test),
        "encode_seconds": encode_seconds,
        "posterior_scale_mean": float(z_scale.mean()),
        "latent_shape": tuple(z_loc.shape),
        "recon_mae": recon_mae,
        "files": files,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: ``python examples/vae.py [--epochs N] [--out DIR] [--device cuda] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=None, help="directory for the PNG grids")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    result = train_vae(
        epochs=args.epochs,
        smoke=args.smoke,
        out_dir=args.out,
        device=args.device,
        progress=not args.no_progress,
        seed=args.seed,
        lr=args.lr,
        num_threads=args.threads or None,
    )
    print(
        f"final test ELBO per image: {result['test_elbo'][-1]:.3f} after {result['epochs']} "
        f"epochs ({result['seconds']:.1f} s)"
    )
    print(
        f"amortized inference: {result['num_test']} unseen images encoded in one pass in "
        f"{1e3 * result['encode_seconds']:.2f} ms; mean posterior scale "
        f"{result['posterior_scale_mean']:.3f}; reconstruction MAE {result['recon_mae']:.3f}"
    )
    for path in result["files"]:
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
