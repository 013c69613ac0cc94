"""Small models with known answers, shared by the tests."""

import torch


class Linear2(torch.nn.Module):
    """Two-class linear model f(x) = W x with rows ``w0`` and ``w1`` and no bias: its margin
    is linear in x, so the FGSM step, the best PGD step, the smallest L2 perturbation and the
    best L0 changes all have closed forms."""

    def __init__(self, w0, w1):
        super().__init__()
        self.lin = torch.nn.Linear(w0.numel(), 2, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.stack([w0, w1]))

    def forward(self, x):
        return self.lin(x.flatten(1))
