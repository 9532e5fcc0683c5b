"""Benchmark: the course's per-image scikit-image loop against ``gtsrb-kit cook`` (prints figures).

Usage::

    python benchmarks/bench_cook.py [ROOT] [--scale 0.2] [--workers N] [--size 24 --size 48]
                                    [--mode RGB ...] [--no-per-variant] [--repeat 3]

ROOT defaults to the real data: ``../shared/gtsrb`` materialized once into a cache folder
(``$XDG_CACHE_HOME/gtsrb-kit/bench-real``). Both sides get the same images: the ones cook selects
at ``--scale`` (train + val + test + meta). Every image is read once before timing starts, so the
page cache is warm for both sides (otherwise the first run pays the disk reads).

(a) *course*: for each variant, loop over the images: read with Pillow, ``skimage.transform.resize``
    to (s, s), apply the mode, append to a list, ``np.array`` at the end (float64, as the course
    holds them); one process.
(b) *cook*: :func:`gtsrb_kit.cook.cook_dataset` for the same variants, all cores, into a temp folder
    (``force=True``), catalog reading included. The cook runs of all variants and of the variants
    without L-LHE are repeated ``--repeat`` times and the median run is reported (the course loop,
    over a minute long, runs once): on a shared machine a single short run is at the mercy of
    other jobs' bursts.

Each measurement runs in its own subprocess; peak RSS is read there with ``getrusage`` (the
process itself and, for cook, its largest worker). Imports are not timed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GTSRB_KIT_SHARED", REPO.parent / "shared" / "gtsrb"))
DEFAULT_VARIANTS = [(s, m) for s in (24, 48) for m in ("RGB", "RGB-HE", "L", "L-LHE")]


def _cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_mib() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return me, kids


# --------------------------------------------------------------------------- children

def child_course(list_file: str, variants: list[list]) -> dict:
    import numpy as np
    from PIL import Image

    from gtsrb_kit.enhance import course_enhance

    items = json.loads(Path(list_file).read_text())
    course_enhance(np.zeros((30, 30, 3), np.uint8), 24, "L-LHE")  # import skimage submodules untimed
    per_variant = {}
    total_bytes = 0
    cpu0 = _cpu_seconds()
    start = time.perf_counter()
    for size, mode in variants:
        t0 = time.perf_counter()
        xs, ys = [], []
        for path, label in items:
            image = np.asarray(Image.open(path).convert("RGB"))
            xs.append(course_enhance(image, size, mode))
            ys.append(label)
        x = np.array(xs, dtype=np.float64)  # the course holds float arrays
        y = np.array(ys)
        per_variant[f"{size}-{mode}"] = {"seconds": time.perf_counter() - t0, "bytes": int(x.nbytes + y.nbytes)}
        total_bytes += x.nbytes + y.nbytes
        del xs, x
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu0
    me, kids = _peak_mib()
    return {"seconds": wall, "cpu_seconds": cpu, "images": len(items), "bytes": int(total_bytes), "peak_mib": me,
            "worker_peak_mib": kids, "per_variant": per_variant}


def child_cook(root: str, variants: list[list], scale: float, workers: int | None, out: str) -> dict:
    from gtsrb_kit.catalog import read_catalog
    from gtsrb_kit.cook import cook_dataset

    t0 = time.perf_counter()
    read_catalog(root, verify="none")
    catalog_s = time.perf_counter() - t0
    sizes = sorted({int(s) for s, _ in variants})
    modes = list(dict.fromkeys(m for _, m in variants))
    cpu0 = _cpu_seconds()
    start = time.perf_counter()
    results = cook_dataset(root, out, sizes=sizes, modes=modes, scale=scale, workers=workers, force=True)
    wall = time.perf_counter() - start
    # cook returns once its files are complete; its idle workers exit on their own: wait for them
    # (untimed) so that their CPU time and peak RSS are counted
    for child in multiprocessing.active_children():
        child.join()
    cpu = _cpu_seconds() - cpu0
    me, kids = _peak_mib()
    wanted = {f"{s}-{m}" for s, m in variants}
    kept = [r for r in results if f"{r.size}-{r.mode}" in wanted]
    return {"seconds": wall, "cpu_seconds": cpu, "catalog_seconds": catalog_s, "images": sum(kept[0].counts.values()),
            "bytes": int(sum(r.bytes for r in kept)), "peak_mib": me, "worker_peak_mib": kids,
            "files": {f"{r.size}-{r.mode}": r.bytes for r in kept}}


# --------------------------------------------------------------------------- parent

def _run_child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_run(args: list[str], repeat: int) -> dict:
    """Run a child ``repeat`` times; the run with the median wall time, with every time in ``runs``."""
    runs = sorted((_run_child(args) for _ in range(max(1, repeat))), key=lambda r: r["seconds"])
    median = dict(runs[(len(runs) - 1) // 2])
    median["runs"] = [r["seconds"] for r in runs]
    return median


def _default_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gtsrb-kit" / "bench-real"
    if not (cache / "GTSRB").is_dir():
        if not (SHARED / "materialize.py").is_file():
            raise SystemExit(f"no ROOT given and no real data at {SHARED}; pass a GTSRB folder")
        print(f"materializing {SHARED} into {cache} (once) ...", flush=True)
        subprocess.run([sys.executable, str(SHARED / "materialize.py"), str(cache)], check=True)
    return cache


def _image_list(root: Path, scale: float, seed: int, out: Path) -> int:
    from gtsrb_kit.catalog import read_catalog
    from gtsrb_kit.split import plan_split

    import numpy as np

    from gtsrb_kit.catalog import image_digest, shared_digests

    catalog = read_catalog(root, verify="none")
    plan = plan_split(catalog, scale=scale, seed=seed)
    # the images cook uses: without the training tracks that duplicate a test image
    paths, tracks = catalog["path"].to_numpy(), catalog["track_id"].to_numpy()
    train_rows = np.concatenate([plan.train, plan.val])
    digest = {int(r): image_digest(Path(paths[r]).read_bytes()) for r in np.concatenate([train_rows, plan.test])}
    shared = shared_digests((digest[r] for r in train_rows.tolist()), (digest[r] for r in plan.test.tolist()))
    dropped = sorted({int(tracks[r]) for r in train_rows.tolist() if digest[r] in shared})
    if dropped:
        plan = plan_split(catalog, scale=scale, seed=seed, drop_tracks=dropped)

    rows = np.concatenate([plan.train, plan.val, plan.test, plan.meta])
    items = [[str(catalog["path"].iat[i]), int(catalog["class_id"].iat[i])] for i in rows]
    out.write_text(json.dumps(items))
    return len(items)


def _warm_page_cache(list_file: Path) -> None:
    """Read every image once (untimed) so that whichever side runs first does not pay the disk."""
    for path, _ in json.loads(list_file.read_text()):
        with open(path, "rb") as fh:
            fh.read()


def _fmt_mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", type=Path)
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--size", type=int, action="append")
    parser.add_argument("--mode", action="append")
    parser.add_argument("--no-per-variant", action="store_true", help="skip the per-variant cook runs")
    parser.add_argument("--no-course", action="store_true", help="time cook only")
    parser.add_argument("--repeat", type=int, default=3, help="cook runs per measurement (median reported)")
    parser.add_argument("--write-docs", action="store_true", help="replace the figures table of docs/cook.md")
    args = parser.parse_args()

    root = args.root or _default_root()
    variants = ([(s, m) for s in args.size for m in args.mode] if args.size and args.mode
                else [(s, m) for s in (args.size or (24, 48)) for m in (args.mode or ("RGB", "RGB-HE", "L", "L-LHE"))])
    with tempfile.TemporaryDirectory(prefix="bench-cook-") as tmp:
        tmp = Path(tmp)
        n = _image_list(root, args.scale, args.seed, tmp / "images.json")
        _warm_page_cache(tmp / "images.json")
        print(f"root {root}: {n:,} images at scale {args.scale:g}; variants: "
              + ", ".join(f"{s}x{s}-{m}" for s, m in variants))
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
        vjson = json.dumps(variants)
        cook = _median_run(["--child-cook", str(root), vjson, str(args.scale), str(args.workers or 0), str(tmp / "cook")],
                           args.repeat)
        course = None if args.no_course else _run_child(["--child-course", str(tmp / "images.json"), vjson])
        no_lhe = [(s, m) for s, m in variants if m != "L-LHE"]
        cook_no_lhe = None
        if course and 0 < len(no_lhe) < len(variants):
            cook_no_lhe = _median_run(["--child-cook", str(root), json.dumps(no_lhe), str(args.scale),
                                       str(args.workers or 0), str(tmp / "cook-no-lhe")], args.repeat)
        per_variant_cook: dict[str, dict] = {}
        if not args.no_per_variant and len(variants) > 1:
            for s, m in variants:
                per_variant_cook[f"{s}-{m}"] = _run_child(
                    ["--child-cook", str(root), json.dumps([[s, m]]), str(args.scale), str(args.workers or 0),
                     str(tmp / f"cook-{s}-{m}")])
        print(f"load average {os.getloadavg()[0]:.2f} at end\n")

        def line(name: str, r: dict) -> str:
            return (f"{name:<8} {r['seconds']:8.2f} s  (CPU {r['cpu_seconds']:6.1f} s)  {r['images'] / r['seconds']:7,.0f} img/s  "
                    f"peak RSS {r['peak_mib']:7,.0f} MiB (largest worker {r['worker_peak_mib']:,.0f} MiB)  "
                    f"output {_fmt_mib(r['bytes'])}")

        print(f"all {len(variants)} variants ({n:,} images each)")
        if course:
            print(line("course", course))
        print(line("cook", cook) + f"  [catalog read alone: {cook['catalog_seconds']:.2f} s]"
              + f"  [runs: {', '.join(f'{t:.2f}' for t in cook['runs'])} s]")
        if course:
            print(f"ratio    {course['seconds'] / cook['seconds']:8.1f}x faster (CPU time: {course['cpu_seconds'] / cook['cpu_seconds']:.1f}x less), "
                  f"output {course['bytes'] / cook['bytes']:.1f}x smaller")
            if cook_no_lhe:
                keys = [f"{s}-{m}" for s, m in no_lhe]
                c_s = sum(course["per_variant"][k]["seconds"] for k in keys)
                c_b = sum(course["per_variant"][k]["bytes"] for k in keys)
                print(f"\nthe {len(no_lhe)} variants without L-LHE (one cook run for all of them)")
                print(f"course   {c_s:8.2f} s  (sum of its per-variant loops)")
                print(line("cook", cook_no_lhe) + f"  [runs: {', '.join(f'{t:.2f}' for t in cook_no_lhe['runs'])} s]")
                print(f"ratio    {c_s / cook_no_lhe['seconds']:8.1f}x faster, output {c_b / cook_no_lhe['bytes']:.1f}x smaller")
        if per_variant_cook:
            print("\nper variant (cook run alone for each: fixed costs such as the catalog and the duplicate check"
                  " are paid every time)")
            print(f"{'variant':<14} {'course s':>9} {'cook s':>8} {'speed-up':>9} {'course out':>12} {'cook file':>11}")
            for key, r in per_variant_cook.items():
                c = course["per_variant"][key] if course else None
                print(f"{key:<14} {c['seconds'] if c else float('nan'):9.2f} {r['seconds']:8.2f} "
                      f"{(c['seconds'] / r['seconds']) if c else float('nan'):8.1f}x "
                      f"{_fmt_mib(c['bytes']) if c else '-':>12} {_fmt_mib(r['bytes']):>11}")
        if args.write_docs and course:
            _write_docs(_docs_table(args, n, variants, course, cook, no_lhe, cook_no_lhe))


DOCS = REPO / "docs" / "cook.md"
_BEGIN, _END = "<!-- bench_cook:begin -->", "<!-- bench_cook:end -->"


def _docs_table(args: argparse.Namespace, n: int, variants: list, course: dict, cook: dict,
                no_lhe: list, cook_no_lhe: dict | None) -> str:
    """The figures of one run as the markdown table of docs/cook.md."""
    rows = [("all variants", len(variants), course["seconds"], course["bytes"], cook)]
    if cook_no_lhe:
        keys = [f"{s}-{m}" for s, m in no_lhe]
        rows.append(("without L-LHE", len(no_lhe), sum(course["per_variant"][k]["seconds"] for k in keys),
                     sum(course["per_variant"][k]["bytes"] for k in keys), cook_no_lhe))
    lines = [f"`python benchmarks/bench_cook.py {args.root or ''} --scale {args.scale:g} --repeat {args.repeat}` "
             f"({os.cpu_count()} cores, {n:,} images per file, median of {args.repeat} cook runs):", "",
             "| variants | course (a) | cook (b) | speed-up (floor 12x) | output (a) / (b) | peak RSS (b), main + worker |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, count, c_s, c_b, r in rows:
        lines.append(f"| {name} ({count}) | {c_s:.2f} s | {r['seconds']:.2f} s | {c_s / r['seconds']:.1f}x | "
                     f"{c_b / 2**20:,.0f} / {r['bytes'] / 2**20:,.1f} MiB = {c_b / r['bytes']:.1f}x | "
                     f"{r['peak_mib']:,.0f} + {r['worker_peak_mib']:,.0f} MiB |")
    return "\n".join(lines)


def _write_docs(table: str) -> None:
    text = DOCS.read_text()
    start, end = text.index(_BEGIN) + len(_BEGIN), text.index(_END)
    DOCS.write_text(text[:start] + "\n" + table + "\n" + text[end:])
    print(f"\nwrote the table into {DOCS}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-course":
        print(json.dumps(child_course(sys.argv[2], json.loads(sys.argv[3]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-cook":
        w = int(sys.argv[5]) or None
        print(json.dumps(child_cook(sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4]), w, sys.argv[6])))
    else:
        main()
