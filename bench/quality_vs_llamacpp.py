"""Issue 13's table: quality per bit of ggq's calibrated conversion vs llama.cpp with and without its
imatrix, judged by llama.cpp's own llama-perplexity --kl-divergence against its F16 file's logits.

    /work/main/.venv/bin/python -P bench/quality_vs_llamacpp.py [--types q4_k_m,q2_k] [--variants ...]

Standard measure (the issue's): eval.txt, -c 512, --chunks 20, -t 2 (--eval A,B: a table per text; the
second text of acceptance 5 comes from bench/second_text.py); imatrix = llama-imatrix on
calibration.txt, -c 512, all chunks. Variants per type (files in ~/.cache/ggq-bench/quality):
    llama        llama-quantize F16 -> TYPE (bench/reference_files.py's file)
    llama-imat   llama-quantize --imatrix <llama-imatrix, all chunks> F16 -> TYPE
    ggq-imat     ggq convert --calibration calibration.txt --method imatrix (ggq's own statistics)
    ggq-gptq     ggq convert --calibration calibration.txt --method gptq
    ggq-budget   ggq convert --calibration calibration.txt --target-size <llama's TYPE file size>: each
                 tensor's type chosen under that budget (convert/allocate.py), gptq-imatrix rounding
One calibration run of the checkpoint serves every ggq file (QuantOptions.statistics). Also (section
quality_interop): llama-imatrix's file vs `ggq imatrix` of the checkpoint, llama-quantize q4_k_m with
ggq's imatrix, and ggq convert --imatrix <llama's> --method imatrix vs llama-quantize --imatrix tensors.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script under -P

from bench.llamacpp import tool  # noqa: E402
from bench.reference_files import CALIBRATION, DATA, MODEL_DIR, REF, ref_path  # noqa: E402
from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402

WORK = REF.parent / "quality"
EVAL = DATA / "text" / "eval.txt"
TEXT = {"eval": EVAL}  # the text judged (--eval PATH: e.g. bench/second_text.py's, acceptance 5)
TYPES = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_k_s", "q4_0", "q3_k_m", "q2_k")
VARIANTS = ("llama-imat", "ggq-gptq", "llama", "ggq-imat")
KL_CHUNKS = {"n": 20}  # the standard; --kl-chunks N for a shorter run
PPL_ARGS = ["-c", "512", "--chunks", "20", "-t", "2"]


def run(cmd: list, log: Path) -> str:
    """Run a llama.cpp tool at low priority; its output goes to `log` and is returned."""
    done = subprocess.run(["nice", "-n", "19", *map(str, cmd)], capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"{cmd[0]} failed, see {log}")
    return done.stdout + done.stderr


def _tag() -> str:
    """'' for eval.txt (the issue's standard; the caches' old names), else '-<text's stem>'."""
    return "" if TEXT["eval"] == EVAL else f"-{TEXT['eval'].stem}"


def base_logits() -> Path:
    stem = TEXT["eval"].stem
    path = WORK / f"f16-{stem}-{KL_CHUNKS['n']}.logits"
    if not path.is_file():  # written under a temporary name: an interrupted run leaves no partial file
        tmp = path.with_suffix(".part")
        run([tool("llama-perplexity"), "-m", ref_path("F16"), "-f", TEXT["eval"], *PPL_ARGS,
             "--kl-divergence-base", tmp], WORK / f"f16-{stem}.log")
        tmp.replace(path)
    return path


def llama_imatrix() -> Path:
    path = WORK / "llama-imatrix-all.gguf"
    if not path.is_file():  # llama-imatrix also saves every 10 chunks: only a finished file gets the name
        tmp = WORK / "llama-imatrix-all.part.gguf"
        run([tool("llama-imatrix"), "-m", ref_path("F16"), "-f", CALIBRATION, "-c", "512", "-t", "2", "--no-ppl",
             "--output-format", "gguf", "-o", tmp], WORK / "llama-imatrix.log")
        tmp.replace(path)
    return path


