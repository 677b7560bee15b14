"""training/pretrain.py end to end: the demo preset, shrunk, in a temporary folder."""

import glob
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.cli.pretrain import RESULT_RULE, parse_args, resolve_config
from byol_keras.onednn import allocator_state, onednn_state
from byol_keras.presets import FIELDS, PRESETS, get_preset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def event_tags(folder):
    tags = set()
    for path in glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.add(value.tag)
    return tags


def test_presets_have_every_field_and_overrides_apply():
    for name, preset in PRESETS.items():
        assert set(FIELDS) <= set(preset), (name, set(FIELDS) - set(preset))
    config = get_preset("cifar10-resnet18", epochs=3, batch_size=None)
    assert config["epochs"] == 3 and config["batch_size"] == 256
    paper = get_preset("imagenet-resnet50")
    assert (paper["base_learning_rate"], paper["weight_decay"], paper["base_tau"]) == (0.2, 1.5e-6, 0.996)
    assert get_preset("imagenet-resnet50-300")["base_learning_rate"] == 0.3
    with pytest.raises(ValueError, match="preset='nope'"):
        get_preset("nope")
    with pytest.raises(ValueError, match="colour=1"):
        get_preset("demo", colour=1)


def test_flags_override_the_preset(tmp_path):
    args = parse_args(["--preset", "demo", "--epochs", "4", "--width", "4", "--out", str(tmp_path), "--export", "none"])
    config = resolve_config(args)
    assert config["epochs"] == 4 and config["encoder"]["widths"] == (4, 8, 16)  # the demo's ConvNet, doubling
    cifar = resolve_config(parse_args(["--preset", "cifar10-resnet18", "--width", "16"]))
    assert cifar["encoder"]["width"] == 16
    assert config["run_dir"] == str(tmp_path) and config["export_base_path"] is None
    assert config["batch_size"] == PRESETS["demo"]["batch_size"]
    # The pixel limit: the library's default unless set (`run` records the value it used in config.json).
    assert config["max_pixels"] is None
    assert resolve_config(parse_args(["--preset", "demo", "--max-pixels", "4000000"]))["max_pixels"] == 4_000_000


def test_optimizer_choices_decay_as_documented():
    from byol_keras.byol import BYOL
    from byol_keras.encoders import resnet18
    from byol_keras.optimizers import LARS
    from byol_keras.optimizers import build_optimizer

    model = BYOL(resnet18(width=4, input_shape=(8, 8, 3)), projection_dim=8, projection_hidden_dim=16,
                 prediction_hidden_dim=16, num_classes=3)
    model(np.zeros((2, 8, 8, 3), "float32"))
    probe = {v.path for v in model.probe.trainable_variables}
    config = get_preset("demo", optimizer="sgd-l2", weight_decay=1e-3)
    sgd_l2 = build_optimizer(config, steps_per_epoch=10, total_steps=100, model=model)
    assert isinstance(sgd_l2, LARS) and sgd_l2.trust_coefficient is None
    sgd_l2.build(model.trainable_variables)
    # Coupled decay on every variable (kernels, biases, BN) except the probe's; no trust ratio anywhere.
    for variable, decayed in zip(model.trainable_variables, sgd_l2._decayed):
        assert decayed == (variable.path not in probe), variable.path
    lars = build_optimizer(dict(config, optimizer="lars"), 10, 100, model)
    lars.build(model.trainable_variables)
    for variable, decayed in zip(model.trainable_variables, lars._decayed):
        assert decayed == (len(variable.shape) > 1 and variable.path not in probe), variable.path
    sgd = build_optimizer(dict(config, optimizer="sgd"), 10, 100, model)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.weight_decay == 1e-3
    sgd.build(model.trainable_variables)
    assert not any(sgd._use_weight_decay(v) for v in model.probe.trainable_variables)
    assert all(sgd._use_weight_decay(v) for v in model.encoder.trainable_variables)
    with pytest.raises(ValueError, match="optimizer='adam'"):
        build_optimizer(dict(config, optimizer="adam"), 10, 100, model)
    # The flag's vocabulary (presets.OPTIMIZERS, read without TensorFlow) is exactly what build_optimizer builds.
    from byol_keras.presets import OPTIMIZERS

    assert sorted(OPTIMIZERS) == sorted(["lars", "sgd-l2", "sgd"])


