"""The reference engine: the training iteration run eagerly, in fp32, exactly as written. The baseline."""
from .. import evaluation
from .iteration import train_step


class ReferenceEngine:
    name = "reference"

    def __init__(self, model, optimizer, strategy, cfg):
        self.model, self.optimizer, self.strategy, self.cfg = model, optimizer, strategy, cfg

    def step(self, batch, meter, step):
        return train_step(self.model, self.optimizer, self.strategy, self.cfg, batch, meter, step)

    def evaluate(self, loader, *, eps, step_size, steps):
        device = next(self.model.parameters()).device
        return evaluation.evaluate(self.model, loader, eps=eps, step_size=step_size, steps=steps, device=device)
