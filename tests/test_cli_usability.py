"""The CLI as a new user meets it: help with defaults, model options, seeds, list, load_run."""

import json
import re
from types import SimpleNamespace

import pyro
import pytest
import torch

from pyro_dgm import cli, registry
from pyro_dgm.cli import load_run, main
from pyro_dgm.programs import sample_program

TRAIN = ["train", "--data", "digits", "--steps", "3", "--batch-size", "32", "--no-progress"]


def _weights(run):
    return torch.load(run / "model.pt", weights_only=True)


def test_train_with_the_same_seed_gives_the_same_losses_and_weights(tmp_path, capsys):
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for run, seed in zip(runs, (0, 0, 1)):
        pyro.set_rng_seed(100 + len(str(run)))  # whatever the global state, --seed decides
        torch.rand(7)
        assert main(TRAIN + ["--model", "vae", "--seed", str(seed), "--out", str(run)]) == 0
    meta = [json.loads((r / "run.json").read_text()) for r in runs]
    assert meta[0]["final_loss"] == meta[1]["final_loss"] != meta[2]["final_loss"]
    a, b, c = (_weights(r) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_model_options_reach_the_model_and_are_restored_by_load_run(tmp_path):
    run = tmp_path / "vae"
    assert main(TRAIN + ["--model", "vae", "--model-option", "latent_dim=3",
                         "--model-option", "hidden=(16, 8)", "--out", str(run)]) == 0
    loaded = load_run(run)
    assert loaded.meta["model_options"] == {"latent_dim": 3, "hidden": [16, 8]}
    widths = sorted({tuple(v.shape) for k, v in loaded.module.state_dict().items() if v.dim() == 2})
    assert (3, 8) in widths or (8, 3) in widths  # the decoder's first layer takes z of size 3
    assert sample_program(loaded.module.model, 5).shape == (5, 64)


def test_a_run_loads_after_a_release_changes_a_default(tmp_path, monkeypatch):
    """run.json records the builder's options as trained (its defaults then), not only the given ones."""
    run = tmp_path / "vae"
    assert main(TRAIN + ["--model", "vae", "--model-option", "hidden=(16,)", "--out", str(run)]) == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["build_options"] == {"latent_dim": 16, "hidden": [16]} and meta["model_options"] == {"hidden": [16]}
    build = registry.get_model("vae").build.__wrapped__  # the builder inside its check of the option names
    monkeypatch.setattr(build, "__defaults__", (3, (256,)))  # a later release: latent_dim=3 by default
    assert registry.get_model("vae").build((64,), "binary").latent_dim == 3
    loaded = load_run(run)
    assert loaded.module.latent_dim == 16 and sample_program(loaded.module.model, 2).shape == (2, 64)


def test_a_run_recorded_before_an_option_existed_loads_with_the_value_it_was_built_with(tmp_path):
    """cflow's transform= came after runs recorded their build_options: those were couplings, not MAF layers."""
    run = tmp_path / "cflow"
    assert main(["train", "--model", "cflow", "--data", "digits-continuous", "--steps", "2", "--batch-size", "32",
                 "--no-progress", "--model-option", "transform='coupling'", "--model-option", "num_layers=2",
                 "--model-option", "hidden=(8,)", "--out", str(run)]) == 0
    meta = json.loads((run / "run.json").read_text())
    for key in ("build_options", "model_options"):  # as a run of the release before transform= wrote it
        del meta[key]["transform"]
    (run / "run.json").write_text(json.dumps(meta))
    loaded = load_run(run)
    assert type(loaded.module.couplings[0]).__name__ == "ConditionalAffineCoupling"
    assert registry.get_model("cflow").build((64,), "continuous").couplings[0].__class__.__name__ != \
        "ConditionalAffineCoupling"  # today's default is the MAF


DATA_OF_KIND = {"binary": "digits", "continuous": "digits-continuous", "points": "moons"}


def _model_kinds():
    registry._load_all()
    return [(name, kind) for name, spec in sorted(registry.MODELS.items()) for kind in spec.data_kinds]


@pytest.mark.parametrize("name, kind", _model_kinds())
def test_load_run_rebuilds_the_model_that_was_trained_for_every_model_and_data_kind(name, kind, tmp_path):
    """run.json's build_options give the builder's choices for the data kind (an autoregressive model's
    Gaussian-mixture output on real values), not its class's defaults."""
    spec = registry.get_model(name)
    shape = (2,) if kind == "points" else (1, 8, 8) if spec.fit_defaults.get("image") else (64,)
    module = spec.build(shape, kind)
    meta = {"model": name, "data": DATA_OF_KIND[kind], "data_dir": None, "seed": 0, "model_options": {},
            "build_options": cli._recorded_build_options(spec, {}), "event_shape": list(shape)}
    cli.save_run(tmp_path, module.state_dict(), meta)
    assert repr(load_run(tmp_path).module) == repr(module)


@pytest.mark.parametrize("name, data", [("made", "digits-continuous"), ("fvsbn", "moons"),
                                        ("pixelcnn", "digits-continuous")])
def test_an_autoregressive_run_on_real_values_evaluates_and_samples(name, data, tmp_path, capsys):
    run = tmp_path / name
    assert main(["train", "--model", name, "--data", data, "--steps", "2", "--batch-size", "32", "--no-progress",
                 "--out", str(run)]) == 0
    assert load_run(run).meta["build_options"]["output"] is None  # the data kind's: a Gaussian mixture
    assert main(["evaluate", str(run)]) == 0 and "bits/dim" in capsys.readouterr().out
    assert main(["sample", str(run), "--num", "4"]) == 0


def test_an_autoregressive_run_recorded_with_the_class_default_output_still_loads(tmp_path):
    """Release 0.1.0 recorded output="bernoulli" (the class default) for a Gaussian-mixture model on real values."""
    run = tmp_path / "made"
    assert main(["train", "--model", "made", "--data", "digits-continuous", "--steps", "1", "--no-progress",
                 "--model-option", "hidden=(16,)", "--out", str(run)]) == 0
    meta = json.loads((run / "run.json").read_text())
    meta["build_options"]["output"] = "bernoulli"  # as that release wrote it
    (run / "run.json").write_text(json.dumps(meta))
    assert type(load_run(run).module.output).__name__ == type(registry.get_model("made").build(
        (64,), "continuous", hidden=(16,)).output).__name__ != type(registry.get_model("made").build(
        (64,), "binary").output).__name__


def test_objective_options_reach_the_objective():
    gan = registry.get_model("gan")
    module = gan.build((2,), "points")
    objective = cli._objective(gan, module, "points", cli.parse_model_options(gan, ["loss=hinge"]))
    assert repr(objective) == "Adversarial(loss='hinge', n_critic=1)"
    sm = registry.get_model("ebm-sm")
    module = sm.build((2,), "points")
    objective = cli._objective(sm, module, "points", cli.parse_model_options(sm, ["method=hutchinson"]))
    assert objective.method == "hutchinson"


def test_a_gans_adversarial_options_reach_its_objective_through_the_cli(tmp_path, capsys):
    """Adversarial's own options (n_critic, gp_weight, ...) are model options of every registered GAN; before,
    the CLI knew only ``loss`` and refused them, and a WGAN-GP could not be given its critic steps."""
    for name, default in (("gan", "ns"), ("dcgan", "ns"), ("cgan", "hinge")):
        spec = registry.get_model(name)
        options = cli.parse_model_options(spec, ["n_critic=3", "r1_weight=0.5"])
        module = spec.build((1, 8, 8) if name == "dcgan" else (64,), "binary")
        objective = cli._objective(spec, module, "binary", options)
        assert (objective.loss_name, objective.n_critic, objective.r1_weight) == (default, 3, 0.5)
    run = tmp_path / "wgan"
    assert main(TRAIN + ["--model", "gan", "--steps", "6", "--model-option", "loss=wgan-gp",
                         "--model-option", "n_critic=3", "--model-option", "gp_weight=5", "--out", str(run)]) == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["model_options"] == {"loss": "wgan-gp", "n_critic": 3, "gp_weight": 5}
    # steps count batches: the summary and run.json say how many updates the generator got
    assert (meta["steps"], meta["updates"]) == (6, {"critic": 6, "generator": 2})
    assert re.search(r"6 steps, .*critic -?\d+\.\d+ \(6 updates\), generator -?\d+\.\d+ \(2 updates\)",
                     capsys.readouterr().out)
    assert main(TRAIN + ["--model", "gan", "--model-option", "n_critc=3", "--out", str(tmp_path / "never")]) == 2
    assert "model 'gan' has no option 'n_critc'" in capsys.readouterr().err


@pytest.mark.parametrize("option, message", [
    ("lattent_dim=3", "model 'vae' has no option 'lattent_dim'; its options are hidden, latent_dim"),
    ("latent_dim", "expected KEY=VALUE, got 'latent_dim'"),
    ("latent_dim={1, 2}", "latent_dim={1, 2} is not a number, string"),
])
def test_a_bad_model_option_is_refused_before_any_work(option, message, tmp_path, capsys):
    run = tmp_path / "never"
    assert main(TRAIN + ["--model", "vae", "--model-option", option, "--out", str(run)]) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


def test_train_help_shows_every_default_and_each_models_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED seeds Pyro, torch, NumPy and Python before the model is built, and the data order " \
           "(default: 0)" in text
    assert "--device DEVICE torch device: cpu, cuda, cuda:1, or auto (CUDA if there is one; a GPU per torchrun " \
           "process) (default: auto)" in text
    assert "vae (vae): lr=0.001 epochs=100 batch_size=64; options: latent_dim=16 hidden=(256,)" in text
    assert "options: method='exact' num_projections=1 sigma=0.1" in text  # ebm-sm's objective
    assert "loss='ns'" in text  # the GANs'


def test_list_has_headers_and_one_family_per_model(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "family", "data", "kinds", "description"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:lines.index("")]}
    registry._load_all()
    assert rows == {name: spec.family for name, spec in registry.MODELS.items()}
    assert lines[lines.index("") + 1].split() == ["data", "set", "kind", "description"]