def kld(model: Path) -> dict:
    """llama-perplexity --kl-divergence of `model` against the F16 logits: PPL, mean KLD, same top-1
    (kept beside the file in <file>.kld.json while the file is unchanged, so a rerun reuses it)."""
    cached = model.with_name(f"{model.name}.kld{KL_CHUNKS['n']}{_tag()}.json")
    if cached.is_file() and cached.stat().st_mtime > model.stat().st_mtime:
        return json.loads(cached.read_text())
    out = run([tool("llama-perplexity"), "-m", model, "-f", TEXT["eval"], *PPL_ARGS, "--kl-divergence-base",
               base_logits(), "--kl-divergence"], WORK / f"{model.stem}.kld{KL_CHUNKS['n']}{_tag()}.log")
    grab = lambda pattern: float(re.search(pattern, out).group(1))  # noqa: E731
    result = {"bytes": model.stat().st_size, "ppl": grab(r"Mean PPL\(Q\)\s*:\s*([\d.]+)"),
              "kld": grab(r"Mean\s+KLD:\s*([\d.]+)"), "top": grab(r"Same top p:\s*([\d.]+)")}
    cached.write_text(json.dumps(result))
    return result


class GgqCalibration:
    """One calibration run of the checkpoint (with XᵀX), shared by every ggq conversion and kept in
    WORK/ggq-calibration.pkl for later runs."""

    def __init__(self):
        self._stats = None

    def get(self):
        import pickle
        cache = WORK / "ggq-calibration-v2.pkl"  # v2: with attn_v's attention-weighted grams
        if self._stats is None and cache.is_file():
            self._stats = pickle.loads(cache.read_bytes())
        if self._stats is None:
            from ggq.convert.calibration import calibrate
            from ggq.convert.pipeline import open_checkpoint_source
            ckpt = open_checkpoint_source(str(MODEL_DIR))
            t0 = time.time()
            self._stats = calibrate(ckpt.metadata("f32"), ckpt.sources, CALIBRATION.read_text(), gram=True)
            print(f"calibration: {self._stats[1]} chunks in {time.time() - t0:.0f} s", flush=True)
            cache.write_bytes(pickle.dumps(self._stats))
        return self._stats

    def sensitivities(self) -> dict:
        """The allocator's per-tensor sensitivities on calibration.txt, kept in WORK/ggq-sensitivity.json."""
        cache = WORK / "ggq-sensitivity-v1.json"
        if not cache.is_file():
            from ggq.convert.allocate import sensitivities
            from ggq.convert.calibrated import QuantOptions
            from ggq.convert.pipeline import open_checkpoint_source
            t0 = time.time()
            found = sensitivities(QuantOptions(calibration=str(CALIBRATION)), open_checkpoint_source(str(MODEL_DIR)),
                                  quiet=True)
            print(f"sensitivities: {len(found)} tensors in {time.time() - t0:.0f} s", flush=True)
            cache.write_text(json.dumps(found))
        return json.loads(cache.read_text())


def make_file(variant: str, ftype: str, calibration: GgqCalibration) -> Path:
    if variant == "llama":
        return ref_path(ftype.upper())
    path = WORK / f"{variant}-{ftype.upper()}.gguf"
    if path.is_file():  # made by an earlier run (delete it to remake it)
        return path
    if variant == "llama-imat":
        run([tool("llama-quantize"), "--imatrix", llama_imatrix(), ref_path("F16"), path, ftype.upper(), "2"],
            WORK / f"{path.stem}.log")
        return path
    from ggq.convert.calibrated import QuantOptions
    from ggq.convert.pipeline import convert
    if variant == "ggq-budget":
        from ggq.convert.allocate import Budget
        convert(str(MODEL_DIR), ftype, str(path), quiet=True, budget=Budget(ref_path(ftype.upper()).stat().st_size),
                quant=QuantOptions(calibration=str(CALIBRATION), statistics=calibration.get(),
                                   sensitivities=calibration.sensitivities()))
        return path
    method = {"ggq-imat": "imatrix", "ggq-gptq": "gptq", "ggq-gptq-imat": "gptq-imatrix"}[variant]
    convert(str(MODEL_DIR), ftype, str(path), quiet=True,
            quant=QuantOptions(method, calibration=str(CALIBRATION), statistics=calibration.get()))
    return path


