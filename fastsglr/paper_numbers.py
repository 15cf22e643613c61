"""The paper's numbers ("Soften to Defend", CVPR 2024), transcribed as printed, for `fastsglr reproduce`.

Only cells the paper prints are here; a cell it does not have (e.g. Table B.2 at 40% noise) is simply absent, and
the rendered table leaves it empty. Accuracies are percentages; ECE (Table B.1) is a fraction, as in the paper.
Best / final / diff triples keep the printed diff even where it disagrees with best - final beyond rounding
(two cells of Table 3, listed in ``PRINTED_DIFF_MISMATCHES``).
"""

# Tables 2 and 3: dataset -> row -> metric -> (best, final, diff). ResNet-18, l-inf eps 8/255.
TABLE2 = {
    "cifar10": {
        "PGD-AT": {"natural": (80.7, 82.4, -1.6), "pgd20": (50.7, 41.4, 9.3), "autoattack": (47.7, 40.2, 7.5)},
        "PGD-AT+LS": {"natural": (82.2, 84.3, -2.1), "pgd20": (53.7, 48.9, 4.8), "autoattack": (48.4, 44.6, 3.9)},
        "PGD-AT+TE": {"natural": (82.4, 82.8, -0.4), "pgd20": (55.8, 54.8, 1.0), "autoattack": (50.6, 49.6, 1.0)},
        "PGD-AT+SGLR": {"natural": (82.9, 83.0, -0.1), "pgd20": (56.4, 55.9, 0.5), "autoattack": (51.2, 50.2, 1.0)},
        "AWP": {"natural": (82.1, 81.1, 1.0), "pgd20": (55.4, 54.8, 0.6), "autoattack": (50.6, 49.9, 0.7)},
        "KD-AT": {"natural": (82.9, 85.5, -2.6), "pgd20": (54.6, 53.2, 1.4), "autoattack": (49.1, 48.8, 0.3)},
        "KD-SWA": {"natural": (84.7, 85.4, -0.8), "pgd20": (54.9, 53.8, 1.1), "autoattack": (49.3, 49.4, -0.1)},
    },
}

TABLE3 = {
    "cifar10": {
        "AT": {"natural": (80.7, 82.4, -1.6), "pgd20": (50.7, 41.4, 9.3), "autoattack": (47.7, 40.2, 7.5)},
        "AT+SGLR": {"natural": (82.9, 83.0, 0.1), "pgd20": (56.4, 55.9, 0.5), "autoattack": (51.2, 50.2, 1.0)},
        "TRADES": {"natural": (81.2, 82.5, -1.3), "pgd20": (53.3, 50.3, 3.0), "autoattack": (49.0, 46.8, 2.2)},
        "TRADES+SGLR": {"natural": (82.2, 83.3, -0.9), "pgd20": (55.8, 55.4, 0.4), "autoattack": (50.7, 50.1, 0.6)},
    },
    "cifar100": {
        "AT": {"natural": (53.9, 53.6, 0.3), "pgd20": (27.3, 19.8, 7.5), "autoattack": (22.7, 18.1, 4.6)},
        "AT+SGLR": {"natural": (56.9, 56.6, 0.3), "pgd20": (34.5, 34.3, 0.2), "autoattack": (27.5, 26.7, 0.8)},
        "TRADES": {"natural": (57.9, 56.3, 1.7), "pgd20": (29.9, 27.7, 2.2), "autoattack": (24.6, 23.4, 1.2)},
        "TRADES+SGLR": {"natural": (57.1, 57.4, -0.3), "pgd20": (33.9, 33.2, 0.7), "autoattack": (27.1, 26.4, 0.7)},
    },
}

# Table B.4 (CIFAR-10, PGD-AT vs PGD-AT+SGLR), the WRN-34-10 block (printed "ResNet-34-10"): dataset -> row -> metric
# -> (best, final, diff). Its ResNet-18 block repeats Table 3's AT and AT+SGLR rows.
TABLE_B4 = {
    "cifar10": {
        "AT": {"natural": (87.6, 86.4, 1.2), "pgd20": (55.9, 50.2, 5.7), "autoattack": (51.2, 45.6, 5.6)},
        "AT+SGLR": {"natural": (87.4, 87.2, 0.2), "pgd20": (59.5, 58.0, 1.5), "autoattack": (54.3, 52.3, 2.0)},
    },
}

# Printed diffs that are not best - final up to rounding: (table, dataset, row, metric).
PRINTED_DIFF_MISMATCHES = {
    ("table3", "cifar10", "AT+SGLR", "natural"),  # printed 0.1; Table 2 prints the same row's diff as -0.1
    ("table3", "cifar10", "TRADES+SGLR", "natural"),  # printed -0.9; 82.2 - 83.3 = -1.1
}

# Table 4 (CIFAR-10, PGD-AT+SGLR): temperature T -> {"SA": clean, "RA": robust} for r in TABLE4_R.
TABLE4_R = (0.0, 0.2, 0.4, 0.6, 0.8)
TABLE4_T = (1.0, 1.5, 2.0)
TABLE4 = {
    1.0: {"SA": (82.4, 83.5, 82.8, 78.5, 69.1), "RA": (43.7, 54.9, 54.2, 52.7, 48.3)},
    1.5: {"SA": (83.2, 82.9, 83.1, 80.6, 74.5), "RA": (45.7, 55.9, 53.2, 50.4, 49.8)},
    2.0: {"SA": (82.9, 84.4, 83.9, 78.5, 75.6), "RA": (45.8, 53.9, 52.0, 50.9, 47.8)},
}

# Table B.2 (CIFAR-10, symmetric label noise): label strategy -> noise rate -> the printed value. The paper prints
# no 40% column (its Fig. 4 uses 40%).
NOISE = {
    "hard": {0.0: 26.8, 0.2: 37.8, 0.6: 62.1, 0.8: 81.6},
    "ls": {0.0: 26.4, 0.2: 35.5, 0.6: 59.5, 0.8: 80.4},
    "sglr": {0.0: 25.5, 0.2: 33.8, 0.6: 51.3, 0.8: 78.9},
}

# Table B.1 (CIFAR-10): ECE (fraction) on PGD-10 (white-box) and Square (black-box) adversarial examples,
# dataset -> row -> attack -> (best, final, diff).
CALIBRATION = {
    "cifar10": {
        "AT": {"pgd10": (0.18, 0.43, -0.25), "square": (0.07, 0.39, -0.32)},
        "AT+SGLR": {"pgd10": (0.11, 0.10, 0.01), "square": (0.20, 0.22, -0.02)},
    },
}

# Table B.3 (CIFAR-10): accuracy of ResNet-18 targets on black-box examples crafted on a source trained with vanilla
# PGD-AT, dataset -> source -> row -> attack -> (best, final, diff) of the target. PGD-10 and CW-inf on the source.
TRANSFER = {
    "cifar10": {
        "ResNet-34": {
            "AT": {"pgd10": (63.9, 64.9, -1.0), "cw": (72.5, 70.1, 2.4)},
            "AT+SGLR": {"pgd10": (64.0, 64.1, -0.1), "cw": (72.7, 72.9, -0.2)},
        },
        "ResNet-50": {
            "AT": {"pgd10": (81.3, 82.7, -1.4), "cw": (83.1, 81.6, 1.5)},
            "AT+SGLR": {"pgd10": (80.9, 80.9, 0.0), "cw": (83.0, 82.8, 0.2)},
        },
    },
}