@pytest.mark.parametrize("name, shape, kind", [("vae", (64,), "binary"), ("gan", (2,), "points"),
                                               ("made", (64,), "binary")])
def test_draw_goes_through_the_program_and_matches_the_sample_method(name, shape, kind):
    module = registry.get_model(name).build(shape, kind).eval()
    pyro.set_rng_seed(3)
    expected = module.sample(6)
    calls, program = [], module.model

    def model(x=None, num_samples=None):  # the program, with a handler a user might wrap around it
        calls.append(num_samples)
        return program(x, num_samples=num_samples)

    pyro.set_rng_seed(3)
    assert torch.equal(cli.draw(SimpleNamespace(model=model), 6), expected) and calls == [6]


def test_sample_and_evaluate_print_their_stages(tmp_path, capsys):
    run = tmp_path / "b"
    assert main(TRAIN + ["--model", "bernoulli", "--out", str(run)]) == 0
    assert main(["sample", "--run", str(run), "--num", "4"]) == 0
    assert main(["evaluate", "--run", str(run)]) == 0
    err = capsys.readouterr().err
    assert "pyro-dgm: drawing 4 samples from bernoulli" in err
    assert "pyro-dgm: scoring bernoulli on digits (test, 360 examples)" in err


def test_load_run_refuses_a_broken_folder_with_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_run(tmp_path / "nothing")


