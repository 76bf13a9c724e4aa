"""BG/NBD and Gamma-Gamma with the `lifetimes` package, timed from the
transactions (a DataFrame in memory) to fitted parameters, as its
documentation does it:

  summary_data_from_transaction_data(freq="D") -> recency and T in weeks
  -> BetaGeoFitter().fit -> GammaGammaFitter().fit on repeat customers

Repeat purchases count per distinct day and monetary value is the mean of
the repeat days' spend (the first day left out), as the service does.

--transactions: the benchmark's CSV (member, day as days since
1970-01-01, amount_minor), fitted once. --cdnow: CDNOW_sample.txt,
calibration end 1997-09-30, fitted --rounds times (the median counts).

Prints one JSON line.
"""

import argparse
import statistics
import time

import lifetimes
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data

from common import emit, hwm_kib, log, reset_peak, rss_kib


def fit(transactions, end):
    """Summary and both fits; phase times in seconds and the parameters."""
    t0 = time.perf_counter()
    summary = summary_data_from_transaction_data(
        transactions,
        "customer",
        "date",
        monetary_value_col="amount",
        observation_period_end=end,
        freq="D",
    )
    summary["recency"] = summary["recency"] / 7.0
    summary["T"] = summary["T"] / 7.0
    t1 = time.perf_counter()
    bg = BetaGeoFitter()
    bg.fit(summary["frequency"], summary["recency"], summary["T"])
    t2 = time.perf_counter()
    repeat = summary[summary["frequency"] > 0]
    gg = GammaGammaFitter()
    gg.fit(repeat["frequency"], repeat["monetary_value"])
    t3 = time.perf_counter()
    return {
        "customers": len(summary),
        "spend_customers": len(repeat),
        "summary_seconds": t1 - t0,
        "bg_seconds": t2 - t1,
        "gg_seconds": t3 - t2,
        "seconds": t3 - t0,
        "bg": {k: float(v) for k, v in bg.params_.items()},
        "gg": {k: float(v) for k, v in gg.params_.items()},
    }


def load_benchmark(path):
    df = pd.read_csv(
        path, dtype={"member": "int64", "day": "int64", "amount_minor": "int64"}
    )
    return pd.DataFrame(
        {
            "customer": df["member"],
            "date": pd.to_datetime(df["day"], unit="D"),
            "amount": df["amount_minor"] / 100.0,
        }
    )


def load_cdnow(path):
    df = pd.read_csv(
        path,
        sep=r"\s+",
        header=None,
        names=["master", "customer", "date", "cds", "amount"],
        dtype={"date": str},
    )
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return df[["customer", "date", "amount"]]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--transactions")
    source.add_argument("--cdnow")
    ap.add_argument("--end", required=True, help="calibration end, YYYY-MM-DD")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    started = time.perf_counter()
    if args.cdnow:
        transactions = load_cdnow(args.cdnow)
    else:
        transactions = load_benchmark(args.transactions)
    load_s = time.perf_counter() - started
    log(f"lifetimes {lifetimes.__version__}: {len(transactions)} transactions "
        f"loaded in {load_s:.1f} s; fitting {args.rounds} time(s) ...")

    runs = []
    peaks = []
    for _ in range(max(1, args.rounds)):
        reset = reset_peak()
        before = rss_kib()
        runs.append(fit(transactions, args.end))
        peaks.append({"rss_before_kib": before, "peak_kib": hwm_kib() if reset else None})
        log(f"  {runs[-1]['seconds']:.3f} s (summary {runs[-1]['summary_seconds']:.3f}, "
            f"BG/NBD {runs[-1]['bg_seconds']:.3f}, Gamma-Gamma {runs[-1]['gg_seconds']:.3f})")
    median = statistics.median(r["seconds"] for r in runs)
    chosen = min(range(len(runs)), key=lambda i: abs(runs[i]["seconds"] - median))
    result = dict(runs[chosen])
    result.update(peaks[chosen])
    result["median_seconds"] = median
    result["rounds"] = [r["seconds"] for r in runs]
    result["transactions"] = len(transactions)
    result["load_seconds"] = load_s
    result["lifetimes_version"] = lifetimes.__version__
    result["pandas_version"] = pd.__version__
    emit(result)


if __name__ == "__main__":
    main()