def _has_result(variant: str, ftype: str) -> bool:
    path = ref_path(ftype.upper()) if variant == "llama" else WORK / f"{variant}-{ftype.upper()}.gguf"
    return path.with_name(f"{path.name}.kld{KL_CHUNKS['n']}{_tag()}.json").is_file()


def table_body(results: dict, variants) -> str:
    rows = []
    for ftype, by_variant in results.items():
        ref = by_variant.get("llama-imat")
        for v in variants:
            r = by_variant.get(v)
            if r:
                ratio = f"{r['kld'] / ref['kld']:.2f}" if ref and v != "llama-imat" else ""
                rows.append([ftype, v, f"{r['bytes']:,}", f"{r['ppl']:.3f}", f"{r['kld']:.5f}", ratio,
                             f"{r['top']:.2f} %"])
    return markdown_table(["type", "variant", "file bytes", "PPL", "mean KLD", "KLD / llama-imat", "same top-1"],
                          rows)


def budget_mixes(results: dict) -> str:
    """The types each ggq-budget file got (read back by gguf-py), as a second table."""
    from collections import Counter
    from gguf import GGMLQuantizationType, GGUFReader
    rows = []
    for ftype, by_variant in results.items():
        if "ggq-budget" in by_variant:
            path = WORK / f"ggq-budget-{ftype.upper()}.gguf"
            tensors = GGUFReader(path).tensors
            embd = next(GGMLQuantizationType(t.tensor_type).name for t in tensors if t.name == "token_embd.weight")
            count = Counter(GGMLQuantizationType(t.tensor_type).name for t in tensors)
            rows.append([ftype, embd, ", ".join(f"{t} x{n}" for t, n in count.most_common())])
    if not rows:
        return ""
    return "\n\nTypes in the ggq-budget files:\n\n" + markdown_table(["target", "token_embd", "tensors"], rows)


def write_table(by_text: dict, variants, note: str) -> None:
    """One table per judged text (by_text: text name -> type -> variant -> figures)."""
    tables = "".join(f"\n\n### {name}\n\n" + table_body(results, variants) + budget_mixes(results)
                     for name, results in by_text.items())
    body = (f"## Quality vs llama.cpp (issue 13)\n\n`{command_line()}` at {git_revision()} on {machine()}.\n"
            f"Judged by llama-perplexity --kl-divergence against the F16 file's logits on each text "
            f"({' '.join(PPL_ARGS)}); llama's imatrix: llama-imatrix on calibration.txt, -c 512, all chunks. "
            f"ggq-budget: `ggq convert --calibration calibration.txt --type TYPE --target-size <bytes of llama's "
            f"TYPE file without imatrix>`, types chosen per tensor by predicted KL (convert/allocate.py: each "
            f"tensor's sensitivity measured on calibration.txt times a fixed per-type distortion table of Gaussian/"
            f"Laplacian weights; the TYPE mix kept where predicted better); its row is the target it was given, "
            f"not a fixed mix. Same files on every text (all made from calibration.txt only)."
            + tables + (f"\n\n{note}" if note else ""))
    write_section("quality_vs_llamacpp", body)


def identical_tensors(a: Path, b: Path) -> tuple[int, int]:
    """(tensors with equal type and bytes, tensors) of two GGUF files, read by gguf-py."""
    from gguf import GGUFReader
    ta = {t.name: t for t in GGUFReader(a).tensors}
    tb = {t.name: t for t in GGUFReader(b).tensors}
    same = sum(1 for n, t in ta.items() if n in tb and t.tensor_type == tb[n].tensor_type
               and bytes(t.data.tobytes()) == bytes(tb[n].data.tobytes()))
    return same, len(ta)


def imatrix_agreement(ours: Path, theirs: Path) -> tuple[float, float]:
    """(median, max) over weights of the largest relative difference of per-column importance."""
    import numpy as np
    from ggq.imatrix_file import read_imatrix
    a, b = read_imatrix(ours), read_imatrix(theirs)
    worst = [float(np.max(np.abs(a.importance(n) - b.importance(n)) / np.abs(b.importance(n)))) for n in b.entries]
    return float(np.median(worst)), max(worst)


