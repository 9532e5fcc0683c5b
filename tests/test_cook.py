"""cook_dataset: contents, split, determinism, duplicates, resume, atomic writes and bad input."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from gtsrb_kit import store as store_module
from gtsrb_kit.catalog import load_image, read_catalog
from gtsrb_kit.cli import app
from gtsrb_kit.cook import cook_dataset
from gtsrb_kit.enhance import MODES, enhance
from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.split import plan_split
from gtsrb_kit.store import load_split, read_info

runner = CliRunner()


def _failure(result) -> tuple[int, str]:
    """Exit code and one-line message of a failed CLI call.

    The guard prints ``error: ...``; with typer >= 0.29 (vendored click) its exception escapes to
    CliRunner instead, and the code and message are read from the exception.
    """
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit) and hasattr(exc, "exit_code"):
        return exc.exit_code, str(exc)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.exit_code, result.stderr


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _subset_tree(src: Path, dst: Path, classes: range) -> Path:
    """A copy of an official-layout tree with only some classes (reading 43 CSVs is what costs)."""
    train = Path("GTSRB/Final_Training/Images")
    for c in classes:
        shutil.copytree(src / train / f"{c:05d}", dst / train / f"{c:05d}")
    test_dir = dst / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    lines = (src / "GT-final_test.csv").read_text().splitlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(";")[-1]) in classes]
    (dst / "GT-final_test.csv").write_text("\n".join(kept) + "\n")
    for ln in kept[1:]:
        name = ln.split(";")[0]
        shutil.copy(src / "GTSRB" / "Final_Test" / "Images" / name, test_dir / name)
    return dst


@pytest.fixture(scope="module")
def small_root(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Classes 0-5 of the synthetic tree: the same layout, a seventh of the catalog cost."""
    return _subset_tree(synth_root, tmp_path_factory.mktemp("small") / "root", range(6))


def _strings(handle: h5py.File, name: str) -> list[str]:
    return [p.decode() for p in handle[name][...]]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".gtsrb-kit"))


# --------------------------------------------------------------------------- split


def test_split_is_trackwise_stratified_and_seeded(synth_root: Path) -> None:
    catalog = read_catalog(synth_root, verify="none")
    plan = plan_split(catalog, seed=1, val_fraction=0.3)
    tracks = catalog["track_id"].to_numpy()
    classes = catalog["class_id"].to_numpy()
    train_tracks, val_tracks = set(tracks[plan.train]), set(tracks[plan.val])
    assert train_tracks and val_tracks and not train_tracks & val_tracks
    n_train = int((catalog["split"] == "train").sum())
    assert len(plan.train) + len(plan.val) == n_train
    for c in range(43):
        all_tracks = set(tracks[(catalog["split"] == "train").to_numpy() & (classes == c)])
        in_val = set(tracks[plan.val][classes[plan.val] == c])
        if len(all_tracks) >= 2:
            assert 1 <= len(in_val) < len(all_tracks), c
    assert len(plan.meta) == 43 and sorted(classes[plan.meta]) == list(range(43))
    assert set(plan.meta) <= set(plan.train)  # references never come from val/test
    again = plan_split(catalog, seed=1, val_fraction=0.3)
    assert np.array_equal(again.val, plan.val) and np.array_equal(again.meta, plan.meta)
    assert not np.array_equal(plan_split(catalog, seed=2, val_fraction=0.3).val, plan.val)

    half = plan_split(catalog, scale=0.5, seed=1)
    kept = set(tracks[np.concatenate([half.train, half.val])])
    for t in kept:  # whole tracks only
        assert set(np.flatnonzero(tracks == t)) <= set(half.train) | set(half.val)
    test_classes = set(classes[(catalog["split"] == "test").to_numpy()])
    assert set(classes[half.test]) == test_classes  # every class keeps test images
    assert len(half.test) < int((catalog["split"] == "test").sum())
    with pytest.raises(ConfigError, match=r"scale must be in \(0, 1\], got 1.5"):
        plan_split(catalog, scale=1.5)
    with pytest.raises(ConfigError, match=r"val_fraction must be in \[0, 1\)"):
        plan_split(catalog, val_fraction=1.0)
    assert len(plan_split(catalog, val_fraction=0.0).val) == 0


# --------------------------------------------------------------------------- contents


