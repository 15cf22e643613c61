"""The per-epoch Hessian trace of the adversarial training loss (the paper's Fig. B.7, Sec. B.5), measured when
``Config.hessian_probes`` > 0 and written into metrics.jsonl as ``hessian_trace`` (the mean of the probes) and
``hessian_trace_sem`` (its standard error; null with one probe).

The loss, which the paper leaves unstated: CE(f(x'), y) averaged over one fixed training batch (``batch_size`` images
drawn once from the training split with the run's seed, no augmentation, their training labels), x' crafted afresh
every epoch by the run's training attack (PGD with its eps, step size and steps, random start) on the current
weights, the model in eval mode throughout (BatchNorm on its running statistics, as PyHessian measures, so the loss
is a fixed function of the weights and measuring it changes no state). It is PGD-AT's hard-label training loss on
that batch; for other methods and label strategies it is the same probe of sharpness, not their training loss.

The attack and the probes draw from their own generators seeded by (seed, epoch): the training run's random
stream is untouched, so a run with the measurement trains exactly like one without.
"""

import torch
import torch.nn.functional as F

from .attacks import pgd
from .data.loaders import DeviceLoader, eval_subset_indices
from .hessian import hutchinson_trace


class HessianTraceProbe:
    def __init__(self, cfg, info, device):
        count = min(cfg.batch_size, info.counts["train"])
        indices = eval_subset_indices(info.counts["train"], count, cfg.seed)
        batch = next(iter(DeviceLoader(info, "train", count, device, train=False, seed=cfg.seed, indices=indices)))
        self.images, self.labels = batch.images, batch.labels
        self.cfg, self.device = cfg, torch.device(device)

    def _seed(self, epoch) -> int:
        return self.cfg.seed * 1_000_003 + epoch

    def adversarial_batch(self, model, epoch):
        """The epoch's x' of the fixed batch (eval mode, the training attack, from a seeded random start)."""
        model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self._seed(epoch))
            return pgd(
                model,
                self.images,
                self.labels,
                eps=self.cfg.eps,
                step_size=self.cfg.step_size,
                steps=self.cfg.attack_steps,
            )

    def measure(self, model, epoch) -> dict:
        """One epoch's estimate; leaves the model in eval mode and its gradients and buffers untouched."""
        x_adv = self.adversarial_batch(model, epoch)
        params = [p for p in model.parameters() if p.requires_grad]
        generator = torch.Generator(self.device).manual_seed(self._seed(epoch))
        with torch.enable_grad():
            loss = F.cross_entropy(model(x_adv).float(), self.labels)
            samples = hutchinson_trace(loss, params, self.cfg.hessian_probes, generator).double()
        # One probe has no spread to estimate the error from.
        sem = (samples.std() / samples.numel() ** 0.5).item() if samples.numel() > 1 else None
        return {"hessian_trace": samples.mean().item(), "hessian_trace_sem": sem}
