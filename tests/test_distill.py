"""KD-AT (distill.py), SWA (swa.py) and --method standard against independent computations: Chen et al.'s code
(VITA-Group/Alleviate-Robust-Overfitting utils.py: loss_fn_kd, train_epoch_adv_dual_teacher, moving_average,
bn_update; main_std.py's train_epoch) written out here in float64, torch.optim.swa_utils, and hand-computed
BatchNorm statistics; the fast engine against the reference; KD-AT and KD-SWA runs through the CLI on digits."""

import copy
import dataclasses
import hashlib
import io
import json

import pytest
import torch
import torch.nn.functional as F
from test_awp import tiny_bn_net  # the same tiny conv-BN net with perturbed BN statistics, K classes
from torch.optim.swa_utils import AveragedModel, update_bn

from fastsglr import evaluation
from fastsglr.attacks import pgd
from fastsglr.checkpoint import MAGIC, load_checkpoint, load_model
from fastsglr.cli import main
from fastsglr.config import Config
from fastsglr.data.loaders import Batch
from fastsglr.distill import Distillation, kd_loss
from fastsglr.engine.fast import FastEngine, FastOptions
from fastsglr.engine.reference import ReferenceEngine
from fastsglr.labels import build_label_strategy
from fastsglr.metrics import TrainMeter
from fastsglr.optim import build_optimizer
from fastsglr.swa import WeightAverage, recompute_bn, reported_weights

N, K, B = 24, 4, 8
CFG = Config(eps=16 / 255, step_size=4 / 255, attack_steps=2, labels="hard", lr=0.1, kd_temperature=2.0)


def make_batch(seed, size=B):
    gen = torch.Generator().manual_seed(seed)
    train_labels = torch.randint(0, K, (N,), generator=gen)
    index = torch.randperm(N, generator=gen)[:size]
    images = torch.rand(size, 3, 6, 6, generator=gen)
    return train_labels, Batch(images, train_labels[index], train_labels[index], index)


def loss_fn_kd(scores, target_scores, T):
    """Chen et al.'s utils.py loss_fn_kd, literally (equal class counts)."""
    log_scores_norm = F.log_softmax(scores / T, dim=1)
    targets_norm = F.softmax(target_scores / T, dim=1)
    kd_loss_unnorm = -(targets_norm * log_scores_norm)
    kd_loss_unnorm = kd_loss_unnorm.sum(dim=1)
    kd_loss_unnorm = kd_loss_unnorm.mean()
    return kd_loss_unnorm * T**2


def teachers(seed):
    return tiny_bn_net(seed + 100).eval(), tiny_bn_net(seed + 200).eval()


def one_step(cfg, seed, engine="reference"):
    """Our engine's first iteration on a fresh tiny model; returns the model after it and the step's loss."""
    train_labels, batch = make_batch(seed)
    model = tiny_bn_net(seed)
    strategy = build_label_strategy(cfg, train_labels, K)
    optimizer = build_optimizer(model.parameters(), cfg)
    distill = Distillation(*teachers(seed), cfg) if cfg.kd_teacher_adv else None
    if engine == "reference":
        eng = ReferenceEngine(model, optimizer, strategy, cfg, distill=distill)
    else:
        eng = FastEngine(model, optimizer, strategy, cfg, FastOptions(precision="fp32", compile=True), distill=distill)
    strategy.start_epoch(0)
    model.train()
    torch.manual_seed(seed + 1)
    loss = eng.step(batch, TrainMeter("cpu"), 0)
    return model, loss


def sgd_step(model, loss, cfg):
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt.zero_grad()
    loss.backward()
    opt.step()


