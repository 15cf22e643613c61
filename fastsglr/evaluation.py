"""Per-epoch test evaluation: clean and PGD-20 accuracy, and calibration (ECE) on clean and adversarial inputs."""
import torch

from .attacks import pgd
from .metrics import CalibrationMeter


def evaluate(model, loader, *, eps, step_size, steps, device):
    """The model in eval mode against an l-inf PGD with random start (CE objective); returns percentages."""
    model.eval()
    clean, adv = CalibrationMeter(device), CalibrationMeter(device)
    for batch in loader:
        with torch.no_grad():
            clean.update(model(batch.images), batch.labels)
        x_adv = pgd(model, batch.images, batch.labels, eps=eps, step_size=step_size, steps=steps)
        with torch.no_grad():
            adv.update(model(x_adv), batch.labels)
    c, a = clean.read(), adv.read()
    return {"test_clean_acc": c["acc"], "test_pgd_acc": a["acc"], "test_ece_clean": c["ece"], "test_ece_adv": a["ece"]}
