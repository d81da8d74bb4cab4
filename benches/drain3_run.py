"""Drain3 (PyPI `drain3`) with the masking and settings of its example configuration
(examples/drain3.ini in the drain3 repository), for `cargo bench --bench logs`.

  python drain3_run.py ids < lines      -> one cluster id per input line (for grouping accuracy)
  python drain3_run.py speed FILE       -> "lines seconds peak_rss_kb" for mining FILE
"""
import resource
import sys
import time

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

MASKING = [
    (r"((?<=[^A-Za-z0-9])|^)(([0-9a-f]{2,}:){3,}([0-9a-f]{2,}))((?=[^A-Za-z0-9])|$)", "ID"),
    (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})((?=[^A-Za-z0-9])|$)", "IP"),
    (r"((?<=[^A-Za-z0-9])|^)([0-9a-f]{6,} ?){3,}((?=[^A-Za-z0-9])|$)", "SEQ"),
    (r"((?<=[^A-Za-z0-9])|^)([0-9A-F]{4} ?){4,}((?=[^A-Za-z0-9])|$)", "SEQ"),
    (r"((?<=[^A-Za-z0-9])|^)(0x[a-f0-9A-F]+)((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+)((?=[^A-Za-z0-9])|$)", "NUM"),
    (r"(?<=executed cmd )(\".+?\")", "CMD"),
]


def miner():
    c = TemplateMinerConfig()
    c.masking_instructions = [MaskingInstruction(p, m) for p, m in MASKING]
    c.mask_prefix, c.mask_suffix = "<:", ":>"
    c.drain_sim_th = 0.4
    c.drain_depth = 4
    c.drain_max_children = 100
    c.drain_max_clusters = 1024
    c.drain_extra_delimiters = ["_"]
    c.profiling_enabled = False
    return TemplateMiner(config=c)


if sys.argv[1] == "ids":
    m = miner()
    out = [str(m.add_log_message(line.rstrip("\n"))["cluster_id"]) for line in sys.stdin]
    print("\n".join(out))
else:
    m = miner()
    n = 0
    t = time.perf_counter()
    with open(sys.argv[2], encoding="utf-8", errors="replace") as f:
        for line in f:
            m.add_log_message(line.rstrip("\n"))
            n += 1
    took = time.perf_counter() - t
    print(n, took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