def interop(calibration: GgqCalibration) -> None:
    """Acceptance 4 of issue 13, and how close `ggq imatrix` comes to llama-imatrix."""
    from ggq.convert.calibrated import QuantOptions
    from ggq.convert.pipeline import convert
    from ggq.imatrix_file import write_imatrix
    stats, n_chunks = calibration.get()
    ours = WORK / "ggq-imatrix-all.gguf"
    write_imatrix(ours, stats.imatrix([str(CALIBRATION)], n_chunks, 512))
    median, worst = imatrix_agreement(ours, llama_imatrix())
    with_ours = WORK / "llama-with-ggq-imatrix-Q4_K_M.gguf"
    run([tool("llama-quantize"), "--imatrix", ours, ref_path("F16"), with_ours, "Q4_K_M", "2"], WORK / "wq.log")
    theirs = make_file("llama-imat", "q4_k_m", calibration)
    ppl_ours, ppl_theirs = kld(with_ours)["ppl"], kld(theirs)["ppl"]
    ggq_file = WORK / "ggq-with-llama-imatrix-Q4_K_M.gguf"
    convert(str(MODEL_DIR), "q4_k_m", str(ggq_file), quiet=True,
            quant=QuantOptions("imatrix", imatrix=str(llama_imatrix())))
    same, total = identical_tensors(ggq_file, theirs)
    rows = [["ggq imatrix (checkpoint, float32) vs llama-imatrix (F16 file), all chunks",
             f"per-weight max relative difference of importance: median {median:.2e}, max {worst:.2e}"],
            ["llama-quantize q4_k_m --imatrix <ggq's> vs --imatrix <llama's>",
             f"PPL {ppl_ours:.4f} vs {ppl_theirs:.4f} ({100 * (ppl_ours / ppl_theirs - 1):+.3f} %)"],
            ["ggq convert q4_k_m --imatrix <llama's> --method imatrix vs llama-quantize --imatrix",
             f"{same} of {total} tensors byte-identical"]]
    body = (f"## Imatrix interop (issue 13, acceptance 4)\n\n`{command_line()}` at {git_revision()} on "
            f"{machine()}.\n\n" + markdown_table(["check", "result"], rows))
    write_section("quality_interop", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--parts", default="table,interop", help="table, interop; files: only make the files")
    ap.add_argument("--kl-chunks", type=int, default=20, help="chunks of each text judged (default 20)")
    ap.add_argument("--eval", default=str(EVAL), help="texts judged, comma-separated (default eval.txt; "
                    "bench/second_text.py makes a second one)")
    ap.add_argument("--note", default="", help="a paragraph under the tables")
    ap.add_argument("--cached-only", action="store_true", help="write the table from earlier runs' results only")
    args = ap.parse_args()
    KL_CHUNKS["n"] = args.kl_chunks
    PPL_ARGS[3] = str(args.kl_chunks)
    WORK.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    calibration = GgqCalibration()
    if "interop" in args.parts.split(","):
        interop(calibration)
    if "files" in args.parts.split(","):
        for ftype in args.types.split(","):
            for v in variants:
                if v != "llama" and not (v == "llama-imat" and ftype == "q8_0"):
                    print(ftype, v, make_file(v, ftype, calibration), flush=True)
    if "table" not in args.parts.split(","):
        return
    by_text: dict = {}
    for text in args.eval.split(","):
        TEXT["eval"] = Path(text).expanduser()
        results = by_text[TEXT["eval"].name] = {}
        for ftype in args.types.split(","):
            results[ftype] = {}
            for v in variants:
                if v == "llama-imat" and ftype == "q8_0":
                    continue  # Q8_0 has no scale search for an imatrix to weight
                if args.cached_only and not _has_result(v, ftype):
                    continue
                results[ftype][v] = kld(make_file(v, ftype, calibration))
                print(TEXT["eval"].name, ftype, v, results[ftype][v], flush=True)
                write_table(by_text, variants, args.note)

if __name__ == "__main__":
    main()
