"""Config presets, flag precedence, fractions, validation, and the CLI's help and exit codes."""
import json

import pytest
import torch

from fastsglr import config as C
from fastsglr.cli import build_parser, config_from_args, main
from fastsglr.errors import UsageError
from fastsglr.labels import build_label_strategy


def _cfg(*flags):
    return config_from_args(build_parser().parse_args(["train", "--data", "d", "--out", "o", *flags]))


def test_defaults_are_the_papers_settings():
    cfg = _cfg()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (0.1, 0.9, 5e-4, 128, 200)
    assert [round(m * cfg.epochs) for m in cfg.milestones] == [100, 150]
    assert (cfg.eps, cfg.step_size, cfg.attack_steps) == (8 / 255, 2 / 255, 10)
    assert cfg.resolved_eval_step_size == pytest.approx(2 / 255)


def test_presets_and_explicit_flags_override_them():
    paper = _cfg("--preset", "paper")
    assert (paper.r, paper.temperature, paper.ema_momentum, paper.lam, paper.ema_init, paper.sglr_warmup) == \
        (0.2, 1.5, 0.9, 0.2, "onehot", 0)
    code = _cfg("--preset", "sgls-code")
    assert (code.r, code.temperature) == (1.0, 1.0)
    # The authors' main_adv.py runs epochs 1..200 and their SGLS loss is plain CE while epoch < es, es = 90 in
    # run_sgls.sh; ours counts epochs from 0: the same epochs must train on hard labels.
    hard_epochs_theirs = [e - 1 for e in range(1, 201) if e < 90]
    strategy = build_label_strategy(code, torch.arange(10) % 3, 3)
    hard_epochs_ours = []
    for epoch in range(200):
        strategy.start_epoch(epoch)
        if not strategy.needs_clean_logits:
            hard_epochs_ours.append(epoch)
    assert hard_epochs_ours == hard_epochs_theirs
    mixed = _cfg("--preset", "sgls-code", "--r", "0.5", "--eps", "4/255")
    assert mixed.r == 0.5 and mixed.temperature == 1.0 and mixed.eps == pytest.approx(4 / 255)


def test_fractions_and_config_round_trip():
    assert C.parse_fraction("8/255") == pytest.approx(8 / 255)
    assert C.parse_fraction("0.5") == 0.5
    with pytest.raises(UsageError, match="not a number"):
        C.parse_fraction("eight")
    cfg = _cfg("--preset", "demo", "--seed", "7")
    assert C.Config.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(UsageError, match="unknown config keys"):
        C.Config.from_dict({"nope": 1})


@pytest.mark.parametrize("flag,value", [("--temperature", "0"), ("--ema-momentum", "1"), ("--lam", "-0.1"),
                                        ("--batch-size", "0"), ("--epochs", "0"), ("--eps", "2"),
                                        ("--method", "fgsm"), ("--labels", "mixup"), ("--schedule", "step")])
def test_out_of_range_values_are_rejected(flag, value):
    with pytest.raises(UsageError) as exc:
        _cfg(flag, value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("command", [[], ["prepare"], ["train"], ["eval"], ["reproduce"], ["bench"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0 and "usage: fastsglr" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "fastsglr", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "prepare" in out.stdout and "train" in out.stdout