@pytest.fixture
def step_without_xla(monkeypatch):
    """The training step as `resolve_jit_compile` chooses it with oneDNN on (XLA off), also when this process runs
    with oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`, where "auto" picks XLA). For the tests of resuming: XLA only adds
    a compilation to every launch there (~5 s each), and XLA's step is tested in test_demo_command_end_to_end
    (whose run compiles it) and tests/test_fast_paths.py."""
    from byol_keras import distribute

    monkeypatch.setattr(distribute, "_onednn_enabled", lambda: True)


DEMO = [sys.executable, "-m", "training.pretrain", "--preset", "demo", "--steps-per-epoch", "2", "--width", "4",
        "--backup-every", "2"]


# The tests that use this module fixture share a pytest-xdist worker (tests/conftest.py), so it is made once.


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`(run_dir, export, result)`: the demo command, shrunk to 2 epochs of 2 steps, run once for this module.

    The end-to-end test reads it; the resume and TensorBoard tests work on copies of its folders.
    """
    base = tmp_path_factory.mktemp("demo")
    run_dir, export = base / "run", base / "saved_models" / "demo"
    command = DEMO + ["--epochs", "2", "--out", str(run_dir), "--export", str(export)]
    # The console a user gets by default: without a TF_CPP_MIN_LOG_LEVEL of their own.
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "BYOL_KERAS_SET_TF_LOG_LEVEL")}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, export, result


@pytest.mark.slow
def test_demo_command_end_to_end(demo_run):
    run_dir, export, result = demo_run
    # Into a pipe (not a terminal) the default progress is a plain line per few epochs, no bars; then the
    # closing lines, set apart by a blank line and a rule.
    assert "\r" not in result.stdout and "\x1b" not in result.stdout, result.stdout[-3000:]
    lines = result.stdout.splitlines()
    assert [l.split()[:2] for l in lines[:2]] == [["epoch", "1/2"], ["epoch", "2/2"]], lines
    assert "knn_top1" in lines[1] and lines[2:4] == ["", RESULT_RULE] and lines[4].startswith("BYOL demo"), lines
    assert len(lines) == 7, lines
    # No TensorFlow start-up log (C++ INFO lines, a failed cuInit without a GPU), no AutoGraph notice, no INFO line
    # of another library's Python logger: byol_keras' own choices only.
    noise = re.compile(r"^[IWE]\d{4} |cuInit|oneDNN custom operations are on|absl::InitializeLog|AutoGraph|"
                       r"Sharding callback", re.MULTILINE)
    assert not noise.search(result.stderr + result.stdout), result.stderr[-3000:]
    assert "Distribution: --strategy auto" in result.stderr, result.stderr[-3000:]  # our INFO lines stay
    # The printed summary line with both accuracies and the export.
    line = [l for l in result.stdout.splitlines() if l.startswith("BYOL demo")][-1]
    assert "kNN top-1" in line and "(random init)" in line and "(pretrained)" in line, line
    assert any(l.startswith("kNN top-1 on the raw pixels") for l in result.stdout.splitlines())
    assert any(l.startswith("encoder exported to") for l in result.stdout.splitlines())
    print(line)

    config = json.loads((run_dir / "config.json").read_text())
    assert config["total_steps"] == 4 and config["encoder"]["widths"] == [4, 8, 16]
    # oneDNN as this process has it: the child inherited the variable (set by the user or by conftest's
    # import of byol_keras, which the record tells apart) and TensorFlow's default is this machine's.
    assert config["onednn"] == onednn_state()
    assert config["cpu_allocator"] == allocator_state() and config["cpu_allocator"]["pooling"] is True
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4
    # Everything else the run decided: XLA (as the model compiled), synchronised BN, precision, versions.
    assert config["jit_compile"] is summary["jit_compile"] and config["jit_compile_reason"].startswith("XLA is")
    assert config["sync_bn"] is False and config["precision"] == "float32" and config["crop_fraction"] == 1.0
    assert config["versions"]["tensorflow"] == tf.__version__ and config["versions"]["keras"] == keras.__version__
    assert 0.0 <= summary["knn_top1_random_init"] <= 1.0 and 0.0 <= summary["knn_top1_pretrained"] <= 1.0

    tags = event_tags(str(run_dir / "logs"))
    for tag in ("loss", "tau", "learning_rate", "representation_std", "knn_top1", "views"):
        assert any(t == tag or t.endswith("/" + tag) for t in tags), (tag, sorted(tags))
    assert glob.glob(str(run_dir / "logs" / "projector" / "projector_config.pbtxt"))
    assert (run_dir / "checkpoints" / "latest.keras").exists()

    # The final model loads and is the same embedder as the export's `.keras` twin.
    from byol_keras import BYOL  # noqa: F401  (registers BYOL, LARS, WarmupCosine for loading)

    model = keras.saving.load_model(str(run_dir / "model.keras"))
    assert int(model.optimizer.iterations.numpy()) == 4
    version_dir = export / "1"
    assert (version_dir / "saved_model.pb").exists()
    served = tf.saved_model.load(str(version_dir))
    pixels = np.random.default_rng(0).integers(0, 255, size=(2, 32, 32, 3), dtype=np.uint8)
    out = served.signatures["embed_pixels"](images=tf.constant(pixels))
    from byol_keras.preprocessing import center_crop_resize, normalize

    expected = model(normalize(center_crop_resize(pixels, config["image_size"], config["crop_fraction"])))
    np.testing.assert_allclose(out["embedding"].numpy(), np.array(expected), atol=1e-4)


def test_quality_benchmark_recipes_build():
    # Every recipe of benchmarks/quality.py resolves to a configuration whose views, encoder and
    # optimizer build, so a typo in a recipe fails here rather than ten minutes into a benchmark.
    from byol_keras.views import BYOLAugment
    from byol_keras.encoders import build_encoder
    from byol_keras.optimizers import build_optimizer

    from benchmarks import quality
    assert {"lightly-tv", "short", "solo-learn"} <= set(quality.RECIPES)
    for name, (preset, changes) in quality.RECIPES.items():
        config = quality.build_config(name, "/nowhere", out="/tmp/unused")
        assert (config["batch_size"], config["epochs"], config["image_size"], config["blur"]) == (256, 10, 32, False)
        assert config["encoder"]["width"] == 16 and config["limit_per_class"] == 1000
        source = dict(get_preset(preset), **changes)
        for key in quality.RECIPE_FIELDS:
            assert config[key] == source[key], (name, key)
        assert config["encoder"].get("kernel_initializer") == source["encoder"].get("kernel_initializer"), name
        BYOLAugment(32, blur=False, **config["augment"])
        build_encoder(config["encoder"], 32)
        build_optimizer(config, steps_per_epoch=39, total_steps=390)


def test_peer_curve_reads_finished_unfinished_and_resumed_logs(tmp_path):
    from benchmarks.figures import peer_curve

    log = tmp_path / "peer.log"
    # A run killed after printing epoch 2 but before saving it, then resumed from epoch 1.
    log.write_text("\n".join(json.dumps(line) for line in [
        {"epoch": 0, "knn_top1": 0.3}, {"epoch": 1, "knn_top1": 0.31}, {"epoch": 2, "knn_top1": 0.32},
        {"resumed_at_epoch": 1, "step": 39}, {"epoch": 2, "knn_top1": 0.33}, {"epoch": 3, "knn_top1": 0.34},
    ]) + "\nnot json\n")
    curve, label = peer_curve(str(log))
    assert curve == [0.3, 0.31, 0.33, 0.34] and label.endswith("(stopped after epoch 3)")
    with open(log, "a") as f:
        f.write(json.dumps({"peer": "lightly", "seed": 0, "curve": [0.3, 0.31, 0.33, 0.34, 0.35]}) + "\n")
    assert peer_curve(str(log)) == ([0.3, 0.31, 0.33, 0.34, 0.35], "lightly (PyTorch), seed 0")


@pytest.mark.slow
def test_resumed_run_reports_the_true_random_init_and_the_raw_pixel_reference(demo_run, tmp_path, capsys,
                                                                            step_without_xla):
    # The finished 2-epoch demo run, then the same command on (a copy of) its run directory with 3 epochs:
    # it resumes at global step 4. The "random init" figure must be the one measured before the first step
    # of the first launch, and the kNN of the restored weights must be labelled as what it is.
    # The second launch is the command's `main` in this process (the program itself runs in `demo_run`;
    # a process of its own would only add TensorFlow's start-up).
    import shutil

    from byol_keras.cli.pretrain import main

    shutil.copytree(demo_run[0], tmp_path / "run")
    run_dir = tmp_path / "run"
    first_summary = json.loads((run_dir / "summary.json").read_text())
    stored = json.loads((run_dir / "knn_random_init.json").read_text())["knn_top1_random_init"]
    assert stored == first_summary["knn_top1_random_init"]
    capsys.readouterr()
    assert main(DEMO[3:] + ["--epochs", "3", "--out", str(run_dir), "--export", "none", "--verbose", "0"],
                prog="python -m training.pretrain") is not None
    stdout = capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 6
    assert summary["knn_top1_random_init"] == stored
    # The restored weights are the first launch's final ones, so their kNN is the first launch's "pretrained".
    assert summary["knn_top1_at_resume"] == pytest.approx(first_summary["knn_top1_pretrained"], abs=1e-6)
    line = [l for l in stdout.splitlines() if l.startswith("BYOL demo")][-1]
    assert f"{stored:.4f} (random init)" in line and "when resumed at step 4" in line, line
    # The raw-pixel reference: kNN on the normalised pixels of the same bank and queries, with a verdict.
    raw = [l for l in stdout.splitlines() if l.startswith("kNN top-1 on the raw pixels")][-1]
    assert f"{summary['knn_top1_raw_pixels']:.4f}" in raw and ("above" in raw)
    assert 0.9 < summary["knn_top1_raw_pixels"] <= 1.0  # 8×8 digits: pixels are a strong representation


def _tiny_run_config(out, *flags, **changes):
    """The demo's configuration shrunk to 2 steps an epoch of a 4-wide ConvNet, a backup every 2 steps, training
    alone (no kNN monitor, view grid or projector) and the views' maths not XLA-compiled: a few seconds a launch."""
    config = resolve_config(parse_args([
        "--preset", "demo", "--epochs", "1", "--steps-per-epoch", "2", "--width", "4", "--backup-every", "2",
        "--out", str(out), "--export", "none", *flags]))
    return dict(config, test_split=None, augment=dict(config["augment"], jit_compile=False), **changes)