def test_resume_keeps_the_runs_model_options_and_refuses_others(tmp_path, capsys):
    run = tmp_path / "vae"
    assert main(TRAIN + ["--model", "vae", "--model-option", "latent_dim=3", "--out", str(run)]) == 0
    resume = ["train", "--data", "digits", "--steps", "5", "--batch-size", "32", "--no-progress",
              "--model", "vae", "--out", str(run), "--resume"]
    assert main(resume + ["--model-option", "latent_dim=5"]) == 2
    assert "was trained with {'latent_dim': 3}" in capsys.readouterr().err
    assert main(resume) == 0
    meta = load_run(run).meta
    assert meta["steps"] == 5 and meta["model_options"] == {"latent_dim": 3}


def test_a_class_conditional_model_trains_on_labels_and_samples_each_class(tmp_path, capsys):
    run = tmp_path / "cvae"
    assert main(TRAIN + ["--model", "cvae", "--out", str(run)]) == 0
    assert main(["sample", "--run", str(run), "--num", "20"]) == 0
    assert torch.load(run / "samples.pt", weights_only=True).shape == (20, 64)
    assert main(["evaluate", "--run", str(run), "--num-particles", "2"]) == 0
    assert "bits/dim" in capsys.readouterr().out
    assert main(["train", "--model", "cflow", "--data", "cifar10", "--data-dir", str(tmp_path), "--steps", "1",
                 "--out", str(tmp_path / "no")]) == 2
    assert "is class-conditional and needs labels" in capsys.readouterr().err


