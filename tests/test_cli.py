"""The command line rejects misspelt config keys and variants with the closest valid names."""
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_main(*args):
    return subprocess.run([sys.executable, "-m", "jaxsr.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_unknown_override_key_names_close_matches(tmp_path):
    r = run_main("--config=configs/drtl.py:tiny", "--config.relation.tua=0.5",
                 f"--workdir={tmp_path}")
    assert r.returncode != 0
    assert "unknown config key 'relation.tua'" in r.stderr and "relation.tau" in r.stderr
    assert not any(tmp_path.iterdir())  # nothing was started or written


def test_unknown_variant_lists_valid_ones(tmp_path):
    r = run_main("--config=configs/supervised.py:tyni", f"--workdir={tmp_path}")
    assert r.returncode != 0
    assert "unknown config variant 'tyni'" in r.stderr and "Did you mean tiny" in r.stderr


def test_missing_config_file(tmp_path):
    r = run_main("--config=configs/nope.py", "--config.seed=1", f"--workdir={tmp_path}")
    assert r.returncode != 0 and "configs/nope.py" in r.stderr
