"""Issue 13's memory item: a calibrated `ggq convert` of bench/make_big_checkpoint.py's 1.1B checkpoint
(target: peak RSS <= 2 GB), timed against llama.cpp's three steps on the same machine:
convert_hf_to_gguf.py --outtype f16, llama-imatrix -f calibration.txt -c 512, llama-quantize --imatrix.

    /work/main/.venv/bin/python -P bench/convert_calibrated_big.py [--chunks N] [--rss-limit-gb 17] [--skip-llamacpp|--skip-ggq]

Every command runs under `/usr/bin/time -v` (peak RSS = its "Maximum resident set size", the child's
ru_maxrss: resident pages, mmapped checkpoint pages included). --chunks N limits both calibrations to the
first N chunks of 512 tokens (default: all, as llama-imatrix). A watchdog kills a command whose RSS
passes --rss-limit-gb (the machine is shared) and the row says so. Writes section convert_calibrated_big.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script under -P

from bench.llamacpp import convert_script, tool  # noqa: E402
from bench.reference_files import CALIBRATION, PYTHON, REF  # noqa: E402
from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402

GGQ = Path(sys.executable).parent / "ggq"
BIG = REF.parent / "big-1.1b"
WORK = REF.parent / "calibrated-big"


def _rss_kb(pid: int) -> int:
    """RSS of pid and its descendants (kB), from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for t in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return total


def _watch(proc: subprocess.Popen, limit_kb: int, state: dict, done: threading.Event) -> None:
    while not done.wait(0.2):
        rss = _rss_kb(proc.pid)
        state["peak_kb"] = max(state.get("peak_kb", 0), rss)
        if rss > limit_kb:
            state["killed"] = True
            try:  # the tool (nice execs it: /usr/bin/time's only child), then /usr/bin/time
                for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                    os.kill(int(child), 9)
            except (OSError, ValueError):
                pass
            proc.kill()
            return


def timed(cmd: list, log: Path, limit_gb: float) -> dict:
    """Run cmd under /usr/bin/time -v at low priority: wall s, user+sys s, peak RSS MiB, killed."""
    full = ["/usr/bin/time", "-v", "nice", "-n", "5", *map(str, cmd)]
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT)
        state, done = {}, threading.Event()
        watcher = threading.Thread(target=_watch, args=(proc, int(limit_gb * 2**20), state, done), daemon=True)
        watcher.start()
        proc.wait()
        done.set()
        watcher.join()
    if state.get("killed"):
        return {"wall": time.perf_counter() - t0, "cpu": float("nan"), "rss": state["peak_kb"] / 1024,
                "note": f"killed at {state['peak_kb'] / 2**20:.1f} GiB (limit {limit_gb} GiB)"}
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed (exit {proc.returncode}), see {log}")
    return {**time_log(log), "wall": time.perf_counter() - t0}


def time_log(log: Path) -> dict:
    """wall s (as /usr/bin/time counts it), user+sys s and peak RSS MiB from a `/usr/bin/time -v` log."""
    text = log.read_text(errors="replace")
    grab = lambda pat: re.search(pat, text).group(1)  # noqa: E731
    user, sys_ = float(grab(r"User time \(seconds\): ([\d.]+)")), float(grab(r"System time \(seconds\): ([\d.]+)"))
    wall = 0.0
    for part in grab(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)").split(":"):
        wall = 60 * wall + float(part)
    rss = int(grab(r"Maximum resident set size \(kbytes\): (\d+)")) / 1024
    return {"wall": wall, "cpu": user + sys_, "rss": rss, "note": ""}


def _row(label: str, m: dict) -> list:
    return [label, f"{m['wall']:.0f}", f"{m['cpu']:.0f}", f"{m['rss']:.0f}", m["note"]]