def test_class_conditional_samples_at_the_default_number_keep_one_class_per_column(tmp_path, monkeypatch):
    from pyro_dgm import plots

    run = tmp_path / "cvae"
    assert main(TRAIN + ["--model", "cvae", "--out", str(run)]) == 0
    grids, sample_grid = [], plots.sample_grid
    monkeypatch.setattr(plots, "sample_grid", lambda *a, **k: grids.append(sample_grid(*a, **k)) or grids[-1])
    assert main(["sample", str(run)]) == 0  # 64 draws, classes 0..9 in turn: 6 rows of 10 and one of 4
    assert grids[0].axes[0].images[0].get_array().shape == (7 * 9 - 1, 10 * 9 - 1)


def test_sample_writes_the_figure_in_the_format_of_its_suffix(tmp_path, capsys):
    run = tmp_path / "b"
    assert main(TRAIN + ["--model", "bernoulli", "--out", str(run)]) == 0
    for _ in range(2):  # the second time replaces the first figure, a sample output of the run
        assert main(["sample", str(run), "--num", "4", "--out", str(run / "s.pdf")]) == 0
    assert (run / "s.pdf").read_bytes().startswith(b"%PDF")
    assert main(["sample", str(run), "--num", "4", "--out", str(tmp_path / "s.jpg")]) == 0
    assert (tmp_path / "s.jpg").read_bytes().startswith(b"\xff\xd8\xff")
    capsys.readouterr()
    assert main(["sample", str(run), "--num", "4", "--out", str(tmp_path / "new" / "s.xyz")]) == 2
    err = capsys.readouterr().err
    assert "s.xyz': cannot write a figure as .xyz; use one of" in err and ".pdf" in err
    assert not (tmp_path / "new").exists()  # refused before drawing


def test_compile_and_device_reach_fit_and_only_rank_0_writes_the_run(tmp_path, monkeypatch):
    import sys

    fit_module = sys.modules["pyro_dgm.fit"]  # the module (pyro_dgm.fit the attribute is the function)
    seen = {}
    real_fit = fit_module.fit

    def spy(*args, **kwargs):
        seen.update(kwargs)
        kwargs["compile"] = False  # what is checked is that the flag arrives; compiling is test_compile's
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fit_module, "fit", spy)
    assert main(TRAIN + ["--model", "bernoulli", "--compile", "--out", str(tmp_path / "a")]) == 0
    assert seen["compile"] is True and seen["device"] == "auto"
    assert (tmp_path / "a" / "run.json").exists()
    monkeypatch.setenv("RANK", "1")
    assert main(TRAIN + ["--model", "bernoulli", "--out", str(tmp_path / "b")]) == 0
    assert not (tmp_path / "b" / "run.json").exists()  # rank 0 writes the run for all ranks


