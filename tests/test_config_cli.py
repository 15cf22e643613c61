"""Config presets, flag precedence, fractions, validation, and the CLI's help and exit codes."""

import argparse
import dataclasses
import json
import os
import random
import re

import pytest
import torch

from fastsglr import config as C
from fastsglr import models
from fastsglr.cli import build_parser, config_from_args, main
from fastsglr.data.beton import ffcv_available
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
    assert (paper.r, paper.temperature, paper.ema_momentum, paper.lam, paper.ema_init, paper.sglr_warmup) == (
        0.2,
        1.5,
        0.9,
        0.2,
        "onehot",
        0,
    )
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


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--temperature", "0"),
        ("--ema-momentum", "1"),
        ("--lam", "-0.1"),
        ("--batch-size", "0"),
        ("--epochs", "0"),
        ("--eps", "2"),
        ("--method", "fgsm"),
        ("--labels", "mixup"),
        ("--schedule", "step"),
    ],
)
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


# --- the flags are generated from Config ---

NOT_OPTIONS = {"preset"}  # written by --preset (apply_preset), not a flag of its own


def _train_flags():
    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    return {a.dest: a for a in train._actions if a.option_strings}


def _approx(value):
    return value if isinstance(value, str) else pytest.approx(value, rel=1e-12)


def _shown_default(action):
    m = re.search(r"\(default: ([^)]*)\)$", action.help)
    return m and m.group(1)


def test_every_config_field_a_user_may_set_has_a_matching_flag():
    flags = _train_flags()
    for f in dataclasses.fields(C.Config):
        if f.name in NOT_OPTIONS:
            assert f.name not in C.OPTIONS and not f.metadata
            continue
        assert f.name in C.OPTIONS, f"Config.{f.name} has no help, so no flag: make it with config.option(...)"
        action = flags[f.name]
        assert action.option_strings == ["--" + f.name.replace("_", "-")]
        assert action.default is argparse.SUPPRESS  # only typed flags override the preset and the defaults
        assert isinstance(f.default, f.type) and not (f.type is int and isinstance(f.default, bool))
        if f.type is bool:
            assert action.nargs == 0 and action.const is True and f.default is False
            continue
        assert action.type is (f.metadata["parse"] or f.type)
        choices = f.metadata["choices"]
        assert all(c in action.help for c in choices)
        assert f.default in (*choices, "") if choices else not isinstance(f.default, str) or f.default == ""
        shown = _shown_default(action)
        if f.metadata["omitted"] or f.default == "":  # the machine decides, or the help says what none means
            assert shown == (f.metadata["omitted"] or None)
        else:  # the default shown, typed back as the flag, is the field's default
            assert getattr(_cfg(action.option_strings[0], shown), f.name) == _approx(f.default)


def test_options_choices_are_what_validation_accepts():
    for name, f in C.OPTIONS.items():
        if f.metadata["choices"]:
            with pytest.raises(UsageError) as exc:
                _cfg("--" + name.replace("_", "-"), "no-such-" + name)
            assert str(exc.value).endswith("choose one of " + ", ".join(f.metadata["choices"]))
    assert C.OPTIONS["model"].metadata["choices"] == tuple(models._REGISTRY)


def test_train_help_lists_each_presets_values(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    lines = {
        line.split(": ", 1)[0].strip(): line.split(": ", 1)[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("  ") and line.strip().split(":")[0] in C.PRESETS
    }
    assert set(lines) == set(C.PRESETS)
    for name, overrides in C.PRESETS.items():
        typed = _cfg(*lines[name].split())  # the line, typed as flags, is the preset
        assert {k: getattr(typed, k) for k in overrides} == {k: _approx(v) for k, v in overrides.items()}
        assert len(lines[name].split()) == 2 * len(overrides)


def test_each_flag_sets_its_field():
    rng = random.Random()
    for name, f in C.OPTIONS.items():
        flag, extra, partner = "--" + name.replace("_", "-"), [], ""
        if f.type is bool:
            args = build_parser().parse_args(["train", flag])
            assert getattr(args, name) is True and not any(hasattr(args, n) for n in C.OPTIONS if n != name)
            continue
        if f.metadata["choices"]:
            unavailable = {"cuda": not torch.cuda.is_available(), "ffcv": not ffcv_available()}
            values = [c for c in f.metadata["choices"] if not unavailable.get(c)]
            value = text = rng.choice(values)
            extra = {"precision": ["--engine", "fast"], "method": ["--labels", "hard"]}.get(name, [])
        elif f.type is str:
            value = text = f"dir{rng.randrange(10**6)}"
            if name.startswith("kd_teacher_"):  # KD takes both teachers and hard labels (config._check_combination)
                partner = ({"kd_teacher_adv", "kd_teacher_std"} - {name}).pop()
                extra = ["--labels", "hard", "--" + partner.replace("_", "-"), "partner"]
        elif f.type is int:
            value = rng.randrange(1, 50)
            text = str(value)
        elif f.type is tuple:
            value = tuple(sorted(rng.randrange(1, 255) for _ in range(3)))
            text, value = ",".join(f"{k}/255" for k in value), tuple(k / 255 for k in value)
        elif f.metadata["parse"] is C.parse_fraction:
            k = rng.randrange(1, 255)
            text, value = f"{k}/255", k / 255
        else:
            value = round(rng.uniform(0.01, 0.99), 4)
            text = str(value)
        cfg = _cfg(*extra, flag, text)
        expected = os.path.abspath(value) if name in ("data", "kd_teacher_adv", "kd_teacher_std") else value
        assert getattr(cfg, name) == _approx(expected), name
        others = {
            n: getattr(cfg, n)
            for n in C.OPTIONS
            if n not in (name, "data", "out", "engine", "precision", "loader", "device", partner)
        }
        assert others == {n: getattr(_cfg(*(extra[:2] if partner else extra)), n) for n in others}