@pytest.mark.slow
def test_a_resume_runs_on_the_runs_own_configuration_with_the_changes_it_may_make(tmp_path, capsys, step_without_xla):
    """Both halves of "config.json is the truth" on one run folder (docs/design.md, "Resuming a run"): a resume that
    extends the run (and changes its display) works and is recorded; one that changes what the training computes is
    refused, naming the flag and both values, before anything is built."""
    from byol_keras.experiment import run

    run_dir = tmp_path / "run"
    assert run(_tiny_run_config(run_dir, verbose=0))["steps"] == 2
    stored = json.loads((run_dir / "config.json").read_text())
    # A field no flag sets (the projector's width: as if this version's preset said otherwise) stays the run's: the
    # backup's weights only load into the run's own model.
    second = run(_tiny_run_config(run_dir, "--epochs", "2", "--knn-every", "5", verbose=2,
                                  projection_dim=2 * stored["projection_dim"]))
    assert second["resumed_from_step"] == 2 and second["steps"] == 4
    assert "Resuming with the run's own projection_dim" in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["epochs"], config["total_steps"], config["verbose"], config["knn_every_n_epochs"]) == (2, 4, 2, 5)
    assert config["projection_dim"] == stored["projection_dim"] and config["crop_fraction"] == stored["crop_fraction"]
    [resume] = config["resumes"]
    assert resume["step"] == 2
    assert {key: resume["changed"][key] for key in ("epochs", "total_steps", "verbose", "knn_every_n_epochs")} == {
        "epochs": [1, 2], "total_steps": [2, 4], "verbose": [0, 2], "knn_every_n_epochs": [25, 5]}
    assert "projection_dim" not in resume["changed"] and "batch_size" not in resume["changed"]

    from byol_keras import BYOL  # noqa: F401  (registers BYOL and its optimizer for loading)

    # τ's horizon is the extended run's, as the learning rate's (the backup's weights carried the first launch's 2).
    model = keras.saving.load_model(str(run_dir / "model.keras"))
    assert int(keras.ops.convert_to_numpy(model._total_steps)) == 4

    for flags, run_has, asked in [(["--batch-size", "64"], "--batch-size 128", "--batch-size 64"),
                                  (["--width", "8"], "--width 4", "--width 8"),
                                  (["--encoder", "resnet18"], "--encoder convnet", "--encoder resnet18"),
                                  (["--seed", "1"], "--seed 0", "--seed 1"),
                                  (["--preset", "cifar10-resnet18-short"], "--preset demo", "--preset cifar10")]:
        with pytest.raises(ValueError) as error:
            run(_tiny_run_config(run_dir, *flags))
        message = str(error.value)
        assert f"must keep its {flags[0]}:" in message, message
        assert f"the run has {run_has}, this command asks for {asked}" in message, message
    # Refused before anything was written: the run is as the second launch left it.
    assert json.loads((run_dir / "config.json").read_text()) == config