def run_ggq(chunks: int, limit: float, log: Path | None = None) -> list:
    """ggq's row: run now, or (log) read from the `/usr/bin/time -v` log of the same command run before."""
    out = WORK / "ggq-Q4_K_M.gguf"
    cmd = [GGQ, "convert", BIG, "--type", "q4_k_m", "--calibration", CALIBRATION, "-o", out, "--quiet"]
    if chunks > 0:
        cmd += ["--calibration-chunks", chunks]
    m = time_log(log) if log else timed(cmd, WORK / "ggq.log", limit)
    if log:
        m["note"] = f"from {log.name}, a run of this command made before the llama.cpp steps (no watchdog)"
    out.unlink(missing_ok=True)
    label = "ggq convert --type q4_k_m --calibration calibration.txt" + (f" --calibration-chunks {chunks}" if chunks > 0 else "")
    return [_row(label, m), m]


def run_llamacpp(chunks: int, limit: float) -> list:
    f16, imat, q = WORK / "lc-F16.gguf", WORK / "lc-imatrix.gguf", WORK / "lc-Q4_K_M.gguf"
    steps = [("convert_hf_to_gguf.py --outtype f16", [PYTHON, convert_script(), BIG, "--outtype", "f16", "--outfile", f16]),
             ("llama-imatrix -f calibration.txt -c 512 -t 2" + (f" --chunks {chunks}" if chunks > 0 else ""),
              [tool("llama-imatrix"), "-m", f16, "-f", CALIBRATION, "-c", "512", "-t", "2", "--no-ppl",
               "--output-format", "gguf", "-o", imat] + (["--chunks", chunks] if chunks > 0 else [])),
             ("llama-quantize --imatrix q4_k_m 2", [tool("llama-quantize"), "--imatrix", imat, f16, q, "Q4_K_M", "2"])]
    rows, total = [], {"wall": 0.0, "cpu": 0.0, "rss": 0.0, "note": ""}
    try:
        for i, (label, cmd) in enumerate(steps):
            m = timed(cmd, WORK / f"lc-{i}.log", limit)
            rows.append(_row(f"llama.cpp {label}", m))
            total = {"wall": total["wall"] + m["wall"], "cpu": total["cpu"] + m["cpu"],
                     "rss": max(total["rss"], m["rss"]), "note": "sum of times, largest RSS"}
            print(rows[-1], flush=True)
    finally:
        for p in (f16, imat, q):
            p.unlink(missing_ok=True)
    return rows + [_row("llama.cpp, three steps", total)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=-1, help="calibration chunks for both (default: all)")
    ap.add_argument("--rss-limit-gb", type=float, default=17.0, help="kill a command above this RSS")
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--skip-ggq", action="store_true", help="only llama.cpp's steps (ggq's row goes in --note)")
    ap.add_argument("--ggq-log", type=Path, help="take ggq's row from this `/usr/bin/time -v` log of the same "
                    "command, run before (e.g. while the machine was busier), instead of running it")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    if not args.skip_ggq:
        ggq_row, m = run_ggq(args.chunks, args.rss_limit_gb, args.ggq_log)
        print(ggq_row, flush=True)
        rows.append(ggq_row + ["PASS" if m["rss"] * 2**20 <= 2e9 and "killed" not in m["note"] else "FAIL"])
    if not args.skip_llamacpp:
        rows += [r + [""] for r in run_llamacpp(args.chunks, args.rss_limit_gb)]
    load = os.getloadavg()
    table = markdown_table(["run", "wall s", "user+sys s", "peak RSS MiB", "note", "<= 2 GB (2e9 B)"], rows)
    body = (f"### Calibrated convert of the 1.1B checkpoint (issue 13: peak RSS <= 2 GB)\n\n`{command_line()}` "
            f"(git {git_revision()}), {machine()}, load average after the runs {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f} (shared machine: wall times are noisy). Checkpoint: bench/make_big_checkpoint.py "
            f"(TinyLlama-1.1B shape, vocab 49152, random bf16, 3 shards). Peak RSS from `/usr/bin/time -v`."
            f"\n\n{table}\n" + (f"\n{args.note}\n" if args.note else ""))
    write_section("convert_calibrated_big", body)
    print(table)


if __name__ == "__main__":
    main()
