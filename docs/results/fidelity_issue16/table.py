import csv, sys
from collections import defaultdict
import numpy as np
def load(p):
    out = defaultdict(list)
    for r in csv.DictReader(open(p)): out[r["method"]].append(r)
    return out
def m(rs, k):
    v = [float(r[k]) for r in rs if r.get(k, "") != ""]
    return f"{np.mean(v):.2f}" if v else "-"
def trip(rs, suf=""):
    return " / ".join(m(rs, f"{c}{suf}") for c in ("far_success_min", "far_success_final", "full_success_final"))
kind = sys.argv[1]
if kind == "fisher":
    a, b = load("toy_ewc_pretanh/summary.csv"), load("toy_ewc_squashed/summary.csv")
    print("| method | pre_tanh Fisher | squashed Fisher (CW, default) |\n|---|---|---|")
    for k in a: print(f"| {k} | {trip(a[k])} | {trip(b[k])} |")
if kind == "modes":
    a = load("toy_after/summary.csv")
    print("| method | stochastic (eval/*) | deterministic |\n|---|---|---|")
    for k in a: print(f"| {k} | {trip(a[k], '_stochastic')} | {trip(a[k], '_deterministic')} |")
if kind == "beforeafter":
    a, b = load(sys.argv[2]), load(sys.argv[3])
    print("| method | before (deterministic) | after, deterministic | after, stochastic |\n|---|---|---|---|")
    for k in b:
        print(f"| {k} | {trip(a[k]) if k in a else '-'} | {trip(b[k], '_deterministic')} | {trip(b[k], '_stochastic')} |")
