"""Per-epoch test evaluation: clean and PGD-20 accuracy, and calibration (ECE) on clean and adversarial inputs."""

from fastsglr.kernels import PLAIN_OPS

from .engine.iteration import eval_step
from .metrics import CalibrationMeter, evaluation_row


def evaluate(model, loader, *, eps, step_size, steps, device, ops=PLAIN_OPS):
    """The model in eval mode against an l-inf PGD with random start (CE objective, steps by the op set ``ops``);
    returns percentages."""
    model.eval()
    clean, adv = CalibrationMeter(device), CalibrationMeter(device)
    for batch in loader:
        eval_step(model, batch.images, batch.labels, clean, adv, eps=eps, step_size=step_size, steps=steps, ops=ops)
    return evaluation_row(clean, adv)