def kd_reference(cfg, seed):
    """Chen et al.'s train_epoch_adv_dual_teacher for one batch in float64: x_adv from the student's own PGD (ours,
    same random start: the attack is not what this checks), student train-mode forward, both teachers in eval mode
    on x_adv, coef_ce * CE + coef_kd1 * KD(std teacher) + coef_kd2 * KD(adv teacher), SGD(momentum, wd)."""
    _, batch = make_batch(seed)
    model = tiny_bn_net(seed)
    x, y = batch.images, batch.labels
    model.eval()
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        model(x)  # our clean eval forward before the attack (draws no random numbers)
    x_adv = pgd(model, x, y, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps).double()
    model = model.double().train()
    teacher_adv, teacher_std = (t.double() for t in teachers(seed))
    output_adv = model(x_adv)
    with torch.no_grad():
        target_score1, target_score2 = teacher_std(x_adv), teacher_adv(x_adv)
    T = cfg.kd_temperature
    loss = (
        F.cross_entropy(output_adv, y) * cfg.kd_ce
        + loss_fn_kd(output_adv, target_score1, T) * cfg.kd_std
        + loss_fn_kd(output_adv, target_score2, T) * cfg.kd_adv
    )
    sgd_step(model, loss, cfg)
    return model, loss


def kd_cfg(**kw):
    return dataclasses.replace(CFG, kd_teacher_adv="adv", kd_teacher_std="std", **kw)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.5])
def test_kd_loss_matches_chen_et_al_in_float64(T):
    student, teacher = torch.randn(B, K) * 3, torch.randn(B, K) * 3
    ours = kd_loss(student, teacher, torch.tensor(T, dtype=torch.float64))
    assert ours.dtype == torch.float32
    reference = loss_fn_kd(student.double(), teacher.double(), T)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-6, atol=1e-6)
    # T^2 * soft-target CE = T^2 * (KL + teacher entropy): same gradient as KL, larger value
    kl = F.kl_div(F.log_softmax(student.double() / T, 1), F.softmax(teacher.double() / T, 1), reduction="batchmean")
    assert reference > kl * T**2


@pytest.mark.parametrize("coefs", [(0.3, 0.6, 0.1, 2.0), (1.0, 0.25, 0.5, 3.0)])
def test_kd_step_matches_chen_et_al_in_float64(coefs):
    ce, adv, std, T = coefs
    cfg = kd_cfg(kd_ce=ce, kd_adv=adv, kd_std=std, kd_temperature=T)
    seed = int(torch.randint(0, 10_000, ()))
    ours, loss = one_step(cfg, seed)
    reference, reference_loss = kd_reference(cfg, seed)
    torch.testing.assert_close(loss.double(), reference_loss.detach(), rtol=1e-5, atol=1e-6)
    for key, value in reference.state_dict().items():  # weights after the update and BN statistics
        torch.testing.assert_close(ours.state_dict()[key].double(), value.double(), rtol=1e-5, atol=1e-6, msg=key)
    start = tiny_bn_net(seed).state_dict()
    assert not torch.allclose(ours.state_dict()["4.weight"], start["4.weight"])


def test_standard_step_is_plain_ce_sgd_on_clean_inputs():
    cfg = dataclasses.replace(CFG, method="standard")
    seed = int(torch.randint(0, 10_000, ()))
    ours, loss = one_step(cfg, seed)
    _, batch = make_batch(seed)
    reference = tiny_bn_net(seed).double().train()
    reference_loss = F.cross_entropy(reference(batch.images.double()), batch.labels)
    sgd_step(reference, reference_loss, cfg)
    torch.testing.assert_close(loss.double(), reference_loss.detach(), rtol=1e-5, atol=1e-6)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key].double(), value.double(), rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("method", ["pgd-at", "standard"])
def test_compiled_fast_engine_matches_reference(method):
    # No sign steps (compiled and eager input gradients differ by rounding, which can flip a sign): this compares KD.
    cfg = kd_cfg(attack_steps=0) if method == "pgd-at" else dataclasses.replace(CFG, method=method)
    seed = int(torch.randint(0, 10_000, ()))
    (reference, ref_loss), (fast, fast_loss) = one_step(cfg, seed), one_step(cfg, seed, engine="fast")
    torch.testing.assert_close(fast_loss, ref_loss, rtol=1e-5, atol=1e-6)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("method", ["pgd-at", "standard"])