def test_every_mode_and_size_matches_enhance(small_root: Path, tmp_path: Path) -> None:
    results = cook_dataset(small_root, tmp_path, sizes=(16, 24), modes=MODES, workers=2)
    assert [r.path.name for r in results] == [f"set-{s}x{s}-{m}.h5" for s in (16, 24) for m in MODES]
    catalog = read_catalog(small_root, verify="none").set_index("rel_path")
    for r in results:
        assert not r.skipped and r.bytes == r.path.stat().st_size
        with h5py.File(r.path) as handle:
            for split in ("train", "val", "test", "meta"):
                x = handle[f"x_{split}"]
                paths = _strings(handle, f"path_{split}")
                assert x.shape == (r.counts[split], r.size, r.size, 3 if r.mode.startswith("RGB") else 1)
                labels = handle[f"y_{split}"][...]
                assert list(labels) == [int(catalog.at[p, "class_id"]) for p in paths]
                if split in ("train", "val"):
                    assert list(handle[f"track_{split}"][...]) == [int(catalog.at[p, "track_id"]) for p in paths]
                for i in {0, len(paths) // 2, len(paths) - 1}:
                    expected = enhance(load_image(catalog.at[paths[i], "path"]), r.size, r.mode)
                    np.testing.assert_array_equal(x[i], expected, err_msg=f"{r.variant} {split} {i}")


def test_roi_crop_files(small_root: Path, tmp_path: Path) -> None:
    (result,) = cook_dataset(small_root, tmp_path, sizes=(16,), modes=("RGB",), roi_crop=True, workers=1)
    assert result.path.name == "set-16x16-RGB-roi.h5" and result.roi
    assert read_info(result.path)["roi"] is True
    catalog = read_catalog(small_root, verify="none").set_index("rel_path")
    with h5py.File(result.path) as handle:
        paths = _strings(handle, "path_train")
        row = catalog.loc[paths[3]]
        roi = (row.roi_x1, row.roi_y1, row.roi_x2, row.roi_y2)
        np.testing.assert_array_equal(handle["x_train"][3], enhance(load_image(row.path), 16, "RGB", roi=roi))
        meta_paths = _strings(handle, "path_meta")
        assert len(meta_paths) == 6


def test_kaggle_meta_pictograms_are_the_references(tmp_path: Path) -> None:
    from gtsrb_kit.synth import generate_dataset

    root = generate_dataset(tmp_path / "k", tracks_per_class=1, frames_per_track=2, test_per_class=1, seed=0,
                            layout="kaggle")
    (result,) = cook_dataset(root, tmp_path / "out", sizes=(16,), modes=("L",), workers=1)
    with h5py.File(result.path) as handle:
        metas = _strings(handle, "path_meta")
        assert len(metas) == 43 and all(p.lower().startswith("meta/") for p in metas)
        assert list(handle["y_meta"][...]) == list(range(43))
        assert not set(handle["track_val"][...]) & set(handle["track_train"][...])


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(small_root: Path, tmp_path: Path) -> None:
    args = dict(sizes=(16,), modes=("RGB", "L-LHE"), scale=0.5, seed=7, workers=2)
    first = cook_dataset(small_root, tmp_path / "a", **args)
    time.sleep(1.1)  # a timestamp anywhere in the file would now differ
    second = cook_dataset(small_root, tmp_path / "b", **{**args, "workers": 1})
    for a, b in zip(first, second):
        assert a.path.read_bytes() == b.path.read_bytes(), a.variant
    other = cook_dataset(small_root, tmp_path / "c", **{**args, "seed": 8, "modes": ("RGB",)})
    with h5py.File(first[0].path) as fa, h5py.File(other[0].path) as fc:
        assert _strings(fa, "path_val") != _strings(fc, "path_val")
    info = read_info(first[0].path)
    assert info["scale"] == 0.5 and info["seed"] == 7
    assert "resize" not in info["recipe"]  # nothing installation-specific: same bytes everywhere
    full = read_catalog(small_root, verify="none")
    assert info["splits"]["test"]["count"] < int((full["split"] == "test").sum())


# --------------------------------------------------------------------------- duplicates


def _make_test_duplicate(root: Path) -> tuple[str, int]:
    """Overwrite test image 00000 with a training image; return that image's rel_path and track id."""
    catalog = read_catalog(root, verify="none")
    train = catalog[catalog["split"] == "train"].iloc[7]
    test_dir = root / "GTSRB" / "Final_Test" / "Images"
    shutil.copy(train.path, test_dir / "00000.ppm")
    labels = root / "GT-final_test.csv"
    raw = labels.read_bytes().decode()
    newline = "\r\n" if "\r\n" in raw else "\n"
    lines = raw.split(newline)
    fields = [train.width, train.height, train.roi_x1, train.roi_y1, train.roi_x2, train.roi_y2, train.class_id]
    lines = [";".join(["00000.ppm", *map(str, fields)]) if ln.startswith("00000.ppm;") else ln for ln in lines]
    labels.write_bytes(newline.join(lines).encode())
    return train.rel_path, int(train.track_id)


def test_training_tracks_duplicating_test_images_are_dropped(small_root: Path, tmp_path: Path) -> None:
    root = _copy_tree(small_root, tmp_path / "root")
    rel, track = _make_test_duplicate(root)
    (dropped,) = cook_dataset(root, tmp_path / "out", sizes=(16,), modes=("L",), workers=1)
    assert dropped.dropped_duplicate_tracks == 1
    with h5py.File(dropped.path) as handle:
        assert handle.attrs["dropped_duplicate_tracks"] == 1
        assert track not in set(handle["track_train"][...]) | set(handle["track_val"][...])
        assert rel not in _strings(handle, "path_train") + _strings(handle, "path_val")
    (kept,) = cook_dataset(root, tmp_path / "keep", sizes=(16,), modes=("L",), workers=1, keep_test_duplicates=True)
    assert kept.dropped_duplicate_tracks == 0
    with h5py.File(kept.path) as handle:
        assert track in set(handle["track_train"][...]) | set(handle["track_val"][...])
    assert sum(kept.counts.values()) > sum(dropped.counts.values())


# --------------------------------------------------------------------------- resume / atomic


def test_rerun_skips_complete_files_and_force_rebuilds(small_root: Path, tmp_path: Path) -> None:
    args = dict(sizes=(16,), modes=("L", "RGB"), workers=1)
    first = cook_dataset(small_root, tmp_path, **args)
    stamps = {r.path: (r.path.stat().st_ino, r.path.stat().st_mtime_ns) for r in first}
    again = cook_dataset(small_root, tmp_path, **args)
    assert all(r.skipped for r in again) and [r.counts for r in again] == [r.counts for r in first]
    assert {r.path: (r.path.stat().st_ino, r.path.stat().st_mtime_ns) for r in again} == stamps
    forced = cook_dataset(small_root, tmp_path, **args, force=True)
    assert not any(r.skipped for r in forced)
    assert all(r.path.stat().st_ino != stamps[r.path][0] for r in forced)
    assert forced[0].path.read_bytes() == forced[0].path.read_bytes()
    changed = cook_dataset(small_root, tmp_path, **{**args, "modes": ("L",)}, val_fraction=0.5)
    assert not changed[0].skipped  # another recipe: rebuilt
    (tmp_path / "set-16x16-RGB.h5").write_bytes(b"garbage")  # a corrupt file is rebuilt, not trusted
    assert not cook_dataset(small_root, tmp_path, sizes=(16,), modes=("RGB",), workers=1)[0].skipped
    assert oct((tmp_path / "set-16x16-RGB.h5").stat().st_mode & 0o777) != "0o600"
    assert _leftovers(tmp_path) == []


def test_an_image_changed_in_place_makes_the_rerun_rebuild(small_root: Path, tmp_path: Path) -> None:
    root = _copy_tree(small_root, tmp_path / "raw")
    args = dict(sizes=(16,), modes=("RGB",), workers=1)
    cook_dataset(root, tmp_path / "out", **args)
    image = sorted((root / "GTSRB" / "Final_Test" / "Images").glob("*.ppm"))[0]
    data = bytearray(image.read_bytes())
    data[-1] ^= 0xFF  # same size, same name, other pixels: the fingerprint hashes contents
    image.write_bytes(bytes(data))
    assert not cook_dataset(root, tmp_path / "out", **args)[0].skipped


_KILL_SCRIPT = """
import sys, time
from gtsrb_kit.cook import cook_dataset

def progress(description, done, total):
    if description == "cooking" and done > 0:
        print("CHUNK", flush=True)
        time.sleep(120)

cook_dataset(sys.argv[1], sys.argv[2], sizes=(16,), modes=("L", "RGB"), workers=int(sys.argv[3]), progress=progress)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_end_when_a_killed_cook_ends(small_root: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(small_root), str(tmp_path / "out"), "2"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "CHUNK"
        children = [int(line.split()[0]) for line in subprocess.run(
            ["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout.splitlines()
            if int(line.split()[1]) == proc.pid]
        assert len(children) >= 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(c) for c in children)


def test_killed_cook_leaves_no_final_file_and_rerun_completes(small_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(small_root), str(out), "1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "CHUNK"  # one chunk of both files is on disk
        assert any(p.name.endswith(".tmp") for p in out.iterdir())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert sorted(out.glob("set-*.h5")) == []  # nothing under a final name
    left = sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))
    assert left and all(f"~{proc.pid}." in name for name in left)  # host~pid of the killed writer
    # not stale: a temporary of a live process, and one from another node sharing the folder
    alive = out / f".set-16x16-L.h5.{left[0].split('.')[3].split('~')[0]}~{os.getpid()}.x.tmp"
    other_host = out / f".set-16x16-L.h5.another-node~{proc.pid}.y.tmp"
    alive.write_bytes(b"")
    other_host.write_bytes(b"")
    results = cook_dataset(small_root, out, sizes=(16,), modes=("L", "RGB"), workers=1)
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == sorted([alive.name, other_host.name])
    assert [r.path.name for r in results] == ["set-16x16-L.h5", "set-16x16-RGB.h5"]
    assert sorted(p.name for p in out.glob("set-*.h5")) == ["set-16x16-L.h5", "set-16x16-RGB.h5"]
    assert load_split(results[0].path, "train")[0].shape[0] == results[0].counts["train"]


# --------------------------------------------------------------------------- bad input


def test_unreadable_image_is_skipped_or_fatal_with_strict(small_root: Path, tmp_path: Path) -> None:
    root = _copy_tree(small_root, tmp_path / "root")
    catalog = read_catalog(root, verify="none")
    victim = Path(catalog[catalog["split"] == "train"].iloc[3]["path"])
    victim.write_bytes(b"P6\n40 40\n255\n" + b"\x00" * 10)  # truncated PPM
    out = tmp_path / "out"
    code, message = _failure(runner.invoke(app, ["cook", "--root", str(root), "--out", str(out), "--size", "16",
                                                 "--mode", "L", "--strict", "--workers", "1"]))
    assert code == 1 and str(victim) in message and "--strict" in message
    assert list(out.iterdir()) == []
    ok = runner.invoke(app, ["cook", "--root", str(root), "--out", str(out), "--size", "16", "--mode", "L",
                             "--workers", "2"])
    assert ok.exit_code == 0, ok.output
    assert "warning: skipped 1 image(s)" in ok.stderr and victim.name in ok.stderr
    info = read_info(out / "set-16x16-L.h5")
    assert info["skipped_images"] == 1
    assert info["splits"]["train"]["count"] + info["splits"]["val"]["count"] == int((catalog["split"] == "train").sum()) - 1
    with h5py.File(out / "set-16x16-L.h5") as handle:
        assert str(victim.relative_to(root)) not in _strings(handle, "path_train") + _strings(handle, "path_val")


@pytest.mark.parametrize(("option", "expected"), [
    (["--mode", "HSV"], "unknown mode 'HSV'"),
    (["--scale", "0"], "scale must be in (0, 1]"),
    (["--scale", "1.5"], "scale must be in (0, 1]"),
    (["--scale", "-0.2"], "scale must be in (0, 1]"),
    (["--val-fraction", "1"], "val_fraction"),
    (["--size", "2"], "image size 2"),
])
def test_cli_rejects_bad_options_with_one_line_errors(small_root: Path, tmp_path: Path, option: list[str],
                                                      expected: str) -> None:
    base = ["cook", "--root", str(small_root), "--out", str(tmp_path / "out"), "--size", "16", "--workers", "1"]
    code, message = _failure(runner.invoke(app, [*base, *option]))
    assert code == 2 and expected in message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cli_rejects_bad_folders(small_root: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, message = _failure(runner.invoke(app, ["cook", "--root", str(small_root), "--out", str(a_file)]))
    assert code == 1 and f"{a_file}: is a file, not a folder" in message
    code, message = _failure(runner.invoke(app, ["cook", "--root", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]))
    assert code == 1 and "no such folder" in message


def test_read_only_output_folder(synth_root: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere it may chmod; /sys refuses even root
        target = Path("/sys/kernel")
        if not target.is_dir():
            pytest.skip("no read-only folder available to root")
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o555)
    code, message = _failure(runner.invoke(app, ["cook", "--root", str(synth_root), "--out", str(target), "--size",
                                                 "16", "--mode", "L"]))
    assert code == 1 and f"{target}: cannot write there" in message
    assert not list(target.glob("set-*.h5"))


def test_full_disk_leaves_nothing_half_written(small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    calls = {"n": 0}
    real = store_module.VariantWriter.write_chunk

    def failing(self, split, chunk, encoded):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real(self, split, chunk, encoded)

    monkeypatch.setattr(store_module.VariantWriter, "write_chunk", failing)
    code, message = _failure(runner.invoke(app, ["cook", "--root", str(small_root), "--out", str(out), "--size", "16",
                                                 "--mode", "L", "--mode", "RGB", "--workers", "1"]))
    assert code == 1 and "No space left on device" in message
    assert list(out.iterdir()) == []  # no final file, no temporary file
    with pytest.raises(OSError):
        cook_dataset(small_root, out, sizes=(16,), modes=("L",), workers=1)
    assert list(out.iterdir()) == []


def test_library_errors(small_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no mode given"):
        cook_dataset(small_root, tmp_path, modes=())
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        cook_dataset(small_root, tmp_path, workers=0)
    empty = tmp_path / "empty" / "GTSRB" / "Final_Training" / "Images"
    empty.mkdir(parents=True)
    with pytest.raises(DataError, match="no training images"):
        cook_dataset(tmp_path / "empty", tmp_path / "out")


# --------------------------------------------------------------------------- CLI end to end


def test_synth_then_cook_with_defaults_then_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    made = runner.invoke(app, ["synth", "--tracks-per-class", "1", "--frames-per-track", "2", "--test-per-class", "1"])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["cook", "--scale", "0.2", "--out", "./data"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "data").glob("set-*.h5"))
    assert names == sorted(f"set-{s}x{s}-{m}.h5" for s in (24, 48) for m in ("RGB", "RGB-HE", "L", "L-LHE"))
    assert "cook: 8 written, 0 up to date" in result.stdout and "set-48x48-L-LHE.h5" in result.stdout
    again = runner.invoke(app, ["cook", "--scale", "0.2", "--out", "./data"])
    assert again.exit_code == 0 and "cook: 0 written, 8 up to date" in again.stdout
    shown = runner.invoke(app, ["info", "data/set-24x24-L.h5"])
    assert shown.exit_code == 0, shown.output
    assert "24x24x1" in shown.stdout and "mode: L" in shown.stdout and "scale: 0.2" in shown.stdout
    assert runner.invoke(app, ["info", "data"]).stdout.count("set-") == 8
    code, message = _failure(runner.invoke(app, ["info", "data/set-99x99-RGB.h5"]))
    assert code == 1 and "no such file" in message


def test_small_chunks_cook_alike_with_one_or_two_workers(small_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunks: many more chunks than are in flight; both ways write the same bytes."""
    monkeypatch.setattr(store_module, "CHUNK_IMAGES", 4)
    args = dict(sizes=(16, 20), modes=("RGB", "L"), scale=1.0, seed=1)
    pooled = cook_dataset(small_root, tmp_path / "pool", workers=2, **args)
    inline = cook_dataset(small_root, tmp_path / "inline", workers=1, **args)
    for a, b in zip(pooled, inline):
        with h5py.File(a.path) as fa:
            chunks = sum(fa[f"x_{split}"].id.get_num_chunks() for split in ("train", "val", "test", "meta"))
            assert fa["x_train"].chunks[0] <= 4 and chunks > 20
        assert a.path.read_bytes() == b.path.read_bytes(), a.variant


def test_files_cooked_from_a_synth_tree_say_so(small_root: Path, tmp_path: Path) -> None:
    from gtsrb_kit.synth import MARKER

    root = _copy_tree(small_root, tmp_path / "root")
    (root / MARKER).write_text("{}")  # what gtsrb-kit synth leaves at its root
    (synthetic,) = cook_dataset(root, tmp_path / "syn", sizes=(16,), modes=("L",), workers=1)
    (root / MARKER).unlink()
    (plain,) = cook_dataset(root, tmp_path / "plain", sizes=(16,), modes=("L",), workers=1)
    with h5py.File(synthetic.path) as a, h5py.File(plain.path) as b:
        assert bool(a.attrs["source_synthetic"]) and "source_synthetic" not in b.attrs
