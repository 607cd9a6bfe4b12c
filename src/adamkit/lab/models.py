"""The lab's models, small enough for 2 CPU cores: logistic regression, an MLP with two
hidden ReLU layers (optionally with dropout), a small CNN, and a variational autoencoder.

Every classifier's builder takes the input's shape (C, H, W) and the number of classes, so the
same experiment runs on digits (1×8×8), MNIST (1×28×28) or CIFAR-10 (3×32×32).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional

Shape = tuple[int, int, int]
Builder = Callable[[Shape, int], nn.Module]


def logistic(shape: Shape, classes: int) -> nn.Module:
    """Multi-class logistic regression on the pixels (Kingma & Ba §6.1)."""
    channels, height, width = shape
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, classes))


def mlp(shape: Shape, classes: int, hidden: int = 128, dropout: float = 0.0) -> nn.Module:
    """Two fully connected hidden ReLU layers (Kingma & Ba §6.2 use 1 000 units on MNIST),
    dropout after each when ``dropout`` > 0."""
    channels, height, width = shape
    layers: list[nn.Module] = [nn.Flatten()]
    size = channels * height * width
    for _ in range(2):
        layers += [nn.Linear(size, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        size = hidden
    layers.append(nn.Linear(size, classes))
    return nn.Sequential(*layers)


def cnn(shape: Shape, classes: int, width: int = 16) -> nn.Module:
    """Two stages of 3×3 convolution, ReLU and 2×2 max-pooling, then a ReLU hidden layer
    (a small version of Kingma & Ba §6.3's c64-c64-c128-1000). On sequences (height 1,
    MNIST-1D) the kernels are 1×3 and the pooling 1×2: a 1-D CNN."""
    channels, height, size = shape
    rows = 3 if height > 1 else 1  # the kernel's and the pooling's height
    kernel, pool, padding = (rows, 3), (min(rows, 2), 2), (rows // 2, 1)
    features = 2 * width * (height // pool[0] // pool[0]) * (size // 4)
    return nn.Sequential(
        nn.Conv2d(channels, width, kernel, padding=padding),
        nn.ReLU(),
        nn.MaxPool2d(pool),
        nn.Conv2d(width, 2 * width, kernel, padding=padding),
        nn.ReLU(),
        nn.MaxPool2d(pool),
        nn.Flatten(),
        nn.Linear(features, 64),
        nn.ReLU(),
        nn.Linear(64, classes),
    )


class VAE(nn.Module):
    """Kingma & Welling's variational autoencoder (*Auto-Encoding Variational Bayes*, 2013,
    Appendix C; the model of Kingma & Ba §6.4): an encoder with one softplus hidden layer
    giving the mean μ and log-variance log σ² of a spherical Gaussian q(z|x), the prior
    N(0, I), a decoder with one softplus hidden layer giving the logits of independent
    Bernoulli pixels."""

    def __init__(self, pixels: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(pixels, hidden), nn.Softplus(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.Softplus(), nn.Linear(hidden, pixels)
        )

    def forward(self, images: Tensor, noise: Tensor) -> Tensor:
        """The negative evidence lower bound of each image (pixels in [0, 1]), one sample
        z = μ + σ·``noise`` (the reparameterisation, ``noise`` ~ N(0, I) of shape
        (n, latent)): the reconstruction's binary cross-entropy summed over the pixels plus
        KL(q(z|x) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²)."""
        mean, log_variance = self.encoder(images).chunk(2, dim=1)
        z = mean + (0.5 * log_variance).exp() * noise
        targets = images.flatten(1)
        reconstruction = functional.binary_cross_entropy_with_logits(
            self.decoder(z), targets, reduction="none"
        ).sum(1)
        divergence = 0.5 * (mean.square() + log_variance.exp() - 1 - log_variance).sum(1)
        return reconstruction + divergence


def vae(shape: Shape, hidden: int = 64, latent: int = 8) -> VAE:
    """A :class:`VAE` for images of ``shape``: Kingma & Ba §6.4 use 500 hidden units and a
    50-d latent on MNIST's 784 pixels; the defaults (64, 8) suit digits' 64."""
    channels, height, width = shape
    return VAE(channels * height * width, hidden, latent)
