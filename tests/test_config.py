import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import robustlab as rl


def test_quick_is_the_default_profile():
    p = rl.profile()
    assert p.name == "quick" and p.dataset == "digits" and not p.smoke


def test_environment_variable_selects_the_full_profile(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_PROFILE", "full")
    assert rl.profile().name == "full"
    assert rl.profile().dataset == "mnist"


def test_set_profile_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_PROFILE", "full")
    assert rl.set_profile("quick").name == "quick"
    assert rl.profile().name == "quick"


def test_smoke_shortens_training(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    p = rl.profile()
    assert p.smoke and p.epochs == 1 and p.n_eval <= 64


@pytest.mark.parametrize("bad", ["fast", "", "QUICK"])
def test_unknown_profile_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="name must be one of"):
        rl.set_profile(bad)


def test_unknown_profile_in_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_PROFILE", "gpu")
    with pytest.raises(ValueError, match="ROBUSTLAB_PROFILE"):
        rl.profile()


def test_cache_and_data_dirs_follow_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "c"))
    assert rl.cache_dir() == tmp_path / "c"
    assert rl.config.data_dir() == tmp_path / "c" / "data"
    assert rl.set_cache_dir(tmp_path / "d") == tmp_path / "d"
    assert rl.set_data_dir(tmp_path / "e") == tmp_path / "e"
    with pytest.raises(TypeError, match="path must be"):
        rl.set_cache_dir(3)
    with pytest.raises(TypeError, match="path must be"):
        rl.set_data_dir(3.0)


def test_progress_switch(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_PROGRESS", "0")
    assert rl.config.progress_enabled() is False
    assert rl.config.progress_enabled(True) is True
    rl.set_progress(True)
    assert rl.config.progress_enabled() is True
    with pytest.raises(TypeError, match="enabled"):
        rl.set_progress("yes")
    with pytest.raises(TypeError, match="progress"):
        rl.config.progress_enabled(1)


def test_threads_default_to_one_for_the_quick_profile_and_torchs_default_for_the_full(monkeypatch):
    monkeypatch.delenv("ROBUSTLAB_THREADS", raising=False)
    assert rl.config.threads() == 1
    rl.set_profile("full")
    assert rl.config.threads() == rl.config._TORCH_DEFAULT_THREADS
    assert torch.get_num_threads() == rl.config._TORCH_DEFAULT_THREADS  # set_profile applies it
    rl.set_profile("quick")
    assert torch.get_num_threads() == 1


def test_threads_follow_the_environment_and_set_threads(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_THREADS", "3")
    assert rl.config.threads() == 3
    rl.set_profile("full")  # an explicit setting holds for both profiles
    assert rl.config.threads() == 3 and torch.get_num_threads() == 3
    assert rl.set_threads(np.int64(2)) == 2 and torch.get_num_threads() == 2
    assert rl.set_threads(None) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("ROBUSTLAB_THREADS", bad)
        with pytest.raises(ValueError, match="ROBUSTLAB_THREADS"):
            rl.config.threads()
    with pytest.raises(ValueError, match="n must be"):
        rl.set_threads(0)
    with pytest.raises(TypeError, match="n must be"):
        rl.set_threads(1.5)


@pytest.mark.parametrize("env, expected", [({}, 1), ({"ROBUSTLAB_THREADS": "2"}, 2),
                                           ({"ROBUSTLAB_PROFILE": "full"}, 2)])
def test_importing_robustlab_applies_the_thread_setting(env, expected):
    base = {k: v for k, v in os.environ.items() if k not in ("ROBUSTLAB_THREADS", "ROBUSTLAB_PROFILE")}
    code = "import torch, robustlab; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env={**base, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", **env},
                         capture_output=True, text=True, check=True).stdout
    assert int(out) == expected