def test_a_resume_checks_the_data_the_batchnorm_and_the_end_against_the_run():
    from byol_keras.experiment import _check_resume

    stored = {"run_dir": "/runs/r", "data": "digits", "num_examples": 1437, "sync_bn": False, "replicas": 1,
              "epochs": 2, "steps_per_epoch": 2, "total_steps": 4, "verbose": 0}
    resumed = {"step": 3}
    config = dict(stored, epochs=3, total_steps=6, verbose=2)
    assert _check_resume(config, stored, resumed) == [
        {"step": 3, "changed": {"epochs": [2, 3], "total_steps": [4, 6], "verbose": [0, 2]}}]
    assert len(_check_resume(config, dict(stored, resumes=[{"step": 1, "changed": {}}]), resumed)) == 2
    with pytest.raises(ValueError, match=r"trained on 1437 images of 'digits'; this command finds 1000"):
        _check_resume(dict(config, num_examples=1000), stored, resumed)
    with pytest.raises(ValueError, match=r"has sync_bn=False .* would have sync_bn=True \(2 replica"):
        _check_resume(dict(config, sync_bn=True, replicas=2), stored, resumed)
    with pytest.raises(ValueError, match=r"resume it with --sync-bn"):
        _check_resume(config, dict(stored, sync_bn=True), resumed)
    with pytest.raises(ValueError, match=r"`epochs` must reach the run's backup at global step 3: 1 epochs of 2 steps "
                                         r"end at step 2.* Received: epochs=1"):
        _check_resume(dict(config, epochs=1, total_steps=2), stored, resumed)


