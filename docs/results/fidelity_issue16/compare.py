import csv, sys
from collections import defaultdict
import numpy as np
def load(p):
    rows = list(csv.DictReader(open(p)))
    out = defaultdict(list)
    for r in rows: out[r["method"]].append(r)
    return out
def mean(rs, k):
    v = [float(r[k]) for r in rs if r.get(k, "") != ""]
    return np.mean(v) if v else float("nan")
for p in sys.argv[1:]:
    print("==", p)
    d = load(p)
    cols = ["far_success_min", "far_success_final", "full_success_final", "close_success_final",
            "far_success_min_stochastic", "far_success_final_stochastic", "full_success_final_stochastic",
            "far_success_min_deterministic", "far_success_final_deterministic", "full_success_final_deterministic"]
    print(f"{'method':>20} " + " ".join(f"{c.replace('_success','').replace('stochastic','sto').replace('deterministic','det'):>14}" for c in cols))
    for m, rs in d.items():
        print(f"{m:>20} " + " ".join(f"{mean(rs, c):>14.3f}" for c in cols))