def test_kd_and_standard_iterations_compile_as_one_graph(method):
    from fastsglr.engine.census import take_census
    from fastsglr.models import build_model

    cfg = Config(model="smallcnn", method=method, labels="hard", attack_steps=1, batch_size=4)
    distill = None
    if method == "pgd-at":
        cfg = dataclasses.replace(cfg, kd_teacher_adv="adv", kd_teacher_std="std")
        distill = Distillation(build_model("smallcnn", 10, 1, 8), build_model("smallcnn", 10, 1, 8), cfg)
    census = take_census(cfg, in_channels=1, image_size=8, distill=distill)
    assert (census.graphs, census.graph_breaks) == (1, 0)
    weight_nodes = sum(n for mask, n in census.conv_backward_masks.items() if mask[1])
    assert weight_nodes == census.convolutions  # one forward with grad: the teachers' are without


# ------------------------------------------------------------------------------------------------ SWA


def batches(sizes, seed):
    gen = torch.Generator().manual_seed(seed)
    return [Batch(torch.rand(b, 3, 6, 6, generator=gen), None, None, None) for b in sizes]


def test_swa_average_and_bn_statistics_match_torch_swa_utils():
    """Two averages of three models: the parameters and the recomputed BN statistics match AveragedModel +
    update_bn (equal batches, where Chen et al.'s b / (seen + b) momentum and update_bn's cumulative mean agree)."""
    seed = int(torch.randint(0, 10_000, ()))
    models = [tiny_bn_net(seed + i) for i in range(3)]
    loader = batches([B] * 4, seed)
    average = WeightAverage(Config(swa=True, swa_start=0.0, epochs=10))
    reference = AveragedModel(models[0])
    for model in models:
        before = copy.deepcopy(model.state_dict())
        average.update(model, loader)
        reference.update_parameters(model)  # its first call copies, as Chen et al.'s 1 / (0 + 1)
        for key, value in before.items():  # the training model keeps its own weights and statistics
            assert torch.equal(model.state_dict()[key], value), key
    update_bn([b.images for b in loader], reference)
    assert average.averaged == 3
    for key, value in reference.module.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(average.state[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_recompute_bn_weights_batches_by_their_sizes_as_chen_et_al():
    """Unequal batches: the running mean and var end as the image-weighted means of the batches' mean and unbiased
    var (utils.py bn_update: momentum b / (n + b)), computed here by hand in float64."""
    seed = int(torch.randint(0, 10_000, ()))
    net = tiny_bn_net(seed)
    loader = batches([8, 3, 5], seed)
    recompute_bn(net.eval(), loader)
    assert not net.training and net[1].momentum == 0.1  # mode and momentum restored
    conv = net[0].double()
    outputs = [conv(b.images.double()).transpose(0, 1).flatten(1) for b in loader]  # channels x values
    sizes = torch.tensor([float(len(b.images)) for b in loader], dtype=torch.float64)
    mean = sum(n * o.mean(1) for n, o in zip(sizes, outputs)) / sizes.sum()
    var = sum(n * o.var(1, unbiased=True) for n, o in zip(sizes, outputs)) / sizes.sum()
    torch.testing.assert_close(net[1].running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var.double(), var, rtol=1e-5, atol=1e-6)


def test_swa_is_due_from_its_start_every_k_epochs():
    average = WeightAverage(Config(swa=True, swa_start=0.275, swa_every=3, epochs=200))
    assert [e for e in range(50, 70) if average.due(e)] == [55, 58, 61, 64, 67]


# ------------------------------------------------------------------------------------------------ the CLI on digits

QUICK = ["--preset", "demo", "--attack-steps", "1", "--engine", "reference", "--loader", "device", "--device", "cpu"]


def _train(data, out, *extra):
    return main(["train", "--data", data, "--out", str(out), *QUICK, "--eval-subset", "50", *extra])


@pytest.fixture(scope="module")
def teacher_runs(digits_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    assert _train(digits_dir, root / "std", "--method", "standard", "--labels", "hard", "--epochs", "2") == 0
    assert _train(digits_dir, root / "adv", "--labels", "hard", "--epochs", "1") == 0
    return str(root / "adv"), str(root / "std" / "best.pt")


def test_standard_run_keeps_its_best_clean_accuracy(teacher_runs):
    rows = [json.loads(line) for line in open(teacher_runs[1].replace("best.pt", "metrics.jsonl"))]
    best = max(rows, key=lambda r: (r["test_clean_acc"], -r["epoch"]))
    assert load_checkpoint(teacher_runs[1])["epoch"] == best["epoch"]


def test_kd_at_run_through_the_cli(digits_dir, tmp_path, teacher_runs):
    adv, std = teacher_runs
    kd = ["--labels", "hard", "--kd-teacher-adv", adv, "--kd-teacher-std", std, "--epochs", "2"]
    assert _train(digits_dir, tmp_path / "kd", *kd) == 0
    summary = json.load(open(tmp_path / "kd" / "summary.json"))
    assert 0 <= summary["test_pgd_acc"]["final"] <= 100
    assert load_checkpoint(str(tmp_path / "kd" / "final.pt"))["swa"] is None


def test_kd_swa_run_reports_the_average_and_resumes_exactly(digits_dir, tmp_path, teacher_runs, monkeypatch):
    """KD-SWA over 3 epochs, averaging from epoch 2: the reported model is the average, best counts averaged epochs
    only; a run killed in epoch 3's evaluation and resumed ends bit for bit as the uninterrupted one."""
    adv, std = teacher_runs
    kd_swa = ["--labels", "hard", "--kd-teacher-adv", adv, "--kd-teacher-std", std, "--epochs", "3", "--swa"]
    kd_swa += ["--swa-start", "0.4"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _train(digits_dir, whole, *kd_swa) == 0
    rows = [json.loads(line) for line in open(whole / "metrics.jsonl")]
    assert [r["swa_averaged"] for r in rows] == [0, 1, 2]
    summary = json.load(open(whole / "summary.json"))
    assert summary["best_epoch"] in (2, 3)
    final = load_checkpoint(str(whole / "final.pt"))
    assert final["swa"]["averaged"] == 2
    reported = load_model(str(whole / "final.pt")).state_dict()
    for key, value in final["swa"]["state"].items():
        assert torch.equal(reported[key], value), key
    assert not torch.equal(final["swa"]["state"]["linear.weight"], final["model"]["linear.weight"])

    calls, real_evaluate = {"n": 0}, evaluation.evaluate

    def evaluate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", evaluate_then_die)
    assert _train(digits_dir, cut, *kd_swa) == 130
    monkeypatch.setattr(evaluation, "evaluate", real_evaluate)
    assert main(["train", "--resume", str(cut)]) == 0
    resumed = load_checkpoint(str(cut / "final.pt"))
    assert resumed["swa"]["averaged"] == 2
    for part in ("model", "swa"):
        a = final[part] if part == "model" else final["swa"]["state"]
        b = resumed[part] if part == "model" else resumed["swa"]["state"]
        for key in a:
            assert torch.equal(a[key], b[key]), (part, key)


def test_a_format_4_checkpoint_reads_as_a_run_without_weight_averaging(tmp_path):
    """The previous format lacks "swa" only: its runs still load, with their trained weights."""
    net = tiny_bn_net(int(torch.randint(0, 10_000, ())))
    buffer = io.BytesIO()
    torch.save({"model": net.state_dict(), "epoch": 1}, buffer)
    payload = buffer.getvalue()
    path = tmp_path / "v4.pt"
    path.write_bytes(b"%s 4 %s\n" % (MAGIC, hashlib.sha256(payload).hexdigest().encode()) + payload)
    loaded = load_checkpoint(str(path))
    assert "swa" not in loaded
    for key, value in reported_weights(loaded).items():
        assert torch.equal(value, net.state_dict()[key]), key


@pytest.mark.parametrize("method", ["pgd-at", "standard"])
def test_compiled_kd_and_standard_iterations_hold_no_syncing_op(method, monkeypatch):
    """The ATen graph of the whole compiled iteration, teachers' forwards included, scanned op by op for anything
    that syncs with the host (as test_fast_engine does for the other methods)."""
    from test_fast_engine import NoHostSync, record_compiled_aten_ops

    targets = record_compiled_aten_ops(monkeypatch)
    cfg = kd_cfg() if method == "pgd-at" else dataclasses.replace(CFG, method=method)
    one_step(cfg, int(torch.randint(0, 10_000, ())), engine="fast")
    assert torch.ops.aten.convolution_backward.default in targets
    if method == "pgd-at":  # the two teachers' softened targets are part of the graph
        assert targets.count(torch.ops.aten._softmax.default) >= 2
    assert not [t for t in targets if t in NoHostSync.SYNCING]
