"""The reference engine: the training iteration run eagerly, in fp32, exactly as written, with the plain PyTorch
definitions of the fused ops (``PLAIN_OPS``) on every device. The baseline."""

from fastsglr.kernels import PLAIN_OPS

from .. import evaluation
from ..distributed import World, unwrap, wrap_model
from ..objectives import Objective
from .iteration import train_step


class ReferenceEngine:
    name = "reference"
    ops = PLAIN_OPS

    def __init__(self, model, optimizer, strategy, cfg, world=World(), distill=None):
        self.model = wrap_model(world, model, cfg.sync_bn)
        self.optimizer, self.strategy = optimizer, strategy
        self.objective = Objective.from_config(cfg, next(model.parameters()).device, distill)

    def step(self, batch, meter, step):
        return train_step(self.model, self.optimizer, self.strategy, self.objective, batch, meter, step, ops=self.ops)

    def evaluate(self, loader, *, eps, step_size, steps):
        device = next(self.model.parameters()).device
        return evaluation.evaluate(
            unwrap(self.model), loader, eps=eps, step_size=step_size, steps=steps, device=device, ops=self.ops
        )
