"""`deepclust train` and `evaluate` end to end on a tiny data set."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
from deepclust.cli.main import app  # noqa: E402

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
FAST = ["--hidden", "32,32", "--latent-dim", "3", "--epochs", "10", "--batch-size", "32", "--n-init", "3", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (3, 12))
    y = np.repeat(np.arange(3), 60)
    np.savez(d / "blobs.npz", x=(centers[y] + rng.normal(0, 1, (180, 12))).astype(np.float32), y=y)
    return d / "blobs.npz"


def test_train_json_then_evaluate_gives_the_same_scores(tmp_path, data):
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "b"), "--json", *FAST])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["k"] == 3  # inferred from the labels
    assert result["checks"]["label_agreement"] >= 0.999
    assert set(result["timings"]) >= {"pretrain_seconds", "cluster_seconds", "export_seconds"}
    r = runner.invoke(app, ["evaluate", str(tmp_path / "b"), str(data), "--json", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metrics"] == result["metrics"]  # the exact pipeline: the very same labels
    # auto may score with int8, whose labels can differ on a few rows: the output says which ran
    r = runner.invoke(app, ["evaluate", str(tmp_path / "b"), str(data), "--json"])
    assert json.loads(r.output)["precision"] == "int8"
    r = runner.invoke(app, ["evaluate", str(tmp_path / "b"), str(data)])
    assert f"rowsscoredby{tmp_path / 'b'}(int8)" in "".join(r.output.split())  # the title wraps anywhere


def test_train_prints_a_readable_summary(tmp_path, data):
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "b"), *FAST])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # rich wraps long lines at the terminal width
    assert "s/epoch on cpu" in text and "runtime parity: labels agree on" in text
    assert "int8 pipeline: labels agree with fp32 on" in text
    assert "bundle written to" in text and r.output.replace("\n", "").endswith(f"{tmp_path / 'b'}")


def test_train_no_int8_exports_only_the_exact_pipeline(tmp_path, data):
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "b"), "--no-int8", "--json", *FAST])
    assert r.exit_code == 0, r.output
    assert "int8" not in json.loads(r.output)["checks"]
    assert (tmp_path / "b" / "pipeline.onnx").is_file() and not (tmp_path / "b" / "pipeline.int8.onnx").exists()


def test_train_with_the_head_student_says_why_it_exports_no_int8_pipeline(tmp_path, data):
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "b"), "--method", "selflabel",
                            "--student", "head", "--pretrain-runs", "2", *FAST])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "int8 pipeline: not exported; the head student scores slower in int8 than in fp32" in text
    assert not (tmp_path / "b" / "pipeline.int8.onnx").exists()
    params = json.loads((tmp_path / "b" / "manifest.json").read_text())["method"]["params"]
    assert (params["student"], params["pretrain_runs"]) == ("head", 2)


def test_train_refuses_existing_out_before_training(tmp_path, data):
    (tmp_path / "b").mkdir()
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "b"), *FAST])
    assert r.exit_code == 1 and "already exists (pass --overwrite" in r.output
    assert list((tmp_path / "b").iterdir()) == []


def test_unknown_data_set_name(tmp_path):
    r = runner.invoke(app, ["train", "--data", "imagenet-42", "--out", str(tmp_path / "b"), *FAST])
    assert r.exit_code == 1
    assert r.output.startswith("error: imagenet-42: unknown data set")
    assert not (tmp_path / "b").exists()


def test_unlabelled_data_needs_k(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((50, 4)).astype(np.float32))
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "b"), *FAST])
    assert r.exit_code == 1 and "--k is required" in r.output


def test_training_data_with_nan_is_refused(tmp_path):
    x = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    x[7, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "x.npy"), "--k", "2", "--out", str(tmp_path / "b"),
                            *FAST])
    assert r.exit_code == 1 and "x.npy: row 7 holds NaN" in " ".join(r.output.split())
    assert not (tmp_path / "b").exists()


def test_evaluate_without_labels(tmp_path, reference_bundle):
    np.save(tmp_path / "x.npy", np.zeros((5, 64), np.float32))
    r = runner.invoke(app, ["evaluate", str(reference_bundle), str(tmp_path / "x.npy")])
    # where labels come from, not an option that .npy data refuses (--label-column)
    assert r.exit_code == 1 and "has no labels" in r.output and "an .npz's y" in " ".join(r.output.split())


def test_evaluate_names_the_data_whose_rows_do_not_fit(tmp_path, reference_bundle):
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 65), np.float32), y=np.arange(5))
    r = runner.invoke(app, ["evaluate", str(reference_bundle), str(tmp_path / "d.npz")])
    assert r.exit_code == 1
    assert f"{tmp_path / 'd.npz'}: rows have 65 values, the model expects 64" in " ".join(r.output.split())


def test_train_conv_with_augmentation_and_acai_writes_a_bundle(tmp_path):
    r = runner.invoke(app, ["train", "--data", "digits", "--out", str(tmp_path / "b"), "--architecture", "conv",
                            "--filters", "8,16,16", "--augment", "--acai", "--epochs", "1", "--latent-dim", "5",
                            "--batch-size", "64", "--n-init", "2", "--json", "-q"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["k"] == 10 and result["checks"]["label_agreement"] >= 0.999
    params = json.loads((tmp_path / "b" / "manifest.json").read_text())["method"]["params"]
    assert {k: params[k] for k in ("architecture", "filters", "augment", "acai")} == {
        "architecture": "conv", "filters": [8, 16, 16], "augment": True, "acai": True}
    r = runner.invoke(app, ["evaluate", str(tmp_path / "b"), "digits", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metrics"]["acc"] == pytest.approx(result["metrics"]["acc"], abs=1e-3)


@pytest.mark.parametrize("option", [["--architecture", "conv"], ["--augment"], ["--pretrain", "contrastive"]])
def test_image_options_on_table_data_fail_with_one_line(tmp_path, data, option):
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "b"), *option, *FAST])
    assert r.exit_code == 1
    text = " ".join(r.output.split())
    assert text.startswith("error: ") and "needs image samples" in text and "got sample shape (12,)" in text
    assert not (tmp_path / "b").exists()


def test_bad_filters_are_named():
    r = runner.invoke(app, ["train", "--data", "digits", "--out", "unused", "--filters", "8,x"])
    assert r.exit_code == 1 and "--filters='8,x' should be comma-separated integers" in " ".join(r.output.split())


def test_train_help_describes_the_architecture_and_training_options():
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"})  # one line per option
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for phrase in ("--architecture", "DEC-DA's convolutional", "--filters", "--augment", "randomly warped images",
                   "--acai", "adversarial regulariser", "--student", "a fresh convolutional encoder",
                   "every pretrained network, frozen, with a small head",
                   "--pretrain", "(SimCLR)", "--hflip", "wrong for digits and text", "--views",
                   "rotation up to 8 degrees, no cutout", "--teacher-runs", "consensus",
                   "--teacher-inits", "the most likely fit teaches", "30 with --pretrain contrastive",
                   "--pretrain-runs", "networks to pretrain, each from its own seed", "give it N times",
                   "--student-ema", "moving average of the student's weights"):
        assert phrase in text, phrase


def test_train_with_contrastive_pretraining_writes_a_bundle_and_refuses_dec(tmp_path):
    common = ["train", "--data", "digits", "--pretrain", "contrastive", "--hflip", "--views", "mild", "--epochs", "1",
              "--json", "-q"]
    r = runner.invoke(app, [*common, "--out", str(tmp_path / "b"), "--method", "kmeans", "--n-init", "2", "--no-int8"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["checks"]["label_agreement"] >= 0.999
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["method"]["name"] == "contrastive+kmeans" and manifest["latent_dim"] == 128
    assert {k: manifest["method"]["params"][k] for k in ("pretraining", "hflip", "views")} == {
        "pretraining": "contrastive", "hflip": True, "views": "mild"}
    r = runner.invoke(app, [*common, "--out", str(tmp_path / "c"), "--method", "dec"])
    assert r.exit_code == 1 and "method='dec' fine-tunes an autoencoder" in " ".join(r.output.split())
    assert not (tmp_path / "c").exists()


def test_pretrain_runs_need_selflabel_and_one_file_per_network(tmp_path):
    common = ["train", "--data", "digits", "--pretrain-runs", "2", "--out", str(tmp_path / "b")]
    r = runner.invoke(app, [*common, "--method", "kmeans"])
    assert r.exit_code == 1 and "--pretrain-runs applies to --method selflabel" in " ".join(r.output.split())
    r = runner.invoke(app, [*common, "--save-pretrained", str(tmp_path / "one.npz")])
    assert r.exit_code == 1
    assert "--save-pretrained given 1 time(s) for --pretrain-runs 2: give one file per pretrained network" in " ".join(
        r.output.split())
    assert not (tmp_path / "b").exists() and not (tmp_path / "one.npz").exists()


def test_student_without_selflabel_is_refused(tmp_path):
    r = runner.invoke(app, ["train", "--data", "digits", "--out", str(tmp_path / "b"), "--method", "kmeans",
                            "--student", "conv"])
    assert r.exit_code == 1 and "--student conv applies to --method selflabel" in " ".join(r.output.split())
    r = runner.invoke(app, ["train", "--data", "digits", "--out", str(tmp_path / "b"), "--method", "kmeans",
                            "--student-ema", "2"])
    assert r.exit_code == 1 and "--student-ema applies to --method selflabel" in " ".join(r.output.split())
    assert not (tmp_path / "b").exists()


def test_default_method_is_the_recommended_one_for_images_and_kmeans_for_tables(tmp_path, data):
    tiny = ["--hidden", "32,32", "--latent-dim", "4", "--epochs", "1", "--n-init", "2", "--no-int8", "--json", "-q"]
    for source, expected in [("digits", {"method": "selflabel", "augment": True}),
                             (str(data), {"method": "kmeans", "augment": False})]:
        out = tmp_path / expected["method"]
        r = runner.invoke(app, ["train", "--data", source, "--out", str(out), *tiny])
        assert r.exit_code == 0, r.output
        result = json.loads(r.output)
        assert result["method"] == expected["method"]
        if expected["method"] == "selflabel":  # the teacher's own score travels with the student's
            assert 0 < result["fine_tune"]["teacher_acc"] <= 1
            # images: a convolutional student ships, trained from scratch for longer
            assert result["fine_tune"]["student"] == "conv" and result["fine_tune"]["epochs"] == 20
        params = json.loads((out / "manifest.json").read_text())["method"]["params"]
        assert {k: params[k] for k in expected} == expected


def _help_panels(command: str) -> dict[str, str]:
    """Map each option of `deepclust COMMAND --help` to the heading of the panel it is listed under."""
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})  # one line per option
    assert r.exit_code == 0
    panels, panel = {}, None
    for line in r.output.splitlines():
        if line.startswith("╭─ "):
            panel = line[3:].split(" ─")[0]
        elif line.startswith("│") and panel:
            for word in line.strip("│ *").split():
                if word.startswith("--"):
                    panels.setdefault(word, panel)
                    break
    return panels


def test_train_help_lists_options_under_the_stage_they_configure():
    panels = _help_panels("train")
    expected = {
        "Data": {"--data", "--k", "--data-dir", "--label-column", "--ignore-column"},
        "Pretraining": {"--pretrain", "--hflip", "--views", "--epochs", "--architecture", "--augment", "--acai",
                        "--save-pretrained", "--pretrained"},
        "Clustering": {"--method", "--normalize", "--n-init"},
        "Self-labelling (--method selflabel)": {"--student", "--teacher-runs", "--teacher-inits", "--pretrain-runs",
                                                "--student-ema"},
        "Fine-tuning (--method dec, idec, dcn, dkm)": {"--init", "--update-interval", "--tol", "--max-iter"},
        "Output": {"--out", "--int8", "--overwrite", "--json", "--quiet"},
    }
    for panel, options in expected.items():
        assert {o: panels.get(o) for o in options} == dict.fromkeys(options, panel)
    # Only what applies to every stage stays in the catch-all panel.
    assert {o for o, p in panels.items() if p == "Options"} == {"--seed", "--device", "--help"}


def test_assign_help_groups_output_scoring_and_engine_options():
    panels = _help_panels("assign")
    expected = {
        "Output": {"--output", "--soft", "--embeddings", "--keep-column", "--resume", "--chunk-rows", "--overwrite"},
        "Scoring": {"--batch-size", "--device", "--precision"},
        "Engine": {"--engine", "--actors"},
        "Options": {"--quiet", "--help"},
    }
    assert panels == {o: panel for panel, options in expected.items() for o in options}


def test_readme_pretrain_once_recipe_runs_as_written(tmp_path, monkeypatch):
    # Under --method auto, images turn --augment on, which the file must match: the recipe names its methods.
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index("**Pretrain once, try several heads**"):], re.S).group(1)
    commands = [shlex.split(line.split("#")[0])[1:] for line in block.splitlines() if line.startswith("deepclust ")]
    assert len(commands) == 2 and "--save-pretrained" in commands[0] and "--pretrained" in commands[1]
    monkeypatch.chdir(tmp_path)  # the recipe's relative paths land here
    tiny = ["--epochs", "1", "--hidden", "32,32", "--latent-dim", "3", "--n-init", "2", "--update-interval", "10",
            "--max-iter", "20", "--no-int8", "-q"]
    for args in commands:
        args = ["digits" if previous == "--data" else a for previous, a in zip([None, *args], args)]  # not mnist
        r = runner.invoke(app, [*args, *tiny])
        assert r.exit_code == 0, r.output


def test_pretrained_file_of_other_options_names_the_flag_to_pass(tmp_path):
    common = ["train", "--data", "digits", "--hidden", "16", "--latent-dim", "3", "--epochs", "1", "--n-init", "1",
              "--no-int8", "-q"]
    r = runner.invoke(app, [*common, "--method", "kmeans", "--out", str(tmp_path / "a"),
                            "--save-pretrained", str(tmp_path / "ae.npz")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*common, "--method", "gmm", "--augment", "--out", str(tmp_path / "b"),
                            "--pretrained", str(tmp_path / "ae.npz")])
    assert r.exit_code == 1 and "pass --no-augment to start from it" in " ".join(r.output.split())


def test_ctrl_c_prints_interrupted_and_exits_130(tmp_path, monkeypatch):
    from deepclust.trainer import datasets

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "load_dataset", interrupt)
    r = runner.invoke(app, ["train", "--data", "digits", "--out", str(tmp_path / "b")])
    assert r.exit_code == 130 and r.output.strip() == "interrupted"


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training gets as far as loading the data."""
    from deepclust.trainer import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("reached loading the data"))


