"""The second stage, measured: learning to rank from simulated clicks (with and without
inverse-propensity weighting) against rules + MMR, and the "no confident match" rejector.

Every number the chapters quote about these two comes from this script (issue 17, parts 3 and 4).
Seeded and deterministic on one machine; a few minutes on 2 shared cores, most of it loading the
encoder and, on a cold cache, embedding the 400 non-product images.

    .venv/bin/python benchmarks/eval_second_stage.py            # both parts
    .venv/bin/python benchmarks/eval_second_stage.py --only ltr # or --only rejection
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from image_search import RerankConfig, Reranker, encode_paths, load_catalog, load_encoder
from image_search.ltr import (
    candidate_lists,
    compare_rankings,
    fit_ranker,
    ltr_experiment,
    rerank_lists,
    simulate_click_log,
)
from image_search.rejection import (
    NON_PRODUCT_KINDS,
    evaluate_rejector,
    fit_rejector,
    rejection_curve,
    rejection_experiment,
)

from _common import header, table

RULES = RerankConfig(
    boosts=(("in_stock", "True", 0.02),), mmr_lambda=0.7
)  # chapter 09's rules + MMR


def learning_to_rank(catalog, encoder) -> None:
    t0 = time.perf_counter()
    x = ltr_experiment(catalog, encoder)
    print(
        f"ltr_experiment (candidates, click log, two fits): {time.perf_counter() - t0:.1f} s wall"
    )
    log, cm = x.log, x.click_model
    share = log.clicks.sum(axis=0) / log.clicks.sum()
    print(
        f"\nClick log: {len(x.train)} train customer photos x {log.sessions} sessions = "
        f"{len(x.train) * log.sessions:,} sessions shown the ANN top {log.k}; "
        f"{log.clicks.sum() / (len(x.train) * log.sessions):.3f} clicks per session; click model "
        f"eta={cm.eta}, attractiveness (other, same type, exact) = {cm.attractiveness}"
    )
    table(
        pd.DataFrame(
            {
                "rank": np.arange(1, log.k + 1),
                "share of clicks": share,
                "P(examine)": cm.examination(log.k),
                "exact products shown": (x.train.grades[:, : log.k] == 2).mean(axis=0),
                "same type shown": (x.train.grades[:, : log.k] == 1).mean(axis=0),
            }
        ),
        "L1. Where the clicks fall (train log)",
    )
    weights = pd.DataFrame(
        {"feature": x.ipw.features, "naive (raw clicks)": x.naive.weights, "IPW": x.ipw.weights}
    )
    table(weights, "L2. Learned weights (standardised features; log-odds of a click once seen)")

    configs = {
        "ANN order": RerankConfig(),
        "rules + MMR (λ=0.7)": RULES,
        "learned, naive clicks": RerankConfig(model=x.naive),
        "learned, IPW": RerankConfig(model=x.ipw),
        "learned IPW + rules + MMR (λ=0.7)": RerankConfig(
            model=x.ipw, boosts=RULES.boosts, mmr_lambda=0.7
        ),
    }
    t0 = time.perf_counter()
    rankings = {name: rerank_lists(Reranker(catalog, cfg), x.test) for name, cfg in configs.items()}
    compared = compare_rankings(x.test, rankings, cm, reference="rules + MMR (λ=0.7)")
    table(
        compared.reset_index(),
        f"L3. Second stages on the {len(x.test)} held-out (test-product) customer photos "
        "(NDCG@10 graded 2 exact / 1 same type; clicks: 20 fresh simulated sessions per photo, "
        "same random numbers for every row; Δ: paired, 95% bootstrap over products)",
        floatfmt=".4f",
    )
    print(f"re-ranking and scoring: {time.perf_counter() - t0:.1f} s wall")

    rows = []
    for lam in (1.0, 0.9, 0.8, 0.7, 0.5):
        cfgs = {
            "rules + MMR": RerankConfig(boosts=RULES.boosts, mmr_lambda=lam),
            "IPW + rules + MMR": RerankConfig(model=x.ipw, boosts=RULES.boosts, mmr_lambda=lam),
        }
        t = compare_rankings(
            x.test, {n: rerank_lists(Reranker(catalog, c), x.test) for n, c in cfgs.items()}, cm
        )
        rows += [
            {
                "λ": lam,
                "base": n,
                "NDCG@10": r["NDCG@10"],
                "clicks/session": r["clicks/session"],
                "diversity": r["diversity"],
            }
            for n, r in t.iterrows()
        ]
    table(
        pd.DataFrame(rows),
        "L4. Relevance vs diversity: MMR's λ on the ANN scores and on the IPW ranker's "
        "(λ acts on each one's own score scale)",
        floatfmt=".4f",
    )

    # the vote temperature, chosen on train products only: fit on one half, validate on the other
    train = catalog.split("train")
    half = set(np.random.default_rng(0).permutation([p.id for p in train])[: len(train) // 2])
    index = encode_paths(encoder, [catalog.icon_path(i) for i in catalog.ids], progress=False)
    paths, truth = catalog.queries("train")
    emb = encode_paths(encoder, paths, progress=False)
    a = np.array([t in half for t in truth])
    rows = []
    for tau in (0.005, 0.01, 0.02, 0.05, 1.0):
        fit_l = candidate_lists(
            catalog, emb[a], [t for t, m in zip(truth, a) if m], index, catalog.ids, temperature=tau
        )
        val_l = candidate_lists(
            catalog,
            emb[~a],
            [t for t, m in zip(truth, a) if not m],
            index,
            catalog.ids,
            temperature=tau,
        )
        sim = simulate_click_log(fit_l, cm, seed=0)
        models = {"naive": fit_ranker(fit_l, sim), "IPW": fit_ranker(fit_l, sim, cm)}
        ranked = {
            n: rerank_lists(Reranker(catalog, RerankConfig(model=m)), val_l)
            for n, m in models.items()
        }
        t = compare_rankings(val_l, ranked, cm)
        rows.append(
            {
                "vote temperature τ": tau,
                "naive NDCG@10": t.loc["naive", "NDCG@10"],
                "IPW NDCG@10": t.loc["IPW", "NDCG@10"],
            }
        )
    table(
        pd.DataFrame(rows),
        f"L5. The vote temperature, chosen on train products only ({int(a.sum())} photos of half "
        f"of them for the log, {int((~a).sum())} of the other half to validate; the package "
        "default is 0.02)",
        floatfmt=".4f",
    )

    rows = []
    for sessions in (1, 3, 10, 20, 50):
        for seed in (0, 1, 2):
            sim = simulate_click_log(x.train, cm, sessions=sessions, seed=seed)
            models = {"naive": fit_ranker(x.train, sim), "IPW": fit_ranker(x.train, sim, cm)}
            ranked = {
                n: rerank_lists(Reranker(catalog, RerankConfig(model=m)), x.test)
                for n, m in models.items()
            }
            t = compare_rankings(x.test, ranked, cm)
            rows.append(
                {
                    "sessions per photo": sessions,
                    "seed": seed,
                    "clicks in log": int(sim.clicks.sum()),
                    "naive NDCG@10": t.loc["naive", "NDCG@10"],
                    "IPW NDCG@10": t.loc["IPW", "NDCG@10"],
                }
            )
    df = (
        pd.DataFrame(rows)
        .groupby("sessions per photo")
        .agg(
            clicks=("clicks in log", "mean"),
            naive_mean=("naive NDCG@10", "mean"),
            naive_sd=("naive NDCG@10", "std"),
            ipw_mean=("IPW NDCG@10", "mean"),
            ipw_sd=("IPW NDCG@10", "std"),
        )
        .reset_index()
    )
    table(
        df,
        "L6. How many clicks: test NDCG@10 by log size (mean and sd over 3 click-log seeds)",
        floatfmt=".4f",
    )


def rejection(catalog, encoder) -> None:
    t0 = time.perf_counter()
    x = rejection_experiment(catalog, encoder)
    print(
        f"\nrejection_experiment: {time.perf_counter() - t0:.1f} s wall (embeds 400 non-product "
        "images on a cold cache)"
    )
    counts = pd.DataFrame(
        {
            "fit (train products)": pd.Series(x.fit.kinds).value_counts(),
            "test (test products)": pd.Series(x.test.kinds).value_counts(),
        }
    )
    counts = counts.reindex(["catalog", "removed product", *NON_PRODUCT_KINDS]).reset_index(
        names="query kind"
    )
    table(
        counts,
        f"R1. Queries: {len(x.indexed)} products indexed (icons), {len(x.removed)} held out "
        "(30% of each split); non-product images of another seed and other photos' backgrounds for "
        "the test",
    )

    fit_in, fit_out = x.fit.scores[x.fit.in_catalog], x.fit.scores[~x.fit.in_catalog]
    rejectors = {
        "threshold on top-1 cosine": ("top1",),
        "top-1 + margin": ("top1", "margin"),
        "classifier: top-1, margin, entropy": ("top1", "margin", "entropy"),
    }
    rows = []
    for name, feats in rejectors.items():
        r = fit_rejector(fit_in, fit_out, feats, max_false_rejection=0.05, encoder=encoder.name)
        rep = evaluate_rejector(r, x.test)
        rows.append(
            {
                "rejector": name,
                "false rejection": rep.false_rejection,
                "recall": rep.recall,
                "precision": rep.precision,
                "AUC": rep.auc,
                **{f"recall: {k}": v for k, v in rep.recall_by_kind.items()},
                "R@1 in-catalogue": rep.recall_at_1,
                "R@1 accepted": rep.accepted_recall_at_1,
            }
        )
    table(
        pd.DataFrame(rows),
        f"R2. Rejectors calibrated to reject 5% of in-catalogue train queries, on the "
        f"{len(x.test)} test queries ({int((~x.test.in_catalog).sum())} out of catalogue)",
        floatfmt=".3f",
    )

    rows = []
    for name, feats in rejectors.items():
        rep = evaluate_rejector(fit_rejector(fit_in, fit_out, feats), x.test)
        rows.append({"rejector": name, **{f"AUC vs {k}": v for k, v in rep.auc_by_kind.items()}})
    table(
        pd.DataFrame(rows),
        "R3. Separability per kind of out-of-catalogue query (AUC against in-catalogue test "
        "queries; 0.5 = chance)",
        floatfmt=".3f",
    )

    rows = []
    for target in (0.01, 0.02, 0.05, 0.10, 0.20):
        r = fit_rejector(fit_in, fit_out, max_false_rejection=target)
        rep = evaluate_rejector(r, x.test)
        rows.append(
            {
                "target false rejection (train)": target,
                "threshold (top-1 cosine)": r.threshold,
                "false rejection (test)": rep.false_rejection,
                "recall (test)": rep.recall,
                "recall: removed product": rep.recall_by_kind["removed product"],
                "precision (test)": rep.precision,
                "R@1 accepted": rep.accepted_recall_at_1,
            }
        )
    table(
        pd.DataFrame(rows),
        "R4. Calibration: the target on train queries against what test queries get "
        "(top-1 threshold)",
        floatfmt=".3f",
    )

    default = fit_rejector(fit_in, fit_out, encoder=encoder.name)
    curve = rejection_curve(default, x.test)
    picks = [
        curve.iloc[int(np.argmin(np.abs(curve["false_rejection"] - f)))]
        for f in (0, 0.01, 0.05, 0.1, 0.2, 0.5)
    ]
    table(
        pd.DataFrame(picks).reset_index(drop=True),
        "R5. Points of the test curve (top-1 threshold)",
        floatfmt=".3f",
    )
    print(
        "\nThe default rejector (top-1 threshold, 5% target), as JSON for the searcher:\n"
        + default.to_json()
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["ltr", "rejection"], help="run one part")
    args = parser.parse_args(argv)
    header("The second stage: learning to rank and 'no confident match'")
    t0 = time.perf_counter()
    catalog, encoder = load_catalog(), load_encoder()
    print(
        f"catalog and default encoder ({encoder.name}) loaded in {time.perf_counter() - t0:.1f} s"
    )
    if args.only in (None, "ltr"):
        learning_to_rank(catalog, encoder)
    if args.only in (None, "rejection"):
        rejection(catalog, encoder)
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
