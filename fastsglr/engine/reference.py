"""The reference engine: the training iteration run eagerly, in fp32, exactly as written. The baseline."""
from .iteration import train_step


class ReferenceEngine:
    name = "reference"

    def __init__(self, model, optimizer, strategy, cfg):
        self.model, self.optimizer, self.strategy, self.cfg = model, optimizer, strategy, cfg

    def step(self, batch, meter, step):
        return train_step(self.model, self.optimizer, self.strategy, self.cfg, batch, meter, step)