@pytest.mark.parametrize("case, message", [
    ("save-pretrained is a folder", "folder: is a folder; a pretrained network is saved to a file"),
    ("save-pretrained exists", "ae.npz: file already exists (pass --overwrite to replace it)"),
    ("save-pretrained under a file", "file.txt is a file, not a folder"),
    ("out under a file", "file.txt is a file, not a folder"),
    ("out is a user folder", "user: not a model bundle; --overwrite replaces only a bundle folder"),
    ("out is a file", "file.txt: not a model bundle; --overwrite replaces only a bundle folder"),
])
def test_output_paths_are_checked_before_training(tmp_path, no_training, case, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "ae.npz").write_text("mine")
    out, extra = {
        "save-pretrained is a folder": ("b", ["--save-pretrained", "folder"]),
        "save-pretrained exists": ("b", ["--save-pretrained", "ae.npz"]),
        "save-pretrained under a file": ("b", ["--save-pretrained", "file.txt/ae.npz"]),
        "out under a file": ("file.txt/b", []),
        "out is a user folder": ("user", ["--overwrite"]),
        "out is a file": ("file.txt", ["--overwrite"]),
    }[case]
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    r = runner.invoke(app, ["train", "--data", "digits", "--out", str(tmp_path / out),
                            *[str(tmp_path / a) if not a.startswith("--") else a for a in extra]])
    assert r.exit_code == 1 and message in " ".join(r.output.split()), r.output
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing left, nothing lost