def test_summary_lines_say_whether_the_encoder_beats_raw_pixels():
    from byol_keras.cli.pretrain import summary_lines

    summary = {"preset": "demo", "steps": 10, "seconds": 3.0, "knn_top1_random_init": 0.5, "knn_top1_pretrained": 0.8,
               "knn_top1_raw_pixels": 0.7, "resumed_from_step": None, "knn_top1_at_resume": None, "export_dir": None}
    lines = summary_lines(summary)
    assert lines[0] == "BYOL demo: 10 steps in 3 s; kNN top-1 0.5000 (random init) -> 0.8000 (pretrained)"
    assert lines[1] == "kNN top-1 on the raw pixels: 0.7000; the pretrained encoder is above it (+0.1000)"
    lines = summary_lines(dict(summary, knn_top1_raw_pixels=0.9, export_dir="/x/1"))
    assert "is not above it (-0.1000)" in lines[1] and lines[2] == "encoder exported to /x/1"


def _tensorboard_plugins(logdir, timeout=90):
    """The `data/plugins_listing` of a real `tensorboard` process serving `logdir` on localhost, once the
    projector has had time to look (its `is_active` answers from a background thread)."""
    import re
    import time
    import urllib.request

    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
         "--load_fast", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            if match:
                url = match.group(1)
        assert url, "tensorboard did not start"
        listing = {}
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url + "/data/plugins_listing", timeout=10) as response:
                listing = json.loads(response.read())
            if listing.get("projector", {}).get("enabled"):
                break
            time.sleep(1.0)
        return {name for name, plugin in listing.items() if plugin.get("enabled")}
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.mark.slow
def test_tensorboard_serves_the_projector_of_a_run(demo_run, tmp_path):
    # Served from a copy in another place: nothing in the logs may point back to the original folder (which
    # the other tests still read, so it stays; no file of the copy names it).
    import shutil

    moved = tmp_path / "moved_logs"
    shutil.copytree(demo_run[0] / "logs", moved)
    original = str(demo_run[0]).encode()
    assert not [p for p in moved.rglob("*") if p.is_file() and original in p.read_bytes()]
    plugins = _tensorboard_plugins(moved)
    assert {"scalars", "images", "projector"} <= plugins, plugins


