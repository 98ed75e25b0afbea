"""No measured number is typed by hand in the chapters (issue 11): a decimal or a percentage in
``book/*.md`` prose must come from a ``{glue:text}`` role, a citation, or the allow-list below
(design constants, versions, numbers quoted from papers)."""

from __future__ import annotations

import re
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"

# Decimals and percentages that are not measurements here: (file, token) -> why.
ENCODER_2026_12_01 = "benchmarks/bench_encoder.py, 2026-12-01 run (benchmarks/README.md B.1), named"
ANN_2026_12_01 = "bench_ann.py / bench_query.py at 1M, 2026-12-01 (benchmarks/README.md B), named"
ALLOWED: dict[tuple[str, str], str] = {
    ("12_scaling.md", "0.95"): "a recall target (issue 18), not a measurement",
    ("12_scaling.md", "0.85"): "a recall target (issue 18), not a measurement",
    (
        "01_ml_objectives.md",
        "0.9",
    ): "click model parameter (click probability of the exact product), a design choice",
    (
        "01_ml_objectives.md",
        "0.2",
    ): "click model parameter (click probability of a same-type product), a design choice",
    (
        "01_ml_objectives.md",
        "0.02",
    ): "click model parameter (click probability of any other product), a design choice",
    ("05_feature_engineering.md", "0.3"): "a concatenation weight the notebook sets (a setting)",
    ("05_feature_engineering.md", "0.7"): "a concatenation weight the notebook sets (a setting)",
    ("06_model_development.md", "0.02"): "the tolerance declared for trained-model numbers",
    ("07_evaluation.md", "0.05"): "the significance level alpha of the tests (a setting)",
    ("04_data_preparation.md", "3.0"): "the licence's version, CC-BY-3.0",
    ("04_data_preparation.md", "30%"): "design constant: the share of each room held out for test",
    ("04_data_preparation.md", "0.927"): "design constant: the near-duplicate cosine threshold",
    ("13_personalization.md", "0.8"): "design constant: the click model's position-bias exponent",
    ("13_personalization.md", "0.3"): "design constant: the light blend's user weight",
    ("13_personalization.md", "0.7"): "design constant: MMR's lambda",
    ("13_personalization.md", "95%"): "the confidence level of the bootstrap interval",
    ("10_challenges.md", "0.25"): "a corruption strength the notebook sets (design constant)",
    ("10_challenges.md", "0.85"): "a de-duplication threshold the notebook sets (design constant)",
    ("10_challenges.md", "0.9"): "a de-duplication threshold the notebook sets (design constant)",
    ("08_model_hosting.md", "6.4"): "arithmetic of the example: 100 M vectors x 64-byte PQ codes",
    (
        "08_model_hosting.md",
        "0.975",
    ): "benchmarks/bench_ann.py at 1M vectors (benchmarks/README.md), named in the sentence",
    (
        "08_model_hosting.md",
        "0.75",
    ): "benchmarks/bench_ann.py at 1M vectors (benchmarks/README.md), named in the sentence",
    (
        "08_model_hosting.md",
        "0.76",
    ): "benchmarks/bench_ann.py at 1M vectors (benchmarks/README.md), named in the sentence",
    (
        "08_model_hosting.md",
        "0.821",
    ): "benchmarks/bench_encoder.py table 2 (benchmarks/README.md), named in the sentence",
    (
        "08_model_hosting.md",
        "0.819",
    ): "benchmarks/bench_encoder.py table 2 (benchmarks/README.md), named in the sentence",
    (
        "08_model_hosting.md",
        "0.045",
    ): "benchmarks/bench_encoder.py table 2 (benchmarks/README.md), named in the sentence",
    ("08_model_hosting.md", "1.55"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "1.71"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "0.05"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "0.15"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "3.20"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "4.26"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "0.38"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "0.50"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "0.800"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "5.96"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "9.28"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "2.95"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "4.65"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "0.195"): ENCODER_2026_12_01,
    ("08_model_hosting.md", "0.971"): ANN_2026_12_01,
    ("08_model_hosting.md", "0.557"): ANN_2026_12_01,
    ("08_model_hosting.md", "0.947"): ANN_2026_12_01,
    ("08_model_hosting.md", "0.562"): ANN_2026_12_01,
    ("08_model_hosting.md", "17.3"): ANN_2026_12_01,
    ("08_model_hosting.md", "0.95"): "the recall bar the ANN benchmark reports against (a target)",
}
# Tokens allowed in every chapter: design constants and conventions, not measurements.
ALLOWED_ANYWHERE = {"0.5", "1.0", "0.0", "100%"}

NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?!\w|\.\d)%?|(?<![\w.])\d+%")
CODE = re.compile(r"```.*?```|~~~.*?~~~|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]+\$", re.S)
ROLE = re.compile(r"\{[\w:-]+\}`[^`]*`")
SKIP = re.compile(r"https?://\S+|\(\S+\.(?:md|ipynb|html)\S*\)")
CITE = re.compile(r"\{cite[:\w]*\}`[^`]*`")


def hand_typed(text: str) -> list[str]:
    """The measured-looking numbers in ``text`` outside code, roles, links and cited lines."""
    text = CITE.sub(" CITED ", text)
    text = ROLE.sub(" ", text)
    text = CODE.sub(" ", text)
    text = SKIP.sub(" ", text)
    found = []
    for line in text.splitlines():
        if " CITED " in line:  # a number quoted from a cited source
            continue
        found += [m.group(0) for m in NUMBER.finditer(line)]
    return found


def test_the_detector_sees_typed_numbers_and_ignores_glued_ones():
    assert hand_typed("Recall is 0.565 and p95 53.8 ms, 12% of it.") == ["0.565", "53.8", "12%"]
    assert hand_typed("Recall is {glue:text}`../notebooks/07.ipynb::r1:.3f`.") == []
    assert hand_typed("Run `python 3.11` or\n```\nx = 0.25\n```\n") == []
    assert hand_typed("HNSW reaches 0.95 {cite}`malkov2018`.") == []
    assert hand_typed("version 2.14.1 and 10.0.0.1") == []
    assert hand_typed("It reaches 0.8.") == ["0.8"]  # a number that ends a sentence


def test_no_measured_number_is_typed_by_hand_in_the_chapters():
    bad = []
    for md in sorted(BOOK.glob("*.md")):
        for token in hand_typed(md.read_text(encoding="utf-8")):
            if token in ALLOWED_ANYWHERE or (md.name, token) in ALLOWED:
                continue
            bad.append(f"{md.name}: {token}")
    assert not bad, (
        "numbers typed by hand (glue them, cite them, or allow-list them with a reason in "
        "tests/test_book_numbers.py):\n" + "\n".join(bad)
    )