@pytest.mark.parametrize("option", [["--seed", "-1"], ["--seed", "4294967296"], ["--lr", "0"], ["--tol", "1"],
                                    ["--k", "1"]])
def test_out_of_range_options_are_usage_errors(tmp_path, no_training, option):
    r = runner.invoke(app, ["train", "--data", "digits", "--out", str(tmp_path / "b"), *option])
    assert r.exit_code == 2 and f"Invalid value for '{option[0]}'" in r.output


def test_help_shows_the_bounds_that_apply():
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    lines = {}
    for line in r.output.splitlines():
        option = next((word for word in line.strip("│ *").split()[:1] if word.startswith("--")), None)
        lines.setdefault(option, line)
    assert "[x>=0.0]" not in lines["--lr"] and "Adam learning rate (> 0)" in lines["--lr"]
    assert "x<=1.0" not in lines["--tol"] and "(>= 0 and < 1)" in lines["--tol"]
    assert "[0<=x<=4294967295]" in lines["--seed"] and "[x>=2]" in lines["--k"]


def test_labels_of_one_class_are_refused(tmp_path):
    (tmp_path / "d.csv").write_text("f,cls\n" + "".join(f"{i},a\n" for i in range(10)))
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "d.csv"), "--label-column", "cls",
                            "--out", str(tmp_path / "b"), *FAST])
    assert r.exit_code == 1 and "the labels hold one class, and clustering needs k >= 2" in " ".join(r.output.split())


