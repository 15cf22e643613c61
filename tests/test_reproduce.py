"""`fastsglr reproduce` with digits standing in for CIFAR-10: table2's grid trains, the rendered table puts the
paper's numbers beside the measured ones, a second call resumes instead of retraining, runs are shared between
tables, `reproduce noise` writes noisy copies, Table B.2 and Fig. 4 end to end, Table B.3's transfer examples are
crafted on its sources, and the paper's numbers are transcribed consistently."""

import dataclasses
import glob
import json
import os
import re

import numpy as np
import pytest
import torch

import fastsglr.reproduce as reproduce_module
import fastsglr.robustness as robustness
from fastsglr import load_model, paper_numbers
from fastsglr.checkpoint import load_checkpoint
from fastsglr.cli import main
from fastsglr.config import PRESETS
from fastsglr.data.datadir import read_data_dir, sha256
from fastsglr.data.loaders import read_split
from fastsglr.errors import UsageError
from fastsglr.report import plot_noise_memorization
from fastsglr.reproduce import TABLES, grid, reproduce, tables
from fastsglr.reproduce.tables import Measured, Run
from fastsglr.robustness import AttackSettings, load_test_images
from fastsglr.trainer import read_history

SMALL = AttackSettings(apgd_steps=10, fab_steps=10, square_queries=100, check_images=64)
QUICK = dict(epochs=2, eval_subset=64, settings=SMALL, device="cpu", log=lambda *_: None)
CELL = re.compile(r"^(-?\d+\.\d) / (-?\d+\.\d) \(([+-]\d+\.\d)\)$")