def test_sample_and_evaluate_take_the_run_folder_as_an_argument_and_only_rank_0_reports(tmp_path, monkeypatch,
                                                                                        capsys):
    run = tmp_path / "a"  # a positional folder: under torchrun, torchrun's parser takes --run for its --run-path
    assert main(TRAIN + ["--model", "bernoulli", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert "bits/dim" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--run", str(tmp_path / "b")]) == 2
    assert "two run folders" in capsys.readouterr().err
    assert main(["sample"]) == 2
    assert "the run folder is required: pyro-dgm sample RUN" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")
    assert main(["evaluate", str(run)]) == 0
    assert capsys.readouterr() == ("", "")  # rank 0 speaks for all
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png")]) == 0
    assert not (tmp_path / "s.png").exists()  # and draws and writes for all


def test_train_ema_saves_the_average_of_the_weights_and_resumes_only_with_it(tmp_path, capsys):
    run = tmp_path / "maf"
    base = ["train", "--model", "maf", "--data", "8gaussians", "--steps", "6", "--batch-size", "32", "--no-progress",
            "--out", str(run)]
    assert main(base + ["--ema", "0.9"]) == 0
    saved = torch.load(run / "model.pt", weights_only=True)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    average, live = state["callbacks"][1], state["modules"][0]
    assert average["n_averaged"] == 6 and json.loads((run / "run.json").read_text())["ema"] == 0.9
    names = [name for name, _ in load_run(run).module.named_parameters()]
    assert len(names) == len(average["average"])
    for name, mean in zip(names, average["average"]):
        torch.testing.assert_close(saved[name], mean)
    # the checkpoint keeps the live weights, so that a resumed run trains on from them
    assert any(not torch.equal(live[name], mean) for name, mean in zip(names, average["average"]))
    plain = tmp_path / "plain"
    assert main(base[:-1] + [str(plain)]) == 0
    differs = [k for k, v in torch.load(plain / "model.pt", weights_only=True).items()
               if v.is_floating_point() and not torch.equal(v, saved[k])]
    assert differs
    longer = base[:base.index("6")] + ["8"] + base[base.index("6") + 1:]
    assert main(longer + ["--resume"]) == 2  # without --ema: refused, nothing changes
    assert "--ema 0.9 (now None)" in capsys.readouterr().err
    assert main(longer + ["--resume", "--ema", "0.9"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["callbacks"][1]["n_averaged"] == 8


def test_train_refuses_an_ema_decay_outside_0_1(tmp_path, capsys):
    assert main(["train", "--model", "maf", "--data", "8gaussians", "--ema", "1.5", "--out", str(tmp_path / "r")]) == 2
    assert "--ema: expected a decay in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name, options, typo", [("nsf", {"count_bins": 4}, "coun_bins"),
                                                 ("made", {"hidden": (16,)}, "hiden"),
                                                 ("vae", {"latent_dim": 2}, "latent")])
def test_a_registered_builder_refuses_an_option_it_does_not_take(name, options, typo):
    """Builders ending in **options used to drop a misspelt option without a word (nsf built its default
    8 bins when asked for coun_bins=4): the registry's build now names it, and the options it takes."""
    spec = registry.get_model(name)
    shape, kind = ((2,), "points") if name == "nsf" else ((64,), "binary")
    assert spec.build(shape, kind, **options) is not None
    with pytest.raises(ValueError, match=rf"model '{name}': no option\(s\) \['{typo}'\]; its options are .*"
                                         rf"{next(iter(options))}"):
        spec.build(shape, kind, **{typo: 1})


@pytest.mark.parametrize("name, option, typo", [("ebm-cd", {"num_steps": 3}, "num_step"),
                                                ("gan", {"n_critic": 3}, "n_critc"),
                                                ("ncsn", {}, "sigma_max")])
def test_a_registered_objective_refuses_an_option_it_does_not_take(name, option, typo):
    """Registered objectives used to drop an option they did not take without a word (ebm-cd trained with
    its default 20 Langevin steps when asked for num_step=3; ncsn took any option): now the objective names
    it and the options it takes, and passes on those it takes."""
    spec = registry.get_model(name)
    module = spec.build((2,), "points")
    objective = spec.objective(module=module, data_kind="points", **option)
    assert all(getattr(objective, k) == v for k, v in option.items())
    accepted = ", ".join(sorted(registry.options_of(spec.objective))) or "none"
    with pytest.raises(ValueError, match=re.escape(f"model {name!r}'s objective: no option(s) [{typo!r}]; "
                                                   f"its options are {accepted}")):
        spec.objective(module=module, data_kind="points", **{typo: 1})


def test_an_interrupted_overwrite_resumes_with_the_options_of_its_checkpoint(tmp_path, capsys):
    """An --overwrite stopped before its end leaves the old run's run.json beside the new checkpoint: --resume
    takes the options of the checkpoint it resumes (before: the old run.json's, so latent_dim=8 was refused
    as "trained with {'latent_dim': 4}" and a plain --resume failed on the weights' shapes)."""
    run = tmp_path / "vae"
    assert main(TRAIN + ["--model", "vae", "--model-option", "latent_dim=4", "--out", str(run)]) == 0
    old_meta = (run / "run.json").read_bytes()
    assert main(TRAIN + ["--model", "vae", "--model-option", "latent_dim=8", "--out", str(run), "--overwrite"]) == 0
    (run / "run.json").write_bytes(old_meta)  # as the interrupted overwrite left it: only the checkpoint is new
    resume = ["train", "--data", "digits", "--steps", "6", "--batch-size", "32", "--no-progress", "--model", "vae",
              "--out", str(run), "--resume"]
    assert main(resume + ["--model-option", "latent_dim=8"]) == 0
    assert load_run(run).meta["model_options"] == {"latent_dim": 8}
    assert main(resume[:resume.index("6")] + ["7"] + resume[resume.index("6") + 1:]) == 0  # options from it
    assert main(resume[:-1] + ["--data", "digits-continuous", "--resume"]) == 2
    assert "--data digits (now digits-continuous)" in capsys.readouterr().err  # named before any shape
