import pytest

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
