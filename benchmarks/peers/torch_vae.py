"""PyTorch (eager) peer: pytorch/examples vae/main.py's VAE, one Adam step per call."""
import torch
from torch import nn
from torch.nn import functional as F

from . import LEARNING_RATE, binary_batch


class VAE(nn.Module):
    """784-400-20 VAE with pytorch/examples' layer names; decodes to logits."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        return self.fc4(F.relu(self.fc3(z)))

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(logits, x, mu, logvar):
    """Negative ELBO averaged over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    # KL(N(mu, sigma^2) || N(0, I)): Kingma & Welling 2014, Appendix B
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (bce + kld) / x.shape[0]


def make_step(batch_size, seed, device="cpu"):
    """One training step per call on a fixed batch; on a GPU (``device="cuda"``) it waits for the device.

    CPU eager work is synchronous; CUDA kernels are queued, so the step ends
    with ``torch.cuda.synchronize()`` to be timed whole.
    """
    torch.manual_seed(seed)
    model = VAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    x = torch.from_numpy(binary_batch(batch_size, seed)).to(device)

    def step():
        optimizer.zero_grad()
        logits, mu, logvar = model(x)
        loss_function(logits, x, mu, logvar).backward()
        optimizer.step()
        if x.is_cuda:
            torch.cuda.synchronize()
    return step
