"""The reference engine: the training iteration run eagerly, in fp32, exactly as written. The baseline."""
from .. import evaluation
from ..distributed import World, unwrap, wrap_model
from .iteration import train_step


class ReferenceEngine:
    name = "reference"

    def __init__(self, model, optimizer, strategy, cfg, world=World()):
        self.model = wrap_model(world, model, cfg.sync_bn)
        self.optimizer, self.strategy, self.cfg = optimizer, strategy, cfg

    def step(self, batch, meter, step):
        return train_step(self.model, self.optimizer, self.strategy, self.cfg, batch, meter, step)

    def evaluate(self, loader, *, eps, step_size, steps):
        device = next(self.model.parameters()).device
        return evaluation.evaluate(unwrap(self.model), loader, eps=eps, step_size=step_size, steps=steps,
                                   device=device)