def test_int8_report_says_calibration_rows_when_none_were_held_out(tmp_path):
    # Under 100 rows every row calibrates the int8 pipeline, and the manifest says so (held_out false).
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(0, 1, (60, 6)).astype(np.float32))
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "x.npy"), "--k", "2", "--out", str(tmp_path / "b"),
                            *FAST])
    assert r.exit_code == 0, r.output
    assert "int8 pipeline: labels agree with fp32 on" in r.output
    assert " of 60 calibration rows" in " ".join(r.output.split()) and "held-out" not in r.output
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["checks"]["int8"]["held_out"] is False


def test_demo_trains_scores_and_reruns_in_its_working_folder_without_piling_up_files(tmp_path):
    (tmp_path / "file").write_text("")
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "file"), "--epochs", "1"])
    assert r.exit_code == 1 and "file: is a file; --out is the demo's working folder" in r.output
    for rows in (3000, 2000):
        r = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--epochs", "1", "--rows", str(rows)])
        assert r.exit_code == 0, r.output
        assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["assignments.parquet", "bundle", "rows.npy"]
        assert pq.read_metadata(tmp_path / "demo" / "assignments.parquet").num_rows == rows
        assert f"scoring: {rows:,} rows" in r.output and "runtime (ONNX)" in r.output


def test_train_and_assign_read_a_parquet_vector_column(tmp_path, data):
    # Embeddings with their ids, as pyarrow, Spark or LanceDB store them: was "not numeric"
    import pyarrow as pa

    blobs = np.load(data)
    x, y = blobs["x"], blobs["y"]
    pq.write_table(pa.table({"doc": [f"d{i}" for i in range(len(x))], "y": y,
                             "emb": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])}),
                   tmp_path / "emb.parquet")
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "emb.parquet"), "--ignore-column", "doc",
                            "--label-column", "y", "--out", str(tmp_path / "b"), "--json", *FAST])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metrics"]["acc"] > 0.95
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["input"]["feature_names"] == [f"emb[{j}]" for j in range(x.shape[1])]
    r = runner.invoke(app, ["assign", str(tmp_path / "b"), str(tmp_path / "emb.parquet"), "-o",
                            str(tmp_path / "out.parquet"), "--keep-column", "doc", "-q"])
    assert r.exit_code == 0, r.output
    out = pq.read_table(tmp_path / "out.parquet")
    assert out["doc"].to_pylist() == [f"d{i}" for i in range(len(x))] and out.num_rows == len(x)