@pytest.fixture(scope="module")
def table2(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    return out, reproduce("table2", digits_dir, str(out), **QUICK)


def _rows(markdown):
    """Row label -> cell strings of the rendered markdown table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith(("| PGD-AT", "| AWP", "| KD-")):
            rows[cells[0]] = cells[1:]
    return rows


def test_table2_puts_paper_numbers_beside_measured(table2, digits_dir):
    out, report = table2
    markdown = (out / "table2.md").read_text()
    assert markdown == report["markdown"]
    rows = _rows(markdown)
    assert list(rows) == [
        "PGD-AT",
        "PGD-AT+LS",
        "PGD-AT+TE",
        "PGD-AT+SGLR (paper)",
        "PGD-AT+SGLR (sgls-code)",
        "AWP",
        "KD-AT",
        "KD-SWA",
    ]
    (te_run,) = glob.glob(str(out / "runs" / "*" / "pgd-at_te*" / "config.json"))
    te = json.loads(open(te_run).read())  # Dong et al.'s TE: weight 300, ramp from 90 to 150 of 200 epochs
    assert (te["te_weight"], te["te_start"], te["te_end"]) == (300.0, 0.45, 0.75) and "train_te.py" in markdown
    for label, cells in rows.items():
        numbers = paper_numbers.TABLE2["cifar10"][label.split(" (")[0]]
        # natural, PGD-20, PGD-20 (SGLS), AutoAttack: both PGD-20s beside the paper's one PGD-20
        printed = [v for metric in ("natural", "pgd20", "pgd20", "autoattack") for v in numbers[metric]]
        assert len(cells) == 12
        for cell, paper_value in zip(cells, printed):
            measured, shown_paper, diff = CELL.match(cell).groups()
            assert float(shown_paper) == paper_value
            assert float(diff) == pytest.approx(float(measured) - paper_value, abs=0.11)

    # The measured natural accuracy is the final model's on the first 64 test images, recomputed here.
    images, labels, _ = load_test_images(digits_dir, 64, "cpu")
    for run in report["runs"]:
        model = load_model(os.path.join(run["run_dir"], "final.pt"))
        with torch.no_grad():
            acc = 100.0 * (model(images).argmax(1) == labels).double().mean().item()
        natural_final = float(rows[run["row"]][1].split(" / ")[0])
        assert natural_final == pytest.approx(acc, abs=0.05)
        config = json.loads(open(os.path.join(run["run_dir"], "config.json")).read())
        assert config["epochs"] == 2 and config["model"] == "convmlp" and config["eps"] == pytest.approx(4 / 255)
        assert config["preset"] == "standin" and config["augment"] == "none"  # digits is an 8x8 CPU stand-in
    configs = [json.load(open(os.path.join(r["run_dir"], "config.json"))) for r in report["runs"]]
    assert [c["labels"] for c in configs] == ["hard", "ls", "te", "sglr", "sglr", "hard", "hard", "hard"]
    assert [c["awp_gamma"] for c in configs] == [0.0] * 5 + [0.01, 0.0, 0.0]
    # KD (Chen et al.): the table's PGD-AT run and a standard-trained source as teachers; KD-SWA reports the average
    pgd_at, (standard,) = report["runs"][0]["run_dir"], report["sources"].values()
    for c in configs[6:]:
        assert (c["kd_teacher_adv"], c["kd_teacher_std"]) == (os.path.abspath(pgd_at), os.path.dirname(standard))
        assert (c["attack_bn_mode"], c["kd_ce"], c["kd_adv"], c["kd_std"], c["kd_temperature"]) == (
            "train",
            0.3,
            0.6,
            0.1,
            2.0,
        )
    assert json.load(open(os.path.join(os.path.dirname(standard), "config.json")))["method"] == "standard"
    assert [c["swa"] for c in configs[6:]] == [False, True]
    kd_swa = report["runs"][7]["run_dir"]
    assert [r["swa_averaged"] for r in read_history(kd_swa)] == [0, 1]  # epoch 55 of 200 -> 1 of 2
    for which in ("best", "final"):
        assert load_checkpoint(os.path.join(kd_swa, f"{which}.pt"))["swa"]["averaged"] == 1
    # the paper's SGLR and the released code's: its warm-up, 89 of 200 epochs, scaled to 2 epochs like the milestones
    assert [(c["r"], c["temperature"], c["sglr_warmup"]) for c in configs[3:5]] == [(0.2, 1.5, 0), (1.0, 1.0, 1)]
    assert all(r["engine"] == "reference" and r["precision"] == "fp32" for r in report["runs"])

    # AutoAttack is at least as strong as PGD-20, in every measured cell.
    for block in report["blocks"]:
        for row in block["rows"]:
            pgd_best, pgd_final, aa_best, aa_final = (row["measured"][i] for i in (3, 4, 9, 10))
            assert aa_best <= pgd_best and aa_final <= pgd_final

    assert "CIFAR-10 (measured on digits)" in markdown
    for says in (
        "digits (8x8) stands in for CIFAR-10",
        "2 training epochs",
        "first 64 test images",
        "apgd_steps 10",
        "| natural best | natural final | natural diff | PGD-20 best |",
        "PGD-20 (SGLS) best",
        "PGD-20 (SGLS): the authors' final evaluator",
        "here eps 0.0155, step 0.0015",
        "highest per-epoch test PGD-10 (steps of eps/4)",
        "Trained with: reference engine, fp32 on cpu (every run).",
        "KD-AT and KD-SWA rows as Chen et al.'s code",
        "(sgls-code): the authors' released loss",
    ):
        assert says in markdown, says
    assert os.path.getsize(out / "table2_curves.png") > 0
    assert json.loads((out / "table2.json").read_text())["blocks"] == report["blocks"]


def test_second_call_resumes_where_it_stopped(table2, digits_dir, monkeypatch):
    out, first = table2
    interrupted = first["runs"][0]["run_dir"]
    for name in ("final.pt", "summary.json"):  # as if killed after the last epoch's checkpoint
        os.remove(os.path.join(interrupted, name))
    calls = []
    real_train = grid.train

    def recording_train(cfg, **kwargs):
        calls.append((cfg.out, kwargs["resume"]))
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(grid, "train", recording_train)
    again = reproduce("table2", digits_dir, str(out), **QUICK)
    assert calls == [(interrupted, True)]
    assert again["markdown"] == first["markdown"]


def test_a_changed_setting_is_refused_not_mixed_in(table2, digits_dir):
    out, _ = table2
    with pytest.raises(UsageError, match="holds a run with other settings .*epochs 2 there vs 3 now"):
        reproduce("table2", digits_dir, str(out), **{**QUICK, "epochs": 3})


def test_grids_share_equal_runs(digits_dir, tmp_path):
    info = read_data_dir(digits_dir)
    base = grid._base_config(info, epochs=2, eval_subset=64, device="cpu", engine=None)

    def run_dirs(table):
        return [grid._run_config(base, info, run, str(tmp_path)).out for run in TABLES[table]().runs]

    table4 = run_dirs("table4")
    assert len(table4) == 15 and len(set(table4)) == 13  # the three r = 0 cells are one run
    assert run_dirs("table2")[3] in table4  # SGLR at r 0.2, T 1.5 is Table 4's cell
    assert run_dirs("table3")[:2] == run_dirs("table2")[0:4:3]  # AT and AT+SGLR (paper) on the stand-in
    assert run_dirs("table2")[4] not in table4  # the released code's SGLR is a run of its own
    noise = TABLES["noise"]().runs
    assert sorted({run.noise for run in noise}) == [0.0, 0.2, 0.4, 0.6, 0.8] and len(noise) == 15


def test_sglr_variants_and_the_papers_network(digits_dir, tmp_path):
    """--sglr picks the SGLR rows of Tables 2 and 3 (each preset's settings); a CIFAR data set trains the authors'
    ResNet-18 on raw inputs, --model overrides it; --sglr is refused for a table that runs the paper's SGLR only."""
    for sglr, variants in (("paper", ["paper"]), ("sgls-code", ["sgls-code"]), ("both", ["paper", "sgls-code"])):
        for table, rows in (("table2", ["PGD-AT+SGLR"]), ("table3", ["AT+SGLR", "TRADES+SGLR"])):
            runs = [run for run in TABLES[table](sglr).runs if "SGLR" in run.row and run.dataset == "cifar10"]
            assert [run.row for run in runs] == [f"{row} ({v})" for row in rows for v in variants]
            for run, variant in zip(runs, variants * len(rows)):
                overrides = dict(run.overrides)
                assert {k: overrides[k] for k in PRESETS[variant]} == PRESETS[variant]
    cifar = dataclasses.replace(read_data_dir(digits_dir), dataset="cifar10")
    base = grid._base_config(cifar, epochs=None, eval_subset=None, device="cpu", engine=None)
    assert (base.model, base.input_norm, base.epochs) == ("resnet18", "none", 200)
    (code_run,) = [run for run in TABLES["table2"]("sgls-code").runs if "SGLR" in run.row]
    code = grid._run_config(base, cifar, code_run, str(tmp_path))
    assert (code.sglr_warmup, code.r, code.temperature) == (89, 1.0, 1.0)
    other = grid._base_config(cifar, epochs=None, eval_subset=None, device="cpu", engine=None, model="preactresnet18")
    assert (other.model, other.input_norm) == ("preactresnet18", "none")
    with pytest.raises(UsageError, match="--sglr applies to table2, table3, wrn and overfitting only"):
        reproduce("table4", digits_dir, str(tmp_path / "t4"), sglr="both", **QUICK)
    assert not (tmp_path / "t4").exists()


def test_two_directories_of_one_data_set_are_refused(digits_dir, noisy_digits_dir, tmp_path):
    with pytest.raises(UsageError, match="two digits directories"):
        reproduce("table2", [digits_dir, noisy_digits_dir], str(tmp_path), **QUICK)


def test_noise_figure_shows_both_portions(tmp_path):
    history = [
        {"epoch": e, "train_adv_acc_untouched": 30.0 + e, "train_adv_memorized_corrupted": 5.0 + e} for e in (1, 2, 3)
    ]
    results = [
        (Run("cifar10", labels, f"{rate:.0%}", noise=rate), Measured("", history, {}))
        for labels in ("Hard Label", "Self-Guided Soft Label")
        for rate in (0.0, 0.4)
    ]
    path = tmp_path / "fig4.png"
    plot_noise_memorization(results, str(path))
    assert path.stat().st_size > 0


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def test_noise_table_end_to_end(digits_dir, tmp_path, monkeypatch):
    """`fastsglr reproduce noise` at two of Table B.2's rates, one epoch per run: each rate's noisy copy of digits
    has exactly that share of training labels changed, every run trains on its rate's copy, each cell shows the
    measured train - test robust gap beside the paper's number and the difference, and Fig. 4 gets both portions."""
    rates = (0.2, 0.6)
    monkeypatch.setattr(tables, "NOISE_RATES", rates)
    plotted = []
    real_plot = plot_noise_memorization

    plotted_rates = {}

    def recording_plot(results, path, wrong_rates):
        plotted.extend(results)
        plotted_rates.update(wrong_rates)
        real_plot(results, path, wrong_rates)

    monkeypatch.setattr(reproduce_module, "plot_noise_memorization", recording_plot)
    out = tmp_path / "noise"
    assert (
        main(
            [
                "reproduce",
                "noise",
                "--data",
                digits_dir,
                "--out",
                str(out),
                "--epochs",
                "1",
                "--eval-subset",
                "50",
                "--device",
                "cpu",
            ]
        )
        == 0
    )

    _, clean_labels, _ = read_split(read_data_dir(digits_dir), "train")
    copies = {rate: str(out / "data" / f"digits-symmetric{rate:g}") for rate in rates}
    for rate, copy in copies.items():
        info = read_data_dir(copy)
        _, labels, clean = read_split(info, "train")
        assert np.array_equal(clean, clean_labels)  # a noisy copy of the data given, clean labels kept
        changed = labels != clean  # int(rate N) labels resampled over all 10 classes: about 9 in 10 come out wrong
        assert 0.8 * int(rate * len(labels)) < changed.sum() <= int(rate * len(labels))
        assert info.noise["type"] == "symmetric" and info.noise["realised_rate"] == pytest.approx(changed.mean())
        assert f"eta {rate:.0%}: {changed.mean():.1%}" in (out / "noise.md").read_text()
        assert plotted_rates[rate] == pytest.approx(changed.mean())  # Fig. 4's titles state it too

    report = _read_json(out / "noise.json")
    markdown = (out / "noise.md").read_text()
    assert "| labels / noise | 20% | 60% |" in markdown and "CIFAR-10 (measured on digits)" in markdown
    rows = {
        cells[0]: cells[1:]
        for cells in (
            [c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("| ")
        )
    }
    runs = {(run["row"], run["noise"]): run["run_dir"] for run in report["runs"]}
    assert len(runs) == 6
    for labels, row in tables.LABEL_NAMES.items():
        for rate, cell in zip(rates, rows[row]):
            run_dir = runs[row, rate]
            assert _read_json(os.path.join(run_dir, "config.json"))["data"] == copies[rate]
            history = read_history(run_dir)
            (evaluation,) = glob.glob(os.path.join(run_dir, "eval_*.json"))  # final.pt only
            for attack, shown in (("pgd20", cell), ("pgd20-sgls", rows[f"{row} (SGLS PGD-20)"][rates.index(rate)])):
                gap = history[-1]["train_adv_acc"] - _read_json(evaluation)["attacks"][attack]["acc"]
                measured, shown_paper, diff = CELL.match(shown).groups()
                assert float(measured) == pytest.approx(gap, abs=0.051)
                assert float(shown_paper) == paper_numbers.NOISE[labels][rate]
                assert float(diff) == pytest.approx(gap - paper_numbers.NOISE[labels][rate], abs=0.051)

    assert str(out / "noise_fig4.png") in report["figures"] and os.path.getsize(out / "noise_fig4.png") > 0
    assert sorted((run.row, run.noise) for run, _ in plotted) == sorted(runs)
    for _, m in plotted:  # both portions, every epoch, with a value (the runs have noise)
        assert all(
            0 <= row[key] <= 100
            for row in m.history
            for key in ("train_adv_acc_untouched", "train_adv_memorized_corrupted")
        )


def test_transfer_table_runs(digits_dir, tmp_path):
    """Table B.3's sources are ResNet-34 / -50 trained with PGD-AT on hard labels, on digits too; its targets are
    Table 3's AT and AT+SGLR runs, each attacked from both sources."""
    info = read_data_dir(digits_dir)
    base = grid._base_config(info, epochs=2, eval_subset=64, device="cpu", engine=None)

    def configs(runs):
        return [grid._run_config(base, info, run, str(tmp_path)) for run in runs]

    spec = TABLES["transfer"]()
    sources = configs(spec.sources)
    assert [(c.model, c.method, c.labels) for c in sources] == [
        ("resnet34", "pgd-at", "hard"),
        ("resnet50", "pgd-at", "hard"),
    ]
    assert [(run.source, run.row) for run in spec.runs] == [
        (s, row) for s in ("ResNet-34", "ResNet-50") for row in ("AT", "AT+SGLR")
    ]
    table3 = [c.out for c in configs(TABLES["table3"]().runs)[:2]]
    assert [c.out for c in configs(spec.runs)] == table3 * 2


def _first_weights(model):
    return next(model.parameters()).detach().clone()


def test_transfer_table_crafts_on_its_sources(digits_dir, tmp_path, monkeypatch):
    """`fastsglr reproduce transfer --epochs 1 --eval-subset 30` on digits: every PGD-10 and CW example is crafted on
    a source's best.pt (never on a target), each cell is the transfer accuracy of the target's best.pt or final.pt
    against its block's source, beside the paper's number and the difference."""
    # ResNet-34 / -50 sources cost about 30 s / 55 s per digits epoch on 2 CPU cores: small CNNs with their own seeds
    # (independently trained, so still black-box) keep this test quick; test_transfer_table_runs checks the ResNets.
    monkeypatch.setattr(tables, "TRANSFER_SOURCES", {"ResNet-34": {"seed": 1}, "ResNet-50": {"seed": 2}})
    crafted, evaluated = [], {}
    real_pgd, real_evaluate = robustness.pgd, reproduce_module._evaluate

    def spy_pgd(model, x, y, **kwargs):
        crafted.append((_first_weights(model), kwargs["steps"], kwargs["loss"]))
        return real_pgd(model, x, y, **kwargs)

    def spy_evaluate(cfg, which, attacks, n, settings, checks, log, source):
        evaluated[cfg.out, which, source] = real_evaluate(cfg, which, attacks, n, settings, checks, log, source)
        return evaluated[cfg.out, which, source]

    monkeypatch.setattr(robustness, "pgd", spy_pgd)
    monkeypatch.setattr(reproduce_module, "_evaluate", spy_evaluate)
    out = tmp_path / "transfer"
    assert (
        main(
            [
                "reproduce",
                "transfer",
                "--data",
                digits_dir,
                "--out",
                str(out),
                "--epochs",
                "1",
                "--eval-subset",
                "30",
                "--device",
                "cpu",
            ]
        )
        == 0
    )

    report = _read_json(out / "transfer.json")
    sources = report["sources"]
    assert sorted(sources) == ["ResNet-34", "ResNet-50"]
    for name, seed in (("ResNet-34", 1), ("ResNet-50", 2)):
        config = _read_json(os.path.join(os.path.dirname(sources[name]), "config.json"))
        assert (config["labels"], config["method"], config["seed"], config["epochs"]) == ("hard", "pgd-at", seed, 1)
    targets = {run["row"]: run["run_dir"] for run in report["runs"]}
    assert set(targets) == {"AT", "AT+SGLR"} and not set(targets.values()) & {
        os.path.dirname(p) for p in sources.values()
    }

    # Crafting (PGD-10 on CE, CW) ran on the sources' best.pt only; the checks' PGD-1 / PGD-20 on the targets. At one
    # epoch a run's checkpoints are one and the same, so the weights name the run, and best.pt is the one evaluated.
    checkpoints = [
        *sources.values(),
        *(os.path.join(d, f"{which}.pt") for d in targets.values() for which in ("best", "final")),
    ]
    weights = {path: _first_weights(load_model(path)) for path in checkpoints}

    def run_of(w):
        (run_dir,) = {os.path.dirname(p) for p, v in weights.items() if torch.equal(v, w)}
        return run_dir

    on = {
        (steps, loss): {run_of(w) for w, s, lo in crafted if (s, lo) == (steps, loss)}
        for steps, loss in {(s, lo) for _, s, lo in crafted}
    }
    source_runs = {os.path.dirname(p) for p in sources.values()}
    assert on.pop((10, "ce")) == on.pop((30, "cw")) == source_runs
    assert set(on) <= {(20, "ce"), (1, "ce")} and set().union(*on.values()) == set(targets.values())

    markdown = (out / "transfer.md").read_text()
    for block, (source, path) in zip(report["blocks"], sources.items()):
        assert block["heading"] == f"CIFAR-10 (measured on digits): {source} → ResNet-18"
        assert f"## {block['heading']}" in markdown
        assert block["columns"] == [f"{a} {c}" for a in ("PGD-10", "CW-inf") for c in ("best", "final", "diff")]
        assert [row["label"] for row in block["rows"]] == ["AT", "AT+SGLR"]
        for row in block["rows"]:
            run_dir = targets[row["label"]]
            reports = [evaluated[run_dir, which, path] for which in ("best", "final")]
            for which, r in zip(("best", "final"), reports):
                assert r["sha256"] == sha256(os.path.join(run_dir, f"{which}.pt"))
                assert r["source"]["sha256"] == sha256(path)
            pgd, cw = ([r["attacks"][a]["acc"] for r in reports] for a in ("transfer-pgd10", "transfer-cw"))
            assert row["measured"] == pytest.approx([*pgd, pgd[0] - pgd[1], *cw, cw[0] - cw[1]])
            printed = paper_numbers.TRANSFER["cifar10"][source][row["label"]]
            assert row["paper"] == [*printed["pgd10"], *printed["cw"]]
            section = markdown.split(f"## {block['heading']}\n")[1].split("\n## ")[0]
            line = next(line for line in section.splitlines() if line.startswith(f"| {row['label']} |"))
            for cell, measured, paper_value in zip(line.strip("|").split("|")[1:], row["measured"], row["paper"]):
                shown, shown_paper, diff = CELL.match(cell.strip()).groups()
                assert float(shown) == pytest.approx(measured, abs=0.051) and float(shown_paper) == paper_value
                assert float(diff) == pytest.approx(measured - paper_value, abs=0.11)
    for says in (
        "digits (8x8) stands in for CIFAR-10",
        "1 training epoch per run",
        "first 30 test images",
        "source's best.pt",
    ):
        assert says in markdown


def test_paper_numbers_are_consistent():
    """Printed diffs equal best - final up to rounding (bar the two the paper misprints), and cells read off the
    paper's Tables 2-4 and B.4 (and the SGLS code's README for Table 3's final columns) agree with the transcription."""
    transfer = {f"cifar10 from {source}": rows for source, rows in paper_numbers.TRANSFER["cifar10"].items()}
    for table, by_dataset in (
        ("table2", paper_numbers.TABLE2),
        ("table3", paper_numbers.TABLE3),
        ("calibration", paper_numbers.CALIBRATION),
        ("transfer", transfer),
        ("table_b4", paper_numbers.TABLE_B4),
    ):
        for dataset, rows in by_dataset.items():
            for row, metrics in rows.items():
                for metric, (best, final, diff) in metrics.items():
                    consistent = abs(best - final - diff) <= 0.11
                    misprint = (table, dataset, row, metric) in paper_numbers.PRINTED_DIFF_MISMATCHES
                    assert consistent != misprint, (table, dataset, row, metric)
    c10 = paper_numbers.TABLE3["cifar10"]
    assert c10["AT"]["pgd20"][:2] == (50.7, 41.4) and c10["AT+SGLR"]["autoattack"][:2] == (51.2, 50.2)
    assert c10["TRADES+SGLR"]["pgd20"][:2] == (55.8, 55.4)
    assert paper_numbers.TABLE3["cifar100"]["AT+SGLR"]["pgd20"][:2] == (34.5, 34.3)
    assert paper_numbers.TABLE2["cifar10"]["PGD-AT+LS"]["pgd20"][:2] == (53.7, 48.9)
    wrn = paper_numbers.TABLE_B4["cifar10"]  # Table B.4, WRN-34-10 block
    assert wrn["AT"]["pgd20"][:2] == (55.9, 50.2) and wrn["AT+SGLR"]["autoattack"][:2] == (54.3, 52.3)
    robust = {
        (t, r): paper_numbers.TABLE4[t]["RA"][i]
        for t in paper_numbers.TABLE4_T
        for i, r in enumerate(paper_numbers.TABLE4_R)
    }
    assert max(robust, key=robust.get) == (1.5, 0.2)  # "best robust accuracy at r = 0.2, T = 1.5"


def test_wrn_table_shares_the_stand_in_runs(table2, digits_dir, tmp_path):
    """`reproduce wrn` (Table B.4) on digits: AT and both AT+SGLR variants, trained by the stand-in preset's network
    (the stand-in's network, stated in the notes), are Table 2's runs (same directory, cached evaluations), beside the
    paper's WRN-34-10 numbers; on CIFAR-10 its runs train WRN-34-10 on raw inputs, apart from Table 3's ResNet-18
    runs, and --model overrides it."""
    out, first = table2
    report = reproduce("wrn", digits_dir, str(out), **QUICK)
    table2_runs = {run["row"]: run["run_dir"] for run in first["runs"]}
    runs = {run["row"]: run["run_dir"] for run in report["runs"]}
    assert runs == {
        "AT": table2_runs["PGD-AT"],
        "AT+SGLR (paper)": table2_runs["PGD-AT+SGLR (paper)"],
        "AT+SGLR (sgls-code)": table2_runs["PGD-AT+SGLR (sgls-code)"],
    }
    (block,) = report["blocks"]
    assert block["heading"] == "CIFAR-10 (measured on digits): WRN-34-10"
    markdown = report["markdown"]
    for row in block["rows"]:
        reports = [_read_json(path) for path in sorted(glob.glob(os.path.join(runs[row["label"]], "eval_*.json")))]
        by_checkpoint = {r["sha256"]: r for r in reports}
        best, final = (by_checkpoint[sha256(os.path.join(runs[row["label"]], f"{w}.pt"))] for w in ("best", "final"))
        expected = []
        for attack in ("clean", "pgd20", "pgd20-sgls", "autoattack"):
            b, f = best["attacks"][attack]["acc"], final["attacks"][attack]["acc"]
            expected += [b, f, b - f]
        assert row["measured"] == pytest.approx(expected)
        printed = paper_numbers.TABLE_B4["cifar10"][row["label"].split(" (")[0]]
        assert row["paper"] == [v for metric in ("natural", "pgd20", "pgd20", "autoattack") for v in printed[metric]]
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {row['label']} |"))
        for cell, measured, paper_value in zip(line.strip("|").split("|")[1:], row["measured"], row["paper"]):
            shown, shown_paper, diff = CELL.match(cell.strip()).groups()
            assert float(shown) == pytest.approx(measured, abs=0.051) and float(shown_paper) == paper_value
    for says in (
        "digits (8x8) stands in for CIFAR-10: model convmlp",
        "(the paper: WRN-34-10, 8/255, random crops and flips, 200 epochs)",
        'the table prints "ResNet-34-10"',
        "`fastsglr reproduce table3`",
        "(sgls-code): the authors'",
    ):
        assert says in markdown, says

    cifar = dataclasses.replace(read_data_dir(digits_dir), dataset="cifar10")
    base = grid._base_config(cifar, epochs=None, eval_subset=None, device="cpu", engine=None)
    wrn, table3 = TABLES["wrn"](), TABLES["table3"]()
    configs = [grid._run_config(base, cifar, run, str(tmp_path), grid._network(wrn, cifar, None)) for run in wrn.runs]
    assert {(c.model, c.input_norm) for c in configs} == {("wrn34_10", "none")}
    at_resnet = grid._run_config(base, cifar, table3.runs[0], str(tmp_path))
    assert at_resnet.model == "resnet18" and at_resnet.out not in {c.out for c in configs}
    assert grid._network(wrn, cifar, "preactresnet18") == {}


def test_schedules_figure_measures_the_hessian_trace(table2, digits_dir):
    """`reproduce schedules` (Fig. B.7) on digits: PGD-AT with hard labels under the piecewise and the cosine
    schedule, each epoch's Hessian trace in metrics.jsonl with the stated number of probes; the piecewise run trains
    exactly as Table 2's PGD-AT run, which does not measure it (same weights, same per-epoch numbers); the rendered
    tables show every epoch's test PGD accuracy, gradient norm and trace, and the best / final / diff."""
    out, first = table2
    report = reproduce("schedules", digits_dir, str(out), **QUICK)
    runs = {run["row"]: run["run_dir"] for run in report["runs"]}
    assert list(runs) == ["piecewise", "cosine"]
    histories = {name: read_history(d) for name, d in runs.items()}
    for name, run_dir in runs.items():
        config = _read_json(os.path.join(run_dir, "config.json"))
        assert (config["method"], config["labels"], config["schedule"], config["hessian_probes"]) == (
            "pgd-at",
            "hard",
            name,
            tables.SCHEDULE_HESSIAN_PROBES,
        )
        assert all(np.isfinite(row["hessian_trace"]) and row["hessian_trace_sem"] > 0 for row in histories[name])
    # cosine: 0.5 lr (1 + cos(pi t)) at the epoch's last step (1347 // 64 = 21 steps per epoch)
    steps = 1347 // 64
    assert [row["lr"] for row in histories["cosine"]] == pytest.approx(
        [0.5 * 0.05 * (1 + np.cos(np.pi * (e + (steps - 1) / steps) / 2)) for e in range(2)]
    )
    assert [row["lr"] for row in histories["piecewise"]] == pytest.approx([0.05, 0.005])

    hard = next(run["run_dir"] for run in first["runs"] if run["row"] == "PGD-AT")
    assert all("hessian_trace" not in row for row in read_history(hard))
    for key in ("train_loss", "train_adv_acc", "grad_norm", "test_pgd_acc"):
        assert [row[key] for row in histories["piecewise"]] == [row[key] for row in read_history(hard)]
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            load_model(os.path.join(hard, "final.pt")).state_dict().values(),
            load_model(os.path.join(runs["piecewise"], "final.pt")).state_dict().values(),
        )
    )

    summary, per_epoch = report["blocks"]
    for row in summary["rows"]:
        accs = [r["test_pgd_acc"] for r in histories[row["label"]]]
        best = int(np.argmax(accs))
        assert row["measured"] == pytest.approx([accs[best], accs[-1], accs[best] - accs[-1], best + 1])
    assert per_epoch["columns"] == [f"{name} {m}" for name in runs for m in ("test PGD-10", "grad norm", "tr(H)")]
    for e, row in enumerate(per_epoch["rows"]):
        assert row["label"] == str(e + 1)
        assert row["measured"] == [
            histories[name][e][key] for name in runs for key in ("test_pgd_acc", "grad_norm", "hessian_trace")
        ]
        assert row["paper"] == [None] * 6
    markdown = report["markdown"]
    trace = histories["cosine"][1]["hessian_trace"]
    assert (
        f"| 2 | {histories['piecewise'][1]['test_pgd_acc']:.1f} / – |" in markdown and f"{trace:.2f} / – |" in markdown
    )
    for says in (
        f"Hutchinson's estimator with {tables.SCHEDULE_HESSIAN_PROBES} Rademacher probes",
        "Its caption names no method",
        "measured on a seeded subset of 64 test images",
    ):
        assert says in markdown, says
    assert os.path.getsize(out / "schedules_curves.png") > 0


def _history(rng, epochs, noisy):
    return [
        {
            "test_pgd_acc": float(rng.uniform(20, 60)),
            "train_adv_memorized_corrupted": float(rng.uniform(0, 90)) if noisy else None,
        }
        for _ in range(epochs)
    ]


def test_overfitting_rows_are_mean_and_sample_sd_over_seeds():
    rng = np.random.default_rng(8)
    spec = TABLES["overfitting"]()
    results = [(run, Measured("", _history(rng, 5, run.noise > 0), {})) for run in spec.runs]
    (block,) = spec.blocks(results)
    assert block.columns == ["PGD best", "PGD final", "best - final", "memorised (final epoch)"]
    rows = dict(block.rows)
    assert list(rows) == [
        f"{row}, {noise} noise"
        for row in ("PGD-AT", "PGD-AT+SGLR (paper)", "PGD-AT+SGLR (sgls-code)")
        for noise in ("0%", "40%")
    ]
    for label, cells in rows.items():
        histories = [m.history for run, m in results if f"{run.row}, {run.noise:.0%} noise" == label]
        assert len(histories) == 3  # one per seed
        pgd = np.array([[e["test_pgd_acc"] for e in h] for h in histories])
        per_seed = [pgd.max(1), pgd[:, -1], pgd.max(1) - pgd[:, -1]]
        if "40%" in label:
            per_seed.append(np.array([h[-1]["train_adv_memorized_corrupted"] for h in histories]))
        else:
            assert cells[3] == (None, None)  # no corrupted labels to memorise
        for (spread, paper_value), values in zip(cells, per_seed):
            assert paper_value is None
            assert spread.mean == pytest.approx(values.mean()) and spread.sd == pytest.approx(values.std(ddof=1))
            assert spread.values == pytest.approx(values)


def test_overfitting_table_end_to_end_on_small_synthetic_images(tmp_path):
    """`reproduce overfitting --sglr paper` on 8x8 synthetic data: twelve runs (hard labels and the paper's SGLR x
    clean / 40% noise x three seeds) trained with the stand-in preset, rendered as mean ± sd; the JSON's numbers are
    the runs' own histories."""
    data = str(tmp_path / "syn8")
    args = ["--dataset", "synthetic", "--synthetic-size", "8", "--synthetic-train", "256", "--synthetic-test", "64"]
    assert main(["prepare", *args, "--out", data]) == 0
    out = str(tmp_path / "out")
    report = reproduce("overfitting", data, out, epochs=2, device="cpu", sglr="paper", log=lambda *_: None)
    assert len(report["runs"]) == 12 and len({r["run_dir"] for r in report["runs"]}) == 12
    configs = [json.load(open(os.path.join(r["run_dir"], "config.json"))) for r in report["runs"]]
    assert {(c["labels"], c["seed"], r["noise"]) for c, r in zip(configs, report["runs"])} == {
        (labels, seed, noise) for labels in ("hard", "sglr") for seed in (0, 1, 2) for noise in (0.0, 0.4)
    }
    for c in configs:
        assert (c["preset"], c["model"], c["augment"], c["epochs"]) == ("standin", "convmlp", "none", 2)
        assert c["eps"] == pytest.approx(4 / 255) and c["method"] == "pgd-at"
    (block,) = report["blocks"]
    for row in block["rows"]:
        row_runs = [r for r in report["runs"] if f"{r['row']}, {r['noise']:.0%} noise" == row["label"]]
        finals = [read_history(r["run_dir"])[-1]["test_pgd_acc"] for r in row_runs]
        assert row["measured"][1]["mean"] == pytest.approx(np.mean(finals))
        assert row["measured"][1]["sd"] == pytest.approx(np.std(finals, ddof=1))
        line = next(line for line in report["markdown"].splitlines() if line.startswith(f"| {row['label']} |"))
        assert f"{np.mean(finals):.1f} ± {np.std(finals, ddof=1):.1f}" in line
    assert "mean ± sample standard deviation over the seeds" in report["markdown"]
    assert "synthetic (8x8) stands in for CIFAR-10: model convmlp" in report["markdown"]
    assert "Realised wrong-label rates: eta 40%" in report["markdown"]
    assert (
        "The per-epoch test accuracy is under PGD-10 (steps of eps/4), from a uniform random start."
        in report["markdown"]
    )