@pytest.mark.slow
def test_the_command_pretrains_and_exports_a_keras_hub_backbone_from_a_local_preset(tmp_path, step_without_xla):
    keras_hub = pytest.importorskip("keras_hub")
    from byol_keras.cli.pretrain import main
    from byol_keras.experiment import run
    from byol_keras.run_folder import load_encoder

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64], stackwise_num_blocks=[1],
        stackwise_num_strides=[1], block_type="basic_block")
    backbone.save_to_preset(str(tmp_path / "preset"))
    config = resolve_config(parse_args([
        "--preset", "demo", "--epochs", "1", "--steps-per-epoch", "2", "--encoder", f"keras_hub:{tmp_path / 'preset'}",
        "--out", str(tmp_path / "run"), "--export", str(tmp_path / "export")]))
    assert config["encoder"] == {"name": "keras_hub", "preset": str(tmp_path / "preset"), "pooling": "auto"}
    summary = run(dict(config, test_split=None, verbose=0, augment=dict(config["augment"], jit_compile=False)))
    assert summary["steps"] == 2 and os.path.isdir(summary["export_dir"])
    encoder, stored = load_encoder(str(tmp_path / "run"))
    assert stored["encoder"]["name"] == "keras_hub" and encoder.output_shape == (None, 64)
    # --width belongs to byol_keras' own encoders: refused with a KerasHub one, before any work.
    with pytest.raises(SystemExit):
        main(["--encoder", f"keras_hub:{tmp_path / 'preset'}", "--width", "8", "--out", str(tmp_path / "other")])


@pytest.mark.slow
def test_a_file_damaged_behind_its_header_is_skipped_when_read_and_counted_in_the_summary(tmp_path):
    # A folder of JPEGs with one cut in half (its header reads, its data does not) and one garbage ".jpg" (no image):
    # the scan skips the garbage, the pipeline skips the cut one when it reads it; both are counted, once each.
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        os.makedirs(tmp_path / "data" / name)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / name / f"{i}.jpg")
    cut = tmp_path / "data" / "a" / "3.jpg"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    (tmp_path / "data" / "b" / "junk.jpg").write_bytes(b"not an image at all")
    command = [sys.executable, "-m", "training.pretrain", "--preset", "demo", "--data", str(tmp_path / "data"),
               "--image-size", "16", "--batch-size", "4", "--epochs", "3", "--width", "4",
               "--out", str(tmp_path / "run"), "--export", str(tmp_path / "export")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["files_skipped_at_scan"], summary["files_skipped_when_read"]) == (1, 1), summary
    assert summary["skipped_files"] == [str(tmp_path / "data" / "b" / "junk.jpg"), str(cut)]
    line = [l for l in result.stdout.splitlines() if l.startswith("skipped ")]
    assert line == [f"skipped 2 training files that are not decodable images: 1 at the folder's scan, 1 when read "
                    f"({tmp_path / 'data' / 'b' / 'junk.jpg'}, {cut}; all in summary.json)"], result.stdout
    assert "failed to decode when read" in result.stderr  # the warning when it was met
